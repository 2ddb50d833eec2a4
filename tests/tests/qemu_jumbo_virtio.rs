//! Jumbo frames on a virtio-net (`host_mtu=9000`, mergeable receive buffers) in QEMU,
//! against the guest kernel's own stack on an e1000 of the same wire: zcnic with
//! `--mtu 9000` sends 9014-byte pktgen frames that reach the host pcap byte for byte,
//! captures the kernel's 9014-byte pings with `zcnic dump` (tshark decodes them), and
//! smoltcp on zcnic answers `ping -s 8000`; and pktgen and smoltcp again on a legacy
//! virtio-net with the header apart.

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{
    assert_pktgen_sequence, boot, figure, guest_slot, nic_mac, read_pcap, tshark_count,
};

const E1000: &str = "0000:00:02.0";
const VIRTIO: &str = "0000:00:03.0";

#[test]
fn virtio_sends_captures_and_answers_jumbo_frames() {
    let Some(_slot) = guest_slot("virtio_sends_captures_and_answers_jumbo_frames") else {
        return;
    };
    const N: usize = 1000;
    let mac = nic_mac(1)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let script = format!(
        "zcnic bind {VIRTIO}\n\
         modload e1000\n\
         n=0; until ls /sys/bus/pci/devices/{E1000}/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 50 ] || exit 4; done\n\
         IF=$(ls /sys/bus/pci/devices/{E1000}/net/)\n\
         ip link set $IF mtu 9000\n\
         ip addr add 10.0.0.1/24 dev $IF\n\
         ip link set $IF up\n\
         cat /sys/class/net/$IF/mtu > /results/kernel_mtu.txt\n\
         # Above the device's host_mtu: refused at open.\n\
         zcnic pktgen {VIRTIO} --mtu 9600 --size 60 --count 1 > /results/refused.txt 2>&1 && exit 5\n\
         zcnic pktgen {VIRTIO} --mtu 9000 --size 9014 --count {N} --rate 1k | tee /results/pktgen.txt\n\
         # The kernel's pings of 9014-byte frames, captured (nobody answers them).\n\
         # busybox ip has no neigh add: arp -s sets the entry.\n\
         arp -s 10.0.0.2 {mac}\n\
         zcnic dump {VIRTIO} --mtu 9000 --out /results/rx.pcap --duration 60 \
            > /results/dump.txt 2> /results/dump.err &\n\
         dump=$!\n\
         n=0; until grep -q listening /results/dump.err; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/dump.err; exit 3; }}\n\
         done\n\
         # QEMU's e1000 holds received frames back for 1 s after RCTL is written.\n\
         sleep 2\n\
         ping -c 20 -i 0.2 -s 8972 -W 1 10.0.0.2 > /dev/null 2>&1 || true\n\
         # Nobody answers: the pings are all out once ping gives up on the last.\n\
         kill -INT $dump; wait $dump\n\
         arp -d 10.0.0.2\n\
         smol_echo {VIRTIO} 10.0.0.2/24 7 0 9000 > /results/echo.txt 2>&1 &\n\
         echo_pid=$!\n\
         n=0; until grep -q answering /results/echo.txt; do sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/echo.txt; exit 3; }}; done\n\
         sleep 1\n\
         ping -c 5 -W 3 -s 8000 10.0.0.2 > /results/ping.txt 2>&1 || true\n\
         kill -INT $echo_pid; wait $echo_pid\n\
         cat /results/refused.txt /results/dump.err /results/ping.txt /results/echo.txt\n"
    );
    let nics = vec![
        Nic::new("e1000", 0, false),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on,host_mtu=9000",
            0,
            true,
        ),
    ];
    let run = boot("jumbo-virtio", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    assert_eq!(read("kernel_mtu.txt").trim(), "9000", "the kernel's MTU");
    let refused = read("refused.txt");
    assert!(
        refused.contains("9600") && refused.contains("9000"),
        "the device's MTU refuses a larger one:\n{refused}"
    );

    // pktgen: every 9014-byte frame on the wire, byte for byte, in order.
    let wire = read_pcap(run.pcaps[1].as_ref().expect("a pcap of the virtio-net"));
    let ours: Vec<Vec<u8>> = wire
        .into_iter()
        .filter(|f| f[6..12] == nic_mac(1) && f.len() == 9014)
        .collect();
    assert_pktgen_sequence(&ours, N, 9014, nic_mac(1));
    let pktgen = read("pktgen.txt");
    let line = pktgen
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(line, "sent"), Some(N as u64), "pktgen: {line}");

    // dump: the kernel's 9014-byte echo requests, whole (5 receive buffers each),
    // decoded by tshark; beside them only the kernel's IPv6 chatter.
    let rx = run.results.join("rx.pcap");
    let got = read_pcap(&rx);
    let pings: Vec<&Vec<u8>> = got.iter().filter(|f| f[0..6] == nic_mac(1)).collect();
    assert_eq!(pings.len(), 20, "{}", read("dump.err"));
    assert!(pings.iter().all(|f| f.len() == 9014), "whole frames");
    assert_eq!(tshark_count(&rx, "icmp.type == 8 && ip.len == 9000"), 20);
    assert_eq!(
        tshark_count(&rx, "ip.checksum.status == \"Good\""),
        20,
        "valid IPv4 headers"
    );
    assert_eq!(
        tshark_count(&rx, "_ws.malformed || _ws.expert.severity >= error"),
        0,
        "malformed frames"
    );

    // smoltcp on zcnic answers 8000-byte pings (8042-byte frames, 4 buffers each way).
    let ping = read("ping.txt");
    assert!(
        ping.contains("5 packets transmitted, 5 packets received"),
        "jumbo ping replies from smoltcp:\n{ping}\n{}",
        read("echo.txt")
    );
    assert!(
        read("echo.txt").contains("MTU 9000"),
        "{}",
        read("echo.txt")
    );
}

