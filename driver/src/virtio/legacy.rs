//! The legacy virtio PCI transport (virtio 1.1 §4.1.4.8): registers in I/O-port BAR0,
//! reached through the platform, and the device's INTx, the only interrupt zcnic uses
//! on it (MSI-X on would move the device configuration, see `reg::CONFIG`).
//!
//! **INTx** ([`Intx`]): the one interrupt of a port without MSI-X (a legacy device, whose
//! device configuration would move if MSI-X were on; a device under uio_pci_generic, which
//! hands userspace only INTx; a modern device without the MSI-X capability). It is shared
//! by both transports: the legacy one reads ISR in its I/O BAR through the platform, the
//! modern one where its ISR capability (VIRTIO_PCI_CAP_ISR_CFG, virtio 1.1 §4.1.4.5)
//! points in a memory BAR, through a mapped [`Reader8`] the queue owns.
//!
//! With MSI-X off the device reports every notification through the ISR status register
//! (virtio 1.1 §4.1.4.5, §4.1.5.4): bit 0 a used buffer notification of any queue, bit 1 a
//! configuration change, and one level-triggered line raised while ISR is not zero.
//! Reading ISR returns the bits and clears them, which deasserts the line: it is the
//! acknowledgement. The platform masks the line each time it fires (VFIO's automasked
//! INTx, uio_pci_generic's INTx Disable bit), so every arm unmasks it again.
//!
//! One round of a sleeping receive queue, as with MSI-X (`irq.rs`) but with the line's two
//! extra steps:
//!
//! 1. ISR is read: notifications of earlier rounds are acknowledged and the line drops,
//!    so the unmask below does not fire at once for nothing.
//! 2. The descriptor's earlier signals are forgotten and the platform unmasks the line.
//! 3. The ring is armed (used buffer notifications on), a full barrier, the ring is looked
//!    at again: a frame completed before the arm is caught here, one completed after it
//!    sets ISR and raises the line, which the descriptor keeps until read.
//!
//! Waking: notifications are suppressed again and ISR is read once more, so the line does
//! not stay asserted while the port polls.
//!
//! **One line, one queue.** The line cannot tell queues apart, so only a port of one queue
//! pair gets it (its receive queue's [`rx_interrupt_fd`](crate::port::RxQueue::rx_interrupt_fd));
//! the queues of a multi-queue port without MSI-X have no interrupt and poll, because a
//! shared line would let one queue's read of ISR swallow another's notification. A
//! configuration change also sets ISR; the port does not report it
//! ([`VirtioPort::link_interrupt`](super::VirtioPort::link_interrupt) is `None`), and the
//! link is read from the device configuration as before.

use super::transport::{Notifier, Transport};
use crate::irq::{EventFd, RxIrq};
use crate::mmio::Reader8;
use crate::pci::PciAddr;
use crate::platform::PciDevice;
use crate::Error;
use std::sync::{Arc, Weak};

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

/// A device's INTx as a virtio transport hands it to the port
/// ([`Transport::take_intx`](super::Transport::take_intx)): where the line is delivered and
/// how its ISR status is read.
pub struct Intx {
    irq: RxIrq,
    isr: Isr,
}

impl std::fmt::Debug for Intx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intx")
            .field("irq", &self.irq)
            .finish_non_exhaustive()
    }
}

/// How a queue reads the ISR status register from its own thread.
pub(super) enum Isr {
    /// Through the platform, at `off` of I/O BAR0, while the device is open.
    Io { dev: Weak<dyn PciDevice>, off: u64 },
    /// In a memory BAR, where the modern interface's ISR capability points
    /// (`transport.rs`): a mapped byte, read from the queue's thread without a system
    /// call. `dev` is the device to unmask the line of, while it is open (none for a
    /// test's fake, whose line needs no unmask).
    Mmio {
        reg: Reader8,
        dev: Option<Weak<dyn PciDevice>>,
    },
    /// A test device's register.
    Hook(Box<dyn Fn() -> u8 + Send>),
}

impl Intx {
    /// INTx of a device not opened through a platform (a test's fake): the device side
    /// signals `event` when it raises the line, and `isr` reads (and clears) its ISR
    /// status.
    pub fn fake(event: EventFd, isr: impl Fn() -> u8 + Send + 'static) -> Self {
        Self {
            irq: RxIrq::plain(event),
            isr: Isr::Hook(Box::new(isr)),
        }
    }

    /// INTx of `dev` routed to a descriptor by its platform, with ISR at `isr` of its I/O
    /// BAR0 (the legacy interface).
    pub(super) fn io(dev: &Arc<dyn PciDevice>, isr: u64) -> Result<Self, Error> {
        Ok(Self {
            irq: RxIrq::intx(dev.as_ref())?,
            isr: Isr::Io {
                dev: Arc::downgrade(dev),
                off: isr,
            },
        })
    }

    /// INTx of `dev` routed to a descriptor by its platform, with ISR read through `reg`
    /// (the modern interface's ISR capability, in a memory BAR).
    pub(super) fn mmio(dev: &Arc<dyn PciDevice>, reg: Reader8) -> Result<Self, Error> {
        Ok(Self {
            irq: RxIrq::intx(dev.as_ref())?,
            isr: Isr::Mmio {
                reg,
                dev: Some(Arc::downgrade(dev)),
            },
        })
    }

    /// INTx a test's fake device signals on `event`, with ISR read through `reg` of its
    /// BAR, as a real modern device's is.
    pub(super) fn fake_mmio(event: EventFd, reg: Reader8) -> Self {
        Self {
            irq: RxIrq::plain(event),
            isr: Isr::Mmio { reg, dev: None },
        }
    }

    /// The line's descriptor and the ISR reader, for the queue that sleeps on them.
    pub(super) fn split(self) -> (RxIrq, Isr) {
        (self.irq, self.isr)
    }
}

impl Isr {
    /// Reads ISR status, which clears it and deasserts the line; 0 once the device is
    /// closed (or when the read fails, which is logged).
    pub(super) fn ack(&self) -> u8 {
        match self {
            Self::Io { dev, off } => {
                let Some(dev) = dev.upgrade() else {
                    return 0;
                };
                let mut b = [0u8; 1];
                match dev.bar_read(0, *off, &mut b) {
                    Ok(()) => b[0],
                    Err(e) => {
                        log::warn!("{e}");
                        0
                    }
                }
            }
            Self::Mmio { reg, dev: None } => reg.read(),
            Self::Mmio {
                reg,
                dev: Some(dev),
            } => match dev.upgrade() {
                Some(_open) => reg.read(),
                None => 0,
            },
            Self::Hook(read) => read(),
        }
    }

    /// The device behind the line, for the platform's unmask; none for a test device or
    /// once the device is closed.
    pub(super) fn device(&self) -> Option<Arc<dyn PciDevice>> {
        match self {
            Self::Io { dev, .. } | Self::Mmio { dev: Some(dev), .. } => dev.upgrade(),
            Self::Mmio { dev: None, .. } | Self::Hook(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// A fake's ISR reads through the hook, and reading clears it, as the register does.
    #[test]
    fn a_fake_isr_is_read_and_cleared_through_its_hook() {
        let reg = Arc::new(AtomicU8::new(3));
        let r = Arc::clone(&reg);
        let (irq, isr) =
            Intx::fake(EventFd::new().unwrap(), move || r.swap(0, Ordering::SeqCst)).split();
        assert_eq!(isr.ack(), 3);
        assert_eq!(isr.ack(), 0);
        assert!(isr.device().is_none());
        drop(irq);
    }
}
