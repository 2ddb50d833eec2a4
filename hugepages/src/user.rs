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
use crate::{DmaError, DmaRegion, IovaMapper};
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

/// IOMMU mappings are made of whole pages.
const PAGE: usize = 4096;

impl UserRegion {
    /// `len` zeroed bytes of page-aligned application memory, mapped for device reads
    /// through `mapper` (a VFIO container pins it). Fill it through [`UserRegion::data_mut`].
    pub fn new(len: usize, mapper: Arc<dyn IovaMapper>) -> Result<Self, DmaError> {
        if len == 0 {
            return Err(DmaError::Invalid("an empty region".into()));
        }
        let layout = Layout::from_size_align(len.next_multiple_of(PAGE), PAGE)
            .map_err(|e| DmaError::Invalid(format!("{len} bytes: {e}")))?;
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
        let mut mem = mem;
        let ptr = NonNull::new(mem.as_mut_ptr())
            .ok_or_else(|| DmaError::Invalid("a null region".into()))?;
        if len == 0 || !(ptr.as_ptr() as usize).is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            return Err(DmaError::Invalid(format!(
                "memory to register must be page-aligned whole pages ({len} bytes at {ptr:p}): allocate it with UserRegion::new"
            )));
        }
        Self::map(ptr, len, len, mapper, Backing::User(mem))
    }

    fn map(
        ptr: NonNull<u8>,
        len: usize,
        mapped: usize,
        mapper: Arc<dyn IovaMapper>,
        backing: Backing,
    ) -> Result<Self, DmaError> {
        let iovas = match mapper.map(ptr.as_ptr(), mapped) {
            Ok(i) => i,
            Err(e) => {
                if let Backing::Heap(layout) = backing {
                    // SAFETY: allocated by `new` with this layout, never handed out.
                    unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
                }
                return Err(e);
            }
        };
        let region = DmaRegion::new(ptr, mapped, iovas, Some(mapper), backing);
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
    /// Bytes `off..off + len` of `region` (non-empty, inside, below 64 KiB).
    pub fn new(region: &Arc<UserRegion>, off: usize, len: usize) -> Result<Self, DmaError> {
        let end = off.saturating_add(len);
        if len == 0 || len > u16::MAX as usize || end > region.len() {
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
        &self.region.data()[self.off as usize..(self.off + self.len) as usize]
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
        let mut iova_probe = [0u8; 1];
        assert!(
            dma.device_read(s.iova(), &mut iova_probe),
            "mapped for the device"
        );
        assert!(UserRegion::data_mut(&mut r).is_none());
        drop(s);
        UserRegion::data_mut(&mut r).unwrap().fill(2);
        let iova = r.region.iova();
        drop(r);
        assert!(
            !dma.device_read(iova, &mut iova_probe),
            "unmapped with the region"
        );
    }
}
