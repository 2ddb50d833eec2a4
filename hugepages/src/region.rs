//! DMA regions, the allocator and mapper traits, and the address domains a region's IOVAs
//! are valid in.
//!
//! This is one of the few modules that holds `unsafe`: it turns raw memory shared with a
//! device into safe handles. Memory the device may write is never behind a Rust reference
//! while the device owns it; it is read and written only with atomic accesses
//! (`AtomicU32::from_ptr(p).load(Relaxed)`, Linux's `READ_ONCE`), so the drivers' fences
//! order those accesses in Rust's memory model and two threads touching one region through
//! `&DmaRegion` do not race.

use crate::{DmaError, HUGEPAGE};
use std::alloc::Layout;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Where a region sits in the device's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Iovas {
    /// One IOVA range for the whole region (VFIO with IOVAs zcnic picks; the fake).
    Contiguous(u64),
    /// One IOVA per 2 MiB page: physical addresses, contiguous only within a page.
    PerPage(Box<[u64]>),
}

impl Iovas {
    /// IOVA of byte `off` of the region (callers keep `off` inside it; a page beyond the
    /// list gives `u64::MAX`, an address no IOMMU maps, never physical page 0).
    #[inline(always)]
    pub fn at(&self, off: usize) -> u64 {
        match self {
            Iovas::Contiguous(base) => base + off as u64,
            Iovas::PerPage(pages) => pages
                .get(off / HUGEPAGE)
                .map_or(u64::MAX, |p| p + (off % HUGEPAGE) as u64),
        }
    }
}

/// The address space a device reads DMA addresses in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressSpace {
    /// Physical addresses: no IOMMU, or a device that bypasses it.
    Physical,
    /// IOVAs of one IOMMU address space (a VFIO container's, or a fake IOMMU's), by id.
    Iommu(u32),
}

/// The address spaces a region's IOVAs are valid in: one IOMMU space, physical
/// addresses, or both (memory mapped at IOVA = physical address in an IOMMU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Domain {
    /// IOMMU space id, 0 for none.
    iommu: u32,
    /// The IOVAs are physical addresses.
    physical: bool,
}

impl Domain {
    /// IOVAs valid in IOMMU space `id` (non-zero; see [`new_space_id`]).
    pub const fn iommu(id: u32) -> Self {
        Self {
            iommu: id,
            physical: false,
        }
    }

    /// IOVAs that are physical addresses, valid in IOMMU space `iommu` too when it is
    /// non-zero (memory VFIO mapped at IOVA = physical address).
    pub const fn physical(iommu: u32) -> Self {
        Self {
            iommu,
            physical: true,
        }
    }

    /// Whether a device reading addresses in `space` reaches this memory at its IOVAs.
    #[inline(always)]
    pub fn reachable_in(self, space: AddressSpace) -> bool {
        match space {
            AddressSpace::Iommu(id) => self.iommu == id && id != 0,
            AddressSpace::Physical => self.physical,
        }
    }
}

/// A fresh IOMMU address-space id, never 0 and never handed out twice in this process.
pub fn new_space_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How a device may access memory a mapper maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write: rings and packet buffers.
    ReadWrite,
    /// Read only: application memory the NIC sends from ([`crate::UserRegion`]).
    DeviceReads,
}

/// Makes memory visible to a device and says at which IOVAs (a VFIO container, physical
/// addresses, or the fake IOMMU).
///
/// # Safety
/// Devices are given the IOVAs `map` returns and trust `domain` and `space`: `map` must
/// return IOVAs at which the device reaches exactly the memory given, with the access
/// asked, in the address space `domain` names, until `unmap`.
pub unsafe trait IovaMapper: Send + Sync {
    /// Maps `len` bytes at `va` (2 MiB aligned for hugepage memory) for `access` by the
    /// device.
    fn map(&self, va: *mut u8, len: usize, access: Access) -> Result<Iovas, DmaError>;
    /// Undoes [`IovaMapper::map`]. Called only once the device no longer uses the memory.
    fn unmap(&self, iovas: &Iovas, len: usize);
    /// Where the IOVAs this mapper hands out now are valid.
    fn domain(&self) -> Domain;
    /// The address space a device whose memory comes from this mapper reads.
    fn space(&self) -> AddressSpace;
}

/// A source of DMA memory (HAL-style, as in the virtio-drivers crate).
///
/// Regions can only be made inside this crate, through an [`IovaMapper`] (an unsafe trait),
/// so an implementation outside it can only pass on regions from another allocator; what
/// it can get wrong is the length, which every user of a region checks
/// ([`crate::Mempool::new`], [`crate::DmaRing::new`]).
pub trait DmaAllocator {
    /// Allocates at least `len` zeroed bytes, aligned to 4 KiB, mapped for the device.
    fn alloc(&self, len: usize) -> Result<DmaRegion, DmaError>;
}

