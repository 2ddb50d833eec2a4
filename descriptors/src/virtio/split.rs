//! Split virtqueues (virtio 1.1 §2.6): descriptor table, available ring and used ring in
//! one contiguous memory area.
//!
//! The driver keeps its own shadow of everything it wrote (descriptor `next` links, chain
//! lengths, indices) and reads only the used ring from memory, so a device scribbling over
//! the descriptor table or available ring cannot corrupt the driver's bookkeeping.

use std::fmt;
use std::sync::atomic::{fence, Ordering};

use super::{
    check_chain, check_used, Buf, Full, IdSlot, IdState, QueueMemory, QueueSizeError, Used,
    UsedError, Virtqueue, MAX_QUEUE_SIZE, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};

/// VIRTQ_AVAIL_F_NO_INTERRUPT — `avail.flags` bit 0: the driver does not want used buffer
/// notifications (virtio 1.1 §2.6.6, §2.6.7.1). Set when VIRTIO_F_EVENT_IDX is off: we poll.
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// VIRTQ_USED_F_NO_NOTIFY — `used.flags` bit 0: the device does not want available buffer
/// notifications (virtio 1.1 §2.6.8, §2.6.10). Ignored when VIRTIO_F_EVENT_IDX is on.
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;
/// Queue Align of the legacy interface: the used ring starts on this boundary and the
/// whole queue is one contiguous, aligned area (virtio 1.1 §2.6.2).
pub const LEGACY_QUEUE_ALIGN: usize = 4096;
/// Where a modern queue's used ring starts: a page boundary, like the legacy layout.
const MODERN_USED_ALIGN: usize = 4096;

/// Size of `struct virtq_desc` (virtio 1.1 §2.6.5).
const DESC_SIZE: usize = 16;
/// Size of `struct virtq_used_elem` (virtio 1.1 §2.6.8).
const USED_ELEM_SIZE: usize = 8;
/// Descriptor field offsets: `le64 addr; le32 len; le16 flags; le16 next` (§2.6.5).
const DESC_LEN: usize = 8;
const DESC_FLAGS: usize = 12;
const DESC_NEXT: usize = 14;

const fn align_up(x: usize, align: usize) -> usize {
    (x + align - 1) & !(align - 1)
}

/// Byte offsets of the three parts of a split virtqueue within one contiguous area
/// (virtio 1.1 §2.6, alignment table; legacy layout §2.6.2).
///
/// Modern devices take three addresses (`base + desc_offset()`, `base + avail_offset()`,
/// `base + used_offset()`); legacy devices take one page frame number, `base / 4096`, and
/// find the parts at these same offsets. `base` must be aligned to
/// [`base_align`](SplitLayout::base_align).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitLayout {
    size: u16,
    legacy: bool,
    avail: usize,
    used: usize,
    total: usize,
}

