//! AF_XDP on several queues of a NIC the guest kernel drives: the kernel's virtio_net on a
//! two-queue tap (`mq=on,rss=on`), bridged in the run's own network namespace with an
//! e1000 that zcnic drives and sends from. `zcnic dump xdp:ethN --queues 2` receives a
//! stream of 64 flows: the flows spread over both queues, and every frame arrives once,
//! byte for byte, none lost, each flow in order. `zcnic stats --queues 2` shows the RSS
//! the kernel's driver holds (read through SIOCETHTOOL): a 40-byte Toeplitz key and a
//! table of the device's 128 entries over the two queues; `stats --reta 1` writes a table
//! all on queue 1 (read back the same), and the driver's own table is back once zcnic
//! closes, and while that table was in force nothing reached queue 0. More queues than the interface has is one line and exit status 2.
//!
//! ```text
//!  e1000 02.0 (zcnic pktgen, tap zt0) ──┐
//!                                         br0 (namespace of the run)
//!  virtio 03.0 (kernel virtio_net, AF_XDP, tap zt1, 2 queues) ──┘
//! ```

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{
    assert_one_line_error, boot, dump_leg, dump_queue_line, figure, guest_slot, nic_mac, read_pcap,
};
use zcnic_tools::frame;

const SENDER: &str = "0000:00:02.0";
const VIRTIO: &str = "0000:00:03.0";
const MQ_VIRTIO: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on,mq=on,rss=on";
/// Frames of 64 flows at 2k pps: well within what AF_XDP copy mode takes under TCG.
const N: usize = 6_000;
/// Frames sent while `stats --reta 1` has every table entry on queue 1.
const RETA_N: usize = 1_000;

/// The RSS `zcnic stats --json` printed: key, hashed types and table.
fn rss_of(json: &str) -> ([u8; 40], zcnic::rss::HashTypes, zcnic::rss::Reta) {
    let v: serde_json::Value = serde_json::from_str(json).expect("zcnic stats --json is JSON");
    let rss = &v["rss"];
    assert!(rss.is_object(), "an rss member: {json}");
    let hex = rss["key"].as_str().expect("a key");
    let key: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let key: [u8; 40] = key.try_into().expect("a 40-byte key");
    let types = zcnic::rss::HashTypes::from_bits_retain(rss["types"].as_u64().unwrap() as u32);
    let table: Vec<u16> = rss["table"]
        .as_array()
        .expect("a table")
        .iter()
        .map(|q| q.as_u64().unwrap() as u16)
        .collect();
    (key, types, zcnic::rss::Reta::new(table).unwrap())
}

/// The queue the Toeplitz hash with `key` over `types` and `reta` gives an IPv4/UDP frame
/// of pktgen's; `None` when its type is not hashed.
fn toeplitz_queue(
    f: &[u8],
    key: [u8; 40],
    types: zcnic::rss::HashTypes,
    reta: &zcnic::rss::Reta,
) -> Option<usize> {
    let ip = |o: usize| std::net::Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    let port = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    let flow = zcnic::rss::Flow {
        src: ip(26).into(),
        dst: ip(30).into(),
        ports: Some((zcnic::rss::L4::Udp, port(34), port(36))),
    };
    let (hash, _) = zcnic::rss::Toeplitz::new(key).flow(&flow, types)?;
    Some(usize::from(reta.queue(hash)))
}

