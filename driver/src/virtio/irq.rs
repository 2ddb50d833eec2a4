//! virtio-net interrupts: an MSI-X vector per receive queue and one for configuration
//! changes (virtio 1.1 §4.1.4.3 `queue_msix_vector`, `msix_config`; §4.1.5.1.2), and the
//! used buffer notifications a sleeping receive queue arms (§2.6.7, §2.7.10).
//!
//! Vectors are routed when the port opens (MSI-X cannot grow on older kernels once on):
//! table entry 0 for configuration changes (link), entry `1 + k` for receive queue `k`;
//! transmit and control queues get `NO_VECTOR`. Each receive queue owns its eventfd, so
//! each worker thread of a multi-queue port sleeps on its own. The port turns MSI-X off at
//! the platform (VFIO SET_IRQS, count 0) right after the device reset, before any ring
//! memory is freed.
//!
//! A queue polls with notifications suppressed (`avail.flags` NO_INTERRUPT, or
//! `used_event` one behind; packed DISABLE), so the burst calls never cost an interrupt.
//! To sleep: forget earlier signals, arm the ring, full barrier, look at the ring again
//! ([`Virtqueue::enable_notify`](zcnic_descriptors::virtio::Virtqueue::enable_notify));
//! on waking, suppress again. No system call but the eventfd's drain; MSI-X is
//! edge-triggered, nothing to unmask. Without MSI-X a one-pair port sleeps on INTx
//! instead, legacy or modern, with the ISR read and the unmask of `legacy.rs` around the
//! same round.

use super::queue::QueueKind;
use super::rxtx::VirtioRxQueue;
use super::transport::Transport;
use crate::irq::{EventFd, RxIrq};
use crate::Error;
use std::os::fd::BorrowedFd;

/// VIRTIO_MSI_NO_VECTOR: a queue or the configuration without a vector (§4.1.5.1.2).
pub(super) const NO_VECTOR: u16 = 0xffff;

/// The MSI-X vectors a port was given, handed out as the queues are set up.
pub(super) struct Vectors(Vec<Option<EventFd>>);

impl Vectors {
    /// Takes what the transport was given (nothing: every queue polls only).
    pub(super) fn take(transport: &mut dyn Transport) -> Self {
        Self(transport.take_vectors().into_iter().map(Some).collect())
    }

    /// Whether MSI-X is on at the platform (and must be turned off at close).
    pub(super) fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Before queue `q` is set up: receive queue `k` (index `2k`, `k < pairs`) gets entry
    /// `1 + k` and its eventfd is returned when the device kept it; every other queue gets
    /// NO_VECTOR. Nothing is written when there are no vectors.
    pub(super) fn route_queue(&mut self, t: &dyn Transport, q: u16, pairs: u16) -> Option<EventFd> {
        if !self.any() {
            return None;
        }
        let entry = (q.is_multiple_of(2) && q / 2 < pairs)
            .then(|| 1 + q / 2)
            .filter(|&e| usize::from(e) < self.0.len());
        let Some(entry) = entry else {
            t.set_queue_vector(q, NO_VECTOR);
            return None;
        };
        if t.set_queue_vector(q, entry) {
            self.0[usize::from(entry)].take()
        } else {
            log::debug!("virtio queue {q}: the device refused MSI-X entry {entry}");
            None
        }
    }

    /// Entry 0 for configuration changes, when the device keeps it.
    pub(super) fn route_config(&mut self, t: &dyn Transport) -> Option<EventFd> {
        (self.any() && t.set_config_vector(0))
            .then(|| self.0[0].take())
            .flatten()
    }
}

/// Why a queue has no interrupt, for [`Error::NoInterrupt`].
pub(super) const NO_VECTOR_WHY: &str =
    "no MSI-X vector for this queue (uio_pci_generic, a legacy device, or too few vectors), and INTx serves only a port of one queue pair (a modern device's, through its ISR capability)";

impl<Q: QueueKind> VirtioRxQueue<Q> {
    /// Gives this queue its interrupt on `event`, which the device side signals: for a
    /// queue not opened through a platform (a test's fake device). A queue with an MSI-X
    /// vector keeps it.
    pub fn attach_interrupt(&mut self, event: EventFd) {
        if self.irq.is_none() {
            self.irq = Some(RxIrq::plain(event));
        }
    }

    fn irq(&self) -> Result<&RxIrq, Error> {
        self.irq.as_ref().ok_or_else(|| Error::NoInterrupt {
            addr: self.addr,
            why: NO_VECTOR_WHY.into(),
        })
    }

    pub(super) fn irq_fd(&self) -> Result<BorrowedFd<'_>, Error> {
        self.irq().map(RxIrq::fd)
    }

    /// (With INTx: acknowledge ISR,) drain, (unmask,) arm, re-check; true when a used
    /// entry already waits (disarmed again).
    pub(super) fn arm(&mut self) -> Result<bool, Error> {
        let irq = self.irq()?;
        let dev = self.isr.as_ref().and_then(|isr| {
            isr.ack();
            isr.device()
        });
        irq.rearm(self.addr, dev.as_deref())?;
        let Some(st) = self.st.as_mut() else {
            return Ok(true);
        };
        if st.vq.enable_notify() {
            st.vq.disable_notify();
            return Ok(true);
        }
        Ok(false)
    }

    /// Suppresses used buffer notifications again; with INTx, acknowledges ISR so the
    /// line does not stay asserted while the queue polls.
    pub(super) fn disarm(&mut self) -> Result<(), Error> {
        self.irq()?;
        if let Some(st) = self.st.as_mut() {
            st.vq.disable_notify();
        }
        if let Some(isr) = &self.isr {
            isr.ack();
        }
        Ok(())
    }
}
