//! e1000 datapath: burst receive and transmit on legacy descriptors.
//!
//! Both rings use free-running counters (see `zcnic_descriptors::RingIndex`):
//! - RX: `consumed` is the next slot to look at; `produced` is the tail (RDT) as a counter.
//!   Slots `[consumed, produced)` belong to the device; slot `produced` always holds a
//!   buffer but is not handed over (the SDM's "RDH == RDT means no descriptors" rule).
//! - TX: `produced` is the tail (TDT); `cleaned` trails it by the frames not yet reclaimed.
//!   RS is set on one descriptor per [`TX_CLEAN_BATCH`], so the device writes back status
//!   once per batch and cleanup checks one descriptor per batch; and on the last
//!   descriptor of every burst, so `flush` has a DD to wait for. Buffers are released only
//!   on DD: TDH tracks descriptor fetch, and the SDM lets the NIC read the data later.
//!
//! One doorbell (tail write) per burst, no register read, no allocation, no system call.

use super::regs;
use super::E1000;
use crate::intel::reassembly::{Ending, Reassembly};
use crate::mmio::Bar;
use crate::pci::PciAddr;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use zcnic_descriptors::e1000::{RxDesc, RxStatus, TxDesc};
use zcnic_descriptors::RingIndex;
use zcnic_hugepages::{
    DmaAllocator, DmaError, DmaRing, Mempool, Packet, PoolCache, Words, DATA_ROOM,
};

/// Transmit descriptors reclaimed together; RS is set on the last of each group.
pub const TX_CLEAN_BATCH: u32 = 32;
/// Largest frame the e1000 sends (8254x SDM §3.3: 16288 bytes with a payload chain).
pub const MAX_FRAME: usize = 16288;
/// Longest frame without long packets (RCTL.LPE clear), VLAN tag included, FCS not: 1522
/// on the wire.
pub const STANDARD_FRAME: usize = 1518;
/// Largest MTU: long packets take frames of up to 16384 bytes with the FCS (8254x SDM
/// §13.4.22, RCTL.LPE); Linux's e1000 caps the frame at 16128.
pub const MAX_MTU: usize = 16128 - crate::config::FRAME_OVERHEAD;

/// Whether the descriptor in `slot` asks for a status write-back (RS).
#[inline(always)]
fn report(slot: usize) -> bool {
    slot as u32 % TX_CLEAN_BATCH == TX_CLEAN_BATCH - 1
}

pub(crate) struct RxQueue {
    pub(crate) ring: DmaRing,
    idx: RingIndex,
    pub(crate) bufs: Vec<Option<Packet>>,
    /// A buffer that is never handed out: a slot left without one (a driver fault) points
    /// here rather than at address 0, and what lands in it is dropped.
    /// `None` only once leaked with the rest of the port's memory.
    pub(crate) sink: Option<Packet>,
    /// Fresh buffers for one burst's refill, taken from `cache`.
    fresh: Vec<Packet>,
    /// Where refills come from (`nic::queue_cache`), and where completed transmit
    /// buffers go: one thread drives both sides of an e1000.
    cache: PoolCache,
    /// Long packets are on (RCTL.LPE): a frame may span several descriptors.
    jumbo: bool,
    /// The long frame being received.
    reasm: Reassembly,
    consumed: u32,
    produced: u32,
}

pub(crate) struct TxQueue {
    pub(crate) ring: DmaRing,
    idx: RingIndex,
    pub(crate) bufs: Vec<Option<Packet>>,
    produced: u32,
    cleaned: u32,
    /// Every descriptor points at ceiling mode's frame; `tx` writing any clears it.
    pub(crate) ceiling_posted: bool,
}

impl RxQueue {
    /// Descriptor `slot`, read as two words (see `DmaRing::read_words`).
    #[inline(always)]
    fn desc(&self, slot: usize) -> RxDesc {
        RxDesc::from_words(self.ring.read_words(slot))
    }

