//! Packed virtqueues (virtio 1.1 §2.7): one descriptor ring that driver and device both
//! write, plus two 4-byte event suppression areas.
//!
//! A descriptor is available when its AVAIL bit equals the driver's wrap counter and its
//! USED bit does not; it is used when both bits equal the device's wrap counter (§2.7.1).
//! Buffer ids are independent of ring positions: the device writes one used descriptor per
//! chain at its own used position and skips the chain's length (§2.7.6), so the driver
//! remembers each id's chain length.

use std::fmt;
use std::sync::atomic::{fence, Ordering};

use super::{
    check_chain, check_used, need_event, writable_len, Buf, Full, IdSlot, IdState, QueueMemory,
    QueueSizeError, Used, UsedError, Virtqueue, MAX_QUEUE_SIZE, VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
};

/// VIRTQ_DESC_F_AVAIL — descriptor flag bit 7, set to the driver's wrap counter when the
/// driver makes a descriptor available (virtio 1.1 §2.7.1).
pub const VIRTQ_DESC_F_AVAIL: u16 = 1 << 7;
/// VIRTQ_DESC_F_USED — descriptor flag bit 15, the inverse of the driver's wrap counter in
/// an available descriptor, the device's wrap counter in a used one (virtio 1.1 §2.7.1).
pub const VIRTQ_DESC_F_USED: u16 = 1 << 15;
/// RING_EVENT_FLAGS_ENABLE — event suppression flags: notify (virtio 1.1 §2.7.10).
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// RING_EVENT_FLAGS_DISABLE — event suppression flags: do not notify (virtio 1.1 §2.7.10).
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// RING_EVENT_FLAGS_DESC — notify when the descriptor at the event offset/wrap is made
/// available (used); only with VIRTIO_F_RING_EVENT_IDX (virtio 1.1 §2.7.10).
pub const RING_EVENT_FLAGS_DESC: u16 = 2;
/// Bit 15 of the event suppression `desc` field: the event's wrap counter; bits 0..15 are
/// the descriptor offset (virtio 1.1 §2.7.14).
pub const RING_EVENT_WRAP: u16 = 1 << 15;

/// `desc_event_flags` is the low two bits of the suppression `flags` field (§2.7.14).
const RING_EVENT_FLAGS_MASK: u16 = 3;
/// Size of `struct pvirtq_desc` (§2.7.13).
const DESC_SIZE: usize = 16;
/// Descriptor field offsets: `le64 addr; le32 len; le16 id; le16 flags` (§2.7.13).
const DESC_LEN: usize = 8;
const DESC_ID: usize = 12;
const DESC_FLAGS: usize = 14;

/// Byte offsets of the parts of a packed virtqueue within one contiguous area (virtio 1.1
/// §2.7.10.1): descriptor ring (16·N, align 16), then the driver event suppression area
/// (Driver Area, 4 bytes, align 4), then the device event suppression area (Device Area).
/// The device is programmed with `base + desc_offset()`, `base + driver_event_offset()`
/// and `base + device_event_offset()`; `base` must be 16-byte aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedLayout {
    size: u16,
}

impl PackedLayout {
    /// Layout for a queue of `size` descriptors, 1..=32768; unlike split rings, the size
    /// need not be a power of two (§2.7.10.1).
    pub const fn new(size: u16) -> Result<Self, QueueSizeError> {
        if size == 0 || size > MAX_QUEUE_SIZE {
            return Err(QueueSizeError(size));
        }
        Ok(Self { size })
    }

    /// Queue size (descriptors).
    pub const fn size(&self) -> u16 {
        self.size
    }
    /// Alignment the area's base address needs (the descriptor ring's, §2.7.10.1).
    pub const fn base_align(&self) -> usize {
        DESC_SIZE
    }
    /// Offset of the descriptor ring (Descriptor Area): always 0.
    pub const fn desc_offset(&self) -> usize {
        0
    }
    /// Offset of the driver event suppression structure (Driver Area), `16 * size`.
    pub const fn driver_event_offset(&self) -> usize {
        self.size as usize * DESC_SIZE
    }
    /// Offset of the device event suppression structure (Device Area).
    pub const fn device_event_offset(&self) -> usize {
        self.driver_event_offset() + 4
    }
    /// Bytes to allocate for the whole queue.
    pub const fn total_bytes(&self) -> usize {
        self.device_event_offset() + 4
    }
    /// Offset of the descriptor at ring position `pos` (`struct pvirtq_desc`, §2.7.13).
    pub const fn desc(&self, pos: u16) -> usize {
        pos as usize * DESC_SIZE
    }
    /// Offset of the driver area's `desc` (event offset and wrap) field (§2.7.14).
    pub const fn driver_event_off_wrap(&self) -> usize {
        self.driver_event_offset()
    }
    /// Offset of the driver area's `flags` field (§2.7.14).
    pub const fn driver_event_flags(&self) -> usize {
        self.driver_event_offset() + 2
    }
    /// Offset of the device area's `desc` (event offset and wrap) field (§2.7.14).
    pub const fn device_event_off_wrap(&self) -> usize {
        self.device_event_offset()
    }
    /// Offset of the device area's `flags` field (§2.7.14).
    pub const fn device_event_flags(&self) -> usize {
        self.device_event_offset() + 2
    }
}

