//! `zcnic replay` in QEMU: a capture of 1 000 frames of 60 to 9 000 bytes with irregular
//! gaps (and two frames too long for MTU 9000) is replayed on an e1000 over the
//! filter-dump wire. The host pcap holds the same frames byte for byte in order; with the
//! original timing 95% of the gaps on the host side are within 5% of the capture's (the
//! median within 1%), and none is cut short; `--loop 3` at a fixed rate gives exactly
//! 3 000 more; the two long frames are reported and skipped.

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use std::path::PathBuf;
use std::time::Duration;
use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{guest_slot, spec, tail};

const E1000: &str = "0000:00:02.0";
const N: usize = 1000;
/// The replayed frames' EtherType (IEEE local experimental): nothing else on the wire
/// has it.
const ETHER_TYPE: [u8; 2] = [0x88, 0xb5];

/// A small deterministic generator, so a failure replays the same capture.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The capture: (gap before it in µs, frame); frame `i` carries `i` and its size.
fn capture() -> Vec<(u64, Vec<u8>)> {
    let mut r = Lcg(19);
    let mut out: Vec<(u64, Vec<u8>)> = (0..N)
        .map(|i| {
            let len = 60 + r.next(9014 - 60 + 1) as usize;
            let mut f: Vec<u8> = (0..len)
                .map(|k| (k as u8).wrapping_mul(7) ^ i as u8)
                .collect();
            f[..6].fill(0xff);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 0x99, 0x01]);
            f[12..14].copy_from_slice(&ETHER_TYPE);
            f[14..18].copy_from_slice(&(i as u32).to_be_bytes());
            // Gaps of 1 to 12 ms, the first frame at 0.
            let gap = if i == 0 { 0 } else { 1000 + r.next(11_000) };
            (gap, f)
        })
        .collect();
    // Two frames over MTU 9000 (9014-byte frames), to be skipped.
    for at in [100, 700] {
        let mut long = out[at].1.clone();
        long.resize(9015 + at, 0x55);
        long[14..18].copy_from_slice(&u32::MAX.to_be_bytes());
        out.insert(at, (0, long));
    }
    out
}

fn write_capture(path: &PathBuf, frames: &[(u64, Vec<u8>)]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut t = Duration::from_secs(1_700_000_000);
    for (gap, f) in frames {
        t += Duration::from_micros(*gap);
        w.write_packet(&PcapPacket::new(t, f.len() as u32, f))
            .unwrap();
    }
}

/// The replayed frames on the wire, with their host timestamps.
fn replayed(path: &std::path::Path) -> Vec<(Duration, Vec<u8>)> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        if p.data.get(12..14) == Some(&ETHER_TYPE[..]) {
            out.push((p.timestamp, p.data.into_owned()));
        }
    }
    out
}

