//! `cargo xtask bench`: zcnic against the alternatives, measured in one guest boot; and
//! `--host`: instructions per packet on the fake device (callgrind) plus criterion benches.
//!
//! Nothing here fails on a number: the bench reports, tests assert.

use std::process::Command;
use std::time::Duration;
use zcnic_qemu::threads::{describe, mark};
use zcnic_qemu::{workspace_root, GuestRun, GuestSpec, Nic};

const SECS: u32 = 8;
/// Seconds of each run whose QEMU thread load is reported.
const SPAN: u32 = 4;
const MODERN_VIRTIO: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on";
/// (label, PCI address in the guest).
const NICS: [(&str, &str); 2] = [("e1000", "0000:00:02.0"), ("virtio", "0000:00:03.0")];
/// Forwarding: a source (e1000) floods the forwarder's way in (virtio) on one wire; the
/// forwarder sends out of an e1000 on a second wire, which only has the drop sink.
const FWD_SRC: &str = "0000:00:04.0";
const FWD_IN: &str = "0000:00:05.0";
const FWD_OUT: &str = "0000:00:06.0";
/// Median of numbers on stdin, one per line (the first seconds skipped by the caller).
const MEDIAN: &str = "median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }\n";

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The rows of `bench --host`: (label, datapath op, functions whose instructions count).
const HOST_ROWS: [(&str, &str, &[&str]); 8] = [
    ("e1000 tx", "tx", &["*E1000<B>>::tx", "*E1000<B>>::rx"]),
    ("e1000 tx, recycled", "tx-recycle", RECYCLING),
    ("e1000 rx", "rx", &["*E1000<B>>::tx", "*E1000<B>>::rx"]),
    ("e1000 rx, recycled", "rx-recycle", RECYCLING),
    ("e1000 fwd", "fwd", &["*E1000<B>>::tx", "*E1000<B>>::rx"]),
    ("e1000 fwd, recycled", "fwd-recycle", RECYCLING),
    (
        "virtio tx",
        "virtio-tx",
        &["*VirtioNet<Q> as zcnic::nic::Nic>::tx_batch"],
    ),
    ("pktgen", "pktgen", &["zcnic_tools::pktgen::run"]),
];

/// The recycling calls, counted from the trait method in: callgrind's toggles nest, so
/// the inner `tx`/`rx` they call must not be named as well.
const RECYCLING: &[&str] = &[
    "*E1000<B> as zcnic::nic::Nic>::tx_batch_recycle",
    "*E1000<B> as zcnic::nic::Nic>::rx_batch_recycle",
];

/// Instructions per packet inside `functions` while `op` runs, by callgrind. Threads are
/// counted apart, so a fake device's own thread is not in the figure. The divisor is the
/// count the program reports it processed, and only a run that exited 0 counts: a crash
/// part way would otherwise spread too few instructions over the packets asked for.
fn instructions(op: &str, functions: &[&str], batch: usize, packets: u64) -> Result<f64, String> {
    let bin = workspace_root().join("target/release/datapath");
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--collect-atstart=no",
            "--separate-threads=yes",
        ])
        .args(functions.iter().map(|f| format!("--toggle-collect={f}")))
        .arg(&bin)
        .args([op, &batch.to_string(), &packets.to_string()])
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // valgrind exits with the program's status (or its own error status).
    if !out.status.success() {
        return Err(format!(
            "datapath {op} under valgrind failed ({}):\n{stdout}{text}",
            out.status
        ));
    }
    let processed = processed(&stdout, op)
        .ok_or_else(|| format!("datapath {op} did not report its packet count:\n{stdout}"))?;
    if processed < packets {
        return Err(format!(
            "datapath {op} processed {processed} of {packets} packets"
        ));
    }
    let collected = text
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no callgrind total in:\n{text}"))?;
    Ok(collected / processed as f64)
}

/// The packet count from the datapath program's last line, `datapath OP: N packets at
/// batch B`.
fn processed(stdout: &str, op: &str) -> Option<u64> {
    let prefix = format!("datapath {op}: ");
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix(&prefix))?;
    line.split_whitespace().next()?.parse().ok()
}

