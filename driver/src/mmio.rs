//! All device register access goes through [`Bar`]: a mapped PCI BAR ([`MmioBar`]) or a
//! [`FakeBar`] whose registers a test thread plays the device on.
//!
//! Accesses are bounds- and alignment-checked: out of bounds, a read returns all ones (what
//! a PCI read of a missing device returns) and a write is dropped, rather than touching
//! memory outside the BAR. There is no assertion: some offsets come from the device (a
//! virtio capability, a queue's notify offset), and a lying device must not panic a debug
//! build either; the drivers check those offsets against the window they belong to.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Register access to one device region. Sub-word accesses are real 8/16-bit accesses:
/// virtio's common configuration has byte and half-word registers next to each other.
///
/// `Send`, so a port and its registers can move to the thread that drives them; not
/// required to be `Sync`, as a port's registers have one owner at a time.
pub trait Bar: Send {
    /// Reads the 32-bit register at byte offset `off`.
    fn read32(&self, off: u32) -> u32;
    /// Writes the 32-bit register at byte offset `off`.
    fn write32(&self, off: u32, val: u32);
    /// Reads the 16-bit register at `off`.
    fn read16(&self, off: u32) -> u16;
    /// Writes the 16-bit register at `off`.
    fn write16(&self, off: u32, val: u16);
    /// Reads the 8-bit register at `off`.
    fn read8(&self, off: u32) -> u8;
    /// Writes the 8-bit register at `off`.
    fn write8(&self, off: u32, val: u8);
    /// Size of the region in bytes, when known.
    fn size(&self) -> Option<usize> {
        None
    }
    /// A handle that writes the 32-bit register at `off` and nothing else, for a queue
    /// driven on another thread than the port's registers ([`Doorbell`]). Out of bounds,
    /// the handle drops its writes, as [`write32`](Bar::write32) does.
    fn doorbell(&self, off: u32) -> Doorbell;
    /// [`doorbell`](Bar::doorbell) for a 16-bit register (virtio's queue notify address):
    /// each write is one 16-bit access of the value's low half.
    fn doorbell16(&self, off: u32) -> Doorbell;
    /// Cuts every [`Doorbell`] of this region off the device: their writes land in
    /// private memory from now on. A port calls it once its device is stopped, before
    /// the device is closed, so a queue handle that outlives its port can never ring the
    /// device again, whoever opens it next. Nothing by default (no device behind it).
    fn revoke_doorbells(&self) {}
}

/// One 32-bit (or 16-bit) device register a queue writes from its own thread: its tail,
/// or its notify address. It keeps the mapping it points into alive, so it may outlive
/// the port it came from: the port revokes the mapping when it closes
/// ([`Bar::revoke_doorbells`]), after which a write goes to private memory, never to the
/// device. Not `Clone`: one register, one writer.
pub struct Doorbell(Bell);

enum Bell {
    Mmio {
        ptr: NonNull<u32>,
        _map: Arc<memmap2::MmapRaw>,
    },
    Mmio16 {
        ptr: NonNull<u16>,
        _map: Arc<memmap2::MmapRaw>,
    },
    Fake {
        regs: Arc<[AtomicU32]>,
        idx: usize,
    },
    Fake16 {
        bar: FakeBar,
        off: u32,
    },
    Hook(Box<dyn Fn(u32) + Send>),
    Dead,
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Bell::Mmio { ptr, .. } => write!(f, "Doorbell({ptr:p})"),
            Bell::Mmio16 { ptr, .. } => write!(f, "Doorbell16({ptr:p})"),
            Bell::Fake { idx, .. } => write!(f, "Doorbell(fake {:#x})", idx * 4),
            Bell::Fake16 { off, .. } => write!(f, "Doorbell16(fake {off:#x})"),
            Bell::Hook(_) => write!(f, "Doorbell(hook)"),
            Bell::Dead => write!(f, "Doorbell(out of bounds)"),
        }
    }
}

// SAFETY: `ptr` points into the mapping `_map` keeps alive, and nothing but this handle
// writes through it; a device register may be written from any thread.
unsafe impl Send for Doorbell {}

impl Doorbell {
    /// A doorbell whose writes go nowhere: what an out-of-bounds offset gets.
    pub fn dead() -> Self {
        Self(Bell::Dead)
    }

    /// A doorbell that calls `f` with each value written: for a test device that acts in
    /// the driver's write, as a register decoder does.
    pub fn hook(f: impl Fn(u32) + Send + 'static) -> Self {
        Self(Bell::Hook(Box::new(f)))
    }

