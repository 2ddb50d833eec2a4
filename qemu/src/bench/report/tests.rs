//! The report from recorded guest output: every tool measured by the same rule, and each
//! way a bench can go wrong turned into one failure line.

use super::*;
use crate::bench::plan::Plan;
use crate::bench::stats::Window;
use std::fs;
use std::path::PathBuf;

fn plan(rounds: usize) -> Plan {
    Plan {
        window: Window { warm: 2, secs: 4 },
        targets: Target::ALL.to_vec(),
        tail: 2,
        rounds,
        dpdk: true,
    }
}

/// A results directory in which every run of `plan` went well: each tool sends `rate`
/// frames a second (the rate of tool `i` in the list below), for 9 seconds.
struct Fake {
    dir: PathBuf,
}

impl Fake {
    fn new(name: &str, plan: &Plan) -> Fake {
        let dir = std::env::temp_dir().join(format!("zcnic-bench-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let f = Fake { dir };
        for run in plan.runs() {
            f.write_good(&run);
        }
        f
    }

    fn write(&self, name: &str, text: &str) {
        fs::write(self.dir.join(name), text).unwrap();
    }

    fn rate(tool: Tool) -> u64 {
        match tool {
            Tool::Kernel => 1000,
            Tool::Testpmd => 2000,
            Tool::Zcnic => 3000,
            Tool::Ceiling => 4000,
            Tool::Hybrid => 2900,
        }
    }

    fn write_good(&self, run: &Run) {
        let id = run.id();
        let r = Self::rate(run.tool);
        let pci = "0000:00:02.0";
        match (run.tool, run.target.fwd_ports()) {
            (Tool::Kernel, _) => {
                // Two idle samples before pktgen starts, base count 50.
                let mut s = String::new();
                for (i, t) in (0..12u64).enumerate() {
                    let c = 50 + (i as u64).saturating_sub(2) * r;
                    s += &format!("{} {c}\n", 7_000_000_000 + t * 1_000_000_000);
                }
                self.write(&format!("{id}.samples"), &s);
                self.write(&format!("{id}.base"), "50\n");
                self.write(&format!("{id}.end"), &format!("{}\n", 50 + 9 * r + 3));
                self.write(
                    &format!("{id}.report"),
                    &format!(
                        "Current:\n     pkts-sofar: {}  errors: 0\nResult: OK: 9000000(c1+d2) usec\n",
                        9 * r
                    ),
                );
            }
            (Tool::Testpmd, fwd) => {
                let port = u32::from(fwd.is_some());
                let mut s = String::from("EAL: Detected CPU lcores: 2\n");
                for t in 0..10u64 {
                    for p in 0..=port {
                        let (c, pps) = if p == port {
                            (t * r, if t == 0 { 0 } else { r })
                        } else {
                            (0, 0)
                        };
                        s += &format!(
                            "  ######################## NIC statistics for port {p}  ########################\n  TX-packets: {c}   TX-errors: 0\n  Tx-pps: {pps}   Tx-bps: 0\n  ####\n"
                        );
                    }
                }
                s += "Bye...\n";
                self.write(&format!("{id}.out"), &s);
            }
            (Tool::Zcnic | Tool::Ceiling | Tool::Hybrid, Some((src, inp, out))) => {
                let mut s = String::new();
                for t in 1..=9u64 {
                    s += &format!("fwd {inp} -> {out}: {t}.0 s  rx {r} pps  tx {r} pps  total rx {c} tx {c} dropped 0\n", c = t * r);
                }
                self.write(&format!("{id}.out"), &s);
                let _ = src;
            }
            (Tool::Zcnic | Tool::Ceiling | Tool::Hybrid, None) => {
                let mut s = String::new();
                for t in 1..=9u64 {
                    s += &format!(
                        "pktgen {pci}: {t}.0 s  tx {r} pps  total {c}  device GPTC {g}\n",
                        c = t * r,
                        g = t * r - 10
                    );
                }
                s += &format!("pktgen {pci}: sent {c} frames ({b} bytes) in 9.000 s: {r} pps, 1.0 Mbit/s; device GPTC {c}, TPT {c}\n", c = 9 * r, b = 540 * r);
                self.write(&format!("{id}.out"), &s);
            }
        }
        self.write(&format!("{id}.rc"), "0\n");
        if run.target.fwd_ports().is_some() {
            let mut s = String::new();
            for t in 1..=12u64 {
                s += &format!(
                    "pktgen 0000:00:04.0: {t}.0 s  tx 50000 pps  total {}\n",
                    t * 50000
                );
            }
            self.write(&format!("{id}.source"), &s);
            self.write(&format!("{id}.source-rc"), "0\n");
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn every_tool_is_measured_by_the_same_rule_and_checked() {
    let p = plan(2);
    let f = Fake::new("good", &p);
    let r = analyse(&f.dir, &p);
    assert_eq!(r.failures, Vec::<String>::new());
    assert_eq!(r.outcomes.len(), p.runs().len());
    for o in &r.outcomes {
        let want = Fake::rate(o.run.tool) as f64;
        assert!(
            (o.pps - want).abs() < 1e-6,
            "{}: {} != {want}",
            o.run.id(),
            o.pps
        );
    }
    // The device checks ran where there is a device counter (e1000) or a kernel count.
    let checked: Vec<String> = r
        .outcomes
        .iter()
        .filter(|o| o.check.is_some())
        .map(|o| o.run.id())
        .collect();
    assert!(
        checked.contains(&"zcnic-e1000-1".to_string()),
        "{checked:?}"
    );
    assert!(
        checked.contains(&"kernel-virtio-2".to_string()),
        "{checked:?}"
    );
    assert!(
        !checked.contains(&"zcnic-virtio-1".to_string()),
        "virtio has no GPTC"
    );
    let src = r.outcomes.iter().find_map(|o| o.source_pps).unwrap();
    assert_eq!(src, 50000.0);
    assert_eq!(
        ratio_text(&r, Target::E1000, Tool::Zcnic, Tool::Testpmd).unwrap(),
        "1.50x (runs 1.50–1.50x)"
    );
    // The hybrid forwarder is measured from fwd's own lines, as the polling one.
    assert_eq!(
        ratio_text(&r, Target::FwdVirtioE1000, Tool::Hybrid, Tool::Zcnic).unwrap(),
        "0.97x (runs 0.97–0.97x)"
    );
    assert!(verdict(&r).is_ok());
}

/// The two-queue igb row is compared with the one-queue row, run by run, for each tool.
#[test]
fn two_queues_are_measured_against_one_queue() {
    let p = plan(1);
    let f = Fake::new("two-queues", &p);
    // zcnic on two queues at 4500 pps, half again its 3000 on one.
    let pci = "0000:00:08.0";
    let mut s = String::new();
    for t in 1..=9u64 {
        s += &format!(
            "pktgen {pci}: {t}.0 s  tx 4500 pps  total {c}  device GPTC {c}\n",
            c = t * 4500
        );
    }
    s += &format!("pktgen {pci}: sent 40500 frames (2430000 bytes) in 9.000 s: 4500 pps, 1.0 Mbit/s; device GPTC 40500, TPT 40500\n");
    f.write("zcnic-igb-2q-1.out", &s);
    let r = analyse(&f.dir, &p);
    assert_eq!(r.failures, Vec::<String>::new());
    assert_eq!(
        scaling_text(&r, Target::Igb2q, Tool::Zcnic).unwrap(),
        "1.50x (runs 1.50–1.50x)"
    );
    assert_eq!(
        scaling_text(&r, Target::Igb2q, Tool::Testpmd).unwrap(),
        "1.00x (runs 1.00–1.00x)"
    );
    assert_eq!(
        scaling_text(&r, Target::Igb, Tool::Zcnic),
        None,
        "one queue: no row"
    );
    let checked = r
        .outcomes
        .iter()
        .any(|o| o.run.id() == "zcnic-igb-2q-1" && o.check.is_some());
    assert!(checked, "sent against GPTC on two queues too");
}

/// The one failure line for `plan` after `spoil` changed the good files.
fn failure(name: &str, spoil: impl Fn(&Fake)) -> Vec<String> {
    let p = plan(1);
    let f = Fake::new(name, &p);
    spoil(&f);
    let r = analyse(&f.dir, &p);
    assert!(verdict(&r).is_err());
    r.failures
}

#[test]
fn a_tool_that_fails_fails_the_bench_with_its_last_line() {
    let f = failure("rc", |f| {
        f.write("zcnic-virtio-1.rc", "1\n");
        f.write(
            "zcnic-virtio-1.out",
            "zcnic: 0000:00:03.0: no such device\n\n",
        );
    });
    assert_eq!(
        f,
        ["bench: zcnic pktgen on virtio-net transmit, run 1: exited 1: zcnic: 0000:00:03.0: no such device"]
    );
}

#[test]
fn testpmd_must_shut_down_cleanly() {
    let f = failure("pmd", |f| {
        f.write("testpmd-e1000-1.rc", "130\n");
        f.write("testpmd-e1000-1.out", "EAL: Error - exiting with code: 1\n");
    });
    assert_eq!(f.len(), 1);
    assert!(
        f[0].contains("DPDK testpmd on e1000 transmit, run 1: exited 130: EAL: Error"),
        "{f:?}"
    );
}

#[test]
fn a_count_the_device_disagrees_with_fails_the_bench() {
    let f = failure("gptc", |f| {
        let good = fs::read_to_string(f.dir.join("zcnic-e1000-1.out")).unwrap();
        f.write(
            "zcnic-e1000-1.out",
            &good.replace("device GPTC 27000, TPT", "device GPTC 20000, TPT"),
        );
    });
    assert_eq!(f, ["bench: zcnic pktgen on e1000 transmit, run 1: sent 27000 frames but the device counted 20000 (GPTC), more than its rings (512) apart"]);
    let k = failure("kernel", |f| f.write("kernel-e1000-1.end", "1000\n"));
    assert_eq!(k.len(), 1);
    assert!(k[0].contains("kernel pktgen on e1000 transmit, run 1: sent 9000 frames but the GPTC count rose by 950"), "{k:?}");
}

#[test]
fn a_run_too_short_for_the_window_or_missing_fails_the_bench() {
    let f = failure("short", |f| {
        f.write(
            "ceiling-virtio-1.out",
            "pktgen 0000:00:03.0: 1.0 s  ceiling tx 5 pps  total 5\n",
        );
    });
    assert!(
        f[0].contains(
            "zcnic ceiling on virtio-net transmit, run 1: cannot be measured: ran too briefly"
        ),
        "{f:?}"
    );
    let gone = failure("gone", |f| {
        fs::remove_file(f.dir.join("testpmd-fwd-e1000-virtio-1.rc")).unwrap()
    });
    assert!(gone[0].contains("did not run to the end"), "{gone:?}");
    let src = failure("source", |f| {
        f.write("zcnic-fwd-virtio-e1000-1.source-rc", "1\n")
    });
    assert!(
        src[0].contains("its source, zcnic pktgen on 0000:00:04.0, exited 1"),
        "{src:?}"
    );
}

#[test]
fn a_missing_peer_fails_unless_allowed() {
    let mut r = Report::default();
    missing_peer(&mut r, "DPDK testpmd: not installed".into(), true);
    assert!(verdict(&r).is_ok());
    assert_eq!(r.missing.len(), 1);
    missing_peer(&mut r, "DPDK testpmd: not installed".into(), false);
    assert_eq!(
        verdict(&r).unwrap_err(),
        "bench: DPDK testpmd: not installed; `cargo xtask bench --allow-missing` runs without it"
    );
}
