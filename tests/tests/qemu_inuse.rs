//! In a real guest: `zcnic bind` refuses a NIC the guest kernel is using (its e1000 driver
//! holds it, with an address and the default route), binds a free one, and binds the used
//! one with `--force`; `unbind` is never refused. `zcnic doctor` reports what is there and
//! what is missing: with hugepages and an IOMMU, without hugepages, and without an IOMMU.

use std::time::Duration;
use zcnic_qemu::{GuestSpec, Nic};
use zcnic_tests::qemu_suite::{boot, guest_slot, tail};

/// Runs `cmd` keeping stdout+stderr in /results/NAME.txt and its status in NAME.rc,
/// whatever the status (the scenario runs under `set -e`).
fn keep(name: &str, cmd: &str) -> String {
    format!("rc=0; {cmd} > /results/{name}.txt 2>&1 || rc=$?; echo $rc > /results/{name}.rc\n")
}

fn results(run: &zcnic_qemu::GuestRun, name: &str) -> (i32, String) {
    let read = |f: String| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let rc = read(format!("{name}.rc")).trim().parse().unwrap_or(-1);
    (rc, read(format!("{name}.txt")))
}

/// The line of `zcnic doctor`'s output about `name` (`hugepages`, `nic 0000:00:02.0`, …).
fn doctor_line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.get(5..)
                .is_some_and(|l| l.starts_with(&format!("{name}: ")))
        })
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{out}"))
}

