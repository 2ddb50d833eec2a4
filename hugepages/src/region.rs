//! DMA regions, the allocator and mapper traits, the heap-backed fake, and descriptor rings.
//!
//! This is one of the few modules that holds `unsafe`: it turns raw memory shared with a
//! device into safe handles. Memory the device may write is never behind a Rust reference
//! while the device owns it; rings are read and written with volatile copies.

use crate::{DmaError, HUGEPAGE};
use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Where a region sits in the device's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Iovas {
    /// One IOVA range for the whole region (VFIO with IOVAs zcnic picks; the fake).
    Contiguous(u64),
    /// One IOVA per 2 MiB page: physical addresses, contiguous only within a page.
    PerPage(Box<[u64]>),
}

impl Iovas {
    /// IOVA of byte `off` of the region.
    #[inline(always)]
    pub fn at(&self, off: usize) -> u64 {
        match self {
            Iovas::Contiguous(base) => base + off as u64,
            Iovas::PerPage(pages) => {
                pages.get(off / HUGEPAGE).copied().unwrap_or(0) + (off % HUGEPAGE) as u64
            }
        }
    }
}

/// Makes memory visible to a device and says at which IOVAs (a VFIO container, physical
/// addresses, or the fake IOMMU).
pub trait IovaMapper: Send + Sync {
    /// Maps `len` bytes at `va` (2 MiB aligned for hugepage memory) for device reads and
    /// writes.
    fn map(&self, va: *mut u8, len: usize) -> Result<Iovas, DmaError>;
    /// Undoes [`IovaMapper::map`]. Called only once the device no longer uses the memory.
    fn unmap(&self, iovas: &Iovas, len: usize);
}

/// A source of DMA memory (HAL-style, as in the virtio-drivers crate).
pub trait DmaAllocator {
    /// Allocates at least `len` zeroed bytes, aligned to 4 KiB, mapped for the device.
    fn alloc(&self, len: usize) -> Result<DmaRegion, DmaError>;
}

pub(crate) enum Backing {
    /// hugetlbfs pages, or anonymous memory from [`FakeDma`]; unmapped by `MmapRaw`'s drop.
    Map(#[allow(dead_code)] memmap2::MmapRaw),
    /// Heap memory from [`UserRegion::new`](crate::UserRegion::new).
    Heap(Layout),
    /// Memory the application handed over ([`UserRegion`]); freed after the unmap.
    User(#[allow(dead_code)] Box<[u8]>),
}

/// A contiguous piece of DMA memory: its virtual address, length and IOVA.
///
/// Dropping it unmaps it from the device first, then frees it. The driver guarantees the
/// device is quiesced before the last handle to a region goes.
pub struct DmaRegion {
    ptr: NonNull<u8>,
    len: usize,
    iovas: Iovas,
    mapper: Option<Arc<dyn IovaMapper>>,
    backing: Backing,
}

impl fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaRegion")
            .field("va", &self.ptr)
            .field("len", &self.len)
            .field("iova", &format_args!("{:#x}", self.iova()))
            .finish()
    }
}

// SAFETY: a DmaRegion owns its memory (no aliasing handle exists outside it), its mapper is
// Send + Sync, and all access through `&self` goes through bounds-checked volatile copies
// or is handed out by the pool to one owner at a time.
unsafe impl Send for DmaRegion {}
// SAFETY: as above; `&DmaRegion` only allows volatile copies and address queries.
unsafe impl Sync for DmaRegion {}

impl DmaRegion {
    pub(crate) fn new(
        ptr: NonNull<u8>,
        len: usize,
        iovas: Iovas,
        mapper: Option<Arc<dyn IovaMapper>>,
        backing: Backing,
    ) -> Self {
        Self {
            ptr,
            len,
            iovas,
            mapper,
            backing,
        }
    }

    /// Virtual address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: regions are never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// IOVA of the first byte.
    pub fn iova(&self) -> u64 {
        self.iovas.at(0)
    }

    /// IOVA of byte `off`. Only ranges inside one 2 MiB page are guaranteed contiguous.
    #[inline(always)]
    pub fn iova_at(&self, off: usize) -> u64 {
        self.iovas.at(off)
    }

