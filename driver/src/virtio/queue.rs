//! The virtqueues of `zcnic_descriptors::virtio`, placed in DMA memory.
//!
//! Ring logic is pure and lives in the descriptors crate; here a queue gets its memory
//! ([`DmaMem`], volatile little-endian accesses into a [`DmaRegion`]) and the three IOVAs
//! the transport programs into the device ([`Areas`]).

use zcnic_descriptors::virtio::{
    PackedLayout, PackedQueue, QueueMemory, SplitLayout, SplitQueue, Virtqueue,
};
use zcnic_hugepages::{DmaAllocator, DmaError, DmaRegion};

/// A virtqueue's memory: one DMA region, one contiguous IOVA range (queues are far smaller
/// than a 2 MiB page, and regions start on one).
#[derive(Debug)]
pub struct DmaMem(DmaRegion);

impl QueueMemory for DmaMem {
    #[inline(always)]
    fn read_u16(&self, off: usize) -> u16 {
        self.0.read_u16(off)
    }
    #[inline(always)]
    fn write_u16(&self, off: usize, v: u16) {
        self.0.write_u16(off, v)
    }
    #[inline(always)]
    fn read_u32(&self, off: usize) -> u32 {
        self.0.read_u32(off)
    }
    #[inline(always)]
    fn write_u32(&self, off: usize, v: u32) {
        self.0.write_u32(off, v)
    }
    #[inline(always)]
    fn read_u64(&self, off: usize) -> u64 {
        self.0.read_u64(off)
    }
    #[inline(always)]
    fn write_u64(&self, off: usize, v: u64) {
        self.0.write_u64(off, v)
    }
}

/// IOVAs of a queue's descriptor area, driver area and device area (virtio 1.1 §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    /// Descriptor table / ring.
    pub desc: u64,
    /// Available ring (split) or driver event suppression (packed).
    pub driver: u64,
    /// Used ring (split) or device event suppression (packed).
    pub device: u64,
}

fn region(dma: &dyn DmaAllocator, bytes: usize) -> Result<DmaRegion, DmaError> {
    let r = dma.alloc(bytes)?;
    if !r.is_contiguous(0, bytes) || !r.iova().is_multiple_of(4096) {
        return Err(DmaError::Invalid(format!(
            "a virtqueue of {bytes} bytes needs one page-aligned contiguous IOVA range"
        )));
    }
    Ok(r)
}

impl DmaMem {
    /// Never unmap or free this memory (see [`DmaRegion::leak`]).
    pub fn leak(&mut self) {
        self.0.leak();
    }
}

/// A ring format the net driver can be built on. `Send`, as the port that owns its
/// queues may move to another thread (a queue in [`DmaMem`] is: its region is).
pub trait QueueKind: Virtqueue + Sized + Send + 'static {
    /// Whether this is the packed format.
    const PACKED: bool;
    /// Never unmap or free the queue's memory: the device did not stop.
    fn leak(&mut self);
    /// A queue of `size` entries in fresh DMA memory, and where its areas are.
    fn create(
        dma: &dyn DmaAllocator,
        size: u16,
        legacy: bool,
        event_idx: bool,
    ) -> Result<(Self, Areas), DmaError>;
}

impl QueueKind for SplitQueue<DmaMem> {
    const PACKED: bool = false;

    fn leak(&mut self) {
        self.memory_mut().leak();
    }

    fn create(
        dma: &dyn DmaAllocator,
        size: u16,
        legacy: bool,
        event_idx: bool,
    ) -> Result<(Self, Areas), DmaError> {
        let layout =
            SplitLayout::new(size, legacy).map_err(|e| DmaError::Invalid(e.to_string()))?;
        let r = region(dma, layout.total_bytes())?;
        let areas = Areas {
            desc: r.iova_at(layout.desc_offset()),
            driver: r.iova_at(layout.avail_offset()),
            device: r.iova_at(layout.used_offset()),
        };
        Ok((SplitQueue::new(DmaMem(r), layout, event_idx), areas))
    }
}

impl QueueKind for PackedQueue<DmaMem> {
    const PACKED: bool = true;

    fn leak(&mut self) {
        self.memory_mut().leak();
    }

    fn create(
        dma: &dyn DmaAllocator,
        size: u16,
        _legacy: bool,
        event_idx: bool,
    ) -> Result<(Self, Areas), DmaError> {
        let layout = PackedLayout::new(size).map_err(|e| DmaError::Invalid(e.to_string()))?;
        let r = region(dma, layout.total_bytes())?;
        let areas = Areas {
            desc: r.iova_at(layout.desc_offset()),
            driver: r.iova_at(layout.driver_event_offset()),
            device: r.iova_at(layout.device_event_offset()),
        };
        Ok((PackedQueue::new(DmaMem(r), layout, event_idx), areas))
    }
}
