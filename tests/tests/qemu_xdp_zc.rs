//! AF_XDP zero copy on the kernel's virtio_net, in the guest it needs: virtio-net with
//! `iommu_platform=on` (the DMA API in use, as virtio_net's XSK pool needs; QEMU 10's
//! modern device offers VIRTIO_F_RING_RESET by default) behind the vIOMMU in passthrough
//! (`iommu=pt`: the group is `identity`, so the port puts its pool in hugepages and asks
//! for XDP_ZEROCOPY). Each test runs the same legs: `pktgen xdp:ethN --count N` puts
//! exactly frames 0..N-1 on the wire (host pcap), and frames from a zcnic-driven e1000
//! arrive through the socket byte for byte.
//!
//! - trixie-backports' kernel (7.3 when written; virtio_net has zero copy from 6.13):
//!   the socket binds zero-copy, the NIC's DMA lands in zcnic's pool, and after the close
//!   every buffer the driver held is back in the pool. The kernel's igb (zero copy from
//!   6.14) sends its pktgen frames zero-copy too.
//! - bookworm-backports' 6.12: virtio_net has the zero-copy receive path but advertises
//!   only `NETDEV_XDP_ACT_BASIC | REDIRECT` (Debian's module stores xdp_features = 3; the
//!   XSK_ZEROCOPY bit came with zero-copy transmit, in 6.13), which a bind with
//!   XDP_ZEROCOPY would meet with EOPNOTSUPP. The port reads the features first (netlink,
//!   6.3 on) and binds in copy mode without asking; `zcnic list` says `copy`. (6.1 has no
//!   features to read: there the bind asks and falls back, which `qemu_xdp` pins.)

use zcnic_qemu::{GuestKernel, GuestSpec, Nic};
use zcnic_tests::qemu_suite::{
    assert_pktgen_sequence, figure, guest_slot, nic_mac, read_pcap, spec, tail, udp_to_pktgen,
};

const E1000: &str = "0000:00:02.0";
const VIRTIO: &str = "0000:00:03.0";
/// The igb of the guests that have one, on a hub of its own.
const IGB: &str = "0000:00:04.0";
/// Frames pktgen sends through the socket.
const N: usize = 1000;
/// Frames the e1000 sends to the socket.
const RX: usize = 5000;

/// What `zcnic list`, pktgen, dump and `stats --xdp-copy` printed; the igb's list and
/// pktgen where the guest has one.
struct Legs {
    list: String,
    igb: Option<(String, String)>,
    forced: String,
    tx: String,
    dump_err: String,
}

