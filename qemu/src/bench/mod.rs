//! `cargo xtask bench`: zcnic against kernel pktgen and DPDK testpmd in one guest boot,
//! every tool measured by the same rule over the same window, repeated and interleaved,
//! checked against the device, recorded in a history and drawn; and `--host`:
//! instructions per packet on the fake device (callgrind) plus criterion benches.
//!
//! The bench fails (exit status non-zero, one line per reason) when a tool fails, a peer
//! is missing (unless `--allow-missing`) or a count disagrees with the device. It never
//! fails on a rate: the table reports, tests assert.

mod chart;
mod history;
mod host;
mod load;
mod parse;
mod plan;
mod report;
mod stats;

pub use host::host;

use plan::{Plan, Target};
use stats::Window;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use zcnic_qemu::{GuestSpec, HostTool, Nic};

const MODERN_VIRTIO: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on";
/// The same with several queue pairs (on a tap of two queues): no RSS or hash report, so
/// zcnic and DPDK send the same 12-byte headers.
const MQ_VIRTIO: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on,mq=on";

pub const USAGE: &str = "usage: cargo xtask bench [--runs N] [--smoke] [--allow-missing]
       cargo xtask bench --host [--quick]

One guest boot (TCG): kernel pktgen, DPDK testpmd (txonly) and zcnic pktgen sending
60-byte frames flat out from an e1000, a virtio-net and an igb NIC, zcnic's ceiling (one
frame re-posted: what QEMU's device model takes), the igb again from two transmit
queues on the two vCPUs (zcnic pktgen --queues 2, testpmd --txq=2 --nb-cores=2; each
compared with its one-queue figure), forwarding each way between a virtio-net and
an e1000 NIC with zcnic fwd (polling, and --idle hybrid: it must keep up with polling
under load) and testpmd io, and the virtio-net NIC left to the kernel's
virtio_net, sent through AF_XDP by zcnic (xdp:IFACE) and by testpmd's net_af_xdp
(compared with the same NIC under zcnic's and DPDK's own drivers and kernel pktgen).

Every run is measured the same way: after a 2 s warm-up from its first frame, over a
6 s window of its per-second samples; on the e1000 and the igb by the device's own
transmit counter (GPTC, read by each tool's driver: zcnic, DPDK, the kernel through
ethtool), elsewhere by the median of
each tool's per-second counts. Tools run interleaved, each --runs times (default 2).

options:
  --runs N         rounds of every tool (default 2)
  --only T[,T...]  only these targets: e1000 virtio igb igb-2q virtio-mq virtio-mq-2q
                   fwd-virtio-e1000 fwd-e1000-virtio virtio-xdp (e.g. --only
                   fwd-virtio-e1000 --runs 6: polling against hybrid forwarding)
  --smoke          1 s warm-up, a 1 s window, one round: checks the bench itself (CI)
  --allow-missing  run without a peer (DPDK) that cannot be installed, instead of failing
  --host           instructions per packet on the fake device, then criterion benches
  --quick          with --host: a short run

Fails (exit 1, one line each) when a tool fails, a peer is missing, or a tool's count
disagrees with the device's by more than one ring. Each bench appends a JSON line to
target/zcnic-bench/history.jsonl and redraws target/zcnic-bench/bench.svg (the last 10
benches; --smoke: bench-smoke.svg).";