#[test]
fn bind_refuses_the_nic_the_guest_uses_and_doctor_sees_hugepages_go() {
    let Some(_slot) = guest_slot("bind_refuses_the_nic_the_guest_uses") else {
        return;
    };
    let mut script = keep("doctor_fresh", "zcnic doctor");
    script.push_str(
        "modload e1000
n=0; until ls /sys/bus/pci/devices/0000:00:02.0/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 4; done
IF=$(ls /sys/bus/pci/devices/0000:00:02.0/net/)
echo $IF > /results/iface
ip addr add 10.0.0.5/24 dev $IF
ip link set $IF up
ip route add default via 10.0.0.1 dev $IF
",
    );
    for (name, cmd) in [
        ("list_used", "zcnic list"),
        ("bind_used", "zcnic bind 0000:00:02.0"),
        ("bind_free", "zcnic bind 0000:00:03.0"),
        ("doctor_bound", "zcnic doctor"),
        ("bind_forced", "zcnic bind 0000:00:02.0 --force"),
        ("list_forced", "zcnic list"),
        ("unbind", "zcnic unbind 0000:00:02.0"),
    ] {
        script.push_str(&keep(name, cmd));
    }
    script.push_str("echo 0 > /proc/sys/vm/nr_hugepages\numount /dev/hugepages\n");
    script.push_str(&keep("doctor_no_hugepages", "zcnic doctor"));
    let nics = vec![Nic::new("e1000", 0, false), Nic::new("e1000", 0, false)];
    let run = boot("inuse", nics, &script);
    let iface = std::fs::read_to_string(run.results.join("iface")).unwrap_or_default();
    let iface = iface.trim();
    assert!(!iface.is_empty(), "{}", tail(&run.console, 30));

    let (rc, fresh) = results(&run, "doctor_fresh");
    assert_eq!(rc, 1, "nothing bound yet is a fix:\n{fresh}");
    assert!(
        doctor_line(&fresh, "iommu").starts_with("ok   iommu: "),
        "{fresh}"
    );
    assert!(
        doctor_line(&fresh, "hugepages").starts_with("ok   hugepages: 256 reserved"),
        "{fresh}"
    );
    assert!(
        doctor_line(&fresh, "hugetlbfs").starts_with("ok   hugetlbfs: mounted at /dev/hugepages"),
        "{fresh}"
    );
    assert!(
        doctor_line(&fresh, "vfio-pci").starts_with("ok   "),
        "{fresh}"
    );
    assert!(doctor_line(&fresh, "root").starts_with("ok   "), "{fresh}");
    assert!(
        doctor_line(&fresh, "nic 0000:00:02.0")
            .contains("no driver: run `zcnic bind 0000:00:02.0`"),
        "{fresh}"
    );
    assert!(
        doctor_line(&fresh, "nics").starts_with("fix  nics: none bound"),
        "{fresh}"
    );

    let (_, list) = results(&run, "list_used");
    let row = list
        .lines()
        .find(|l| l.starts_with("0000:00:02.0"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains(&format!(" {iface} ")), "{row}");
    assert!(row.ends_with("active: 10.0.0.5, default route"), "{row}");

    let (rc, used) = results(&run, "bind_used");
    assert_eq!(rc, 2, "{used}");
    assert_eq!(used.lines().count(), 1, "one line: {used}");
    assert!(
        used.contains(&format!(
            "0000:00:02.0 is in use: interface {iface} is active (10.0.0.5, default route)"
        )) && used.contains("zcnic bind 0000:00:02.0 --force"),
        "{used}"
    );
    let (rc, free) = results(&run, "bind_free");
    assert_eq!(rc, 0, "{free}");
    assert!(
        free.contains("0000:00:03.0: bound to vfio-pci (was e1000)"),
        "{free}"
    );

    let (rc, bound) = results(&run, "doctor_bound");
    assert_eq!(
        rc, 0,
        "hugepages, IOMMU and a bound NIC: nothing to fix:\n{bound}"
    );
    assert!(
        doctor_line(&bound, "nic 0000:00:02.0")
            .contains("in use by this machine (10.0.0.5, default route)"),
        "{bound}"
    );
    assert!(
        doctor_line(&bound, "nic 0000:00:03.0").starts_with("ok   "),
        "{bound}"
    );
    assert!(bound.ends_with("zcnic doctor: all ok\n"), "{bound}");

    let (rc, forced) = results(&run, "bind_forced");
    assert_eq!(rc, 0, "{forced}");
    assert!(
        forced.contains("zcnic: warning: 0000:00:02.0 is in use"),
        "{forced}"
    );
    assert!(
        forced.contains("0000:00:02.0: bound to vfio-pci (was e1000)"),
        "{forced}"
    );
    let (_, list) = results(&run, "list_forced");
    assert!(
        list.lines()
            .any(|l| l.starts_with("0000:00:02.0  8086:100e      vfio-pci") && l.ends_with(" -")),
        "bound, the NIC has no interface and no state:\n{list}"
    );
    let (rc, unbind) = results(&run, "unbind");
    assert_eq!(rc, 0, "{unbind}");
    assert!(unbind.contains("given back to e1000"), "{unbind}");

    let (rc, none) = results(&run, "doctor_no_hugepages");
    assert_eq!(rc, 1, "{none}");
    assert_eq!(
        doctor_line(&none, "hugepages"),
        "fix  hugepages: no 2 MiB hugepages reserved: run `zcnic hugepages --reserve 256`"
    );
    assert_eq!(
        doctor_line(&none, "hugetlbfs"),
        "fix  hugetlbfs: not mounted: run `zcnic hugepages --mount`"
    );
}

#[test]
fn doctor_without_an_iommu_names_no_iommu_mode() {
    let Some(_slot) = guest_slot("doctor_without_an_iommu_names_no_iommu_mode") else {
        return;
    };
    let mut script = keep("doctor_fresh", "zcnic doctor");
    script.push_str(&keep("bind", "zcnic bind 0000:00:02.0"));
    script.push_str(&keep("doctor_bound", "zcnic doctor"));
    let spec = GuestSpec {
        nics: vec![Nic::new("e1000", 0, false)],
        script,
        iommu: false,
        cpus: 2,
        timeout: Duration::from_secs(420),
        echo: std::env::var_os("ZCNIC_QEMU_ECHO").is_some(),
        kernel: zcnic_qemu::GuestKernel::Bookworm,
        name: "inuse-noiommu".into(),
    };
    let run = zcnic_qemu::run(&spec).expect("guest run");
    assert_eq!(run.exit_code, 0, "{}", tail(&run.console, 30));
    let (rc, fresh) = results(&run, "doctor_fresh");
    assert_eq!(rc, 1, "{fresh}");
    assert!(
        doctor_line(&fresh, "iommu")
            .starts_with("note iommu: no IOMMU: NICs go to uio_pci_generic"),
        "{fresh}"
    );
    assert_eq!(
        doctor_line(&fresh, "uio_pci_generic"),
        "ok   uio_pci_generic: loaded"
    );
    let (rc, bind) = results(&run, "bind");
    assert_eq!(rc, 0, "{bind}");
    assert!(bind.contains("bound to uio_pci_generic"), "{bind}");
    let (rc, bound) = results(&run, "doctor_bound");
    assert_eq!(rc, 0, "no IOMMU is a note, not a fix:\n{bound}");
    assert!(
        doctor_line(&bound, "nic 0000:00:02.0").ends_with("bound to uio_pci_generic: ready"),
        "{bound}"
    );
}
