//! zcnic: a poll-mode, zero-copy userspace NIC driver.
//!
//! The kernel hands a PCI NIC to this process through VFIO; zcnic maps its registers,
//! places descriptor rings and packet buffers in hugepage memory the NIC reaches by DMA,
//! and polls for completions. Applications use the [`Nic`] trait:
//!
//! ```no_run
//! let mut nic = zcnic::open("0000:00:02.0")?;
//! let mut batch = Vec::with_capacity(32);
//! nic.pool().alloc_batch(&mut batch, 32);
//! for p in &mut batch {
//!     p.set_len(60).unwrap();
//!     p.data_mut().fill(0xff);
//! }
//! nic.tx_batch(&mut batch);
//! # Ok::<(), zcnic::Error>(())
//! ```

mod config;
pub mod e1000;
mod error;
pub mod filter;
pub mod igb;
mod intel;
pub mod irq;
pub mod mmio;
mod nic;
pub mod offload;
pub mod pci;
pub mod platform;
pub mod port;
#[cfg(feature = "smoltcp")]
pub mod smol;
pub mod uio;
pub mod vfio;
pub mod virtio;
#[cfg(feature = "xdp")]
pub mod xdp;

pub use config::{Config, RingChoice};
pub use error::Error;
pub use filter::FilterError;
pub use mmio::{Bar, FakeBar, MmioBar};
pub use nic::{format_mac, Link, Nic, Stats};
pub use offload::Offloads;
pub use pci::{DeviceInfo, PciAddr};
pub use port::{Port, QueuePair, Rss, RxQueue, TxQueue};
pub use vfio::register as register_memory;
/// Receive-side scaling in software: the Toeplitz hash and the redirection table.
pub use zcnic_descriptors::rss;
pub use zcnic_hugepages::{
    Checksum, DmaAllocator, DmaError, FakeDma, HugepageStatus, L4Csum, Mempool, Packet, PoolCache,
    RxOffload, Segment, TxOffload, UserRegion, CACHE_SIZE, DATA_ROOM, HEADROOM,
};

/// A device family zcnic drives.
#[derive(Debug, Clone, Copy)]
pub struct Supported {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Driver name.
    pub driver: &'static str,
    /// Part name.
    pub part: &'static str,
}

impl Supported {
    /// `8086:100e (e1000 82540EM)`.
    pub fn describe(&self) -> String {
        format!(
            "{:04x}:{:04x} ({} {})",
            self.vendor, self.device, self.driver, self.part
        )
    }
}

/// Every device zcnic drives.
pub const SUPPORTED: [Supported; 6] = [
    Supported {
        vendor: 0x8086,
        device: 0x100e,
        driver: "e1000",
        part: "82540EM",
    },
    Supported {
        vendor: 0x8086,
        device: 0x100f,
        driver: "e1000",
        part: "82545EM",
    },
    Supported {
        vendor: 0x8086,
        device: 0x1004,
        driver: "e1000",
        part: "82544GC",
    },
    Supported {
        vendor: 0x8086,
        device: 0x10c9,
        driver: "igb",
        part: "82576",
    },
    Supported {
        vendor: 0x1af4,
        device: 0x1041,
        driver: "virtio-net",
        part: "modern",
    },
    Supported {
        vendor: 0x1af4,
        device: 0x1000,
        driver: "virtio-net",
        part: "legacy/transitional",
    },
];

/// The driver zcnic would use for a vendor:device, if any.
pub fn supported(vendor: u16, device: u16) -> Option<&'static Supported> {
    SUPPORTED
        .iter()
        .find(|s| s.vendor == vendor && s.device == device)
}

/// Opens the NIC at `pci` (e.g. `0000:00:02.0`) with default settings, or, with the
/// `xdp` feature, queue 0 of a network interface through AF_XDP (`xdp:eth0`).
pub fn open(pci: &str) -> Result<Box<dyn Nic>, Error> {
    open_with(pci, &Config::default())
}

/// Opens the NIC at `pci` with explicit ring, pool and timeout settings, through the
/// platform it is bound to: vfio-pci (IOMMU) or uio_pci_generic (no IOMMU, physical
/// addresses; one line on stderr says so). See `platform::open_device`.
///
/// `xdp:NAME` opens the interface NAME through AF_XDP instead (`xdp::XdpPort`, with the
/// `xdp` feature): the kernel keeps its driver.
pub fn open_with(pci: &str, cfg: &Config) -> Result<Box<dyn Nic>, Error> {
    if let Some(iface) = pci.strip_prefix("xdp:") {
        #[cfg(feature = "xdp")]
        return Ok(Box::new(xdp::XdpPort::open(iface, cfg)?));
        #[cfg(not(feature = "xdp"))]
        return Err(Error::Xdp {
            iface: iface.to_string(),
            msg: "zcnic was built without the `xdp` feature".into(),
        });
    }
    let addr: PciAddr = pci.parse()?;
    let info = DeviceInfo::read(&addr)?;
    let driver = match supported(info.vendor, info.device) {
        Some(s) => s.driver,
        None => {
            return Err(Error::Unsupported {
                addr,
                vendor: info.vendor,
                device: info.device,
            })
        }
    };
    let dev = platform::open_device(&addr)?;
    match driver {
        "e1000" => Ok(Box::new(e1000::E1000::with_device(dev, cfg)?)),
        "igb" => Ok(Box::new(igb::Igb::with_device(dev, cfg)?)),
        _ => virtio::with_device(dev.into(), cfg),
    }
}

/// Opens the NIC at `pci` as a port of `cfg.queues` queue pairs, each pair's handles for
/// one worker thread (see [`port`]). The igb has up to 8; virtio-net as many as the device
/// offers (QEMU: `mq=on` and a tap netdev with `queues=N`), with RSS where it has
/// VIRTIO_NET_F_RSS. The e1000 has one queue pair, driven through [`open_with`];
/// `open_port` refuses it with a line that says so. `xdp:NAME` opens queues
/// `0..cfg.queues` of the interface NAME through AF_XDP, one socket each
/// (`xdp::XdpMultiPort`, with the `xdp` feature).
pub fn open_port(pci: &str, cfg: &Config) -> Result<(Box<dyn Port>, Vec<QueuePair>), Error> {
    if let Some(iface) = pci.strip_prefix("xdp:") {
        #[cfg(feature = "xdp")]
        return xdp::XdpMultiPort::open(iface, cfg).map(|(p, q)| (Box::new(p) as Box<dyn Port>, q));
        #[cfg(not(feature = "xdp"))]
        return Err(Error::Xdp {
            iface: iface.to_string(),
            msg: "zcnic was built without the `xdp` feature".into(),
        });
    }
    let addr: PciAddr = pci.parse()?;
    let info = DeviceInfo::read(&addr)?;
    match supported(info.vendor, info.device) {
        Some(s) if s.driver == "igb" => igb::IgbPort::open_boxed(platform::open_device(&addr)?, cfg),
        Some(s) if s.driver.starts_with("virtio") => virtio::open_port(&addr, cfg),
        Some(s) => Err(Error::Io(format!(
            "{addr}: zcnic drives the {} with one queue pair, behind the Nic trait (zcnic::open_with); separate queue handles are for the igb and virtio-net",
            s.driver
        ))),
        None => Err(Error::Unsupported {
            addr,
            vendor: info.vendor,
            device: info.device,
        }),
    }
}

/// Polls `done` every 50 µs until it holds or `timeout` passes: every wait on a device is
/// bounded.
pub(crate) fn wait_until(timeout: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}