    /// A ring with a buffer in every slot, for frames of up to `max_frame` bytes (long
    /// packets on above [`STANDARD_FRAME`]).
    pub(crate) fn new(
        dma: &dyn DmaAllocator,
        pool: &Arc<Mempool>,
        idx: RingIndex,
        max_frame: usize,
    ) -> Result<Self, DmaError> {
        let ring = DmaRing::new(dma, idx.size() as usize)?;
        let bufs = crate::intel::fill_rx_ring(&ring, pool, idx, |a| RxDesc::ready(a).to_words())?
            .into_iter()
            .map(Some)
            .collect();
        let sink = pool.alloc().ok_or_else(|| {
            DmaError::Invalid(format!(
                "pool of {} buffers has none left over for the receive ring's spare",
                pool.capacity()
            ))
        })?;
        Ok(Self {
            ring,
            idx,
            bufs,
            sink: Some(sink),
            fresh: Vec::with_capacity(idx.size() as usize),
            cache: crate::nic::queue_cache(pool),
            jumbo: max_frame > STANDARD_FRAME,
            reasm: Reassembly::new(max_frame),
            consumed: 0,
            produced: idx.size() - 1,
        })
    }

    /// The first RDT value: every slot but the last handed over.
    pub(crate) fn initial_tail(&self) -> u32 {
        self.idx.slot(self.produced) as u32
    }
}

impl TxQueue {
    /// Descriptor `slot`, read as two words (see `DmaRing::read_words`).
    #[inline(always)]
    fn desc(&self, slot: usize) -> TxDesc {
        TxDesc::from_words(self.ring.read_words(slot))
    }

    #[inline(always)]
    fn set(&self, slot: usize, d: TxDesc) {
        self.ring.write_words(slot, d.to_words());
    }

    pub(crate) fn new(dma: &dyn DmaAllocator, idx: RingIndex) -> Result<Self, DmaError> {
        let ring = DmaRing::new(dma, idx.size() as usize)?;
        let bufs = (0..idx.size()).map(|_| None).collect();
        Ok(Self {
            ring,
            idx,
            bufs,
            produced: 0,
            cleaned: 0,
            ceiling_posted: false,
        })
    }

    /// Reclaims every completed cleanup batch: the device wrote DD on its last descriptor,
    /// and (in order) it finished all before it. The packets go into the port's cache, or into
    /// `keep` with `KEEP` (see `Nic::tx_batch_recycle`).
    #[inline]
    fn clean<const KEEP: bool>(&mut self, keep: &mut Vec<Packet>, cache: &mut PoolCache) {
        loop {
            // The next descriptor with RS (counter % 32 == 31; the ring size is a multiple
            // of 32, so slot and counter agree). Usually a whole batch; shorter right after
            // `reclaim_idle_tx` left `cleaned` mid-batch.
            let last = self.cleaned | (TX_CLEAN_BATCH - 1);
            let n = last.wrapping_sub(self.cleaned) + 1;
            if self.idx.in_flight(self.produced, self.cleaned) < n {
                // A 32-slot ring never holds a whole group (one slot stays empty): full,
                // it would never free a slot. Its last burst's end asked for DD.
                if self.free() == 0 && self.all_done() {
                    fence(Ordering::Acquire);
                    let (bufs, idx, from) = (&mut self.bufs, self.idx, self.cleaned);
                    let count = self.produced.wrapping_sub(from);
                    let slot = |i: u32| idx.slot(from.wrapping_add(i));
                    give::<KEEP>(keep, cache, (0..count).filter_map(|i| bufs[slot(i)].take()));
                    self.cleaned = self.produced;
                }
                break;
            }
            if !self.desc(self.idx.slot(last)).done() {
                break;
            }
            // Acquire: the DD status must be read before the buffers are reused.
            fence(Ordering::Acquire);
            // The group lies within one aligned run of TX_CLEAN_BATCH slots (the ring is a
            // power of two >= 32), so it is one slice, not a wrapped range.
            let first = self.idx.slot(self.cleaned);
            match self.bufs.get_mut(first..first + n as usize) {
                Some(group) if !KEEP => cache.free_slots(group),
                Some(group) => keep.extend(group.iter_mut().filter_map(Option::take)),
                None => {
                    let (bufs, idx, at) = (&mut self.bufs, self.idx, self.cleaned);
                    let slot = |i: u32| idx.slot(at.wrapping_add(i));
                    give::<KEEP>(keep, cache, (0..n).filter_map(|i| bufs[slot(i)].take()));
                }
            }
            self.cleaned = self.cleaned.wrapping_add(n);
        }
    }

