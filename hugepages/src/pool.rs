//! The packet-buffer pool and the `Packet` handle.
//!
//! A [`Mempool`] cuts one DMA region into fixed buffers of [`HEADROOM`] + [`DATA_ROOM`] bytes,
//! packed so that no buffer straddles a 2 MiB page (so a buffer is physically contiguous even
//! where IOVAs are physical addresses). A [`Packet`] owns one buffer and gives it back when
//! dropped, on whatever thread that happens: `Packet` is `Send`, the pool is shared through
//! an `Arc`, and its free list is a lock-free stack ([`FreeStack`]), so a frame received on
//! one core can be sent or dropped on another with no lock anywhere. The stack hands out the
//! buffer freed last, still warm in cache, first.
//!
//! A `Packet` is one pointer, to its buffer's metadata (address, IOVA, frame bounds), which
//! lives in ordinary memory beside the pool, never in memory the device can write (DPDK keeps
//! its mbuf headers in DMA memory; a lying device could rewrite them). Drivers move packets
//! in and out of rings by the burst, so the size of that move is most of their work.

use crate::cache::PoolCache;
use crate::freestack::{FreeStack, MAX_BUFFERS};
use crate::{AddressSpace, DmaAllocator, DmaError, DmaRegion, Domain, Segment, HUGEPAGE};
use std::cell::UnsafeCell;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use zcnic_descriptors::rss::HashType;

/// Bytes before the frame, for headers a driver or application prepends (virtio-net's
/// header, an encapsulation) without moving the frame.
pub const HEADROOM: usize = 128;
/// Bytes for the frame itself: the e1000's 2048-byte receive buffer size.
pub const DATA_ROOM: usize = 2048;
const ENTRY: usize = HEADROOM + DATA_ROOM;
/// Most buffers taken with one pop of the free stack (a larger batch takes several).
const BURST: usize = 64;
const PER_PAGE: usize = HUGEPAGE / ENTRY;

/// What the pool knows of one buffer. The `Packet` holding the buffer owns it.
///
/// `head`, `len`, `rss_type` and `extras` fill one aligned 8-byte word: a buffer leaving the
/// pool sets all four, which the compiler does with one store (laid out in this order, C
/// style, for that).
///
/// A free slot has no payload and no next buffer (`extras` 0): the packet leaving it
/// dropped both.
#[repr(C)]
pub(crate) struct Slot {
    pool: NonNull<Mempool>,
    buf: *mut u8,
    iova: u64,
    pub(crate) head: u16,
    pub(crate) len: u16,
    /// What `rss_hash` covered, as a `HashType` number in the low byte (0 when there is
    /// none); [`RX_META`] when `rx_meta` holds receive results.
    pub(crate) rss_type: u16,
    /// What the packet carries besides its own bytes ([`PAYLOAD`], [`NEXT`], [`OFFLOAD`]): one test
    /// tells the common packet, which has neither, from the others. Written with the three
    /// before it.
    pub(crate) extras: u16,
    /// Where `iova` is valid (the pool region's domain), beside it for the transmit check.
    domain: Domain,
    idx: u32,
    /// The receive hash a device reported (with `rss_type` not 0).
    pub(crate) rss_hash: u32,
    /// The receive results a device reported, with [`RX_META`]: `RxOffload`'s word in the
    /// upper half (where an e1000 receive descriptor's second word has it, so that driver
    /// stores the word as it read it).
    pub(crate) rx_meta: u64,
    /// What the frame asks of the NIC on transmit, with [`OFFLOAD`].
    pub(crate) tx: crate::offload::TxOffload,
    /// Application memory sent after the frame bytes, without a copy (transmit only).
    pub(crate) payload: Option<Segment>,
    /// The next buffer of a frame longer than one buffer (see `chain.rs`).
    pub(crate) next: Option<Packet>,
}

/// `Slot::extras`: a payload is attached.
pub(crate) const PAYLOAD: u16 = 1;
/// `Slot::extras`: another buffer follows in the frame.
pub(crate) const NEXT: u16 = 2;
/// `Slot::extras`: a transmit offload request is set (`Slot::tx`).
pub(crate) const OFFLOAD: u16 = 4;
/// `Slot::rss_type`: `Slot::rx_meta` holds the receive results of this frame. Above any
/// `HashType` number, so the hash's byte reads the same.
pub(crate) const RX_META: u16 = 0x100;

