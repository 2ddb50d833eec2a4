//! Used buffer notifications and MSI-X as the fake device plays them (virtio 1.1 §2.6.7.2,
//! §2.7.10, §4.1.5.1.2): after writing used entries, a full barrier, then the driver's
//! suppression field decides; a notification goes to the MSI-X table entry the queue's
//! `queue_msix_vector` names (none for NO_VECTOR), whose eventfd the test gave the
//! driver's transport. A configuration change goes to `msix_config`'s entry.
//!
//! Without a vector and with INTx given to the driver ([`Msix::intx`]), a notification
//! sets the ISR status bit instead (bit 0 for a queue, bit 1 for a configuration change,
//! virtio 1.1 §4.1.4.5) and raises the line, whose eventfd plays the platform's delivery;
//! the driver's read of ISR clears it. ISR is a clear-on-read byte of the BAR at
//! [`ISR_CFG`], where QEMU's ISR capability points: the driver reads it there through the
//! modern transport ([`FakeVirtio::isr_transport`]), or through a hook standing in for the
//! legacy I/O register ([`FakeVirtio::intx`]).

use super::{FakeVirtio, Modern, VirtioBar};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use zcnic::irq::EventFd;
use zcnic::{Bar, FakeBar};
use zcnic_descriptors::virtio::{need_event, RING_EVENT_FLAGS_DISABLE, VIRTQ_AVAIL_F_NO_INTERRUPT};

/// VIRTIO_MSI_NO_VECTOR.
pub const NO_VECTOR: u16 = 0xffff;

/// The ISR status byte in the BAR (virtio 1.1 §4.1.4.5), where QEMU's ISR capability
/// points (`VIRTIO_PCI_CAP_ISR_CFG`, offset 0x1000 of the BAR).
pub const ISR_CFG: u32 = 0x1000;

/// The device's MSI-X table: the signalling end of each entry's eventfd, and how many
/// notifications each queue sent.
#[derive(Debug)]
pub(super) struct Msix {
    entries: Vec<EventFd>,
    pub(super) sent: [AtomicU64; super::MAX_QUEUES],
    /// The device's end of its INTx line, when the test gave the driver one.
    line: Option<EventFd>,
    /// The BAR whose ISR status byte ([`ISR_CFG`]) holds what the line was raised for
    /// since the driver last read it.
    regs: FakeBar,
}

/// ISR status bits (virtio 1.1 §4.1.4.5).
pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

impl Msix {
    /// No table and no line yet; ISR status at [`ISR_CFG`] of `regs`, clear on read.
    pub(super) fn new(regs: FakeBar) -> Self {
        regs.clear_on_read(ISR_CFG);
        Self {
            entries: Vec::new(),
            sent: Default::default(),
            line: None,
            regs,
        }
    }

    /// `n` table entries; the driver's ends, entry `i` at index `i`.
    pub(super) fn table(&mut self, n: usize) -> Vec<EventFd> {
        let driver: Vec<EventFd> = (0..n).map(|_| EventFd::new().expect("eventfd")).collect();
        self.entries = driver.iter().map(|e| e.try_clone().expect("dup")).collect();
        driver
    }

    /// The driver's end of an INTx line.
    fn line(&mut self) -> EventFd {
        let driver = EventFd::new().expect("eventfd");
        self.line = Some(driver.try_clone().expect("dup"));
        driver
    }

    /// The driver's end of an INTx line and a reader of ISR status (which clears it),
    /// for `zcnic::virtio::Intx::fake`.
    fn intx(&mut self) -> (EventFd, impl Fn() -> u8 + Send + 'static) {
        let regs = self.regs.clone();
        (self.line(), move || regs.read8(ISR_CFG))
    }

    /// Raises entry `vector`; for NO_VECTOR, sets `cause` in ISR and raises INTx when the
    /// driver has the line. True when something was raised.
    pub(super) fn raise(&self, vector: u16, cause: u8) -> bool {
        if let Some(e) = self.entries.get(usize::from(vector)) {
            e.signal().expect("eventfd write");
            return true;
        }
        match (&self.line, vector) {
            (Some(line), NO_VECTOR) => {
                self.regs.raise(ISR_CFG, cause.into());
                line.signal().expect("eventfd write");
                true
            }
            _ => false,
        }
    }

    /// Queue `q` returned buffers: notify if the driver asks for it (`wants`).
    pub(super) fn notify(&self, q: usize, vector: u16, wants: bool) {
        if wants && self.raise(vector, ISR_QUEUE) {
            self.sent[q].fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl FakeVirtio {
    /// An MSI-X table of `n` entries: the driver's ends of their eventfds, entry `i` at
    /// index `i`, for `Modern::with_vectors`. The device raises the entry each queue's
    /// `queue_msix_vector` names when the driver asked for a notification, and
    /// `msix_config`'s on a link change.
    pub fn msix(&self, n: usize) -> Vec<EventFd> {
        self.shared.control(|core, _| core.msix.table(n))
    }

    /// The device's INTx, for `Modern::with_intx` (or a [`super::LegacyView`] of it) on a
    /// port given no vectors: a notification without a vector sets ISR and raises the
    /// line; ISR is read through a hook, as the legacy I/O register is.
    pub fn intx(&self) -> zcnic::virtio::Intx {
        let (line, isr) = self.shared.control(|core, _| core.msix.intx());
        zcnic::virtio::Intx::fake(line, isr)
    }

    /// The modern transport with the device's INTx line alone: the driver acknowledges it
    /// by reading ISR through its ISR capability's window ([`ISR_CFG`]), as it does a
    /// real modern device's under uio_pci_generic.
    pub fn isr_transport(&self) -> Modern<VirtioBar> {
        let line = self.shared.control(|core, _| core.msix.line());
        self.transport().with_isr_intx(line, ISR_CFG)
    }

    /// ISR status as the device holds it now, without the read that would clear it.
    pub fn isr(&self) -> u8 {
        self.shared
            .control(|core, _| core.msix.regs.peek32(ISR_CFG) as u8)
    }

    /// Used buffer notifications queue `q` sent so far (MSI-X or INTx).
    pub fn interrupts(&self, q: usize) -> u64 {
        self.shared
            .control(|core, _| core.msix.sent[q].load(Ordering::SeqCst))
    }
}

/// Whether a split ring's driver wants a notification after `used.idx` went from `old` to
/// `new`: `avail` is its Driver Area, `size` its length. Reads after a full barrier, which
/// pairs with the driver's between its arm and its re-check.
pub(super) fn split_wants(
    r16: impl Fn(u64) -> u16,
    avail: u64,
    size: u16,
    event_idx: bool,
    old: u16,
    new: u16,
) -> bool {
    fence(Ordering::SeqCst);
    if event_idx {
        let used_event = r16(avail + 4 + 2 * u64::from(size));
        need_event(used_event, new, old)
    } else {
        r16(avail) & VIRTQ_AVAIL_F_NO_INTERRUPT == 0
    }
}

/// Whether a packed ring's driver wants one: its event flags (at `driver_event + 2`) are
/// anything but DISABLE (zcnic never asks for DESC events; counted as wanting if it did).
pub(super) fn packed_wants(r16: impl Fn(u64) -> u16, driver_event: u64) -> bool {
    fence(Ordering::SeqCst);
    r16(driver_event + 2) & 3 != RING_EVENT_FLAGS_DISABLE
}