pub(crate) enum Backing {
    /// hugetlbfs pages, or anonymous memory from [`crate::FakeDma`]; unmapped by
    /// `MmapRaw`'s drop.
    Map(#[allow(dead_code)] memmap2::MmapRaw),
    /// Heap memory from [`UserRegion::new`](crate::UserRegion::new).
    Heap(Layout),
    /// Memory the application handed over ([`crate::UserRegion::register`]), from
    /// `Box::into_raw`; rebuilt and freed after the unmap.
    User(NonNull<[u8]>),
}

/// A contiguous piece of DMA memory: its virtual address, length and IOVA.
///
/// Not `Sync`: its accessors read and write the same bytes at several widths, which two
/// threads may not do at once even atomically (the review found safe code racing a u64
/// store against a u32 load, which Miri reports):
///
/// ```compile_fail
/// use zcnic_hugepages::{DmaAllocator, FakeDma};
/// let r = FakeDma::new().alloc(64).unwrap();
/// std::thread::scope(|s| {
///     s.spawn(|| r.write_u64(0, 1));
///     s.spawn(|| r.read_u32(0));
/// });
/// ```
///
/// Dropping it unmaps it from the device first, then frees it, unless [`leak`](Self::leak)
/// was called. The driver guarantees the device is quiesced before the last handle to a
/// region goes, or leaks it.
pub struct DmaRegion {
    ptr: NonNull<u8>,
    len: usize,
    iovas: Iovas,
    domain: Domain,
    space: AddressSpace,
    mapper: Option<Arc<dyn IovaMapper>>,
    /// `None` once leaked.
    backing: Option<Backing>,
}

impl fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaRegion")
            .field("va", &self.ptr)
            .field("len", &self.len)
            .field("iova", &format_args!("{:#x}", self.iova()))
            .field("domain", &self.domain)
            .finish()
    }
}

// SAFETY: a DmaRegion owns its memory (no aliasing handle exists outside it) and its mapper
// is Send + Sync. It is not Sync: its accessors read and write the same bytes at several
// widths, and two threads doing so at once is a race even with atomics (Miri: mixed-size
// accesses). Types that share one across threads say why they may (Mempool, UserRegion).
unsafe impl Send for DmaRegion {}

