//! The driver layer's error: each variant names the device and says what to do next.

use crate::pci::PciAddr;
use std::path::Path;
use zcnic_hugepages::DmaError;

/// Why a device could not be opened or driven.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not a PCI address.
    #[error("`{0}` is not a PCI address: use the form 0000:00:02.0 (`zcnic list` shows the NICs)")]
    BadPciAddress(String),
    /// No network interface of that name (AF_XDP).
    #[error("no network interface {0}: `ip link` lists them (give xdp:NAME)")]
    NoInterface(String),
    /// An AF_XDP port could not be opened on the interface.
    #[error("xdp:{iface}: {msg}")]
    Xdp {
        /// The interface.
        iface: String,
        /// What failed, and what to do.
        msg: String,
    },
    /// sysfs has no such device.
    #[error("no PCI device {0}: `zcnic list` shows the NICs")]
    NoSuchDevice(PciAddr),
    /// Bound to some other driver (or none) instead of vfio-pci.
    #[error("{addr} is {}, not vfio-pci or uio_pci_generic: run `zcnic bind {addr}` first", match .driver {
        Some(d) => format!("bound to the kernel driver {d}"),
        None => "bound to no driver".to_string(),
    })]
    NotBound {
        /// The device.
        addr: PciAddr,
        /// Its current driver.
        driver: Option<String>,
    },
    /// The device has no IOMMU group.
    #[error("{0} has no IOMMU group: boot with `intel_iommu=on` (or `amd_iommu=on`) so VFIO can isolate it")]
    NoIommuGroup(PciAddr),
    /// `/dev/vfio/vfio` is missing.
    #[error("{0}: /dev/vfio/vfio does not exist: load VFIO with `modprobe vfio-pci`")]
    NoVfio(PciAddr),
    /// The IOMMU group has devices not bound to vfio-pci.
    #[error("{addr}: IOMMU group {group} is not viable: also bind {} to vfio-pci (`zcnic bind <addr>`) or unbind them", .others.join(", "))]
    GroupNotViable {
        /// The device.
        addr: PciAddr,
        /// Its group.
        group: u32,
        /// Other devices of the group with another driver.
        others: Vec<String>,
    },
    /// Another process (or this one) has the device open.
    #[error("{0} is busy: another process has it open (is another zcnic running? `ps aux | grep zcnic`)")]
    Busy(PciAddr),
    /// Not permitted.
    #[error("{addr}: permission denied on {what}: run as root")]
    Permission {
        /// The device.
        addr: PciAddr,
        /// What was refused.
        what: String,
    },
    /// zcnic has no driver for this vendor:device.
    #[error("{addr} is {vendor:04x}:{device:04x}, which zcnic does not drive: pick a NIC `zcnic list` marks supported ({})", crate::SUPPORTED.iter().map(|s| s.describe()).collect::<Vec<_>>().join(", "))]
    Unsupported {
        /// The device.
        addr: PciAddr,
        /// Vendor ID.
        vendor: u16,
        /// Device ID.
        device: u16,
    },
    /// A system call on the device failed.
    #[error("{addr}: {what}: {source}")]
    Syscall {
        /// The device.
        addr: PciAddr,
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device did not do something in time.
    #[error("{addr}: timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// The device.
        addr: PciAddr,
        /// What did not happen.
        what: &'static str,
        /// How long was waited.
        ms: u64,
    },
    /// DMA memory could not be had.
    #[error("{addr}: {source}")]
    Dma {
        /// The device.
        addr: PciAddr,
        /// The memory error, with its fix.
        source: DmaError,
    },
    /// A receive-filter change the port refused (a bad address, a full table, a port
    /// without such a filter) or the device did not take.
    #[error("{addr}: receive filter: {source}")]
    Filter {
        /// The device.
        addr: PciAddr,
        /// What was wrong.
        source: crate::filter::FilterError,
    },
    /// `Config::mtu` beyond what the NIC (or the device's own MTU) takes.
    #[error("{addr}: MTU {mtu} is more than this {what} takes ({max}): use an MTU of 68..={max}")]
    Mtu {
        /// The device.
        addr: PciAddr,
        /// The MTU asked for.
        mtu: usize,
        /// The largest the device takes.
        max: usize,
        /// What sets the limit ("e1000", "virtio-net device (its mtu field)").
        what: &'static str,
    },
    /// The port cannot wait for frames on an interrupt: its driver has no receive
    /// interrupt, or the platform gave it no vector. Poll instead (`--idle poll`).
    #[error("{addr}: no receive interrupt: {why}; poll instead (`--idle poll`)")]
    NoInterrupt {
        /// The device.
        addr: PciAddr,
        /// Why not: the driver, or what the platform answered.
        why: String,
    },
    /// A file outside a device's own (sysfs listing, state files).
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// Checks `mtu` against `68..=max` (68: the least IPv4 allows).
    pub(crate) fn check_mtu(
        addr: PciAddr,
        mtu: usize,
        max: usize,
        what: &'static str,
    ) -> Result<(), Self> {
        if (68..=max).contains(&mtu) {
            Ok(())
        } else {
            Err(Self::Mtu {
                addr,
                mtu,
                max,
                what,
            })
        }
    }

    /// A refused filter change on `addr`.
    pub(crate) fn filter(addr: PciAddr, source: crate::filter::FilterError) -> Self {
        Self::Filter { addr, source }
    }

    /// The answer of a port (or handle) without receive filters beyond promiscuity.
    pub(crate) fn no_filter(addr: PciAddr, who: &str, what: &str) -> Self {
        Self::filter(
            addr,
            crate::filter::FilterError::Unsupported(format!("{who} has no {what} filter")),
        )
    }

    /// The answer of a port whose driver has no receive interrupt.
    pub(crate) fn no_interrupt(addr: PciAddr, driver: &str) -> Self {
        Self::NoInterrupt {
            addr,
            why: format!("the {driver} driver has no receive interrupt yet"),
        }
    }

    pub(crate) fn sysfs(addr: &PciAddr, path: &Path, e: std::io::Error) -> Self {
        Self::Syscall {
            addr: *addr,
            what: format!("reading {}", path.display()),
            source: e,
        }
    }

    /// A failed system call on `addr`, mapped to the variant that says what to do.
    pub(crate) fn os(addr: &PciAddr, what: impl Into<String>, e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EBUSY) => Self::Busy(*addr),
            Some(libc::EACCES | libc::EPERM) => Self::Permission {
                addr: *addr,
                what: what.into(),
            },
            _ => Self::Syscall {
                addr: *addr,
                what: what.into(),
                source: e,
            },
        }
    }
}