/// `cargo xtask bench --host [--quick]`.
pub fn host(quick: bool) -> Result<(), String> {
    zcnic_qemu::ensure_host_tools(&[zcnic_qemu::HostTool::Valgrind]).map_err(|e| e.to_string())?;
    let status = cargo()
        .args([
            "build",
            "--release",
            "-p",
            "zcnic-tests",
            "--bin",
            "datapath",
        ])
        .current_dir(workspace_root())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("building the datapath driver program failed".into());
    }
    let (batches, packets): (&[usize], u64) = if quick {
        (&[32], 20_000)
    } else {
        (&[1, 4, 16, 32, 64], 200_000)
    };
    println!("instructions per packet (callgrind, fake devices, 60-byte frames):");
    println!(
        "  {:<20}{}",
        "",
        batches
            .iter()
            .map(|b| format!("{:>10}", format!("batch {b}")))
            .collect::<String>()
    );
    for (label, op, functions) in HOST_ROWS {
        let mut row = format!("  {label:<20}");
        for &b in batches {
            row += &format!("{:>10.1}", instructions(op, functions, b, packets)?);
        }
        println!("{row}");
    }
    println!("  (e1000 and virtio rows: the driver's calls; \"recycled\": through");
    println!("   tx_batch_recycle, sent packets handed back to be sent again, and");
    println!("   rx_batch_recycle, frames read handed back as the next refills, so no");
    println!("   buffer goes through the pool; pktgen: the generator's loop on a port that");
    println!("   hands every frame back at once, driver excluded)");
    println!("  (targets at batch 32: e1000 tx <= 60, rx <= 60, fwd <= 120)");
    let mut bench = cargo();
    bench
        .args([
            "bench",
            "-p",
            "zcnic-tests",
            "--bench",
            "datapath",
            "--bench",
            "zero_copy",
            "--",
        ])
        .current_dir(workspace_root());
    if quick {
        bench.args(["--warm-up-time", "0.1", "--measurement-time", "0.2"]);
    }
    let status = bench.status().map_err(|e| e.to_string())?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| "cargo bench failed".into())
}

fn kernel_pktgen(label: &str, pci: &str) -> String {
    format!(
        "IF=$(ls /sys/bus/pci/devices/{pci}/net/ 2>/dev/null || ls /sys/bus/pci/devices/{pci}/virtio*/net/)
ip link set $IF up; sleep 2
echo rem_device_all > /proc/net/pktgen/kpktgend_0
echo \"add_device $IF\" > /proc/net/pktgen/kpktgend_0
P=/proc/net/pktgen/$IF
# Kernel pktgen at its best: one skb sent over and over, bursts through xmit_more.
for c in 'count 0' 'pkt_size 60' 'delay 0' 'clone_skb 1000000' 'burst 32' 'dst 10.0.0.2' 'dst_mac ff:ff:ff:ff:ff:ff'; do echo \"$c\" > $P; done
before=$(cat /sys/class/net/$IF/statistics/tx_packets)
echo start > /proc/net/pktgen/pgctrl &
sleep 2
{begin}sleep {SPAN}
{end}sleep {rest}
echo stop > /proc/net/pktgen/pgctrl; wait
after=$(cat /sys/class/net/$IF/statistics/tx_packets)
echo \"kernel {label} $(grep -o '[0-9]*pps' $P | head -1) netdev-tx $((after - before))\" | tee -a /results/bench.txt
",
        begin = mark(&format!("begin kernel {label}")),
        end = mark(&format!("end kernel {label}")),
        rest = SECS - 2 - SPAN,
    )
}

/// Runs `cmd` (one shell line) in the background and marks a span of [`SPAN`] seconds
/// starting `after` seconds in, when the tool is in its stride, for the thread profile.
fn sampled(phase: &str, cmd: &str, after: u32) -> String {
    format!(
        "{cmd} &\nPH=$!\nsleep {after}\n{}sleep {SPAN}\n{}wait $PH || true\n",
        mark(&format!("begin {phase}")),
        mark(&format!("end {phase}"))
    )
}

const TESTPMD: &str = "/usr/bin/dpdk-testpmd";
const PMDS: &str = "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0";
const PMD_LIBS: [&str; 4] = ["bus_pci", "mempool_ring", "net_e1000", "net_virtio"];

