//! e1000 datapath: burst receive and transmit on legacy descriptors.
//!
//! Both rings use free-running counters (see `zcnic_descriptors::RingIndex`):
//! - RX: `consumed` is the next slot to look at; `produced` is the tail (RDT) as a counter.
//!   Slots `[consumed, produced)` belong to the device; slot `produced` always holds a
//!   buffer but is not handed over (the SDM's "RDH == RDT means no descriptors" rule).
//! - TX: `produced` is the tail (TDT); `cleaned` trails it by the frames not yet reclaimed.
//!   RS is set on one descriptor per [`TX_CLEAN_BATCH`], so the device writes back status
//!   once per batch and cleanup checks one descriptor per batch.
//!
//! One doorbell (tail write) per burst, no register read, no allocation, no system call.

use super::regs;
use super::E1000;
use crate::mmio::Bar;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use zcnic_descriptors::e1000::{RxDesc, TxDesc};
use zcnic_descriptors::RingIndex;
use zcnic_hugepages::{DmaAllocator, DmaError, DmaRing, Mempool, Packet, DATA_ROOM};

/// Transmit descriptors reclaimed together; RS is set on the last of each group.
pub const TX_CLEAN_BATCH: u32 = 32;
/// Largest frame the e1000 sends (8254x SDM §3.3: 16288 bytes with a payload chain).
pub const MAX_FRAME: usize = 16288;

/// Whether the descriptor in `slot` asks for a status write-back (RS).
#[inline(always)]
fn report(slot: usize) -> bool {
    slot as u32 % TX_CLEAN_BATCH == TX_CLEAN_BATCH - 1
}

pub(crate) struct RxQueue {
    pub(crate) ring: DmaRing<RxDesc>,
    idx: RingIndex,
    bufs: Vec<Option<Packet>>,
    /// Fresh buffers for one burst's refill, taken from the pool in one operation.
    fresh: Vec<Packet>,
    consumed: u32,
    produced: u32,
}

pub(crate) struct TxQueue {
    pub(crate) ring: DmaRing<TxDesc>,
    idx: RingIndex,
    bufs: Vec<Option<Packet>>,
    produced: u32,
    cleaned: u32,
}

impl RxQueue {
    /// Descriptor `slot`, read as two words (see `DmaRing::read_words`).
    #[inline(always)]
    fn desc(&self, slot: usize) -> RxDesc {
        RxDesc::from_words(self.ring.read_words(slot))
    }

    #[inline(always)]
    fn set(&self, slot: usize, d: RxDesc) {
        self.ring.write_words(slot, d.to_words());
    }

    /// A ring with a buffer in every slot.
    pub(crate) fn new(
        dma: &dyn DmaAllocator,
        pool: &Arc<Mempool>,
        idx: RingIndex,
    ) -> Result<Self, DmaError> {
        let ring = DmaRing::new(dma, idx.size() as usize)?;
        let mut bufs = Vec::with_capacity(idx.size() as usize);
        for slot in 0..idx.size() as usize {
            let pkt = pool.alloc().ok_or_else(|| {
                DmaError::Invalid(format!(
                    "pool of {} buffers cannot fill a {}-slot ring",
                    pool.capacity(),
                    idx.size()
                ))
            })?;
            ring.write_words(slot, RxDesc::ready(pkt.iova()).to_words());
            bufs.push(Some(pkt));
        }
        Ok(Self {
            ring,
            idx,
            bufs,
            fresh: Vec::with_capacity(idx.size() as usize),
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
        })
    }