    /// Slots free for new frames. One slot always stays empty: TDT == TDH means "empty".
    #[inline(always)]
    fn free(&self) -> u32 {
        self.idx.free(self.produced, self.cleaned).saturating_sub(1)
    }

    /// Writes every slot's descriptor for `pkt` (ceiling mode; the ring is idle).
    pub(crate) fn point_all_at(&mut self, pkt: &Packet) {
        for slot in 0..self.idx.size() as usize {
            self.set(
                slot,
                TxDesc::frame(pkt.iova(), pkt.len() as u16, report(slot)),
            );
        }
        self.ceiling_posted = true;
    }

    /// Asks for a status write-back on the burst's last descriptor (counter `at - 1`),
    /// rewriting it whole so no DD of an earlier use is left in it.
    #[inline(always)]
    fn report_last(&self, at: u32) {
        let slot = self.idx.slot(at.wrapping_sub(1));
        let mut d = self.desc(slot);
        // Ceiling mode re-posts descriptors as they are: a DD left from an earlier lap
        // would make `all_done` true while the device still owns the ring.
        d.status = 0;
        self.set(slot, d.reporting());
    }

    /// Whether the device is done with every queued frame: DD on the last descriptor
    /// queued, which asked for it (`report_last`), and the device completes in order.
    pub(crate) fn all_done(&self) -> bool {
        self.produced == self.cleaned
            || self
                .desc(self.idx.slot(self.produced.wrapping_sub(1)))
                .done()
    }

    /// Sets RS on the descriptors among counters `from..to` that end a cleanup batch (the
    /// last of each aligned run of [`TX_CLEAN_BATCH`]), so the device writes status back
    /// there only. Before the tail moves, so the device never sees them without it.
    #[inline(always)]
    fn mark_reports(&self, from: u32, to: u32) {
        let span = to.wrapping_sub(from);
        let mut c = from | (TX_CLEAN_BATCH - 1);
        while c.wrapping_sub(from) < span {
            let slot = self.idx.slot(c);
            self.set(slot, self.desc(slot).reporting());
            c = c.wrapping_add(TX_CLEAN_BATCH);
        }
    }

    /// Tail slot number, as TDT wants it.
    pub(crate) fn tail(&self) -> u32 {
        self.idx.slot(self.produced) as u32
    }
}

/// Keeps `pkt` in `slot` until the device is done with it. The slot is empty (cleanup
/// emptied it); were it not, the stale packet is dropped, off the hot path.
#[inline(always)]
fn park(bufs: &mut [Option<Packet>], slot: usize, pkt: Packet) {
    if let Some(stale) = bufs[slot].replace(pkt) {
        drop_stale(stale);
    }
}

/// Queues a frame the fast path did not take, at counter `at`: one of several parts (a
/// chain of buffers, attached payloads from application memory), sent as a chain of data
/// descriptors with EOP on the last, which also holds the packet (8254x SDM §3.3.3: a
/// frame may span several data descriptors); or one from another address space, copied
/// into buffers of `pool` first (`nic::into_space`). Returns the frame's length and the
/// descriptors used, at most what `nic::descriptors` counted for it; `None` (the frame
/// is dropped) when a part is empty, the frame is longer than [`MAX_FRAME`], or its copy
/// would take more descriptors than the frame was given.
#[inline(never)]
fn chain(
    ring: Words<'_>,
    bufs: &mut [Option<Packet>],
    at: u32,
    pkt: Packet,
    pool: &Arc<Mempool>,
) -> Option<(usize, u32)> {
    let given = crate::nic::descriptors(&pkt);
    let pkt = crate::nic::into_space(pkt, pool)?;
    let parts = || {
        pkt.segments().flat_map(|s| {
            let payload = s.payload().map(|p| (p.iova(), p.len()));
            std::iter::once((s.iova(), s.len())).chain(payload)
        })
    };
    let (n, total) = parts().fold((0, 0), |(n, t), (_, len)| (n + 1, t + len));
    if total > MAX_FRAME || n > given || parts().any(|(_, len)| len == 0) {
        return None;
    }
    let mut slot = ring.slot(at);
    for (i, (iova, len)) in (1usize..).zip(parts()) {
        slot = ring.slot(at.wrapping_add(i as u32 - 1));
        // Each part is at most MAX_FRAME bytes, so its length fits the field.
        let desc = if i == n {
            TxDesc::frame(iova, len as u16, false)
        } else {
            TxDesc::data(iova, len as u16, false)
        };
        ring.write(slot, desc.to_words());
    }
    park(bufs, slot, pkt);
    Some((total, n as u32))
}

