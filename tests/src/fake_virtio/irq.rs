//! Used buffer notifications and MSI-X as the fake device plays them (virtio 1.1 §2.6.7.2,
//! §2.7.10, §4.1.5.1.2): after writing used entries, a full barrier, then the driver's
//! suppression field decides; a notification goes to the MSI-X table entry the queue's
//! `queue_msix_vector` names (none for NO_VECTOR), whose eventfd the test gave the
//! driver's transport. A configuration change goes to `msix_config`'s entry.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use zcnic::irq::EventFd;
use zcnic_descriptors::virtio::{need_event, RING_EVENT_FLAGS_DISABLE, VIRTQ_AVAIL_F_NO_INTERRUPT};

/// VIRTIO_MSI_NO_VECTOR.
pub const NO_VECTOR: u16 = 0xffff;

/// The device's MSI-X table: the signalling end of each entry's eventfd, and how many
/// notifications each queue sent.
#[derive(Debug, Default)]
pub(super) struct Msix {
    entries: Vec<EventFd>,
    pub(super) sent: [AtomicU64; super::MAX_QUEUES],
}

impl Msix {
    /// `n` table entries; the driver's ends, entry `i` at index `i`.
    pub(super) fn table(&mut self, n: usize) -> Vec<EventFd> {
        let driver: Vec<EventFd> = (0..n).map(|_| EventFd::new().expect("eventfd")).collect();
        self.entries = driver.iter().map(|e| e.try_clone().expect("dup")).collect();
        driver
    }

    /// Raises entry `vector` (nothing for NO_VECTOR or an entry the table lacks).
    pub(super) fn raise(&self, vector: u16) {
        if let Some(e) = self.entries.get(usize::from(vector)) {
            e.signal().expect("eventfd write");
        }
    }

    /// Queue `q` returned buffers: notify if the driver asks for it (`wants`).
    pub(super) fn notify(&self, q: usize, vector: u16, wants: bool) {
        if wants && vector != NO_VECTOR {
            self.sent[q].fetch_add(1, Ordering::SeqCst);
            self.raise(vector);
        }
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
