//! The suite's scenarios cannot lose zcnic's exit status in a pipe: under the prelude every
//! scenario starts with, `zcnic … | tee` fails when zcnic fails, though tee succeeds.

use zcnic_tests::qemu_suite::{guest_slot, spec};

#[test]
fn a_failing_zcnic_piped_into_tee_fails_the_scenario() {
    let Some(_slot) = guest_slot("a_failing_zcnic_piped_into_tee_fails_the_scenario") else {
        return;
    };
    // No NIC at 00:09.0: zcnic exits 2 with one line; tee exits 0.
    let script = "zcnic pktgen 0000:00:09.0 --count 1 2>&1 | tee /results/piped.txt\n\
                  echo the scenario went on > /results/reached\n";
    let run = zcnic_qemu::run(&spec("pipefail", Vec::new(), script))
        .unwrap_or_else(|e| panic!("guest run failed: {e}"));
    let piped = std::fs::read_to_string(run.results.join("piped.txt")).unwrap_or_default();
    assert!(
        piped.starts_with("zcnic: "),
        "zcnic ran and failed: {piped:?}"
    );
    assert_eq!(
        run.exit_code, 2,
        "the scenario ends with zcnic's status, not tee's"
    );
    assert!(
        !run.results.join("reached").exists(),
        "nothing after the failed pipeline runs"
    );
}
