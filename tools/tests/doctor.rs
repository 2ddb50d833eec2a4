//! `zcnic doctor` on fixture machines: a ready one (nothing to fix), and ones missing
//! hugepages, hugetlbfs, the IOMMU, a module or root, each with the line that says what to run.

mod fixture;

use fixture::Tree;
use std::process::Command;
use zcnic_tools::doctor::{checks, Status};
use zcnic_tools::inuse::{Roots, SYSROOT_ENV};

/// A machine zcnic can work on: root, an IOMMU, vfio-pci loaded, 256 pages on hugetlbfs,
/// one NIC on vfio-pci and one the kernel uses.
fn ready(name: &str) -> Tree {
    let mut t = Tree::new(name);
    t.write("sys/kernel/iommu_groups/3/type", "DMA\n");
    t.write("sys/kernel/iommu_groups/4/type", "DMA\n");
    t.write("sys/module/vfio_pci/refcnt", "0\n");
    t.write(
        "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        "256\n",
    );
    t.write(
        "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
        "250\n",
    );
    t.write(
        "proc/mounts",
        "proc /proc proc rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n",
    );
    t.nic("0000:00:02.0", Some("vfio-pci"), None);
    t.nic("0000:00:03.0", Some("e1000"), Some("eth0"));
    t.up("eth0");
    t.addr4("eth0", [10, 0, 2, 15], 24);
    t
}

/// The line of check `name`, as printed.
fn line(t: &Tree, name: &str) -> (Status, String) {
    let all = checks(&Roots::under(t.path()));
    let c = all
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {all:?}"));
    (c.status, c.to_string())
}

#[test]
fn a_ready_machine_has_nothing_to_fix() {
    let t = ready("doctor-ready");
    let all = checks(&Roots::under(t.path()));
    let fixes: Vec<String> = all
        .iter()
        .filter(|c| c.status == Status::Fix)
        .map(|c| c.to_string())
        .collect();
    assert!(fixes.is_empty(), "{fixes:?}");
    assert_eq!(
        line(&t, "iommu").1,
        "ok   iommu: 2 IOMMU groups: NICs go to vfio-pci (VFIO mode)"
    );
    assert_eq!(
        line(&t, "hugepages").1,
        "ok   hugepages: 256 reserved, 250 free"
    );
    assert_eq!(
        line(&t, "hugetlbfs").1,
        "ok   hugetlbfs: mounted at /dev/hugepages"
    );
    assert_eq!(line(&t, "nic 0000:00:02.0").0, Status::Ok);
    let used = line(&t, "nic 0000:00:03.0");
    assert_eq!(used.0, Status::Note);
    assert!(
        used.1.contains("in use by this machine (10.0.2.15)"),
        "{}",
        used.1
    );
    // The command itself: exit 0 and the summary.
    let out = Command::new(env!("CARGO_BIN_EXE_zcnic"))
        .arg("doctor")
        .env(SYSROOT_ENV, t.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.ends_with("zcnic doctor: all ok\n"), "{text}");
}

#[test]
fn missing_hugepages_and_mount_say_what_to_run_and_exit_1() {
    let t = ready("doctor-nohuge");
    t.write(
        "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        "0\n",
    );
    t.write("proc/mounts", "proc /proc proc rw 0 0\n");
    assert_eq!(
        line(&t, "hugepages").1,
        "fix  hugepages: no 2 MiB hugepages reserved: run `zcnic hugepages --reserve 256`"
    );
    assert_eq!(
        line(&t, "hugetlbfs").1,
        "fix  hugetlbfs: not mounted: run `zcnic hugepages --mount`"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_zcnic"))
        .arg("doctor")
        .env(SYSROOT_ENV, t.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("zcnic doctor: 2 to fix"), "{text}");
}

#[test]
fn without_an_iommu_uio_is_the_mode_and_its_module_is_needed() {
    let t = ready("doctor-noiommu");
    std::fs::remove_dir_all(t.path().join("sys/kernel/iommu_groups")).unwrap();
    // Neither IOMMU nor uio: nothing can take a NIC.
    let (status, text) = line(&t, "iommu");
    assert_eq!(status, Status::Fix, "{text}");
    assert!(text.contains("intel_iommu=on"), "{text}");
    // Loadable from /lib/modules, not loaded: no-IOMMU mode, and the fix is modprobe.
    t.write(
        "lib/modules/6.1.0-fixture/modules.dep",
        "kernel/drivers/uio/uio_pci_generic.ko: kernel/drivers/uio/uio.ko\n",
    );
    let (status, text) = line(&t, "iommu");
    assert_eq!(status, Status::Note, "{text}");
    assert!(
        text.contains("no IOMMU: NICs go to uio_pci_generic"),
        "{text}"
    );
    assert_eq!(
        line(&t, "uio_pci_generic").1,
        "fix  uio_pci_generic: not loaded: run `modprobe uio_pci_generic`"
    );
    t.write("sys/module/uio_pci_generic/refcnt", "0\n");
    assert_eq!(
        line(&t, "uio_pci_generic").1,
        "ok   uio_pci_generic: loaded"
    );
    // With an IOMMU, uio is only a note when missing.
    let with = ready("doctor-iommu-nouio");
    assert_eq!(line(&with, "uio_pci_generic").0, Status::Note);
}

#[test]
fn a_user_and_no_bound_nic_are_fixes() {
    let t = ready("doctor-user");
    t.write(
        "proc/self/status",
        "Name:\tzcnic\nUid:\t1000\t1000\t1000\t1000\n",
    );
    let (status, text) = line(&t, "root");
    assert_eq!(status, Status::Fix);
    assert!(text.contains("uid 1000") && text.contains("sudo"), "{text}");
    std::fs::remove_file(t.path().join("sys/bus/pci/devices/0000:00:02.0/driver")).unwrap();
    let (status, text) = line(&t, "nics");
    assert_eq!(status, Status::Fix, "{text}");
    assert!(text.contains("zcnic bind"), "{text}");
    let (_, free) = line(&t, "nic 0000:00:02.0");
    assert!(
        free.contains("no driver: run `zcnic bind 0000:00:02.0`"),
        "{free}"
    );
}