/// `cargo xtask bench` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub runs: usize,
    pub smoke: bool,
    pub allow_missing: bool,
    /// `--only`: these targets, not all.
    pub only: Option<Vec<Target>>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            runs: 2,
            smoke: false,
            allow_missing: false,
            only: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--smoke" => o.smoke = true,
                "--allow-missing" => o.allow_missing = true,
                "--runs" => {
                    let n = it.next().ok_or("--runs needs a number, e.g. --runs 3")?;
                    o.runs = n
                        .parse()
                        .ok()
                        .filter(|n| (1..=20).contains(n))
                        .ok_or_else(|| format!("--runs {n}: give a number from 1 to 20"))?;
                }
                "--only" => {
                    let list = it
                        .next()
                        .ok_or("--only needs targets, e.g. --only e1000,virtio")?;
                    let mut only = Vec::new();
                    for key in list.split(',') {
                        only.push(Target::from_key(key).ok_or_else(|| {
                            format!(
                                "--only {key}: no such target; give some of {}",
                                Target::ALL.map(Target::key).join(" ")
                            )
                        })?);
                    }
                    o.only = Some(only);
                }
                other => return Err(format!("unknown bench option `{other}`\n\n{USAGE}")),
            }
        }
        Ok(o)
    }

    fn plan(&self, dpdk: bool) -> Plan {
        let (window, rounds) = if self.smoke {
            (Window { warm: 1, secs: 1 }, 1)
        } else {
            (Window { warm: 2, secs: 6 }, self.runs)
        };
        let targets = match &self.only {
            Some(only) => Target::ALL
                .into_iter()
                .filter(|t| only.contains(t))
                .collect(),
            None => Target::ALL.to_vec(),
        };
        Plan {
            window,
            targets,
            tail: 2,
            rounds,
            dpdk,
        }
    }

    /// The history's name for this kind of bench: only benches of one mode are drawn
    /// together (a partial one would leave gaps in the full chart).
    fn mode(&self) -> &'static str {
        match (self.smoke, &self.only) {
            (true, _) => "smoke",
            (false, Some(_)) => "only",
            (false, None) => "full",
        }
    }
}

/// `bins` and every shared library they load, as (host, guest) paths: the same path in
/// the guest, so that the dynamic loader finds them there.
fn with_libraries(bins: &[String]) -> Result<Vec<(PathBuf, String)>, String> {
    let mut files: Vec<String> = bins.to_vec();
    for b in bins {
        let out = Command::new("ldd")
            .arg(b)
            .output()
            .map_err(|e| format!("ldd {b}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ldd {b} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split("=>").nth(1) {
                Some(rest) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                if !files.iter().any(|f| f == p) {
                    files.push(p.to_string());
                }
            }
        }
    }
    Ok(files.into_iter().map(|f| (f.clone().into(), f)).collect())
}

/// The last `bench-run: ID` the scenario printed: where it stopped, if it stopped early.
fn last_run(console: &str) -> Option<&str> {
    console
        .lines()
        .rev()
        .find_map(|l| l.split("bench-run: ").nth(1))
        .map(str::trim)
}

/// `cargo xtask bench`: one guest boot, every tool on every target, interleaved.
pub fn guest(opts: &Options) -> Result<(), String> {
    let prepared = zcnic_qemu::prepare().map_err(|e| e.to_string())?;
    // ethtool reads the e1000's GPTC through the kernel driver: no kernel figure without.
    // ip (iproute2) makes the tap wire of the two-queue virtio-net.
    zcnic_qemu::ensure_host_tools(&[HostTool::Ethtool, HostTool::Iproute2])
        .map_err(|e| e.to_string())?;
    let ethtool = zcnic_qemu::find_program("ethtool").ok_or("ethtool not found")?;
    let mut files = with_libraries(&[ethtool.display().to_string()])?;
    let mut missing = None;
    match zcnic_qemu::ensure_host_tools(&[HostTool::Testpmd]) {
        Ok(()) => {
            files.extend(with_libraries(&plan::testpmd_binaries())?);
            files.extend(plan::LIBXDP_OBJECTS.map(|o| (o.into(), o.to_string())));
        }
        Err(e) => missing = Some(format!("DPDK testpmd is missing ({e})")),
    }
    if let (Some(m), false) = (&missing, opts.allow_missing) {
        // Known before booting: fail now rather than after the other tools ran.
        return Err(format!(
            "bench: {m}; `cargo xtask bench --allow-missing` runs without it"
        ));
    }
    let plan = opts.plan(missing.is_none());
    let runs = plan.runs();
    zcnic_qemu::threads::measure_trips(true);
    let spec = GuestSpec {
        nics: vec![
            Nic::new("e1000", 0, false),
            Nic::new(MODERN_VIRTIO, 1, false),
            Nic::new("e1000", 2, false),
            Nic::new(MODERN_VIRTIO, 2, false),
            Nic::new("e1000", 3, false),
            Nic::new(MODERN_VIRTIO, 4, false),
            Nic::new("igb", 5, false),
            Nic::tap(MQ_VIRTIO, 2, false),
        ],
        script: plan.script(),
        iommu: true,
        cpus: 2,
        // About 40 s a run at most (testpmd's start-up under TCG is most of it).
        timeout: Duration::from_secs(120 + 40 * runs.len() as u64),
        echo: true,
        kernel: zcnic_qemu::GuestKernel::Bookworm,
        name: format!("bench-{}", opts.mode()),
    };
    let guest = zcnic_qemu::run_with_files(&spec, &files).map_err(|e| e.to_string())?;
    let mut report = report::analyse(&guest.results, &plan);
    if let Some(m) = missing {
        report::missing_peer(&mut report, m, opts.allow_missing);
    }
    if guest.exit_code != 0 {
        report.failures.insert(
            0,
            format!(
                "bench: the guest scenario stopped (exit {}) during {}; see {}",
                guest.exit_code,
                last_run(&guest.console).unwrap_or("its set-up"),
                guest
                    .results
                    .parent()
                    .unwrap_or(&guest.results)
                    .join("console.log")
                    .display()
            ),
        );
    }
    report::print(&report, &plan);
    load::print(&guest, &runs);
    record(&report, &plan, opts.mode(), &guest, &runs, &prepared.qemu)?;
    report::verdict(&report)
}

