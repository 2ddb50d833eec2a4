//! TCP segmentation in QEMU, on the tap wire (the only one where QEMU's virtio-net offers
//! HOST_TSO4), against the guest kernel's own TCP as the receiver:
//!
//! - zcnic's e1000 sends 4 super-frames of 64000 payload bytes each with TSE; QEMU's
//!   e1000 cuts them into 45 segments each;
//! - zcnic's virtio-net sends the same with GSO_TCPV4; the host's Linux takes the
//!   super-frame from the tap and cuts it when the bridge forwards it to the next tap;
//! - zcnic's igb (QEMU 10's 82576) sends the same with TSE in its advanced context;
//! - a kernel-driven e1000 on the same bridge receives the three streams: its pcap (QEMU's
//!   filter-dump) must hold every segment, each at most 1500 bytes of IP, every IPv4 and
//!   TCP checksum "Good" in tshark, the IPv4 IDs counting up, and the TCP payload,
//!   reassembled by sequence number, byte for byte the stream sent; and the kernel's TCP
//!   must have taken them as sound (`/proc/net/snmp`: InSegs up, by at most the segments
//!   sent as GRO may merge them first; InCsumErrors and InErrs unchanged; each answered
//!   with a reset, as nothing listens).

use std::collections::BTreeMap;
use std::path::Path;
use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{boot, guest_slot, iface, nic_mac, tshark_count};

const E1000: &str = "0000:00:02.0";
const VIRTIO: &str = "0000:00:03.0";
const KERNEL: &str = "0000:00:04.0";
const IGB: &str = "0000:00:05.0";
const PAYLOAD: usize = 64_000;
const MSS: usize = 1448;
const FRAMES: usize = 4;
const SEGMENTS: usize = FRAMES * PAYLOAD.div_ceil(MSS);

/// `(raw sequence number, payload)` of each TCP segment from `mac` in the pcap.
fn tcp_payloads(pcap: &Path, mac: &str) -> Vec<(u32, Vec<u8>)> {
    let out = std::process::Command::new("tshark")
        .args(["-r", &pcap.to_string_lossy()])
        .args(["-Y", &format!("eth.src == {mac} && tcp")])
        .args(["-T", "fields", "-e", "tcp.seq_raw", "-e", "tcp.payload"])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (seq, hex) = l.split_once('\t').unwrap_or((l, ""));
            let bytes = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            (seq.trim().parse().unwrap(), bytes)
        })
        .collect()
}