/// A pool of packet buffers in DMA memory, shared between threads.
///
/// Handles are `Arc<Mempool>`. A [`Packet`] does not count as one: while any buffer is out
/// the pool holds one extra count on itself (a loan), taken when the first buffer leaves a
/// full pool and given back when the last one returns. The free stack's CAS orders those
/// moments, so a packet costs no reference counting of its own, and the pool outlives its
/// last packet even after every handle is gone.
pub struct Mempool {
    region: DmaRegion,
    count: u32,
    free: FreeStack,
    slots: Box<[UnsafeCell<Slot>]>,
    /// How many buffers each live [`PoolCache`] holds, for [`free_count`](Self::free_count);
    /// locked only when a cache is made and when the count is read, never on the datapath.
    caches: Mutex<Vec<Arc<AtomicUsize>>>,
}

// SAFETY: a slot is touched only by whoever holds its index, and the free stack hands each
// index to one holder at a time (with acquire/release on the hand-over); every other field
// is immutable or atomic. The region is only used for its addresses and length, never
// through its multi-width accessors (why `DmaRegion` itself is not `Sync`).
unsafe impl Sync for Mempool {}
// SAFETY: as above; nothing in the pool is tied to the thread that made it.
unsafe impl Send for Mempool {}

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mempool")
            .field("count", &self.count)
            .field("free", &self.free_count())
            .field("region", &self.region)
            .finish()
    }
}

impl Mempool {
    /// A pool of `count` buffers from `alloc`.
    pub fn new(alloc: &dyn DmaAllocator, count: usize) -> Result<Arc<Self>, DmaError> {
        if count == 0 || count > MAX_BUFFERS {
            return Err(DmaError::Invalid(format!(
                "pool of {count} buffers (1 to {MAX_BUFFERS})"
            )));
        }
        let pages = count.div_ceil(PER_PAGE);
        let region = alloc.alloc(pages * HUGEPAGE)?;
        // The allocator is not trusted with the length: a short region would put buffers
        // (and the addresses given to the device) outside the memory.
        let needed = Self::offset(count as u32 - 1) + ENTRY;
        if region.len() < needed {
            return Err(DmaError::Invalid(format!(
                "the allocator gave {} bytes for a pool that needs {needed}",
                region.len()
            )));
        }
        let domain = region.domain();
        Ok(Arc::new_cyclic(|me: &std::sync::Weak<Self>| {
            let pool = NonNull::new(me.as_ptr().cast_mut()).expect("Arc data is never null");
            let slots = (0..count as u32)
                .map(|idx| {
                    let off = Self::offset(idx);
                    UnsafeCell::new(Slot {
                        pool,
                        buf: region.as_ptr().wrapping_add(off),
                        iova: region.iova_at(off),
                        domain,
                        idx,
                        head: HEADROOM as u16,
                        len: 0,
                        rss_hash: 0,
                        rss_type: 0,
                        extras: 0,
                        rx_meta: 0,
                        tx: crate::offload::TxOffload::default(),
                        payload: None,
                        next: None,
                    })
                })
                .collect();
            // Low indices on top: a fresh pool touches memory in order.
            Self {
                free: FreeStack::full(count as u32),
                region,
                count: count as u32,
                slots,
                caches: Mutex::new(Vec::new()),
            }
        }))
    }

    #[inline(always)]
    fn offset(idx: u32) -> usize {
        let i = idx as usize;
        (i / PER_PAGE) * HUGEPAGE + (i % PER_PAGE) * ENTRY
    }

    /// The packet for index `idx` of `slots` (this pool's).
    ///
    /// # Safety
    /// The caller owns buffer `idx` (took it off the free stack, or out of a cache's chain,
    /// and has not handed it out since) and gives it up to the packet: nothing else refers
    /// to its slot.
    #[inline(always)]
    pub(crate) unsafe fn packet(slots: &[UnsafeCell<Slot>], idx: u32) -> Packet {
        let mut p = Packet {
            slot: NonNull::from(&slots[idx as usize]).cast(),
        };
        p.reset_fresh();
        p
    }

    /// Takes the loan when `taken` buffers just left a pool that had all `free_before`.
    #[inline(always)]
    fn lend(self: &Arc<Self>, taken: usize, free_before: u32) {
        if taken > 0 && free_before == self.count {
            std::mem::forget(Arc::clone(self));
        }
    }