/// A chain whose head flags are still to be written by `publish`.
#[derive(Clone, Copy, Debug)]
struct PendingHead {
    pos: u16,
    flags: u16,
    id: u16,
}

/// AVAIL/USED bits that mark a descriptor available in the lap with wrap counter `wrap`.
const fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        VIRTQ_DESC_F_AVAIL
    } else {
        VIRTQ_DESC_F_USED
    }
}

/// Driver side of a packed virtqueue (virtio 1.1 §2.7).
///
/// Used buffer notifications are switched off at creation (driver event flags = DISABLE,
/// §2.7.10): we poll. The buffer id is written into every descriptor of a chain; the spec
/// only requires it in the last (§2.7.6).
pub struct PackedQueue<M: QueueMemory> {
    mem: M,
    layout: PackedLayout,
    event_idx: bool,
    /// Indexed by buffer id.
    slots: Box<[IdSlot]>,
    /// Free buffer ids (capacity `size`, never grows).
    free_ids: Vec<u16>,
    /// Heads added since the last publish (capacity `size`, never grows).
    pending: Vec<PendingHead>,
    /// Descriptors added since the last publish.
    pending_descs: u16,
    num_free: u16,
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    /// Published ring positions the driver has not yet stepped over in `pop_used`.
    outstanding: u16,
    in_flight: u16,
}

impl<M: QueueMemory> PackedQueue<M> {
    /// A queue over `mem`, which must hold `layout.total_bytes()` bytes. Zeroes the area
    /// (the ring must start zeroed, §2.7.13) and disables used buffer notifications.
    /// `event_idx`: VIRTIO_F_RING_EVENT_IDX was negotiated.
    pub fn new(mem: M, layout: PackedLayout, event_idx: bool) -> Self {
        let n = layout.size();
        for off in (0..layout.total_bytes()).step_by(2) {
            mem.write_u16(off, 0);
        }
        mem.write_u16(layout.driver_event_flags(), RING_EVENT_FLAGS_DISABLE);
        Self {
            mem,
            layout,
            event_idx,
            slots: vec![IdSlot::FREE; usize::from(n)].into_boxed_slice(),
            free_ids: (0..n).rev().collect(),
            pending: Vec::with_capacity(usize::from(n)),
            pending_descs: 0,
            num_free: n,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            outstanding: 0,
            in_flight: 0,
        }
    }

    /// The layout this queue was built with.
    pub fn layout(&self) -> &PackedLayout {
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

    /// Next position the driver will fill and its wrap counter: the `next_off`/`next_wrap`
    /// of a VIRTIO_F_NOTIFICATION_DATA notification (§2.7.16).
    pub fn next_avail(&self) -> (u16, bool) {
        (self.next_avail, self.avail_wrap)
    }

    /// Whether the device's DESC event (offset/wrap `off_wrap`) lies among the `added`
    /// positions just published, which end before `next_avail` (§2.7.10). Positions are
    /// mapped onto one line: the current lap at 0..N, the previous lap at -N..0.
    fn desc_event_crossed(&self, off_wrap: u16, added: u16) -> bool {
        let off = off_wrap & !RING_EVENT_WRAP;
        if off >= self.layout.size() {
            // A device bug; a kick is always safe.
            return true;
        }
        let wrap = off_wrap & RING_EVENT_WRAP != 0;
        let event = if wrap == self.avail_wrap {
            off
        } else {
            off.wrapping_sub(self.layout.size())
        };
        let new = self.next_avail;
        need_event(event, new, new.wrapping_sub(added))
    }

    /// Whether the descriptor at `next_used` is used (what `pop_used` would take).
    fn used_pending(&self) -> bool {
        if self.outstanding == 0 {
            return false;
        }
        let flags = self
            .mem
            .read_u16(self.layout.desc(self.next_used) + DESC_FLAGS);
        let avail = flags & VIRTQ_DESC_F_AVAIL != 0;
        let used = flags & VIRTQ_DESC_F_USED != 0;
        avail == used && used == self.used_wrap
    }

    /// Steps `next_used` over `descs` positions (never past what was published).
    fn advance_used(&mut self, descs: u16) {
        let descs = descs.min(self.outstanding);
        self.outstanding -= descs;
        let pos = u32::from(self.next_used) + u32::from(descs);
        if pos >= u32::from(self.layout.size()) {
            self.next_used = (pos - u32::from(self.layout.size())) as u16;
            self.used_wrap = !self.used_wrap;
        } else {
            self.next_used = pos as u16;
        }
    }
}

impl<M: QueueMemory> Virtqueue for PackedQueue<M> {
    fn size(&self) -> u16 {
        self.layout.size()
    }

