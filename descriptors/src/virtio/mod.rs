//! Driver-side virtqueues: the split (virtio 1.1 §2.6) and packed (virtio 1.1 §2.7) ring
//! formats as pure state machines over a [`QueueMemory`].
//!
//! The queues do every access to ring memory in the order the spec requires and issue the
//! fences themselves (see [`Virtqueue`]), so the driver's job is only to program the ring
//! addresses into the device, call [`Virtqueue::add`] / [`Virtqueue::publish`] /
//! [`Virtqueue::pop_used`], and write the notify register when `publish` says so.
//!
//! Everything the device writes is checked before it is used: a bad used entry becomes a
//! [`UsedError`] (an error counter in the driver), never a panic.
//!
//! ```
//! use zcnic_descriptors::virtio::{Buf, QueueMemory, SplitLayout, SplitQueue, VecMemory, Virtqueue};
//!
//! let layout = SplitLayout::new(8, false).unwrap();
//! let mem = VecMemory::new(layout.total_bytes());
//! let mut q = SplitQueue::new(&mem, layout, false);
//! let id = q.add(&[Buf { addr: 0x1000, len: 1514, device_writes: true }]).unwrap();
//! assert!(q.publish()); // the device did not suppress notifications: kick it
//!
//! // Play the device: write used.ring[0] = {id, len} and then used.idx = 1 (§2.6.8).
//! mem.write_u32(layout.used_ring(0), u32::from(id));
//! mem.write_u32(layout.used_ring(0) + 4, 60);
//! mem.write_u16(layout.used_idx(), 1);
//!
//! let used = q.pop_used().unwrap().unwrap();
//! assert_eq!((used.id, used.len), (id, 60));
//! assert_eq!(q.pop_used(), None);
//! assert_eq!(q.free(), 8);
//! ```

use std::fmt;

mod memory;
mod packed;
mod split;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod model;
#[cfg(test)]
mod notify_tests;
#[cfg(test)]
mod packed_tests;
#[cfg(test)]
mod split_tests;

pub use memory::{QueueMemory, VecMemory};
pub use packed::{
    PackedLayout, PackedQueue, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE,
    RING_EVENT_FLAGS_ENABLE, RING_EVENT_WRAP, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED,
};
pub use split::{
    SplitLayout, SplitQueue, LEGACY_QUEUE_ALIGN, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY,
};

/// VIRTQ_DESC_F_NEXT — the buffer continues in another descriptor (virtio 1.1 §2.6.5,
/// §2.7.6).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// VIRTQ_DESC_F_WRITE — the buffer is device write-only (virtio 1.1 §2.6.5, §2.7.3); in a
/// packed used descriptor, the device wrote data and `len` is valid.
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// VIRTQ_DESC_F_INDIRECT — the buffer holds a table of descriptors (virtio 1.1 §2.6.5.3,
/// §2.7.7). Defined for completeness; these queues never set it.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;

/// Largest queue size of either format (virtio 1.1 §2.6 and §2.7: 2^15 entries).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// One buffer of a chain the driver offers: IOVA, length, and whether the device writes it
/// (virtio 1.1 §2.6.13.1, §2.7.21.1). Device-readable buffers must come before
/// device-writable ones in a chain (virtio 1.1 §2.6.4.2, §2.7.17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    /// Address the device uses (IOVA, or physical address without an IOMMU).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes this buffer (VIRTQ_DESC_F_WRITE); otherwise it only reads it.
    pub device_writes: bool,
}

/// What the device reports for a finished chain (virtio 1.1 §2.6.8, §2.7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// The id [`Virtqueue::add`] returned for the chain.
    pub id: u16,
    /// Bytes the device wrote, starting at the first device-writable buffer. Already checked
    /// to fit in the chain's device-writable buffers.
    pub len: u32,
}

/// Why a used entry is refused. Each is a device bug; the driver counts it (one counter per
/// variant) and carries on, never panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedError {
    /// The id is not below the queue size. Split used ids are 32 bits wide (virtio 1.1
    /// §2.6.8); one that does not fit in 16 bits is reported as `u16::MAX`.
    IdOutOfRange {
        /// The id the device wrote.
        id: u16,
    },
    /// The id names no chain the device owns: free, not yet published, already returned,
    /// quarantined, or (split) a descriptor that is not the head of a chain.
    NotInFlight {
        /// The id the device wrote.
        id: u16,
    },
    /// The device claims to have written more than the chain's device-writable buffers
    /// hold. The chain is quarantined: its id and descriptors are not reused until the
    /// queue is rebuilt (after a device reset), because the device may still write to it.
    LenTooLong {
        /// The chain's id.
        id: u16,
        /// The length the device wrote.
        len: u32,
        /// Sum of the chain's device-writable lengths (saturating at `u32::MAX`).
        max: u32,
    },
    /// Split rings: `used.idx` ran ahead of what was made available (virtio 1.1 §2.6.8,
    /// §2.6.13.3). Nothing is consumed.
    IndexJump {
        /// The available index the driver last published.
        avail: u16,
        /// The used index the device wrote.
        used: u16,
    },
}

