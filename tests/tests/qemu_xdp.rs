//! AF_XDP in QEMU, on NICs the guest kernel drives itself: `zcnic pktgen xdp:ethN` on
//! the kernel's virtio_net (XDP in the driver) and e1000 (generic XDP), copy mode on
//! both with Debian's 6.1 kernel. Each run puts exactly frames 0..N-1 on the wire, byte
//! for byte (the host pcap is the ground truth), after asking for zero copy and falling
//! back to copy mode when the driver refuses; a second run on the same interface
//! opens, so the first left nothing attached that blocks it; a bad interface name is one
//! line and exit status 2.

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{
    assert_pktgen_sequence, boot, figure, guest_slot, nic_mac, read_pcap, udp_to_pktgen,
};

const E1000: &str = "0000:00:02.0";
const VIRTIO: &str = "0000:00:03.0";
const N: usize = 1000;
/// The third NIC, for the lifecycle runs.
const LIFE: &str = "0000:00:04.0";

/// pktgen's frames in a pcap: from `mac`, 60 bytes, IPv4 UDP to pktgen's port (the
/// kernel's own frames from the interface, IPv6 neighbour discovery, are not).
fn pktgen_frames(frames: Vec<Vec<u8>>, mac: [u8; 6]) -> Vec<Vec<u8>> {
    frames
        .into_iter()
        .filter(|f| {
            f.len() == 60
                && f[6..12] == mac
                && f[12..14] == [8, 0]
                && f[23] == 17
                && f[36..38] == [0x5a, 0x43]
        })
        .collect()
}

