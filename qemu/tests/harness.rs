//! The harness's contract with its callers, on real guests: exit statuses and results
//! come back, hangs are killed at the timeout, and guests that die say why.
//!
//! Skipped (with a note) where QEMU cannot run, unless `ZCNIC_QEMU_REQUIRED` is set, as
//! `cargo xtask test` does.

use std::time::{Duration, Instant};

use zcnic_qemu::{Error, GuestSpec, Nic};

fn guests_can_run() -> bool {
    match zcnic_qemu::qemu_available() {
        Ok(()) => true,
        Err(why) if std::env::var_os("ZCNIC_QEMU_REQUIRED").is_some() => panic!("{why}"),
        Err(why) => {
            eprintln!("skipping QEMU test: {why}");
            false
        }
    }
}

fn spec(name: &str, script: &str, timeout_secs: u64) -> GuestSpec {
    GuestSpec {
        nics: Vec::new(),
        script: script.into(),
        iommu: false,
        cpus: 2,
        timeout: Duration::from_secs(timeout_secs),
        echo: false,
        kernel: zcnic_qemu::GuestKernel::Bookworm,
        name: name.into(),
    }
}

#[test]
fn exit_status_and_results_come_back() {
    if !guests_can_run() {
        return;
    }
    let script =
        "echo hello from the guest\nmkdir /results/sub\necho data > /results/sub/x\nexit 3\n";
    let run = zcnic_qemu::run(&spec("harness-exit", script, 180)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.exit_code, 3);
    assert!(
        run.console.lines().any(|l| l == "hello from the guest"),
        "{}",
        run.console
    );
    let read = |p: &str| std::fs::read_to_string(run.results.join(p)).unwrap();
    assert_eq!(read("sub/x"), "data\n");
    assert_eq!(read("exit_code"), "3\n");
    assert!(run.boot_time > Duration::ZERO && run.boot_time <= run.total_time);
    assert!(run.pcaps.is_empty());
}

#[test]
fn a_hung_guest_is_killed_at_the_timeout() {
    if !guests_can_run() {
        return;
    }
    zcnic_qemu::prepare().unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let err =
        zcnic_qemu::run(&spec("harness-hang", "echo hanging now\nsleep 1000\n", 20)).unwrap_err();
    let took = started.elapsed();
    // The 20 s count from the scenario's start, however long the boot took (within its own
    // limit of 300 s), so the scenario always gets to print its line.
    assert!(matches!(err, Error::Timeout { secs: 20, .. }), "{err}");
    assert!(err.to_string().contains("hanging now"), "{err}");
    assert!(
        took >= Duration::from_secs(20),
        "killed early, after {took:?}"
    );
    assert!(
        took < Duration::from_secs(300 + 20 + 60),
        "killed late, after {took:?}"
    );
}

#[test]
fn a_guest_panic_ends_the_run_with_the_console_tail() {
    if !guests_can_run() {
        return;
    }
    let script = "echo 1 > /proc/sys/kernel/sysrq\necho c > /proc/sysrq-trigger\n";
    let err = zcnic_qemu::run(&spec("harness-panic", script, 180)).unwrap_err();
    assert!(matches!(err, Error::NoExit { .. }), "{err}");
    // The tail holds the panic's call trace; its first line may have scrolled out of it.
    assert!(err.to_string().contains("panic"), "{err}");
}

#[test]
fn a_bad_device_model_reports_qemu_stderr() {
    if !guests_can_run() {
        return;
    }
    let mut bad = spec("harness-bad-model", "true\n", 60);
    bad.nics.push(Nic::new("no-such-nic", 0, false));
    let err = zcnic_qemu::run(&bad).unwrap_err();
    assert!(
        err.to_string()
            .contains("'no-such-nic' is not a valid device model name"),
        "{err}"
    );
}
