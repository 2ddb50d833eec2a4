//! igb receive interrupts: an MSI-X vector per receive queue (82576 datasheet §7.3,
//! registers §8.8), so each queue's worker sleeps on its own descriptor; without MSI-X,
//! one line for a one-queue port (below).
//!
//! At open, when the platform routes MSI-X: GPIE in multiple-vector mode, IVAR maps
//! receive queue `q` to vector `q`, EIAC auto-clears each vector's EICR bit as its message
//! goes, and every vector stays masked (EIMC): polling never costs an interrupt. Transmit
//! queues get no vector. When the platform routed one vector more than there are receive
//! queues, that last one takes the other causes (IVAR_MISC, §7.3.1.2): IMS enables ICR.LSC
//! only, and its EIMS bit stays set, so a link change sends it
//! ([`IgbPort::link_interrupt`]); `link_event` reads ICR (clearing LSC) as before.
//!
//! To sleep, one queue: EICR's bit is cleared (a cause latched while polling must not fire
//! the moment it is unmasked), the eventfd drained, EIMS sets the bit, a full barrier, then
//! the ring is looked at again. A write-back after the EICR clear latches the bit, and the
//! device sends the message when EIMS and EICR share it, whichever came first; one before
//! it is seen by the re-check. Waking: EIMC masks the vector again and EICR is cleared.
//! Each queue writes only its own bit of these write-1 registers: no lock between queues.
//!
//! **One line: MSI or INTx**, for a port the platform gives no MSI-X (uio_pci_generic
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

use super::port::{Igb, IgbPort, IgbQueues};
use super::regs;
use super::rx::IgbRxQueue;
use crate::irq::{EventFd, RxIrq};
use crate::mmio::{Bar, Doorbell};
use crate::pci::PciAddr;
use crate::platform::PciDevice;
use crate::Error;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{fence, Ordering};

/// One receive queue's vector: its eventfd and its bit in the extended registers.
pub(crate) struct QueueIrq {
    irq: RxIrq,
    bit: u32,
    addr: PciAddr,
    eims: Doorbell,
    eimc: Doorbell,
    eicr: Doorbell,
}

impl std::fmt::Debug for QueueIrq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueueIrq({:#x})", self.bit)
    }
}

/// Puts the device in MSI-X mode with receive queue `q` on vector `q`, every vector
/// masked, and hands each queue its eventfd (`events[q]`); queues beyond the vectors
/// routed keep none. An event beyond the queues becomes the other-cause (link) vector,
/// returned.
pub(crate) fn route<'q>(
    bar: &impl Bar,
    addr: PciAddr,
    queues: impl ExactSizeIterator<Item = &'q mut IgbRxQueue>,
    mut events: Vec<EventFd>,
) -> Option<EventFd> {
    let link = (events.len() > queues.len()).then(|| {
        let v = queues.len() as u32;
        (v, events.remove(queues.len()))
    });
    let mut bits = 0;
    bar.write32(regs::EIMC, u32::MAX);
    bar.write32(
        regs::GPIE,
        regs::GPIE_MSIX_MODE | regs::GPIE_PBA_SUPPORT | regs::GPIE_NSICR,
    );
    for (q, (rx, event)) in queues.zip(events).enumerate() {
        let q = q as u32;
        bits |= 1 << q;
        let ivar = regs::IVAR0 + 4 * q;
        bar.write32(ivar, (bar.read32(ivar) & !0xff) | regs::IVAR_VALID | q);
        bar.write32(regs::eitr(q), 0);
        rx.irq = Some(QueueIrq {
            irq: RxIrq::plain(event),
            bit: 1 << q,
            addr,
            eims: bar.doorbell(regs::EIMS),
            eimc: bar.doorbell(regs::EIMC),
            eicr: bar.doorbell(regs::EICR),
        });
    }
    let link_bit = link.as_ref().map_or(0, |(v, _)| 1 << v);
    if let Some((v, _)) = &link {
        let misc = bar.read32(regs::IVAR_MISC) & !0xff00;
        bar.write32(regs::IVAR_MISC, misc | (regs::IVAR_VALID | v) << 8);
        bar.write32(regs::eitr(*v), 0);
    }
    bar.write32(regs::EIAC, bits | link_bit);
    bar.write32(regs::EICR, u32::MAX);
    if link_bit != 0 {
        // Only LSC among the ICR causes reaches the vector; it stays enabled, a link
        // change being rare and its eventfd counting until drained.
        bar.write32(regs::IMS, regs::ICR_LSC);
        bar.write32(regs::EIMS, link_bit);
    }
    link.map(|(_, e)| e)
}