impl DmaRegion {
    /// A region over memory this crate owns: `len` bytes at `ptr`, mapped by `mapper`
    /// (its domain and space are taken from it now).
    pub(crate) fn new(
        ptr: NonNull<u8>,
        len: usize,
        iovas: Iovas,
        mapper: Arc<dyn IovaMapper>,
        backing: Backing,
    ) -> Self {
        Self {
            ptr,
            len,
            iovas,
            domain: mapper.domain(),
            space: mapper.space(),
            mapper: Some(mapper),
            backing: Some(backing),
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

    /// Where this region's IOVAs are valid.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// The address space a device using the allocator this region came from reads.
    pub fn space(&self) -> AddressSpace {
        self.space
    }

    /// Never unmap or free this memory: for a device that could not be verifiably stopped
    /// and may still write it. The memory stays allocated until the process ends.
    pub fn leak(&mut self) {
        std::mem::forget(self.backing.take());
        self.mapper = None;
    }

    /// Whether a `T` at `off` is inside the region and aligned.
    #[inline(always)]
    fn fits<T>(&self, off: usize) -> bool {
        off.checked_add(std::mem::size_of::<T>())
            .is_some_and(|end| end <= self.len)
            && off.is_multiple_of(std::mem::align_of::<T>())
    }

    /// Little-endian u16 at `off` (0xffff when out of range).
    #[inline(always)]
    pub fn read_u16(&self, off: usize) -> u16 {
        if !self.fits::<u16>(off) {
            return u16::MAX;
        }
        // SAFETY: in bounds and aligned (checked; the base is page-aligned), in memory this
        // region owns; the device and every thread access it only atomically.
        u16::from_le(unsafe { AtomicU16::from_ptr(self.at(off)) }.load(Ordering::Relaxed))
    }

    /// Little-endian u32 at `off` (all ones when out of range).
    #[inline(always)]
    pub fn read_u32(&self, off: usize) -> u32 {
        if !self.fits::<u32>(off) {
            return u32::MAX;
        }
        // SAFETY: as in `read_u16`.
        u32::from_le(unsafe { AtomicU32::from_ptr(self.at(off)) }.load(Ordering::Relaxed))
    }

    /// Little-endian u64 at `off` (all ones when out of range).
    #[inline(always)]
    pub fn read_u64(&self, off: usize) -> u64 {
        if !self.fits::<u64>(off) {
            return u64::MAX;
        }
        // SAFETY: as in `read_u16`.
        u64::from_le(unsafe { AtomicU64::from_ptr(self.at(off)) }.load(Ordering::Relaxed))
    }

    /// Writes a little-endian u16 at `off`; out of range is ignored.
    #[inline(always)]
    pub fn write_u16(&self, off: usize, v: u16) {
        if self.fits::<u16>(off) {
            // SAFETY: as in `read_u16`.
            unsafe { AtomicU16::from_ptr(self.at(off)) }.store(v.to_le(), Ordering::Relaxed)
        }
    }

    /// Writes a little-endian u32 at `off`; out of range is ignored.
    #[inline(always)]
    pub fn write_u32(&self, off: usize, v: u32) {
        if self.fits::<u32>(off) {
            // SAFETY: as in `read_u16`.
            unsafe { AtomicU32::from_ptr(self.at(off)) }.store(v.to_le(), Ordering::Relaxed)
        }
    }

    /// Writes a little-endian u64 at `off`; out of range is ignored.
    #[inline(always)]
    pub fn write_u64(&self, off: usize, v: u64) {
        if self.fits::<u64>(off) {
            // SAFETY: as in `read_u16`.
            unsafe { AtomicU64::from_ptr(self.at(off)) }.store(v.to_le(), Ordering::Relaxed)
        }
    }

    /// Address of byte `off`, as a pointer to a `T` (callers check `fits::<T>` first).
    #[inline(always)]
    fn at<T>(&self, off: usize) -> *mut T {
        self.ptr.as_ptr().wrapping_add(off).cast()
    }

    /// Whether `off..off + len` is one contiguous IOVA range.
    pub fn is_contiguous(&self, off: usize, len: usize) -> bool {
        len == 0 || self.iova_at(off + len - 1) == self.iova_at(off) + (len - 1) as u64
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        let Some(backing) = self.backing.take() else {
            return; // leaked on purpose
        };
        if let Some(m) = &self.mapper {
            m.unmap(&self.iovas, self.len);
        }
        match backing {
            Backing::Map(map) => drop(map),
            // SAFETY: `ptr` came from `alloc_zeroed(layout)` (UserRegion::new) and is freed
            // once, after the device mapping is gone.
            Backing::Heap(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) },
            // SAFETY: from `Box::into_raw` in UserRegion::register, rebuilt once, after the
            // device mapping is gone; no reference into it outlives the region.
            Backing::User(raw) => drop(unsafe { Box::from_raw(raw.as_ptr()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeDma;

    #[test]
    fn integer_access_is_bounded() {
        let r = FakeDma::new().alloc(64).unwrap();
        // Each location is accessed at one width only: mixed-size atomic accesses to the
        // same bytes are outside Rust's memory model (the drivers never make them).
        r.write_u64(48, 0x0102_0304_0506_0708);
        assert_eq!(r.read_u64(48), 0x0102_0304_0506_0708);
        r.write_u32(60, 7);
        assert_eq!(r.read_u32(60), 7);
        r.write_u16(58, 9);
        assert_eq!(r.read_u16(58), 9);
        r.write_u32(62, 7); // misaligned and past the end: ignored
        assert_eq!(r.read_u64(64), u64::MAX);
        assert_eq!(r.read_u16(63), u16::MAX);
        assert_eq!(r.read_u32(usize::MAX - 1), u32::MAX, "no overflow");
    }

    #[test]
    fn domains_say_which_devices_reach_a_region() {
        let (a, b) = (new_space_id(), new_space_id());
        assert_ne!(a, b);
        assert!(Domain::iommu(a).reachable_in(AddressSpace::Iommu(a)));
        assert!(!Domain::iommu(a).reachable_in(AddressSpace::Iommu(b)));
        assert!(!Domain::iommu(a).reachable_in(AddressSpace::Physical));
        let pa_in_a = Domain::physical(a);
        assert!(pa_in_a.reachable_in(AddressSpace::Physical));
        assert!(pa_in_a.reachable_in(AddressSpace::Iommu(a)));
        let uio = Domain::physical(0);
        assert!(!uio.reachable_in(AddressSpace::Iommu(0)), "0 is no space");
        assert!(!Domain::default().reachable_in(AddressSpace::Physical));
    }

    #[test]
    fn out_of_range_pages_get_no_address_zero() {
        let iovas = Iovas::PerPage(vec![0x4000_0000].into());
        assert_eq!(iovas.at(HUGEPAGE - 1), 0x4000_0000 + HUGEPAGE as u64 - 1);
        assert_eq!(iovas.at(HUGEPAGE), u64::MAX);
    }
}
