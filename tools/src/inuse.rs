//! Is the machine using this NIC? The check behind `zcnic list`'s STATE column and the
//! refusal of `zcnic bind`: binding a NIC takes its interface away from the kernel, and if
//! that interface carries the SSH session the machine is cut off (DPDK's `dpdk-devbind.py`
//! calls such NICs `*Active*` and refuses them for the same reason).
//!
//! A NIC is active when one of its kernel interfaces
//! - is up and has an IPv4 or IPv6 address (link-local `fe80::/10` does not count: the
//!   kernel gives one to every interface that comes up),
//! - or carries a route (the default route above all),
//! - or is a member of a bridge or bond (up or not: the bridge is using it),
//! - or is bound to a kernel network driver but shows no interface here, which is what a
//!   NIC whose interface was moved into another network namespace looks like.
//!
//! Everything is read from sysfs and procfs under [`Roots`], never by running `ip`, so
//! tests point it at fixture trees. IPv4 addresses come from `/proc/net/fib_trie`, which
//! lists local addresses without their interface; an address belongs to the interface of
//! the connected route (`/proc/net/route`, no gateway) that holds it, and `127.0.0.0/8`
//! to `lo`. A `/32` address without a route of its own cannot be placed that way; such an
//! interface is still found active by its IPv6 address, routes or bridge.

use crate::{msg, ToolError};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use zcnic::PciAddr;

/// Points sysfs and procfs somewhere else than `/sys` and `/proc` (tests use fixture trees;
/// `$ZCNIC_SYSROOT/sys` and `$ZCNIC_SYSROOT/proc`).
pub const SYSROOT_ENV: &str = "ZCNIC_SYSROOT";

/// Where sysfs and procfs are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// sysfs, `/sys` on a real machine.
    pub sys: PathBuf,
    /// procfs, `/proc` on a real machine.
    pub proc: PathBuf,
}

impl Roots {
    /// The running machine's `/sys` and `/proc`.
    pub fn host() -> Self {
        Roots::under(Path::new("/"))
    }

    /// `dir/sys` and `dir/proc`: a fixture tree.
    pub fn under(dir: &Path) -> Self {
        Roots {
            sys: dir.join("sys"),
            proc: dir.join("proc"),
        }
    }

    /// [`Roots::under`] `$ZCNIC_SYSROOT` when it is set, else [`Roots::host`].
    pub fn from_env() -> Self {
        match std::env::var_os(SYSROOT_ENV) {
            Some(d) if !d.is_empty() => Roots::under(Path::new(&d)),
            _ => Roots::host(),
        }
    }
}

/// One kernel network interface as sysfs and procfs show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Its name, e.g. `eth0`.
    pub name: String,
    /// Administratively up (`IFF_UP` in `/sys/class/net/NAME/flags`).
    pub up: bool,
    /// Its addresses, IPv4 first, link-local IPv6 left out.
    pub addrs: Vec<IpAddr>,
    /// The routes through it worth naming: `default route`, `IPv6 default route`,
    /// `route 10.1.0.0/16` (a connected route of one of its own addresses is left out).
    pub routes: Vec<String>,
    /// `bridge br0`, `bond bond0` or `master X` when it is enslaved.
    pub master: Option<String>,
}

impl Iface {
    /// Reads interface `name`.
    pub fn read(roots: &Roots, name: &str) -> Iface {
        let dir = roots.sys.join("class/net").join(name);
        let flags = fs::read_to_string(dir.join("flags")).unwrap_or_default();
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
        const IFF_UP: u32 = 0x1;
        let v4_routes = ipv4_routes(roots);
        let mut addrs: Vec<IpAddr> = local_ipv4(roots)
            .into_iter()
            .filter(|a| owner_of(*a, &v4_routes).as_deref() == Some(name))
            .map(IpAddr::V4)
            .collect();
        addrs.extend(ipv6_addrs(roots, name).into_iter().map(IpAddr::V6));
        let mut routes = Vec::new();
        for r in v4_routes.iter().filter(|r| r.iface == name) {
            let connected = r.gateway == 0
                && addrs.iter().any(|a| match a {
                    IpAddr::V4(v4) => u32::from(*v4) & r.mask == r.dest,
                    IpAddr::V6(_) => false,
                });
            if r.mask == 0 {
                routes.push("default route".to_string());
            } else if !connected {
                let net = Ipv4Addr::from(r.dest);
                routes.push(format!("route {net}/{}", r.mask.count_ones()));
            }
        }
        if ipv6_default_route(roots, name) {
            routes.push("IPv6 default route".into());
        }
        Iface {
            name: name.to_string(),
            up: flags & IFF_UP != 0,
            addrs,
            routes,
            master: master(roots, &dir),
        }
    }