#[test]
fn pktgen_over_af_xdp_on_kernel_virtio_net_and_e1000() {
    let Some(_slot) = guest_slot("pktgen_over_af_xdp_on_kernel_virtio_net_and_e1000") else {
        return;
    };
    let script = format!(
        "modload e1000\n\
         modload virtio_net\n\
         n=0; until ls /sys/bus/pci/devices/{E1000}/net/ >/dev/null 2>&1 && ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 4; done\n\
         E=$(ls /sys/bus/pci/devices/{E1000}/net/)\n\
         V=$(ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/)\n\
         ip link set $E up\n\
         ip link set $V up\n\
         n=0; until [ \"$(cat /sys/class/net/$E/carrier)\" = 1 ] && [ \"$(cat /sys/class/net/$V/carrier)\" = 1 ]; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 6; done\n\
         zcnic -v pktgen xdp:$V --count {N} 2>&1 | tee /results/virtio.txt\n\
         zcnic -v pktgen xdp:$E --count {N} 2>&1 | tee /results/e1000.txt\n\
         zcnic pktgen xdp:$V --count {N} 2>&1 | tee /results/virtio2.txt\n\
         rc=0; zcnic pktgen xdp:nosuch0 --count 1 > /results/nosuch.txt 2>&1 || rc=$?\n\
         echo $rc > /results/nosuch_rc.txt\n\
         # Lifecycle, on a third NIC: kill -9 mid-run, then Ctrl-C mid-run, then a run\n\
         # that must open and send all its frames.\n\
         L=$(ls /sys/bus/pci/devices/{LIFE}/net/)\n\
         ip link set $L up\n\
         for sig in KILL INT; do\n\
           zcnic pktgen xdp:$L --duration 60 > /results/sig$sig.txt 2>&1 &\n\
           p=$!\n\
           n=0; until grep -q ' s  tx ' /results/sig$sig.txt; do sleep 0.2; n=$((n+1)); [ $n -lt 150 ] || exit 8; done\n\
           kill -$sig $p\n\
           rc=0; wait $p || rc=$?\n\
           echo $rc > /results/sig$sig.rc\n\
         done\n\
         zcnic pktgen xdp:$L --count {N} 2>&1 | tee /results/after_kill.txt\n"
    );
    let nics = vec![
        Nic::new("e1000", 0, true),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            1,
            true,
        ),
        Nic::new("e1000", 2, false),
    ];
    let run = boot("xdp-pktgen", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    // The mode each runs in, in pktgen's first line: virtio_net has XDP in its driver,
    // the e1000 only the kernel's generic path; neither has zero copy in 6.1.
    // 6.1 cannot say what a driver has (no netdev netlink family), so each port asks
    // for zero copy and binds the same socket in copy mode when the driver refuses.
    for file in ["virtio.txt", "e1000.txt"] {
        let text = read(file);
        assert!(
            text.contains("zero copy refused (Operation not supported"),
            "{file}: {text}"
        );
    }
    for (file, port, mode) in [
        ("virtio.txt", "virtio_net", "af_xdp (copy, native XDP)"),
        ("e1000.txt", "e1000", "af_xdp (copy, generic XDP)"),
        (
            "virtio2.txt",
            "virtio_net again",
            "af_xdp (copy, native XDP)",
        ),
    ] {
        let text = read(file);
        assert!(text.contains(mode), "{port}: {mode}: {text}");
        let line = text
            .lines()
            .find(|l| l.contains(": sent "))
            .unwrap_or_default();
        assert_eq!(figure(line, "sent"), Some(N as u64), "{port}: {text}");
        assert!(
            line.starts_with("pktgen xdp:"),
            "{port}: named by interface: {line}"
        );
        eprintln!(
            "{port}: {}",
            text.lines()
                .filter(|l| l.contains("bound") || l.contains(", link ") || l.contains(": sent "))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }

    let e1000 = pktgen_frames(
        read_pcap(run.pcaps[0].as_ref().expect("e1000 pcap")),
        nic_mac(0),
    );
    assert_pktgen_sequence(&e1000, N, 60, nic_mac(0));
    let virtio = pktgen_frames(
        read_pcap(run.pcaps[1].as_ref().expect("virtio pcap")),
        nic_mac(1),
    );
    assert_eq!(virtio.len(), 2 * N, "two runs on virtio_net");
    assert_pktgen_sequence(&virtio[..N], N, 60, nic_mac(1));
    assert_pktgen_sequence(&virtio[N..], N, 60, nic_mac(1));

    let nosuch = read("nosuch.txt");
    assert_eq!(read("nosuch_rc.txt").trim(), "2", "{nosuch}");
    assert_eq!(nosuch.lines().count(), 1, "{nosuch}");
    assert!(nosuch.contains("no network interface nosuch0"), "{nosuch}");

    // kill -9 leaves no program that blocks the next run; Ctrl-C stops a run cleanly
    // with its summary; the run after both sends every frame.
    assert_eq!(read("sigKILL.rc").trim(), "137", "{}", read("sigKILL.txt"));
    assert_eq!(read("sigINT.rc").trim(), "0", "{}", read("sigINT.txt"));
    assert!(
        read("sigINT.txt").contains(": sent "),
        "{}",
        read("sigINT.txt")
    );
    let after = read("after_kill.txt");
    let line = after
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(
        figure(line, "sent"),
        Some(N as u64),
        "after kill -9 and Ctrl-C: {after}"
    );
}

#[test]
fn dump_over_af_xdp_receives_a_zcnic_port_byte_exact() {
    let Some(_slot) = guest_slot("dump_over_af_xdp_receives_a_zcnic_port_byte_exact") else {
        return;
    };
    const RX: usize = 20_000;
    let script = format!(
        "zcnic bind {E1000}\n\
         modload virtio_net\n\
         n=0; until ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 4; done\n\
         V=$(ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/)\n\
         ip link set $V up\n\
         n=0; until [ \"$(cat /sys/class/net/$V/carrier)\" = 1 ]; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 6; done\n\
         zcnic dump xdp:$V --out /results/rx.pcap --count {RX} --udp-port 23107 --duration 200 \
            > /results/dump.txt 2> /results/dump.err &\n\
         dump=$!\n\
         n=0; until grep -q listening /results/dump.err; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/dump.err; exit 3; }}\n\
         done\n\
         cat /sys/class/net/$V/operstate /sys/class/net/$V/carrier /sys/class/net/$V/flags > /results/state.txt\n\
         # QEMU's e1000 holds received frames back for 1 s after RCTL is written; the\n\
         # virtio side is ready once dump says it listens.\n\
         zcnic pktgen {E1000} --count {RX} --size 60-1514 --rate 4k | tee /results/pktgen.txt\n\
         wait $dump\n\
         ip link show $V > /results/after.txt\n\
         cat /results/dump.err\n"
    );
    let nics = vec![
        Nic::new("e1000", 0, true),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            0,
            false,
        ),
    ];
    let run = boot("xdp-dump", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let dump = read("dump.txt");
    eprintln!(
        "{}{dump}state while dump ran: {}",
        read("dump.err"),
        read("state.txt")
    );
    // Carrier is up before the kernel's operstate follows (up to a second later): the
    // port reports the link as the carrier says.
    assert!(
        read("dump.err").contains(", link up"),
        "{}",
        read("dump.err")
    );
    assert!(
        read("dump.err").contains("af_xdp (copy, native XDP)"),
        "{}",
        read("dump.err")
    );
    let line = dump
        .lines()
        .find(|l| l.contains(": wrote "))
        .unwrap_or_default();
    assert!(line.starts_with("dump xdp:"), "{dump}");
    assert_eq!(figure(line, "wrote"), Some(RX as u64), "{dump}");

    // What the e1000 put on the wire, and what AF_XDP handed to dump: the same frames,
    // byte for byte, in the same order.
    let wire = udp_to_pktgen(
        read_pcap(run.pcaps[0].as_ref().expect("e1000 pcap")),
        nic_mac(0),
    );
    assert_eq!(wire.len(), RX, "pktgen's frames on the wire");
    let got = read_pcap(&run.results.join("rx.pcap"));
    assert_eq!(got.len(), RX, "frames dump received");
    for (i, (w, g)) in wire.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "frame {i}: on the wire vs received through AF_XDP");
    }
    // The interface was left as found: not promiscuous.
    let after = read("after.txt");
    assert!(!after.is_empty() && !after.contains("PROMISC"), "{after}");
}

