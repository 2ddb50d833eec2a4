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
use super::umem::{CHUNK, OFFSET_SHIFT};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

/// What was wrong with an index or a descriptor the kernel wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// A producer index further ahead of our consumer than the ring holds.
    Producer,
    /// A consumer index behind its last value or ahead of our producer.
    Consumer,
    /// An address of no buffer the kernel holds from that ring.
    Addr,
    /// A length of 0, or one that runs past the end of its buffer.
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

/// The chunk (its buffer's UMEM address) and the data's offset in it of a received frame
/// at `addr`, `len` bytes long: in unaligned mode the kernel puts the offset in the
/// address's upper 16 bits. The data must end inside the chunk; whether the chunk is one
/// the kernel holds is the table's to say.
pub fn check_rx(addr: u64, len: u32) -> Result<(u64, usize), Bad> {
    let chunk = addr & ((1 << OFFSET_SHIFT) - 1);
    let off = addr >> OFFSET_SHIFT;
    if len == 0 || off + u64::from(len) > CHUNK {
        return Err(Bad::Len);
    }
    Ok((chunk, off as usize))
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
    fn received_data_must_end_inside_its_chunk() {
        let at = |chunk: u64, off: u64| chunk | off << OFFSET_SHIFT;
        assert_eq!(check_rx(at(4096, 256), 60), Ok((4096, 256)));
        assert_eq!(
            check_rx(at(CHUNK, 256), (CHUNK - 256) as u32),
            Ok((CHUNK, 256))
        );
        assert_eq!(
            check_rx(at(CHUNK, 256), (CHUNK - 255) as u32),
            Err(Bad::Len)
        );
        assert_eq!(check_rx(at(0, 256), 0), Err(Bad::Len));
        assert_eq!(check_rx(u64::MAX, u32::MAX), Err(Bad::Len));
        assert_eq!(
            check_rx(u64::MAX, 1),
            Err(Bad::Len),
            "an offset past the chunk"
        );
    }
}