impl SplitLayout {
    /// Layout for a queue of `size` entries; `size` must be a power of two in 1..=32768
    /// (virtio 1.1 §2.6). With `legacy`, the used ring starts at the next 4096-byte
    /// boundary after the available ring and the total is rounded as the spec's
    /// `virtq_size()` does (§2.6.2).
    pub const fn new(size: u16, legacy: bool) -> Result<Self, QueueSizeError> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(QueueSizeError(size));
        }
        let n = size as usize;
        let avail = DESC_SIZE * n;
        let avail_end = avail + 6 + 2 * n;
        let used_len = 6 + USED_ELEM_SIZE * n;
        let (used, total) = if legacy {
            let used = align_up(avail_end, LEGACY_QUEUE_ALIGN);
            (used, used + align_up(used_len, LEGACY_QUEUE_ALIGN))
        } else {
            // The spec asks for 4-byte alignment only; a page, as Linux and DPDK use, keeps
            // the device's used.idx writes off the cache line of the driver's avail ring
            // and used_event writes.
            let used = align_up(avail_end, MODERN_USED_ALIGN);
            (used, used + used_len)
        };
        Ok(Self {
            size,
            legacy,
            avail,
            used,
            total,
        })
    }

    /// Queue size (entries).
    pub const fn size(&self) -> u16 {
        self.size
    }
    /// Whether this is the legacy (virtio 0.9.5, §2.6.2) layout.
    pub const fn is_legacy(&self) -> bool {
        self.legacy
    }
    /// Alignment the area's base address needs: 4096 for legacy (§2.6.2), otherwise 16,
    /// the descriptor table's (§2.6).
    pub const fn base_align(&self) -> usize {
        if self.legacy {
            LEGACY_QUEUE_ALIGN
        } else {
            DESC_SIZE
        }
    }
    /// Offset of the descriptor table (Descriptor Area): always 0.
    pub const fn desc_offset(&self) -> usize {
        0
    }
    /// Offset of the available ring (Driver Area), `16 * size`.
    pub const fn avail_offset(&self) -> usize {
        self.avail
    }
    /// Offset of the used ring (Device Area).
    pub const fn used_offset(&self) -> usize {
        self.used
    }
    /// Bytes to allocate for the whole queue.
    pub const fn total_bytes(&self) -> usize {
        self.total
    }

    /// Offset of descriptor `i` (`struct virtq_desc`, §2.6.5).
    pub const fn desc(&self, i: u16) -> usize {
        i as usize * DESC_SIZE
    }
    /// Offset of `avail.flags` (§2.6.6).
    pub const fn avail_flags(&self) -> usize {
        self.avail
    }
    /// Offset of `avail.idx` (§2.6.6).
    pub const fn avail_idx(&self) -> usize {
        self.avail + 2
    }
    /// Offset of `avail.ring[slot]`; `slot` is already reduced modulo the size.
    pub const fn avail_ring(&self, slot: u16) -> usize {
        self.avail + 4 + 2 * slot as usize
    }
    /// Offset of `used_event`, after the available ring (§2.6.6, §2.6.7).
    pub const fn used_event(&self) -> usize {
        self.avail + 4 + 2 * self.size as usize
    }
    /// Offset of `used.flags` (§2.6.8).
    pub const fn used_flags(&self) -> usize {
        self.used
    }
    /// Offset of `used.idx` (§2.6.8).
    pub const fn used_idx(&self) -> usize {
        self.used + 2
    }
    /// Offset of `used.ring[slot]` (`le32 id; le32 len`); `slot` is already reduced.
    pub const fn used_ring(&self, slot: u16) -> usize {
        self.used + 4 + USED_ELEM_SIZE * slot as usize
    }
    /// Offset of `avail_event`, after the used ring (§2.6.8, §2.6.10).
    pub const fn avail_event(&self) -> usize {
        self.used + 4 + USED_ELEM_SIZE * self.size as usize
    }
}

/// Driver side of a split virtqueue (virtio 1.1 §2.6).
///
/// Chain ids are head descriptor indices. Free descriptors are linked through a
/// driver-side shadow of the `next` fields (§2.6.13.1), allocated once here, so the
/// datapath never allocates.
///
/// Notifications: with VIRTIO_F_EVENT_IDX, `avail.flags` stays 0 (§2.6.7.1) and each
/// publish writes `used_event = last_used - 1`. The device only interrupts when `used.idx`
/// passes `used_event`, and it can move at most `size` (≤ 32768) past `last_used` before
/// the next publish refreshes it, so that never happens. Without it, `avail.flags` is
/// VIRTQ_AVAIL_F_NO_INTERRUPT.
pub struct SplitQueue<M: QueueMemory> {
    mem: M,
    layout: SplitLayout,
    event_idx: bool,
    /// Shadow of each descriptor's `next`: free list and chains are linked through it.
    next: Box<[u16]>,
    /// Indexed by head descriptor.
    slots: Box<[IdSlot]>,
    /// Heads added since the last publish (capacity `size`, never grows).
    pending: Vec<u16>,
    free_head: u16,
    num_free: u16,
    /// Next `avail.idx` value, counting unpublished chains.
    avail_idx: u16,
    /// Value last written to `avail.idx`.
    published: u16,
    /// Used entries consumed so far (free-running, like `used.idx`).
    last_used: u16,
    /// `used.idx` as last read and checked: entries up to it are consumed without
    /// reading the index again (one device-memory read per burst, not per entry).
    used_seen: u16,
    in_flight: u16,
    /// `used.idx` value last reported as an [`UsedError::IndexJump`], to report it once.
    jump_seen: Option<u16>,
}

