//! Helpers for the QEMU suite: the skip-or-fail rule, one guest at a time, pcap reading,
//! and checks on frames zcnic pktgen generated.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use zcnic_qemu::{GuestRun, GuestSpec, Nic};
use zcnic_tools::frame::{self, Flow};

static ONE_GUEST: Mutex<()> = Mutex::new(());

/// The lock that keeps guests from booting side by side on a 2-core machine, or `None`
/// when the suite must skip: QEMU is missing on a developer box that cannot install it.
/// Under CI (`CI` set) or `cargo xtask test` (`ZCNIC_QEMU_REQUIRED` set) it fails instead.
pub fn guest_slot(test: &str) -> Option<MutexGuard<'static, ()>> {
    if let Err(why) = zcnic_qemu::qemu_available() {
        let required =
            std::env::var_os("ZCNIC_QEMU_REQUIRED").is_some() || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "{test}: the QEMU suite must run here but cannot: {why}"
        );
        eprintln!("skipping {test}: {why}");
        return None;
    }
    Some(ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Boots a guest with `nics`, runs `script`, and insists the scenario exited 0.
pub fn boot(name: &str, nics: Vec<Nic>, script: &str) -> GuestRun {
    let spec = GuestSpec {
        nics,
        script: format!("set -e\n{script}"),
        iommu: true,
        timeout: Duration::from_secs(420),
        echo: std::env::var_os("ZCNIC_QEMU_ECHO").is_some(),
        name: name.into(),
    };
    let run = zcnic_qemu::run(&spec).unwrap_or_else(|e| panic!("{name}: guest run failed: {e}"));
    assert_eq!(
        run.exit_code,
        0,
        "{name}: scenario failed; console tail:\n{}",
        tail(&run.console, 40)
    );
    run
}

/// The last `n` lines.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every frame of a pcap file.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = pcap_file::pcap::PcapReader::new(f).expect("a pcap header");
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.expect("a well-formed pcap record").data.into_owned());
    }
    out
}

/// Checks that `frames` are exactly pktgen's frames 0..n, in order, byte for byte as
/// generated (all but the timestamp, which is compared for monotonicity).
pub fn assert_pktgen_sequence(frames: &[Vec<u8>], n: usize, size: usize, src_mac: [u8; 6]) {
    assert_eq!(frames.len(), n, "frame count");
    let mut gen = frame::FrameGen::new(Flow {
        src_mac,
        ..Flow::default()
    });
    let mut expect = vec![0u8; frame::MAX_FRAME];
    let mut last_ts = 0;
    for (i, f) in frames.iter().enumerate() {
        let meta = frame::parse(f).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!(
            meta.seq, i as u64,
            "frame {i} carries sequence {}",
            meta.seq
        );
        assert!(meta.tx_ns >= last_ts, "frame {i}: timestamp went back");
        last_ts = meta.tx_ns;
        let n = gen.write(&mut expect, size, 0, i as u64, meta.tx_ns);
        assert_eq!(
            f[..],
            expect[..n],
            "frame {i} differs from what pktgen generated"
        );
    }
}

/// MAC the harness gives NIC `i`.
pub fn nic_mac(i: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x12, 0x34, 0x10 + i]
}

/// A `key value` figure from a line like `…; device GPTC 100000, TPT 100000`.
pub fn figure(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key} "))? + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Checks one receive leg: among `frames`, those sent by `src_mac` are pktgen frames of
/// `stream` with sequence numbers exactly 0..n, in order (nothing lost, duplicated or late).
pub fn assert_leg_received(
    frames: Vec<Vec<u8>>,
    src_mac: [u8; 6],
    n: usize,
    stream: u16,
    name: &str,
) {
    // Only this leg's sender: the receiver's own frames never come back to it.
    let frames: Vec<Vec<u8>> = frames
        .into_iter()
        .filter(|f| f.len() >= 12 && f[6..12] == src_mac)
        .collect();
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| frame::parse(f).map(|m| m.seq).unwrap_or(u64::MAX))
        .collect();
    assert_eq!(seqs.len(), n, "{name}: every frame arrives");
    assert!(
        seqs.iter().enumerate().all(|(i, s)| *s == i as u64),
        "{name}: in order, none lost"
    );
    for f in &frames {
        let meta = frame::parse(f).expect("a pktgen frame");
        assert_eq!(meta.stream, stream, "{name}: stream id");
    }
}

/// Shell lines that wait for `file` to contain `text` (fwd and dump print a line once their
/// port is up; a minute at most, then the scenario fails showing the file), then for QEMU's
/// e1000 receive hold (1 s after RCTL is written) to pass.
pub fn wait_ready(file: &str, text: &str) -> String {
    format!(
        "n=0; until grep -q '{text}' {file}; do sleep 0.2; n=$((n+1)); \
         [ $n -lt 300 ] || {{ cat {file}; exit 3; }}; done; sleep 2\n"
    )
}