impl<B: Bar> IgbPort<B> {
    /// Gives the queues vectors signalled through `events` (queue `q` on `events[q]`), for
    /// a port not opened through a platform (a test's fake device, which plays MSI-X on
    /// them). A port opened through vfio-pci has its vectors already.
    /// One event more than there are queues becomes the link vector.
    pub fn attach_interrupts(&mut self, queues: &mut IgbQueues, events: Vec<EventFd>) {
        if !self.msix {
            self.link_irq = route(
                &self.bar,
                self.addr,
                queues.iter_mut().map(|(rx, _)| rx),
                events,
            );
        }
    }

    /// The link-change vector (MSI-X, other causes): readable once the link went up or
    /// down; drain it with [`EventFd::drain`] and read
    /// [`link_event`](crate::Port::link_event). `None` without a vector to spare (one-line
    /// mode, or the platform gave only the queues' vectors).
    pub fn link_interrupt(&self) -> Option<&EventFd> {
        self.link_irq.as_ref()
    }
}

impl<B: Bar> Igb<B> {
    /// [`IgbPort::attach_interrupts`] for queue 0.
    pub fn attach_interrupt(&mut self, event: EventFd) {
        if !self.port.msix {
            let port = &self.port;
            route(
                &port.bar,
                port.addr,
                std::iter::once(&mut self.rx),
                vec![event],
            );
        }
    }

    /// The port's link-change vector (see [`IgbPort::link_interrupt`]).
    pub fn link_interrupt(&self) -> Option<&EventFd> {
        self.port.link_interrupt()
    }
}

impl IgbRxQueue {
    fn irq(&self) -> Result<&QueueIrq, Error> {
        self.irq.as_ref().ok_or_else(|| {
            Error::Io(format!(
                "igb queue {}: no receive interrupt (the platform routed no MSI-X vector for it); poll instead",
                self.queue
            ))
        })
    }

    pub(crate) fn irq_fd(&self) -> Result<BorrowedFd<'_>, Error> {
        self.irq().map(|i| i.irq.fd())
    }

    /// Clear, drain, unmask, re-check; true when a frame already waits (masked again).
    pub(crate) fn arm(&mut self) -> Result<bool, Error> {
        let irq = self.irq()?;
        irq.eicr.write(irq.bit);
        irq.irq.rearm(irq.addr, None)?;
        irq.eims.write(irq.bit);
        // SeqCst: the descriptor is read only after the EICR clear and the EIMS write. A
        // write-back this read misses came after the clear, so its cause is latched and,
        // with the vector unmasked whenever the write lands, sends the message.
        fence(Ordering::SeqCst);
        if self.pending() {
            self.disarm()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether a frame waits in the ring (or the ring is gone: nothing to sleep for).
    pub(crate) fn pending(&self) -> bool {
        self.ring.as_ref().is_none_or(|r| r.ready())
    }

    /// Masks the vector and clears its cause.
    pub(crate) fn disarm(&mut self) -> Result<(), Error> {
        let irq = self.irq()?;
        irq.eimc.write(irq.bit);
        irq.eicr.write(irq.bit);
        Ok(())
    }
}

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
