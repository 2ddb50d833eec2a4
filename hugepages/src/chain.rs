//! Frames longer than one buffer: a [`Packet`] chain, as DPDK's `rte_mbuf` `next`.
//!
//! A frame is its first packet's bytes, then that packet's attached payload (if any), then
//! the same for each packet after it ([`Packet::next`]). The first packet owns the rest:
//! dropping it drops the whole chain, and a driver that receives a jumbo frame hands out
//! only the first. The common frame, one buffer with nothing attached, pays one test of
//! one field for all of it ([`Packet::is_single`]).
//!
//! ```
//! use zcnic_hugepages::{FakeDma, Mempool, DATA_ROOM};
//! let pool = Mempool::new(&FakeDma::new(), 8).unwrap();
//! let frame: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
//! let pkt = pool.alloc_copy(&frame).unwrap();
//! assert_eq!(pkt.segments().count(), 3);
//! assert_eq!(pkt.len(), DATA_ROOM);
//! assert_eq!(pkt.total_len(), 5000);
//! assert_eq!(pkt.to_vec(), frame);
//! drop(pkt);
//! assert_eq!(pool.free_count(), 8);
//! ```

use crate::pool::{Mempool, Packet, DATA_ROOM, NEXT};
use crate::user::Segment;
use std::sync::Arc;

impl Packet {
    /// Whether the frame is this buffer's bytes alone: no payload attached and no buffer
    /// after it. What a driver's fast path tests.
    #[inline(always)]
    pub fn is_single(&self) -> bool {
        self.s().extras == 0
    }

    /// The next buffer of the frame, if it spans several.
    #[inline]
    pub fn next(&self) -> Option<&Packet> {
        self.s().next.as_ref()
    }

    /// The next buffer of the frame, writable.
    #[inline]
    pub fn next_mut(&mut self) -> Option<&mut Packet> {
        self.s_mut().next.as_mut()
    }

    /// Unlinks and returns the buffers after this one (the rest of the frame).
    pub fn take_next(&mut self) -> Option<Packet> {
        let s = self.s_mut();
        s.extras &= !NEXT;
        s.next.take()
    }

    /// Appends `tail` (and whatever follows it) at the end of this frame.
    pub fn append(&mut self, tail: Packet) {
        let mut last = self;
        while last.next().is_some() {
            last = last.next_mut().expect("checked just above");
        }
        last.link(tail);
    }

    /// Makes `tail` the next buffer of this one, which must be the last of its frame (a
    /// buffer already after it is dropped); returns `tail` where it now sits, to link the
    /// next one after it without walking the chain.
    #[inline]
    pub fn link(&mut self, tail: Packet) -> &mut Packet {
        let s = self.s_mut();
        s.extras |= NEXT;
        s.next.insert(tail)
    }