impl fmt::Display for UsedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IdOutOfRange { id } => write!(f, "used id {id} is beyond the queue size"),
            Self::NotInFlight { id } => {
                write!(f, "used id {id} does not name a chain the device owns")
            }
            Self::LenTooLong { id, len, max } => write!(
                f,
                "used id {id} reports {len} bytes written but its writable buffers hold {max}"
            ),
            Self::IndexJump { avail, used } => write!(
                f,
                "used.idx {used} is ahead of the published avail.idx {avail}"
            ),
        }
    }
}

impl std::error::Error for UsedError {}

/// No room for the chain: fewer free descriptors than buffers, or a chain that can never
/// fit (empty, or longer than the queue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no room in the virtqueue for the chain")
    }
}

impl std::error::Error for Full {}

/// A queue size the ring format does not allow: 0, above 32768, or (split rings) not a
/// power of two (virtio 1.1 §2.6, §2.7.10.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSizeError(pub u16);

impl fmt::Display for QueueSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "virtqueue size {} is not allowed for this ring format",
            self.0
        )
    }
}

impl std::error::Error for QueueSizeError {}

/// Common interface of both ring formats, so the net driver is written once.
///
/// Ordering is handled inside: [`publish`](Virtqueue::publish) issues `fence(Release)`
/// before the store that exposes new chains and `fence(SeqCst)` between that store and the
/// read of the device's notification-suppression field; [`pop_used`](Virtqueue::pop_used)
/// issues `fence(Acquire)` after it sees a used index or flag move and before it reads the
/// entry. The driver needs no fences of its own around these calls; it must only make its
/// notify-register write (an MMIO store) after `publish` returns.
pub trait Virtqueue {
    /// Queue size (number of descriptors).
    fn size(&self) -> u16;
    /// Descriptors available for new chains.
    fn free(&self) -> u16;
    /// Writes a chain (1..=size buffers, device-readable ones first) and returns its id. It
    /// is not visible to the device until [`publish`](Virtqueue::publish). Never allocates.
    fn add(&mut self, chain: &[Buf]) -> Result<u16, Full>;
    /// Makes every chain added since the last publish visible to the device. Returns true
    /// when the device must be notified (kicked): with VIRTIO_F_EVENT_IDX by the device's
    /// event index or offset, otherwise by its "no notify" / DISABLE flag. Returns false
    /// when nothing new was added.
    fn publish(&mut self) -> bool;
    /// Next finished chain, checked: `Some(Ok(used))` and the id becomes free;
    /// `Some(Err(e))` for a bad entry (consumed and skipped, nothing freed); `None` when
    /// nothing is pending.
    fn pop_used(&mut self) -> Option<Result<Used, UsedError>>;
    /// Chains currently owned by the device: published and not yet returned. Chains added
    /// but not yet published count in neither this nor [`free`](Virtqueue::free).
    fn in_flight(&self) -> u16;
    /// Asks the device for a used buffer notification (an interrupt) when it next returns
    /// a chain, then looks at the ring once more: true when a used entry is already
    /// pending, which no notification may announce (call
    /// [`disable_notify`](Virtqueue::disable_notify) and pop it). The order — arm, full
    /// barrier, re-check — is what keeps an entry the device wrote just before the arm
    /// from being slept through: the device writes its entry, then (full barrier) reads
    /// the suppression field, so one side always sees the other (virtio 1.1 §2.6.7.2,
    /// §2.7.10; Linux `virtqueue_enable_cb`). Control path only: the burst calls never arm.
    fn enable_notify(&mut self) -> bool;
    /// Switches used buffer notifications off again (the state a queue is created in).
    fn disable_notify(&mut self);
}

/// Whether moving an index from `old` to `new` passes `event`, i.e. `event` lies in
/// `[old, new)` on the wrapping 16-bit circle: the `vring_need_event` rule of virtio 1.1
/// §2.6.7.2 / §2.6.10.1 ("notify when idx reaches event + 1"), also used for packed event
/// offsets (§2.7.10).
#[inline]
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Where one buffer id stands, from the driver's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdState {
    Free,
    /// Written by `add`, not yet published.
    Added,
    /// Published: the device owns it.
    InDevice,
    /// The device returned it with an impossible length; never reused.
    Quarantined,
}

/// Per-id bookkeeping shared by both ring formats.
#[derive(Clone, Copy, Debug)]
struct IdSlot {
    state: IdState,
    /// Descriptors the chain occupies.
    descs: u16,
    /// Sum of its device-writable lengths, saturating.
    writable: u32,
}

impl IdSlot {
    const FREE: Self = Self {
        state: IdState::Free,
        descs: 0,
        writable: 0,
    };
}