    /// Whether writes go nowhere (the register was outside the region).
    pub fn is_dead(&self) -> bool {
        matches!(self.0, Bell::Dead)
    }

    /// Writes `val` to the register (its low half, for a 16-bit one).
    #[inline(always)]
    pub fn write(&self, val: u32) {
        match &self.0 {
            // SAFETY: `ptr` is in bounds and aligned (checked when made), and `_map` keeps
            // the mapping alive; device registers are only accessed volatile.
            Bell::Mmio { ptr, .. } => unsafe { ptr.as_ptr().write_volatile(val) },
            // SAFETY: as for `Mmio`, at 16 bits.
            Bell::Mmio16 { ptr, .. } => unsafe { ptr.as_ptr().write_volatile(val as u16) },
            Bell::Fake { regs, idx } => regs[*idx].store(val, Ordering::SeqCst),
            Bell::Fake16 { bar, off } => bar.write_sub(*off, 2, val & 0xffff),
            Bell::Hook(f) => f(val),
            Bell::Dead => {}
        }
    }
}

#[inline(always)]
fn in_bounds(off: u32, width: u32, len: usize) -> bool {
    off.is_multiple_of(width) && (off as usize) + width as usize <= len
}

/// Volatile read of a `T` at byte `off` of a mapping, bounds- and alignment-checked.
macro_rules! mmio_read {
    ($self:ident, $t:ty, $off:ident) => {{
        let w = std::mem::size_of::<$t>() as u32;
        if !in_bounds($off, w, $self.len) {
            return <$t>::MAX;
        }
        // SAFETY: offset checked to be inside the mapping and aligned to the access width;
        // the mapping lives as long as `self`; device registers are only accessed volatile.
        unsafe {
            $self
                .ptr
                .as_ptr()
                .add($off as usize)
                .cast::<$t>()
                .read_volatile()
        }
    }};
}

/// Volatile write of a `T` at byte `off` of a mapping, bounds- and alignment-checked.
macro_rules! mmio_write {
    ($self:ident, $t:ty, $off:ident, $val:ident) => {{
        let w = std::mem::size_of::<$t>() as u32;
        if !in_bounds($off, w, $self.len) {
            return;
        }
        // SAFETY: as in `mmio_read`.
        unsafe {
            $self
                .ptr
                .as_ptr()
                .add($off as usize)
                .cast::<$t>()
                .write_volatile($val)
        }
    }};
}

/// A memory BAR mapped into this process (through VFIO).
pub struct MmioBar {
    ptr: NonNull<u8>,
    len: usize,
    /// Shared with the [`Doorbell`]s handed out, which keep it mapped.
    map: Arc<memmap2::MmapRaw>,
}

impl fmt::Debug for MmioBar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MmioBar({:p}, {:#x} bytes)", self.ptr, self.len)
    }
}

// SAFETY: an `MmioBar` holds its mapping alive (`map`, itself `Send`), and `ptr` points only
// into it; what else refers to the mapping are `Doorbell`s, each writing one register. A device
// register may be accessed from any thread; what matters is that one thread at a time does,
// and `MmioBar` is deliberately not `Sync`, so two threads never write through one `&MmioBar`.
unsafe impl Send for MmioBar {}

