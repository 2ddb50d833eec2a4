//! Jumbo frames on the e1000 in QEMU, against the guest kernel's own stack: zcnic with
//! `--mtu 9000` sends 9014-byte pktgen frames that reach the host pcap byte for byte,
//! captures the kernel's 9014-byte pings with `zcnic dump` (tshark decodes them), and
//! smoltcp on zcnic answers `ping -s 8000` from a virtio-net with `host_mtu=9000` and echoes
//! 10 MB of the kernel's TCP with checksums offloaded to the e1000.

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{
    assert_jumbo_kernel_exchange, assert_pktgen_sequence, boot, figure, guest_slot, nic_mac,
    read_pcap, tshark_count,
};

const E1000: &str = "0000:00:02.0";
const VIRTIO: &str = "0000:00:03.0";

#[test]
fn e1000_sends_captures_and_answers_jumbo_frames() {
    let Some(_slot) = guest_slot("e1000_sends_captures_and_answers_jumbo_frames") else {
        return;
    };
    const N: usize = 2000;
    // Issue 19's TCP transfer: 10 MB.
    const MB: usize = 10;
    const BYTES: usize = MB << 20;
    let script = format!(
        "zcnic bind {E1000}\n\
         modload virtio_net\n\
         n=0; until ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 50 ] || exit 4; done\n\
         IF=$(ls /sys/bus/pci/devices/{VIRTIO}/virtio*/net/)\n\
         ip link set $IF mtu 9000\n\
         ip addr add 10.0.0.1/24 dev $IF\n\
         ip link set $IF up\n\
         cat /sys/class/net/$IF/mtu > /results/kernel_mtu.txt\n\
         # A standard MTU refuses jumbo sizes in one line, before anything is sent.\n\
         zcnic pktgen {E1000} --size 9014 --count 1 > /results/refused.txt 2>&1 && exit 5\n\
         zcnic pktgen {E1000} --mtu 9000 --size 9014 --count {N} --rate 2k | tee /results/pktgen.txt\n\
         # The kernel's broadcast pings of 9014-byte frames, captured (nobody answers).\n\
         zcnic dump {E1000} --mtu 9000 --ether-type 0x0800 --out /results/rx.pcap --count 20 --duration 60 \
            > /results/dump.txt 2> /results/dump.err &\n\
         dump=$!\n\
         n=0; until grep -q listening /results/dump.err; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/dump.err; exit 3; }}\n\
         done\n\
         # QEMU's e1000 holds received frames back for 1 s after RCTL is written.\n\
         sleep 2\n\
         ping -c 20 -i 0.2 -s 8972 -W 1 10.0.0.255 > /results/bping.txt 2>&1 || true\n\
         wait $dump\n\
         smol_echo {E1000} 10.0.0.2/24 7 0 9000 > /results/echo.txt 2>&1 &\n\
         echo_pid=$!\n\
         n=0; until grep -q answering /results/echo.txt; do sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/echo.txt; exit 3; }}; done\n\
         sleep 2\n\
         ping -c 5 -W 3 -s 8000 10.0.0.2 > /results/ping.txt 2>&1 || true\n\
         # 10 MB through smoltcp's TCP echo and back, timed until the last byte is back.\n\
         # busybox nc alone would read the echo only between its writes and block in a\n\
         # write while its socket's send buffer is full: once the echo's buffers and the\n\
         # kernel's receive window fill too, nothing moves (issue 19's stall). With -e the\n\
         # socket goes to two processes, one writing and one reading.\n\
         dd if=/dev/urandom of=/tmp/data bs=1M count={MB} 2> /dev/null\n\
         : > /tmp/echoed\n\
         t0=$(cut -d' ' -f1 /proc/uptime)\n\
         nc 10.0.0.2 7 -e sh -c 'cat /tmp/data & exec cat > /tmp/echoed' &\n\
         nc_pid=$!\n\
         n=0; until [ \"$(wc -c < /tmp/echoed)\" -ge {BYTES} ]; do sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || break; done\n\
         t1=$(cut -d' ' -f1 /proc/uptime)\n\
         echo \"$t0 $t1\" > /results/tcp_time.txt\n\
         sha256sum < /tmp/data > /results/sha_sent.txt\n\
         sha256sum < /tmp/echoed > /results/sha_echoed.txt\n\
         wc -c < /tmp/echoed > /results/echoed_bytes.txt\n\
         kill $nc_pid 2> /dev/null || true\n\
         kill -INT $echo_pid; wait $echo_pid\n\
         cat /results/refused.txt /results/dump.err /results/ping.txt /results/echo.txt\n"
    );
    let nics = vec![
        Nic::new("e1000", 0, true),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on,host_mtu=9000",
            0,
            false,
        ),
    ];
    let run = boot("jumbo-e1000", nics, &script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    assert_eq!(read("kernel_mtu.txt").trim(), "9000", "the kernel's MTU");
    let refused = read("refused.txt");
    assert!(
        refused.contains("--mtu 9000") && refused.lines().count() == 1,
        "one line naming the --mtu to give:\n{refused}"
    );

    // pktgen: every 9014-byte frame on the wire, byte for byte, in order.
    let wire = read_pcap(run.pcaps[0].as_ref().expect("a pcap of the e1000"));
    let ours: Vec<Vec<u8>> = wire
        .into_iter()
        // pktgen's: from the e1000, UDP to its port (smoltcp's TCP frames are 9014 too).
        .filter(|f| {
            f[6..12] == nic_mac(0) && f.len() == 9014 && f[23] == 17 && f[36..38] == [0x5a, 0x43]
        })
        .collect();
    assert_pktgen_sequence(&ours, N, 9014, nic_mac(0));
    let pktgen = read("pktgen.txt");
    let line = pktgen
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(line, "sent"), Some(N as u64), "pktgen: {line}");

    // dump: the kernel's 9014-byte echo requests, whole, decoded by tshark; smoltcp's
    // replies to ping -s 8000.
    let got = read_pcap(&run.results.join("rx.pcap"));
    assert_jumbo_kernel_exchange(&run, &got.iter().collect::<Vec<_>>());

    // 10 MB from the kernel's TCP through smoltcp's echo on zcnic and back, checksums
    // offloaded to the e1000 where smoltcp leaves them: every byte, and every TCP frame
    // smoltcp sent right on the wire.
    let echoed = read("echoed_bytes.txt");
    assert_eq!(echoed.trim(), BYTES.to_string(), "{}", read("echo.txt"));
    let wire = run.pcaps[0].as_ref().expect("a pcap of the e1000");
    let tcp = format!(
        "eth.src == {} && tcp.srcport == 7",
        zcnic::format_mac(nic_mac(0))
    );
    let good = "ip.checksum.status == \"Good\" && tcp.checksum.status == \"Good\"";
    let frames = tshark_count(wire, &tcp);
    assert!(frames > BYTES / 8960, "{frames} TCP frames from smoltcp");
    assert_eq!(tshark_count(wire, &format!("{tcp} && {good}")), frames);
    let (sent, back) = (read("sha_sent.txt"), read("sha_echoed.txt"));
    assert!(
        !sent.trim().is_empty() && sent == back,
        "SHA-256 {sent} vs {back}"
    );
    let times: Vec<f64> = read("tcp_time.txt")
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    if let [t0, t1] = times[..] {
        eprintln!(
            "{MB} MB TCP echo over jumbo frames: {:.1} s, SHA-256 {}",
            t1 - t0,
            sent.split_whitespace().next().unwrap_or_default()
        );
    }
}