#[test]
fn dump_over_af_xdp_on_two_virtio_net_queues_gets_every_frame_once() {
    let Some(_slot) = guest_slot("dump_over_af_xdp_on_two_virtio_net_queues_gets_every_frame_once")
    else {
        return;
    };
    let script = format!(
        "zcnic bind {SENDER}\n\
         modload virtio_net\n\
         n=0; until ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 4; done\n\
         V=$(ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/)\n\
         ip link set $V up\n\
         n=0; until [ \"$(cat /sys/class/net/$V/carrier)\" = 1 ]; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 6; done\n\
         ls /sys/class/net/$V/queues > /results/queues.txt\n\
         zcnic stats xdp:$V --queues 2 --duration 0.5 > /results/stats.txt 2>&1\n\
         zcnic stats xdp:$V --queues 2 --duration 0.5 --json > /results/stats.json 2> /results/stats.err\n\
         set +e; zcnic dump xdp:$V --queues 3 --out /results/q3.pcap --count 1 > /results/q3.out 2> /results/q3.err\n\
         echo $? > /results/q3.rc; set -e\n{}\
         zcnic stats xdp:$V --queues 2 --reta 1 --json --duration 30 > /results/reta.json 2> /results/reta.err &\n\
         S=$!\n\
         n=0; until grep -q receiving /results/reta.err; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/reta.err; exit 3; }}\n\
         done\n\
         sleep 2\n\
         zcnic pktgen {SENDER} --count {RETA_N} --rate 2k --flows 64 --stream 2 > /results/reta-pktgen.txt\n\
         wait $S\n\
         zcnic stats xdp:$V --queues 2 --duration 0.5 --json > /results/after.json 2> /results/after.err\n",
        dump_leg(
            SENDER,
            "xdp:$V",
            "mq",
            N,
            "--queues 2 --udp-port 23107",
            "--flows 64 --stream 1 --rate 2k"
        ),
    );
    let nics = vec![Nic::tap("e1000", 1, true), Nic::tap(MQ_VIRTIO, 2, false)];
    let run = boot("xdp-mq", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let (dump, err) = (read("mq-dump.txt"), read("mq-dump.err"));
    eprintln!(
        "{err}{dump}{}queues: {}",
        read("stats.txt"),
        read("queues.txt")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(err.contains("af_xdp (copy"), "{err}");
    assert!(err.contains("with 2 queues"), "{err}");
    assert_one_line_error(
        &run,
        "q3",
        "3 queues asked; the interface has 2 receive queues",
    );

    // The frames on the wire and the frames dump received: the same, byte for byte,
    // each once, each flow (source port) in order.
    let sent: Vec<Vec<u8>> = read_pcap(run.pcaps[0].as_ref().expect("a pcap of the e1000"))
        .into_iter()
        .filter(|f| f[6..12] == nic_mac(0))
        .filter(|f| frame::parse_meta(f).is_ok_and(|m| m.stream == 1))
        .collect();
    assert_eq!(sent.len(), N, "pktgen's frames on the wire");
    let got = read_pcap(&run.results.join("mq.pcap"));
    let line = dump
        .lines()
        .find(|l| l.contains(": wrote "))
        .unwrap_or_default();
    assert_eq!(figure(line, "wrote"), Some(N as u64), "{dump}");
    let (mut a, mut b) = (got.clone(), sent.clone());
    a.sort();
    b.sort();
    assert!(
        a == b,
        "received frames equal the frames on the wire, each once"
    );
    let flow = |f: &Vec<u8>| u16::from_be_bytes([f[34], f[35]]);
    for port in sent
        .iter()
        .map(flow)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let of = |v: &[Vec<u8>]| {
            v.iter()
                .filter(|f| flow(f) == port)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert!(
            of(&got) == of(&sent),
            "flow of source port {port}: each frame once, in order"
        );
    }
    // Both queues carried their part of the 64 flows.
    let per_queue: Vec<u64> = (0..2)
        .map(|q| figure(dump_queue_line(&dump, q), &format!("queue {q}:")).unwrap())
        .collect();
    assert_eq!(per_queue.iter().sum::<u64>(), N as u64, "{dump}");
    assert!(
        per_queue.iter().all(|&n| n > 0),
        "both queues: {per_queue:?}"
    );

    // The RSS virtio_net holds, as SIOCETHTOOL reads it.
    let text = read("stats.txt");
    let rss_line = text
        .lines()
        .find(|l| l.contains("rss "))
        .unwrap_or_default();
    assert!(rss_line.starts_with("  rss key "), "{text}");
    let (key, types, reta) = rss_of(read("stats.json").trim());
    assert_eq!(reta.len(), 128, "QEMU's virtio-net table: {rss_line}");
    assert!(reta.entries().iter().all(|&q| q < 2), "{rss_line}");
    assert!(
        reta.entries().contains(&0) && reta.entries().contains(&1),
        "the table spreads over both queues: {rss_line}"
    );
    assert_ne!(key, [0; 40], "a key the driver chose: {rss_line}");
    // Where the Toeplitz hash of the key and table read would put them: a figure only.
    // With this kernel and QEMU the split did not follow it (2810/3190 on every boot,
    // whatever the key; also after the table was written back), while a table all on
    // one queue is obeyed (below).
    let mut want = vec![0u64; 2];
    for f in &sent {
        if let Some(q) = toeplitz_queue(f, key, types, &reta) {
            want[q] += 1;
        }
    }
    eprintln!(
        "{N} frames of 64 flows: per queue {per_queue:?}; Toeplitz with the driver's key and \
         table (types {types:?}) says {want:?}"
    );

    // set_reta through SIOCETHTOOL: `stats --reta 1` reads back a table all on queue 1
    // with the same key, and the next port finds the driver's own table again.
    let (key1, _, all_one) = rss_of(read("reta.json").trim());
    assert_eq!(all_one.entries(), &[1u16; 128][..], "{}", read("reta.err"));
    assert_eq!(key1, key, "the key is left alone");
    let (_, _, after) = rss_of(read("after.json").trim());
    assert_eq!(after, reta, "the table put back when the port closed");
    let v: serde_json::Value = serde_json::from_str(read("reta.json").trim()).unwrap();
    let per: Vec<u64> = v["queues"]
        .as_array()
        .expect("a queues array")
        .iter()
        .map(|q| q["rx_packets"].as_u64().unwrap_or(0))
        .collect();
    // With every entry on queue 1, nothing reaches queue 0 (how many reach queue 1
    // within the run's window is a figure).
    eprintln!("{RETA_N} frames of 64 flows with every table entry on queue 1: per queue {per:?}");
    assert_eq!(
        per.first(),
        Some(&0),
        "queue 0 with a table all on queue 1: {per:?}"
    );
}
