//! A received frame longer than one buffer, put together across descriptors (and across
//! receive calls: a frame may end in a later burst than it began).
//!
//! An Intel NIC with long packets on (e1000 RCTL.LPE, igb with a max frame above the
//! buffer) writes such a frame into consecutive descriptors, EOP on the last only
//! (8254x SDM §3.2.3; 82576 §7.1.4.1). The receive loop hands each part that is not the
//! last to [`Reassembly::part`], off its fast path; on the last it asks
//! [`Reassembly::busy`] (one test of a local) and, when a frame is under way, lets
//! [`Reassembly::finish`] make the chain. Parts are bounded by the port's longest frame:
//! a device that never sets EOP, or sets it too late, costs a dropped frame and an error
//! count, never the pool.

use zcnic_hugepages::Packet;

/// The frame being received, if any.
pub(crate) struct Reassembly {
    /// Its parts so far, first to last (None between frames, and while dropping).
    head: Option<Packet>,
    /// Bytes in `head`.
    len: usize,
    /// The rest of a frame already dropped (too long, or a bad part) is dropped up to its
    /// EOP.
    dropping: bool,
    /// The longest frame the port takes, in bytes.
    max_frame: usize,
}

/// What became of a frame's last part ([`Reassembly::finish`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The whole frame is in the slot, `len` bytes long.
    Frame(usize),
    /// The frame was dropped here: too long (one receive error). The slot holds the last
    /// part, which goes back as a spare refill.
    Dropped,
    /// The end of a frame dropped already, and counted then (a part made it too long, or
    /// a bad descriptor cut it): no error of its own. The slot as for `Dropped`.
    Discarded,
}

impl Reassembly {
    /// Between frames, for a port whose frames are at most `max_frame` bytes long.
    pub(crate) fn new(max_frame: usize) -> Self {
        Self {
            head: None,
            len: 0,
            dropping: false,
            max_frame,
        }
    }

    /// Whether a frame is under way (its last part is not a frame of its own).
    #[inline(always)]
    pub(crate) fn busy(&self) -> bool {
        self.head.is_some() || self.dropping
    }

    /// Takes `pkt`, a part of `len` bytes that is not the frame's last (at most the
    /// buffer's room, which the caller checked). Returns false when that drops the frame:
    /// it grew beyond the longest frame (counted once, here).
    #[cold]
    #[inline(never)]
    pub(crate) fn part(&mut self, mut pkt: Packet, len: u16) -> bool {
        if self.dropping {
            return true;
        }
        self.len += usize::from(len);
        if self.len > self.max_frame {
            self.drop_frame();
            return false;
        }
        pkt.reset_len(len);
        match &mut self.head {
            None => self.head = Some(pkt),
            Some(h) => h.append(pkt),
        }
        true
    }

    /// Ends the frame at its last part, which the receive loop put in `slot` with its
    /// length set: `slot` becomes the whole frame (first part first), or the frame is
    /// dropped.
    #[cold]
    #[inline(never)]
    pub(crate) fn finish(&mut self, slot: &mut Packet) -> Ending {
        if self.dropping {
            self.dropping = false;
            return Ending::Discarded;
        }
        let total = self.len + slot.len();
        let Some(mut head) = self.head.take().filter(|_| total <= self.max_frame) else {
            self.drop_frame();
            self.dropping = false;
            return Ending::Dropped;
        };
        // The last descriptor carries the frame's status (checksums, a stripped tag).
        head.set_rx_offload(slot.rx_offload());
        std::mem::swap(&mut head, slot);
        slot.append(head);
        self.len = 0;
        Ending::Frame(total)
    }

    /// A bad descriptor (`last`: it carried EOP): the frame so far is dropped, and so are
    /// the parts still to come unless this was the last (a bad first part too: its other
    /// parts must not pass for a frame). Returns whether a frame was under way.
    #[cold]
    #[inline(never)]
    pub(crate) fn abort(&mut self, last: bool) -> bool {
        let was = self.busy();
        self.head = None;
        self.len = 0;
        self.dropping = !last;
        was
    }