    /// One buffer, or `None` when all are in use.
    #[inline]
    pub fn alloc(self: &Arc<Self>) -> Option<Packet> {
        let mut got = [0; 1];
        let (taken, before) = self.free.pop_batch(&mut got);
        self.lend(taken, before);
        // SAFETY: `got[0]` was just popped: ours.
        (taken == 1).then(|| unsafe { Self::packet(&self.slots, got[0]) })
    }

    /// A copy of `data`: one buffer, or a chain of [`DATA_ROOM`]-byte buffers for a longer
    /// frame (see [`Packet::next`]); `None` when the pool has too few free.
    pub fn alloc_copy(self: &Arc<Self>, data: &[u8]) -> Option<Packet> {
        let mut parts = data.chunks(DATA_ROOM);
        let mut head = self.alloc()?;
        let first = parts.next().unwrap_or_default();
        head.set_len(first.len()).ok()?;
        head.data_mut().copy_from_slice(first);
        let mut last = &mut head;
        for part in parts {
            let mut p = self.alloc()?;
            p.set_len(part.len()).ok()?;
            p.data_mut().copy_from_slice(part);
            last = last.link(p);
        }
        Some(head)
    }

    /// Appends up to `n` buffers to `out`; returns how many. One atomic operation for up
    /// to 64 buffers; `out` should have the capacity already so nothing is allocated.
    ///
    /// The walk down the free stack writes each buffer's packet straight into `out`'s
    /// spare room, so the buffers are walked once; their slots are touched only after the
    /// pop succeeded and made them ours.
    #[inline]
    pub fn alloc_batch(self: &Arc<Self>, out: &mut Vec<Packet>, n: usize) -> usize {
        if n > BURST {
            return self.alloc_long(out, n);
        }
        if n == 0 {
            return 0;
        }
        out.reserve(n);
        let start = out.len();
        let room = &mut out.spare_capacity_mut()[..n];
        // As long as the links (both are the pool's capacity): a walk that found an index
        // in bounds of one needs no second test for the other.
        let slots = &self.slots[..self.free.links().len()];
        let (taken, before) = self.free.pop_walk(n, |i, idx| {
            // Only where the slot is (a shared reference to its `UnsafeCell`, which
            // asserts nothing about the contents): no access to it, as another thread may
            // still own it until the pop succeeds. Never dropped here: a `MaybeUninit` is
            // not, and a later try overwrites what this one wrote.
            room[i].write(Packet {
                slot: NonNull::from(&slots[idx as usize]).cast(),
            });
        });
        self.lend(taken, before);
        for p in &mut room[..taken] {
            // SAFETY: the try that succeeded wrote the first `taken` (`pop_walk`).
            let p = unsafe { p.assume_init_mut() };
            // Ours now: nothing else refers to its slot.
            p.reset_fresh();
        }
        // SAFETY: the `taken` after `start` hold packets of buffers this pop made ours,
        // each once (the stack holds an index once), set up as `packet` would.
        unsafe { out.set_len(start + taken) };
        taken
    }

    /// [`alloc_batch`](Self::alloc_batch) of more than [`BURST`]: a pop of at most that
    /// many a try, so a long request does not redo a long walk each time another
    /// thread's push or pop makes its CAS fail; room for no more than the pool has.
    #[cold]
    #[inline(never)]
    fn alloc_long(self: &Arc<Self>, out: &mut Vec<Packet>, n: usize) -> usize {
        let n = n.min(self.count as usize);
        out.reserve(n);
        let mut total = 0;
        while total < n {
            let want = (n - total).min(BURST);
            let got = self.alloc_batch(out, want);
            total += got;
            if got < want {
                // The stack ran dry.
                break;
            }
        }
        total
    }

    /// Buffers not in use: on the shared free stack or held by a [`PoolCache`], where any
    /// thread's next allocation through that cache finds them. Exact when no other thread
    /// is using the pool. (Buffers in one cache reach other threads only once that cache
    /// hands a full chain back to the stack, or drops.)
    pub fn free_count(&self) -> usize {
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        // A cache that was dropped holds none; forget it.
        caches.retain(|c| Arc::strong_count(c) > 1);
        let cached: usize = caches.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        self.free.len() + cached
    }

