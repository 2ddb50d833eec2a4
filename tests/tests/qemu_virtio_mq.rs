//! virtio-net with several queue pairs in QEMU: the device on a multi-queue tap
//! (`-netdev tap,queues=4`, `mq=on,rss=on,hash=on`), bridged in a network namespace of the
//! run's own with an e1000 that sends. QEMU steers each received frame by the RSS
//! configuration zcnic sent over the control queue; zcnic checks each frame's reported
//! hash against its own Toeplitz, and the test checks every frame's queue against the
//! frames on the wire. The receive filter (VIRTIO_NET_CTRL_RX) is checked in the same
//! boot.
//!
//! ```text
//!  e1000 02.0 (tap zt0) ──┐
//!                          br0 (namespace zcnic-virtio-mq-PID)
//!  virtio 03.0 (tap zt1, 4 queues) ──┘
//! ```

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{
    assert_fwd_hairpin, assert_one_line_error, assert_rss_placement, boot, dump_leg,
    fwd_hairpin_script, guest_slot, nic_mac, read_pcap, rss_queue_of,
};
use zcnic_tools::frame;

const SENDER: &str = "0000:00:02.0";
const VIRTIO: &str = "0000:00:03.0";
/// A third NIC on the bridge that records the wire (`zcnic dump`, promiscuous).
const WATCHER: &str = "0000:00:04.0";
const MQ_VIRTIO: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on,mq=on,rss=on,hash=on";
/// Frames of each RSS leg, over 64 flows (125 per flow), at 2k pps: a rate the guest's
/// dump threads keep up with even on a loaded host (at 5k pps one run on a busy machine
/// lost a quarter of a leg inside QEMU, for want of a free buffer on the queue).
const N: usize = 8_000;
/// Frames of each receive-filter leg.
const FILTERED: usize = 1_000;
/// A unicast MAC that is no NIC's.
const STRANGER: &str = "52:54:00:99:99:99";

/// The wire's frames of pktgen stream `stream` (the leg's own).
fn stream_frames(wire: &[Vec<u8>], stream: u16) -> Vec<Vec<u8>> {
    wire.iter()
        .filter(|f| f[6..12] == nic_mac(0))
        .filter(|f| frame::parse_meta(f).is_ok_and(|m| m.stream == stream))
        .cloned()
        .collect()
}

