#!/bin/busybox sh
# PID 1 of a zcnic test guest (see qemu/src/initramfs.rs for the image's layout).
# Mounts the pseudo file systems, loads the boot modules, reserves huge pages, runs
# /scenario.sh, and hands /results to the host as a tar archive on the virtio disk
# /dev/vda before powering off. Lines starting "zcnic-guest:" are read by the host.

/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root RUST_BACKTRACE=1

say() { echo "zcnic-guest: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The kernel opened /dev/console from the archive's node before this mount; those
# descriptors stay valid underneath devtmpfs.
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/hugepages
mount -t hugetlbfs hugetlbfs /dev/hugepages
mount -t tmpfs tmpfs /tmp

# shellcheck disable=SC2046 # one module name per word
modload $(cat /modules/boot) || say "loading boot modules failed"
echo 256 > /proc/sys/vm/nr_hugepages
say "kernel $(uname -r), hugepages $(cat /proc/sys/vm/nr_hugepages), cmdline: $(cat /proc/cmdline)"

mkdir -p /results
say "scenario start"
sh /scenario.sh
rc=$?
say "scenario exit $rc"

echo "$rc" > /results/exit_code
dmesg > /results/dmesg.txt
# virtio_blk's probe may still be creating the node when a short scenario ends.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/vda ]; then
    tar -cf /dev/vda -C /results . || say "writing results to /dev/vda failed"
else
    say "no results disk /dev/vda"
fi
sync
say "poweroff"
poweroff -f
