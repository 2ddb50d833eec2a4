//! Application memory the NIC reads directly: zero-copy transmit of payloads that already
//! live in the application's buffers.
//!
//! [`UserRegion::register`] takes ownership of the memory and maps it for the device (the
//! IOMMU pins it). The application cuts [`Segment`]s out of it and attaches them to a small
//! header [`crate::Packet`]; the driver sends header and payload as one descriptor chain.
//!
//! Ownership is what keeps it safe: a `Segment` holds the region (`Arc`), and the driver
//! holds the `Packet` — segment included — until the device has marked its descriptors done.
//! The application gets write access back through [`UserRegion::data_mut`], which succeeds
//! only when no segment is alive, i.e. when the NIC can no longer be reading any of it. No
//! callback, no completion queue to poll: the borrow checker and the reference count do it.
//!
//! ```
//! use std::sync::Arc;
//! use zcnic_hugepages::{FakeDma, Segment, UserRegion};
//! let dma = FakeDma::new();
//! let mut region = Arc::new(UserRegion::with_data(&[7u8; 9000], dma.mapper()).unwrap());
//! let seg = Segment::new(&region, 0, 1500).unwrap();
//! assert!(UserRegion::data_mut(&mut region).is_none(), "in flight: read-only");
//! drop(seg); // the driver drops it once the device is done
//! UserRegion::data_mut(&mut region).unwrap()[0] = 8;
//! ```

use crate::region::Backing;
use crate::{Access, DmaError, DmaRegion, IovaMapper};
use std::alloc::Layout;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

/// Application memory mapped for the device; the NIC only ever reads it.
pub struct UserRegion {
    /// The mapping, whole pages.
    region: DmaRegion,
    /// Bytes the application asked for.
    len: usize,
}

impl fmt::Debug for UserRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UserRegion").field(&self.region).finish()
    }
}

// SAFETY: shared between threads (a `Segment` is an `Arc`), a UserRegion only hands out
// `&[u8]` reads of memory the device only reads, address queries, and `&mut` through
// `Arc::get_mut`; it never uses its region's multi-width accessors.
unsafe impl Sync for UserRegion {}

/// IOMMU mappings are made of whole pages.
const PAGE: usize = 4096;

