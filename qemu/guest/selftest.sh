# Scenario of `cargo xtask selftest`: checks the guest the harness builds.
# Two e1000s on hub 0: 0000:00:02.0 (pcap on the host) and 0000:00:03.0.
fail=0
check() {
    what=$1
    shift
    if "$@"; then echo "selftest ok: $what"; else echo "selftest FAIL: $what"; fail=1; fi
}
is_e1000() {
    [ "$(cat "/sys/bus/pci/devices/$1/vendor")" = 0x8086 ] &&
        [ "$(cat "/sys/bus/pci/devices/$1/device")" = 0x100e ]
}

echo "cmdline: $(cat /proc/cmdline)"
echo "iommu: $(ls /sys/class/iommu)"
echo "pci: $(cd /sys/bus/pci/devices && for d in *; do printf '%s=%s:%s ' "$d" "$(cat "$d/vendor")" "$(cat "$d/device")"; done)"
echo "modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
check "vIOMMU active" [ -n "$(ls /sys/class/iommu)" ]
check "/dev/vfio/vfio exists" [ -c /dev/vfio/vfio ]
check "NIC 0 is an e1000 at 0000:00:02.0" is_e1000 0000:00:02.0
check "NIC 1 is an e1000 at 0000:00:03.0" is_e1000 0000:00:03.0
check "NICs start unbound" [ ! -e /sys/bus/pci/devices/0000:00:02.0/driver ]

grep HugePages_Total /proc/meminfo
check "256 huge pages reserved" grep -q "HugePages_Total: *256" /proc/meminfo
check "hugetlbfs on /dev/hugepages" grep -q " /dev/hugepages hugetlbfs" /proc/mounts

echo vfio-pci > /sys/bus/pci/devices/0000:00:02.0/driver_override
echo 0000:00:02.0 > /sys/bus/pci/drivers_probe
group=$(basename "$(readlink /sys/bus/pci/devices/0000:00:02.0/iommu_group)")
echo "NIC 0: driver $(basename "$(readlink /sys/bus/pci/devices/0000:00:02.0/driver)"), iommu group $group"
check "NIC 0 bound to vfio-pci" [ "$(basename "$(readlink /sys/bus/pci/devices/0000:00:02.0/driver)")" = vfio-pci ]
check "/dev/vfio/$group appeared" [ -c "/dev/vfio/$group" ]

check "modload e1000 virtio_net pktgen" modload e1000 virtio_net pktgen
check "e1000 took NIC 1" [ -d /sys/bus/pci/devices/0000:00:03.0/net ]
# Link-local IPv6 chatter (no addresses configured) crosses hub 0 into NIC 0's pcap.
dev=$(ls /sys/bus/pci/devices/0000:00:03.0/net)
ip link set "$dev" up
sleep 3
echo "NIC 1 ($dev) sent $(cat "/sys/class/net/$dev/statistics/tx_packets") frames"

check "static zcnic runs" /bin/zcnic --help > /dev/null
echo "selftest round trip $(uname -r)" > /results/selftest.txt
echo "selftest: failures $fail"
exit $fail
