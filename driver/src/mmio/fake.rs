//! [`FakeBar`]: registers in plain memory, the twin of a mapped BAR that host tests play a
//! device on, with the same bounds checks and clear-on-read cause registers.

use super::{in_bounds, Bar, Bell, Doorbell, Peek, Reader8};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Registers in plain memory, shared between a driver under test and a thread that plays
/// the device (the idea of virtio-drivers' `transport/fake.rs`).
#[derive(Clone)]
pub struct FakeBar {
    regs: Arc<[AtomicU32]>,
    /// Words that clear when read through [`Bar`] ([`FakeBar::clear_on_read`]), as word
    /// index + 1 (0: a free slot).
    clearing: Arc<[AtomicU32; CLEARING]>,
}

/// How many registers of one [`FakeBar`] may clear on read.
const CLEARING: usize = 4;

impl fmt::Debug for FakeBar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FakeBar({:#x} bytes)", self.regs.len() * 4)
    }
}

impl FakeBar {
    /// `len` bytes of registers, all zero. Clone it to hand the device side to a thread.
    pub fn new(len: usize) -> Self {
        Self {
            regs: (0..len / 4).map(|_| AtomicU32::new(0)).collect(),
            clearing: Arc::default(),
        }
    }

    /// Makes the 32-bit register holding `off` clear on every read through [`Bar`] (the
    /// whole word, whatever the width read), as an interrupt cause register does on
    /// silicon; the device side sets its bits with [`raise`](Self::raise) and looks with
    /// [`peek32`](Self::peek32), neither of which clears it. Up to 4 registers per BAR;
    /// false when they are taken or `off` lies outside.
    pub fn clear_on_read(&self, off: u32) -> bool {
        if !in_bounds(off, 1, self.regs.len() * 4) {
            return false;
        }
        let tag = off / 4 + 1;
        self.clearing.iter().any(|c| {
            c.load(Ordering::SeqCst) == tag
                || c.compare_exchange(0, tag, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
        })
    }

    /// Sets `bits` in the register at `off` in one atomic step (a device latching a cause
    /// while the driver may be reading, and so clearing, the register).
    pub fn raise(&self, off: u32, bits: u32) {
        if in_bounds(off, 4, self.regs.len() * 4) {
            self.regs[off as usize / 4].fetch_or(bits, Ordering::SeqCst);
        }
    }

    /// The register at `off` as it is, without clearing it (the device's view).
    pub fn peek32(&self, off: u32) -> u32 {
        if !in_bounds(off, 4, self.regs.len() * 4) {
            return u32::MAX;
        }
        self.regs[off as usize / 4].load(Ordering::SeqCst)
    }

    #[inline(always)]
    fn clears(&self, word: usize) -> bool {
        let tag = word as u32 + 1;
        self.clearing
            .iter()
            .any(|c| c.load(Ordering::Relaxed) == tag)
    }
}

impl FakeBar {
    /// Reads `width` bytes at `off` out of the 32-bit word holding them.
    fn read_sub(&self, off: u32, width: u32) -> u32 {
        if !in_bounds(off, width, self.regs.len() * 4) {
            return u32::MAX;
        }
        let idx = off as usize / 4;
        let word = if self.clears(idx) {
            self.regs[idx].swap(0, Ordering::SeqCst)
        } else {
            self.regs[idx].load(Ordering::SeqCst)
        };
        let mask = if width == 4 {
            u32::MAX
        } else {
            (1 << (8 * width)) - 1
        };
        (word >> (8 * (off % 4))) & mask
    }

    /// Writes `width` bytes at `off` into the 32-bit word holding them.
    pub(super) fn write_sub(&self, off: u32, width: u32, val: u32) {
        if !in_bounds(off, width, self.regs.len() * 4) {
            return;
        }
        let shift = 8 * (off % 4);
        let mask = if width == 4 {
            u32::MAX
        } else {
            ((1 << (8 * width)) - 1) << shift
        };
        let reg = &self.regs[off as usize / 4];
        let _ = reg.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
            Some((w & !mask) | ((val << shift) & mask))
        });
    }
}

