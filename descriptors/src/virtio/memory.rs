//! The memory a virtqueue lives in, as seen by the ring logic.
//!
//! In the driver this is DMA memory reached through volatile accesses (the `zcnic` crate
//! implements [`QueueMemory`] over its hugepage region); in tests it is a [`VecMemory`]. All
//! ring fields are little-endian (virtio 1.1 §2.6, §2.7.13; legacy devices use guest-native
//! order, §2.6.3, which is the same on the little-endian hosts zcnic supports).

use std::cell::Cell;
use std::rc::Rc;

/// Access to the memory a virtqueue lives in: DMA memory in the driver (volatile accesses),
/// a plain buffer in tests. Offsets are bytes from the start of the queue's memory; all
/// values little-endian in memory (implementations convert). Out-of-range offsets are a
/// bug in the caller; implementations may ignore the write / return 0.
///
/// Accesses take `&self` because the device writes the same memory behind the driver's
/// back: nothing here may hand out a Rust reference into it.
pub trait QueueMemory {
    /// Reads the little-endian `u16` at `off`.
    fn read_u16(&self, off: usize) -> u16;
    /// Writes `v` little-endian at `off`.
    fn write_u16(&self, off: usize, v: u16);
    /// Reads the little-endian `u32` at `off`.
    fn read_u32(&self, off: usize) -> u32;
    /// Writes `v` little-endian at `off`.
    fn write_u32(&self, off: usize, v: u32);
    /// Reads the little-endian `u64` at `off`.
    fn read_u64(&self, off: usize) -> u64;
    /// Writes `v` little-endian at `off`.
    fn write_u64(&self, off: usize, v: u64);
}

/// Lets a queue and a test device (or the driver and its fake) share one memory.
impl<T: QueueMemory + ?Sized> QueueMemory for &T {
    fn read_u16(&self, off: usize) -> u16 {
        (**self).read_u16(off)
    }
    fn write_u16(&self, off: usize, v: u16) {
        (**self).write_u16(off, v)
    }
    fn read_u32(&self, off: usize) -> u32 {
        (**self).read_u32(off)
    }
    fn write_u32(&self, off: usize, v: u32) {
        (**self).write_u32(off, v)
    }
    fn read_u64(&self, off: usize) -> u64 {
        (**self).read_u64(off)
    }
    fn write_u64(&self, off: usize, v: u64) {
        (**self).write_u64(off, v)
    }
}

/// Shared ownership for tests that keep the device model and the queue in one struct.
impl<T: QueueMemory + ?Sized> QueueMemory for Rc<T> {
    fn read_u16(&self, off: usize) -> u16 {
        (**self).read_u16(off)
    }
    fn write_u16(&self, off: usize, v: u16) {
        (**self).write_u16(off, v)
    }
    fn read_u32(&self, off: usize) -> u32 {
        (**self).read_u32(off)
    }
    fn write_u32(&self, off: usize, v: u32) {
        (**self).write_u32(off, v)
    }
    fn read_u64(&self, off: usize) -> u64 {
        (**self).read_u64(off)
    }
    fn write_u64(&self, off: usize, v: u64) {
        (**self).write_u64(off, v)
    }
}

/// Plain-memory [`QueueMemory`] for tests and fake devices: zero-filled bytes that can be
/// written through `&self`, so a queue and a device model can share it via `&VecMemory`.
///
/// An access that does not fit entirely inside the buffer reads 0 / writes nothing.
/// Single-threaded (`!Sync`): a fake device on another thread needs its own memory type.
///
/// ```
/// use zcnic_descriptors::virtio::{QueueMemory, VecMemory};
/// let mem = VecMemory::new(16);
/// mem.write_u32(4, 0x1122_3344);
/// assert_eq!(mem.read_u16(4), 0x3344); // little-endian
/// assert_eq!(mem.read_u64(12), 0); // out of range
/// ```
#[derive(Debug, Clone)]
pub struct VecMemory {
    bytes: Box<[Cell<u8>]>,
}

