//! `cargo xtask`: the project's task runner.
//!
//! ```text
//! cargo xtask test [--long] [ARGS...]
//!                              prepare guests, then `cargo test --workspace ARGS` with
//!                              ZCNIC_QEMU_REQUIRED=1 (QEMU tests must not skip); --long
//!                              sets ZCNIC_LONG=1: fuzz and soak tests run their long forms
//! cargo xtask miri             Miri over the memory crates' tests, several seeds
//! cargo xtask demo             zcnic pktgen on an e1000, a virtio-net and an igb NIC, live console
//! cargo xtask shell            the demo's guest with a shell on this terminal (shell.rs)
//! cargo xtask selftest         boot a guest and check the harness itself
//! cargo xtask prepare          only install/fetch/build what guests need
//! ```

mod bench;
mod miri;
mod testrun;

use std::process::{Command, ExitCode};
use std::time::Duration;

use zcnic_qemu::{GuestRun, GuestSpec, HostTool, Nic};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test [--long] [ARGS...]
                  prepare QEMU guests, then run `cargo test --workspace ARGS`
                  with ZCNIC_QEMU_REQUIRED=1 so that QEMU tests cannot skip;
                  --long sets ZCNIC_LONG=1 and builds optimised: the
                  adversarial-device state machines run >= 10^6 device
                  actions and 10^6 short cases per NIC, the soak runs 60 s;
                  every test binary runs (--no-fail-fast) and the last line
                  names the tests that failed
  miri [ARGS...]  `cargo +nightly miri test` on zcnic-descriptors and
                  zcnic-hugepages (or the -p ARGS pick), once per seed (4 seeds)
  demo            boot a guest with an e1000, a virtio-net and an igb NIC behind
                  a vIOMMU and run `zcnic pktgen` on each for 10 s, console live
  shell [--nics LIST] [--no-iommu] [--qemu-arg ARG]...
                  the demo's guest with zcnic, hugepages and a shell on this
                  terminal to try zcnic in; Ctrl-A X quits (`shell --help`)
  selftest        boot a guest with two e1000s and check the harness:
                  VFIO, IOMMU groups, huge pages, modules, results, pcap
  prepare         install QEMU, fetch the guest kernel, build the guest image
  bench [--runs N] [--smoke] [--allow-missing]
                  one guest boot: kernel pktgen, DPDK testpmd and zcnic on e1000,
                  virtio-net and igb (1 and 2 queues), and forwarding, each measured
                  the same way, repeated
                  and interleaved; history and chart in target/zcnic-bench/
                  (`bench --help` says more); --smoke: 1 s windows (CI)
  bench --host    instructions per packet (callgrind) and criterion benches on the
                  fake device; --quick for a short run (CI)

Each command installs the host packages it uses (QEMU, busybox-static, tshark,
valgrind) with apt-get when run as root, or names the apt-get command to run.
`bench` also installs ethtool and DPDK (dpdk, dpdk-dev, librte-net-af-xdp23).
`test` as root also reserves 2 MiB hugepages and mounts hugetlbfs for the host tests.

environment:
  ZCNIC_QEMU_ACCEL=kvm   use KVM instead of TCG (where nested KVM works)
  ZCNIC_GUEST_BIN=PATH   use this static zcnic in guests instead of building one";

const MODERN_VIRTIO: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on";
const SELFTEST: &str = include_str!("../guest/selftest.sh");
/// The demo: an e1000 and a modern virtio-net NIC, each on its own drop-sink wire, sending
/// flat out; then a second e1000 and virtio pair on one wire, pktgen sending at a set rate
/// from the e1000 and receiving on the virtio NIC: loss and latency.
const DEMO: &str = "set -e
zcnic list
for d in 0000:00:02.0 0000:00:03.0 0000:00:04.0 0000:00:05.0 0000:00:06.0; do zcnic bind $d; done
zcnic pktgen 0000:00:02.0 --duration 10
zcnic pktgen 0000:00:03.0 --duration 10
zcnic pktgen 0000:00:06.0 --duration 10
zcnic pktgen 0000:00:04.0 --rate 100k --duration 5 --rx 0000:00:05.0
";
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let result = match command.as_str() {
        "test" => test(rest),
        "miri" => miri::run(rest),
        "demo" => demo(),
        "shell" => shell(rest),
        "selftest" => selftest(),
        "bench" if rest.iter().any(|a| a == "--help" || a == "-h") => {
            println!("{}", bench::USAGE);
            Ok(ExitCode::SUCCESS)
        }
        "bench" if rest.iter().any(|a| a == "--host") => {
            let quick = rest.iter().any(|a| a == "--quick");
            bench::host(quick).map(|()| ExitCode::SUCCESS)
        }
        "bench" => bench::Options::parse(rest)
            .and_then(|o| bench::guest(&o))
            .map(|()| ExitCode::SUCCESS),
        "prepare" => prepare().map(|()| ExitCode::SUCCESS),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    result.unwrap_or_else(|message| {
        eprintln!("xtask: {message}");
        ExitCode::FAILURE
    })
}

