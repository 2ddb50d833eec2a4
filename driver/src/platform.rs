//! How a driver reaches its PCI function: config space, BARs, DMA memory. VFIO implements it
//! now; uio (no IOMMU) will be a second implementation behind the same trait.

use crate::mmio::MmioBar;
use crate::pci::{
    PciAddr, COMMAND_BUS_MASTER, COMMAND_INTX_DISABLE, COMMAND_MEMORY, CONFIG_COMMAND,
};
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
pub trait PciDevice: Debug {
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

    /// Turns DMA (bus mastering) and memory decoding on or off; INTx stays masked since
    /// zcnic polls.
    fn set_bus_master(&self, on: bool) -> Result<(), Error> {
        let mut cmd = self.config_read16(CONFIG_COMMAND)? | COMMAND_INTX_DISABLE;
        if on {
            cmd |= COMMAND_BUS_MASTER | COMMAND_MEMORY;
        } else {
            cmd &= !COMMAND_BUS_MASTER;
        }
        self.config_write16(CONFIG_COMMAND, cmd)
    }
}
