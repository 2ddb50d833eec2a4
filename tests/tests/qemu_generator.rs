//! pktgen's templates and ranges in QEMU, checked on the host: IPv6/UDP, IPv4/TCP with
//! flags, ICMP echo and VLAN-tagged IPv6/TCP frames from an e1000 decode in tshark with
//! nothing malformed and every checksum "Good"; a destination-IP × source-port range puts
//! exactly its combinations on the wire, in odometer order, and `--order random` the same
//! set in another order.

use std::collections::BTreeSet;
use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{boot, guest_slot, read_pcap, tshark_count};

const E1000: &str = "0000:00:02.0";
const N: usize = 100;

/// (stream, dst IP's last byte, UDP source port) of each pktgen frame on the wire.
fn ranged(frames: &[Vec<u8>], stream: u16) -> Vec<(u8, u16)> {
    frames
        .iter()
        .filter(|f| zcnic_tools::frame::parse(f).is_ok_and(|m| m.stream == stream))
        .map(|f| (f[33], u16::from_be_bytes([f[34], f[35]])))
        .collect()
}

#[test]
fn templates_decode_clean_and_ranges_walk_their_set() {
    let Some(_slot) = guest_slot("templates_decode_clean_and_ranges_walk_their_set") else {
        return;
    };
    let p = |args: &str, stream: u16, n: usize| {
        format!("zcnic pktgen {E1000} {args} --count {n} --rate 2k --stream {stream} > /results/s{stream}.txt 2>&1\n")
    };
    let script = [
        format!("zcnic bind {E1000}\n"),
        p("--ipv6", 1, N),
        p("--proto tcp --tcp-flags SYN,ACK", 2, N),
        p("--proto icmp", 3, N),
        p("--proto tcp --ipv6 --vlan 100", 4, N),
        p("--dst-ip 10.0.1.1-10.0.1.5 --src-port 2000-2018:2", 5, 50),
        p(
            "--dst-ip 10.0.2.1-10.0.2.5 --src-port 3000-3009 --order random --seed 3",
            6,
            50,
        ),
        // Bad input: one line each, exit 2.
        format!("zcnic pktgen {E1000} --proto sctp > /results/bad1.txt 2>&1 || echo $? >> /results/bad1.txt\n"),
        format!("zcnic pktgen {E1000} --ipv6 --dst-ip 10.0.0.9 > /results/bad2.txt 2>&1 || echo $? >> /results/bad2.txt\n"),
        "cat /results/s*.txt /results/bad*.txt\n".to_string(),
    ]
    .concat();
    let run = boot("generator", vec![Nic::new("e1000", 0, true)], &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let wire = run.pcaps[0].as_ref().expect("a pcap of the e1000");

    assert_eq!(tshark_count(wire, "_ws.malformed"), 0, "nothing malformed");
    let shapes = [
        (1, "ipv6 && !vlan && udp.dstport == 23107 && udp.checksum.status == \"Good\""),
        (
            2,
            "ip && tcp.dstport == 23107 && tcp.flags.syn == 1 && tcp.flags.ack == 1 \
             && tcp.flags.fin == 0 && ip.checksum.status == \"Good\" && tcp.checksum.status == \"Good\"",
        ),
        (
            3,
            "icmp.type == 8 && icmp.ident == 23107 && ip.checksum.status == \"Good\" \
             && icmp.checksum.status == \"Good\"",
        ),
        (
            4,
            "vlan.id == 100 && ipv6 && tcp.dstport == 23107 && tcp.checksum.status == \"Good\"",
        ),
    ];
    for (stream, filter) in shapes {
        assert_eq!(
            tshark_count(wire, filter),
            N,
            "stream {stream}: {filter}\n{}",
            read(&format!("s{stream}.txt"))
        );
    }

    // Sequential: the odometer, source port fastest, each of the 50 once, in order.
    let frames = read_pcap(wire);
    let want: Vec<(u8, u16)> = (1..=5u8)
        .flat_map(|ip| (0..10u16).map(move |k| (ip, 2000 + 2 * k)))
        .collect();
    assert_eq!(ranged(&frames, 5), want, "{}", read("s5.txt"));
    // Random: the same set, once each, in another order.
    let got = ranged(&frames, 6);
    let set: BTreeSet<(u8, u16)> = got.iter().copied().collect();
    let want: BTreeSet<(u8, u16)> = (1..=5u8)
        .flat_map(|ip| (0..10u16).map(move |k| (ip, 3000 + k)))
        .collect();
    assert_eq!((got.len(), &set), (50, &want), "{}", read("s6.txt"));
    assert!(
        got.windows(2).any(|w| w[0] > w[1]),
        "a random order: {got:?}"
    );

    for (f, what) in [("bad1.txt", "--proto sctp"), ("bad2.txt", "IPv6")] {
        let out = read(f);
        assert!(
            out.contains(what) && out.trim_end().ends_with('2') && out.lines().count() == 2,
            "one line and exit 2: {out}"
        );
    }
}