/// DPDK's testpmd and the shared libraries it needs, as (host, guest) paths; installs
/// `dpdk-dev` as root when missing. `None` (with the reason printed) when unavailable.
fn dpdk_files() -> Option<Vec<(std::path::PathBuf, String)>> {
    if !std::path::Path::new(TESTPMD).exists() {
        let _ = Command::new("sh")
            .args(["-c", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpdk dpdk-dev"])
            .status();
    }
    if !std::path::Path::new(TESTPMD).exists() {
        eprintln!("bench: no {TESTPMD}: `apt-get install dpdk dpdk-dev` to compare with DPDK");
        return None;
    }
    let mut bins: Vec<String> = vec![TESTPMD.into()];
    bins.extend(PMD_LIBS.iter().map(|p| format!("{PMDS}/librte_{p}.so.23")));
    let mut files: Vec<String> = bins.clone();
    for b in &bins {
        let out = Command::new("ldd").arg(b).output().ok()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split("=>").nth(1) {
                Some(rest) => rest.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                if !files.iter().any(|f| f == p) {
                    files.push(p.to_string());
                }
            }
        }
    }
    Some(files.into_iter().map(|f| (f.clone().into(), f)).collect())
}

fn testpmd(label: &str, pci: &str) -> String {
    let drivers = dpdk_drivers();
    let run = format!(
        "timeout -s INT {} dpdk-testpmd -l 0-1 -n 1 --in-memory --iova-mode=va -a {pci}{drivers} -- --forward-mode=txonly --txpkts=60 --stats-period=1 > /results/testpmd-{label}.txt 2>&1",
        SECS + 8
    );
    // testpmd's first seconds are EAL start-up: sample the end of its run.
    sampled(&format!("testpmd {label}"), &run, SECS + 8 - 2 - SPAN)
        + &format!(
            "echo \"testpmd {label} $(grep -o 'Tx-pps: *[0-9]*' /results/testpmd-{label}.txt | tr -s ' ' | cut -d' ' -f2 | tail -n +4 | median)pps\" | tee -a /results/bench.txt
"
        )
}

fn dpdk_drivers() -> String {
    PMD_LIBS
        .iter()
        .map(|p| format!(" -d {PMDS}/librte_{p}.so.23"))
        .collect()
}

/// zcnic fwd, then testpmd io, on the same ports while the source floods them; each
/// figure is the median of the per-second forwarded rates after the first two seconds.
fn forwarding(dpdk: bool) -> String {
    let total = if dpdk { 2 * SECS + 20 } else { SECS + 8 };
    let mut s = format!(
        "zcnic bind {FWD_SRC}; zcnic bind {FWD_IN}; zcnic bind {FWD_OUT}
# The source on CPU 0, the forwarder on CPU 1, when taskset is there.
P0=; P1=; if command -v taskset >/dev/null; then P0='taskset -c 0'; P1='taskset -c 1'; fi
$P0 zcnic pktgen {FWD_SRC} --duration {total} > /results/fwd-source.txt 2>&1 &
SRC=$!
sleep 2
{}echo \"fwd zcnic $(grep 'fwd {FWD_IN} -> {FWD_OUT}: .* s ' /results/fwd-zcnic.txt | sed 's/.* tx *\\([0-9]*\\) pps.*/\\1/' | tail -n +3 | median)pps\" | tee -a /results/bench.txt
",
        sampled(
            "fwd zcnic",
            &format!("$P1 zcnic fwd --port {FWD_IN} --port {FWD_OUT} --duration {SECS} > /results/fwd-zcnic.txt 2>&1"),
            SECS - SPAN
        )
    );
    if dpdk {
        let run = format!(
            "timeout -s INT {} dpdk-testpmd -l 0-1 -n 1 --in-memory --iova-mode=va -a {FWD_IN} -a {FWD_OUT}{} -- --forward-mode=io --stats-period=1 > /results/testpmd-fwd.txt 2>&1",
            SECS + 8,
            dpdk_drivers()
        );
        s += &sampled("fwd testpmd", &run, SECS + 8 - 2 - SPAN);
        s += &format!(
            "# Port 1 ({FWD_OUT}) is the second block of each report: what io mode forwarded.
echo \"fwd testpmd $(grep -o 'Tx-pps: *[0-9]*' /results/testpmd-fwd.txt | awk 'NR % 2 == 0 {{print $2}}' | tail -n +3 | median)pps\" | tee -a /results/bench.txt
"
        );
    }
    s + "wait $SRC\n"
}

/// What each run cost QEMU on the host: which thread was at one host CPU says what set
/// the rate (the vCPU for guest work and the e1000 model, I/O for virtio-net's transmit
/// work); a vCPU well under 100% was waiting for QEMU's global lock.
fn print_threads(run: &GuestRun) {
    println!("  QEMU host threads, {SPAN} s of each run once it is sending (share of one host CPU; I/O runs virtio-net's transmit work),");
    println!("  and the host's core-to-core cache-line round trip then (high when the cloud put this machine's CPUs far apart):");
    let mut phases: Vec<String> = Vec::new();
    for (label, _) in NICS {
        for tool in ["kernel", "testpmd", "zcnic", "ceiling"] {
            phases.push(format!("{tool} {label}"));
        }
    }
    phases.extend(["fwd zcnic".into(), "fwd testpmd".into()]);
    let load = |p: &str| run.load(&format!("begin {p}"), &format!("end {p}"));
    for p in &phases {
        if let Some(l) = load(p) {
            // How far apart the host's CPUs were: virtio's rate depends on it.
            let trip = run
                .trip(&format!("begin {p}"), &format!("end {p}"))
                .map_or(String::new(), |t| {
                    format!("; core round trip {} ns", t.as_nanos())
                });
            println!("    {p:<16}{}{trip}", describe(&l));
        }
    }
    // A rate set by QEMU's I/O thread says nothing about the driver that fed it.
    for (label, _) in NICS {
        let bound: Vec<&str> = ["testpmd", "zcnic", "ceiling"]
            .into_iter()
            .filter(|t| io_busy(run, &format!("{t} {label}")).unwrap_or(0.0) >= IO_BOUND)
            .collect();
        if !bound.is_empty() {
            println!(
                "  {label}: QEMU's I/O thread was at least {:.0}% busy in the {} run(s): the device model, not the driver, set those rates",
                IO_BOUND * 100.0,
                bound.join(", ")
            );
        }
    }
}

/// Names, per NIC, two runs whose host core round trips differ by [`FAR_APART`] or more,
/// among the runs where QEMU's I/O thread did a real share of the work ([`IO_SHARE`]):
/// their frames cross between the vCPU and the I/O thread, so a ratio between them
/// compares two states of the host as much as two tools. (The e1000 model runs on the
/// vCPU, which the round trip hardly touches.)
fn print_host_states(run: &GuestRun) {
    for (label, _) in NICS {
        let trips: Vec<(&str, u128)> = ["kernel", "testpmd", "zcnic", "ceiling"]
            .into_iter()
            .filter_map(|t| {
                let phase = format!("{t} {label}");
                (io_busy(run, &phase)? >= IO_SHARE).then_some(())?;
                let trip = run.trip(&format!("begin {phase}"), &format!("end {phase}"))?;
                Some((t, trip.as_nanos()))
            })
            .collect();
        let (Some(near), Some(far)) = (
            trips.iter().min_by_key(|t| t.1),
            trips.iter().max_by_key(|t| t.1),
        ) else {
            continue;
        };
        if far.1 >= FAR_APART * near.1.max(1) {
            println!(
                "  {label}: the host's core round trip was {} ns in the {} run but {} ns in the {} run: frames cross between QEMU's threads, so a ratio between those two runs compares host states as much as tools",
                near.1, near.0, far.1, far.0
            );
        }
    }
}

/// How busy QEMU's I/O thread was in `phase` (`"zcnic virtio"`), if it was sampled.
fn io_busy(run: &GuestRun, phase: &str) -> Option<f64> {
    run.load(&format!("begin {phase}"), &format!("end {phase}"))?
        .into_iter()
        .find(|t| t.name == "I/O")
        .map(|t| t.busy)
}

/// Round trips this many times apart mean the host's CPUs moved between runs.
const FAR_APART: u128 = 2;
/// A run whose I/O thread is this busy has its frames cross between host threads.
const IO_SHARE: f64 = 0.4;

/// An I/O thread this busy is the bottleneck of a run.
const IO_BOUND: f64 = 0.9;

fn parse_pps(line: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_suffix("pps").and_then(|n| n.parse().ok()))
}

