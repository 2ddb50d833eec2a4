//! [`FakeDma`]: anonymous memory with IOVA = virtual address, behind a fake IOMMU, for tests
//! where a thread plays the device.

use crate::region::Backing;
use crate::{
    new_space_id, Access, AddressSpace, DmaAllocator, DmaError, DmaRegion, Domain, IovaMapper,
    Iovas,
};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Anonymous memory with IOVA = virtual address, for tests where a thread plays the device.
///
/// Clones share one fake IOMMU that knows every live region, so the device side can
/// only reach memory that was allocated for it ([`FakeDma::device_read`] and
/// [`FakeDma::device_write`] refuse anything else, like an IOMMU fault, and writes to
/// memory mapped read-only for the device).
#[derive(Debug, Clone)]
pub struct FakeDma {
    iommu: Arc<FakeIommu>,
}

impl Default for FakeDma {
    fn default() -> Self {
        Self {
            iommu: Arc::new(FakeIommu {
                regions: Mutex::new(Vec::new()),
                space: new_space_id(),
            }),
        }
    }
}

#[derive(Debug)]
struct FakeIommu {
    /// Live mappings: start, length, whether the device may write.
    regions: Mutex<Vec<(u64, usize, bool)>>,
    space: u32,
}

impl FakeIommu {
    /// Runs `f` if `iova..iova+len` is inside a live region (a writable one when `write`),
    /// holding the lock meanwhile so the region cannot be unmapped (and freed) under `f`.
    fn with_range(&self, iova: u64, len: usize, write: bool, f: impl FnOnce()) -> bool {
        let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let inside = regions.iter().any(|&(start, rlen, writable)| {
            iova >= start
                && iova.saturating_add(len as u64) <= start + rlen as u64
                && (writable || !write)
        });
        if inside {
            f();
        }
        inside
    }
}

// SAFETY: IOVA = virtual address of memory the fake maps (and the fake device reaches only
// through `with_range`, which checks it is mapped); one space per fake.
unsafe impl IovaMapper for FakeIommu {
    fn map(&self, va: *mut u8, len: usize, access: Access) -> Result<Iovas, DmaError> {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions.push((va as u64, len, access == Access::ReadWrite));
        Ok(Iovas::Contiguous(va as u64))
    }

    fn unmap(&self, iovas: &Iovas, _len: usize) {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let start = iovas.at(0);
        regions.retain(|&(s, _, _)| s != start);
    }

    fn domain(&self) -> Domain {
        Domain::iommu(self.space)
    }

    fn space(&self) -> AddressSpace {
        AddressSpace::Iommu(self.space)
    }
}

impl FakeDma {
    /// A fake with its own (empty) IOMMU and address space.
    pub fn new() -> Self {
        Self::default()
    }

    /// The fake IOMMU, to register application memory with ([`crate::UserRegion`]).
    pub fn mapper(&self) -> Arc<dyn IovaMapper> {
        self.iommu.clone()
    }