#[test]
fn fwd_between_a_zcnic_port_and_an_af_xdp_port_loses_nothing() {
    let Some(_slot) = guest_slot("fwd_between_a_zcnic_port_and_an_af_xdp_port_loses_nothing")
    else {
        return;
    };
    // pktgen (02.0, zcnic e1000) -> hub 0 -> fwd port A (03.0, zcnic e1000) -> fwd port B
    // (04.0, the kernel's virtio_net through AF_XDP) -> hub 1 -> pktgen's receiver (05.0,
    // zcnic virtio-net). 2k pps: well under what each leg sustains under TCG.
    const FWD: usize = 20_000;
    let script = format!(
        "zcnic bind 0000:00:02.0\n\
         zcnic bind 0000:00:03.0\n\
         zcnic bind 0000:00:05.0\n\
         modload virtio_net\n\
         n=0; until ls /sys/bus/pci/devices/0000:00:04.0/virtio*/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 4; done\n\
         V=$(ls /sys/bus/pci/devices/0000:00:04.0/virtio*/net/)\n\
         ip link set $V up\n\
         n=0; until [ \"$(cat /sys/class/net/$V/carrier)\" = 1 ]; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 6; done\n\
         zcnic fwd --port 0000:00:03.0 --port xdp:$V > /results/fwd.txt 2>&1 &\n\
         fwd=$!\n\
         n=0; until grep -q 'mode, burst' /results/fwd.txt; do sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/fwd.txt; exit 3; }}; done\n\
         # QEMU's e1000 holds received frames back for 1 s after RCTL is written.\n\
         sleep 2\n\
         zcnic pktgen 0000:00:02.0 --rx 0000:00:05.0 --count {FWD} --size 60-1514 --rate 2k --rx-wait 3 | tee /results/pktgen.txt\n\
         kill -INT $fwd\n\
         wait $fwd\n\
         cat /results/fwd.txt\n"
    );
    let nics = vec![
        Nic::new("e1000", 0, false),
        Nic::new("e1000", 0, false),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            1,
            false,
        ),
        // zcnic's own virtio-net: an e1000 would hold back what it receives in its
        // first second (QEMU's model, after RCTL is written), and pktgen opens it as it
        // starts sending.
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            1,
            false,
        ),
    ];
    let run = boot("xdp-fwd", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let (pktgen, fwd) = (read("pktgen.txt"), read("fwd.txt"));
    eprintln!("{pktgen}{fwd}");
    assert!(fwd.contains("af_xdp (copy, native XDP)"), "{fwd}");
    let line = pktgen
        .lines()
        .find(|l| l.contains(": received "))
        .unwrap_or_default();
    // The chain, leg by leg. The AF_XDP leg (fwd's transmit on the kernel's virtio_net,
    // through the wire, into the receiver) must lose nothing: the receiver gets exactly
    // what fwd forwarded, which is exactly what fwd received. What the zcnic e1000 at the
    // fwd receives is not this test's: on a loaded two-core host the fwd thread can be
    // off its core for over a second, and at 2k pps the e1000's ring then overflows
    // (seen once: 990 frames short at the e1000, none after it). It must still carry most
    // of the run, so the test cannot pass on a trickle.
    let leg = fwd
        .lines()
        .find(|l| l.contains(" -> xdp:") && l.contains(": received "))
        .unwrap_or_default();
    let (took, sent) = (figure(leg, "received"), figure(leg, "forwarded"));
    assert_eq!(took, sent, "fwd forwarded all it received: {leg}");
    let got = figure(line, "received");
    assert_eq!(
        got, sent,
        "the receiver got all fwd forwarded:\n{pktgen}{leg}"
    );
    assert!(got.unwrap_or(0) >= FWD as u64 * 9 / 10, "{pktgen}{leg}");
    if got != Some(FWD as u64) {
        eprintln!(
            "{} frames lost upstream, at the fwd's e1000",
            FWD as u64 - got.unwrap_or(0)
        );
    }
    assert_eq!(figure(line, "duplicated"), Some(0), "{pktgen}");
    assert_eq!(figure(line, "reordered"), Some(0), "{pktgen}");
}
