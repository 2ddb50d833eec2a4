//! igb datapath: burst receive and transmit on advanced descriptors, one handle per queue
//! ([`IgbRxQueue`], [`IgbTxQueue`]), each driven by one thread and writing only its own
//! tail register.
//!
//! Free-running counters as in the e1000 (`zcnic_descriptors::RingIndex`):
//! - RX: slots `[consumed, produced)` are the device's; slot `produced` holds a buffer but
//!   is not handed over ("RDH == RDT means no descriptors"), and is re-armed (DD there
//!   counted as an error) before the tail passes it. The device's write-back
//!   replaces the buffer address, so each slot's buffer lives in `bufs`, never read back
//!   from the ring; a slot is re-armed with a fresh read-format descriptor before the tail
//!   moves past it.
//! - TX: `produced` is the tail; `cleaned` trails it. RS is set on the last descriptor of
//!   every aligned group of [`TX_CLEAN_BATCH`] and on the last of each burst; buffers are
//!   released only on DD (TDH tracks descriptor fetch, not completion), a group at a time,
//!   and the rest once DD is on the last burst's end.
//!
//! One doorbell per burst, no register read, no allocation, no system call.

use crate::e1000::TX_CLEAN_BATCH;
use crate::mmio::Doorbell;
use crate::port::{QueueCounters, RxQueue, Teardown, TxQueue};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zcnic_descriptors::igb::{rx_ready, RxWriteBack, TxDesc};
use zcnic_descriptors::RingIndex;
use zcnic_hugepages::{DmaAllocator, DmaError, DmaRing, Mempool, Packet, PoolCache, DATA_ROOM};

/// Largest frame the 82576 sends without TSO (§7.2.1: 9.5 KB jumbo limit).
pub const MAX_FRAME: usize = 9728;

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

pub(crate) struct TxRing {
    pub(crate) ring: DmaRing,
    idx: RingIndex,
    pub(crate) bufs: Vec<Option<Packet>>,
    produced: u32,
    cleaned: u32,
}

/// The receive side of one igb queue.
pub struct IgbRxQueue {
    pub(crate) ring: Option<RxRing>,
    pub(crate) tail: Doorbell,
    pub(crate) pool: Arc<Mempool>,
    pub(crate) counters: Arc<QueueCounters>,
    pub(crate) teardown: Arc<Teardown>,
    pub(crate) queue: u16,
}

/// The transmit side of one igb queue.
pub struct IgbTxQueue {
    pub(crate) ring: Option<TxRing>,
    pub(crate) tail: Doorbell,
    pub(crate) pool: Arc<Mempool>,
    pub(crate) counters: Arc<QueueCounters>,
    pub(crate) teardown: Arc<Teardown>,
    pub(crate) queue: u16,
    /// The one frame every transmit descriptor points at in ceiling mode.
    pub(crate) ceiling: Option<Packet>,
}

impl std::fmt::Debug for IgbRxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IgbRxQueue({})", self.queue)
    }
}

impl std::fmt::Debug for IgbTxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IgbTxQueue({})", self.queue)
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
}

impl TxQueue for IgbTxQueue {
    fn queue(&self) -> u16 {
        self.queue
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.tx::<false>(pkts, &mut Vec::new(), None)
    }

    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        self.tx::<true>(pkts, done, None)
    }

    fn tx_batch_cached(&mut self, pkts: &mut Vec<Packet>, cache: &mut PoolCache) -> usize {
        self.tx::<false>(pkts, &mut Vec::new(), Some(cache))
    }

    /// Waits for DD on the last descriptor queued (every burst asks for it), never for
    /// TDH alone.
    fn flush(&mut self) -> bool {
        let Some(q) = self.ring.as_mut() else {
            return true;
        };
        let done = crate::wait_until(Duration::from_millis(500), || q.all_done());
        if done {
            q.reclaim_done::<false>(&mut Vec::new());
        }
        done
    }
}