/// Appends the bench to the history and redraws the chart of the last ten of its mode.
fn record(
    report: &report::Report,
    plan: &Plan,
    mode: &str,
    guest: &zcnic_qemu::GuestRun,
    runs: &[plan::Run],
    qemu: &std::path::Path,
) -> Result<(), String> {
    let trips: Vec<u64> = load::trips(guest, runs)
        .iter()
        .map(|t| t.1 as u64)
        .collect();
    let mut entry = history::Entry::new(report, plan, mode, &trips);
    entry.qemu = history::qemu_version(qemu);
    let dir = history::dir();
    let path = dir.join("history.jsonl");
    history::append(&path, &entry)?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (entries, skipped) = history::parse(&text);
    let svg = chart::svg(&history::recent(&entries, mode, 10))?;
    let name = match mode {
        "full" => "bench.svg",
        "only" => "bench-only.svg",
        _ => "bench-smoke.svg",
    };
    std::fs::write(dir.join(name), svg).map_err(|e| format!("{name}: {e}"))?;
    println!(
        "  history: {} ({} entries{}), chart: {}",
        path.display(),
        entries.len(),
        if skipped > 0 {
            format!(", {skipped} unreadable lines skipped")
        } else {
            String::new()
        },
        dir.join(name).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse_and_refuse_with_a_reason() {
        let o = Options::parse(&args(&["--runs", "3", "--allow-missing"])).unwrap();
        assert_eq!((o.runs, o.smoke, o.allow_missing), (3, false, true));
        assert_eq!(o.plan(true).rounds, 3);
        let smoke = Options::parse(&args(&["--smoke"])).unwrap().plan(true);
        assert_eq!(
            (smoke.window.warm, smoke.window.secs, smoke.rounds),
            (1, 1, 1)
        );
        assert!(Options::parse(&args(&["--runs"]))
            .unwrap_err()
            .contains("needs a number"));
        assert!(Options::parse(&args(&["--runs", "0"]))
            .unwrap_err()
            .contains("from 1 to 20"));
        let only = Options::parse(&args(&["--only", "fwd-virtio-e1000,e1000"])).unwrap();
        assert_eq!(
            only.plan(true).targets,
            [Target::E1000, Target::FwdVirtioE1000],
            "in the bench's order"
        );
        assert_eq!(only.mode(), "only");
        assert!(Options::parse(&args(&["--only", "e1000,nope"]))
            .unwrap_err()
            .contains("--only nope: no such target"));
        assert!(Options::parse(&args(&["--fast"]))
            .unwrap_err()
            .contains("unknown bench option `--fast`"));
    }

    #[test]
    fn the_run_the_scenario_stopped_in_is_named() {
        let console =
            "bench-run: kernel-e1000-1\nzcnic-mark: begin x\nbench-run: zcnic-e1000-1\nsh: oops\n";
        assert_eq!(last_run(console), Some("zcnic-e1000-1"));
        assert_eq!(last_run("boot\n"), None);
    }
}
