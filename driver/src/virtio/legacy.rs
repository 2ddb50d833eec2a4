//! The legacy virtio PCI transport (virtio 1.1 §4.1.4.8): registers in I/O-port BAR0,
//! reached through the platform, and the device's INTx, the only interrupt zcnic uses
//! on it (MSI-X on would move the device configuration, see `reg::CONFIG`).

use super::intx::Intx;
use super::transport::{Notifier, Transport};
use crate::pci::PciAddr;
use crate::platform::PciDevice;
use std::sync::Arc;

/// Legacy register offsets in the I/O BAR (virtio 1.1 §4.1.4.8).
pub(super) mod reg {
    pub const DEVICE_FEATURES: u64 = 0x00;
    pub const DRIVER_FEATURES: u64 = 0x04;
    pub const QUEUE_ADDRESS: u64 = 0x08;
    pub const QUEUE_SIZE: u64 = 0x0C;
    pub const QUEUE_SELECT: u64 = 0x0E;
    pub const QUEUE_NOTIFY: u64 = 0x10;
    pub const DEVICE_STATUS: u64 = 0x12;
    /// ISR status: bit 0 a queue interrupt, bit 1 a configuration change; reading it
    /// clears it and deasserts INTx (virtio 1.1 §4.1.4.5).
    pub const ISR: u64 = 0x13;
    /// Device configuration, with MSI-X off (the legacy transport never turns it on).
    pub const CONFIG: u64 = 0x14;
    /// The queue address register takes a page frame number of this page size.
    pub const PAGE: u64 = 4096;
}

/// The legacy transport: registers in I/O-port BAR0, reached through the platform (VFIO
/// region reads and writes, a system call each; the datapath only uses the notify write,
/// once per burst and only when the device asks for it).
pub struct Legacy {
    dev: Arc<dyn PciDevice>,
    addr: PciAddr,
}

impl std::fmt::Debug for Legacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Legacy({})", self.addr)
    }
}

impl Legacy {
    /// The legacy interface of `dev` (BAR0 must be its I/O-port BAR).
    pub fn new(dev: Arc<dyn PciDevice>) -> Self {
        let addr = dev.addr();
        Self { dev, addr }
    }

    fn read<const N: usize>(&self, off: u64) -> [u8; N] {
        let mut b = [0xffu8; N];
        if let Err(e) = self.dev.bar_read(0, off, &mut b) {
            log::warn!("{e}");
        }
        b
    }

    fn write(&self, off: u64, b: &[u8]) {
        if let Err(e) = self.dev.bar_write(0, off, b) {
            log::warn!("{e}");
        }
    }
}

impl Transport for Legacy {
    fn legacy(&self) -> bool {
        true
    }

    fn status(&self) -> u8 {
        self.read::<1>(reg::DEVICE_STATUS)[0]
    }

    fn set_status(&self, s: u8) {
        self.write(reg::DEVICE_STATUS, &[s]);
    }

    fn device_features(&self) -> u64 {
        u32::from_le_bytes(self.read::<4>(reg::DEVICE_FEATURES)).into()
    }

    fn set_driver_features(&self, f: u64) {
        self.write(reg::DRIVER_FEATURES, &(f as u32).to_le_bytes());
    }

    fn queue_max(&self, q: u16) -> u16 {
        self.write(reg::QUEUE_SELECT, &q.to_le_bytes());
        u16::from_le_bytes(self.read::<2>(reg::QUEUE_SIZE))
    }

    fn queue_setup(
        &mut self,
        q: u16,
        size: u16,
        desc: u64,
        _driver: u64,
        _device: u64,
    ) -> Result<(), String> {
        let max = self.queue_max(q);
        if size != max {
            return Err(format!(
                "legacy queue {q} has the fixed size {max}, not {size}"
            ));
        }
        let pfn = desc / reg::PAGE;
        if !desc.is_multiple_of(reg::PAGE) || pfn > u64::from(u32::MAX) {
            return Err(format!(
                "legacy queue {q} at {desc:#x}: needs a page-aligned address below 16 TiB"
            ));
        }
        self.write(reg::QUEUE_ADDRESS, &(pfn as u32).to_le_bytes());
        Ok(())
    }

    fn notifier(&self, q: u16) -> Notifier {
        Notifier::io(q, Arc::downgrade(&self.dev))
    }

    fn config8(&self, off: u32) -> u8 {
        self.read::<1>(reg::CONFIG + u64::from(off))[0]
    }

    /// INTx through the platform (VFIO or uio_pci_generic), acknowledged by reading ISR at
    /// `reg::ISR`; none when the platform has no line for it.
    fn take_intx(&mut self) -> Option<Intx> {
        match Intx::io(&self.dev, reg::ISR) {
            Ok(intx) => Some(intx),
            Err(e) => {
                log::debug!("{e}; the port polls");
                None
            }
        }
    }
}