    /// What makes it active, e.g. `10.0.0.5, default route`, or `None` when it is not.
    pub fn active_because(&self) -> Option<String> {
        let mut why: Vec<String> = Vec::new();
        if self.up {
            why.extend(self.addrs.iter().map(IpAddr::to_string));
        }
        why.extend(self.routes.iter().cloned());
        if let Some(m) = &self.master {
            why.push(format!("member of {m}"));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

/// What the machine does with one PCI NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicUse {
    /// Its kernel interfaces (none when it is bound to vfio-pci, uio or no driver).
    pub ifaces: Vec<Iface>,
    /// A kernel network driver holds it but no interface shows: moved to another network
    /// namespace.
    pub hidden: bool,
}

impl NicUse {
    /// Reads the interfaces of the NIC at `addr`.
    pub fn read(roots: &Roots, addr: &PciAddr) -> NicUse {
        let dev = roots.sys.join("bus/pci/devices").join(addr.to_string());
        let mut names = entries(&dev.join("net"));
        // virtio-net's interface hangs off the virtio device below the PCI function.
        let mut virtio_driver = false;
        for sub in entries(&dev)
            .into_iter()
            .filter(|e| e.starts_with("virtio"))
        {
            names.extend(entries(&dev.join(&sub).join("net")));
            virtio_driver |= dev.join(&sub).join("driver").exists();
        }
        names.sort();
        let driver = zcnic::pci::link_name(&dev.join("driver"));
        let kernel_net_driver = match driver.as_deref() {
            None | Some("vfio-pci" | "uio_pci_generic") => false,
            Some("virtio-pci") => virtio_driver,
            Some(_) => true,
        };
        NicUse {
            hidden: names.is_empty() && kernel_net_driver,
            ifaces: names.iter().map(|n| Iface::read(roots, n)).collect(),
        }
    }

    /// The IFACE column: interface names, or `-`.
    pub fn iface_column(&self) -> String {
        match self.ifaces.len() {
            0 if self.hidden => "?".into(),
            0 => "-".into(),
            _ => self
                .ifaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// The STATE column: `active: 10.0.0.5, default route`, `up`, `down` or `-`.
    pub fn state_column(&self) -> String {
        if let Some(why) = self.active_because() {
            return format!("active: {why}");
        }
        match self.ifaces.iter().any(|i| i.up) {
            _ if self.ifaces.is_empty() => "-".into(),
            true => "up".into(),
            false => "down".into(),
        }
    }

    /// What makes the NIC active, naming the interface when there is one.
    pub fn active_because(&self) -> Option<String> {
        if self.hidden {
            return Some(
                "a kernel driver holds it and its interface is not in this network namespace"
                    .into(),
            );
        }
        let why: Vec<String> = self
            .ifaces
            .iter()
            .filter_map(|i| {
                let w = i.active_because()?;
                Some(if self.ifaces.len() > 1 {
                    format!("{}: {w}", i.name)
                } else {
                    w
                })
            })
            .collect();
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// The in-use rule of `zcnic bind`: an active NIC is refused unless `force`; forced, the
/// warning to print comes back.
pub fn check_bind(u: &NicUse, addr: &PciAddr, force: bool) -> Result<Option<String>, ToolError> {
    let Some(why) = u.active_because() else {
        return Ok(None);
    };
    let iface = match u.ifaces.len() {
        0 => "its interface".to_string(),
        _ => format!("interface {}", u.iface_column()),
    };
    if force {
        return Ok(Some(format!(
            "warning: {addr} is in use ({iface}: {why}); binding anyway (--force): the machine loses that interface"
        )));
    }
    Err(msg(format!(
        "{addr} is in use: {iface} is active ({why}); binding it would take that network away \
         from this machine; use another NIC, or `zcnic bind {addr} --force` if you mean it"
    )))
}

/// Names in a directory, sorted; none when it cannot be read.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The bridge or bond an interface is enslaved to: sysfs's `master` link.
fn master(roots: &Roots, iface_dir: &Path) -> Option<String> {
    let target = fs::read_link(iface_dir.join("master")).ok()?;
    let name = target.file_name()?.to_string_lossy().into_owned();
    let m = roots.sys.join("class/net").join(&name);
    Some(if m.join("bridge").exists() {
        format!("bridge {name}")
    } else if m.join("bonding").exists() {
        format!("bond {name}")
    } else {
        format!("master {name}")
    })
}

/// One line of `/proc/net/route`, in host order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route4 {
    iface: String,
    dest: u32,
    gateway: u32,
    mask: u32,
}

/// `/proc/net/route`: the main table's IPv4 routes. The kernel prints each address (in
/// network order in memory) as a native-endian `%08X`, which on x86 reads backwards.
fn ipv4_routes(roots: &Roots) -> Vec<Route4> {
    let text = fs::read_to_string(roots.proc.join("net/route")).unwrap_or_default();
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Route4 {
                iface: f.first()?.to_string(),
                dest: hex(f.get(1)?)?,
                gateway: hex(f.get(2)?)?,
                mask: hex(f.get(7)?)?,
            })
        })
        .collect()
}

/// Local IPv4 addresses: the `/32 host LOCAL` leaves of `/proc/net/fib_trie`.
fn local_ipv4(roots: &Roots) -> Vec<Ipv4Addr> {
    let text = fs::read_to_string(roots.proc.join("net/fib_trie")).unwrap_or_default();
    let mut out = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("|-- ") {
            leaf = a.parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = leaf.filter(|a| !out.contains(a)) {
                out.push(a);
            }
        }
    }
    out
}

/// The interface of the most specific connected route holding `a`; `lo` for 127/8.
fn owner_of(a: Ipv4Addr, routes: &[Route4]) -> Option<String> {
    if a.is_loopback() {
        return Some("lo".into());
    }
    routes
        .iter()
        .filter(|r| r.gateway == 0 && r.mask != 0 && u32::from(a) & r.mask == r.dest)
        .max_by_key(|r| r.mask.count_ones())
        .map(|r| r.iface.clone())
}

/// `/proc/net/if_inet6`: the interface's IPv6 addresses but link-local ones.
fn ipv6_addrs(roots: &Roots, name: &str) -> Vec<Ipv6Addr> {
    let text = fs::read_to_string(roots.proc.join("net/if_inet6")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(5) == Some(&name)).then_some(())?;
            let a = Ipv6Addr::from(u128::from_str_radix(f.first()?, 16).ok()?);
            // fe80::/10: every interface that comes up gets one; it says nothing of use.
            ((a.segments()[0] & 0xffc0) != 0xfe80).then_some(a)
        })
        .collect()
}