impl<M: QueueMemory> SplitQueue<M> {
    /// A queue over `mem`, which must hold `layout.total_bytes()` bytes. Zeroes the area
    /// and writes the driver's initial fields; program the device with the layout's
    /// addresses afterwards. `event_idx`: VIRTIO_F_EVENT_IDX was negotiated.
    pub fn new(mem: M, layout: SplitLayout, event_idx: bool) -> Self {
        Self::with_start_index(mem, layout, event_idx, 0)
    }

    /// Like [`new`](SplitQueue::new), but both rings start at index `start` instead of 0,
    /// as if `start` chains had already gone through. Writes `used.idx` too, which only a
    /// test device tolerates: for exercising the 16-bit wrap.
    #[doc(hidden)]
    pub fn with_start_index(mem: M, layout: SplitLayout, event_idx: bool, start: u16) -> Self {
        let n = layout.size();
        for off in (0..layout.total_bytes()).step_by(2) {
            mem.write_u16(off, 0);
        }
        let avail_flags = if event_idx {
            0
        } else {
            VIRTQ_AVAIL_F_NO_INTERRUPT
        };
        mem.write_u16(layout.avail_flags(), avail_flags);
        mem.write_u16(layout.avail_idx(), start);
        mem.write_u16(layout.used_idx(), start);
        if event_idx {
            mem.write_u16(layout.used_event(), start.wrapping_sub(1));
        }
        Self {
            mem,
            layout,
            event_idx,
            next: (1..=n).map(|i| i % n).collect(),
            slots: vec![IdSlot::FREE; usize::from(n)].into_boxed_slice(),
            pending: Vec::with_capacity(usize::from(n)),
            free_head: 0,
            num_free: n,
            avail_idx: start,
            published: start,
            last_used: start,
            used_seen: start,
            in_flight: 0,
            jump_seen: None,
        }
    }

    /// The layout this queue was built with.
    pub fn layout(&self) -> &SplitLayout {
        &self.layout
    }

    /// The queue's memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The queue's memory, exclusively (the driver leaks it when a device did not stop).
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    fn slot(&self, idx: u16) -> u16 {
        idx & (self.layout.size() - 1)
    }

    /// Returns the descriptors of the chain headed by `head` to the free list.
    fn free_chain(&mut self, head: u16, descs: u16) {
        let mut tail = head;
        for _ in 1..descs {
            tail = self.next[usize::from(tail)];
        }
        self.next[usize::from(tail)] = self.free_head;
        self.free_head = head;
        self.num_free += descs;
    }
}

impl<M: QueueMemory> Virtqueue for SplitQueue<M> {
    fn size(&self) -> u16 {
        self.layout.size()
    }

    fn free(&self) -> u16 {
        self.num_free
    }

    fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// With EVENT_IDX, `used_event = last_used`: the device interrupts once `used.idx`
    /// moves past the entries consumed (§2.6.7.2); without it, `avail.flags` loses
    /// VIRTQ_AVAIL_F_NO_INTERRUPT (§2.6.7.1). Then the re-check.
    fn enable_notify(&mut self) -> bool {
        if self.event_idx {
            self.mem.write_u16(self.layout.used_event(), self.last_used);
        } else {
            self.mem.write_u16(self.layout.avail_flags(), 0);
        }
        // SeqCst (Linux's virtio_mb in virtqueue_enable_cb): the store above must be
        // visible before used.idx is read below. An entry this read misses was written by a
        // device that reads the suppression field after it, and so sees the arm.
        fence(Ordering::SeqCst);
        self.last_used != self.used_seen
            || self.mem.read_u16(self.layout.used_idx()) != self.last_used
    }

