//! `cargo xtask bench --host`: instructions per packet on the fake device (callgrind),
//! then the criterion benches.

use std::process::Command;
use zcnic_qemu::workspace_root;

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The rows of `bench --host`: (label, datapath op, functions whose instructions count).
const HOST_ROWS: [(&str, &str, &[&str]); 12] = [
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
    (
        "virtio rx",
        "virtio-rx",
        &["*VirtioNet<Q> as zcnic::nic::Nic>::rx_batch"],
    ),
    ("igb tx", "igb-tx", IGB),
    ("igb rx", "igb-rx", IGB),
    ("igb fwd", "igb-fwd", IGB),
    ("pktgen", "pktgen", &["zcnic_tools::pktgen::run"]),
];

/// The igb's calls, from the trait methods an application calls (the queue handles'
/// own methods may be inlined into them).
const IGB: &[&str] = &[
    "*Igb<B> as zcnic::nic::Nic>::tx_batch",
    "*Igb<B> as zcnic::nic::Nic>::rx_batch",
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