/// The same on a legacy virtio-net without ANY_LAYOUT: mergeable buffers make its header
/// 12 bytes (num_buffers), each receive buffer and each transmitted frame has the header
/// in a descriptor of its own, and jumbo frames still go both ways byte for byte.
#[test]
fn legacy_virtio_with_the_header_apart_sends_and_answers_jumbo_frames() {
    let Some(_slot) =
        guest_slot("legacy_virtio_with_the_header_apart_sends_and_answers_jumbo_frames")
    else {
        return;
    };
    const N: usize = 500;
    let (virtio, e1000) = ("0000:00:02.0", "0000:00:03.0");
    let script = format!(
        "zcnic bind {virtio}\n\
         modload e1000\n\
         n=0; until ls /sys/bus/pci/devices/{e1000}/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 50 ] || exit 4; done\n\
         IF=$(ls /sys/bus/pci/devices/{e1000}/net/)\n\
         ip link set $IF mtu 9000\n\
         ip addr add 10.0.0.1/24 dev $IF\n\
         ip link set $IF up\n\
         zcnic pktgen {virtio} --mtu 9000 --size 9014 --count {N} --rate 1k | tee /results/pktgen.txt\n\
         smol_echo {virtio} 10.0.0.2/24 7 0 9000 > /results/echo.txt 2>&1 &\n\
         echo_pid=$!\n\
         n=0; until grep -q answering /results/echo.txt; do sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/echo.txt; exit 3; }}; done\n\
         # QEMU's e1000 holds received frames back for 1 s after RCTL is written.\n\
         sleep 2\n\
         ping -c 5 -W 3 -s 8000 10.0.0.2 > /results/ping.txt 2>&1 || true\n\
         kill -INT $echo_pid; wait $echo_pid\n\
         cat /results/ping.txt /results/echo.txt\n"
    );
    let nics = vec![
        Nic::new(
            "virtio-net-pci,disable-modern=on,any_layout=off,host_mtu=9000",
            0,
            true,
        ),
        Nic::new("e1000", 0, false),
    ];
    let run = boot("jumbo-virtio-legacy", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let pktgen = read("pktgen.txt");
    assert!(
        pktgen.contains("virtio-net legacy, header apart"),
        "the header should have its own descriptor:\n{pktgen}"
    );
    let line = pktgen
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(line, "sent"), Some(N as u64), "pktgen: {line}");
    let ours: Vec<Vec<u8>> = read_pcap(run.pcaps[0].as_ref().expect("a pcap"))
        .into_iter()
        .filter(|f| f[6..12] == nic_mac(0) && f.len() == 9014)
        .collect();
    assert_pktgen_sequence(&ours, N, 9014, nic_mac(0));
    let ping = read("ping.txt");
    assert!(
        ping.contains("5 packets transmitted, 5 packets received"),
        "jumbo ping replies from smoltcp on the legacy device:\n{ping}\n{}",
        read("echo.txt")
    );
}