/// Boots `kernel` with the e1000 and virtio-net on one hub (and with `igb`, an igb on
/// another) and runs the legs, checking what holds whatever the mode: the kernel, the
/// IOMMU group, and every frame.
fn legs(name: &str, kernel: GuestKernel, release: &str, igb: bool) -> Legs {
    let mut script = format!(
        "uname -r > /results/uname.txt\n\
         zcnic bind {E1000}\n\
         modload virtio_net\n\
         n=0; until ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 4; done\n\
         V=$(ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/)\n\
         cat /sys/bus/pci/devices/{VIRTIO}/iommu_group/type > /results/group.txt\n\
         ip link set $V up\n\
         n=0; until [ \"$(cat /sys/class/net/$V/carrier)\" = 1 ]; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 6; done\n\
         zcnic list > /results/list.txt\n\
         zcnic -v pktgen xdp:$V --count {N} 2>&1 | tee /results/tx.txt\n\
         zcnic -v dump xdp:$V --out /results/rx.pcap --count {RX} --udp-port 23107 --duration 100 \
            > /results/dump.txt 2> /results/dump.err &\n\
         dump=$!\n\
         n=0; until grep -q listening /results/dump.err; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/dump.err; exit 3; }}\n\
         done\n\
         zcnic pktgen {E1000} --count {RX} --size 60-1514 --rate 4k > /results/e1000.txt\n\
         wait $dump\n\
         zcnic stats xdp:$V --duration 0.2 --xdp-copy > /results/forced.txt 2>&1\n\
         cat /results/dump.err\n"
    );
    if igb {
        // igb restarts its rings when the program attaches: pktgen's frames wait in the
        // TX ring until the link is back.
        script.push_str(&format!(
            "modload igb\n\
             n=0; until ls /sys/bus/pci/devices/{IGB}/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 4; done\n\
             G=$(ls /sys/bus/pci/devices/{IGB}/net/)\n\
             ip link set $G up\n\
             n=0; until [ \"$(cat /sys/class/net/$G/carrier)\" = 1 ]; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 6; done\n\
             zcnic list > /results/igb_list.txt\n\
             zcnic -v pktgen xdp:$G --count {N} 2>&1 | tee /results/igb.txt\n"
        ));
    }
    // Both on one hub: the e1000's frames reach virtio_net, and each NIC's pcap tells
    // the two senders apart by source MAC.
    let mut nics = vec![
        Nic::new("e1000", 0, true),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            0,
            true,
        ),
    ];
    if igb {
        nics.push(Nic::new("igb", 1, true));
    }
    let spec = GuestSpec {
        kernel,
        ..spec(name, nics, &script)
    };
    let run = zcnic_qemu::run(&spec).unwrap_or_else(|e| panic!("{name}: guest run failed: {e}"));
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    assert_eq!(
        run.exit_code,
        0,
        "scenario failed; console tail:\n{}",
        tail(&run.console, 40)
    );
    let (uname, group) = (read("uname.txt"), read("group.txt"));
    assert!(uname.starts_with(release), "{release} kernel: {uname}");
    assert_eq!(group.trim(), "identity", "iommu=pt: physical DMA addresses");

    let tx = read("tx.txt");
    eprintln!(
        "{}: {}",
        uname.trim(),
        tx.lines()
            .filter(|l| l.contains("zero copy") || l.contains("af_xdp (") || l.contains(": sent "))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let line = tx
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(line, "sent"), Some(N as u64), "{tx}");
    // Even after zero copy, where the driver lets go of the pool only in a work item
    // after the close, every buffer is back (the probe bind saw the queue released).
    assert!(tx.contains("4096 of 4096 buffers back in the pool"), "{tx}");
    let sent: Vec<_> = read_pcap(run.pcaps[1].as_ref().expect("virtio pcap"))
        .into_iter()
        .filter(|f| f.len() == 60 && f[6..12] == nic_mac(1) && f[36..38] == [0x5a, 0x43])
        .collect();
    assert_pktgen_sequence(&sent, N, 60, nic_mac(1));

    // Receive: what the e1000 put on the wire is what the socket handed to dump.
    let (dump, err) = (read("dump.txt"), read("dump.err"));
    let line = dump
        .lines()
        .find(|l| l.contains(": wrote "))
        .unwrap_or_default();
    assert_eq!(figure(line, "wrote"), Some(RX as u64), "{dump}{err}");
    let wire = udp_to_pktgen(
        read_pcap(run.pcaps[0].as_ref().expect("e1000 pcap")),
        nic_mac(0),
    );
    assert_eq!(wire.len(), RX, "the e1000's frames on the wire");
    let got = read_pcap(&run.results.join("rx.pcap"));
    assert_eq!(got.len(), RX, "frames dump received");
    for (i, (w, g)) in wire.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "frame {i}: on the wire vs received through AF_XDP");
    }
    let igb = igb.then(|| {
        let (tx, list) = (read("igb.txt"), read("igb_list.txt"));
        let line = tx
            .lines()
            .find(|l| l.contains(": sent "))
            .unwrap_or_default();
        assert_eq!(figure(line, "sent"), Some(N as u64), "{tx}");
        let sent: Vec<_> = read_pcap(run.pcaps[2].as_ref().expect("igb pcap"))
            .into_iter()
            .filter(|f| f.len() == 60 && f[6..12] == nic_mac(2) && f[36..38] == [0x5a, 0x43])
            .collect();
        assert_pktgen_sequence(&sent, N, 60, nic_mac(2));
        assert!(tx.contains("4096 of 4096 buffers back in the pool"), "{tx}");
        (list, tx)
    });
    Legs {
        list: read("list.txt"),
        igb,
        forced: read("forced.txt"),
        tx,
        dump_err: err,
    }
}

#[test]
fn af_xdp_on_virtio_net_of_the_newest_debian_kernel_binds_zero_copy() {
    let Some(_slot) = guest_slot("af_xdp_zero_copy_on_virtio_net") else {
        return;
    };
    let legs = legs("xdp-zc", GuestKernel::TrixieBackports, "", true);
    // The driver says it has zero copy (xdp-features), and the port binds so.
    assert!(
        legs.list.contains("(virtio_net, up, zero-copy)"),
        "{}",
        legs.list
    );
    let zc = "af_xdp (zero-copy, native XDP)";
    assert!(legs.tx.contains(zc), "{}", legs.tx);
    assert!(legs.dump_err.contains(zc), "{}", legs.dump_err);
    assert!(!legs.tx.contains("zero copy refused"), "{}", legs.tx);
    // --xdp-copy asks for copy mode where zero copy would work.
    assert!(
        legs.forced.contains("af_xdp (copy, native XDP)"),
        "{}",
        legs.forced
    );
    // igb has zero copy too (6.14 on): frames 0..N-1 on its wire, every buffer back.
    let (list, tx) = legs.igb.expect("the igb's leg");
    assert!(list.contains("(igb, up, zero-copy)"), "{list}");
    assert!(tx.contains(zc), "{tx}");
}

#[test]
fn af_xdp_on_virtio_net_of_linux_6_12_is_copy_mode_as_its_driver_says() {
    let Some(_slot) = guest_slot("af_xdp_on_virtio_net_of_linux_6_12") else {
        return;
    };
    let legs = legs("xdp-612", GuestKernel::Backports, "6.12.", false);
    // The driver says it has no zero copy (6.3's xdp-features), so the port does not
    // ask: its pool stays out of hugepages and the socket binds in copy mode.
    assert!(
        legs.list.contains("(virtio_net, up, copy)"),
        "{}",
        legs.list
    );
    assert!(
        legs.tx
            .contains("copy mode: the driver has no AF_XDP zero copy (xdp-features 0x"),
        "{}",
        legs.tx
    );
    let copy = "af_xdp (copy, native XDP)";
    assert!(legs.tx.contains(copy), "{}", legs.tx);
    assert!(legs.dump_err.contains(copy), "{}", legs.dump_err);
}
