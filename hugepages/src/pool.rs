//! The packet-buffer pool and the `Packet` handle.
//!
//! A [`Mempool`] cuts one DMA region into fixed buffers of [`HEADROOM`] + [`DATA_ROOM`] bytes,
//! packed so that no buffer straddles a 2 MiB page (so a buffer is physically contiguous even
//! where IOVAs are physical addresses). A [`Packet`] owns one buffer and gives it back when
//! dropped, on whatever thread that happens: `Packet` is `Send`, the pool is shared through
//! an `Arc`, and its free list is a lock-free stack ([`FreeStack`]), so a frame received on
//! one core can be sent or dropped on another with no lock anywhere. The stack hands out the
//! buffer freed last, still warm in cache, first.

use crate::{DmaAllocator, DmaError, DmaRegion, Segment, HUGEPAGE};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A lock-free stack of buffer indices (a Treiber stack). The head packs a 32-bit tag,
/// bumped by every change, with the top index + 1 (0 = empty), so a thread that read a head
/// which then changed under it — even back to the same top (ABA) — fails its CAS and retries.
/// Every link is an atomic, so a stale read is a wasted try, never undefined behaviour.
#[derive(Debug)]
pub struct FreeStack {
    head: AtomicU64,
    next: Box<[AtomicU32]>,
    len: AtomicUsize,
}

impl FreeStack {
    /// A stack holding `0..n`, with 0 on top.
    pub fn full(n: u32) -> Self {
        let next = (0..n)
            .map(|i| AtomicU32::new(if i + 1 < n { i + 2 } else { 0 }))
            .collect();
        Self {
            head: AtomicU64::new(if n > 0 { 1 } else { 0 }),
            next,
            len: AtomicUsize::new(n as usize),
        }
    }

    #[inline(always)]
    fn pack(tag: u64, top: u32) -> u64 {
        (tag << 32) | u64::from(top)
    }

    /// Pushes index `idx` (which must not be on the stack).
    #[inline]
    pub fn push(&self, idx: u32) {
        let Some(link) = self.next.get(idx as usize) else {
            return;
        };
        let mut h = self.head.load(Ordering::Acquire);
        loop {
            link.store(h as u32, Ordering::Relaxed);
            // Release: the link written above is visible to whoever pops this entry.
            match self.head.compare_exchange_weak(
                h,
                Self::pack((h >> 32) + 1, idx + 1),
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => h = now,
            }
        }
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Pops up to `n` indices into `out` with one successful CAS; returns how many.
    #[inline]
    pub fn pop_batch(&self, n: usize, out: &mut impl FnMut(u32)) -> usize {
        if n == 0 {
            return 0;
        }
        let mut h = self.head.load(Ordering::Acquire);
        loop {
            // Walk up to n entries from the top; links may be stale if another thread
            // changed the stack meanwhile, in which case the CAS below fails.
            let (mut top, mut taken) = (h as u32, 0usize);
            while top != 0 && taken < n {
                top = self
                    .next
                    .get(top as usize - 1)
                    .map_or(0, |l| l.load(Ordering::Relaxed));
                taken += 1;
            }
            if taken == 0 {
                return 0;
            }
            // Acquire: the links (and the buffers' last contents) of what we take are
            // visible before we hand the buffers out.
            match self.head.compare_exchange_weak(
                h,
                Self::pack((h >> 32) + 1, top),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let mut cur = h as u32;
                    for _ in 0..taken {
                        out(cur - 1);
                        cur = self.next[cur as usize - 1].load(Ordering::Relaxed);
                    }
                    self.len.fetch_sub(taken, Ordering::Relaxed);
                    return taken;
                }
                Err(now) => h = now,
            }
        }
    }