/// A `Tcp:` counter from the two lines of `/proc/net/snmp`.
fn snmp(text: &str, key: &str) -> u64 {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let (names, values) = (lines[0].split_whitespace(), lines[1].split_whitespace());
    names
        .zip(values)
        .find(|(n, _)| *n == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {text}"))
}

#[test]
fn tso_on_e1000_virtio_and_igb_reaches_linux_as_right_segments() {
    let Some(_slot) = guest_slot("tso_on_e1000_virtio_and_igb_reaches_linux_as_right_segments")
    else {
        return;
    };
    let send = |pci: &str, ip: &str, name: &str| {
        format!(
            "tso_send {pci} $KMAC {ip} 10.0.0.1 {PAYLOAD} {MSS} {FRAMES} > /results/{name}.txt 2>&1 || cat /results/{name}.txt\n\
             sleep 2\n\
             grep Tcp: /proc/net/snmp > /results/snmp_{name}.txt\n"
        )
    };
    let script = format!(
        "zcnic bind {E1000}\n\
         zcnic bind {VIRTIO}\n\
         zcnic bind {IGB}\n\
         modload e1000\n\
         {}\
         ip addr add 10.0.0.1/24 dev $K\n\
         ip link set $K up\n\
         sleep 2\n\
         KMAC=$(cat /sys/class/net/$K/address)\n\
         grep Tcp: /proc/net/snmp > /results/snmp_start.txt\n\
         {}{}{}\
         cat /results/e1000.txt /results/virtio.txt /results/igb.txt\n",
        iface("K", KERNEL, false),
        send(E1000, "10.0.0.2", "e1000"),
        send(VIRTIO, "10.0.0.3", "virtio"),
        send(IGB, "10.0.0.4", "igb"),
    );
    let nics = vec![
        Nic::tap("e1000", 1, true),
        Nic::tap(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            1,
            true,
        ),
        Nic::tap("e1000", 1, true),
        Nic::tap("igb", 1, true),
    ];
    let run = boot("tso", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let wire = run.pcaps[2].as_ref().expect("a pcap of the kernel's e1000");
    let good = "ip.checksum.status == \"Good\" && tcp.checksum.status == \"Good\"";
    let mut before = read("snmp_start.txt");
    for (i, name) in [(0, "e1000"), (1, "virtio"), (3, "igb")] {
        let said = read(&format!("{name}.txt"));
        assert!(
            said.contains(&format!(
                "{FRAMES} frames, {} bytes, MSS {MSS}, handed {FRAMES} (nic segments: yes), tx_errors 0",
                FRAMES * PAYLOAD
            )),
            "{name}: the NIC was asked to segment\n{said}"
        );
        let mac = zcnic::format_mac(nic_mac(i));
        let ours = format!("eth.src == {mac} && tcp.dstport == 9");
        assert_eq!(
            tshark_count(wire, &ours),
            SEGMENTS,
            "{name}: segments on the wire"
        );
        assert_eq!(
            tshark_count(wire, &format!("{ours} && {good}")),
            SEGMENTS,
            "{name}: checksums"
        );
        assert_eq!(
            tshark_count(wire, &format!("{ours} && ip.len <= 1500")),
            SEGMENTS
        );
        assert_eq!(
            tshark_count(wire, &format!("{ours} && tcp.len == {MSS}")),
            SEGMENTS - FRAMES,
            "{name}: all but each frame's last are full"
        );
        // PSH (set on each super-frame) on the last segment of each only.
        assert_eq!(
            tshark_count(wire, &format!("{ours} && tcp.flags.push == 1")),
            FRAMES
        );
        // The payload, reassembled by sequence number, is the stream sent.
        let mut stream = BTreeMap::new();
        for (seq, bytes) in tcp_payloads(wire, &mac) {
            stream.insert(seq, bytes);
        }
        let mut at = 1000u32;
        let mut whole = Vec::new();
        for (seq, bytes) in &stream {
            assert_eq!(*seq, at, "{name}: no gap or overlap");
            at += bytes.len() as u32;
            whole.extend_from_slice(bytes);
        }
        let want: Vec<u8> = (0..FRAMES * PAYLOAD).map(|k| (k % 251) as u8).collect();
        assert!(
            whole == want,
            "{name}: {} of {} bytes, not the stream",
            whole.len(),
            want.len()
        );
        // Linux's TCP took every segment as sound.
        let after = read(&format!("snmp_{name}.txt"));
        let delta = |k: &str| snmp(&after, k) - snmp(&before, k);
        // GRO in the kernel's e1000 driver may merge segments before TCP counts them.
        let took = delta("InSegs");
        assert!(
            (1..=SEGMENTS as u64).contains(&took),
            "{name}\n{before}\n{after}"
        );
        assert_eq!((delta("InCsumErrors"), delta("InErrs")), (0, 0), "{name}");
        eprintln!(
            "{name}: {SEGMENTS} segments of {} KB, all Good, stream equal; kernel resets {}",
            FRAMES * PAYLOAD / 1000,
            delta("OutRsts")
        );
        before = after;
    }
    // What the senders' own ports show at their netdevs: QEMU's e1000 cut the frames
    // before (180 segments, checksums its own); virtio-net hands the host the four
    // super-frames whole, with the vnet header that asks for the cut.
    let ours = |i: u8| {
        format!(
            "eth.src == {} && tcp.dstport == 9",
            zcnic::format_mac(nic_mac(i))
        )
    };
    let (e1000, virtio) = (
        run.pcaps[0].as_ref().unwrap(),
        run.pcaps[1].as_ref().unwrap(),
    );
    assert_eq!(
        tshark_count(e1000, &format!("{} && {good}", ours(0))),
        SEGMENTS
    );
    assert_eq!(tshark_count(virtio, &ours(1)), FRAMES);
    assert_eq!(
        tshark_count(
            virtio,
            &format!("{} && frame.len == {}", ours(1), 54 + PAYLOAD)
        ),
        FRAMES
    );
}