    fn free(&self) -> u16 {
        self.num_free
    }

    fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Driver event flags ENABLE: a notification for every used descriptor (§2.7.10),
    /// whether or not RING_EVENT_IDX was negotiated. Then the re-check.
    fn enable_notify(&mut self) -> bool {
        self.mem
            .write_u16(self.layout.driver_event_flags(), RING_EVENT_FLAGS_ENABLE);
        // SeqCst (Linux's virtio_mb in virtqueue_enable_cb_prepare_packed): the flags
        // store must be visible before the descriptor is read below; a used descriptor
        // this read misses was written by a device that then sees ENABLE.
        fence(Ordering::SeqCst);
        self.used_pending()
    }

    /// Driver event flags DISABLE, as the queue was created.
    fn disable_notify(&mut self) {
        self.mem
            .write_u16(self.layout.driver_event_flags(), RING_EVENT_FLAGS_DISABLE);
    }

    #[inline(always)]
    fn add(&mut self, chain: &[Buf]) -> Result<u16, Full> {
        check_chain(chain, self.num_free)?;
        // Each in-use id holds at least one descriptor, so a free descriptor implies a
        // free id; the check is for robustness only.
        let Some(id) = self.free_ids.pop() else {
            return Err(Full);
        };
        let descs = chain.len() as u16; // <= num_free <= 32768
        let head_pos = self.next_avail;
        let mut head_flags = 0;
        for (i, buf) in chain.iter().enumerate() {
            let mut flags = avail_bits(self.avail_wrap);
            if buf.device_writes {
                flags |= VIRTQ_DESC_F_WRITE;
            }
            if i + 1 < chain.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            let off = self.layout.desc(self.next_avail);
            self.mem.write_u64(off, buf.addr);
            self.mem.write_u32(off + DESC_LEN, buf.len);
            self.mem.write_u16(off + DESC_ID, id);
            if i == 0 {
                head_flags = flags;
            } else {
                // The device does not look past an unavailable head, so the rest of the
                // chain can carry its final flags already (§2.7.6, §2.7.21.1).
                self.mem.write_u16(off + DESC_FLAGS, flags);
            }
            self.next_avail += 1;
            if self.next_avail == self.layout.size() {
                self.next_avail = 0;
                self.avail_wrap = !self.avail_wrap;
            }
        }
        self.pending.push(PendingHead {
            pos: head_pos,
            flags: head_flags,
            id,
        });
        self.pending_descs += descs;
        self.num_free -= descs;
        self.slots[usize::from(id)] = IdSlot {
            state: IdState::Added,
            descs,
            writable: writable_len(chain),
        };
        Ok(id)
    }

    fn publish(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        // Release: every descriptor body of the batch must be visible to the device before
        // the head flags that make it available (§2.7.21.1.1). Heads are written in ring
        // order, so one fence before the first covers the batch.
        fence(Ordering::Release);
        for head in &self.pending {
            self.mem
                .write_u16(self.layout.desc(head.pos) + DESC_FLAGS, head.flags);
            self.slots[usize::from(head.id)].state = IdState::InDevice;
        }
        self.in_flight += self.pending.len() as u16;
        self.pending.clear();
        let added = self.pending_descs;
        self.pending_descs = 0;
        self.outstanding += added;
        // SeqCst (full barrier, Linux's virtio_mb): the head flag stores must be visible
        // before we read the device event suppression area, or a device that just decided
        // to sleep would miss this batch (§2.7.21.3.1).
        fence(Ordering::SeqCst);
        let flags = self.mem.read_u16(self.layout.device_event_flags()) & RING_EVENT_FLAGS_MASK;
        match flags {
            RING_EVENT_FLAGS_DISABLE => false,
            RING_EVENT_FLAGS_DESC if self.event_idx => {
                let off_wrap = self.mem.read_u16(self.layout.device_event_off_wrap());
                self.desc_event_crossed(off_wrap, added)
            }
            // ENABLE; DESC without EVENT_IDX and the reserved value 3 are device bugs, and
            // a kick is always safe.
            _ => true,
        }
    }