    /// How many times the shared free stack has changed (each push or pop of a run of
    /// buffers is one): how often threads met on the pool. A forwarder whose buffers go
    /// round through a [`PoolCache`] leaves it still.
    pub fn stack_changes(&self) -> u64 {
        self.free.changes()
    }

    /// A cache of `size` buffers of this pool for one thread (see [`PoolCache`]).
    pub fn cache(self: &Arc<Self>, size: usize) -> PoolCache {
        PoolCache::new(self, size)
    }

    /// Counts what `held` says a new cache holds in [`free_count`](Self::free_count).
    pub(crate) fn register_cache(&self, held: Arc<AtomicUsize>) {
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|c| Arc::strong_count(c) > 1);
        caches.push(held);
    }

    /// Pops a chain of up to `max` buffers off the free stack with one CAS: (the first's
    /// index plus one, or 0; the last's index; how many). The caller owns them, linked
    /// through [`links`](Self::links) (see `FreeStack::pop_chain`).
    #[inline]
    pub(crate) fn pop_chain(self: &Arc<Self>, max: u32) -> (u32, u32, u32) {
        let (first, last, taken, before) = self.free.pop_chain(max);
        self.lend(taken as usize, before);
        (first, last, taken)
    }

    /// The buffers' slots, for [`Mempool::packet`] on an index the caller owns.
    #[inline(always)]
    pub(crate) fn slots(&self) -> &[UnsafeCell<Slot>] {
        &self.slots
    }

    /// The free stack's links, which whoever holds a buffer may set for it
    /// (`FreeStack::link_in`).
    #[inline(always)]
    pub(crate) fn links(&self) -> &[AtomicU32] {
        self.free.links()
    }

    /// Pushes the chain `first → … → last` of `n` buffers (owned by the caller, who gives
    /// them up, linked with `FreeStack::link_in`) onto the free stack with one CAS.
    #[inline]
    pub(crate) fn push_linked(self: &Arc<Self>, first: u32, last: u32, n: u32) {
        // From `Arc::as_ptr`, not a reference: `put_chain` may give the loan back through
        // this pointer, which needs the provenance of the whole Arc allocation (Miri).
        let pool = NonNull::new(Arc::as_ptr(self).cast_mut()).expect("Arc data is never null");
        // SAFETY: the pool is alive (the caller holds a handle to it) and the chain's
        // buffers are its own, linked, and the caller's to give up.
        unsafe { Self::put_chain(pool, first, last, n) };
    }

    /// Buffers in the pool.
    pub fn capacity(&self) -> usize {
        self.count as usize
    }

    /// The address space the device of the port that made this pool reads: a packet or
    /// segment is sendable by that port when it is [reachable](Packet::reachable_in) in it.
    pub fn space(&self) -> AddressSpace {
        self.region.space()
    }

    /// Keeps this pool and its memory for the rest of the process, whatever happens to
    /// its handles and packets: for a port whose device could not be verifiably stopped
    /// and may still write the buffers.
    pub fn leak(self: &Arc<Self>) {
        std::mem::forget(Arc::clone(self));
    }

    /// Returns the chain `first → … → last` of `n` buffers to `pool`; gives the loan back
    /// when that makes the pool full.
    ///
    /// # Safety
    /// `pool` is alive (some of its buffers are out, so it holds its loan) and the chain's
    /// buffers came from it, are linked, and are owned by the caller, who gives them up.
    #[inline]
    unsafe fn put_chain(pool: NonNull<Self>, first: u32, last: u32, n: u32) {
        // `count` is read before the push: once the chain is on the stack, another thread's
        // push may fill the pool and free it, so nothing of it may be read after.
        // SAFETY: alive, per the contract; the reference ends before the loan is returned.
        let full = unsafe {
            let p = pool.as_ref();
            let count = p.count;
            p.free.push_chain(first, last, n) == count
        };
        if full {
            // SAFETY: the loan taken by `lend` when the pool stopped being full; nothing
            // here touches the pool after it.
            unsafe { Arc::decrement_strong_count(pool.as_ptr()) };
        }
    }
}

