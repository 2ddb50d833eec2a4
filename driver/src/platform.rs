//! How a driver reaches its PCI function: config space, BARs, DMA memory. Two platforms
//! implement [`PciDevice`]: VFIO ([`crate::vfio::VfioDevice`], with an IOMMU) and uio
//! ([`crate::uio::UioDevice`], no IOMMU, physical addresses). `open_device` picks the one
//! the device is bound to, so drivers are written once.

use crate::mmio::MmioBar;
use crate::pci::{
    DeviceInfo, PciAddr, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_MEMORY, CONFIG_COMMAND,
};
use crate::uio::UioDevice;
use crate::vfio::VfioDevice;
use crate::Error;
use std::fmt::Debug;
use zcnic_hugepages::DmaAllocator;

/// Which addresses the device is given for DMA memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IovaMode {
    /// Addresses translated by the IOMMU, picked by zcnic.
    Virtual,
    /// Physical addresses, for a device that bypasses the IOMMU.
    Physical,
}

/// A PCI function handed to userspace.
///
/// # Safety
/// The drivers trust an implementation completely: its config space and BARs are the
/// device's, and `dma_allocator` hands out memory the device reaches at exactly the IOVAs
/// it reports and nowhere else. zcnic's own implementations (VFIO, uio) are opened only
/// inside this crate, by the drivers' `open`, so safe code never holds one of a real
/// device: through its config space or BARs it could point the device's DMA anywhere.
///
/// `Send + Sync`: a port holding its device moves to a worker thread, and a virtio-net
/// port shares its device with its legacy transport (an `Arc`). Every method takes `&self`
/// and is a system call on the device's file (or a read of its config space), which the
/// kernel serialises.
pub unsafe trait PciDevice: Debug + Send + Sync {
    /// Its address.
    fn addr(&self) -> PciAddr;
    /// Reads config space at `off` into `buf`.
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), Error>;
    /// Writes `buf` to config space at `off`.
    fn config_write(&self, off: u64, buf: &[u8]) -> Result<(), Error>;
    /// Maps memory BAR `index` into this process.
    fn map_bar(&self, index: u32) -> Result<MmioBar, Error>;
    /// A source of DMA memory the device can reach, at IOVAs chosen per `mode`.
    fn dma_allocator(&self, mode: IovaMode) -> Result<Box<dyn DmaAllocator>, Error>;
    /// Reads `buf.len()` bytes (1, 2 or 4) at `off` of BAR `index` through the platform: for
    /// I/O-port BARs, which cannot be mapped (legacy virtio).
    fn bar_read(&self, index: u32, off: u64, buf: &mut [u8]) -> Result<(), Error>;
    /// Writes to BAR `index` through the platform (see [`PciDevice::bar_read`]).
    fn bar_write(&self, index: u32, off: u64, buf: &[u8]) -> Result<(), Error>;
    /// Function-level reset through the platform, when it offers one; true if it was done.
    fn reset(&self) -> bool;

    /// The device's INTx, delivered from now on to the descriptor returned, which the
    /// caller polls (masked until the first [`irq_unmask`](Self::irq_unmask)). A platform
    /// without interrupt delivery answers [`Error::NoInterrupt`].
    fn intx(&self) -> Result<crate::irq::IrqFd, Error> {
        Err(Error::NoInterrupt {
            addr: self.addr(),
            why: "this platform delivers no interrupts to zcnic".into(),
        })
    }

    /// Up to `max` vectors of interrupt `index` ([`crate::irq::MSIX`] or
    /// [`crate::irq::MSI`]), each delivered from now on to its own eventfd, vector `i` to
    /// element `i`; fewer when the device has fewer. Edge-triggered: nothing to unmask. A
    /// platform without them answers [`Error::NoInterrupt`]; undo with
    /// [`irq_release`](Self::irq_release).
    fn vectors(&self, index: u32, max: usize) -> Result<Vec<crate::irq::EventFd>, Error> {
        let _ = (index, max);
        Err(Error::NoInterrupt {
            addr: self.addr(),
            why: "this platform delivers no MSI or MSI-X vectors to zcnic".into(),
        })
    }

    /// Lets interrupt `index` (VFIO's numbering: [`crate::irq::INTX`] 0, MSI 1, MSI-X 2),
    /// which the kernel masks each time a level-triggered line fires, fire again.
    fn irq_unmask(&self, index: u32) -> Result<(), Error> {
        let _ = index;
        Ok(())
    }

    /// Stops delivering interrupt `index` (undoes [`intx`](Self::intx)).
    fn irq_release(&self, index: u32) {
        let _ = index;
    }

    /// Whether an IOMMU stands between the device and memory. Without one (uio) the
    /// device reaches all of memory and is given physical addresses whatever
    /// [`IovaMode`] is asked for; drivers ask [`IovaMode::Physical`] then.
    fn iommu(&self) -> bool {
        true
    }

    /// Reads a 16-bit config register.
    fn config_read16(&self, off: u64) -> Result<u16, Error> {
        let mut b = [0u8; 2];
        self.config_read(off, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a 16-bit config register.
    fn config_write16(&self, off: u64, val: u16) -> Result<(), Error> {
        self.config_write(off, &val.to_le_bytes())
    }

    /// Whether bus mastering is on, as the command register reads now.
    fn bus_master(&self) -> Result<bool, Error> {
        Ok(self.config_read16(CONFIG_COMMAND)? & COMMAND_BUS_MASTER != 0)
    }

    /// Turns DMA (bus mastering) on or off, with memory decoding on so the registers can
    /// be reached either way; INTx stays masked since zcnic polls.
    fn set_bus_master(&self, on: bool) -> Result<(), Error> {
        let mut cmd = self.config_read16(CONFIG_COMMAND)? | COMMAND_INTX_DISABLE | COMMAND_MEMORY;
        if on {
            cmd |= COMMAND_BUS_MASTER;
        } else {
            cmd &= !COMMAND_BUS_MASTER;
        }
        self.config_write16(CONFIG_COMMAND, cmd)
    }
}

/// Turns `dev`'s bus mastering off and reads it back: true only when the device can no
/// longer start DMA (a port may then free the memory it gave the device).
pub(crate) fn stop_bus_master(dev: &dyn PciDevice) -> bool {
    match dev.set_bus_master(false).and_then(|()| dev.bus_master()) {
        Ok(on) => !on,
        Err(e) => {
            log::warn!("{e}");
            false
        }
    }
}

/// How zcnic reaches a device: which kernel stub driver holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// vfio-pci: DMA goes through the IOMMU, the device sees only zcnic's memory.
    Vfio,
    /// uio_pci_generic: no IOMMU, physical addresses; the device can DMA anywhere.
    Uio,
}