    /// Copies a `T` out of the region at byte `off` (volatile: the device may write it).
    /// Out of range or misaligned reads return `None`.
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let size = std::mem::size_of::<T>();
        if off.checked_add(size)? > self.len || !off.is_multiple_of(std::mem::align_of::<T>()) {
            return None;
        }
        // SAFETY: in bounds and aligned (the base is page-aligned), checked above; T is one
        // of the integer types below, valid for any bit pattern.
        Some(unsafe { self.ptr.as_ptr().add(off).cast::<T>().read_volatile() })
    }

    /// Copies a `T` into the region at byte `off` (volatile); out of range is ignored.
    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, v: T) {
        let size = std::mem::size_of::<T>();
        let fits = off.checked_add(size).is_some_and(|end| end <= self.len);
        if fits && off.is_multiple_of(std::mem::align_of::<T>()) {
            // SAFETY: as in `load`; no reference into the region exists.
            unsafe { self.ptr.as_ptr().add(off).cast::<T>().write_volatile(v) }
        }
    }

    /// Little-endian u16 at `off` (0xffff when out of range).
    #[inline(always)]
    pub fn read_u16(&self, off: usize) -> u16 {
        self.load::<u16>(off).map_or(u16::MAX, u16::from_le)
    }

    /// Little-endian u32 at `off` (all ones when out of range).
    #[inline(always)]
    pub fn read_u32(&self, off: usize) -> u32 {
        self.load::<u32>(off).map_or(u32::MAX, u32::from_le)
    }

    /// Little-endian u64 at `off` (all ones when out of range).
    #[inline(always)]
    pub fn read_u64(&self, off: usize) -> u64 {
        self.load::<u64>(off).map_or(u64::MAX, u64::from_le)
    }

    /// Writes a little-endian u16 at `off`.
    #[inline(always)]
    pub fn write_u16(&self, off: usize, v: u16) {
        self.store(off, v.to_le())
    }

    /// Writes a little-endian u32 at `off`.
    #[inline(always)]
    pub fn write_u32(&self, off: usize, v: u32) {
        self.store(off, v.to_le())
    }

    /// Writes a little-endian u64 at `off`.
    #[inline(always)]
    pub fn write_u64(&self, off: usize, v: u64) {
        self.store(off, v.to_le())
    }

    /// Whether `off..off + len` is one contiguous IOVA range.
    pub fn is_contiguous(&self, off: usize, len: usize) -> bool {
        len == 0 || self.iova_at(off + len - 1) == self.iova_at(off) + (len - 1) as u64
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        if let Some(m) = &self.mapper {
            m.unmap(&self.iovas, self.len);
        }
        if let Backing::Heap(layout) = self.backing {
            // SAFETY: `ptr` came from `alloc_zeroed(layout)` (UserRegion::new) and is freed
            // once, after the device mapping is gone.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// Heap memory with IOVA = virtual address, for tests where a thread plays the device.
///
/// Clones share one fake IOMMU that knows every live region, so the device side can
/// only reach memory that was allocated for it ([`FakeDma::device_read`] and
/// [`FakeDma::device_write`] refuse anything else, like an IOMMU fault).
#[derive(Debug, Clone, Default)]
pub struct FakeDma {
    iommu: Arc<FakeIommu>,
}

#[derive(Debug, Default)]
struct FakeIommu {
    regions: Mutex<Vec<(u64, usize)>>,
}

impl FakeIommu {
    /// Runs `f` if `iova..iova+len` is inside a live region, holding the lock meanwhile so
    /// the region cannot be unmapped (and freed) under `f`.
    fn with_range(&self, iova: u64, len: usize, f: impl FnOnce()) -> bool {
        let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let inside = regions.iter().any(|&(start, rlen)| {
            iova >= start && iova.saturating_add(len as u64) <= start + rlen as u64
        });
        if inside {
            f();
        }
        inside
    }
}

impl IovaMapper for FakeIommu {
    fn map(&self, va: *mut u8, len: usize) -> Result<Iovas, DmaError> {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions.push((va as u64, len));
        Ok(Iovas::Contiguous(va as u64))
    }

    fn unmap(&self, iovas: &Iovas, _len: usize) {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let start = iovas.at(0);
        regions.retain(|&(s, _)| s != start);
    }
}

impl FakeDma {
    /// A fake with its own (empty) IOMMU.
    pub fn new() -> Self {
        Self::default()
    }

    /// The fake IOMMU, to register application memory with ([`UserRegion::register`]).
    pub fn mapper(&self) -> Arc<dyn IovaMapper> {
        self.iommu.clone()
    }

    /// The device reads `buf.len()` bytes at `iova`; false (nothing read) if the range is
    /// not inside a live region.
    pub fn device_read(&self, iova: u64, buf: &mut [u8]) -> bool {
        let len = buf.len();
        self.iommu.with_range(iova, len, || {
            // The range lies in a live region, checked under the lock held here so it cannot
            // be freed meanwhile (IOVA = VA); volatile: the driver accesses it concurrently.
            // A naturally aligned 2-, 4- or 8-byte access is one access, as on PCI: a ring
            // index read byte by byte could mix an old and a new half.
            let p = iova as *const u8;
            let aligned = iova.is_multiple_of(len.max(1) as u64);
            // SAFETY: as just said, in bounds and alive; the wide reads are aligned.
            unsafe {
                match len {
                    2 if aligned => {
                        buf.copy_from_slice(&p.cast::<u16>().read_volatile().to_ne_bytes())
                    }
                    4 if aligned => {
                        buf.copy_from_slice(&p.cast::<u32>().read_volatile().to_ne_bytes())
                    }
                    8 if aligned => {
                        buf.copy_from_slice(&p.cast::<u64>().read_volatile().to_ne_bytes())
                    }
                    _ => {
                        for (i, b) in buf.iter_mut().enumerate() {
                            *b = p.add(i).read_volatile();
                        }
                    }
                }
            }
        })
    }

    /// The device writes `data` at `iova`; false (nothing written) outside live regions.
    pub fn device_write(&self, iova: u64, data: &[u8]) -> bool {
        self.iommu.with_range(iova, data.len(), || {
            let p = iova as *mut u8;
            let aligned = iova.is_multiple_of(data.len().max(1) as u64);
            // SAFETY: as in `device_read`, including the aligned single wide writes.
            unsafe {
                match (data.len(), aligned) {
                    (2, true) => p
                        .cast::<u16>()
                        .write_volatile(u16::from_ne_bytes([data[0], data[1]])),
                    (4, true) => p
                        .cast::<u32>()
                        .write_volatile(u32::from_ne_bytes(data.try_into().unwrap_or_default())),
                    (8, true) => p
                        .cast::<u64>()
                        .write_volatile(u64::from_ne_bytes(data.try_into().unwrap_or_default())),
                    _ => {
                        for (i, b) in data.iter().enumerate() {
                            p.add(i).write_volatile(*b);
                        }
                    }
                }
            }
        })
    }
}

impl DmaAllocator for FakeDma {
    fn alloc(&self, len: usize) -> Result<DmaRegion, DmaError> {
        if len == 0 {
            return Err(DmaError::Invalid("zero-length region".into()));
        }
        // Anonymous pages are zero and cost nothing until touched, so a test that opens a
        // port per case pays only for the buffers it uses, not for the whole pool.
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_anon()
            .map_err(|e| DmaError::Map {
                len,
                reason: e.to_string(),
            })?;
        let map = memmap2::MmapRaw::from(map);
        let ptr = NonNull::new(map.as_mut_ptr()).ok_or_else(|| DmaError::Map {
            len,
            reason: "null mapping".into(),
        })?;
        let iova = self.iommu.map(ptr.as_ptr(), len)?;
        let mapper: Arc<dyn IovaMapper> = self.iommu.clone();
        Ok(DmaRegion::new(
            ptr,
            len,
            iova,
            Some(mapper),
            Backing::Map(map),
        ))
    }
}

/// A ring of `T` descriptors in DMA memory. The device reads and writes the slots, so they
/// are only ever copied in and out with volatile accesses, never referenced.
pub struct DmaRing<T: Copy> {
    region: DmaRegion,
    mask: usize,
    _t: PhantomData<T>,
}

impl<T: Copy> fmt::Debug for DmaRing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaRing")
            .field("slots", &(self.mask + 1))
            .field("region", &self.region)
            .finish()
    }
}