    /// This buffer, then each buffer after it.
    pub fn segments(&self) -> Segments<'_> {
        Segments { at: Some(self) }
    }

    /// Length of the whole frame: every buffer's bytes and every attached payload.
    #[inline(always)]
    pub fn total_len(&self) -> usize {
        if self.is_single() {
            self.len()
        } else {
            self.segments().map(Packet::own_len).sum()
        }
    }

    /// This buffer's bytes and its payload's, without the buffers after it.
    fn own_len(&self) -> usize {
        self.len() + self.payload().map_or(0, Segment::len)
    }

    /// Copies the whole frame into the front of `out`; returns the bytes copied, fewer than
    /// [`total_len`](Self::total_len) only when `out` is shorter.
    pub fn copy_frame(&self, out: &mut [u8]) -> usize {
        let mut at = 0;
        for part in self.segments().flat_map(Packet::parts) {
            let n = part.len().min(out.len() - at);
            out[at..at + n].copy_from_slice(&part[..n]);
            at += n;
            if at == out.len() {
                break;
            }
        }
        at
    }

    /// The whole frame, copied into a new vector (for tools and tests; a datapath uses
    /// [`copy_frame`](Self::copy_frame) into memory it owns, or reads the buffers in place).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.total_len()];
        let n = self.copy_frame(&mut v);
        v.truncate(n);
        v
    }

    /// A copy of the whole frame in buffers of `pool` (a chain of [`DATA_ROOM`]-byte
    /// buffers when it is longer than one), payload bytes included, and its transmit
    /// offload request ([`tx_offload`](Self::tx_offload)) with it: for a device that
    /// cannot reach this frame's memory. `None` when the pool has too few free.
    pub fn copy_into(&self, pool: &Arc<Mempool>) -> Option<Packet> {
        let mut head = pool.alloc()?;
        if let Some(req) = self.tx_offload() {
            head.set_tx_offload(req);
        }
        let mut last = &mut head;
        let mut room = DATA_ROOM;
        for mut part in self.segments().flat_map(Packet::parts) {
            while !part.is_empty() {
                if room == 0 {
                    last = last.link(pool.alloc()?);
                    room = DATA_ROOM;
                }
                let n = part.len().min(room);
                let at = DATA_ROOM - room;
                last.set_len(at + n).ok()?;
                last.data_mut()[at..].copy_from_slice(&part[..n]);
                (part, room) = (&part[n..], room - n);
            }
        }
        Some(head)
    }

    /// This buffer's bytes, then its payload's.
    fn parts(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.data()).chain(self.payload().map(Segment::data))
    }
}

