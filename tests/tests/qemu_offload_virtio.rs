//! virtio-net checksum offloads in QEMU on the tap wire (the only wire where QEMU offers
//! VIRTIO_NET_F_CSUM and GUEST_CSUM), against the guest kernel's own stack:
//!
//! - pktgen on zcnic's virtio-net leaves the UDP checksums to the device (NEEDS_CSUM);
//!   the host's tap completes them on the way to a kernel-driven e1000, whose pcap tshark
//!   finds all "Good";
//! - 10 MB from the kernel's TCP over that e1000 through smoltcp's TCP echo on zcnic and
//!   back (zcnic's checksums completed by the host, so a wrong offset would be dropped by
//!   the kernel), SHA-256 equal;
//! - the same 10 MB over a kernel-driven virtio-net, whose TCP leaves its checksums
//!   partial: zcnic completes each (smoltcp checks every one) and counts them good.

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{boot, guest_slot, iface, nic_mac, tshark_count, ECHO_RUN};

const VIRTIO: &str = "0000:00:02.0";
const E1000: &str = "0000:00:03.0";
const KERNEL_VIRTIO: &str = "0000:00:04.0";
const BYTES: usize = 10 << 20;

#[test]
fn virtio_checksum_offloads_against_the_kernel_on_a_tap_wire() {
    let Some(_slot) = guest_slot("virtio_checksum_offloads_against_the_kernel_on_a_tap_wire")
    else {
        return;
    };
    const N: usize = 300;
    let script = format!(
        "zcnic bind {VIRTIO}\n\
         modload e1000\n\
         modload virtio_net\n\
         {}{}\
         ip link set $E up\n\
         zcnic pktgen {VIRTIO} --csum-offload --count {N} --rate 2k > /results/pktgen.txt 2>&1\n\
         ip link set $E down\n\
         dd if=/dev/urandom of=/tmp/data bs=1M count={} 2> /dev/null\n\
         sha256sum < /tmp/data > /results/sha_sent.txt\n\
         {}\
         echo_run $E e1000\n\
         echo_run $K virtio\n\
         cat /results/pktgen.txt /results/echo_e1000.txt /results/echo_virtio.txt\n",
        iface("E", E1000, false),
        iface("K", KERNEL_VIRTIO, true),
        BYTES >> 20,
        ECHO_RUN.replace("BYTES", &BYTES.to_string()),
    );
    let nics = vec![
        Nic::tap(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            1,
            false,
        ),
        Nic::tap("e1000", 1, true),
        Nic::tap("virtio-net-pci", 1, false),
    ];
    let run = boot("offload-virtio", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();

    // The device was asked for the UDP checksums, and they reached the e1000 right.
    let pktgen = read("pktgen.txt");
    assert!(
        pktgen.contains("offloaded: UDP checksum; in software: IPv4 checksum"),
        "CSUM negotiated on the tap wire:\n{pktgen}"
    );
    let wire = run.pcaps[1].as_ref().expect("a pcap of the e1000");
    let ours = format!(
        "eth.src == {} && udp && !tcp",
        zcnic::format_mac(nic_mac(0))
    );
    assert_eq!(tshark_count(wire, &ours), N, "{pktgen}");
    let good = "ip.checksum.status == \"Good\" && udp.checksum.status == \"Good\"";
    assert_eq!(tshark_count(wire, &format!("{ours} && {good}")), N);

    let sent = read("sha_sent.txt");
    for peer in ["e1000", "virtio"] {
        let echo = read(&format!("echo_{peer}.txt"));
        assert_eq!(
            read(&format!("bytes_{peer}.txt")).trim(),
            BYTES.to_string(),
            "{peer}: every byte back\n{echo}"
        );
        let back = read(&format!("sha_{peer}.txt"));
        assert!(
            !sent.trim().is_empty() && sent == back,
            "{peer}: SHA-256 {sent} vs {back}"
        );
        let times: Vec<f64> = read(&format!("time_{peer}.txt"))
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        if let [t0, t1] = times[..] {
            eprintln!(
                "10 MB TCP echo, kernel {peer} peer: {:.1} s, SHA-256 {}",
                t1 - t0,
                sent.split_whitespace().next().unwrap_or_default()
            );
        }
        eprintln!("{}", echo.lines().last().unwrap_or_default());
        assert!(
            echo.contains(" bad 0 "),
            "{peer}: no frame the NIC found bad\n{echo}"
        );
    }
    // The kernel's virtio-net leaves its TCP checksums partial: zcnic completed them (or
    // the host checked them), and reported them good.
    let echo = read("echo_virtio.txt");
    let good: u64 = echo
        .split("nic checksums good ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(good > 1000, "frames reported good: {good}\n{echo}");
}