/// Completed transmit packets: into `keep` with `KEEP`, else into the port's cache (the
/// receive side's, so a forwarder's buffers go round without touching the shared stack).
#[inline(always)]
fn give<const KEEP: bool>(
    keep: &mut Vec<Packet>,
    cache: &mut PoolCache,
    pkts: impl Iterator<Item = Packet>,
) {
    if KEEP {
        keep.extend(pkts);
    } else {
        cache.free_all(pkts);
    }
}

/// Hands a completed receive descriptor the device filled badly (or had no business
/// filling) back with the buffer it already holds: no frame comes out of it.
#[cold]
#[inline(never)]
fn reject(
    addr: PciAddr,
    ring: Words<'_>,
    bufs: &[Option<Packet>],
    slot: usize,
    sink: Option<&Packet>,
) {
    let desc = RxDesc::from_words(ring.read(slot));
    log::debug!(
        "{addr}: rx slot {slot}: {:?}",
        desc.frame_len(DATA_ROOM as u16)
    );
    if let Some(buf) = bufs[slot].as_ref().or(sink) {
        ring.write(slot, RxDesc::ready(buf.iova()).to_words());
    }
}

/// The receive loop's end moved one further for a descriptor that delivered nothing, but
/// never past `produced`.
#[inline(always)]
fn beyond(end: u32, produced: u32) -> u32 {
    if end == produced {
        end
    } else {
        end.wrapping_add(1)
    }
}

/// Puts a buffer from `pool` in an empty receive slot; false when the pool is dry.
#[cold]
#[inline(never)]
fn refill_empty(
    ring: Words<'_>,
    bufs: &mut [Option<Packet>],
    slot: usize,
    pool: &Arc<Mempool>,
) -> bool {
    let Some(new) = pool.alloc() else {
        return false;
    };
    ring.write(slot, RxDesc::ready(new.iova()).to_words());
    bufs[slot] = Some(new);
    true
}

/// The pool had no buffer to refill a slot with.
struct NoBuffer;

/// Takes the buffer of a completed descriptor that holds a part of a long frame, putting
/// a fresh one from `cache` in its place: the part, or `None` for a slot that had no buffer
/// (a driver fault; the frame is dropped).
#[cold]
#[inline(never)]
fn take_part(
    ring: Words<'_>,
    bufs: &mut [Option<Packet>],
    slot: usize,
    cache: &mut PoolCache,
) -> Result<Option<Packet>, NoBuffer> {
    let new = cache.alloc().ok_or(NoBuffer)?;
    // Acquire: the part's bytes are read (by whoever gets the frame) only after its DD.
    fence(Ordering::Acquire);
    ring.write(slot, RxDesc::ready(new.iova()).to_words());
    Ok(bufs[slot].replace(new))
}

#[cold]
#[inline(never)]
fn drop_stale(pkt: Packet) {
    drop(pkt);
}