impl Bar for FakeBar {
    fn size(&self) -> Option<usize> {
        Some(self.regs.len() * 4)
    }

    fn doorbell(&self, off: u32) -> Doorbell {
        if !in_bounds(off, 4, self.regs.len() * 4) {
            return Doorbell::dead();
        }
        Doorbell(Bell::Fake {
            regs: Arc::clone(&self.regs),
            idx: off as usize / 4,
        })
    }

    fn doorbell16(&self, off: u32) -> Doorbell {
        if !in_bounds(off, 2, self.regs.len() * 4) {
            return Doorbell::dead();
        }
        Doorbell(Bell::Fake16 {
            bar: self.clone(),
            off,
        })
    }

    fn reader8(&self, off: u32) -> Reader8 {
        if !in_bounds(off, 1, self.regs.len() * 4) {
            return Reader8::dead();
        }
        Reader8(Peek::Fake {
            bar: self.clone(),
            off,
        })
    }

    fn read32(&self, off: u32) -> u32 {
        self.read_sub(off, 4)
    }

    fn write32(&self, off: u32, val: u32) {
        self.write_sub(off, 4, val)
    }

    fn read16(&self, off: u32) -> u16 {
        self.read_sub(off, 2) as u16
    }

    fn write16(&self, off: u32, val: u16) {
        self.write_sub(off, 2, val.into())
    }

    fn read8(&self, off: u32) -> u8 {
        self.read_sub(off, 1) as u8
    }

    fn write8(&self, off: u32, val: u8) {
        self.write_sub(off, 1, val.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: an offset outside the BAR tripped a debug assertion, so a device giving
    /// a nonsense offset (virtio's queue_notify_off 0xFFFF) panicked debug builds.
    #[test]
    fn out_of_bounds_is_all_ones_and_dropped_without_a_panic() {
        let b = FakeBar::new(16);
        b.write32(0x3fffc, 1);
        b.write16(u32::MAX - 1, 1);
        assert_eq!(b.read32(0x3fffc), u32::MAX);
        assert_eq!(b.read8(16), u8::MAX);
        assert_eq!(b.size(), Some(16));
    }

    #[test]
    fn a_clear_on_read_register_clears_for_the_driver_only() {
        let b = FakeBar::new(64);
        assert!(b.clear_on_read(0));
        assert!(b.clear_on_read(0), "marking twice is fine");
        assert!(!b.clear_on_read(64), "outside the BAR");
        b.raise(0, 4);
        b.raise(0, 1);
        assert_eq!(b.peek32(0), 5, "the device's look leaves it");
        assert_eq!(b.read32(0), 5);
        assert_eq!(b.read32(0), 0, "cleared by the driver's read");
        b.write32(8, 7);
        assert_eq!((b.read32(8), b.read32(8)), (7, 7), "other registers keep");
        for off in [12, 16, 20] {
            b.clear_on_read(off);
        }
        assert!(!b.clear_on_read(24), "four at most");
    }

    #[test]
    fn fake_bar_is_shared() {
        let a = FakeBar::new(64);
        let b = a.clone();
        a.write32(8, 0xdead_beef);
        assert_eq!(b.read32(8), 0xdead_beef);
        a.write8(9, 0x12);
        a.write16(10, 0x3456);
        assert_eq!(b.read32(8), 0x3456_12ef);
        assert_eq!(b.read16(8), 0x12ef);
        assert_eq!(b.read8(11), 0x34);
    }

    /// A reader reads through the bar, so a clear-on-read register clears for it as for
    /// the driver's own read; it outlives the bar's other handles.
    #[test]
    fn a_reader_reads_one_byte_and_clears_a_cause_register() {
        let a = FakeBar::new(64);
        a.clear_on_read(0x10);
        let r = a.reader8(0x10);
        let far = a.reader8(64);
        let b = a.clone();
        drop(a);
        b.raise(0x10, 3);
        assert_eq!(r.read(), 3);
        assert_eq!(b.peek32(0x10), 0, "the read cleared it");
        assert!(far.is_dead() && far.read() == u8::MAX);
    }
}
