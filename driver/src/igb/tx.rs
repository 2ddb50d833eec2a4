//! igb transmit: burst send on advanced descriptors, one handle per queue
//! ([`IgbTxQueue`]), driven by one thread and writing only its own tail register, and the
//! clean-up that gives sent buffers back.
//!
//! Free-running counters as in the e1000 (`zcnic_descriptors::RingIndex`): `produced` is
//! the tail; `cleaned` trails it. RS is set on the last descriptor of every aligned group
//! of [`TX_CLEAN_BATCH`] and on the last of each burst; buffers are released only on DD
//! (TDH tracks descriptor fetch, not completion), a group at a time, and the rest once DD
//! is on the last burst's end.
//!
//! One doorbell per burst, no register read, no allocation, no system call.

use crate::e1000::TX_CLEAN_BATCH;
use crate::mmio::Doorbell;
use crate::port::{QueueCounters, Teardown, TxQueue};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zcnic_descriptors::igb::TxDesc;
use zcnic_descriptors::RingIndex;
use zcnic_hugepages::{DmaAllocator, DmaError, DmaRing, Mempool, Packet, PoolCache, DATA_ROOM};

/// Largest frame the 82576 sends without TSO (§7.2.1: 9.5 KB jumbo limit).
pub const MAX_FRAME: usize = 9728;

pub(crate) struct TxRing {
    pub(crate) ring: DmaRing,
    idx: RingIndex,
    pub(crate) bufs: Vec<Option<Packet>>,
    produced: u32,
    cleaned: u32,
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

impl std::fmt::Debug for IgbTxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IgbTxQueue({})", self.queue)
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