impl<T: Copy> DmaRing<T> {
    /// A zeroed ring of `slots` descriptors (a power of two).
    pub fn new(alloc: &dyn DmaAllocator, slots: usize) -> Result<Self, DmaError> {
        if !slots.is_power_of_two() {
            return Err(DmaError::Invalid(format!("ring of {slots} slots")));
        }
        let bytes = slots * std::mem::size_of::<T>();
        let region = alloc.alloc(bytes)?;
        if region.len() < bytes
            || !(region.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
        {
            return Err(DmaError::Invalid(
                "allocator returned a short region".into(),
            ));
        }
        Ok(Self {
            region,
            mask: slots - 1,
            _t: PhantomData,
        })
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.mask + 1
    }

    /// Size in bytes, as a device's ring-length register wants it.
    pub fn bytes(&self) -> usize {
        self.slots() * std::mem::size_of::<T>()
    }

    /// IOVA of slot 0.
    pub fn iova(&self) -> u64 {
        self.region.iova()
    }

    /// Copies slot `i` (wrapped to the ring) out of DMA memory.
    #[inline(always)]
    pub fn read(&self, i: usize) -> T {
        let p = self.region.as_ptr().cast::<T>();
        // `i & mask` < slots and the region holds `slots` aligned `T`s (checked in new); all
        // descriptor types are integers only, valid for any bit pattern the device may leave.
        // SAFETY: in bounds, aligned, and any bits are a valid `T`, as just said.
        unsafe { p.add(i & self.mask).read_volatile() }
    }

    /// Copies `v` into slot `i` (wrapped to the ring).
    #[inline(always)]
    pub fn write(&self, i: usize, v: T) {
        let p = self.region.as_ptr().cast::<T>();
        // SAFETY: as in `read`; the region is writable and no reference into it exists.
        unsafe { p.add(i & self.mask).write_volatile(v) }
    }

    /// Slot `i` of a ring of 16-byte descriptors as its two 8-byte words: two volatile
    /// loads, where a volatile copy of the struct is done field by field (seven for an
    /// e1000 descriptor). The descriptor type converts from the words itself.
    #[inline(always)]
    pub fn read_words(&self, i: usize) -> [u64; 2] {
        self.words().read(i)
    }

    /// Writes slot `i` of a ring of 16-byte descriptors as two 8-byte words.
    #[inline(always)]
    pub fn write_words(&self, i: usize, words: [u64; 2]) {
        self.words().write(i, words)
    }

    /// The ring as 16-byte slots of two words, for a loop over a burst (see [`Words`]).
    #[inline(always)]
    pub fn words(&self) -> Words<'_> {
        const { assert!(std::mem::size_of::<T>() == 16) };
        Words {
            base: self.region.as_ptr().cast(),
            mask: self.mask,
            _ring: PhantomData,
        }
    }

