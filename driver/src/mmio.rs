//! All device register access goes through [`Bar`]: a mapped PCI BAR ([`MmioBar`]) or a
//! [`FakeBar`] whose registers a test thread plays the device on.
//!
//! Accesses are bounds- and alignment-checked. A bad offset is a driver bug, so it trips a
//! debug assertion; in release builds a read returns all ones (what a PCI read of a missing
//! device returns) and a write is dropped, rather than touching memory outside the BAR.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// 32-bit register access to one device memory region.
pub trait Bar {
    /// Reads the 32-bit register at byte offset `off`.
    fn read32(&self, off: u32) -> u32;
    /// Writes the 32-bit register at byte offset `off`.
    fn write32(&self, off: u32, val: u32);
}

#[inline(always)]
fn in_bounds(off: u32, len: usize) -> bool {
    let ok = off.is_multiple_of(4) && (off as usize) + 4 <= len;
    debug_assert!(ok, "register offset {off:#x} outside a {len:#x}-byte BAR");
    ok
}

/// A memory BAR mapped into this process (through VFIO).
pub struct MmioBar {
    ptr: NonNull<u8>,
    len: usize,
    _map: memmap2::MmapRaw,
}

impl fmt::Debug for MmioBar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MmioBar({:p}, {:#x} bytes)", self.ptr, self.len)
    }
}

impl MmioBar {
    /// Wraps a mapping of a device's BAR.
    pub fn new(map: memmap2::MmapRaw) -> Option<Self> {
        Some(Self {
            ptr: NonNull::new(map.as_mut_ptr())?,
            len: map.len(),
            _map: map,
        })
    }

    /// Size of the BAR in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapped BAR has a size.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Bar for MmioBar {
    #[inline(always)]
    fn read32(&self, off: u32) -> u32 {
        if !in_bounds(off, self.len) {
            return u32::MAX;
        }
        // SAFETY: offset checked to be inside the mapping and 4-byte aligned; the mapping
        // lives as long as `self`; device registers are only accessed volatile.
        unsafe {
            self.ptr
                .as_ptr()
                .add(off as usize)
                .cast::<u32>()
                .read_volatile()
        }
    }

    #[inline(always)]
    fn write32(&self, off: u32, val: u32) {
        if !in_bounds(off, self.len) {
            return;
        }
        // SAFETY: as in `read32`.
        unsafe {
            self.ptr
                .add(off as usize)
                .cast::<u32>()
                .as_ptr()
                .write_volatile(val)
        }
    }
}

/// Registers in plain memory, shared between a driver under test and a thread that plays
/// the device (the idea of virtio-drivers' `transport/fake.rs`).
#[derive(Clone)]
pub struct FakeBar {
    regs: Arc<[AtomicU32]>,
}

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
        }
    }
}

impl Bar for FakeBar {
    fn read32(&self, off: u32) -> u32 {
        if !in_bounds(off, self.regs.len() * 4) {
            return u32::MAX;
        }
        self.regs[off as usize / 4].load(Ordering::SeqCst)
    }

    fn write32(&self, off: u32, val: u32) {
        if in_bounds(off, self.regs.len() * 4) {
            self.regs[off as usize / 4].store(val, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_bar_is_shared() {
        let a = FakeBar::new(64);
        let b = a.clone();
        a.write32(8, 0xdead_beef);
        assert_eq!(b.read32(8), 0xdead_beef);
    }
}