    fn drop_frame(&mut self) {
        self.head = None;
        self.len = 0;
        self.dropping = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zcnic_hugepages::{FakeDma, Mempool, DATA_ROOM};

    fn part(pool: &std::sync::Arc<Mempool>, byte: u8, len: usize) -> Packet {
        let mut p = pool.alloc_copy(&vec![byte; len]).unwrap();
        p.set_len(len).unwrap();
        p
    }

    #[test]
    fn parts_and_a_last_make_one_frame_in_order() {
        let pool = Mempool::new(&FakeDma::new(), 16).unwrap();
        let mut r = Reassembly::new(9018);
        assert!(!r.busy());
        for b in 1..=4u8 {
            assert!(r.part(part(&pool, b, DATA_ROOM), DATA_ROOM as u16));
            assert!(r.busy());
        }
        let mut last = part(&pool, 5, 100);
        assert_eq!(r.finish(&mut last), Ending::Frame(4 * DATA_ROOM + 100));
        assert!(!r.busy());
        let v = last.to_vec();
        assert_eq!(v.len(), 4 * DATA_ROOM + 100);
        assert!(v
            .chunks(DATA_ROOM)
            .zip(1u8..)
            .all(|(c, b)| c.iter().all(|&x| x == b)));
        drop(last);
        assert_eq!(pool.free_count(), 16);
    }

    #[test]
    fn a_frame_too_long_is_dropped_to_its_end_and_counted_once() {
        let pool = Mempool::new(&FakeDma::new(), 16).unwrap();
        let mut r = Reassembly::new(3000);
        assert!(r.part(part(&pool, 1, DATA_ROOM), DATA_ROOM as u16));
        assert!(
            !r.part(part(&pool, 2, DATA_ROOM), DATA_ROOM as u16),
            "too long"
        );
        assert!(
            r.part(part(&pool, 3, DATA_ROOM), DATA_ROOM as u16),
            "counted once"
        );
        let mut last = part(&pool, 4, 10);
        assert_eq!(
            r.finish(&mut last),
            Ending::Discarded,
            "counted at the part"
        );
        assert!(!r.busy());
        // The next frame starts clean; a last part that overflows drops its frame too.
        assert!(r.part(part(&pool, 5, DATA_ROOM), DATA_ROOM as u16));
        let mut long = part(&pool, 6, 1000);
        assert_eq!(r.finish(&mut long), Ending::Dropped);
        assert_eq!(long.to_vec(), vec![6; 1000], "the slot keeps its own part");
        drop((last, long));
        assert_eq!(pool.free_count(), 16);
    }

    #[test]
    fn a_bad_descriptor_drops_the_frame_under_way() {
        let pool = Mempool::new(&FakeDma::new(), 8).unwrap();
        let mut r = Reassembly::new(9018);
        assert!(!r.abort(true), "nothing under way");
        assert!(!r.busy());
        assert!(!r.abort(false), "a bad first part");
        assert!(r.busy(), "drops the rest of its frame");
        let mut end = part(&pool, 9, 10);
        assert_eq!(
            r.finish(&mut end),
            Ending::Discarded,
            "counted at the bad part"
        );
        drop(end);
        assert!(r.part(part(&pool, 1, DATA_ROOM), DATA_ROOM as u16));
        assert!(r.abort(false));
        assert!(r.busy(), "the rest of that frame is dropped");
        assert!(r.part(part(&pool, 2, DATA_ROOM), DATA_ROOM as u16));
        let mut last = part(&pool, 3, 10);
        assert_eq!(r.finish(&mut last), Ending::Discarded);
        assert!(r.part(part(&pool, 4, DATA_ROOM), DATA_ROOM as u16));
        assert!(r.abort(true));
        assert!(!r.busy(), "a bad last part ends it");
        drop(last);
        assert_eq!(pool.free_count(), 8);
    }
}
