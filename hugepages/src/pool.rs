//! The packet-buffer pool and the `Packet` handle.
//!
//! A [`Mempool`] cuts one DMA region into fixed buffers of [`HEADROOM`] + [`DATA_ROOM`] bytes,
//! packed so that no buffer straddles a 2 MiB page (so a buffer is physically contiguous even
//! where IOVAs are physical addresses). A [`Packet`] owns one buffer and gives it back when
//! dropped. The pool is single-threaded for now (`Rc`); the free list is a stack, so the
//! buffer used last — still warm in cache — is handed out first.

use crate::{DmaAllocator, DmaError, DmaRegion, HUGEPAGE};
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

/// Bytes before the frame, for headers a driver or application prepends (virtio-net's
/// header, an encapsulation) without moving the frame.
pub const HEADROOM: usize = 128;
/// Bytes for the frame itself: the e1000's 2048-byte receive buffer size.
pub const DATA_ROOM: usize = 2048;
const ENTRY: usize = HEADROOM + DATA_ROOM;
const PER_PAGE: usize = HUGEPAGE / ENTRY;

/// A pool of packet buffers in DMA memory.
pub struct Mempool {
    region: DmaRegion,
    count: u32,
    free: RefCell<Vec<u32>>,
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
    pub fn new(alloc: &dyn DmaAllocator, count: usize) -> Result<Rc<Self>, DmaError> {
        if count == 0 || count > u32::MAX as usize {
            return Err(DmaError::Invalid(format!("pool of {count} buffers")));
        }
        let pages = count.div_ceil(PER_PAGE);
        let region = alloc.alloc(pages * HUGEPAGE)?;
        // Hand out low indices first: a fresh pool then touches memory in order.
        let free = (0..count as u32).rev().collect();
        Ok(Rc::new(Self {
            region,
            count: count as u32,
            free: RefCell::new(free),
        }))
    }

    #[inline(always)]
    fn offset(idx: u32) -> usize {
        let i = idx as usize;
        (i / PER_PAGE) * HUGEPAGE + (i % PER_PAGE) * ENTRY
    }

    fn packet(self: &Rc<Self>, idx: u32) -> Packet {
        let off = Self::offset(idx);
        debug_assert!(off + ENTRY <= self.region.len());
        let buf = self.region.as_ptr().wrapping_add(off);
        Packet {
            pool: Rc::clone(self),
            buf,
            iova: self.region.iova_at(off),
            idx,
            head: HEADROOM as u16,
            len: 0,
        }
    }

    /// One buffer, or `None` when all are in use.
    #[inline]
    pub fn alloc(self: &Rc<Self>) -> Option<Packet> {
        let idx = self.free.borrow_mut().pop()?;
        Some(self.packet(idx))
    }

    /// Appends up to `n` buffers to `out`; returns how many.
    #[inline]
    pub fn alloc_batch(self: &Rc<Self>, out: &mut Vec<Packet>, n: usize) -> usize {
        let mut free = self.free.borrow_mut();
        let n = n.min(free.len());
        let start = free.len() - n;
        for &idx in free[start..].iter().rev() {
            out.push(self.packet(idx));
        }
        free.truncate(start);
        n
    }

    /// Buffers not in use.
    pub fn free_count(&self) -> usize {
        self.free.borrow().len()
    }

    /// Buffers in the pool.
    pub fn capacity(&self) -> usize {
        self.count as usize
    }

    fn put(&self, idx: u32) {
        self.free.borrow_mut().push(idx);
    }
}

/// One packet buffer from a [`Mempool`], with a frame of `len()` bytes in it.
///
/// The frame starts [`HEADROOM`] bytes into the buffer unless headers were prepended. While
/// a driver holds a `Packet` in a descriptor ring the device may write its buffer; the driver
/// never reads the data then, and hands the `Packet` out only once the device is done.
pub struct Packet {
    pool: Rc<Mempool>,
    buf: *mut u8,
    iova: u64,
    idx: u32,
    head: u16,
    len: u16,
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
    }

    /// IOVA of the frame's first byte: what goes in a descriptor.
    #[inline(always)]
    pub fn iova(&self) -> u64 {
        self.iova + u64::from(self.head)
    }

    /// The frame.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        // SAFETY: `buf + head .. + len` lies inside this packet's buffer (len <= room, checked
        // in set_len/prepend), which this `Packet` owns exclusively; the device does not
        // touch it while the application holds the `Packet` (see the type's docs).
        unsafe { std::slice::from_raw_parts(self.buf.add(self.head.into()), self.len()) }
    }

    /// The frame, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.buf.add(self.head.into()), self.len()) }
    }

    /// The pool this buffer belongs to.
    pub fn pool(&self) -> &Rc<Mempool> {
        &self.pool
    }
}

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
