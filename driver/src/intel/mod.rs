//! What the Intel e1000 and igb drivers share, and no more: bringing a PCI function up
//! with its reset before bus mastering, ring sizes, filling a receive ring, and the
//! receive address filters (`filter.rs`: multicast table, extra addresses), link
//! events from the interrupt cause register ([`LinkWatch`]). (Their statistics code and
//! the STATUS link decode live with the e1000 and are used by both.)

pub(crate) mod filter;
pub(crate) mod reassembly;

use crate::e1000::regs::ICR_LSC;
use crate::mmio::{Bar, MmioBar};
use crate::nic::Link;
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

/// Link events of the e1000 and the igb, from ICR.LSC: the one place either driver reads
/// the interrupt cause register while the device runs.
///
/// Both families latch every interrupt cause in ICR whether or not it is enabled in IMS,
/// and both clear the whole register when it is read: the 8254x always (8254x SDM
/// §13.4.17), the 82576 when IMS is 0 and GPIE.NSICR is clear (82576 datasheet §7.3.2.1.2,
/// §8.8.1), which is how zcnic runs it. A read for one purpose thus consumes the causes of
/// every other. So every ICR read goes through [`read_icr`](LinkWatch::read_icr), which
/// keeps what it read in `latched` until its consumer takes it: link events take LSC
/// from there, and the e1000's receive interrupt (which reads ICR to drop its line) leaves
/// LSC there for them.
///
/// LSC says the link changed since the last read; STATUS says what it is now. STATUS is
/// read only when LSC was seen, and an event is reported only when the state differs from
/// the last one reported, so a stray LSC (a bounce shorter than the interval between two
/// calls, or a cause left from bring-up) reports nothing.
///
/// It keeps the link state last reported, and where to read the event and the state.
#[derive(Debug, Clone)]
pub(crate) struct LinkWatch {
    last: Link,
    icr: u32,
    status: u32,
    /// Causes read from ICR that a later consumer takes and has not yet: LSC, for
    /// [`poll`](Self::poll). (The receive interrupt needs no cause: it looks at the ring.)
    latched: u32,
}

impl LinkWatch {
    /// A watch over the ICR and STATUS registers at those offsets, starting from the link as
    /// it is now: ICR is read first (so a cause latched during bring-up, such as the link
    /// coming up, is consumed), then STATUS; a change after the ICR read latches LSC again
    /// and is seen by the next [`poll`](Self::poll).
    pub(crate) fn start(bar: &impl Bar, icr: u32, status: u32) -> Self {
        let _ = bar.read32(icr);
        let last = crate::e1000::link_of(bar.read32(status)).normalized();
        Self {
            last,
            icr,
            status,
            latched: 0,
        }
    }

    /// Reads (and so clears) ICR, keeping LSC latched for [`poll`](Self::poll); returns
    /// what this read found.
    pub(crate) fn read_icr(&mut self, bar: &impl Bar) -> u32 {
        let icr = bar.read32(self.icr);
        self.latched |= icr & ICR_LSC;
        icr
    }

    /// The new link state when it changed since the last call, else `None`: one ICR read,
    /// and a STATUS read only when LSC was latched (by this read or an earlier one).
    pub(crate) fn poll(&mut self, bar: &impl Bar) -> Option<Link> {
        self.read_icr(bar);
        if self.latched & ICR_LSC == 0 {
            return None;
        }
        self.latched &= !ICR_LSC;
        let now = crate::e1000::link_of(bar.read32(self.status)).normalized();
        if now == self.last {
            return None;
        }
        self.last = now;
        Some(now)
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;
    use crate::e1000::regs::{Status, ICR, STATUS};
    use crate::FakeBar;

    const UP: u32 = Status::LU.bits() | Status::FD.bits() | Status::SPEED1.bits();

    /// Registers whose ICR clears when read, as on silicon.
    fn bar() -> FakeBar {
        let bar = FakeBar::new(0x100);
        assert!(bar.clear_on_read(ICR));
        bar
    }

    /// The device side: a new STATUS, and LSC latched (with another cause beside it).
    fn flip(bar: &FakeBar, status: u32) {
        bar.write32(STATUS, status);
        bar.raise(ICR, ICR_LSC | 1);
    }

    #[test]
    fn one_event_per_change_in_order_and_none_otherwise() {
        let bar = bar();
        flip(&bar, UP); // the link came up during bring-up: not an event
        let mut w = LinkWatch::start(&bar, ICR, STATUS);
        assert_eq!(w.poll(&bar), None);
        bar.raise(ICR, 1); // another cause alone
        assert_eq!(w.poll(&bar), None);
        flip(&bar, Status::SPEED1.bits());
        let down = w.poll(&bar);
        assert_eq!(
            down,
            Some(Link::DOWN),
            "a down link's speed bits mean nothing"
        );
        assert_eq!(w.poll(&bar), None, "ICR cleared on read: reported once");
        flip(&bar, UP);
        let up = w.poll(&bar).expect("up");
        assert!(up.up && up.speed_mbps == 1000 && up.full_duplex, "{up:?}");
        assert_eq!(w.poll(&bar), None);
    }

    #[test]
    fn a_bounce_between_two_calls_reports_nothing() {
        let bar = bar();
        bar.write32(STATUS, UP);
        let mut w = LinkWatch::start(&bar, ICR, STATUS);
        flip(&bar, 0);
        flip(&bar, UP);
        assert_eq!(w.poll(&bar), None);
    }

    /// The receive interrupt reads ICR to drop its line: an LSC that read finds is still
    /// reported by the next poll, once.
    #[test]
    fn lsc_read_by_another_reader_is_kept_for_the_link() {
        let bar = bar();
        bar.write32(STATUS, UP);
        let mut w = LinkWatch::start(&bar, ICR, STATUS);
        flip(&bar, 0);
        assert_eq!(w.read_icr(&bar) & ICR_LSC, ICR_LSC);
        assert_eq!(bar.read32(ICR), 0, "that read cleared the register");
        assert_eq!(w.poll(&bar), Some(Link::DOWN));
        assert_eq!(w.poll(&bar), None);
    }

    #[test]
    fn status_is_read_only_after_lsc() {
        let bar = bar();
        bar.write32(STATUS, UP);
        let mut w = LinkWatch::start(&bar, ICR, STATUS);
        bar.write32(STATUS, 0);
        assert_eq!(w.poll(&bar), None, "no LSC: STATUS not looked at");
        bar.raise(ICR, ICR_LSC);
        assert_eq!(w.poll(&bar), Some(Link::DOWN));
    }
}
