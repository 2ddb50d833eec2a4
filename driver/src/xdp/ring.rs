//! The rings' index arithmetic and the checks of what the kernel writes into them, as
//! pure functions over numbers (tested on the host without a kernel), and [`Ring`], one
//! mapped ring whose words are read and written as atomics.
//!
//! AF_XDP rings are single-producer single-consumer with free-running u32 indices: the
//! producer writes descriptors, then moves `producer` (release); the consumer reads
//! `producer` (acquire), the descriptors, then moves `consumer`. zcnic produces into the
//! fill and TX rings and consumes the RX and completion rings; every index and address the
//! kernel writes is checked here before it is used.

use super::sys::{Mapping, RingOffset};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

/// Bytes of one UMEM frame (aligned mode: a frame's address is a multiple of it).
pub const FRAME: u64 = 2048;

/// What was wrong with an index or a descriptor the kernel wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// A producer index further ahead of our consumer than the ring holds.
    Producer,
    /// A consumer index behind its last value or ahead of our producer.
    Consumer,
    /// An address outside the UMEM, or of a frame the kernel does not hold.
    Addr,
    /// A length that runs past the end of its frame.
    Len,
}

/// Entries a consumer at `cons` may read when the producer says `prod`.
pub fn ready(prod: u32, cons: u32, size: u32) -> Result<u32, Bad> {
    let n = prod.wrapping_sub(cons);
    if n > size {
        Err(Bad::Producer)
    } else {
        Ok(n)
    }
}

/// Free slots for a producer at `prod` when the consumer, last seen at `last`, now says
/// `cons`: it may only have moved forward, and not past `prod`.
pub fn room(prod: u32, last: u32, cons: u32, size: u32) -> Result<u32, Bad> {
    let moved = cons.wrapping_sub(last);
    let outstanding = prod.wrapping_sub(last);
    if moved > outstanding || outstanding > size {
        return Err(Bad::Consumer);
    }
    Ok(size - prod.wrapping_sub(cons))
}

/// The frame index of a frame's base address (fill, TX and completion entries).
pub fn frame_of(addr: u64, frames: u32) -> Result<u32, Bad> {
    if !addr.is_multiple_of(FRAME) || addr / FRAME >= u64::from(frames) {
        return Err(Bad::Addr);
    }
    Ok((addr / FRAME) as u32)
}

/// The frame and offset in it of a received frame at `addr`, `len` bytes long: the
/// kernel puts headroom before the data, so `addr` is inside its frame; the data must end
/// inside it too.
pub fn check_rx(addr: u64, len: u32, frames: u32) -> Result<(u32, usize), Bad> {
    let frame = addr / FRAME;
    if frame >= u64::from(frames) {
        return Err(Bad::Addr);
    }
    let off = addr % FRAME;
    if len == 0 || off + u64::from(len) > FRAME {
        return Err(Bad::Len);
    }
    Ok((frame as u32, off as usize))
}

/// Who holds a UMEM frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// zcnic, free for a frame to send.
    Free,
    /// The kernel, through the fill ring: it receives into it.
    Fill,
    /// zcnic, read from the RX ring and not yet given back.
    Rx,
    /// The kernel, through the TX ring: it sends it and returns it in the completion ring.
    Tx,
}

/// Who holds each frame: a frame comes back from the kernel only from the ring it went
/// out on, once. Anything else is a bad address, counted and ignored.
#[derive(Debug)]
pub struct Frames {
    holder: Vec<Holder>,
    free: Vec<u32>,
}

impl Frames {
    /// `rx` frames for the fill ring (0..rx, held by the kernel once posted) and `tx`
    /// frames free for sending.
    pub fn new(rx: u32, tx: u32) -> Self {
        let mut holder = vec![Holder::Fill; rx as usize];
        holder.extend(std::iter::repeat_n(Holder::Free, tx as usize));
        Self {
            holder,
            free: (rx..rx + tx).rev().collect(),
        }
    }

    /// Frames in all.
    pub fn count(&self) -> u32 {
        self.holder.len() as u32
    }

    /// Frames free for sending.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Frames the kernel holds for sending.
    pub fn in_flight(&self) -> usize {
        self.holder.iter().filter(|h| **h == Holder::Tx).count()
    }

    /// A free frame for sending, now held by the TX ring.
    pub fn take_tx(&mut self) -> Option<u32> {
        let f = self.free.pop()?;
        self.holder[f as usize] = Holder::Tx;
        Some(f)
    }

