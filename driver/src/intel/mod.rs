//! What the Intel e1000 and igb drivers share, and no more: bringing a PCI function up
//! with its reset before bus mastering, ring sizes, filling a receive ring, and the
//! receive address filters (`filter.rs`: multicast table, extra addresses). (Their
//! statistics code and the STATUS link decode live with the e1000 and are used by both.)

pub(crate) mod filter;
pub(crate) mod reassembly;

use crate::mmio::MmioBar;
use crate::pci::PciAddr;
use crate::platform::{self, IovaMode, PciDevice};
use crate::Error;
use std::sync::Arc;
use std::time::Duration;
use zcnic_descriptors::RingIndex;
use zcnic_hugepages::{DmaAllocator, DmaError, DmaRing, Mempool, Packet};

/// A ring size both families take: a power of two in `min..=4096` (RDLEN/TDLEN must be a
/// multiple of 128 bytes, and the clean-up batches need at least `min`).
pub(crate) fn ring_index(
    addr: &PciAddr,
    family: &str,
    size: u32,
    min: u32,
) -> Result<RingIndex, Error> {
    RingIndex::new(size)
        .ok()
        .filter(|r| r.size() >= min && r.size() <= 4096)
        .ok_or_else(|| {
            Error::Io(format!(
                "{addr}: {family} ring size {size} must be a power of two in {min}..=4096"
            ))
        })
}

/// A buffer from `pool` for every slot of `ring`, each slot's descriptor written by
/// `ready` from the buffer's IOVA; the buffers, by slot.
pub(crate) fn fill_rx_ring(
    ring: &DmaRing,
    pool: &Arc<Mempool>,
    idx: RingIndex,
    ready: impl Fn(u64) -> [u64; 2],
) -> Result<Vec<Packet>, DmaError> {
    let mut bufs = Vec::with_capacity(idx.size() as usize);
    for slot in 0..idx.size() as usize {
        let pkt = pool.alloc().ok_or_else(|| {
            DmaError::Invalid(format!(
                "pool of {} buffers cannot fill a {}-slot ring",
                pool.capacity(),
                idx.size()
            ))
        })?;
        ring.write_words(slot, ready(pkt.iova()));
        bufs.push(pkt);
    }
    Ok(bufs)
}

/// Brings up a NIC of either family on an opened PCI function: stopped and reset (by
/// `reset` on its BAR 0) before bus mastering goes on, since a NIC left running by an
/// unclean exit of its last user would otherwise resume DMA into memory no longer that
/// user's; then `new` builds the port on the BAR with DMA memory behind the IOMMU where
/// there is one. Returns the port and the device, which the port must keep open.
pub(crate) fn bring_up<T>(
    dev: Box<dyn PciDevice>,
    family: &str,
    reset_timeout: Duration,
    reset: impl Fn(&MmioBar, &PciAddr, Duration) -> Result<(), Error>,
    new: impl FnOnce(MmioBar, &dyn DmaAllocator, PciAddr) -> Result<T, Error>,
) -> Result<(T, Box<dyn PciDevice>), Error> {
    let addr = dev.addr();
    if !dev.reset() {
        log::debug!("{addr}: no function reset from the platform; using the {family} global reset");
    }
    dev.set_bus_master(false)?;
    let bar = dev.map_bar(0)?;
    reset(&bar, &addr, reset_timeout)?;
    dev.set_bus_master(true)?;
    let dma = dev.dma_allocator(platform::iova_mode(dev.as_ref(), IovaMode::Virtual))?;
    let nic = new(bar, dma.as_ref(), addr)?;
    Ok((nic, dev))
}