impl<B: Bar> E1000<B> {
    /// Receives up to `max` frames into `out`. Refills come from the back of `spare`
    /// first (see `Nic::rx_batch_recycle`), then from the port's cache; those from `spare`
    /// that are not used go back to it.
    pub(crate) fn rx(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        let q = &mut self.rx;
        let start = q.consumed;
        let limit = (q.idx.in_flight(q.produced, start) as usize).min(max);
        // The common empty poll ends here, on one descriptor read.
        if limit == 0 || !q.desc(q.idx.slot(start)).done() {
            return 0;
        }
        // Refills for the frames waiting: the caller's spares first, then the cache's (the
        // pool's when it runs short). The device completes in order, so when the burst's last descriptor is done,
        // all are (a device that lies only leaves refills over, which go back below);
        // otherwise count them.
        let waiting = if q
            .desc(q.idx.slot(start.wrapping_add(limit as u32 - 1)))
            .done()
        {
            limit
        } else {
            (1..limit)
                .take_while(|&i| q.desc(q.idx.slot(start.wrapping_add(i as u32))).done())
                .count()
                + 1
        };
        let given = crate::nic::take_spares(&mut q.fresh, spare, waiting, &self.pool);
        q.cache.alloc_batch(&mut q.fresh, waiting - given);
        out.reserve(waiting);
        // Each frame's buffer trades places with a refill: the refill goes into the ring
        // slot, the frame into the refill's place, so `fresh[..k]` ends up holding the
        // frames in order and `fresh[k..]` the refills left over. The ring, the slices and
        // the counters are locals, so the loop keeps them in registers (a volatile store to
        // the ring could alias fields, as far as the compiler knows; it would reload them).
        let ring = q.ring.words();
        let (bufs, fresh) = (&mut q.bufs[..=ring.last()], &mut q.fresh[..]);
        let (reasm, cache, jumbo) = (&mut q.reasm, &mut q.cache, q.jumbo);
        let mut busy = reasm.busy();
        let (mut at, mut end) = (start, start.wrapping_add(limit as u32));
        let (mut k, mut bytes, mut errors) = (0, 0, 0);
        while at != end {
            let slot = ring.slot(at);
            // Status and length are in the second word (the first is the address).
            let desc = RxDesc::from_words([0, ring.read_second(slot)]);
            let Some(len) = desc.good_len(DATA_ROOM as u16) else {
                if !desc.done() {
                    break;
                }
                if jumbo {
                    // A part of a long frame, not its last: kept (refilled from the cache),
                    // and it too leaves room under `max`.
                    if let Some(part) = desc.part_len(DATA_ROOM as u16) {
                        match take_part(ring, bufs, slot, cache) {
                            Err(NoBuffer) => {
                                self.sw.rx_no_buf += 1;
                                break;
                            }
                            Ok(Some(pkt)) => errors += u64::from(!reasm.part(pkt, part)),
                            Ok(None) => {
                                reasm.abort(false);
                                errors += 1;
                            }
                        }
                        busy = reasm.busy();
                        (at, end) = (at.wrapping_add(1), beyond(end, q.produced));
                        continue;
                    }
                    reasm.abort(desc.status & RxStatus::EOP.bits() != 0);
                    busy = reasm.busy();
                }
                reject(self.addr, ring, bufs, slot, q.sink.as_ref());
                errors += 1;
                // A bad descriptor delivers nothing, so it leaves room under `max` for one
                // more (its refill is left over for that one, too).
                (at, end) = (at.wrapping_add(1), beyond(end, q.produced));
                continue;
            };
            // Acquire: the descriptor body and the frame are read only after DD was seen.
            fence(Ordering::Acquire);
            let Some(new) = fresh.get_mut(k) else {
                self.sw.rx_no_buf += 1;
                break;
            };
            let Some(pkt) = &mut bufs[slot] else {
                // A slot without a buffer would be a driver fault: refill it from the pool,
                // off the hot path. No frame comes out, so it too leaves room under `max`.
                if !refill_empty(ring, bufs, slot, &self.pool) {
                    self.sw.rx_no_buf += 1;
                    break;
                }
                (at, end) = (at.wrapping_add(1), beyond(end, q.produced));
                continue;
            };
            // The device wrote `len` <= DATA_ROOM bytes at the default headroom.
            pkt.reset_len(len);
            let refill = new.iova();
            std::mem::swap(new, pkt);
            ring.write(slot, RxDesc::ready(refill).to_words());
            at = at.wrapping_add(1);
            if busy {
                // The last part of a long frame: `new` becomes the whole frame, or goes
                // on as a refill when the frame was dropped.
                busy = false;
                match reasm.finish(new) {
                    Ending::Frame(total) => bytes += total as u64,
                    Ending::Dropped => {
                        errors += 1;
                        continue;
                    }
                }
                k += 1;
                continue;
            }
            bytes += u64::from(len);
            k += 1;
        }
        // Usually every refill was used: then the frames move over in one copy.
        if k == q.fresh.len() {
            out.append(&mut q.fresh);
        } else {
            out.extend(q.fresh.drain(..k));
        }
        // Refills left over for bad descriptors, which keep their buffer: the caller's go
        // back to it (they came first), the cache's to the cache.
        if !q.fresh.is_empty() {
            let back = given.saturating_sub(k);
            q.cache.free_all(q.fresh.drain(back..));
            spare.append(&mut q.fresh);
        }
        let taken = at.wrapping_sub(start);
        q.consumed = at;
        if taken > 0 {
            // The slot at the old tail was never the device's; DD there is a device fault.
            let gap = q.idx.slot(q.produced);
            if q.desc(gap).done() {
                errors += 1;
                reject(self.addr, q.ring.words(), &q.bufs, gap, q.sink.as_ref());
            }
            q.produced = q.produced.wrapping_add(taken);
            // Release: refilled descriptors must be visible before the tail moves.
            fence(Ordering::Release);
            self.bar.write32(regs::RDT, q.idx.slot(q.produced) as u32);
        }
        self.sw.rx_errors += errors;
        self.sw.rx_bytes += bytes;
        self.sw.rx_packets += k as u64;
        k
    }