    /// `frame` came back in the completion ring: it must have been sent.
    pub fn complete(&mut self, frame: u32) -> Result<(), Bad> {
        match self.holder.get_mut(frame as usize) {
            Some(h @ Holder::Tx) => {
                *h = Holder::Free;
                self.free.push(frame);
                Ok(())
            }
            _ => Err(Bad::Addr),
        }
    }

    /// `frame` came in the RX ring: it must have been in the fill ring.
    pub fn received(&mut self, frame: u32) -> Result<(), Bad> {
        match self.holder.get_mut(frame as usize) {
            Some(h @ Holder::Fill) => {
                *h = Holder::Rx;
                Ok(())
            }
            _ => Err(Bad::Addr),
        }
    }

    /// `frame`, read from the RX ring, goes back to the fill ring.
    pub fn refill(&mut self, frame: u32) {
        if let Some(h @ Holder::Rx) = self.holder.get_mut(frame as usize) {
            *h = Holder::Fill;
        }
    }
}

/// One ring mapped from the socket: its producer, consumer and flags words, and its
/// entries (`entry` bytes each: 8 for fill and completion, 16 for RX and TX).
#[derive(Debug)]
pub struct Ring {
    map: Mapping,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    /// Entries (a power of two).
    pub size: u32,
    entry: usize,
}