/// Whether `/proc/net/ipv6_route` has a default route (`::/0`) through the interface.
fn ipv6_default_route(roots: &Roots, name: &str) -> bool {
    let text = fs::read_to_string(roots.proc.join("net/ipv6_route")).unwrap_or_default();
    const RTF_REJECT: u32 = 0x200;
    text.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let flags = f
            .get(8)
            .and_then(|s| u32::from_str_radix(s, 16).ok())
            .unwrap_or(RTF_REJECT);
        f.len() >= 10
            && f[9] == name
            && f[1] == "00"
            && f[0].bytes().all(|b| b == b'0')
            && flags & RTF_REJECT == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_file_addresses_read_back_to_front() {
        let dir = std::env::temp_dir().join(format!("zcnic-route-{}", std::process::id()));
        fs::create_dir_all(dir.join("proc/net")).unwrap();
        fs::write(
            dir.join("proc/net/route"),
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        )
        .unwrap();
        let r = ipv4_routes(&Roots::under(&dir));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(Ipv4Addr::from(r[0].dest), Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(r[0].mask.count_ones(), 24);
        assert_eq!(
            owner_of(Ipv4Addr::new(192, 0, 2, 7), &r).as_deref(),
            Some("eth0")
        );
        assert_eq!(owner_of(Ipv4Addr::new(10, 0, 0, 1), &r), None);
        assert_eq!(owner_of(Ipv4Addr::LOCALHOST, &r).as_deref(), Some("lo"));
    }
}