impl UserRegion {
    /// `len` zeroed bytes of page-aligned application memory, mapped for device reads
    /// through `mapper` (a VFIO container pins it). Fill it through [`UserRegion::data_mut`].
    pub fn new(len: usize, mapper: Arc<dyn IovaMapper>) -> Result<Self, DmaError> {
        if len == 0 {
            return Err(DmaError::Invalid("an empty region".into()));
        }
        let too_big = || DmaError::Invalid(format!("a region of {len} bytes is too large"));
        let size = len.checked_next_multiple_of(PAGE).ok_or_else(too_big)?;
        let layout = Layout::from_size_align(size, PAGE).map_err(|_| too_big())?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).ok_or_else(|| {
            DmaError::Map {
                len,
                reason: "out of memory".into(),
            }
        })?;
        Self::map(ptr, len, layout.size(), mapper, Backing::Heap(layout))
    }

    /// A region holding a copy of `data` (copied once, here; never per frame).
    pub fn with_data(data: &[u8], mapper: Arc<dyn IovaMapper>) -> Result<Self, DmaError> {
        let mut r = Arc::new(Self::new(data.len(), mapper)?);
        if let Some(m) = Self::data_mut(&mut r) {
            m.copy_from_slice(data);
        }
        Arc::try_unwrap(r).map_err(|_| DmaError::Invalid("region still shared".into()))
    }

    /// Takes over memory the application already has. The IOMMU maps whole pages, so it
    /// must start on a page boundary and span whole pages (else use [`UserRegion::new`]):
    /// mapping a partial page would let the device reach the neighbouring heap.
    pub fn register(mem: Box<[u8]>, mapper: Arc<dyn IovaMapper>) -> Result<Self, DmaError> {
        let len = mem.len();
        let at = mem.as_ptr() as usize;
        if len == 0 || !at.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            return Err(DmaError::Invalid(format!(
                "memory to register must be page-aligned whole pages ({len} bytes at {at:#x}): allocate it with UserRegion::new"
            )));
        }
        // The region owns the memory from here as a raw pointer (rebuilt into the Box only
        // to free it): moving the Box itself would invalidate pointers taken from it.
        // SAFETY: `Box::into_raw` never returns null.
        let raw = unsafe { NonNull::new_unchecked(Box::into_raw(mem)) };
        Self::map(raw.cast(), len, len, mapper, Backing::User(raw))
    }

    fn map(
        ptr: NonNull<u8>,
        len: usize,
        mapped: usize,
        mapper: Arc<dyn IovaMapper>,
        backing: Backing,
    ) -> Result<Self, DmaError> {
        // The device only reads application memory: map it so (an IOMMU then faults a
        // device write instead of letting it through).
        let iovas = match mapper.map(ptr.as_ptr(), mapped, Access::DeviceReads) {
            Ok(i) => i,
            Err(e) => {
                match backing {
                    // SAFETY: allocated by `new` with this layout, never handed out.
                    Backing::Heap(layout) => unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) },
                    // SAFETY: from `Box::leak` in `register`, rebuilt once.
                    Backing::User(raw) => drop(unsafe { Box::from_raw(raw.as_ptr()) }),
                    Backing::Map(map) => drop(map),
                }
                return Err(e);
            }
        };
        let region = DmaRegion::new(ptr, mapped, iovas, mapper, backing);
        if !region.is_contiguous(0, len) {
            return Err(DmaError::Invalid(
                "application memory needs one contiguous IOVA range (use VFIO, not no-IOMMU mode)"
                    .into(),
            ));
        }
        Ok(Self { region, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty regions are refused.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, for reading (the device only reads them too).
    pub fn data(&self) -> &[u8] {
        // SAFETY: the memory is owned by this region and lives as long as it; the device
        // only reads it (it is never given to a receive ring), so shared reads are sound.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr(), self.len) }
    }

    /// The bytes, writable — only when no [`Segment`] of the region exists, so the NIC
    /// cannot be reading any of it.
    pub fn data_mut(this: &mut Arc<Self>) -> Option<&mut [u8]> {
        let me = Arc::get_mut(this)?;
        // SAFETY: `Arc::get_mut` proved this is the only handle, so no segment (and so no
        // descriptor) refers to the memory, and `&mut` makes the access exclusive.
        Some(unsafe { std::slice::from_raw_parts_mut(me.region.as_ptr(), me.len) })
    }
}

/// A slice of a [`UserRegion`] to send; keeps the region alive (and read-only) while it
/// exists.
#[derive(Clone)]
pub struct Segment {
    region: Arc<UserRegion>,
    off: u32,
    len: u32,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Segment({}+{}, iova {:#x})",
            self.off,
            self.len,
            self.iova()
        )
    }
}

impl Segment {
    /// Bytes `off..off + len` of `region` (non-empty, inside, below 64 KiB, starting in
    /// its first 4 GiB).
    pub fn new(region: &Arc<UserRegion>, off: usize, len: usize) -> Result<Self, DmaError> {
        let end = off.saturating_add(len);
        if len == 0 || len > u16::MAX as usize || end > region.len() || off > u32::MAX as usize {
            return Err(DmaError::Invalid(format!(
                "segment {off}+{len} of a {}-byte region: must be non-empty, inside, and at most 65535 bytes",
                region.len()
            )));
        }
        Ok(Self {
            region: region.clone(),
            off: off as u32,
            len: len as u32,
        })
    }

    /// IOVA of the first byte.
    #[inline(always)]
    pub fn iova(&self) -> u64 {
        self.region.region.iova_at(self.off as usize)
    }

    /// Length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false: empty segments are refused.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        let off = self.off as usize;
        &self.region.data()[off..off + self.len as usize]
    }

    /// Whether a device reading addresses in `space` reaches these bytes.
    #[inline(always)]
    pub fn reachable_in(&self, space: crate::AddressSpace) -> bool {
        self.region.region.domain().reachable_in(space)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeDma;

    #[test]
    fn segments_are_checked_and_pin_the_region() {
        let dma = FakeDma::new();
        let mut r = Arc::new(UserRegion::with_data(&[1u8; 4096], dma.mapper()).unwrap());
        assert!(
            UserRegion::register(vec![0u8; 100].into(), dma.mapper()).is_err(),
            "not whole pages"
        );
        assert!(Segment::new(&r, 4000, 97).is_err());
        assert!(Segment::new(&r, 0, 0).is_err());
        let s = Segment::new(&r, 100, 200).unwrap();
        assert_eq!(s.iova(), r.region.iova() + 100);
        assert_eq!(s.data(), &[1u8; 200][..]);
        let mut probe = [0u8; 1];
        // SAFETY: reads only, of memory nothing writes meanwhile; the fake checks the range.
        unsafe {
            assert!(
                dma.device_read(s.iova(), &mut probe),
                "mapped for the device"
            );
            assert!(
                !dma.device_write(s.iova(), &[9]),
                "mapped read-only: the device only reads application memory"
            );
        }
        assert!(UserRegion::data_mut(&mut r).is_none());
        drop(s);
        UserRegion::data_mut(&mut r).unwrap().fill(2);
        let iova = r.region.iova();
        drop(r);
        // SAFETY: as above.
        let still = unsafe { dma.device_read(iova, &mut probe) };
        assert!(!still, "unmapped with the region");
    }

    /// Regression: `len.next_multiple_of(4096)` wrapped in release builds, so a region of
    /// nearly 2^64 bytes came back `Ok` with a slice over all of memory.
    #[test]
    fn a_region_too_large_to_round_up_is_refused() {
        let e = UserRegion::new(usize::MAX - 100, FakeDma::new().mapper()).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn segment_offsets_past_4_gib_are_refused_not_truncated() {
        let r = Arc::new(UserRegion::new(PAGE, FakeDma::new().mapper()).unwrap());
        assert!(Segment::new(&r, (1 << 32) + 1, 1).is_err());
    }
}