impl Ring {
    /// Maps the ring at page offset `pgoff` of `fd`, `size` entries laid out as `off`
    /// says; offsets that do not fit the mapping are refused.
    pub fn map(
        fd: &OwnedFd,
        off: RingOffset,
        size: u32,
        entry: usize,
        pgoff: i64,
    ) -> io::Result<Self> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the kernel's ring offsets do not fit: {off:?}"),
            )
        };
        let desc = usize::try_from(off.desc).map_err(|_| bad())?;
        let len = desc.checked_add(size as usize * entry).ok_or_else(bad)?;
        let map = Mapping::new(Some(fd), len, pgoff)?;
        let word = |o: u64| {
            usize::try_from(o)
                .ok()
                .filter(|&o| map.u32_at(o).is_some() && o + 4 <= desc)
        };
        let ring = Self {
            producer: word(off.producer).ok_or_else(bad)?,
            consumer: word(off.consumer).ok_or_else(bad)?,
            flags: word(off.flags).ok_or_else(bad)?,
            desc,
            size,
            entry,
            map,
        };
        if !desc.is_multiple_of(8) || !size.is_power_of_two() {
            return Err(bad());
        }
        Ok(ring)
    }

    /// A ring of plain memory with no kernel behind it, for tests that play the kernel:
    /// the words on cache lines of their own, as the kernel lays them out.
    #[cfg(test)]
    pub fn anon(size: u32, entry: usize) -> Self {
        let desc = 256;
        let map = Mapping::new(None, desc + size as usize * entry, 0).unwrap();
        Self {
            map,
            producer: 0,
            consumer: 64,
            flags: 128,
            desc,
            size,
            entry,
        }
    }

    /// The producer index (acquire: the entries before it are visible once it is read).
    pub fn producer(&self) -> u32 {
        self.map.load(self.producer, Ordering::Acquire)
    }

    /// The consumer index (acquire: the kernel is done with the entries before it).
    pub fn consumer(&self) -> u32 {
        self.map.load(self.consumer, Ordering::Acquire)
    }

    /// Publishes our producer index. Release: the entries written before it must be
    /// visible to the kernel before it sees the index move.
    pub fn set_producer(&self, v: u32) {
        if let Some(a) = self.map.u32_at(self.producer) {
            a.store(v, Ordering::Release);
        }
    }

    /// Publishes our consumer index. Release: our reads of the entries are done before
    /// the kernel may overwrite them.
    pub fn set_consumer(&self, v: u32) {
        if let Some(a) = self.map.u32_at(self.consumer) {
            a.store(v, Ordering::Release);
        }
    }

    /// Whether the kernel asked for a system call to make progress on this ring.
    pub fn needs_wakeup(&self) -> bool {
        self.map.load(self.flags, Ordering::Relaxed) & super::sys::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, idx: u32) -> usize {
        self.desc + (idx & (self.size - 1)) as usize * self.entry
    }

    /// An address entry (fill, completion). Relaxed: ordered by the acquire of `producer`.
    pub fn addr(&self, idx: u32) -> u64 {
        self.map
            .u64_at(self.slot(idx))
            .map_or(u64::MAX, |a| a.load(Ordering::Relaxed))
    }

    /// Writes an address entry.
    pub fn set_addr(&self, idx: u32, addr: u64) {
        if let Some(a) = self.map.u64_at(self.slot(idx)) {
            a.store(addr, Ordering::Relaxed);
        }
    }

    /// A descriptor (RX, TX): address and length.
    pub fn desc(&self, idx: u32) -> (u64, u32) {
        let s = self.slot(idx);
        let addr = self
            .map
            .u64_at(s)
            .map_or(u64::MAX, |a| a.load(Ordering::Relaxed));
        let len = self
            .map
            .u32_at(s + 8)
            .map_or(0, |a| a.load(Ordering::Relaxed));
        (addr, len)
    }

    /// Writes a descriptor, options 0.
    pub fn set_desc(&self, idx: u32, addr: u64, len: u32) {
        let s = self.slot(idx);
        if let (Some(a), Some(l), Some(o)) = (
            self.map.u64_at(s),
            self.map.u32_at(s + 8),
            self.map.u32_at(s + 12),
        ) {
            a.store(addr, Ordering::Relaxed);
            l.store(len, Ordering::Relaxed);
            o.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_counts_across_the_wrap_and_refuses_overrun() {
        assert_eq!(ready(5, 5, 8), Ok(0));
        assert_eq!(ready(13, 5, 8), Ok(8));
        assert_eq!(ready(3, u32::MAX - 2, 8), Ok(6));
        assert_eq!(ready(14, 5, 8), Err(Bad::Producer));
        // A producer behind the consumer is a huge distance, not a negative one.
        assert_eq!(ready(4, 5, 8), Err(Bad::Producer));
    }

    #[test]
    fn room_checks_the_consumer_moved_forward_within_what_was_produced() {
        assert_eq!(room(10, 2, 2, 8), Ok(0));
        assert_eq!(room(10, 2, 6, 8), Ok(4));
        assert_eq!(room(10, 2, 10, 8), Ok(8));
        assert_eq!(room(2, u32::MAX - 3, 1, 8), Ok(7));
        assert_eq!(room(10, 2, 11, 8), Err(Bad::Consumer), "past our producer");
        assert_eq!(room(10, 2, 1, 8), Err(Bad::Consumer), "moved backwards");
        assert_eq!(
            room(11, 2, 2, 8),
            Err(Bad::Consumer),
            "more outstanding than the ring"
        );
    }

    #[test]
    fn addresses_must_be_frames_of_the_umem() {
        assert_eq!(frame_of(0, 4), Ok(0));
        assert_eq!(frame_of(3 * FRAME, 4), Ok(3));
        assert_eq!(frame_of(4 * FRAME, 4), Err(Bad::Addr));
        assert_eq!(frame_of(FRAME + 1, 4), Err(Bad::Addr));
        assert_eq!(frame_of(u64::MAX, 4), Err(Bad::Addr));
    }

    #[test]
    fn received_data_must_end_inside_its_frame() {
        assert_eq!(check_rx(256, 60, 4), Ok((0, 256)));
        assert_eq!(check_rx(FRAME + 256, (FRAME - 256) as u32, 4), Ok((1, 256)));
        assert_eq!(
            check_rx(FRAME + 256, (FRAME - 255) as u32, 4),
            Err(Bad::Len)
        );
        assert_eq!(check_rx(256, 0, 4), Err(Bad::Len));
        assert_eq!(check_rx(4 * FRAME, 60, 4), Err(Bad::Addr));
        assert_eq!(check_rx(u64::MAX, u32::MAX, 4), Err(Bad::Addr));
    }

    #[test]
    fn a_frame_comes_back_once_and_only_from_where_it_went() {
        let mut f = Frames::new(2, 2);
        assert_eq!((f.count(), f.free(), f.in_flight()), (4, 2, 0));
        assert_eq!(f.complete(2), Err(Bad::Addr), "never sent");
        assert_eq!(f.complete(0), Err(Bad::Addr), "a fill frame");
        let t = f.take_tx().unwrap();
        assert_eq!(f.received(t), Err(Bad::Addr), "a TX frame in the RX ring");
        assert_eq!(f.complete(t), Ok(()));
        assert_eq!(f.complete(t), Err(Bad::Addr), "completed twice");
        assert_eq!(f.received(1), Ok(()));
        assert_eq!(f.received(1), Err(Bad::Addr), "received twice");
        f.refill(1);
        assert_eq!(f.received(1), Ok(()));
        assert_eq!(f.complete(9), Err(Bad::Addr));
        assert_eq!(f.received(9), Err(Bad::Addr));
        assert!(f.take_tx().is_some() && f.take_tx().is_some() && f.take_tx().is_none());
        assert_eq!(f.in_flight(), 2);
    }
}