    /// Entries on the stack (exact when no other thread is pushing or popping).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when no entry is on the stack.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes before the frame, for headers a driver or application prepends (virtio-net's
/// header, an encapsulation) without moving the frame.
pub const HEADROOM: usize = 128;
/// Bytes for the frame itself: the e1000's 2048-byte receive buffer size.
pub const DATA_ROOM: usize = 2048;
const ENTRY: usize = HEADROOM + DATA_ROOM;
const PER_PAGE: usize = HUGEPAGE / ENTRY;

/// A pool of packet buffers in DMA memory, shared between threads.
pub struct Mempool {
    region: DmaRegion,
    count: u32,
    free: FreeStack,
}

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
        if count == 0 || count >= u32::MAX as usize {
            return Err(DmaError::Invalid(format!("pool of {count} buffers")));
        }
        let pages = count.div_ceil(PER_PAGE);
        let region = alloc.alloc(pages * HUGEPAGE)?;
        // Low indices on top: a fresh pool touches memory in order.
        Ok(Arc::new(Self {
            region,
            count: count as u32,
            free: FreeStack::full(count as u32),
        }))
    }

    #[inline(always)]
    fn offset(idx: u32) -> usize {
        let i = idx as usize;
        (i / PER_PAGE) * HUGEPAGE + (i % PER_PAGE) * ENTRY
    }

    fn packet(self: &Arc<Self>, idx: u32) -> Packet {
        let off = Self::offset(idx);
        debug_assert!(off + ENTRY <= self.region.len());
        let buf = self.region.as_ptr().wrapping_add(off);
        Packet {
            pool: Arc::clone(self),
            buf,
            iova: self.region.iova_at(off),
            idx,
            head: HEADROOM as u16,
            len: 0,
            payload: None,
        }
    }

    /// One buffer, or `None` when all are in use.
    #[inline]
    pub fn alloc(self: &Arc<Self>) -> Option<Packet> {
        let mut got = None;
        self.free.pop_batch(1, &mut |i| got = Some(i));
        got.map(|i| self.packet(i))
    }

    /// Appends up to `n` buffers to `out`; returns how many. One atomic operation for the
    /// whole batch; `out` should have the capacity already so nothing is allocated.
    #[inline]
    pub fn alloc_batch(self: &Arc<Self>, out: &mut Vec<Packet>, n: usize) -> usize {
        self.free.pop_batch(n, &mut |i| out.push(self.packet(i)))
    }

    /// Buffers not in use (exact when no other thread is using the pool).
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Buffers in the pool.
    pub fn capacity(&self) -> usize {
        self.count as usize
    }

    fn put(&self, idx: u32) {
        self.free.push(idx);
    }
}

/// One packet buffer from a [`Mempool`], with a frame of `len()` bytes in it.
///
/// The frame starts [`HEADROOM`] bytes into the buffer unless headers were prepended. While
/// a driver holds a `Packet` in a descriptor ring the device may write its buffer; the driver
/// never reads the data then, and hands the `Packet` out only once the device is done.
pub struct Packet {
    pool: Arc<Mempool>,
    buf: *mut u8,
    iova: u64,
    idx: u32,
    head: u16,
    len: u16,
    /// Application memory sent after the frame bytes, without a copy (transmit only).
    payload: Option<Segment>,
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("idx", &self.idx)
            .field("len", &self.len)
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
    /// Frame length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True for a zero-length frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes available from the frame start to the end of the buffer.
    #[inline(always)]
    pub fn room(&self) -> usize {
        ENTRY - usize::from(self.head)
    }

    /// Sets the frame length.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), TooLong> {
        if len > self.room() {
            return Err(TooLong {
                len,
                room: self.room(),
            });
        }
        self.len = len as u16;
        Ok(())
    }

    /// Grows the frame at the front by `n` headroom bytes (e.g. a device header).
    pub fn prepend(&mut self, n: usize) -> Result<(), TooLong> {
        if n > usize::from(self.head) {
            return Err(TooLong {
                len: n,
                room: usize::from(self.head),
            });
        }
        self.head -= n as u16;
        self.len += n as u16;
        Ok(())
    }

    /// Restores the default headroom and a zero length, for reuse as a receive buffer.
    #[inline(always)]
    pub fn reset(&mut self) {
        self.head = HEADROOM as u16;
        self.len = 0;
        self.payload = None;
    }

    /// IOVA of the frame's first byte: what goes in a descriptor.
    #[inline(always)]
    pub fn iova(&self) -> u64 {
        self.iova + u64::from(self.head)
    }

    /// The frame.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        // `buf + head .. + len` lies inside this packet's buffer (len <= room, checked in
        // set_len/prepend); the device does not touch it while the application holds it.
        // SAFETY: in bounds of a buffer this `Packet` owns exclusively, as just said.
        unsafe { std::slice::from_raw_parts(self.buf.add(self.head.into()), self.len()) }
    }

    /// The frame, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.buf.add(self.head.into()), self.len()) }
    }

    /// The pool this buffer belongs to.
    pub fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    /// Appends `seg` to the frame for transmit: the NIC reads the packet's bytes, then the
    /// segment's, as one frame (a descriptor chain), copying neither. The segment — and so
    /// its region — stays held until the driver drops the packet, after the device is done.
    pub fn attach(&mut self, seg: Segment) {
        self.payload = Some(seg);
    }

    /// The attached payload, if any.
    #[inline(always)]
    pub fn payload(&self) -> Option<&Segment> {
        self.payload.as_ref()
    }

    /// Frame length including an attached payload.
    #[inline(always)]
    pub fn total_len(&self) -> usize {
        self.len() + self.payload.as_ref().map_or(0, Segment::len)
    }
}

