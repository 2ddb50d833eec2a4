//! PCI addresses, what sysfs says about a device, and config-space offsets.

use crate::Error;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where sysfs lists PCI devices.
pub const SYSFS_PCI: &str = "/sys/bus/pci/devices";

/// Command register (PCI Local Bus Spec §6.2.2), 16 bits at config offset 0x04.
pub const CONFIG_COMMAND: u64 = 0x04;
/// Command register: Memory Space Enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: Bus Master Enable — without it the device cannot DMA.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: Interrupt Disable (INTx), zcnic polls.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// A PCI function address, `domain:bus:device.function` (e.g. `0000:00:02.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddr {
    /// PCI domain (segment).
    pub domain: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl PciAddr {
    /// `ffff:ff:1f.7`, which no device has: where a PCI address is asked for a port
    /// opened by name instead (an AF_XDP port, `xdp:eth0`), before it is open.
    pub const XDP: PciAddr = PciAddr {
        domain: 0xffff,
        bus: 0xff,
        device: 0x1f,
        function: 7,
    };
}

impl FromStr for PciAddr {
    type Err = Error;

    /// Parses `0000:00:02.0`, or `00:02.0` with domain 0.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadPciAddress(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let (domain, bus, devfn) = match parts.as_slice() {
            [d, b, df] => (*d, *b, *df),
            [b, df] => ("0000", *b, *df),
            _ => return Err(bad()),
        };
        let (dev, func) = devfn.split_once('.').ok_or_else(bad)?;
        let hex = |t: &str, digits: usize| {
            (t.len() == digits && t.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(t, 16).ok())
                .flatten()
        };
        let domain = hex(domain, 4).ok_or_else(bad)? as u16;
        let bus = hex(bus, 2).ok_or_else(bad)? as u8;
        let device = hex(dev, 2).filter(|d| *d < 32).ok_or_else(bad)? as u8;
        let function = (func.len() == 1)
            .then(|| func.parse::<u8>().ok())
            .flatten()
            .filter(|f| *f < 8)
            .ok_or_else(bad)?;
        Ok(Self {
            domain,
            bus,
            device,
            function,
        })
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// What sysfs says about one PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its address.
    pub addr: PciAddr,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (24 bits; 0x02xxxx is a network controller).
    pub class: u32,
    /// Driver bound now, if any (`vfio-pci`, `e1000`, …).
    pub driver: Option<String>,
    /// IOMMU group number, if the device is behind an IOMMU.
    pub iommu_group: Option<u32>,
}

impl DeviceInfo {
    /// sysfs directory of `addr`.
    pub fn sysfs_dir(addr: &PciAddr) -> PathBuf {
        Path::new(SYSFS_PCI).join(addr.to_string())
    }

    /// Reads the device's sysfs entry; [`Error::NoSuchDevice`] if there is none.
    pub fn read(addr: &PciAddr) -> Result<Self, Error> {
        let dir = Self::sysfs_dir(addr);
        if !dir.exists() {
            return Err(Error::NoSuchDevice(*addr));
        }
        let hex = |name: &str| -> Result<u32, Error> {
            let path = dir.join(name);
            let s = fs::read_to_string(&path).map_err(|e| Error::sysfs(addr, &path, e))?;
            u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).map_err(|_| {
                Error::sysfs(
                    addr,
                    &path,
                    std::io::Error::from(std::io::ErrorKind::InvalidData),
                )
            })
        };
        Ok(Self {
            addr: *addr,
            vendor: hex("vendor")? as u16,
            device: hex("device")? as u16,
            class: hex("class")?,
            driver: link_name(&dir.join("driver")),
            iommu_group: link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok()),
        })
    }

    /// Every PCI function in sysfs whose class is "network controller", by address.
    pub fn list_network() -> Result<Vec<Self>, Error> {
        let entries = fs::read_dir(SYSFS_PCI)
            .map_err(|e| Error::Io(format!("cannot list {SYSFS_PCI}: {e}")))?;
        let mut out: Vec<Self> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<PciAddr>().ok())
            .filter_map(|a| Self::read(&a).ok())
            .filter(|d| d.class >> 16 == 0x02)
            .collect();
        out.sort_by_key(|d| d.addr);
        Ok(out)
    }
}

/// Last path component of a symlink's target (`…/drivers/e1000` → `e1000`).
pub fn link_name(link: &Path) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    Some(target.file_name()?.to_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let a: PciAddr = "0000:00:02.0".parse().unwrap();
        assert_eq!((a.bus, a.device, a.function), (0, 2, 0));
        assert_eq!(a.to_string(), "0000:00:02.0");
        let b: PciAddr = "3b:1f.7".parse().unwrap();
        assert_eq!(b.to_string(), "0000:3b:1f.7");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "0000:00:02",
            "00:02",
            "0000:00:20.0",
            "0000:00:02.8",
            "zz:00.0",
            "0:0:2.0",
            "0000:00:02.0.1",
            "0000:00:02.00",
            "0000:00:02.-1",
            "eth0",
        ] {
            let e = s.parse::<PciAddr>().unwrap_err();
            assert!(
                e.to_string().contains("0000:00:02.0"),
                "{s}: message should show the form: {e}"
            );
        }
    }
}