impl IgbTxQueue {
    /// Ceiling mode (`Nic::repost`): the first call waits for the ring to drain and copies
    /// `frame` into one buffer; each call re-posts up to `burst` descriptors pointing at it.
    pub(crate) fn repost(&mut self, frame: &[u8], burst: usize) -> usize {
        if self.ceiling.is_none() {
            if !self.flush() {
                return 0;
            }
            match crate::nic::ceiling_copy(&self.pool, frame) {
                Some(p) => self.ceiling = Some(p),
                None => return 0,
            }
        }
        let Some((iova, len)) = self.ceiling.as_ref().map(|p| (p.iova(), p.len() as u16)) else {
            return 0;
        };
        self.repost_tx(iova, len, burst)
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

impl Drop for IgbTxQueue {
    /// Sends what is queued (bounded), then hands the ring, its frames and the ceiling
    /// frame to the port as the receive side does.
    fn drop(&mut self) {
        if !self.flush() {
            log::warn!("transmit queue {} did not drain before close", self.queue);
        }
        if let Some(ring) = self.ring.take() {
            self.teardown.park(Box::new((ring, self.ceiling.take())));
        }
    }
}

impl RxRing {
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

impl TxRing {
    pub(crate) fn new(dma: &dyn DmaAllocator, idx: RingIndex) -> Result<Self, DmaError> {
        let ring = DmaRing::new(dma, idx.size() as usize)?;
        let bufs = (0..idx.size()).map(|_| None).collect();
        Ok(Self {
            ring,
            idx,
            bufs,
            produced: 0,
            cleaned: 0,
        })
    }

    #[inline(always)]
    fn desc(&self, slot: usize) -> TxDesc {
        TxDesc::from_words(self.ring.read_words(slot))
    }

    /// Reclaims every completed group: DD on its last descriptor (which had RS), and the
    /// device completes in order. A group not queued whole has no RS at its end yet, but
    /// the last burst's end has: once that is done, everything goes back. (A 32-slot ring
    /// never holds a whole group, so without this a full one never freed a slot.) The
    /// packets go into `cache` (without one, back to the pool, a group per push), or into
    /// `keep` with `KEEP` (`Nic::tx_batch_recycle`).
    fn clean<const KEEP: bool>(&mut self, keep: &mut Vec<Packet>, cache: Option<&mut PoolCache>) {
        let mut cache = cache;
        loop {
            let last = self.cleaned | (TX_CLEAN_BATCH - 1);
            let n = last.wrapping_sub(self.cleaned) + 1;
            if self.idx.in_flight(self.produced, self.cleaned) < n {
                self.reclaim_done::<KEEP>(keep);
                break;
            }
            if !self.desc(self.idx.slot(last)).done() {
                break;
            }
            // Acquire: the DD status must be read before the buffers are reused.
            fence(Ordering::Acquire);
            // A group lies within one aligned run of TX_CLEAN_BATCH slots (the ring is a
            // power of two >= 32): one slice.
            let first = self.idx.slot(self.cleaned);
            let group = &mut self.bufs[first..first + n as usize];
            match cache.as_deref_mut() {
                _ if KEEP => keep.extend(group.iter_mut().filter_map(Option::take)),
                Some(cache) => cache.free_slots(group),
                None => Packet::drop_slots(group),
            }
            self.cleaned = self.cleaned.wrapping_add(n);
        }
    }

    /// Slots free for new frames; one always stays empty (TDT == TDH means empty).
    fn free(&self) -> u32 {
        self.idx.free(self.produced, self.cleaned).saturating_sub(1)
    }

    /// Whether the device is done with every queued frame: DD on the last one queued,
    /// which asked for it.
    pub(crate) fn all_done(&self) -> bool {
        self.produced == self.cleaned
            || self
                .desc(self.idx.slot(self.produced.wrapping_sub(1)))
                .done()
    }

    /// Releases every frame once the device has completed them all: to the pool, or into
    /// `keep` with `KEEP`.
    pub(crate) fn reclaim_done<const KEEP: bool>(&mut self, keep: &mut Vec<Packet>) {
        if self.produced == self.cleaned || !self.all_done() {
            return;
        }
        // Acquire: the DD status is read before the buffers are reused.
        fence(Ordering::Acquire);
        while self.cleaned != self.produced {
            if let Some(p) = self.bufs[self.idx.slot(self.cleaned)].take() {
                if KEEP {
                    keep.push(p);
                }
            }
            self.cleaned = self.cleaned.wrapping_add(1);
        }
    }

    /// Sets RS on the last descriptor of every clean-up group in `[from, to)`: once per
    /// burst, not per frame.
    fn mark_reports(&mut self, from: u32, to: u32) {
        let span = to.wrapping_sub(from);
        let mut c = from | (TX_CLEAN_BATCH - 1);
        while c.wrapping_sub(from) < span {
            let slot = self.idx.slot(c);
            self.ring
                .write_words(slot, self.desc(slot).reporting().to_words());
            c = c.wrapping_add(TX_CLEAN_BATCH);
        }
    }

    /// Writes `d` at counter `at`, asking for a write-back if it ends a clean-up group.
    #[inline(always)]
    fn put(&mut self, at: u32, d: TxDesc) {
        let slot = self.idx.slot(at);
        let d = if at % TX_CLEAN_BATCH == TX_CLEAN_BATCH - 1 {
            d.reporting()
        } else {
            d
        };
        self.ring.write_words(slot, d.to_words());
    }

    /// Queues `pkt` at counter `at`: one descriptor per part (the pool buffer, each buffer
    /// chained after it, each attached payload from application memory), the frame's
    /// length in the first (PAYLEN) and EOP on the last, which holds the packet until the
    /// device is done. Returns the frame's length and descriptors used, or `None`
    /// (dropped) when a part is empty or too long, the frame is longer than
    /// [`MAX_FRAME`], or a copy into this port's address space fails or would take more
    /// descriptors than `frames_that_fit` counted for the frame.
    fn queue(&mut self, at: u32, pkt: Packet, pool: &Arc<Mempool>) -> Option<(usize, u32)> {
        let given = crate::nic::descriptors(&pkt);
        let pkt = crate::nic::into_space(pkt, pool)?;
        let len = pkt.len();
        if pkt.is_single() {
            if len == 0 || len > DATA_ROOM {
                return None;
            }
            self.put(at, TxDesc::frame(pkt.iova(), len as u16, false));
            self.bufs[self.idx.slot(at)] = Some(pkt);
            return Some((len, 1));
        }
        let parts = || crate::nic::tx_parts(&pkt);
        let (n, total) = parts().fold((0, 0), |(n, t), (_, len)| (n + 1, t + len));
        let bad = |&(_, len): &(u64, usize)| len == 0 || len > usize::from(u16::MAX);
        if total > MAX_FRAME || n > given || parts().any(|p| bad(&p)) {
            return None;
        }
        let mut last = at;
        for (i, (iova, len)) in (0u32..).zip(parts()) {
            last = at.wrapping_add(i);
            let paylen = if i == 0 { total as u32 } else { 0 };
            let eop = i as usize == n - 1;
            self.put(last, TxDesc::data(iova, len as u16, paylen, eop, false));
        }
        // The packet (its chain and payloads) stays until the frame's last descriptor is
        // done.
        self.bufs[self.idx.slot(last)] = Some(pkt);
        Some((total, n as u32))
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

impl IgbTxQueue {
    /// Ceiling mode: queues up to `burst` descriptors for the one frame at `iova`, each
    /// written whole (a write-back may have overwritten the address of an earlier lap).
    fn repost_tx(&mut self, iova: u64, len: u16, burst: usize) -> usize {
        let Some(q) = self.ring.as_mut() else {
            return 0;
        };
        q.clean::<false>(&mut Vec::new(), None);
        let n = q.free().min(burst as u32);
        let start = q.produced;
        for i in 0..n {
            let last = i + 1 == n;
            q.put(start.wrapping_add(i), TxDesc::frame(iova, len, last));
        }
        q.produced = start.wrapping_add(n);
        // Release: the descriptors must be visible before the tail moves.
        fence(Ordering::Release);
        self.tail.write(q.idx.slot(q.produced) as u32);
        self.counters
            .add(u64::from(n), u64::from(n) * u64::from(len), 0);
        n as usize
    }

    /// Sends what fits of `pkts`; completed packets go back into `cache` (to the pool
    /// when `None`), or into `done` with `KEEP`.
    pub(crate) fn tx<const KEEP: bool>(
        &mut self,
        pkts: &mut Vec<Packet>,
        done: &mut Vec<Packet>,
        cache: Option<&mut PoolCache>,
    ) -> usize {
        let Some(q) = self.ring.as_mut() else {
            return 0;
        };
        q.clean::<KEEP>(done, cache);
        let n = crate::nic::frames_that_fit(pkts, q.free() as usize);
        if n == 0 {
            return 0;
        }
        let (start, mut at) = (q.produced, q.produced);
        let (mut bytes, mut errors) = (0u64, 0u64);
        let space = self.pool.space();
        let mut frames = pkts.drain(..n);
        loop {
            // The common frame (one buffer of this port's address space, 1..=DATA_ROOM
            // bytes, one descriptor, into an empty slot; RS goes on after the loop) in a
            // loop that calls nothing, so it keeps its values in registers; any other
            // leaves it.
            let ring = q.ring.words();
            let bufs = &mut q.bufs[..=ring.last()];
            let mut odd = None;
            for pkt in frames.by_ref() {
                let len = pkt.len();
                let slot = ring.slot(at);
                let plain =
                    pkt.is_single() && len.wrapping_sub(1) < DATA_ROOM && pkt.reachable_in(space);
                if !plain || bufs[slot].is_some() {
                    odd = Some(pkt);
                    break;
                }
                let desc = TxDesc::frame(pkt.iova(), len as u16, false);
                // Parked before the descriptor is written: the slot was just seen empty,
                // and no store comes between, so nothing is dropped here.
                bufs[slot] = Some(pkt);
                ring.write(slot, desc.to_words());
                at = at.wrapping_add(1);
                bytes += len as u64;
            }
            let Some(pkt) = odd else {
                break;
            };
            // `queue` stores the frame in its slot, dropping a stale packet it finds there
            // (none should be).
            match q.queue(at, pkt, &self.pool) {
                Some((len, used)) => {
                    at = at.wrapping_add(used);
                    bytes += len as u64;
                }
                None => errors += 1,
            }
        }
        drop(frames);
        q.mark_reports(start, at);
        if at != start {
            // The burst's last descriptor asks for a write-back, so `flush` has a DD to
            // wait for. The device has not seen it yet: the tail has not moved.
            let slot = q.idx.slot(at.wrapping_sub(1));
            q.ring
                .write_words(slot, q.desc(slot).reporting().to_words());
        }
        q.produced = at;
        // Release: descriptors and frame data must be visible before the tail moves.
        fence(Ordering::Release);
        self.tail.write(q.idx.slot(at) as u32);
        self.counters.add(n as u64 - errors, bytes, errors);
        n
    }
}
