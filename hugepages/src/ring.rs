//! A descriptor ring in DMA memory: 16-byte slots of two little-endian 64-bit words.
//!
//! Every NIC family zcnic drives or plans (e1000 legacy and igb/ixgbe advanced
//! descriptors) uses 16-byte descriptors, so a ring holds words, not a descriptor type:
//! nothing of a Rust type is ever read out of memory the device writes, only integers,
//! which any bit pattern is. The descriptor types convert from the words themselves.
//!
//! ```compile_fail
//! // The ring is not generic: a type with invalid bit patterns cannot be read from it.
//! let ring = zcnic_hugepages::DmaRing::<std::num::NonZeroU32>::new(
//!     &zcnic_hugepages::FakeDma::new(), 8);
//! ```

use crate::{DmaAllocator, DmaError, DmaRegion};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes per slot.
pub const SLOT: usize = 16;

/// A ring of 16-byte descriptors in DMA memory. The device reads and writes the slots, so
/// they are only ever accessed as atomic 64-bit words, never referenced.
pub struct DmaRing {
    region: DmaRegion,
    mask: usize,
}

impl fmt::Debug for DmaRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaRing")
            .field("slots", &(self.mask + 1))
            .field("region", &self.region)
            .finish()
    }
}

impl DmaRing {
    /// A zeroed ring of `slots` descriptors (a power of two).
    pub fn new(alloc: &dyn DmaAllocator, slots: usize) -> Result<Self, DmaError> {
        let bytes = slots
            .checked_mul(SLOT)
            .filter(|_| slots.is_power_of_two())
            .ok_or_else(|| DmaError::Invalid(format!("ring of {slots} slots")))?;
        let region = alloc.alloc(bytes)?;
        if region.len() < bytes || !(region.as_ptr() as usize).is_multiple_of(SLOT) {
            return Err(DmaError::Invalid(
                "allocator returned a short region".into(),
            ));
        }
        Ok(Self {
            region,
            mask: slots - 1,
        })
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.mask + 1
    }

    /// Size in bytes, as a device's ring-length register wants it.
    pub fn bytes(&self) -> usize {
        self.slots() * SLOT
    }

    /// IOVA of slot 0.
    pub fn iova(&self) -> u64 {
        self.region.iova()
    }

    /// Slot `i` (wrapped to the ring) as its two words.
    #[inline(always)]
    pub fn read_words(&self, i: usize) -> [u64; 2] {
        self.words().read(i)
    }

    /// Writes slot `i` (wrapped to the ring) as two words.
    #[inline(always)]
    pub fn write_words(&self, i: usize, words: [u64; 2]) {
        self.words().write(i, words)
    }

    /// The ring as its base address and mask, for a loop over a burst (see [`Words`]).
    #[inline(always)]
    pub fn words(&self) -> Words<'_> {
        Words {
            base: self.region.as_ptr().cast(),
            mask: self.mask,
            _ring: PhantomData,
        }
    }

    /// Never unmap or free the ring (see [`DmaRegion::leak`]).
    pub fn leak(&mut self) {
        self.region.leak();
    }
}

/// A [`DmaRing`] as its base address and mask, copied out: a loop keeps them in registers,
/// where it would reload them from the ring after each store to a slot (such a store may,
/// as far as the compiler knows, alias them). Borrows the ring, so it cannot outlive the
/// memory.
#[derive(Debug, Clone, Copy)]
pub struct Words<'a> {
    base: *mut u64,
    mask: usize,
    _ring: PhantomData<&'a DmaRing>,
}

impl Words<'_> {
    /// The slot a free-running counter refers to: `counter & mask`, the wrap the accessors
    /// apply themselves, so a loop that also indexes its own table by the slot masks once.
    #[inline(always)]
    pub fn slot(self, counter: u32) -> usize {
        counter as usize & self.mask
    }

    /// The highest slot number (slots - 1). A loop that slices its own per-slot table to
    /// `..=last()` once has every [`slot`](Self::slot) in bounds without a check per use.
    #[inline(always)]
    pub fn last(self) -> usize {
        self.mask
    }

    /// Slot `i & mask`'s first word: 16 bytes at an offset that is a multiple of 16 from
    /// a 16-aligned base, inside the ring's region (checked in `DmaRing::new`).
    #[inline(always)]
    fn at(self, i: usize) -> *mut u64 {
        self.base.wrapping_add(2 * (i & self.mask))
    }

    /// Slot `i`'s two words (two atomic loads).
    #[inline(always)]
    pub fn read(self, i: usize) -> [u64; 2] {
        let w = self.at(i);
        // SAFETY: see `at`: two aligned u64s in bounds of the borrowed ring, which the
        // device and the driver access only atomically.
        unsafe {
            [
                u64::from_le(AtomicU64::from_ptr(w).load(Ordering::Relaxed)),
                u64::from_le(AtomicU64::from_ptr(w.add(1)).load(Ordering::Relaxed)),
            ]
        }
    }

    /// Slot `i`'s second word alone (one atomic load): where a written-back descriptor
    /// keeps its status and length on the e1000.
    #[inline(always)]
    pub fn read_second(self, i: usize) -> u64 {
        let w = self.at(i);
        // SAFETY: as in `read`.
        unsafe { u64::from_le(AtomicU64::from_ptr(w.add(1)).load(Ordering::Relaxed)) }
    }

    /// Writes slot `i`'s two words (two atomic stores, first word first).
    #[inline(always)]
    pub fn write(self, i: usize, words: [u64; 2]) {
        let w = self.at(i);
        // SAFETY: as in `read`.
        unsafe {
            AtomicU64::from_ptr(w).store(words[0].to_le(), Ordering::Relaxed);
            AtomicU64::from_ptr(w.add(1)).store(words[1].to_le(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeDma;

    #[test]
    fn ring_wraps_slots() {
        let ring = DmaRing::new(&FakeDma::new(), 8).unwrap();
        ring.write_words(9, [1, 2]);
        assert_eq!(ring.read_words(1), [1, 2]);
        assert_eq!(ring.bytes(), 128);
        assert!(DmaRing::new(&FakeDma::new(), 6).is_err());
        assert!(
            DmaRing::new(&FakeDma::new(), 1 << 62).is_err(),
            "no overflow"
        );
    }
}