    /// Raw address of slot `i`, for a test thread playing the device.
    pub fn slot_ptr(&self, i: usize) -> *mut T {
        self.region.as_ptr().cast::<T>().wrapping_add(i & self.mask)
    }
}

/// A [`DmaRing`] of 16-byte descriptors as its base address and mask, copied out: a loop
/// keeps them in registers, where it would reload them from the ring after each volatile
/// store to a slot (such a store may, as far as the compiler knows, alias them). Borrows
/// the ring, so it cannot outlive the memory.
#[derive(Debug, Clone, Copy)]
pub struct Words<'a> {
    base: *mut u64,
    mask: usize,
    _ring: PhantomData<&'a ()>,
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

    /// The first of slot `i`'s two words: slot `i & mask`, 16 bytes at an offset that is
    /// a multiple of 16 from a page-aligned base, in bounds as in `DmaRing::read`.
    #[inline(always)]
    fn at(self, i: usize) -> *mut u64 {
        self.base.wrapping_add(2 * (i & self.mask))
    }

    /// Slot `i`'s two words (two volatile loads).
    #[inline(always)]
    pub fn read(self, i: usize) -> [u64; 2] {
        let w = self.at(i);
        // SAFETY: see `at`: two aligned u64s in bounds of the borrowed ring; any bits valid.
        unsafe { [w.read_volatile(), w.add(1).read_volatile()] }
    }

    /// Writes slot `i`'s two words (two volatile stores).
    #[inline(always)]
    pub fn write(self, i: usize, words: [u64; 2]) {
        let w = self.at(i);
        // SAFETY: as in `read`; the region is writable and no reference into it exists.
        unsafe {
            w.write_volatile(words[0]);
            w.add(1).write_volatile(words[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_dma_is_zeroed_and_identity_mapped() {
        let dma = FakeDma::new();
        let r = dma.alloc(8192).unwrap();
        assert_eq!(r.iova(), r.as_ptr() as u64);
        assert_eq!(r.as_ptr() as usize % 4096, 0);
        assert!(dma.alloc(0).is_err());
        assert!(dma.device_write(r.iova() + 8190, &[1, 2]));
        assert!(
            !dma.device_write(r.iova() + 8191, &[1, 2]),
            "crosses the end"
        );
        let mut b = [0u8; 2];
        assert!(dma.device_read(r.iova() + 8190, &mut b));
        assert_eq!(b, [1, 2]);
        let iova = r.iova();
        drop(r);
        assert!(!dma.device_read(iova, &mut b), "unmapped on drop");
    }

    #[test]
    fn ring_wraps_slots() {
        let ring: DmaRing<[u64; 2]> = DmaRing::new(&FakeDma::new(), 8).unwrap();
        ring.write(9, [1, 2]);
        assert_eq!(ring.read(1), [1, 2]);
        assert_eq!(ring.bytes(), 128);
        assert!(DmaRing::<u64>::new(&FakeDma::new(), 6).is_err());
    }

    #[test]
    fn integer_access_is_bounded() {
        let r = FakeDma::new().alloc(64).unwrap();
        r.write_u64(56, 0x0102_0304_0506_0708);
        assert_eq!(r.read_u32(56), 0x0506_0708);
        assert_eq!(r.read_u16(62), 0x0102);
        r.write_u32(62, 7); // misaligned and past the end: ignored
        assert_eq!(r.read_u64(64), u64::MAX);
        assert_eq!(r.read_u16(63), u16::MAX);
    }
}