    /// The device reads `buf.len()` bytes at `iova`; false (nothing read) if the range is
    /// not inside a live region. A naturally aligned 2-, 4- or 8-byte read is one atomic
    /// access, as on PCI (a ring index read byte by byte could mix an old and a new half);
    /// anything else is read byte by byte, each byte atomically.
    ///
    /// # Safety
    /// Like a real device, the fake may touch only memory the driver gave it: ring memory,
    /// or buffers in descriptors the driver handed over and has not taken back. While it
    /// reads, no thread may write the range except through atomics of the same width.
    pub unsafe fn device_read(&self, iova: u64, buf: &mut [u8]) -> bool {
        let len = buf.len();
        self.iommu.with_range(iova, len, false, || {
            let p = iova as *mut u8;
            let aligned = iova.is_multiple_of(len.max(1) as u64);
            // Inside a live region, checked under the lock held here so it cannot be freed
            // meanwhile (IOVA = VA); the wide accesses are aligned.
            // SAFETY: as just said; the caller promises atomic access meanwhile.
            unsafe {
                match (len, aligned) {
                    (2, true) => buf.copy_from_slice(
                        &AtomicU16::from_ptr(p.cast())
                            .load(Ordering::Relaxed)
                            .to_ne_bytes(),
                    ),
                    (4, true) => buf.copy_from_slice(
                        &AtomicU32::from_ptr(p.cast())
                            .load(Ordering::Relaxed)
                            .to_ne_bytes(),
                    ),
                    (8, true) => buf.copy_from_slice(
                        &AtomicU64::from_ptr(p.cast())
                            .load(Ordering::Relaxed)
                            .to_ne_bytes(),
                    ),
                    _ => {
                        for (i, b) in buf.iter_mut().enumerate() {
                            *b = AtomicU8::from_ptr(p.add(i)).load(Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    }

    /// The device writes `data` at `iova`; false (nothing written) outside live regions
    /// the device may write. Access widths as in [`device_read`](Self::device_read).
    ///
    /// # Safety
    /// As for [`device_read`](Self::device_read); and no Rust reference to the range may
    /// be live (a receive buffer still in a descriptor is not behind one; a buffer the
    /// application holds is).
    pub unsafe fn device_write(&self, iova: u64, data: &[u8]) -> bool {
        self.iommu.with_range(iova, data.len(), true, || {
            let p = iova as *mut u8;
            let aligned = iova.is_multiple_of(data.len().max(1) as u64);
            let word = |n: usize| {
                let mut w = [0u8; 8];
                w[..n].copy_from_slice(&data[..n]);
                u64::from_ne_bytes(w)
            };
            // SAFETY: as in `device_read`; the caller promises no reference is live.
            unsafe {
                match (data.len(), aligned) {
                    (2, true) => {
                        AtomicU16::from_ptr(p.cast()).store(word(2) as u16, Ordering::Relaxed)
                    }
                    (4, true) => {
                        AtomicU32::from_ptr(p.cast()).store(word(4) as u32, Ordering::Relaxed)
                    }
                    (8, true) => AtomicU64::from_ptr(p.cast()).store(word(8), Ordering::Relaxed),
                    _ => {
                        for (i, b) in data.iter().enumerate() {
                            AtomicU8::from_ptr(p.add(i)).store(*b, Ordering::Relaxed);
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
        let iova = self.iommu.map(ptr.as_ptr(), len, Access::ReadWrite)?;
        Ok(DmaRegion::new(
            ptr,
            len,
            iova,
            self.mapper(),
            Backing::Map(map),
        ))
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
        assert_eq!(r.read_u64(4096), 0);
        assert!(dma.alloc(0).is_err());
        let mut b = [0u8; 2];
        // SAFETY: the region is ours and nothing else touches it in this test.
        unsafe {
            assert!(dma.device_write(r.iova() + 8190, &[1, 2]));
            assert!(
                !dma.device_write(r.iova() + 8191, &[1, 2]),
                "crosses the end"
            );
            assert!(dma.device_read(r.iova() + 8190, &mut b));
        }
        assert_eq!(b, [1, 2]);
        assert_eq!(
            r.read_u16(8190),
            0x0201,
            "the driver sees the device's write"
        );
        let iova = r.iova();
        drop(r);
        // SAFETY: the fake refuses the unmapped range, so nothing is touched.
        let read = unsafe { dma.device_read(iova, &mut b) };
        assert!(!read, "unmapped on drop");
    }

    #[test]
    fn each_fake_is_its_own_address_space() {
        let (a, b) = (FakeDma::new(), FakeDma::new());
        let (ra, rb) = (a.alloc(64).unwrap(), b.alloc(64).unwrap());
        assert!(ra.domain().reachable_in(ra.space()));
        assert!(!ra.domain().reachable_in(rb.space()));
    }
}