#[test]
fn virtio_rss_puts_every_flow_on_its_toeplitz_queue_and_promisc_off_filters() {
    let Some(_slot) =
        guest_slot("virtio_rss_puts_every_flow_on_its_toeplitz_queue_and_promisc_off_filters")
    else {
        return;
    };
    // Receive filter: with promiscuity off, frames for a stranger are turned away and
    // broadcast ones arrive; with it on, the stranger's arrive too.
    let filter = format!(
        "zcnic dump {VIRTIO} --no-promisc --out /results/strict.pcap --count {FILTERED} --duration 120 \
            > /results/strict-dump.txt 2> /results/strict-dump.err &\n\
         dump=$!\n\
         n=0; until grep -q listening /results/strict-dump.err; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/strict-dump.err; exit 3; }}\n\
         done\n\
         sleep 2\n\
         zcnic pktgen {SENDER} --count {FILTERED} --rate 25k --stream 3 --dst-mac {STRANGER} > /results/stranger.txt\n\
         zcnic pktgen {SENDER} --count {FILTERED} --rate 25k --stream 4 > /results/broadcast.txt\n\
         wait $dump\n\
         cat /results/strict-dump.err /results/strict-dump.txt\n"
    );
    // zcnic stats --queues 4 --json counts a 64-flow stream per queue.
    let stats = format!(
        "zcnic stats {VIRTIO} --queues 4 --json --duration 12 > /results/stats.json 2> /results/stats.err &\n\
         S=$!\n\
         n=0; until grep -q receiving /results/stats.err; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/stats.err; exit 3; }}\n\
         done\n\
         sleep 2\n\
         zcnic pktgen {SENDER} --count {FILTERED} --rate 5k --flows 64 --stream 6 > /results/stats-pktgen.txt\n\
         wait $S\n\
         cat /results/stats.json\n"
    );
    let script = format!(
        "zcnic bind {SENDER}\nzcnic bind {VIRTIO}\n\
         set +e; zcnic pktgen {VIRTIO} --queues 8 --count 1 > /results/q8.out 2> /results/q8.err\n\
         echo $? > /results/q8.rc; set -e\n{}{}{filter}{}{stats}",
        dump_leg(
            SENDER,
            VIRTIO,
            "rss4",
            N,
            "--queues 4",
            "--flows 64 --stream 1 --rate 2k"
        ),
        dump_leg(
            SENDER,
            VIRTIO,
            "rss2",
            N,
            "--queues 2",
            "--flows 64 --stream 2 --rate 2k"
        ),
        dump_leg(
            SENDER,
            VIRTIO,
            "open",
            FILTERED,
            "",
            &format!("--stream 5 --dst-mac {STRANGER}")
        ),
    );
    let nics = vec![Nic::tap("e1000", 1, true), Nic::tap(MQ_VIRTIO, 4, false)];
    let run = boot("virtio-mq", nics, &script);
    // Bad input: more queue pairs than the device has is one line and exit code 2.
    assert_one_line_error(&run, "q8", "8 queue pairs asked; the device has 4");
    let wire = read_pcap(run.pcaps[0].as_ref().expect("a pcap of NIC 0"));
    for (leg, stream, queues) in [("rss4", 1, 4), ("rss2", 2, 2)] {
        let sent = stream_frames(&wire, stream);
        assert_eq!(sent.len(), N, "{leg}: pktgen's frames on the wire");
        let dump = std::fs::read_to_string(run.results.join(format!("{leg}-dump.txt"))).unwrap();
        let received = read_pcap(&run.results.join(format!("{leg}.pcap")));
        let per_queue = assert_rss_placement(&sent, &dump, &received, queues, 128);
        assert_eq!(per_queue.iter().sum::<u64>(), N as u64, "{leg}: 0 lost");
        eprintln!("{leg}: {N} frames of 64 flows over {queues} queues: {per_queue:?}, 0 misplaced");
    }
    // zcnic stats: valid JSON, four queues, each with its Toeplitz share of stream 6.
    let json = std::fs::read_to_string(run.results.join("stats.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).expect("zcnic stats --json is JSON");
    let per: Vec<u64> = v["queues"]
        .as_array()
        .expect("a queues array")
        .iter()
        .map(|q| q["rx_packets"].as_u64().expect("rx_packets"))
        .collect();
    let reta = zcnic::rss::Reta::spread(4, 128).unwrap();
    let mut want = vec![0u64; 4];
    for f in stream_frames(&wire, 6) {
        want[rss_queue_of(&f, &reta)] += 1;
    }
    assert_eq!(per, want, "stats per queue: {json}");
    assert_eq!(
        v["software"]["rx_packets"].as_u64(),
        Some(FILTERED as u64),
        "{json}"
    );
    // Promiscuity off: exactly the broadcast stream, none of the stranger's.
    let strict = read_pcap(&run.results.join("strict.pcap"));
    assert_eq!(
        strict.len(),
        FILTERED,
        "broadcast frames with promiscuity off"
    );
    assert!(
        strict
            .iter()
            .all(|f| f[..6] == [0xff; 6] && frame::parse_meta(f).is_ok_and(|m| m.stream == 4)),
        "only the broadcast stream arrives"
    );
    assert_eq!(
        stream_frames(&wire, 3).len(),
        FILTERED,
        "the stranger's frames were on the wire"
    );
    // Promiscuous (dump's default): the stranger's frames arrive.
    let open = read_pcap(&run.results.join("open.pcap"));
    assert_eq!(open.len(), FILTERED);
    assert!(open
        .iter()
        .all(|f| frame::parse_meta(f).is_ok_and(|m| m.stream == 5)));
    let dump = std::fs::read_to_string(run.results.join("open-dump.txt")).unwrap();
    assert!(dump.contains(&format!("wrote {FILTERED} frames")), "{dump}");
}

/// `zcnic fwd --queues 2` on virtio-net: each of two threads sends back out of the port
/// what its queue pair receives. Every frame of a 64-flow stream returns to the wire once,
/// byte for byte, as a third NIC on the bridge sees it; each queue forwards exactly its
/// Toeplitz share; the pool is full at exit.
#[test]
fn virtio_fwd_on_two_queue_pairs_returns_every_frame_from_its_rss_queue() {
    let Some(_slot) =
        guest_slot("virtio_fwd_on_two_queue_pairs_returns_every_frame_from_its_rss_queue")
    else {
        return;
    };
    let script = format!(
        "zcnic bind {SENDER}\nzcnic bind {VIRTIO}\nzcnic bind {WATCHER}\n\
         zcnic dump {WATCHER} --out /results/wire.pcap --count {} --duration 200 \
            > /results/wire.txt 2> /results/wire.err &\n\
         W=$!\n\
         n=0; until grep -q listening /results/wire.err; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/wire.err; exit 3; }}\n\
         done\n\
         {}\
         wait $W\n\
         cat /results/wire.txt\n",
        2 * N,
        fwd_hairpin_script(SENDER, VIRTIO, 2, N, "5k")
    );
    let nics = vec![
        Nic::tap("e1000", 1, false),
        Nic::tap(MQ_VIRTIO, 2, false),
        Nic::tap("e1000", 1, false),
    ];
    let run = boot("virtio-fwd-mq", nics, &script);
    let wire = read_pcap(&run.results.join("wire.pcap"));
    assert_fwd_hairpin(&run, &wire, N, 2);
}