// SAFETY: a Packet is the only handle to its buffer (the free stack hands each index out
// once), so moving it to another thread moves exclusive access with it; the pool it points
// to is Sync (below).
unsafe impl Send for Packet {}

impl Drop for Packet {
    #[inline]
    fn drop(&mut self) {
        self.pool.put(self.idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeDma;

    #[test]
    fn buffers_never_straddle_a_page_and_are_distinct() {
        let pool = Mempool::new(&FakeDma::new(), 3000).unwrap();
        let mut all = Vec::new();
        assert_eq!(pool.alloc_batch(&mut all, 5000), 3000);
        assert!(pool.alloc().is_none());
        let base = pool.region.iova();
        let mut starts: Vec<u64> = all.iter().map(|p| p.iova - base).collect();
        for s in &starts {
            assert_eq!(
                s / HUGEPAGE as u64,
                (s + ENTRY as u64 - 1) / HUGEPAGE as u64
            );
        }
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), 3000);
        drop(all);
        assert_eq!(pool.free_count(), 3000);
    }

    /// Two threads, a million alloc/free cycles each, single and batched: no buffer is
    /// handed out twice (an ownership flag per buffer) and none is lost.
    #[test]
    fn two_threads_never_share_or_lose_a_buffer() {
        use std::sync::atomic::AtomicBool;
        let pool = Mempool::new(&FakeDma::new(), 512).unwrap();
        let owned: Arc<Vec<AtomicBool>> =
            Arc::new((0..512).map(|_| AtomicBool::new(false)).collect());
        let cycles = 1_000_000;
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (pool, owned) = (pool.clone(), owned.clone());
                std::thread::spawn(move || {
                    let mut held = Vec::with_capacity(64);
                    let mut done = 0;
                    while done < cycles {
                        let want = 1 + (done + t) % 48;
                        let got = pool.alloc_batch(&mut held, want);
                        for p in &held {
                            assert!(
                                !owned[p.idx as usize].swap(true, Ordering::AcqRel),
                                "handed out twice"
                            );
                        }
                        for p in held.drain(..) {
                            owned[p.idx as usize].store(false, Ordering::Release);
                        }
                        done += got.max(1);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(pool.free_count(), 512);
        let mut all = Vec::new();
        assert_eq!(
            pool.alloc_batch(&mut all, 1000),
            512,
            "every buffer is still there"
        );
    }

    #[test]
    fn packets_move_between_threads() {
        let pool = Mempool::new(&FakeDma::new(), 64).unwrap();
        let mut batch = Vec::new();
        pool.alloc_batch(&mut batch, 64);
        let t = std::thread::spawn(move || drop(batch));
        t.join().unwrap();
        assert_eq!(pool.free_count(), 64);
    }

    #[test]
    fn lengths_are_checked() {
        let pool = Mempool::new(&FakeDma::new(), 4).unwrap();
        let mut p = pool.alloc().unwrap();
        assert_eq!(p.room(), DATA_ROOM);
        assert!(p.set_len(DATA_ROOM + 1).is_err());
        p.set_len(60).unwrap();
        p.data_mut().fill(0xab);
        p.prepend(12).unwrap();
        assert_eq!(p.len(), 72);
        assert_eq!(p.data()[12], 0xab);
        assert!(p.prepend(HEADROOM).is_err());
        p.reset();
        assert_eq!((p.len(), p.room()), (0, DATA_ROOM));
    }
}