impl MmioBar {
    /// Wraps a mapping of a device's BAR.
    ///
    /// # Safety
    /// `map` must be a readable and writable mapping of a device's memory BAR, whole: every
    /// byte of it must be accessible for as long as the mapping lives (a read-only mapping
    /// faults on a write, a file mapping longer than its file raises SIGBUS), and accessing
    /// it must have no effect on this process's memory beyond the device's own behaviour.
    pub unsafe fn new(map: memmap2::MmapRaw) -> Option<Self> {
        Some(Self {
            ptr: NonNull::new(map.as_mut_ptr())?,
            len: map.len(),
            map: Arc::new(map),
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
    fn size(&self) -> Option<usize> {
        Some(self.len)
    }

    fn doorbell(&self, off: u32) -> Doorbell {
        if !in_bounds(off, 4, self.len) {
            return Doorbell::dead();
        }
        // `off` is inside the mapping and aligned, so the pointer is too.
        let ptr = self.ptr.as_ptr().wrapping_add(off as usize).cast::<u32>();
        match NonNull::new(ptr) {
            Some(ptr) => Doorbell(Bell::Mmio {
                ptr,
                _map: Arc::clone(&self.map),
            }),
            None => Doorbell::dead(),
        }
    }

    fn doorbell16(&self, off: u32) -> Doorbell {
        if !in_bounds(off, 2, self.len) {
            return Doorbell::dead();
        }
        // As in `doorbell`, at 16 bits.
        let ptr = self.ptr.as_ptr().wrapping_add(off as usize).cast::<u16>();
        match NonNull::new(ptr) {
            Some(ptr) => Doorbell(Bell::Mmio16 {
                ptr,
                _map: Arc::clone(&self.map),
            }),
            None => Doorbell::dead(),
        }
    }

    fn revoke_doorbells(&self) {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // The old mapping's device file is released; the mapping's owner unmaps the range
        // when its last holder goes, as before.
        // SAFETY: replaces this BAR's own mapping in place, atomically, with private memory
        // of the same size: every pointer into it stays valid, no reference points into it.
        let p = unsafe { libc::mmap(self.ptr.as_ptr().cast(), self.len, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            log::warn!(
                "could not revoke a BAR mapping: {}; its queue handles can still reach the device",
                std::io::Error::last_os_error()
            );
        }
    }

    #[inline(always)]
    fn read32(&self, off: u32) -> u32 {
        mmio_read!(self, u32, off)
    }

    #[inline(always)]
    fn write32(&self, off: u32, val: u32) {
        mmio_write!(self, u32, off, val)
    }

    #[inline(always)]
    fn read16(&self, off: u32) -> u16 {
        mmio_read!(self, u16, off)
    }

    #[inline(always)]
    fn write16(&self, off: u32, val: u16) {
        mmio_write!(self, u16, off, val)
    }

    #[inline(always)]
    fn read8(&self, off: u32) -> u8 {
        mmio_read!(self, u8, off)
    }

    #[inline(always)]
    fn write8(&self, off: u32, val: u8) {
        mmio_write!(self, u8, off, val)
    }
}

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
    fn write_sub(&self, off: u32, width: u32, val: u32) {
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

    /// A mapping of a shared file stands in for a BAR: what reaches the "device" is what
    /// lands in the file. After the revoke, a doorbell's write no longer does.
    #[test]
    fn a_revoked_doorbell_no_longer_reaches_the_device() {
        let path = std::env::temp_dir().join(format!("zcnic-bar-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(4096).unwrap();
        let map = memmap2::MmapOptions::new()
            .len(4096)
            .map_raw(&file)
            .unwrap();
        // SAFETY: a readable and writable shared mapping of a 4096-byte file, whole, for
        // as long as `bar` lives; it stands in for device memory.
        let bar = unsafe { MmioBar::new(map) }.unwrap();
        let bell = bar.doorbell(0x18);
        bell.write(0x1234_5678);
        let word = |f: &std::fs::File| {
            let mut b = [0u8; 4];
            std::os::unix::fs::FileExt::read_exact_at(f, &mut b, 0x18).unwrap();
            u32::from_le_bytes(b)
        };
        assert_eq!(
            word(&file),
            0x1234_5678,
            "before: the write reaches the device"
        );
        bar.revoke_doorbells();
        drop(bar);
        bell.write(0xdead_beef);
        assert_eq!(word(&file), 0x1234_5678, "after: it does not");
        drop(bell);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_doorbell_writes_its_register_and_outlives_the_bar() {
        let a = FakeBar::new(64);
        let bell = a.doorbell(12);
        let far = a.doorbell(64);
        let b = a.clone();
        drop(a);
        bell.write(7);
        far.write(9);
        assert_eq!(b.read32(12), 7);
        assert!(far.is_dead() && !bell.is_dead());
        assert!((0..64).step_by(4).all(|o| o == 12 || b.read32(o) == 0));
        fn send<T: Send>(_: &T) {}
        send(&bell);
    }

    #[test]
    fn a_16_bit_doorbell_writes_only_its_half() {
        let a = FakeBar::new(64);
        a.write32(8, 0xaaaa_bbbb);
        let bell = a.doorbell16(10);
        bell.write(0x1234_5678);
        assert_eq!(a.read32(8), 0x5678_bbbb);
        assert!(a.doorbell16(63).is_dead() && a.doorbell16(64).is_dead());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let hook = Doorbell::hook(move |v| s.lock().unwrap().push(v));
        hook.write(3);
        assert_eq!(*seen.lock().unwrap(), [3]);
    }
}