/// Checks a used entry `(id, len)` against the bookkeeping; on success returns the index
/// into `slots`.
fn check_used(slots: &[IdSlot], id: u32, len: u32) -> Result<usize, UsedError> {
    let short = u16::try_from(id).unwrap_or(u16::MAX);
    let idx = match usize::try_from(id) {
        Ok(i) if i < slots.len() => i,
        _ => return Err(UsedError::IdOutOfRange { id: short }),
    };
    let slot = slots[idx];
    if slot.state != IdState::InDevice {
        return Err(UsedError::NotInFlight { id: short });
    }
    if len > slot.writable {
        return Err(UsedError::LenTooLong {
            id: short,
            len,
            max: slot.writable,
        });
    }
    Ok(idx)
}

/// Sum of the device-writable lengths of a chain, saturating at `u32::MAX`.
fn writable_len(chain: &[Buf]) -> u32 {
    chain
        .iter()
        .filter(|b| b.device_writes)
        .fold(0u32, |acc, b| acc.saturating_add(b.len))
}

/// Whether `chain` can be added with `free` descriptors left: not empty, not longer than
/// that. Device-readable buffers must come first (checked in debug builds).
#[inline(always)]
fn check_chain(chain: &[Buf], free: u16) -> Result<(), Full> {
    if chain.is_empty() || chain.len() > usize::from(free) {
        return Err(Full);
    }
    debug_assert!(
        readable_first(chain),
        "device-writable buffers must come last"
    );
    Ok(())
}

/// Device-readable buffers come first (virtio 1.1 §2.6.4.2, §2.7.17).
fn readable_first(chain: &[Buf]) -> bool {
    chain
        .windows(2)
        .all(|w| !w[0].device_writes || w[1].device_writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition `need_event` abbreviates: walk the indices the producer moved over.
    fn need_event_brute(event: u16, new: u16, old: u16) -> bool {
        let mut i = old;
        while i != new {
            if i == event {
                return true;
            }
            i = i.wrapping_add(1);
        }
        false
    }

    #[test]
    fn need_event_small_cases_exhaustive() {
        for old in [0u16, 1, 5, 65530, 65535] {
            for step in 0u16..12 {
                let new = old.wrapping_add(step);
                for back in 0u16..16 {
                    let event = new.wrapping_sub(back).wrapping_add(2);
                    assert_eq!(
                        need_event(event, new, old),
                        need_event_brute(event, new, old),
                        "event {event} new {new} old {old}"
                    );
                }
            }
        }
    }

    #[test]
    fn need_event_spec_examples() {
        // "notify when idx reaches event + 1": moving 0 -> 1 passes event 0.
        assert!(need_event(0, 1, 0));
        assert!(!need_event(1, 1, 0));
        // Across the 16-bit wrap.
        assert!(need_event(65535, 2, 65534));
        assert!(!need_event(2, 2, 65534));
        // Nothing moved: never.
        assert!(!need_event(7, 7, 7));
    }

    #[test]
    fn errors_display() {
        let e = UsedError::LenTooLong {
            id: 3,
            len: 9,
            max: 8,
        };
        assert!(e.to_string().contains("9 bytes"));
        assert!(Full.to_string().contains("no room"));
        assert!(QueueSizeError(3).to_string().contains('3'));
    }

    #[test]
    fn check_used_classifies() {
        let mut slots = [IdSlot::FREE; 4];
        slots[1] = IdSlot {
            state: IdState::InDevice,
            descs: 2,
            writable: 100,
        };
        slots[2] = IdSlot {
            state: IdState::Added,
            descs: 1,
            writable: 0,
        };
        assert_eq!(check_used(&slots, 1, 100), Ok(1));
        assert_eq!(
            check_used(&slots, 1, 101),
            Err(UsedError::LenTooLong {
                id: 1,
                len: 101,
                max: 100
            })
        );
        assert_eq!(
            check_used(&slots, 2, 0),
            Err(UsedError::NotInFlight { id: 2 })
        );
        assert_eq!(
            check_used(&slots, 0, 0),
            Err(UsedError::NotInFlight { id: 0 })
        );
        assert_eq!(
            check_used(&slots, 4, 0),
            Err(UsedError::IdOutOfRange { id: 4 })
        );
        assert_eq!(
            check_used(&slots, 1 << 20, 0),
            Err(UsedError::IdOutOfRange { id: u16::MAX })
        );
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]
        #[test]
        fn need_event_matches_brute_force(event in any::<u16>(), old in any::<u16>(), step in 0u16..=32768) {
            let new = old.wrapping_add(step);
            prop_assert_eq!(need_event(event, new, old), need_event_brute(event, new, old));
        }

        #[test]
        fn writable_len_saturates(lens in prop::collection::vec((any::<u32>(), any::<bool>()), 0..6)) {
            let chain: Vec<Buf> = lens.iter().map(|&(len, w)| Buf { addr: 0, len, device_writes: w }).collect();
            let exact: u64 = lens.iter().filter(|l| l.1).map(|l| u64::from(l.0)).sum();
            prop_assert_eq!(u64::from(writable_len(&chain)), exact.min(u64::from(u32::MAX)));
        }
    }
}
