//! igb receive: burst receive on advanced descriptors, one handle per queue
//! ([`IgbRxQueue`]), driven by one thread and writing only its own tail register.
//!
//! Free-running counters as in the e1000 (`zcnic_descriptors::RingIndex`): slots
//! `[consumed, produced)` are the device's; slot `produced` holds a buffer but is not
//! handed over ("RDH == RDT means no descriptors"), and is re-armed (DD there counted as an
//! error) before the tail passes it. The device's write-back replaces the buffer address,
//! so each slot's buffer lives in `bufs`, never read back from the ring; a slot is re-armed
//! with a fresh read-format descriptor before the tail moves past it.
//!
//! One doorbell per burst, no register read, no allocation, no system call.

use crate::mmio::Doorbell;
use crate::port::{QueueCounters, RxQueue, Teardown};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use zcnic_descriptors::igb::{rx_ready, RxWriteBack};
use zcnic_descriptors::RingIndex;
use zcnic_hugepages::{DmaAllocator, DmaError, DmaRing, Mempool, Packet, PoolCache, DATA_ROOM};

pub(crate) struct RxRing {
    pub(crate) ring: DmaRing,
    idx: RingIndex,
    /// The buffer of each slot, always one.
    pub(crate) bufs: Vec<Packet>,
    /// Refills for one burst, taken from the cache or the pool in one operation.
    fresh: Vec<Packet>,
    consumed: u32,
    produced: u32,
    /// A descriptor without EOP was seen: the rest of that frame is dropped too.
    discarding: bool,
    /// Record each frame's tag and checksum verdicts (`Config::vlan_strip`): a few
    /// instructions a frame that a port without it does not pay.
    report: bool,
}

/// The receive side of one igb queue.
pub struct IgbRxQueue {
    pub(crate) ring: Option<RxRing>,
    pub(crate) tail: Doorbell,
    pub(crate) pool: Arc<Mempool>,
    pub(crate) counters: Arc<QueueCounters>,
    pub(crate) teardown: Arc<Teardown>,
    pub(crate) queue: u16,
    /// The queue's MSI-X vector, when the platform routed one (`irq.rs`).
    pub(crate) irq: Option<super::irq::QueueIrq>,
}

impl std::fmt::Debug for IgbRxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IgbRxQueue({})", self.queue)
    }
}

impl RxQueue for IgbRxQueue {
    fn queue(&self) -> u16 {
        self.queue
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.rx(out, max, &mut Vec::new(), None)
    }

    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        self.rx(out, max, spare, None)
    }

    fn rx_batch_cached(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        cache: &mut PoolCache,
    ) -> usize {
        self.rx(out, max, &mut Vec::new(), Some(cache))
    }

    /// The queue's own MSI-X vector (`irq.rs`).
    fn rx_interrupt_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, crate::Error> {
        self.irq_fd()
    }

    /// EICR cleared, EIMS set, then the ring again (`irq.rs`).
    fn enable_rx_interrupt(&mut self) -> Result<bool, crate::Error> {
        self.arm()
    }

    fn disable_rx_interrupt(&mut self) -> Result<(), crate::Error> {
        self.disarm()
    }
}

impl Drop for IgbRxQueue {
    /// The ring and its buffers go to the port, which frees them once the device is
    /// stopped (or at once, if it already is).
    fn drop(&mut self) {
        if let Some(ring) = self.ring.take() {
            self.teardown.park(Box::new(ring));
        }
    }
}

impl RxRing {
    /// Whether the device has completed the descriptor `rx` looks at next: the re-check
    /// after arming the interrupt.
    pub(crate) fn ready(&self) -> bool {
        self.idx.in_flight(self.produced, self.consumed) > 0
            && RxWriteBack::from_words(self.ring.read_words(self.idx.slot(self.consumed))).done()
    }

    pub(crate) fn new(
        dma: &dyn DmaAllocator,
        pool: &Arc<Mempool>,
        idx: RingIndex,
        report: bool,
    ) -> Result<Self, DmaError> {
        let ring = DmaRing::new(dma, idx.size() as usize)?;
        let bufs = crate::intel::fill_rx_ring(&ring, pool, idx, rx_ready)?;
        Ok(Self {
            ring,
            idx,
            bufs,
            fresh: Vec::with_capacity(idx.size() as usize),
            consumed: 0,
            produced: idx.size() - 1,
            discarding: false,
            report,
        })
    }

    /// The first RDT value: every slot but the last handed over.
    pub(crate) fn initial_tail(&self) -> u32 {
        self.idx.slot(self.produced) as u32
    }
}

impl IgbRxQueue {
    /// Receives up to `max` frames into `out`. Refills come from the back of `spare` first
    /// (`Nic::rx_batch_recycle`), then from `cache` (the pool when `None`); spares not
    /// used go back to `spare`. A port that records receive verdicts runs a loop of its
    /// own, so one that does not pays nothing per frame for them.
    pub(crate) fn rx(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
        cache: Option<&mut PoolCache>,
    ) -> usize {
        if self.ring.as_ref().is_some_and(|q| q.report) {
            self.rx_loop::<true>(out, max, spare, cache)
        } else {
            self.rx_loop::<false>(out, max, spare, cache)
        }
    }