/// The buffers of one frame, first to last ([`Packet::segments`]).
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    at: Option<&'a Packet>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a Packet;

    fn next(&mut self) -> Option<&'a Packet> {
        let p = self.at?;
        self.at = p.next();
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use crate::{FakeDma, Mempool, Segment, UserRegion, DATA_ROOM};
    use std::sync::Arc;

    #[test]
    fn a_long_copy_is_a_chain_and_comes_back_whole() {
        let pool = Mempool::new(&FakeDma::new(), 16).unwrap();
        for len in [0, 1, DATA_ROOM, DATA_ROOM + 1, 3 * DATA_ROOM, 9000] {
            let frame: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let pkt = pool.alloc_copy(&frame).unwrap();
            assert_eq!(pkt.segments().count(), len.div_ceil(DATA_ROOM).max(1));
            assert_eq!(pkt.is_single(), len <= DATA_ROOM);
            assert_eq!(pkt.total_len(), len);
            assert_eq!(pkt.to_vec(), frame);
            let mut short = vec![0; len / 2];
            assert_eq!(pkt.copy_frame(&mut short), len / 2);
            assert_eq!(short, frame[..len / 2]);
            drop(pkt);
            assert_eq!(pool.free_count(), 16, "{len}: every buffer back");
        }
    }

    #[test]
    fn a_copy_the_pool_cannot_hold_gives_every_buffer_back() {
        let pool = Mempool::new(&FakeDma::new(), 3).unwrap();
        assert!(pool.alloc_copy(&[1; 4 * DATA_ROOM]).is_none());
        assert_eq!(pool.free_count(), 3);
    }

    #[test]
    fn append_take_next_and_drop_keep_every_buffer_once() {
        let pool = Mempool::new(&FakeDma::new(), 8).unwrap();
        let mut head = pool.alloc_copy(b"ab").unwrap();
        head.append(pool.alloc_copy(b"cd").unwrap());
        head.append(pool.alloc_copy(b"ef").unwrap());
        assert_eq!(head.to_vec(), b"abcdef");
        assert_eq!(pool.free_count(), 5);
        let rest = head.take_next().unwrap();
        assert!(head.is_single());
        assert_eq!(
            (head.to_vec(), rest.to_vec()),
            (b"ab".to_vec(), b"cdef".to_vec())
        );
        drop(rest);
        assert_eq!(pool.free_count(), 7);
        // Linking over a buffer already there drops it.
        let mut a = pool.alloc_copy(b"1").unwrap();
        a.link(pool.alloc_copy(b"2").unwrap());
        a.link(pool.alloc_copy(b"3").unwrap());
        assert_eq!(a.to_vec(), b"13");
        drop((a, head));
        assert_eq!(pool.free_count(), 8);
    }

    #[test]
    fn payloads_sit_after_their_own_buffer() {
        let pool = Mempool::new(&FakeDma::new(), 4).unwrap();
        let dma = FakeDma::new();
        let region = Arc::new(UserRegion::with_data(b"PQRS", dma.mapper()).unwrap());
        let mut head = pool.alloc_copy(b"ab").unwrap();
        head.attach(Segment::new(&region, 0, 2).unwrap());
        let mut tail = pool.alloc_copy(b"cd").unwrap();
        tail.attach(Segment::new(&region, 2, 2).unwrap());
        head.append(tail);
        assert!(!head.is_single() && head.payload().is_some());
        assert_eq!(head.to_vec(), b"abPQcdRS");
        assert_eq!(head.total_len(), 8);
        let mut fresh = head;
        fresh.reset();
        assert!(fresh.is_single() && fresh.payload().is_none());
        assert_eq!(pool.free_count(), 3, "reset dropped the tail");
        drop(fresh);
        assert_eq!(Arc::strong_count(&region), 1, "payloads dropped");
    }

    #[test]
    fn a_copy_into_another_pool_packs_the_parts_into_full_buffers_and_keeps_the_request() {
        let (a, b) = (FakeDma::new(), FakeDma::new());
        let (from, to) = (Mempool::new(&a, 16).unwrap(), Mempool::new(&b, 16).unwrap());
        let region = Arc::new(UserRegion::with_data(&[9; 3000], a.mapper()).unwrap());
        for (parts, payload) in [(vec![100], 0), (vec![DATA_ROOM, 10, 1000], 3000)] {
            let mut head = from.alloc_copy(&vec![1; parts[0]]).unwrap();
            for &n in &parts[1..] {
                head.append(from.alloc_copy(&vec![n as u8; n]).unwrap());
            }
            if payload > 0 {
                head.attach(Segment::new(&region, 0, payload).unwrap());
            }
            let req = crate::TxOffload {
                l4: Some(crate::L4Csum::Tcp),
                ..crate::TxOffload::ipv4(14, parts.len() as u8 * 20)
            };
            head.set_tx_offload(req);
            let copy = head.copy_into(&to).unwrap();
            assert!(copy.is_from(&to));
            assert_eq!(
                copy.tx_offload(),
                Some(req),
                "the request goes with the copy"
            );
            assert_eq!(copy.to_vec(), head.to_vec());
            let lens: Vec<usize> = copy.segments().map(|s| s.len()).collect();
            let total = head.total_len();
            let mut want = vec![DATA_ROOM; total / DATA_ROOM];
            if total % DATA_ROOM > 0 {
                want.push(total % DATA_ROOM);
            }
            assert_eq!(lens, want);
        }
        assert_eq!((from.free_count(), to.free_count()), (16, 16));
    }

    #[test]
    fn a_long_chain_drops_without_recursion() {
        // Deep enough to overflow a recursive drop's stack natively; short under Miri.
        let n = if cfg!(miri) { 64 } else { 100_000 };
        let pool = Mempool::new(&FakeDma::new(), n).unwrap();
        let mut head = pool.alloc().unwrap();
        let mut last = &mut head;
        for _ in 1..n {
            last = last.link(pool.alloc().unwrap());
        }
        assert_eq!(head.segments().count(), n);
        drop(head);
        assert_eq!(pool.free_count(), n);
    }

    #[test]
    fn a_cache_takes_a_chain_back_whole() {
        let pool = Mempool::new(&FakeDma::new(), 64).unwrap();
        let mut cache = pool.cache(8);
        let chained = pool.alloc_copy(&[3; 3 * DATA_ROOM]).unwrap();
        let single = pool.alloc_copy(b"x").unwrap();
        cache.free_all([chained, single]);
        drop(cache);
        assert_eq!(pool.free_count(), 64);
    }
}
