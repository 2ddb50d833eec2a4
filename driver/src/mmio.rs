//! All device register access goes through [`Bar`]: a mapped PCI BAR ([`MmioBar`]) or a
//! [`FakeBar`] whose registers a test thread plays the device on.
//!
//! Accesses are bounds- and alignment-checked: out of bounds, a read returns all ones (what
//! a PCI read of a missing device returns) and a write is dropped, rather than touching
//! memory outside the BAR. There is no assertion: some offsets come from the device (a
//! virtio capability, a queue's notify offset), and a lying device must not panic a debug
//! build either; the drivers check those offsets against the window they belong to.
//!
//! `fake.rs` holds [`FakeBar`], the plain-memory twin.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

mod fake;

pub use fake::FakeBar;

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
    /// A handle that reads the 8-bit register at `off` and nothing else, for a queue
    /// driven on another thread than the port's registers ([`Reader8`]): virtio's ISR
    /// status, which a queue sleeping on INTx reads to acknowledge the line. Out of
    /// bounds, the handle reads all ones, as [`read8`](Bar::read8) does; so does it by
    /// default, for a region with no such register (a test's register decoder).
    fn reader8(&self, off: u32) -> Reader8 {
        let _ = off;
        Reader8::dead()
    }
    /// Cuts every [`Doorbell`] and [`Reader8`] of this region off the device: their
    /// accesses land in private memory from now on (a read gives 0). A port calls it once
    /// its device is stopped, before the device is closed, so a queue handle that
    /// outlives its port can never reach the device again, whoever opens it next. Nothing
    /// by default (no device behind it).
    fn revoke_doorbells(&self) {}
}

/// One 8-bit device register a queue reads from its own thread (virtio's ISR status,
/// which clears when read). Like a [`Doorbell`], it keeps its mapping alive and is cut off
/// the device by [`Bar::revoke_doorbells`]. Not `Clone`: one register, one reader.
pub struct Reader8(Peek);

enum Peek {
    Mmio {
        ptr: NonNull<u8>,
        _map: Arc<memmap2::MmapRaw>,
    },
    Fake {
        bar: FakeBar,
        off: u32,
    },
    Dead,
}

impl fmt::Debug for Reader8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Peek::Mmio { ptr, .. } => write!(f, "Reader8({ptr:p})"),
            Peek::Fake { off, .. } => write!(f, "Reader8(fake {off:#x})"),
            Peek::Dead => write!(f, "Reader8(out of bounds)"),
        }
    }
}

// SAFETY: `ptr` points into the mapping `_map` keeps alive, and nothing but this handle
// reads through it; a device register may be read from any thread.
unsafe impl Send for Reader8 {}

impl Reader8 {
    /// A reader of nothing: what an out-of-bounds offset gets; it reads all ones.
    pub fn dead() -> Self {
        Self(Peek::Dead)
    }

    /// Whether the register was outside the region.
    pub fn is_dead(&self) -> bool {
        matches!(self.0, Peek::Dead)
    }

    /// Reads the register (with its side effect: ISR status clears).
    #[inline]
    pub fn read(&self) -> u8 {
        match &self.0 {
            // SAFETY: `ptr` is in bounds (checked when made), and `_map` keeps the mapping
            // alive; device registers are only accessed volatile.
            Peek::Mmio { ptr, .. } => unsafe { ptr.as_ptr().read_volatile() },
            Peek::Fake { bar, off } => bar.read8(*off),
            Peek::Dead => u8::MAX,
        }
    }
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

    fn reader8(&self, off: u32) -> Reader8 {
        if !in_bounds(off, 1, self.len) {
            return Reader8::dead();
        }
        // As in `doorbell`, one byte.
        match NonNull::new(self.ptr.as_ptr().wrapping_add(off as usize)) {
            Some(ptr) => Reader8(Peek::Mmio {
                ptr,
                _map: Arc::clone(&self.map),
            }),
            None => Reader8::dead(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A mapping of a shared file stands in for a BAR: what reaches the "device" is what
    /// lands in the file. After the revoke, a doorbell's write no longer does, and a
    /// reader no longer sees (or, for ISR, clears) the device's register.
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
        let reader = bar.reader8(0x1a);
        assert!(bar.reader8(4096).is_dead() && !reader.is_dead());
        bell.write(0x1234_5678);
        assert_eq!(reader.read(), 0x34, "before: the reader sees the device");
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
        assert_eq!(
            reader.read(),
            0,
            "after: the reader no longer sees the device"
        );
        bell.write(0xdead_beef);
        assert_eq!(word(&file), 0x1234_5678, "after: it does not");
        drop((bell, reader));
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