    /// `used_event = last_used - 1`, which `used.idx` never passes before the next publish
    /// refreshes it, or VIRTQ_AVAIL_F_NO_INTERRUPT.
    fn disable_notify(&mut self) {
        if self.event_idx {
            self.mem
                .write_u16(self.layout.used_event(), self.last_used.wrapping_sub(1));
        } else {
            self.mem
                .write_u16(self.layout.avail_flags(), VIRTQ_AVAIL_F_NO_INTERRUPT);
        }
    }

    #[inline(always)]
    fn add(&mut self, chain: &[Buf]) -> Result<u16, Full> {
        check_chain(chain, self.num_free)?;
        let descs = chain.len() as u16; // <= num_free <= 32768
        let head = self.free_head;
        let (mut d, mut writable) = (head, 0u32);
        for (i, buf) in chain.iter().enumerate() {
            let next = self.next[usize::from(d)];
            let last = i + 1 == chain.len();
            let mut flags = if buf.device_writes {
                writable = writable.saturating_add(buf.len);
                VIRTQ_DESC_F_WRITE
            } else {
                0
            };
            if !last {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            // len, flags and next are one little-endian word at DESC_LEN.
            const _: () = assert!(DESC_FLAGS == DESC_LEN + 4 && DESC_NEXT == DESC_LEN + 6);
            let link = if last { 0 } else { next };
            let off = self.layout.desc(d);
            self.mem.write_u64(off, buf.addr);
            self.mem.write_u64(
                off + DESC_LEN,
                u64::from(buf.len) | u64::from(flags) << 32 | u64::from(link) << 48,
            );
            d = next;
        }
        // `d` is now the descriptor after the chain's tail: the new free-list head.
        self.free_head = d;
        self.num_free -= descs;
        self.slots[usize::from(head)] = IdSlot {
            state: IdState::Added,
            descs,
            writable,
        };
        // The ring entry is written now; only the idx store in publish() exposes it
        // (§2.6.13.2).
        let slot = self.slot(self.avail_idx);
        self.mem.write_u16(self.layout.avail_ring(slot), head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.pending.push(head);
        Ok(head)
    }

    fn publish(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        for &head in &self.pending {
            self.slots[usize::from(head)].state = IdState::InDevice;
        }
        self.in_flight += self.pending.len() as u16;
        self.pending.clear();
        let (old, new) = (self.published, self.avail_idx);
        if self.event_idx {
            self.mem
                .write_u16(self.layout.used_event(), self.last_used.wrapping_sub(1));
        }
        // Release: the descriptors and avail.ring entries written by add() must be visible
        // to the device before avail.idx exposes them (§2.6.13.3.1).
        fence(Ordering::Release);
        self.mem.write_u16(self.layout.avail_idx(), new);
        self.published = new;
        // SeqCst (full barrier, Linux's virtio_mb): the avail.idx store must be visible
        // before we read the device's suppression field, or a device that just decided to
        // sleep would miss this batch (§2.6.13.4.1).
        fence(Ordering::SeqCst);
        if self.event_idx {
            let avail_event = self.mem.read_u16(self.layout.avail_event());
            super::need_event(avail_event, new, old)
        } else {
            self.mem.read_u16(self.layout.used_flags()) & VIRTQ_USED_F_NO_NOTIFY == 0
        }
    }

    /// See [`Virtqueue::pop_used`]. On a `used.idx` that claims more entries than were
    /// published, returns [`UsedError::IndexJump`] once, consumes nothing, and then
    /// returns `None` while `used.idx` keeps that value: the queue is stalled and the
    /// driver should reset the device. A later plausible `used.idx` resumes normally.
    #[inline(always)]
    fn pop_used(&mut self) -> Option<Result<Used, UsedError>> {
        if self.last_used == self.used_seen {
            let used_idx = self.mem.read_u16(self.layout.used_idx());
            if used_idx == self.last_used {
                return None;
            }
            let ready = used_idx.wrapping_sub(self.last_used);
            if ready > self.published.wrapping_sub(self.last_used) {
                if self.jump_seen == Some(used_idx) {
                    return None;
                }
                self.jump_seen = Some(used_idx);
                return Some(Err(UsedError::IndexJump {
                    avail: self.published,
                    used: used_idx,
                }));
            }
            self.jump_seen = None;
            self.used_seen = used_idx;
            // Acquire: the device wrote the entries before moving used.idx (§2.6.8.2);
            // read them only after seeing the new index.
            fence(Ordering::Acquire);
        }
        let off = self.layout.used_ring(self.slot(self.last_used));
        let id = self.mem.read_u32(off);
        let len = self.mem.read_u32(off + 4);
        self.last_used = self.last_used.wrapping_add(1);
        Some(match check_used(&self.slots, id, len) {
            Ok(idx) => {
                let slot = self.slots[idx];
                let head = idx as u16; // < size
                self.free_chain(head, slot.descs);
                self.slots[idx] = IdSlot::FREE;
                self.in_flight -= 1;
                Ok(Used { id: head, len })
            }
            Err(e) => {
                if let UsedError::LenTooLong { id, .. } = e {
                    self.slots[usize::from(id)].state = IdState::Quarantined;
                    self.in_flight -= 1;
                }
                Err(e)
            }
        })
    }
}

impl<M: QueueMemory> fmt::Debug for SplitQueue<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitQueue")
            .field("layout", &self.layout)
            .field("event_idx", &self.event_idx)
            .field("free", &self.num_free)
            .field("in_flight", &self.in_flight)
            .field("avail_idx", &self.avail_idx)
            .field("published", &self.published)
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::VecMemory;

    #[test]
    fn rejects_bad_sizes() {
        for bad in [0u16, 3, 6, 100, 32769, 40000, u16::MAX] {
            assert_eq!(SplitLayout::new(bad, false), Err(QueueSizeError(bad)));
            assert_eq!(SplitLayout::new(bad, true), Err(QueueSizeError(bad)));
        }
        for good in [1u16, 2, 256, 32768] {
            assert_eq!(SplitLayout::new(good, false).unwrap().size(), good);
        }
    }

    #[test]
    fn modern_layout_256_and_1024() {
        let l = SplitLayout::new(256, false).unwrap();
        assert_eq!(l.desc_offset(), 0);
        assert_eq!(l.avail_offset(), 4096);
        // avail ring ends at 4096 + 6 + 512 = 4614; used starts on the next page.
        assert_eq!(l.used_offset(), 8192);
        assert_eq!(l.total_bytes(), 8192 + 6 + 8 * 256);
        assert_eq!(l.used_event(), 4096 + 4 + 512);
        assert_eq!(l.avail_event(), 8192 + 4 + 8 * 256);
        assert_eq!(l.base_align(), 16);

        let l = SplitLayout::new(1024, false).unwrap();
        assert_eq!(l.avail_offset(), 16384);
        assert_eq!(l.used_offset(), 20480);
        assert_eq!(l.total_bytes(), 20480 + 6 + 8192);
    }

    #[test]
    fn legacy_layout_is_page_aligned() {
        let l = SplitLayout::new(256, true).unwrap();
        assert_eq!(l.avail_offset(), 4096);
        assert_eq!(l.used_offset(), 8192);
        assert_eq!(l.total_bytes(), 8192 + 4096);
        assert_eq!(l.base_align(), 4096);
        assert!(l.is_legacy());

        let l = SplitLayout::new(1024, true).unwrap();
        assert_eq!(l.used_offset(), 20480);
        // used ring 6 + 8192 bytes rounds up to 12288.
        assert_eq!(l.total_bytes(), 32768);

        for log2 in 0..=15 {
            let l = SplitLayout::new(1 << log2, true).unwrap();
            assert_eq!(l.used_offset() % LEGACY_QUEUE_ALIGN, 0);
            assert_eq!(l.total_bytes() % LEGACY_QUEUE_ALIGN, 0);
            assert!(l.used_offset() >= l.used_event() + 2);
            assert!(l.total_bytes() >= l.avail_event() + 2);
        }
    }

    #[test]
    fn parts_are_aligned_and_disjoint() {
        for log2 in 0..=15 {
            let l = SplitLayout::new(1 << log2, false).unwrap();
            let n = usize::from(l.size());
            assert_eq!(l.avail_offset() % 2, 0);
            assert_eq!(l.used_offset() % 4, 0);
            assert_eq!(l.desc(l.size() - 1) + 16, l.avail_offset());
            assert!(l.used_event() + 2 <= l.used_offset());
            assert_eq!(l.used_ring(l.size() - 1) + 8, l.avail_event());
            assert_eq!(l.avail_event() + 2, l.total_bytes());
            // The used ring starts on the first page boundary after the avail ring.
            let avail_end = l.avail_offset() + 6 + 2 * n;
            assert_eq!(l.used_offset() % MODERN_USED_ALIGN, 0);
            assert!(l.used_offset() >= avail_end && l.used_offset() - avail_end < 4096);
        }
    }

    #[test]
    fn new_initialises_driver_fields() {
        let l = SplitLayout::new(8, false).unwrap();
        let mem = VecMemory::new(l.total_bytes());
        mem.write_u64(0, u64::MAX); // stale contents are cleared
        let q = SplitQueue::new(&mem, l, false);
        assert_eq!(mem.read_u64(0), 0);
        assert_eq!(mem.read_u16(l.avail_flags()), VIRTQ_AVAIL_F_NO_INTERRUPT);
        assert_eq!((q.size(), q.free(), q.in_flight()), (8, 8, 0));

        let q = SplitQueue::with_start_index(&mem, l, true, 100);
        assert_eq!(mem.read_u16(l.avail_flags()), 0);
        assert_eq!(mem.read_u16(l.avail_idx()), 100);
        assert_eq!(mem.read_u16(l.used_idx()), 100);
        assert_eq!(mem.read_u16(l.used_event()), 99);
        assert!(format!("{q:?}").contains("SplitQueue"));
    }

    #[test]
    fn add_writes_a_chain_but_not_the_index() {
        let l = SplitLayout::new(4, false).unwrap();
        let mem = VecMemory::new(l.total_bytes());
        let mut q = SplitQueue::new(&mem, l, false);
        let chain = [
            Buf {
                addr: 0xA000,
                len: 12,
                device_writes: false,
            },
            Buf {
                addr: 0xB000,
                len: 2048,
                device_writes: true,
            },
        ];
        let head = q.add(&chain).unwrap();
        assert_eq!(head, 0);
        assert_eq!(mem.read_u64(l.desc(0)), 0xA000);
        assert_eq!(mem.read_u16(l.desc(0) + DESC_FLAGS), VIRTQ_DESC_F_NEXT);
        let second = mem.read_u16(l.desc(0) + DESC_NEXT);
        assert_eq!(mem.read_u64(l.desc(second)), 0xB000);
        assert_eq!(mem.read_u32(l.desc(second) + DESC_LEN), 2048);
        assert_eq!(
            mem.read_u16(l.desc(second) + DESC_FLAGS),
            VIRTQ_DESC_F_WRITE
        );
        assert_eq!(mem.read_u16(l.avail_ring(0)), head);
        assert_eq!(mem.read_u16(l.avail_idx()), 0, "not visible before publish");
        assert_eq!((q.free(), q.in_flight()), (2, 0));
        assert!(q.publish());
        assert_eq!(mem.read_u16(l.avail_idx()), 1);
        assert_eq!(q.in_flight(), 1);
        assert!(!q.publish(), "nothing new: no kick");
        assert_eq!(q.add(&chain[..1]).map(|_| ()), Ok(()));
        assert_eq!(q.add(&chain), Err(Full), "one descriptor left");
        assert_eq!(q.add(&[]), Err(Full));
    }
}