    /// See [`Virtqueue::pop_used`]. A used descriptor whose id is out of range or not in
    /// flight cannot tell how many positions its chain spans: the driver steps over one
    /// position and returns the error, and is likely out of step with the device from then
    /// on (the driver should reset the device). A used descriptor without
    /// VIRTQ_DESC_F_WRITE reports length 0 (its `len` is reserved, §2.7.4).
    #[inline(always)]
    fn pop_used(&mut self) -> Option<Result<Used, UsedError>> {
        // Nothing published is outstanding: whatever sits at next_used is stale.
        if self.outstanding == 0 {
            return None;
        }
        let off = self.layout.desc(self.next_used);
        let flags = self.mem.read_u16(off + DESC_FLAGS);
        let avail = flags & VIRTQ_DESC_F_AVAIL != 0;
        let used = flags & VIRTQ_DESC_F_USED != 0;
        if avail != used || used != self.used_wrap {
            return None;
        }
        // Acquire: the device wrote id and len before the flags (§2.7.1, §2.7.22); read
        // them only after seeing the flags.
        fence(Ordering::Acquire);
        let id = self.mem.read_u16(off + DESC_ID);
        let len = if flags & VIRTQ_DESC_F_WRITE != 0 {
            self.mem.read_u32(off + DESC_LEN)
        } else {
            0
        };
        Some(match check_used(&self.slots, u32::from(id), len) {
            Ok(idx) => {
                let slot = self.slots[idx];
                self.advance_used(slot.descs);
                self.slots[idx] = IdSlot::FREE;
                self.free_ids.push(id);
                self.num_free += slot.descs;
                self.in_flight -= 1;
                Ok(Used { id, len })
            }
            Err(e @ UsedError::LenTooLong { .. }) => {
                let slot = &mut self.slots[usize::from(id)];
                slot.state = IdState::Quarantined;
                let descs = slot.descs;
                self.advance_used(descs);
                self.in_flight -= 1;
                Err(e)
            }
            Err(e) => {
                self.advance_used(1);
                Err(e)
            }
        })
    }
}

impl<M: QueueMemory> fmt::Debug for PackedQueue<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedQueue")
            .field("layout", &self.layout)
            .field("event_idx", &self.event_idx)
            .field("free", &self.num_free)
            .field("in_flight", &self.in_flight)
            .field("next_avail", &(self.next_avail, self.avail_wrap))
            .field("next_used", &(self.next_used, self.used_wrap))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::VecMemory;
    use proptest::prelude::*;

    fn buf(addr: u64, len: u32, device_writes: bool) -> Buf {
        Buf {
            addr,
            len,
            device_writes,
        }
    }

    #[test]
    fn layout_sizes() {
        let l = PackedLayout::new(256).unwrap();
        assert_eq!(l.desc_offset(), 0);
        assert_eq!(l.driver_event_offset(), 4096);
        assert_eq!(l.device_event_offset(), 4100);
        assert_eq!(l.total_bytes(), 4104);
        assert_eq!(l.device_event_flags(), 4102);
        let l = PackedLayout::new(1024).unwrap();
        assert_eq!(l.driver_event_offset(), 16384);
        assert_eq!(l.device_event_offset(), 16388);
        assert_eq!(l.total_bytes(), 16392);
        assert_eq!(l.base_align(), 16);
        // Any size up to 2^15 is allowed.
        assert_eq!(PackedLayout::new(1000).unwrap().total_bytes(), 16008);
        assert!(PackedLayout::new(32768).is_ok());
        for bad in [0u16, 32769, u16::MAX] {
            assert_eq!(PackedLayout::new(bad), Err(QueueSizeError(bad)));
        }
    }

