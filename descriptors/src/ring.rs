//! Index arithmetic for descriptor rings driven by free-running counters.
//!
//! A driver keeps two counters per ring that only ever increase (wrapping at 2^32): how many
//! descriptors it has produced and how many it has consumed. The slot of a counter is the
//! counter modulo the ring size, which must be a power of two so the modulo is a mask and the
//! counters stay consistent across the 2^32 wrap. ixy and DPDK keep wrapped slot numbers
//! instead; free-running counters make "how many are in flight" a single subtraction with no
//! full/empty ambiguity.

use std::fmt;

/// A ring size that is not a power of two in the range the hardware accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSizeError(pub u32);

impl fmt::Display for RingSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ring size {} is not a power of two between 8 and 32768",
            self.0
        )
    }
}

impl std::error::Error for RingSizeError {}

/// Slot arithmetic for a ring of `size` descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingIndex {
    mask: u32,
}

impl RingIndex {
    /// Largest ring any supported NIC takes (virtio's queue size is a u16; 32768 is its
    /// largest power of two).
    pub const MAX: u32 = 32768;

    /// A ring of `size` slots; `size` must be a power of two in `8..=32768`.
    pub const fn new(size: u32) -> Result<Self, RingSizeError> {
        if size < 8 || size > Self::MAX || !size.is_power_of_two() {
            return Err(RingSizeError(size));
        }
        Ok(Self { mask: size - 1 })
    }

    /// Number of slots.
    pub const fn size(self) -> u32 {
        self.mask + 1
    }

    /// Slot that a free-running counter refers to.
    #[inline(always)]
    pub const fn slot(self, counter: u32) -> usize {
        (counter & self.mask) as usize
    }

    /// Descriptors produced and not yet consumed. Valid while the producer never runs more
    /// than `size` ahead, which [`RingIndex::free`] lets a producer check.
    #[inline(always)]
    pub const fn in_flight(self, produced: u32, consumed: u32) -> u32 {
        produced.wrapping_sub(consumed)
    }

    /// Slots a producer may still fill before it would overwrite an unconsumed one.
    #[inline(always)]
    pub const fn free(self, produced: u32, consumed: u32) -> u32 {
        self.size()
            .saturating_sub(self.in_flight(produced, consumed))
    }

    /// Forward distance in slots from slot `from` to slot `to` (both already wrapped), e.g.
    /// how far a hardware head register has moved.
    #[inline(always)]
    pub const fn distance(self, from: u32, to: u32) -> u32 {
        to.wrapping_sub(from) & self.mask
    }

    /// Whether a device-reported slot number lies in the window `[consumed, produced]` of
    /// slots handed to the device (inclusive of `produced`, where an idle head rests).
    /// A slot outside it means the device is reporting nonsense.
    pub const fn head_in_window(self, consumed: u32, produced: u32, hw_slot: u32) -> bool {
        if hw_slot > self.mask {
            return false;
        }
        let window = self.in_flight(produced, consumed);
        self.distance(consumed & self.mask, hw_slot) <= window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_sizes() {
        for bad in [0, 1, 4, 7, 12, 500, 65536, u32::MAX] {
            assert_eq!(RingIndex::new(bad), Err(RingSizeError(bad)));
        }
        for good in [8, 16, 256, 512, 4096, 32768] {
            assert_eq!(RingIndex::new(good).unwrap().size(), good);
        }
    }

    #[test]
    fn counters_wrap_at_u32() {
        let r = RingIndex::new(8).unwrap();
        let consumed = u32::MAX - 1;
        let produced = consumed.wrapping_add(5);
        assert_eq!(r.in_flight(produced, consumed), 5);
        assert_eq!(r.free(produced, consumed), 3);
        assert_eq!(r.slot(produced), 3);
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]
        /// Produce/consume in random steps from a random start: in_flight equals the true
        /// count, slots advance one by one, and free never goes negative.
        #[test]
        fn model(start in any::<u32>(), log2 in 3u32..16, steps in prop::collection::vec((0u32..64, 0u32..64), 1..200)) {
            let r = RingIndex::new(1 << log2).unwrap();
            let (mut prod, mut cons, mut model_len) = (start, start, 0u64);
            for (p, c) in steps {
                let p = p.min(r.free(prod, cons));
                for _ in 0..p {
                    let before = r.slot(prod);
                    prod = prod.wrapping_add(1);
                    prop_assert_eq!(r.slot(prod), (before + 1) % r.size() as usize);
                }
                model_len += u64::from(p);
                let c = c.min(r.in_flight(prod, cons));
                cons = cons.wrapping_add(c);
                model_len -= u64::from(c);
                prop_assert_eq!(u64::from(r.in_flight(prod, cons)), model_len);
                prop_assert!(r.in_flight(prod, cons) <= r.size());
                prop_assert_eq!(r.free(prod, cons) + r.in_flight(prod, cons), r.size());
            }
        }

        /// The window check accepts exactly the slots from the consumer to the producer.
        #[test]
        fn head_window(cons in any::<u32>(), len in 0u32..256, hw in 0u32..300) {
            let r = RingIndex::new(256).unwrap();
            let prod = cons.wrapping_add(len);
            let inside = (0..=len).any(|k| r.slot(cons.wrapping_add(k)) as u32 == hw);
            prop_assert_eq!(r.head_in_window(cons, prod, hw), inside && hw < 256);
        }

        #[test]
        fn distance_is_modular(from in 0u32..1024, d in 0u32..1024) {
            let r = RingIndex::new(1024).unwrap();
            prop_assert_eq!(r.distance(from, (from + d) % 1024), d);
        }
    }
}
