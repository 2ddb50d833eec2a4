//! Several pktgen streams at once in QEMU, and a picture of the run: two streams at
//! different rates (1 kpps of 64-byte frames, 3 kpps of IMIX) for 5 s from one e1000 to
//! a virtio-net. On the host, each stream's count in the pcap is within 2% of its rate × time;
//! `--json` has each stream's loss and latency; the CSV has a row per second per stream;
//! the SVG parses as XML with a line per stream and metric. And streams spread over an
//! igb's queues, a thread each, keep their rates.

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{boot, guest_slot, read_pcap};

const TX: &str = "0000:00:02.0";
const RX: &str = "0000:00:03.0";

#[test]
fn two_streams_at_their_rates_with_a_csv_and_a_plot() {
    let Some(_slot) = guest_slot("two_streams_at_their_rates_with_a_csv_and_a_plot") else {
        return;
    };
    let script = format!(
        "zcnic bind {TX}\n\
         zcnic bind {RX}\n\
         zcnic pktgen {TX} --rx {RX} --stream size=64,rate=1k,id=1 --stream imix,rate=3k,id=9 \
            --duration 5 --rx-wait 2 --json --csv /results/run.csv --plot /results/run.svg \
            > /results/out.json 2> /results/err.txt\n\
         cat /results/err.txt /results/out.json\n"
    );
    // The receiver a virtio-net: QEMU's e1000 turns frames away for a second after its
    // receiver is enabled, which pktgen --rx does just before sending.
    let nics = vec![
        Nic::new("e1000", 0, true),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            0,
            false,
        ),
    ];
    let run = boot("streams", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let err = read("err.txt");

    // On the wire: each stream at its rate over the 5 s.
    let wire = read_pcap(run.pcaps[0].as_ref().expect("a pcap of the sender"));
    for (id, rate) in [(1u16, 1000.0), (9, 3000.0)] {
        let n = wire
            .iter()
            .filter(|f| zcnic_tools::frame::parse(f).is_ok_and(|m| m.stream == id))
            .count() as f64;
        let want = rate * 5.0;
        assert!(
            (n - want).abs() <= 0.02 * want,
            "stream {id}: {n} frames on the wire, {want} expected\n{err}"
        );
    }

    // --json: per stream, what was sent, lost and the latency.
    let json: serde_json::Value =
        serde_json::from_str(read("out.json").trim()).unwrap_or_else(|e| panic!("{e}\n{err}"));
    let streams = json["streams"].as_array().expect("a streams array");
    assert_eq!(streams.len(), 2, "{json}");
    for s in streams {
        let sent = s["sent"].as_u64().unwrap();
        assert!(sent > 0, "{s}");
        assert_eq!(s["rx"]["lost"].as_u64(), Some(0), "{s}");
        assert_eq!(s["rx"]["unique"].as_u64(), Some(sent), "{s}");
        assert!(s["rx"]["latency_ns"]["p99"].as_u64().unwrap() > 0, "{s}");
    }

    // The CSV: a row per second per stream.
    let csv = read("run.csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    let per = |id: &str| {
        rows.iter()
            .filter(|r| r.split(',').nth(1) == Some(id))
            .count()
    };
    assert!(per("1") >= 5 && per("1") == per("9"), "{csv}");
    assert_eq!(rows.len(), per("1") + per("9"));

    // The SVG: well-formed, a line per stream and metric (tx, rx, p50, p99).
    let svg = read("run.svg");
    let doc = roxmltree::Document::parse(&svg).expect("the plot is XML");
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
        .count();
    assert_eq!(lines, 2 * 4, "{err}");
    // The run and its picture, for a look (the README's comes from such a run).
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("streams-run.svg");
    let _ = std::fs::write(&keep, &svg);
    eprintln!("{err}{}\nplot: {}", read("out.json"), keep.display());
}

/// Streams spread over queues, one thread each: an igb with two queue pairs sends two
/// streams at their own rates, and the host pcap has each within 2% of rate × time.
#[test]
fn streams_spread_over_two_igb_queues_keep_their_rates() {
    let Some(_slot) = guest_slot("streams_spread_over_two_igb_queues_keep_their_rates") else {
        return;
    };
    let script = format!(
        "zcnic bind {TX}\n\
         zcnic pktgen {TX} --queues 2 --stream size=64,rate=1k,id=3 --stream size=200,rate=2k,id=4 \
            --duration 4 --csv /results/q.csv > /results/q.txt 2>&1\n\
         cat /results/q.txt\n"
    );
    let run = boot("streams-queues", vec![Nic::new("igb", 0, true)], &script);
    let out = std::fs::read_to_string(run.results.join("q.txt")).unwrap_or_default();
    assert!(out.contains("2 streams on 2 queues"), "{out}");
    let wire = read_pcap(run.pcaps[0].as_ref().expect("a pcap of the igb"));
    for (id, size, rate) in [(3u16, 64usize, 1000.0), (4, 200, 2000.0)] {
        let frames: Vec<&Vec<u8>> = wire
            .iter()
            .filter(|f| zcnic_tools::frame::parse(f).is_ok_and(|m| m.stream == id))
            .collect();
        let n = frames.len() as f64;
        assert!(
            (n - rate * 4.0).abs() <= 0.02 * rate * 4.0,
            "stream {id}: {n} frames\n{out}"
        );
        assert!(
            frames.iter().all(|f| f.len() == size),
            "stream {id} of {size} bytes"
        );
    }
    let csv = std::fs::read_to_string(run.results.join("q.csv")).unwrap_or_default();
    assert!(
        csv.lines()
            .skip(1)
            .any(|r| r.split(',').nth(1) == Some("4")),
        "{csv}"
    );
}