    #[test]
    fn new_disables_used_notifications_and_zeroes() {
        let l = PackedLayout::new(5).unwrap();
        let mem = VecMemory::new(l.total_bytes());
        mem.write_u16(l.desc(0) + DESC_FLAGS, 0xFFFF);
        let q = PackedQueue::new(&mem, l, false);
        assert_eq!(mem.read_u16(l.desc(0) + DESC_FLAGS), 0);
        assert_eq!(
            mem.read_u16(l.driver_event_flags()),
            RING_EVENT_FLAGS_DISABLE
        );
        assert_eq!((q.size(), q.free(), q.in_flight()), (5, 5, 0));
        assert_eq!(q.next_avail(), (0, true));
        assert!(format!("{q:?}").contains("PackedQueue"));
    }

    #[test]
    fn head_flags_are_written_at_publish_and_wrap_flips_bits() {
        let l = PackedLayout::new(4).unwrap();
        let mem = VecMemory::new(l.total_bytes());
        let mut q = PackedQueue::new(&mem, l, false);
        let flags = |pos| mem.read_u16(l.desc(pos) + DESC_FLAGS);
        // Fill positions 0..3 so the next chain straddles the ring end.
        let a = q
            .add(&[buf(1, 1, false), buf(2, 2, false), buf(3, 3, false)])
            .unwrap();
        assert_eq!(flags(0), 0, "head not yet available");
        assert_eq!(flags(1), VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
        assert_eq!(flags(2), VIRTQ_DESC_F_AVAIL);
        assert_eq!(mem.read_u16(l.desc(2) + DESC_ID), a);
        assert!(q.publish());
        assert_eq!(flags(0), VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
        // Retire it by hand: used descriptor at position 0 with wrap 1.
        mem.write_u16(l.desc(0) + DESC_ID, a);
        mem.write_u16(
            l.desc(0) + DESC_FLAGS,
            VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED,
        );
        assert_eq!(q.pop_used(), Some(Ok(Used { id: a, len: 0 })));

        let b = q.add(&[buf(4, 4, false), buf(5, 5, true)]).unwrap();
        assert_eq!(flags(3), 0, "head at position 3, not yet published");
        // Position 0 is in the next lap: wrap counter 0 means AVAIL clear, USED set.
        assert_eq!(flags(0), VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE);
        assert_eq!(mem.read_u16(l.desc(0) + DESC_ID), b);
        assert_eq!(q.next_avail(), (1, false));
        assert!(q.publish());
        assert_eq!(flags(3), VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
    }

    /// Replays the published positions one by one: does any equal the event's?
    fn crossed_brute(n: u16, start: (u16, bool), added: u16, event: (u16, bool)) -> bool {
        let (mut pos, mut wrap) = start;
        for _ in 0..added {
            if (pos, wrap) == event {
                return true;
            }
            pos += 1;
            if pos == n {
                pos = 0;
                wrap = !wrap;
            }
        }
        false
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]
        /// The DESC-mode kick decision equals "the event descriptor was among those just
        /// made available", from any ring position, across the wrap.
        #[test]
        fn desc_event_matches_brute_force(
            n in 1u16..=40,
            before in 0u32..200,
            added_pct in 1u32..=100,
            off in 0u16..48,
            wrap in any::<bool>(),
        ) {
            let l = PackedLayout::new(n).unwrap();
            let mem = VecMemory::new(l.total_bytes());
            let mut q = PackedQueue::new(&mem, l, true);
            // Move to an arbitrary position by adding and retiring single descriptors.
            for _ in 0..before {
                let id = q.add(&[buf(0, 1, false)]).unwrap();
                q.publish();
                let (pos, w) = (q.next_used, q.used_wrap);
                let used = if w { VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED } else { 0 };
                mem.write_u16(l.desc(pos) + DESC_ID, id);
                mem.write_u16(l.desc(pos) + DESC_FLAGS, used);
                prop_assert_eq!(q.pop_used(), Some(Ok(Used { id, len: 0 })));
            }
            let start = q.next_avail();
            let added = ((u32::from(n) * added_pct).div_ceil(100)) as u16;
            for _ in 0..added {
                q.add(&[buf(0, 1, false)]).unwrap();
            }
            mem.write_u16(l.device_event_flags(), RING_EVENT_FLAGS_DESC);
            mem.write_u16(l.device_event_off_wrap(), off | if wrap { RING_EVENT_WRAP } else { 0 });
            let expect = off >= n || crossed_brute(n, start, added, (off, wrap));
            prop_assert_eq!(q.publish(), expect);
        }
    }
}