/// `cargo xtask bench`: one guest boot, kernel pktgen then zcnic pktgen on the same NICs.
pub fn guest() -> Result<(), String> {
    zcnic_qemu::prepare().map_err(|e| e.to_string())?;
    let mut script = String::from("modload e1000\nmodload virtio_net\nmodload pktgen\nsleep 1\n");
    script += MEDIAN;
    for (label, pci) in NICS {
        script += &kernel_pktgen(label, pci);
    }
    for (label, pci) in NICS {
        script += &format!("zcnic bind {pci}\n");
        for (tool, flags) in [("zcnic", ""), ("ceiling", " --ceiling")] {
            let run = format!("zcnic pktgen {pci}{flags} --duration {SECS} | grep ': sent ' | sed 's/^/{tool} {label} /' | tee -a /results/bench.txt");
            // zcnic's start-up (mapping its memory) comes before its SECS of sending.
            script += &sampled(&format!("{tool} {label}"), &run, SECS - SPAN);
        }
    }
    let dpdk = dpdk_files();
    if dpdk.is_some() {
        // EAL wants a runtime directory and refuses world-writable plugin path parents.
        script += "mkdir -p /var/run/dpdk\nchmod 755 /\n";
        for (label, pci) in NICS {
            script += &testpmd(label, pci);
        }
    }
    script += &forwarding(dpdk.is_some());
    zcnic_qemu::threads::measure_trips(true);
    let spec = GuestSpec {
        nics: vec![
            Nic::new("e1000", 0, false),
            Nic::new(MODERN_VIRTIO, 1, false),
            Nic::new("e1000", 2, false),
            Nic::new(MODERN_VIRTIO, 2, false),
            Nic::new("e1000", 3, false),
        ],
        script,
        iommu: true,
        timeout: Duration::from_secs(900),
        echo: true,
        name: "bench".into(),
    };
    let run =
        zcnic_qemu::run_with_files(&spec, &dpdk.unwrap_or_default()).map_err(|e| e.to_string())?;
    let lines = std::fs::read_to_string(run.results.join("bench.txt")).unwrap_or_default();
    let find = |tool: &str, label: &str| {
        lines
            .lines()
            .find(|l| l.starts_with(&format!("{tool} {label} ")))
            .map(str::to_string)
    };
    // zcnic's summary: `pktgen ADDR: sent N frames (B bytes) in T s: R pps, …`.
    let sent_pps = |l: &str| -> Option<f64> {
        l.split(": ")
            .last()?
            .split(" pps")
            .next()?
            .trim()
            .parse()
            .ok()
    };
    println!("\nbench: one boot, TCG, 60-byte frames, drop-sink wire, {SECS} s each (pps)");
    println!(
        "  {:<8}{:>14}{:>14}{:>14}{:>14}{:>14}{:>14}  device check",
        "NIC",
        "kernel pktgen",
        "DPDK testpmd",
        "zcnic pktgen",
        "zcnic/kernel",
        "zcnic/DPDK",
        "ceiling"
    );
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    let mut fractions = Vec::new();
    for (label, _) in NICS {
        let z = find("zcnic", label);
        let kp = find("kernel", label).as_deref().and_then(parse_pps);
        let dp = find("testpmd", label).as_deref().and_then(parse_pps);
        let zp = z.as_deref().and_then(sent_pps);
        let ceiling = find("ceiling", label).as_deref().and_then(sent_pps);
        let check = z
            .as_deref()
            .and_then(|l| l.split("device ").nth(1))
            .unwrap_or("(no device counter)");
        println!(
            "  {label:<8}{:>14}{:>14}{:>14}{:>14}{:>14}{:>14}  {check}",
            fmt(kp),
            fmt(dp),
            fmt(zp),
            ratio(zp, kp),
            ratio(zp, dp),
            fmt(ceiling)
        );
        fractions.push(format!(
            "  {label} as a fraction of its ceiling (zcnic pktgen --ceiling, {} pps): kernel pktgen {}, DPDK testpmd {}, zcnic pktgen {}",
            fmt(ceiling),
            ratio(kp, ceiling),
            ratio(dp, ceiling),
            ratio(zp, ceiling)
        ));
    }
    for f in fractions {
        println!("{f}");
    }
    let zf = find("fwd", "zcnic").as_deref().and_then(parse_pps);
    let df = find("fwd", "testpmd").as_deref().and_then(parse_pps);
    println!(
        "  forwarding virtio -> e1000 (median per-second rate): zcnic fwd {}, testpmd io {}, zcnic/DPDK {}",
        fmt(zf),
        fmt(df),
        ratio(zf, df)
    );
    print_threads(&run);
    print_host_states(&run);
    if run.exit_code != 0 {
        return Err(format!("the bench scenario exited {}", run.exit_code));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::processed;

    #[test]
    fn the_packet_count_comes_from_the_programs_own_line() {
        let out = "warming up\ndatapath rx: 20032 packets at batch 32\n";
        assert_eq!(processed(out, "rx"), Some(20032));
        assert_eq!(processed(out, "tx"), None, "another op's line");
        assert_eq!(processed("", "rx"), None, "a run that printed nothing");
    }
}