    /// Reclaims every completed cleanup batch: the device wrote DD on its last descriptor,
    /// and (in order) it finished all before it. The packets go back to the pool, or into
    /// `keep` with `KEEP` (see `Nic::tx_batch_recycle`).
    #[inline]
    fn clean<const KEEP: bool>(&mut self, keep: &mut Vec<Packet>) {
        loop {
            // The next descriptor with RS (counter % 32 == 31; the ring size is a multiple
            // of 32, so slot and counter agree). Usually a whole batch; shorter right after
            // `reclaim_idle_tx` left `cleaned` mid-batch.
            let last = self.cleaned | (TX_CLEAN_BATCH - 1);
            let n = last.wrapping_sub(self.cleaned) + 1;
            if self.idx.in_flight(self.produced, self.cleaned) < n
                || !self.desc(self.idx.slot(last)).done()
            {
                break;
            }
            // Acquire: the DD status must be read before the buffers are reused.
            fence(Ordering::Acquire);
            // The group lies within one aligned run of TX_CLEAN_BATCH slots (the ring is a
            // power of two >= 32), so it is one slice, not a wrapped range.
            let first = self.idx.slot(self.cleaned);
            match self.bufs.get_mut(first..first + n as usize) {
                Some(group) => give::<KEEP>(keep, group.iter_mut().filter_map(Option::take)),
                None => {
                    let (bufs, idx, at) = (&mut self.bufs, self.idx, self.cleaned);
                    let slot = |i: u32| idx.slot(at.wrapping_add(i));
                    give::<KEEP>(keep, (0..n).filter_map(|i| bufs[slot(i)].take()));
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
    }

    /// Keeps `pkt` in `slot` until the device is done with it. The slot is empty (cleanup
    /// emptied it); were it not, the stale packet is dropped, off the hot path.
    #[inline(always)]
    fn park(&mut self, slot: usize, pkt: Packet) {
        if let Some(stale) = self.bufs[slot].replace(pkt) {
            drop_stale(stale);
        }
    }

    /// Tail slot number, as TDT wants it.
    pub(crate) fn tail(&self) -> u32 {
        self.idx.slot(self.produced) as u32
    }
}

/// Completed transmit packets: into `keep` with `KEEP`, else back to the pool.
#[inline(always)]
fn give<const KEEP: bool>(keep: &mut Vec<Packet>, pkts: impl Iterator<Item = Packet>) {
    if KEEP {
        keep.extend(pkts);
    } else {
        Packet::drop_all(pkts);
    }
}

#[cold]
#[inline(never)]
fn drop_stale(pkt: Packet) {
    drop(pkt);
}

impl<B: Bar> E1000<B> {
    pub(crate) fn rx(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        let q = &mut self.rx;
        let start = q.consumed;
        // Count the frames waiting (up to `max`) to take their refills in one go.
        let (mut at, mut done) = (start, 0);
        while done < max && at != q.produced && q.desc(q.idx.slot(at)).done() {
            done += 1;
            at = at.wrapping_add(1);
        }
        if done == 0 {
            return 0;
        }
        self.pool.alloc_batch(&mut q.fresh, done);
        out.reserve(done);
        let mut delivered = 0;
        // Past `done` only when bad descriptors among them left room under `max`.
        while delivered < max && q.consumed != q.produced {
            let slot = q.idx.slot(q.consumed);
            let desc = q.desc(slot);
            if !desc.done() {
                break;
            }
            // Acquire: the descriptor body and the frame are read only after DD was seen.
            fence(Ordering::Acquire);
            match desc.frame_len(DATA_ROOM as u16) {
                Ok(len) => {
                    let Some(fresh) = q.fresh.pop() else {
                        self.sw.rx_no_buf += 1;
                        break;
                    };
                    q.set(slot, RxDesc::ready(fresh.iova()));
                    if let Some(mut pkt) = q.bufs[slot].replace(fresh) {
                        // `set_len` cannot fail: len <= DATA_ROOM was checked above.
                        let _ = pkt.set_len(usize::from(len));
                        self.sw.rx_bytes += u64::from(len);
                        out.push(pkt);
                        delivered += 1;
                    }
                }
                Err(e) => {
                    log::debug!("{}: rx slot {slot}: {e:?}", self.addr);
                    self.sw.rx_errors += 1;
                    let addr = q.bufs[slot].as_ref().map_or(0, |p| p.iova());
                    q.set(slot, RxDesc::ready(addr));
                }
            }
            q.consumed = q.consumed.wrapping_add(1);
        }
        // Refills left over for bad descriptors, which keep their buffer.
        if !q.fresh.is_empty() {
            Packet::drop_all(q.fresh.drain(..));
        }
        let taken = q.consumed.wrapping_sub(start);
        if taken > 0 {
            // The slot at the old tail was never the device's; DD there is a device fault.
            let gap = q.idx.slot(q.produced);
            if q.desc(gap).done() {
                self.sw.rx_errors += 1;
                let addr = q.bufs[gap].as_ref().map_or(0, |p| p.iova());
                q.set(gap, RxDesc::ready(addr));
            }
            q.produced = q.produced.wrapping_add(taken);
            // Release: refilled descriptors must be visible before the tail moves.
            fence(Ordering::Release);
            self.bar.write32(regs::RDT, q.idx.slot(q.produced) as u32);
        }
        self.sw.rx_packets += delivered as u64;
        delivered
    }

    /// Sends what fits of `pkts`; completed packets go to the pool, or into `done` with
    /// `KEEP`.
    pub(crate) fn tx<const KEEP: bool>(
        &mut self,
        pkts: &mut Vec<Packet>,
        done: &mut Vec<Packet>,
    ) -> usize {
        let q = &mut self.tx;
        q.clean::<KEEP>(done);
        let n = crate::nic::frames_that_fit(pkts, q.free() as usize);
        if n == 0 {
            return 0;
        }
        // Counters in locals, written back once: nothing in the loop can then make the
        // compiler store them per frame.
        let (mut bytes, mut sent, mut errors, mut at) = (0u64, 0u64, 0u64, q.produced);
        for pkt in pkts.drain(..n) {
            let len = pkt.len();
            let Some(seg) = pkt.payload() else {
                // The common case: one buffer, 1..=DATA_ROOM bytes, one descriptor.
                if len.wrapping_sub(1) >= DATA_ROOM {
                    errors += 1;
                    continue;
                }
                let slot = q.idx.slot(at);
                q.set(slot, TxDesc::frame(pkt.iova(), len as u16, report(slot)));
                q.park(slot, pkt);
                at = at.wrapping_add(1);
                bytes += len as u64;
                sent += 1;
                continue;
            };
            let total = len + seg.len();
            if len == 0 || len > DATA_ROOM || total > MAX_FRAME {
                errors += 1;
                continue;
            }
            // Header from the pool buffer, payload from application memory: a chain with
            // EOP on the last descriptor, which also holds the packet (8254x SDM §3.3.3: a
            // frame may span several data descriptors).
            let slot = q.idx.slot(at);
            q.set(slot, TxDesc::data(pkt.iova(), len as u16, report(slot)));
            at = at.wrapping_add(1);
            let slot = q.idx.slot(at);
            q.set(
                slot,
                TxDesc::frame(seg.iova(), seg.len() as u16, report(slot)),
            );
            q.park(slot, pkt);
            at = at.wrapping_add(1);
            bytes += total as u64;
            sent += 1;
        }
        q.produced = at;
        self.sw.tx_errors += errors;
        // Release: descriptors and frame data must be visible before the tail moves.
        fence(Ordering::Release);
        self.bar.write32(regs::TDT, q.tail());
        self.sw.tx_bytes += bytes;
        self.sw.tx_packets += sent;
        n
    }

    /// Ceiling mode: hands up to `burst` already written descriptors back to the device.
    /// Only a descriptor with RS is rewritten, to clear the DD the device left in it.
    pub(crate) fn repost_tx(&mut self, burst: usize) -> usize {
        let q = &mut self.tx;
        q.clean::<false>(&mut Vec::new());
        let n = q.free().min(burst as u32);
        for i in 0..n {
            let slot = q.idx.slot(q.produced.wrapping_add(i));
            if report(slot) {
                let d = q.desc(slot);
                q.set(slot, TxDesc::frame(d.addr, d.length, true));
            }
        }
        q.produced = q.produced.wrapping_add(n);
        fence(Ordering::Release);
        self.bar.write32(regs::TDT, q.tail());
        self.sw.tx_packets += u64::from(n);
        n as usize
    }

    /// Once the device is idle (TDH == TDT: it has processed every descriptor, data
    /// included, in QEMU's model and per the SDM's head semantics), releases every frame
    /// still held, so buffers and application segments come back without waiting for the
    /// next RS batch.
    pub(crate) fn reclaim_idle_tx(&mut self) {
        let q = &mut self.tx;
        while q.cleaned != q.produced {
            q.bufs[q.idx.slot(q.cleaned)] = None;
            q.cleaned = q.cleaned.wrapping_add(1);
        }
    }

    /// Whether the device has fetched every queued descriptor (TDH caught up with TDT).
    pub(crate) fn tx_idle(&self) -> bool {
        self.bar.read32(regs::TDH) == self.tx.tail()
    }
}