    /// Sends what fits of `pkts`; completed packets go to the port's cache, or into `done`
    /// with `KEEP`.
    pub(crate) fn tx<const KEEP: bool>(
        &mut self,
        pkts: &mut Vec<Packet>,
        done: &mut Vec<Packet>,
    ) -> usize {
        let q = &mut self.tx;
        q.clean::<KEEP>(done, &mut self.rx.cache);
        let n = crate::nic::frames_that_fit(pkts, q.free() as usize);
        if n == 0 {
            return 0;
        }
        let start = q.produced;
        // The ring and the parked packets in locals, and the counters too, so
        // the loop keeps them in registers: nothing in it can make the compiler reload or
        // store them per frame. RS is set after the loop, on one descriptor per batch.
        let (mut bytes, mut errors, mut at) = (0u64, 0u64, start);
        let (ring, space) = (q.ring.words(), self.space);
        let bufs = &mut q.bufs[..=ring.last()];
        let mut frames = pkts.drain(..n);
        loop {
            // The common frame (one buffer of this port's address space, 1..=DATA_ROOM
            // bytes, one descriptor, into an empty slot) in a loop that calls nothing, so
            // it keeps its values in registers; any other leaves it.
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
            // `chain` parks the frame as the common path would, dropping a stale packet
            // it finds in the slot (none should be there).
            match chain(ring, bufs, at, pkt, &self.pool) {
                Some((total, used)) => {
                    at = at.wrapping_add(used);
                    bytes += total as u64;
                }
                None => errors += 1,
            }
        }
        drop(frames);
        if at != start {
            q.mark_reports(start, at);
            q.report_last(at);
            q.ceiling_posted = false;
        }
        q.produced = at;
        // Release: descriptors and frame data must be visible before the tail moves.
        fence(Ordering::Release);
        self.bar.write32(regs::TDT, q.tail());
        self.sw.tx_errors += errors;
        self.sw.tx_bytes += bytes;
        self.sw.tx_packets += n as u64 - errors;
        n
    }

    /// Ceiling mode: hands up to `burst` already written descriptors back to the device.
    /// Only a descriptor with RS is rewritten, to clear the DD the device left in it.
    pub(crate) fn repost_tx(&mut self, burst: usize) -> usize {
        let q = &mut self.tx;
        q.clean::<false>(&mut Vec::new(), &mut self.rx.cache);
        let n = q.free().min(burst as u32);
        for i in 0..n {
            let slot = q.idx.slot(q.produced.wrapping_add(i));
            if report(slot) {
                let d = q.desc(slot);
                q.set(slot, TxDesc::frame(d.addr, d.length, true));
            }
        }
        q.produced = q.produced.wrapping_add(n);
        if n > 0 {
            q.report_last(q.produced);
        }
        // Release: the rewritten descriptors must be visible before the tail moves.
        fence(Ordering::Release);
        self.bar.write32(regs::TDT, q.tail());
        self.sw.tx_packets += u64::from(n);
        n as usize
    }

    /// Once the device has completed every queued frame ([`TxQueue::all_done`]), releases
    /// every frame still held, so buffers and application segments come back without
    /// waiting for the next RS batch.
    pub(crate) fn reclaim_done_tx(&mut self) {
        let q = &mut self.tx;
        if !q.all_done() {
            return;
        }
        // Acquire: the DD status is read before the buffers are reused.
        fence(Ordering::Acquire);
        while q.cleaned != q.produced {
            q.bufs[q.idx.slot(q.cleaned)] = None;
            q.cleaned = q.cleaned.wrapping_add(1);
        }
    }
}