#[test]
fn replay_sends_a_capture_byte_for_byte_in_time_and_in_loops() {
    let Some(_slot) = guest_slot("replay_sends_a_capture_byte_for_byte_in_time_and_in_loops")
    else {
        return;
    };
    let frames = capture();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join("replay-trace.pcap");
    write_capture(&file, &frames);
    let script = format!(
        "zcnic bind {E1000}\n\
         zcnic replay /trace.pcap {E1000} --mtu 9000 > /results/orig.txt 2>&1\n\
         zcnic replay /trace.pcap {E1000} --mtu 9000 --rate 5k --loop 3 > /results/loop.txt 2>&1\n\
         cat /results/orig.txt /results/loop.txt\n"
    );
    let s = spec("replay", vec![Nic::new("e1000", 0, true)], &script);
    let run = zcnic_qemu::run_with_files(&s, &[(file.clone(), "/trace.pcap".into())])
        .unwrap_or_else(|e| panic!("replay: guest run failed: {e}"));
    let _ = std::fs::remove_file(&file);
    assert_eq!(run.exit_code, 0, "{}", tail(&run.console, 40));
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let (orig, looped) = (read("orig.txt"), read("loop.txt"));
    for out in [&orig, &looped] {
        assert!(
            out.contains("skipped 2 frames longer than MTU 9000 allows (the longest 9715 bytes"),
            "the long frames reported:\n{out}"
        );
    }
    assert!(orig.contains(&format!("sent {N} frames")), "{orig}");
    assert!(
        looped.contains(&format!("sent {} frames", 3 * N)),
        "{looped}"
    );

    let want: Vec<&(u64, Vec<u8>)> = frames.iter().filter(|(_, f)| f.len() <= 9014).collect();
    assert_eq!(want.len(), N);
    let wire = replayed(run.pcaps[0].as_ref().expect("a pcap of the e1000"));
    assert_eq!(wire.len(), 4 * N, "{orig}\n{looped}");
    for (k, (_, got)) in wire.iter().enumerate() {
        assert!(*got == want[k % N].1, "frame {k} byte for byte, in order");
    }

    // The original timing: gaps on the host within 5% of the capture's (gaps of 1 ms and
    // more; every one here is). The skipped frames' gaps count towards the next.
    let mut gaps = Vec::new();
    let mut since = 0u64;
    for (gap, f) in &frames[1..] {
        since += gap;
        if f.len() <= 9014 {
            gaps.push(since);
            since = 0;
        }
    }
    let host: Vec<u64> = wire[..N]
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_micros() as u64)
        .collect();
    // Relative error of each gap, signed: above 0 when the host saw it longer.
    let off: Vec<f64> = gaps
        .iter()
        .zip(&host)
        .map(|(&g, &h)| (h as f64 - g as f64) / g as f64)
        .collect();
    let mut sorted: Vec<f64> = off.iter().map(|o| o.abs()).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mut signed = off.clone();
    signed.sort_by(f64::total_cmp);
    eprintln!(
        "signed gap error: p5 {:.2}%, p25 {:.2}%, median {:.2}%, p75 {:.2}%, p95 {:.2}%",
        signed[signed.len() * 5 / 100] * 100.0,
        signed[signed.len() / 4] * 100.0,
        signed[signed.len() / 2] * 100.0,
        signed[signed.len() * 3 / 4] * 100.0,
        signed[signed.len() * 95 / 100] * 100.0
    );
    let within = sorted.iter().filter(|&&o| o <= 0.05).count();
    eprintln!(
        "replay gaps on the host vs the capture's: median {:.2}%, p99 {:.2}%, worst {:.2}%; {within} of {} within 5%",
        median * 100.0,
        sorted[sorted.len() * 99 / 100] * 100.0,
        sorted[sorted.len() - 1] * 100.0,
        off.len()
    );
    // A gap is stretched when the host preempts the guest's vCPU while it waits: under
    // TCG with other work on the host's two cores, up to a few in a hundred (984 of 999
    // within 5% in a loaded run, 994 in a lighter one). The host stamps a frame when QEMU
    // hands it to the tap, so one frame held back stretches the gap before it and shortens
    // the one after (CI saw 2020 us arrive as 1918 right after a long one). What replay
    // must never do is catch up: a short gap counts only when the two gaps ending in it are
    // short together, i.e. the frame went out early, not the one before it late.
    let short: Vec<(usize, u64, u64)> = (0..off.len())
        .filter(|&i| off[i] < -0.05)
        .filter(|&i| {
            let (g, h) = match i {
                0 => (gaps[0], host[0]),
                _ => (gaps[i - 1] + gaps[i], host[i - 1] + host[i]),
            };
            (h as f64) < g as f64 * 0.95
        })
        .map(|i| (i, gaps[i], host[i]))
        .collect();
    assert!(
        short.is_empty(),
        "gaps cut short (index, capture µs, host µs): {short:?}"
    );
    assert!(median <= 0.01, "median gap error {:.2}%", median * 100.0);
    assert!(
        within * 100 >= off.len() * 95,
        "{within} of {} gaps within 5%",
        off.len()
    );
}
