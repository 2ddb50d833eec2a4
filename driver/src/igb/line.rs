//! igb on one line: MSI or INTx, for a port the platform gives no MSI-X (uio_pci_generic
//! hands userspace INTx only; a VFIO device whose MSI-X could not be routed), in the
//! 82576's legacy interrupt mode (datasheet §7.3.2: GPIE.Multiple_MSIX clear, causes in
//! ICR, masked by IMS/IMC, as on the 8254x).
//!
//! One line cannot tell queues apart (ICR.RXDW says "a receive descriptor was written
//! back", on any queue), so only the one-queue [`Igb`] sleeps on it; the queues of a
//! multi-queue port without MSI-X poll. The round is the e1000's (`e1000/irq.rs`):
//!
//! 1. ICR is read (through `LinkWatch::read_icr`, which keeps LSC for link events):
//!    causes of frames already polled are cleared and the line drops. GPIE.NSICR makes
//!    every read clear ICR, whether or not an interrupt was asserted (§8.8.11).
//! 2. The descriptor's earlier signals are forgotten; INTx is unmasked at the platform
//!    (vfio-pci and uio_pci_generic mask it each time it fires; MSI is edge-triggered).
//! 3. IMS enables RXDW, RXDMT0 and RXO; a cause latched since step 1 fires at once.
//! 4. A full barrier, then the ring is looked at again: a frame written back before
//!    step 3 is caught here, one after it raises the line.
//!
//! Waking: IMC masks the causes and ICR is read again, which drops the line.

use super::port::{Igb, IgbPort};
use super::regs;
use crate::irq::{EventFd, RxIrq};
use crate::mmio::Bar;
use crate::platform::PciDevice;
use crate::Error;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{fence, Ordering};

/// The causes a sleeping receiver is woken by (§8.8.1).
pub(crate) const RX_CAUSES: u32 = regs::ICR_RXDW | regs::ICR_RXDMT0 | regs::ICR_RXO;

/// The port's one line: its descriptor, and VFIO's index of it for the release at close.
#[derive(Debug)]
pub(crate) struct Line {
    irq: RxIrq,
    index: u32,
}

impl Line {
    /// MSI (one vector) when the platform has it, else INTx; none when neither (a log line
    /// says why).
    pub(crate) fn route(dev: &dyn PciDevice) -> Option<Self> {
        match dev.vectors(crate::irq::MSI, 1) {
            Ok(mut events) if !events.is_empty() => {
                return Some(Self {
                    irq: RxIrq::plain(events.remove(0)),
                    index: crate::irq::MSI,
                })
            }
            Ok(_) => {}
            Err(e) => log::debug!("{e}; trying INTx"),
        }
        match RxIrq::intx(dev) {
            Ok(irq) => Some(Self {
                irq,
                index: crate::irq::INTX,
            }),
            Err(e) => {
                log::debug!("{e}; the port polls only");
                None
            }
        }
    }

    /// Lets go of the line at the platform; before the device closes.
    pub(crate) fn release(&self, dev: &dyn PciDevice) {
        dev.irq_release(self.index);
    }
}

impl<B: Bar> IgbPort<B> {
    /// Legacy interrupt mode: every cause masked, GPIE.NSICR so that each ICR read clears.
    pub(crate) fn legacy_mode(&self) {
        self.bar.write32(regs::IMC, u32::MAX);
        self.bar.write32(regs::GPIE, regs::GPIE_NSICR);
        self.bar.read32(regs::ICR);
    }
}

impl<B: Bar> Igb<B> {
    /// Gives the port one line signalled through `event` (legacy interrupt mode): for a
    /// device not opened through a platform (a test's fake, which raises it while ICR and
    /// IMS share a cause). A port with MSI-X or a line already keeps what it has.
    pub fn attach_line(&mut self, event: EventFd) {
        if !self.port.msix && self.port.line.is_none() {
            self.port.legacy_mode();
            self.port.line = Some(Line {
                irq: RxIrq::plain(event),
                index: crate::irq::MSI,
            });
        }
    }

    /// The line's descriptor, when the port sleeps on one.
    pub(super) fn line_fd(&self) -> Option<BorrowedFd<'_>> {
        self.port.line.as_ref().map(|l| l.irq.fd())
    }

    /// Steps 1–4 of the module's round; true when a frame already waits (disarmed again).
    pub(super) fn arm_line(&mut self) -> Result<bool, Error> {
        let port = &mut self.port;
        let Some(line) = &port.line else {
            return Ok(true);
        };
        port.link.read_icr(&port.bar);
        line.irq.rearm(port.addr, port.device.as_deref())?;
        port.bar.write32(regs::IMS, RX_CAUSES);
        // SeqCst: the descriptor is read only after the ICR read and the IMS write. A
        // write-back this read misses came after ICR was cleared, so RXDW is latched and,
        // with IMS set whenever the write lands, raises the line.
        fence(Ordering::SeqCst);
        if self.rx.pending() {
            self.disarm_line();
            return Ok(true);
        }
        Ok(false)
    }

    /// Masks the receive causes and reads ICR, which drops the line.
    pub(super) fn disarm_line(&mut self) {
        self.port.bar.write32(regs::IMC, RX_CAUSES);
        self.port.link.read_icr(&self.port.bar);
    }
}
