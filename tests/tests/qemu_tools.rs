//! The QEMU suite for the tools: pktgen → fwd → pktgen across four NICs on two wires,
//! rate accuracy measured on the wire, and a `zcnic dump` pcap read by tshark.
//!
//! One guest boot runs every phase; the tests below each check their part of it.
//!
//! ```text
//!  e1000 #1 (02.0) ── hub 0 ── virtio #1 (03.0) ═ zcnic fwd ═ e1000 #2 (04.0) ── hub 1 ── virtio #2 (05.0)
//!  pktgen TX                                                                         pktgen RX
//! ```

use std::sync::OnceLock;
use zcnic_qemu::{GuestRun, Nic};
use zcnic_tests::qemu_suite::{boot, guest_slot, read_pcap, tshark_count, wait_ready};

const MODERN: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on";
const N: u64 = 20_000;
const RATE_N: u64 = 60_000;

fn scenario() -> String {
    let (e1, v1, e2, v2) = (
        "0000:00:02.0",
        "0000:00:03.0",
        "0000:00:04.0",
        "0000:00:05.0",
    );
    let mut s = format!("for d in {e1} {v1} {e2} {v2}; do zcnic bind $d; done\n");
    for (name, extra, stream) in [("lossless", "", 1), ("drop", "--drop-every 100", 2)] {
        s += &format!(
            "zcnic fwd --port {v1} --port {e2} {extra} > /results/fwd-{name}.txt 2>&1 &\nfwd=$!\n"
        );
        s += &wait_ready(&format!("/results/fwd-{name}.txt"), "Ctrl-C stops");
        s += &format!(
            "zcnic pktgen {e1} --count {N} --rate 50k --stream {stream} --rx {v2} --json \
               > /results/pktgen-{name}.json 2> /results/pktgen-{name}.txt\n\
             kill -INT $fwd; wait $fwd\n\
             cat /results/pktgen-{name}.txt /results/pktgen-{name}.json /results/fwd-{name}.txt\n"
        );
    }
    s += &format!("zcnic pktgen {e1} --count {RATE_N} --rate 20000 --stream 3\n");
    s += &format!(
        "zcnic dump {v1} --out /results/dump.pcap --count 1000 --udp-port 23107 \
           > /results/dump.txt 2> /results/dump.err &\ndump=$!\n"
    );
    s += &wait_ready("/results/dump.err", "listening");
    s += &format!(
        "zcnic pktgen {e1} --count 1000 --rate 10k --stream 4 --imix\n\
         wait $dump\ncat /results/dump.err /results/dump.txt\n"
    );
    s
}

/// The one boot all tests here share.
fn guest() -> Option<&'static GuestRun> {
    static RUN: OnceLock<GuestRun> = OnceLock::new();
    let _slot = guest_slot("qemu_tools")?;
    Some(RUN.get_or_init(|| {
        let nics = vec![
            Nic::new("e1000", 0, true),
            Nic::new(MODERN, 0, false),
            Nic::new("e1000", 1, false),
            Nic::new(MODERN, 1, false),
        ];
        boot("tools", nics, &scenario())
    }))
}

/// The number after `"key":` in a flat JSON text.
fn json_num(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let end = json[at..].find([',', '}']).map_or(json.len(), |e| at + e);
    json[at..end].parse().ok()
}

fn result(run: &GuestRun, file: &str) -> String {
    std::fs::read_to_string(run.results.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn pktgen_through_fwd_loses_nothing_and_measures_latency() {
    let Some(run) = guest() else { return };
    let json = result(run, "pktgen-lossless.json");
    assert_eq!(json_num(&json, "sent"), Some(N as f64), "{json}");
    assert_eq!(
        json_num(&json, "unique"),
        Some(N as f64),
        "every frame back: {json}"
    );
    assert_eq!(json_num(&json, "lost"), Some(0.0), "{json}");
    assert_eq!(json_num(&json, "duplicated"), Some(0.0), "{json}");
    assert_eq!(json_num(&json, "reordered"), Some(0.0), "{json}");
    let p99 = json_num(&json, "p99").expect("latency percentiles");
    assert!(p99 > 0.0, "p99 {p99}");
    let table = result(run, "pktgen-lossless.txt");
    assert!(table.contains("p99.9"), "percentiles printed:\n{table}");
    let fwd = result(run, "fwd-lossless.txt");
    assert!(
        fwd.contains(&format!("received {N}, forwarded {N}")),
        "fwd totals after Ctrl-C:\n{fwd}"
    );
    // Every buffer is back in its pool once the ports close: 2 fwd ports, 2 pktgen ports.
    let back: Vec<&str> = fwd
        .lines()
        .chain(table.lines())
        .filter(|l| l.contains("buffers back in the pool"))
        .collect();
    assert_eq!(back.len(), 4, "pool lines:\n{fwd}\n{table}");
    for l in back {
        let nums: Vec<&str> = l
            .split_whitespace()
            .filter(|w| w.parse::<u64>().is_ok())
            .collect();
        assert!(
            nums.len() >= 2 && nums[nums.len() - 2] == nums[nums.len() - 1],
            "{l}"
        );
    }
}

#[test]
fn fwd_dropping_every_100th_frame_is_exactly_one_percent_loss() {
    let Some(run) = guest() else { return };
    let json = result(run, "pktgen-drop.json");
    assert_eq!(json_num(&json, "sent"), Some(N as f64), "{json}");
    assert_eq!(json_num(&json, "lost"), Some((N / 100) as f64), "{json}");
    let fwd = result(run, "fwd-drop.txt");
    assert!(
        fwd.contains(&format!("dropped on purpose {}", N / 100)),
        "{fwd}"
    );
}

#[test]
fn rate_20000_is_within_5_percent_on_the_wire() {
    let Some(run) = guest() else { return };
    let pcap = run.pcaps[0].as_ref().expect("NIC 0's pcap");
    let f = std::fs::File::open(pcap).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
    let mut times = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        if let Ok(m) = zcnic_tools::frame::parse_meta(&p.data) {
            if m.stream == 3 {
                times.push(p.timestamp);
            }
        }
    }
    assert_eq!(
        times.len() as u64,
        RATE_N,
        "every frame of the rate phase on the wire"
    );
    let span = (*times.last().unwrap() - times[0]).as_secs_f64();
    let rate = (times.len() - 1) as f64 / span;
    eprintln!("--rate 20000 measured on the wire: {rate:.0} pps over {span:.2} s");
    assert!((rate - 20_000.0).abs() <= 1_000.0, "measured {rate:.0} pps");
}

#[test]
fn dump_pcap_is_read_by_tshark() {
    let Some(run) = guest() else { return };
    let pcap = run.results.join("dump.pcap");
    assert_eq!(read_pcap(&pcap).len(), 1000);
    let tshark = |filter: &str| tshark_count(&pcap, filter);
    assert_eq!(
        tshark("udp.dstport == 23107"),
        1000,
        "frames tshark decodes as our UDP"
    );
    assert_eq!(
        tshark("_ws.malformed || _ws.expert.severity >= error"),
        0,
        "malformed frames"
    );
    assert_eq!(
        tshark("ip.checksum.status == \"Good\" && udp.checksum.status == \"Good\""),
        1000,
        "valid IPv4 and UDP checksums"
    );
}