/// Runs `prepare()`, saying what it got.
fn prepare() -> Result<(), String> {
    let prepared = zcnic_qemu::prepare().map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: guests ready: kernel {} ({}), zcnic {}",
        prepared.kernel_package,
        prepared.kernel.display(),
        prepared.zcnic.display()
    );
    Ok(())
}

/// Splits xtask's own `--long` off the arguments for cargo: whether it was given, and the
/// rest in order. Only before a `--`: what follows belongs to the test binaries.
fn take_long(args: &[String]) -> (bool, Vec<String>) {
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (ours, theirs) = args.split_at(split);
    let long = ours.iter().any(|a| a == "--long");
    let rest = ours
        .iter()
        .filter(|a| *a != "--long")
        .chain(theirs)
        .cloned()
        .collect();
    (long, rest)
}

/// `cargo test --workspace` after making sure QEMU tests can run; `--long` (ZCNIC_LONG=1)
/// selects the long forms of the fuzz and soak tests.
fn test(args: &[String]) -> Result<ExitCode, String> {
    let (long, extra) = take_long(args);
    let extra = extra.as_slice();
    // tshark: the tools tests decode pcaps with it; hugepages: the uio physical-address test
    // allocates real ones. Both fail the run at once, saying what to do, when missing.
    zcnic_qemu::ensure_host_tools(&[HostTool::Tshark, HostTool::Iproute2])
        .map_err(|e| e.to_string())?;
    zcnic_qemu::ensure_host_hugepages(zcnic_qemu::HOST_HUGEPAGES)?;
    prepare()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Every test binary runs even when one fails, so one run tells the whole story.
    cmd.args(["test", "--no-fail-fast"]);
    if long {
        // The long form is a nightly's: optimised, so 10^6 adversarial cases per NIC take
        // minutes, not an hour.
        cmd.env("ZCNIC_LONG", "1").arg("--release");
    }
    let picks_packages = extra
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-p" || a.starts_with("--package") || a.starts_with("-p"));
    if !picks_packages {
        // All features: the smoltcp device and its example are part of the product.
        cmd.args(["--workspace", "--all-features"]);
    }
    cmd.args(extra).env("ZCNIC_QEMU_REQUIRED", "1");
    let (ok, tally) = testrun::run(&cmd)?;
    println!("{}", tally.summary(ok));
    let all_passed = ok && tally.failed.is_empty() && tally.crashed.is_empty();
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn exit_code_of(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Boots a guest, reports the timings, and fails on a non-zero scenario status.
fn boot(spec: &GuestSpec) -> Result<GuestRun, String> {
    let run = zcnic_qemu::run(spec).map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: guest `{}`: boot {:.1} s, total {:.1} s, scenario exit {}, results in {}",
        spec.name,
        run.boot_time.as_secs_f64(),
        run.total_time.as_secs_f64(),
        run.exit_code,
        run.results.display()
    );
    Ok(run)
}

fn demo() -> Result<ExitCode, String> {
    prepare()?;
    let spec = GuestSpec {
        nics: vec![
            Nic::new("e1000", 0, false),
            Nic::new(MODERN_VIRTIO, 1, false),
            Nic::new("e1000", 2, false),
            Nic::new(MODERN_VIRTIO, 2, false),
            Nic::new("igb", 3, false),
        ],
        script: DEMO.into(),
        iommu: true,
        cpus: 2,
        timeout: Duration::from_secs(300),
        echo: true,
        kernel: zcnic_qemu::GuestKernel::Bookworm,
        name: "demo".into(),
    };
    let run = boot(&spec)?;
    let summary = |l: &&str| {
        l.starts_with("pktgen")
            && [": sent ", ": received ", "latency"]
                .iter()
                .any(|k| l.contains(k))
    };
    let results: Vec<&str> = run.console.lines().filter(summary).collect();
    if results.len() != 6 {
        return Err("the demo did not print every pktgen summary (see the console above)".into());
    }
    println!("\ndemo results (one boot, 60-byte frames):");
    println!("  flat out on a drop-sink wire, e1000, virtio-net, then igb:");
    for r in &results[..3] {
        println!("    {r}");
    }
    println!("  e1000 -> virtio-net on one wire at a set rate:");
    for r in &results[3..] {
        println!("    {r}");
    }
    Ok(exit_code_of(run.exit_code))
}

/// `cargo xtask shell`: QEMU gets this terminal, so typing reaches the guest's console and
/// QEMU's own Ctrl-A X works.
fn shell(args: &[String]) -> Result<ExitCode, String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", zcnic_qemu::shell::USAGE);
        return Ok(ExitCode::SUCCESS);
    }
    let shell = zcnic_qemu::shell::Shell::parse(args)?;
    let mut qemu = shell.command().map_err(|e| e.to_string())?;
    eprintln!("xtask: booting the guest (about 15 s under TCG); Ctrl-A X quits QEMU");
    let status = qemu
        .status()
        .map_err(|e| format!("cannot start QEMU: {e}"))?;
    Ok(exit_code_of(status.code().unwrap_or(1)))
}