/// One packet buffer from a [`Mempool`], with a frame of `len()` bytes in it.
///
/// The frame starts [`HEADROOM`] bytes into the buffer unless headers were prepended. While
/// a driver holds a `Packet` in a descriptor ring the device may write its buffer; the driver
/// never reads the data then, and hands the `Packet` out only once the device is done.
pub struct Packet {
    /// This buffer's slot in its pool, which the pool's loan keeps alive.
    slot: NonNull<Slot>,
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("idx", &self.s().idx)
            .field("len", &self.len())
            .field("iova", &format_args!("{:#x}", self.iova()))
            .finish()
    }
}

/// A length beyond what the buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes does not fit a {room}-byte buffer")]
pub struct TooLong {
    /// Requested length.
    pub len: usize,
    /// Room in the buffer.
    pub room: usize,
}

impl Packet {
    #[inline(always)]
    pub(crate) fn s(&self) -> &Slot {
        // SAFETY: the slot lives as long as the pool, which the loan keeps while this packet
        // exists, and only this packet refers to it.
        unsafe { self.slot.as_ref() }
    }

    #[inline(always)]
    pub(crate) fn s_mut(&mut self) -> &mut Slot {
        // SAFETY: as in `s`; `&mut self` makes the access exclusive.
        unsafe { self.slot.as_mut() }
    }

    /// A buffer just taken from the pool: the default headroom, no frame, nothing
    /// received, nothing attached (one 8-byte store).
    #[inline(always)]
    fn reset_fresh(&mut self) {
        let s = self.s_mut();
        s.head = HEADROOM as u16;
        s.len = 0;
        s.rss_type = 0;
        s.extras = 0;
    }

