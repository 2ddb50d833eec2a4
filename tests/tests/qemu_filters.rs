//! Receive filters in QEMU, with promiscuity off: a port that joined a multicast group
//! receives its frames and not those of a group of another MTA hash bit; with
//! all-multicast it receives both. An e1000, a virtio-net and an igb capture the same
//! wire at once (`zcnic dump --no-promisc --join`/`--allmulti`), each through its own
//! device's filter: the e1000's and igb's Multicast Table Array (RCTL.MPE for
//! all-multicast), virtio-net's VIRTIO_NET_CTRL_MAC_TABLE_SET and CTRL_RX_ALLMULTI.
//!
//! ```text
//!  e1000 02.0 (pktgen) ──┐
//!  e1000 03.0 ───────────┤ hub 1
//!  virtio 04.0 ──────────┤
//!  igb 05.0 ─────────────┘
//! ```
//!
//! Each leg sends three streams in turn, to the joined group, to the other group and to
//! broadcast, and each capture stops at the count of frames its filter must let in: a
//! frame of the other group that got in would take the place of a later frame, so the
//! checks are on which streams arrived, not on timing.

use zcnic::filter::mta_hash;
use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{boot, figure, guest_slot, nic_mac, read_pcap};
use zcnic_tools::frame;

const SENDER: &str = "0000:00:02.0";
/// The receivers: name (for result files), PCI address and dump's own options. The igb
/// captures on two queues, so its filters go through the multi-queue `Port` (all of
/// pktgen's frames are one flow, which RSS keeps on one queue, in order).
const RECEIVERS: [(&str, &str, &str); 3] = [
    ("e1000", "0000:00:03.0", ""),
    ("virtio", "0000:00:04.0", ""),
    ("igb", "0000:00:05.0", "--queues 2"),
];
const MODERN: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on";
/// The IPv6 solicited-node group of ::1: MTA hash 0x010.
const JOINED: &str = "33:33:ff:00:00:01";
/// Another solicited-node group: MTA hash 0x020, another register and bit.
const OTHER: &str = "33:33:ff:00:00:02";
/// Frames of each stream.
const K: usize = 300;

/// Shell lines of one leg: a capture of `want` IPv4 frames on every receiver with `opts`,
/// then pktgen's streams `(stream, destination)` one after the other.
fn leg(name: &str, opts: &str, want: usize, streams: &[(u16, &str)]) -> String {
    let mut s = String::new();
    for (r, pci, own) in RECEIVERS {
        s += &format!(
            "zcnic dump {pci} --out /results/{name}-{r}.pcap --count {want} --duration 100 \
                --ether-type 0x0800 {opts} {own} > /results/{name}-{r}.txt 2> /results/{name}-{r}.err &\n\
             echo $! >> /results/{name}.pids\n"
        );
    }
    for (r, ..) in RECEIVERS {
        s += &format!(
            "n=0; until grep -q listening /results/{name}-{r}.err; do\n\
               sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/{name}-{r}.err; exit 3; }}\n\
             done\n"
        );
    }
    // QEMU's e1000 holds received frames back for about a second after RCTL is written.
    s += "sleep 2\n";
    for (stream, dst) in streams {
        s += &format!(
            "zcnic pktgen {SENDER} --count {K} --rate 5k --stream {stream} --dst-mac {dst} \
                > /results/{name}-pktgen-{stream}.txt\n"
        );
    }
    s += &format!(
        "for p in $(cat /results/{name}.pids); do wait $p; done\n\
         cat /results/{name}-*.err /results/{name}-*.txt\n"
    );
    s
}

/// The streams of a capture, frame by frame.
fn streams(frames: &[Vec<u8>]) -> Vec<u16> {
    frames
        .iter()
        .map(|f| frame::parse_meta(f).map_or(u16::MAX, |m| m.stream))
        .collect()
}

