//! A real kernel network stack talks to smoltcp running on zcnic: the guest kernel's own
//! virtio-net driver holds one NIC, `smol_echo` (smoltcp on zcnic) holds an e1000 on the same
//! wire. busybox `ping` gets replies, a UDP exchange through the kernel's sockets
//! (`udp_probe`) and a TCP one through busybox `nc` round-trip intact.

use zcnic_qemu::Nic;
use zcnic_tests::qemu_suite::{boot, guest_slot};

#[test]
fn kernel_stack_pings_and_echoes_through_smoltcp_on_zcnic() {
    let Some(_slot) = guest_slot("kernel_stack_pings_and_echoes_through_smoltcp_on_zcnic") else {
        return;
    };
    let script = "zcnic bind 0000:00:02.0
modload virtio_net
n=0; until ls /sys/bus/pci/devices/0000:00:03.0/virtio*/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 50 ] || exit 4; done
IF=$(ls /sys/bus/pci/devices/0000:00:03.0/virtio*/net/)
ip addr add 10.0.0.1/24 dev $IF
ip link set $IF up
smol_echo 0000:00:02.0 10.0.0.2/24 7 300 > /results/echo.txt 2>&1 &
echo_pid=$!
n=0; until grep -q answering /results/echo.txt; do sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || { cat /results/echo.txt; exit 3; }; done
# QEMU's e1000 holds received frames back for 1 s after RCTL is written.
sleep 2
ping -c 5 -W 3 10.0.0.2 > /results/ping.txt 2>&1 || true
udp_probe 10.0.0.2:7 20 > /results/udp.txt 2>&1 || true
(echo 'hello from the kernel stack'; sleep 2) | timeout 10 nc 10.0.0.2 7 > /results/tcp.txt 2>&1 || true
kill -INT $echo_pid; wait $echo_pid
cat /results/ping.txt /results/udp.txt /results/tcp.txt /results/echo.txt
";
    let nics = vec![
        Nic::new("e1000", 0, true),
        Nic::new(
            "virtio-net-pci,disable-legacy=on,iommu_platform=on",
            0,
            false,
        ),
    ];
    let run = boot("smoltcp", nics, script);
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let ping = read("ping.txt");
    assert!(
        ping.contains("5 packets transmitted, 5 packets received"),
        "ping replies from smoltcp:\n{ping}"
    );
    let udp = read("udp.txt");
    assert!(udp.contains("20 of 20 echoed intact"), "UDP echo:\n{udp}");
    let tcp = read("tcp.txt");
    assert!(
        tcp.contains("hello from the kernel stack"),
        "TCP echo via nc:\n{tcp}"
    );
    let echo = read("echo.txt");
    assert!(echo.contains("echoed 20 UDP datagrams"), "{echo}");
}