fn selftest() -> Result<ExitCode, String> {
    prepare()?;
    let spec = GuestSpec {
        nics: vec![Nic::new("e1000", 0, true), Nic::new("e1000", 0, false)],
        script: SELFTEST.into(),
        iommu: true,
        cpus: 2,
        timeout: Duration::from_secs(300),
        echo: true,
        kernel: zcnic_qemu::GuestKernel::Bookworm,
        name: "selftest".into(),
    };
    let run = boot(&spec)?;
    let mut failures = Vec::new();
    if run.exit_code != 0 {
        failures.push(format!(
            "the guest's checks failed (exit {})",
            run.exit_code
        ));
    }
    let round_trip = std::fs::read_to_string(run.results.join("selftest.txt")).unwrap_or_default();
    if !round_trip.starts_with("selftest round trip ") {
        failures.push(format!(
            "results/selftest.txt did not come back: {round_trip:?}"
        ));
    }
    let pcap = run.pcaps.first().cloned().flatten();
    let pcap_bytes = pcap
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    // A pcap file header is 24 bytes; anything more is at least one frame.
    if pcap_bytes <= 24 {
        failures.push(format!(
            "NIC 0's pcap {pcap:?} holds no frames ({pcap_bytes} bytes)"
        ));
    }
    if run.pcaps.get(1) != Some(&None) {
        failures.push("NIC 1 should have no pcap".into());
    }
    if failures.is_empty() {
        println!(
            "selftest passed: boot {:.1} s, total {:.1} s, pcap {pcap_bytes} bytes",
            run.boot_time.as_secs_f64(),
            run.total_time.as_secs_f64()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!("selftest failed:\n  {}", failures.join("\n  ")))
    }
}

#[cfg(test)]
mod tests {
    use super::take_long;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn long_is_taken_off_before_the_double_dash_only() {
        assert_eq!(
            take_long(&args(&[
                "-p",
                "zcnic-tests",
                "--long",
                "--test",
                "qemu_soak"
            ])),
            (true, args(&["-p", "zcnic-tests", "--test", "qemu_soak"]))
        );
        assert_eq!(take_long(&args(&[])), (false, vec![]));
        assert_eq!(
            take_long(&args(&["--", "--long"])),
            (false, args(&["--", "--long"]))
        );
        assert_eq!(
            take_long(&args(&["--long", "--", "--nocapture"])),
            (true, args(&["--", "--nocapture"]))
        );
    }
}
