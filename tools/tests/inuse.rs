//! In-use detection on fixture sysfs/procfs trees and on this machine's loopback, and
//! `zcnic bind` refusing an active fixture NIC (exit 2, one line) unless `--force`.

mod fixture;

use fixture::Tree;
use std::net::IpAddr;
use std::process::Command;
use zcnic::PciAddr;
use zcnic_tools::inuse::{check_bind, Iface, NicUse, Roots, SYSROOT_ENV};

/// A PCI address no machine has (domain ffff), so a `--force` bind that gets past the
/// in-use check stops at "no such device" and never touches a real NIC.
const NOWHERE: &str = "ffff:ff:1f.7";

fn addr(s: &str) -> PciAddr {
    s.parse().unwrap()
}

fn read(t: &Tree, a: &str) -> NicUse {
    NicUse::read(&Roots::under(t.path()), &addr(a))
}

#[test]
fn up_with_an_address_and_default_route_is_active() {
    let mut t = Tree::new("up-addr");
    t.nic("0000:00:02.0", Some("e1000"), Some("eth0"));
    t.up("eth0");
    t.addr4("eth0", [10, 0, 0, 5], 24);
    t.route4("eth0", [0; 4], [10, 0, 0, 1], 0);
    t.addr6("eth0", "fd000000000000000000000000000005");
    t.addr6("eth0", "fe800000000000000000000000000005");
    let u = read(&t, "0000:00:02.0");
    assert_eq!(u.iface_column(), "eth0");
    assert_eq!(
        u.state_column(),
        "active: 10.0.0.5, fd00::5, default route",
        "the connected 10.0.0.0/24 and the link-local address are not worth naming"
    );
    let e = check_bind(&u, &addr("0000:00:02.0"), false)
        .unwrap_err()
        .to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("interface eth0"), "{e}");
    assert!(e.contains("10.0.0.5, fd00::5, default route"), "{e}");
    assert!(e.contains("zcnic bind 0000:00:02.0 --force"), "{e}");
    let w = check_bind(&u, &addr("0000:00:02.0"), true).unwrap();
    assert!(w.is_some_and(|w| w.starts_with("warning:") && w.contains("eth0")));
}

#[test]
fn a_route_alone_makes_a_nic_active() {
    let mut t = Tree::new("route-only");
    t.nic("0000:00:02.0", Some("e1000"), Some("eth1"));
    t.up("eth1");
    t.route4("eth1", [10, 1, 0, 0], [0; 4], 16);
    let u = read(&t, "0000:00:02.0");
    assert_eq!(u.ifaces[0].addrs, Vec::<IpAddr>::new());
    assert_eq!(u.state_column(), "active: route 10.1.0.0/16");
    assert!(check_bind(&u, &addr("0000:00:02.0"), false).is_err());
}

#[test]
fn a_bridge_member_is_active_even_when_down() {
    let t = Tree::new("bridge");
    t.nic("0000:00:02.0", Some("e1000"), Some("eth2"));
    t.bridge("eth2", "br0");
    let u = read(&t, "0000:00:02.0");
    assert!(!u.ifaces[0].up);
    assert_eq!(u.state_column(), "active: member of bridge br0");
    assert!(check_bind(&u, &addr("0000:00:02.0"), false).is_err());
}

#[test]
fn a_down_interface_and_a_nic_without_one_are_free() {
    let mut t = Tree::new("down");
    t.nic("0000:00:02.0", Some("e1000"), Some("eth3"));
    // An address on a down interface: the kernel keeps it, but nothing flows there.
    t.addr6("eth3", "fd000000000000000000000000000009");
    t.nic("0000:00:03.0", Some("vfio-pci"), None);
    t.nic("0000:00:04.0", Some("e1000"), Some("eth4"));
    t.up("eth4");
    let down = read(&t, "0000:00:02.0");
    assert_eq!(down.state_column(), "down");
    assert_eq!(
        check_bind(&down, &addr("0000:00:02.0"), false).unwrap(),
        None
    );
    let bound = read(&t, "0000:00:03.0");
    assert_eq!(
        (bound.iface_column().as_str(), bound.state_column().as_str()),
        ("-", "-")
    );
    assert_eq!(
        check_bind(&bound, &addr("0000:00:03.0"), false).unwrap(),
        None
    );
    let up = read(&t, "0000:00:04.0");
    assert_eq!(up.state_column(), "up");
    assert_eq!(check_bind(&up, &addr("0000:00:04.0"), false).unwrap(), None);
}

#[test]
fn a_kernel_driver_without_a_visible_interface_is_another_namespaces() {
    let t = Tree::new("netns");
    t.nic("0000:00:02.0", Some("e1000"), None);
    let u = read(&t, "0000:00:02.0");
    assert_eq!(u.iface_column(), "?");
    assert!(
        u.state_column().contains("not in this network namespace"),
        "{}",
        u.state_column()
    );
    assert!(check_bind(&u, &addr("0000:00:02.0"), false).is_err());
}

#[test]
fn the_real_loopback_is_up_with_its_addresses() {
    let lo = Iface::read(&Roots::host(), "lo");
    assert!(lo.up, "lo is up on any running machine: {lo:?}");
    assert!(
        lo.addrs.iter().any(|a| a.is_loopback()),
        "127.0.0.1 or ::1 on lo: {lo:?}"
    );
    assert!(lo.active_because().is_some());
}

fn zcnic(tree: &Tree, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zcnic"))
        .args(args)
        .env(SYSROOT_ENV, tree.path())
        .output()
        .expect("run zcnic");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bind_refuses_an_active_nic_in_one_line_and_force_gets_past() {
    assert!(
        !std::path::Path::new("/sys/bus/pci/devices")
            .join(NOWHERE)
            .exists(),
        "{NOWHERE} must not exist on the test machine"
    );
    let mut t = Tree::new("cli");
    t.nic(NOWHERE, Some("e1000"), Some("eth9"));
    t.up("eth9");
    t.addr4("eth9", [192, 168, 7, 2], 24);
    t.route4("eth9", [0; 4], [192, 168, 7, 1], 0);
    let (code, out, err) = zcnic(&t, &["bind", NOWHERE]);
    assert_eq!(code, 2, "stdout {out}, stderr {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("zcnic: error: ffff:ff:1f.7 is in use: interface eth9"),
        "{err}"
    );
    assert!(
        err.contains("192.168.7.2, default route") && err.contains("--force"),
        "{err}"
    );

    let (code, _, err) = zcnic(&t, &["bind", NOWHERE, "--force"]);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("zcnic: warning: ffff:ff:1f.7 is in use"),
        "{err}"
    );
    // Past the check, the real sysfs has no such device: the bind itself says so.
    assert_eq!(code, 2, "{err}");
    assert!(
        !lines[1].contains("in use") && lines[1].contains("ffff:ff:1f.7"),
        "{err}"
    );
}