impl VecMemory {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        Self {
            bytes: (0..len).map(|_| Cell::new(0)).collect(),
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the memory has no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Copies out `len` bytes at `off` (zeros where out of range), e.g. to compare
    /// snapshots in a test.
    pub fn read_bytes(&self, off: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                off.checked_add(i)
                    .and_then(|o| self.bytes.get(o))
                    .map_or(0, Cell::get)
            })
            .collect()
    }

    fn cells<const W: usize>(&self, off: usize) -> Option<&[Cell<u8>]> {
        self.bytes.get(off..off.checked_add(W)?)
    }

    fn load<const W: usize>(&self, off: usize) -> [u8; W] {
        let mut out = [0u8; W];
        if let Some(cells) = self.cells::<W>(off) {
            for (o, c) in out.iter_mut().zip(cells) {
                *o = c.get();
            }
        }
        out
    }

    fn store<const W: usize>(&self, off: usize, v: [u8; W]) {
        if let Some(cells) = self.cells::<W>(off) {
            for (c, b) in cells.iter().zip(v) {
                c.set(b);
            }
        }
    }
}

impl QueueMemory for VecMemory {
    fn read_u16(&self, off: usize) -> u16 {
        u16::from_le_bytes(self.load(off))
    }
    fn write_u16(&self, off: usize, v: u16) {
        self.store(off, v.to_le_bytes())
    }
    fn read_u32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.load(off))
    }
    fn write_u32(&self, off: usize, v: u32) {
        self.store(off, v.to_le_bytes())
    }
    fn read_u64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.load(off))
    }
    fn write_u64(&self, off: usize, v: u64) {
        self.store(off, v.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn little_endian_layout() {
        let m = VecMemory::new(16);
        m.write_u64(0, 0x0102_0304_0506_0708);
        assert_eq!(m.read_bytes(0, 8), [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(m.read_u32(0), 0x0506_0708);
        assert_eq!(m.read_u32(4), 0x0102_0304);
        assert_eq!(m.read_u16(6), 0x0102);
    }

    #[test]
    fn out_of_range_is_ignored() {
        let m = VecMemory::new(10);
        m.write_u64(4, u64::MAX); // 4..12 does not fit: nothing written
        assert_eq!(m.read_bytes(0, 10), [0; 10]);
        m.write_u16(8, 0xBEEF); // 8..10 fits exactly
        assert_eq!(m.read_u16(8), 0xBEEF);
        assert_eq!(m.read_u32(8), 0);
        assert_eq!(m.read_u16(usize::MAX), 0);
        m.write_u32(usize::MAX - 1, 1);
        assert!(!m.is_empty());
        assert!(VecMemory::new(0).is_empty());
    }

    #[test]
    fn shared_through_references_and_rc() {
        let m = Rc::new(VecMemory::new(8));
        let by_ref: &dyn QueueMemory = &*m;
        by_ref.write_u32(0, 7);
        assert_eq!(m.read_u32(0), 7);
        let twin = Rc::clone(&m);
        twin.write_u16(4, 9);
        let shared: &VecMemory = &m;
        assert_eq!(shared.read_u16(4), 9);
        assert_eq!(m.len(), 8);
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]
        #[test]
        fn round_trips(off in 0usize..24, a in any::<u16>(), b in any::<u32>(), c in any::<u64>()) {
            let m = VecMemory::new(40);
            m.write_u16(off, a);
            prop_assert_eq!(m.read_u16(off), a);
            m.write_u32(off, b);
            prop_assert_eq!(m.read_u32(off), b);
            m.write_u64(off, c);
            prop_assert_eq!(m.read_u64(off), c);
            prop_assert_eq!(m.read_bytes(off, 8), c.to_le_bytes().to_vec());
        }
    }
}