#[test]
fn a_joined_group_arrives_another_does_not_and_allmulti_takes_both() {
    let Some(_slot) = guest_slot("a_joined_group_arrives_another_does_not_and_allmulti_takes_both")
    else {
        return;
    };
    let (joined, other) = (
        zcnic_tools::units::parse_mac(JOINED).unwrap(),
        zcnic_tools::units::parse_mac(OTHER).unwrap(),
    );
    assert_ne!(mta_hash(joined), mta_hash(other), "two hash bits");
    let bcast = "ff:ff:ff:ff:ff:ff";
    let script = format!(
        "zcnic bind {SENDER}\n{}{}{}",
        RECEIVERS
            .iter()
            .map(|(_, pci, _)| format!("zcnic bind {pci}\n"))
            .collect::<String>(),
        leg(
            "strict",
            &format!("--no-promisc --join {JOINED}"),
            2 * K,
            &[(1, JOINED), (2, OTHER), (3, bcast)],
        ),
        leg(
            "allmulti",
            "--no-promisc --allmulti",
            3 * K,
            &[(4, JOINED), (5, OTHER), (6, bcast)],
        ),
    );
    let nics = vec![
        Nic::new("e1000", 1, true),
        Nic::new("e1000", 1, false),
        Nic::new(MODERN, 1, false),
        Nic::new("igb", 1, false),
    ];
    let run = boot("filters", nics, &script);

    // Every stream was on the wire in full: what a receiver lacks, its filter turned away.
    let wire = read_pcap(run.pcaps[0].as_ref().expect("a pcap of NIC 0"));
    let sent: Vec<Vec<u8>> = wire
        .into_iter()
        .filter(|f| f[6..12] == nic_mac(0))
        .collect();
    let on_wire = streams(&sent);
    for s in 1..=6u16 {
        assert_eq!(
            on_wire.iter().filter(|&&x| x == s).count(),
            K,
            "stream {s} on the wire"
        );
    }
    let k = |s: u16| std::iter::repeat_n(s, K);
    let strict: Vec<u16> = k(1).chain(k(3)).collect();
    let all: Vec<u16> = k(4).chain(k(5)).chain(k(6)).collect();
    for (r, ..) in RECEIVERS {
        let got = streams(&read_pcap(&run.results.join(format!("strict-{r}.pcap"))));
        assert!(
            got == strict,
            "{r}, joined {JOINED}: the joined group's {K} frames then the broadcast ones, none of {OTHER}'s; got {} of stream 1, {} of 2, {} of 3",
            got.iter().filter(|&&s| s == 1).count(),
            got.iter().filter(|&&s| s == 2).count(),
            got.iter().filter(|&&s| s == 3).count(),
        );
        let got = streams(&read_pcap(&run.results.join(format!("allmulti-{r}.pcap"))));
        assert!(
            got == all,
            "{r}, all-multicast: both groups and broadcast; got {} of stream 4, {} of 5, {} of 6",
            got.iter().filter(|&&s| s == 4).count(),
            got.iter().filter(|&&s| s == 5).count(),
            got.iter().filter(|&&s| s == 6).count(),
        );
        // The e1000's and igb's own count of good frames received: the other group's were
        // dropped by the NIC's filter, not by software (virtio-net has no counters).
        for (leg, want) in [("strict", 2 * K), ("allmulti", 3 * K)] {
            let txt = std::fs::read_to_string(run.results.join(format!("{leg}-{r}.txt")))
                .unwrap_or_default();
            let gprc = figure(&txt, "GPRC");
            if r == "virtio" {
                assert_eq!(gprc, None, "{txt}");
            } else {
                assert_eq!(gprc, Some(want as u64), "{r}, {leg}: {txt}");
            }
        }
        let listening = std::fs::read_to_string(run.results.join(format!("strict-{r}.err")))
            .unwrap_or_default();
        assert!(
            listening.contains(&format!("(joined {JOINED})")),
            "{r}: {listening}"
        );
        eprintln!(
            "{r}: joined group {K}/{K}, other group 0/{K}; all-multicast {}/{}",
            3 * K,
            3 * K
        );
    }
}
