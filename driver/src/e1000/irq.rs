//! e1000 receive interrupt: IMS/IMC/ICR around a sleep (8254x SDM §13.4.17–§13.4.21), on
//! INTx, the only interrupt of the 82540EM (no MSI capability, on silicon and in QEMU).
//!
//! The port runs with every cause masked; only a waiter arms the receive causes, and only
//! for the length of one sleep, so polling never pays for an interrupt. One round:
//!
//! 1. ICR is read (through `LinkWatch::read_icr`, which keeps LSC for link events): causes
//!    of frames already polled are cleared, so they do not wake this sleep for nothing.
//! 2. The platform forgets earlier signals and unmasks the line (VFIO and uio_pci_generic
//!    mask INTx each time it fires).
//! 3. IMS enables RXT0 (a frame written back), RXDMT0 (the ring running short) and RXO
//!    (overrun). A cause latched since step 1 fires at once: the device raises its line
//!    when IMS and ICR share a bit, whichever came first.
//! 4. The ring is looked at again: a frame completed before step 3 is caught here.
//!
//! Waking: IMC masks the causes again and ICR is read, which drops the level-triggered
//! line; the next arm unmasks it at the platform. ITR spaces interrupts at least
//! [`ITR_INTERVAL`] apart, which matters only to a port that sleeps between every frame.

use super::regs;
use super::E1000;
use crate::irq::{EventFd, RxIrq};
use crate::mmio::Bar;
use crate::Error;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{fence, Ordering};

/// The causes a sleeping receiver is woken by.
pub(crate) const RX_CAUSES: u32 = regs::ICR_RXT0 | regs::ICR_RXDMT0 | regs::ICR_RXO;

/// ITR: at least 125 µs between interrupts (8000 a second, Linux e1000's ceiling), in
/// the register's 256 ns units.
pub const ITR_INTERVAL: u32 = 125_000 / 256;

impl<B: Bar> E1000<B> {
    /// Gives the port its receive interrupt on `event`, which the device side signals when
    /// an enabled cause is raised: for a device that is not opened through a platform (a
    /// test's fake, whose thread plays the interrupt). A port opened through vfio-pci or
    /// uio_pci_generic has its INTx already and keeps it.
    pub fn attach_interrupt(&mut self, event: EventFd) {
        if self.irq.is_err() {
            self.irq = Ok(RxIrq::plain(event));
        }
    }

    pub(crate) fn irq(&self) -> Result<&RxIrq, Error> {
        self.irq.as_ref().map_err(|why| Error::NoInterrupt {
            addr: self.addr,
            why: why.clone(),
        })
    }

    pub(crate) fn irq_fd(&self) -> Result<BorrowedFd<'_>, Error> {
        self.irq().map(RxIrq::fd)
    }

    /// Steps 1–4 of the module's round; true when a frame already waits (disarmed again).
    pub(crate) fn arm_rx(&mut self) -> Result<bool, Error> {
        self.irq()?;
        self.link.read_icr(&self.bar);
        self.irq()?.rearm(self.addr, self.device.as_deref())?;
        self.bar.write32(regs::IMS, RX_CAUSES);
        // SeqCst: the descriptor is read only after the ICR read (and the IMS write) above.
        // A frame the read below misses was then written back after ICR was cleared, so its
        // RXT0 is latched and, with IMS set whenever the write lands, raises the line.
        fence(Ordering::SeqCst);
        if self.rx.ready() {
            self.disarm_rx();
            return Ok(true);
        }
        Ok(false)
    }

    /// Masks the receive causes and reads ICR, which drops the interrupt line.
    pub(crate) fn disarm_rx(&mut self) {
        self.bar.write32(regs::IMC, RX_CAUSES);
        self.link.read_icr(&self.bar);
    }

    /// Lets go of the interrupt at the platform; before the device closes.
    pub(crate) fn release_irq(&mut self) {
        if let Ok(irq) = &self.irq {
            irq.release(self.device.as_deref());
        }
    }
}