    #[inline(always)]
    fn rx_loop<const REPORT: bool>(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
        cache: Option<&mut PoolCache>,
    ) -> usize {
        // Only a cache of this queue's own pool: another pool's buffers may hold addresses
        // that mean something else, or nothing, to this device (its IOMMU domain).
        let mut cache = cache.filter(|c| Arc::ptr_eq(c.pool(), &self.pool));
        let Some(q) = self.ring.as_mut() else {
            return 0;
        };
        let limit = (q.idx.in_flight(q.produced, q.consumed) as usize).min(max);
        let first = RxWriteBack::from_words(q.ring.read_words(q.idx.slot(q.consumed)));
        // The common empty poll ends here, on one descriptor read.
        if limit == 0 || !first.done() {
            return 0;
        }
        // Refills for the frames waiting, not for all `max`: the device completes in order,
        // so when the last of `limit` is done all are (a device that lies only leaves
        // refills over, which go back below); otherwise count them.
        let done_at = |i: usize| {
            let slot = q.idx.slot(q.consumed.wrapping_add(i as u32));
            RxWriteBack::from_words(q.ring.read_words(slot)).done()
        };
        let waiting = if done_at(limit - 1) {
            limit
        } else {
            (1..limit).take_while(|&i| done_at(i)).count() + 1
        };
        // The caller's spares first in `fresh`, then the pool's: refills are taken from the
        // front, so spares go first, as `Nic::rx_batch_recycle` promises.
        let given = crate::nic::take_spares(&mut q.fresh, spare, waiting, &self.pool);
        match cache.as_deref_mut() {
            Some(cache) => cache.alloc_batch(&mut q.fresh, waiting - given),
            None => self.pool.alloc_batch(&mut q.fresh, waiting - given),
        };
        let short = q.fresh.len() < waiting;
        out.reserve(waiting);
        // Each frame's buffer trades places with a refill, so `fresh[..k]` ends up holding
        // the frames in order and `fresh[k..]` the refills left over. Ring, slices, index
        // and state are locals, so the loop keeps them in registers (a store to the ring
        // could alias fields, as far as the compiler knows).
        let (idx, produced, start) = (q.idx, q.produced, q.consumed);
        let (ring, bufs, fresh) = (&q.ring, &mut q.bufs[..], &mut q.fresh[..]);
        let mut discarding = q.discarding;
        let (mut at, mut k, mut bytes, mut errors) = (start, 0usize, 0u64, 0u64);
        // Each descriptor looked at is re-armed, so a bad one never stops the ring: it
        // keeps its buffer and counts as an error. Frames stop at `max` delivered or at
        // the first descriptor not done.
        while k < max && at != produced {
            let slot = idx.slot(at);
            let wb = RxWriteBack::from_words(ring.read_words(slot));
            if !wb.done() {
                break;
            }
            // Acquire: the descriptor body and the frame are read only after DD was seen.
            fence(Ordering::Acquire);
            let whole = !discarding;
            discarding = !wb.is_eop();
            match wb.good_len(DATA_ROOM as u16).filter(|_| whole) {
                Some(len) => {
                    let Some(new) = fresh.get_mut(k) else {
                        // Out of refills: the pool ran dry, or more frames completed since
                        // they were counted (those wait for the next call).
                        if short {
                            self.counters.no_buf();
                        }
                        discarding = false;
                        break;
                    };
                    let pkt = &mut bufs[slot];
                    pkt.reset_len(len);
                    if REPORT {
                        pkt.set_rss_rx(wb.rss_report(), wb.offload_word());
                    } else {
                        pkt.set_rss(wb.rss_report());
                    }
                    std::mem::swap(new, pkt);
                    bytes += u64::from(len);
                    k += 1;
                }
                None => errors += 1,
            }
            ring.write_words(slot, rx_ready(bufs[slot].iova()));
            at = at.wrapping_add(1);
        }
        q.discarding = discarding;
        // Usually every refill was used: then the frames move over in one copy.
        if k == q.fresh.len() {
            out.append(&mut q.fresh);
        } else {
            out.extend(q.fresh.drain(..k));
        }
        // Refills left over (bad descriptors keep their buffer, or the ring ran out of
        // done descriptors): the caller's go back to it (they came first), the pool's to
        // the pool.
        if !q.fresh.is_empty() {
            let back = given.saturating_sub(k);
            match cache {
                Some(cache) => cache.free_all(q.fresh.drain(back..)),
                None => Packet::drop_all(q.fresh.drain(back..)),
            }
            spare.append(&mut q.fresh);
        }
        let taken = at.wrapping_sub(start);
        q.consumed = at;
        if taken > 0 {
            // The slot at the old tail was never the device's: DD there is a device fault,
            // and its write-back replaced the buffer's address. Re-armed before the tail
            // hands it over, or its stale DD would pass for a frame the device may still
            // be writing.
            let gap = q.idx.slot(q.produced);
            if RxWriteBack::from_words(q.ring.read_words(gap)).done() {
                errors += 1;
            }
            q.ring.write_words(gap, rx_ready(q.bufs[gap].iova()));
            q.produced = q.produced.wrapping_add(taken);
            // Release: re-armed descriptors must be visible before the tail moves.
            fence(Ordering::Release);
            self.tail.write(q.idx.slot(q.produced) as u32);
        }
        self.counters.add(k as u64, bytes, errors);
        k
    }
}