    /// Frame length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        usize::from(self.s().len)
    }

    /// True for a zero-length frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes available from the frame start to the end of the buffer.
    #[inline(always)]
    pub fn room(&self) -> usize {
        ENTRY - usize::from(self.s().head)
    }

    /// Sets the frame length.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), TooLong> {
        let room = self.room();
        if len > room {
            return Err(TooLong { len, room });
        }
        self.s_mut().len = len as u16;
        Ok(())
    }

    /// Restores the default headroom and sets a length of `len` bytes (at most
    /// [`DATA_ROOM`]; more is cut to it): a receive buffer the device wrote `len` bytes into
    /// at the default headroom. Needs no room check, as the default headroom leaves
    /// [`DATA_ROOM`] bytes.
    #[inline(always)]
    pub fn reset_len(&mut self, len: u16) {
        let s = self.s_mut();
        s.head = HEADROOM as u16;
        s.len = len.min(DATA_ROOM as u16);
    }

    /// The receive-side-scaling hash the NIC computed for this frame and what it covered,
    /// when the NIC reports one (the igb with several queues). `None` on a buffer fresh
    /// from the pool or [`reset`](Self::reset), and on a NIC that reports none.
    #[inline]
    pub fn rss(&self) -> Option<(u32, HashType)> {
        let s = self.s();
        HashType::from_report(s.rss_type as u8).map(|t| (s.rss_hash, t))
    }

    /// Records the hash a device reported with this frame, as `(hash, HashType number)`
    /// with 0 for none: what a driver does on receive.
    #[inline(always)]
    pub fn set_rss(&mut self, (hash, kind): (u32, u8)) {
        let s = self.s_mut();
        s.rss_hash = hash;
        s.rss_type = kind.into();
    }

    /// Grows the frame at the front by `n` headroom bytes (e.g. a device header).
    pub fn prepend(&mut self, n: usize) -> Result<(), TooLong> {
        let s = self.s_mut();
        if n > usize::from(s.head) {
            return Err(TooLong {
                len: n,
                room: usize::from(s.head),
            });
        }
        s.head -= n as u16;
        s.len += n as u16;
        Ok(())
    }

    /// Undoes [`prepend`](Self::prepend): shrinks the frame at the front by `n` bytes,
    /// which become headroom again.
    pub fn trim_front(&mut self, n: usize) -> Result<(), TooLong> {
        let s = self.s_mut();
        if n > usize::from(s.len) {
            return Err(TooLong {
                len: n,
                room: usize::from(s.len),
            });
        }
        s.head += n as u16;
        s.len -= n as u16;
        Ok(())
    }

    /// Restores the default headroom and a zero length, for reuse as a receive buffer.
    #[inline(always)]
    pub fn reset(&mut self) {
        let s = self.s_mut();
        s.head = HEADROOM as u16;
        s.len = 0;
        s.rss_type = 0;
        if s.extras != 0 {
            drop_extras(s);
        }
    }

    /// IOVA of the frame's first byte: what goes in a descriptor.
    #[inline(always)]
    pub fn iova(&self) -> u64 {
        let s = self.s();
        s.iova + u64::from(s.head)
    }

    /// The frame.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let s = self.s();
        // `buf + head .. + len` lies inside this packet's buffer (len <= room, checked in
        // set_len/prepend); the device does not touch it while the application holds it.
        // SAFETY: in bounds of a buffer this `Packet` owns exclusively, as just said.
        unsafe { std::slice::from_raw_parts(s.buf.add(s.head.into()), s.len.into()) }
    }

    /// The frame, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let s = self.s_mut();
        // SAFETY: as in `data`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(s.buf.add(s.head.into()), s.len.into()) }
    }

    /// All the room from the frame start to the end of the buffer, for writing a frame
    /// before [`set_len`](Self::set_len) says how long it is.
    #[inline(always)]
    pub fn room_mut(&mut self) -> &mut [u8] {
        let s = self.s_mut();
        let room = ENTRY - usize::from(s.head);
        // SAFETY: `buf + head .. buf + ENTRY` is this packet's own buffer, as in `data`.
        unsafe { std::slice::from_raw_parts_mut(s.buf.add(s.head.into()), room) }
    }

    /// Whether a device reading addresses in `space` reaches this buffer at its IOVA (a
    /// packet from a port in another address space must be copied to be sent).
    #[inline(always)]
    pub fn reachable_in(&self, space: AddressSpace) -> bool {
        self.s().domain.reachable_in(space)
    }

    /// Whether this buffer belongs to `pool`.
    #[inline(always)]
    pub fn is_from(&self, pool: &Arc<Mempool>) -> bool {
        std::ptr::eq(self.s().pool.as_ptr(), Arc::as_ptr(pool))
    }

    /// The pool this buffer belongs to.
    pub fn pool(&self) -> &Mempool {
        // SAFETY: the pool's loan keeps it alive while this packet exists.
        unsafe { self.s().pool.as_ref() }
    }

    /// Appends `seg` to the frame for transmit: the NIC reads the packet's bytes, then the
    /// segment's, as one frame (a descriptor chain), copying neither. The segment — and so
    /// its region — stays held until the driver drops the packet, after the device is done.
    pub fn attach(&mut self, seg: Segment) {
        let s = self.s_mut();
        s.payload = Some(seg);
        s.extras |= PAYLOAD;
    }

    /// The attached payload, if any.
    #[inline(always)]
    pub fn payload(&self) -> Option<&Segment> {
        self.s().payload.as_ref()
    }

    /// Drops the payload and the buffers after this one, and returns (pool, index) for
    /// the free stack; the caller pushes the index next and must not touch the packet
    /// after.
    #[inline(always)]
    fn empty_slot(&mut self) -> (NonNull<Mempool>, u32) {
        let s = self.s_mut();
        if s.extras != 0 {
            drop_extras(s);
        }
        (s.pool, s.idx)
    }

    /// Gives up the buffer without `Drop`: (pool, index) for the caller to push.
    #[inline(always)]
    fn release(self) -> (NonNull<Mempool>, u32) {
        std::mem::ManuallyDrop::new(self).empty_slot()
    }

    /// Gives up the buffer without `Drop` (dropping its payload): its index, which the
    /// caller now owns, for the free stack or a cache of its pool.
    #[inline(always)]
    pub(crate) fn into_index(self) -> u32 {
        self.release().1
    }

    /// This buffer's index in its pool.
    #[cfg(test)]
    pub(crate) fn index(&self) -> u32 {
        self.s().idx
    }

    /// Whether this buffer belongs to the pool at `pool` and carries no payload and no
    /// next buffer: one a cache of that pool takes back by its index alone.
    #[inline(always)]
    pub(crate) fn is_plain(&self, pool: *const Mempool) -> bool {
        let s = self.s();
        std::ptr::eq(s.pool.as_ptr(), pool) && s.extras == 0
    }

    /// The index of a [plain](Self::is_plain) packet, which the caller gives up with the
    /// packet by forgetting it (it has nothing else to drop).
    #[inline(always)]
    pub(crate) fn index_of_plain(&self) -> u32 {
        self.s().idx
    }

    /// Whether this buffer belongs to the pool at `pool`.
    #[inline(always)]
    pub(crate) fn is_from_ptr(&self, pool: *const Mempool) -> bool {
        std::ptr::eq(self.s().pool.as_ptr(), pool)
    }

    /// Takes every packet out of `slots` and drops it, as [`drop_all`](Self::drop_all)
    /// does: a transmit ring's completed group. A run of packets of one pool without a
    /// payload goes through a loop that calls nothing (so it keeps its values in
    /// registers) and back to the pool with one atomic operation; any other packet is
    /// dropped on its own.
    #[inline(never)]
    pub fn drop_slots(slots: &mut [Option<Packet>]) {
        let mut at = 0;
        while at < slots.len() {
            let Some(first) = slots[at].take() else {
                at += 1;
                continue;
            };
            at += 1;
            let pool = first.s().pool;
            if !first.is_plain(pool.as_ptr()) {
                drop(first);
                continue;
            }
            let (head, n) = (first.into_index(), 1);
            // SAFETY: alive while `head` is out, which it is until the push below; the
            // links are used only until then.
            let links = unsafe { pool.as_ref() }.free.links();
            let (mut last, mut n) = (head, n);
            while let Some(slot) = slots.get_mut(at) {
                match slot {
                    None => {}
                    Some(p) if p.is_plain(pool.as_ptr()) => {
                        let idx = p.index_of_plain();
                        // Ours now (forgotten below, with no payload to drop).
                        FreeStack::link_in(links, last, idx);
                        std::mem::forget(slot.take());
                        (last, n) = (idx, n + 1);
                    }
                    Some(_) => break,
                }
                at += 1;
            }
            // SAFETY: a linked chain of buffers from `pool` that we own.
            unsafe { Mempool::put_chain(pool, head, last, n) };
        }
    }

    /// Drops many packets at the cost of one atomic operation per run of packets from the
    /// same pool, instead of one per packet.
    #[inline]
    pub fn drop_all(pkts: impl IntoIterator<Item = Packet>) {
        // The run so far: its pool (None before the first packet), that pool's links (kept
        // here, so linking does not reload them from the pool after every store), and its
        // first, last and count, each in a local of its own so they stay in registers. One
        // loop with one call of `next`, so the compiler inlines the iterator.
        let mut pool: Option<NonNull<Mempool>> = None;
        let mut links: &[AtomicU32] = &[];
        let (mut first, mut last, mut n) = (0, 0, 0);
        for p in pkts {
            let from = p.s().pool;
            let (_, idx) = p.release();
            if pool == Some(from) {
                FreeStack::link_in(links, last, idx);
                (last, n) = (idx, n + 1);
                continue;
            }
            if let Some(done) = pool {
                // SAFETY: a linked chain of buffers from `done` that we own.
                unsafe { Mempool::put_chain(done, first, last, n) };
            }
            // SAFETY: alive while `idx` is out, which it still is. The links are used only
            // while the run's buffers are out (keeping the pool), never after its push.
            links = unsafe { from.as_ref() }.free.links();
            (pool, first, last, n) = (Some(from), idx, idx, 1);
        }
        if let Some(done) = pool {
            // SAFETY: as above.
            unsafe { Mempool::put_chain(done, first, last, n) };
        }
    }
}

// SAFETY: a Packet is the only handle to its buffer and slot (the free stack hands each
// index out once), so moving it to another thread moves exclusive access with it; the pool
// it points to is Sync.
unsafe impl Send for Packet {}

/// Drops what a slot carries besides its buffer: the payload, and the buffers after it,
/// one at a time (a loop, not a recursion, however long the chain).
#[cold]
#[inline(never)]
fn drop_extras(s: &mut Slot) {
    s.payload = None;
    let mut next = s.next.take();
    s.extras = 0;
    while let Some(mut p) = next {
        let t = p.s_mut();
        next = t.next.take();
        t.extras &= !NEXT;
        drop(p);
    }
}

impl Drop for Packet {
    #[inline]
    fn drop(&mut self) {
        let (pool, idx) = self.empty_slot();
        // SAFETY: the pool is alive while this packet is out; the index is ours to give.
        unsafe { Mempool::put_chain(pool, idx, idx, 1) };
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
