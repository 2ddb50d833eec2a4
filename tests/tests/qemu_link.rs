//! Link events in a guest: while `zcnic pktgen` runs, the host takes the NIC's wire down
//! and up on QEMU's monitor (`set_link`), and pktgen prints "link down", then "link up",
//! once each and in that order, and keeps sending. An e1000 (whose link comes back after
//! QEMU's ~500 ms auto-negotiation), a modern virtio-net behind the vIOMMU and a legacy
//! one (whose config change is immediate).

use std::time::{Duration, Instant};
use zcnic_qemu::{netdev_id, Monitor, Nic};
use zcnic_tests::qemu_suite::{figure, guest_slot, spec, tail};

/// Each pktgen runs this long: the first progress line comes after a second, the down
/// and up take well under two more.
const SECS: u32 = 6;

/// Where one NIC's link test stands, as the console shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// pktgen has not printed a progress line yet.
    Starting,
    /// `set_link off` sent at this moment; waiting for "link down".
    Off(Instant),
    /// `set_link on` sent at this moment; waiting for "link up".
    On(Instant),
    Done,
}

/// One NIC under test: its guest address, its netdev, what happened and when.
struct Leg {
    pci: String,
    netdev: String,
    step: Step,
    /// Host-measured time from `set_link off` to the "link down" line on the console.
    down_after: Option<Duration>,
    /// From `set_link on` to "link up".
    up_after: Option<Duration>,
}

impl Leg {
    /// Acts on one console line: `off` once pktgen sends, `on` once it printed "link down".
    fn see(&mut self, line: &str, qmp: &mut Monitor, errors: &mut Vec<String>) {
        let mine = |what: &str| line.contains(&format!("pktgen {}: {what}", self.pci));
        let mut set = |up: bool| {
            qmp.set_link(&self.netdev, up)
                .map_err(|e| errors.push(format!("{}: set_link {up}: {e}", self.pci)))
                .is_ok()
        };
        self.step = match self.step {
            Step::Starting
                if line.contains(&format!("pktgen {}:", self.pci)) && line.contains(" s  tx ") =>
            {
                if set(false) {
                    Step::Off(Instant::now())
                } else {
                    Step::Done
                }
            }
            Step::Off(at) if mine("link down") => {
                self.down_after = Some(at.elapsed());
                if set(true) {
                    Step::On(Instant::now())
                } else {
                    Step::Done
                }
            }
            Step::On(at) if mine("link up") => {
                self.up_after = Some(at.elapsed());
                Step::Done
            }
            s => s,
        };
    }
}

#[test]
fn pktgen_prints_link_down_then_up_on_e1000_and_virtio() {
    let Some(_slot) = guest_slot("pktgen_prints_link_down_then_up_on_e1000_and_virtio") else {
        return;
    };
    let models = [
        ("e1000", "e1000"),
        (
            "virtio",
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
        ),
        ("virtio-legacy", "virtio-net-pci,disable-modern=on"),
    ];
    // Each on a hub of its own: a wire down is that NIC's alone.
    let nics = (0..)
        .zip(&models)
        .map(|(i, (_, m))| Nic::new(m, i, false))
        .collect();
    let mut legs: Vec<Leg> = (0..models.len())
        .map(|i| Leg {
            pci: format!("0000:00:{:02x}.0", 2 + i),
            netdev: netdev_id(i),
            step: Step::Starting,
            down_after: None,
            up_after: None,
        })
        .collect();
    let mut script = String::new();
    for (leg, (name, _)) in legs.iter().zip(&models) {
        script += &format!("zcnic bind {}\n", leg.pci);
        script += &format!(
            "zcnic pktgen {} --rate 20k --duration {SECS} | tee /results/{name}.txt\n",
            leg.pci
        );
    }
    let mut errors = Vec::new();
    let started = Instant::now();
    let run = zcnic_qemu::run_watched(&spec("link", nics, &script), |line, qmp| {
        for leg in &mut legs {
            leg.see(line, qmp, &mut errors);
        }
    })
    .unwrap_or_else(|e| panic!("link: guest run failed: {e}"));
    eprintln!(
        "link: {:.1} s in all; QEMU ran {:.1} s, {:.1} s of it booting",
        started.elapsed().as_secs_f64(),
        run.total_time.as_secs_f64(),
        run.boot_time.as_secs_f64()
    );
    assert_eq!(
        run.exit_code,
        0,
        "console tail:\n{}",
        tail(&run.console, 40)
    );
    assert!(errors.is_empty(), "{errors:?}");
    for (leg, (name, _)) in legs.iter().zip(&models) {
        let out = std::fs::read_to_string(run.results.join(format!("{name}.txt"))).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let at = |what: &str| {
            let hit = format!("pktgen {}: {what}", leg.pci);
            let all: Vec<usize> = (0..lines.len())
                .filter(|&k| lines[k].contains(&hit))
                .collect();
            assert_eq!(all.len(), 1, "{name}: `{hit}` once:\n{out}");
            all[0]
        };
        let (down, up) = (at("link down"), at("link up"));
        assert!(down < up, "{name}: down before up:\n{out}");
        eprintln!(
            "{name}: link down {:?} after set_link off, up {:?} after on (host clock, console included)",
            leg.down_after, leg.up_after
        );
        assert_eq!(leg.step, Step::Done, "{name}: {:?}\n{out}", leg.step);
        // Generous: TCG on a busy 2-core host; the event itself is polled every 20 ms,
        // and the e1000's auto-negotiation takes ~500 ms of the guest's clock.
        let limit = Duration::from_secs(5);
        assert!(leg.down_after.is_some_and(|d| d < limit), "{name}");
        assert!(leg.up_after.is_some_and(|d| d < limit), "{name}");
        // The run went on through it: progress after the link came back, and a summary.
        assert!(
            lines[up..].iter().any(|l| l.contains(" s  tx ")),
            "{name}: no progress after the link came back:\n{out}"
        );
        let sent = lines.iter().find(|l| l.contains(": sent ")).copied();
        assert!(
            sent.and_then(|l| figure(l, "sent")).is_some_and(|n| n > 0),
            "{name}: {out}"
        );
    }
}