impl Mode {
    /// The kernel driver of this mode.
    pub fn driver(self) -> &'static str {
        match self {
            Mode::Vfio => "vfio-pci",
            Mode::Uio => "uio_pci_generic",
        }
    }

    /// Short name, as `zcnic list` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Vfio => "vfio",
            Mode::Uio => "uio",
        }
    }

    /// The mode of a kernel driver name, if it is one of zcnic's.
    pub fn of_driver(driver: &str) -> Option<Self> {
        [Mode::Vfio, Mode::Uio]
            .into_iter()
            .find(|m| m.driver() == driver)
    }

    /// The mode the device is in now, if it is bound to vfio-pci or uio_pci_generic.
    pub fn bound(info: &DeviceInfo) -> Option<Self> {
        info.driver.as_deref().and_then(Self::of_driver)
    }

    /// The mode `zcnic bind` picks: VFIO when the device has an IOMMU group, uio otherwise.
    pub fn preferred(info: &DeviceInfo) -> Self {
        if info.iommu_group.is_some() {
            Mode::Vfio
        } else {
            Mode::Uio
        }
    }
}

/// Opens `addr` through the platform it is bound to: vfio-pci → VFIO, uio_pci_generic →
/// uio (after one line on stderr saying the device can reach all of memory).
pub(crate) fn open_device(addr: &PciAddr) -> Result<Box<dyn PciDevice>, Error> {
    let info = DeviceInfo::read(addr)?;
    match Mode::bound(&info) {
        Some(Mode::Vfio) => Ok(Box::new(VfioDevice::open(addr)?)),
        Some(Mode::Uio) => {
            let dev = UioDevice::open(addr)?;
            // Not through `log`: this must be seen whatever the log level.
            eprintln!(
                "zcnic: {addr} is in no-IOMMU mode (uio_pci_generic): the device can DMA into all of memory"
            );
            Ok(Box::new(dev))
        }
        None => Err(Error::NotBound {
            addr: *addr,
            driver: info.driver,
        }),
    }
}

/// The IOVA mode for a device that goes through the IOMMU when one is there (`wanted`).
/// Without an IOMMU there is only one: physical addresses.
pub fn iova_mode(dev: &dyn PciDevice, wanted: IovaMode) -> IovaMode {
    if dev.iommu() {
        wanted
    } else {
        IovaMode::Physical
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(driver: Option<&str>, group: Option<u32>) -> DeviceInfo {
        DeviceInfo {
            addr: "0000:00:02.0".parse().unwrap(),
            vendor: 0x8086,
            device: 0x100e,
            class: 0x020000,
            driver: driver.map(String::from),
            iommu_group: group,
        }
    }

    #[test]
    fn mode_follows_the_binding_then_the_iommu_group() {
        assert_eq!(Mode::bound(&info(Some("vfio-pci"), None)), Some(Mode::Vfio));
        assert_eq!(
            Mode::bound(&info(Some("uio_pci_generic"), Some(3))),
            Some(Mode::Uio)
        );
        assert_eq!(Mode::bound(&info(Some("e1000"), Some(3))), None);
        assert_eq!(Mode::preferred(&info(None, Some(3))), Mode::Vfio);
        assert_eq!(Mode::preferred(&info(Some("e1000"), None)), Mode::Uio);
        assert_eq!(Mode::of_driver("uio_pci_generic"), Some(Mode::Uio));
        assert_eq!(Mode::of_driver("igb_uio"), None);
    }
}
