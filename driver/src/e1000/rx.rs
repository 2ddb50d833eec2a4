//! e1000 receive: burst receive on legacy descriptors, each frame's buffer traded for a
//! refill in place.
//!
//! The ring uses free-running counters (see `zcnic_descriptors::RingIndex`): `consumed` is
//! the next slot to look at; `produced` is the tail (RDT) as a counter. Slots
//! `[consumed, produced)` belong to the device; slot `produced` always holds a buffer but
//! is not handed over (the SDM's "RDH == RDT means no descriptors" rule). With long
//! packets on, a frame longer than one buffer arrives over several descriptors and leaves
//! as one `Packet` chain (`intel::reassembly`).
//!
//! One doorbell (tail write) per burst, no register read, no allocation, no system call.

use super::regs;
use super::E1000;
use crate::intel::reassembly::{Ending, Reassembly};
use crate::mmio::Bar;
use crate::pci::PciAddr;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use zcnic_descriptors::e1000::{RxDesc, RxStatus};
use zcnic_descriptors::RingIndex;
use zcnic_hugepages::{
    DmaAllocator, DmaError, DmaRing, Mempool, Packet, PoolCache, Words, DATA_ROOM,
};

/// Longest frame without long packets (RCTL.LPE clear), VLAN tag included, FCS not: 1522
/// on the wire.
pub const STANDARD_FRAME: usize = 1518;
/// Largest MTU: long packets take frames of up to 16384 bytes with the FCS (8254x SDM
/// §13.4.22, RCTL.LPE); Linux's e1000 caps the frame at 16128.
pub const MAX_MTU: usize = 16128 - crate::config::FRAME_OVERHEAD;

pub(crate) struct RxQueue {
    pub(crate) ring: DmaRing,
    idx: RingIndex,
    pub(crate) bufs: Vec<Option<Packet>>,
    /// A buffer that is never handed out: a slot left without one (a driver fault) points
    /// here rather than at address 0, and what lands in it is dropped.
    /// `None` only once leaked with the rest of the port's memory.
    pub(crate) sink: Option<Packet>,
    /// Where refills come from (`nic::queue_cache`), and where completed transmit
    /// buffers go: one thread drives both sides of an e1000.
    pub(crate) cache: PoolCache,
    /// Long packets are on (RCTL.LPE): a frame may span several descriptors.
    jumbo: bool,
    /// The long frame being received.
    reasm: Reassembly,
    consumed: u32,
    produced: u32,
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

    /// Whether the device has completed the descriptor `rx` looks at next (one descriptor
    /// read, as an empty `rx` does): the re-check after arming the interrupt.
    pub(crate) fn ready(&self) -> bool {
        self.idx.in_flight(self.produced, self.consumed) > 0
            && self.desc(self.idx.slot(self.consumed)).done()
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

/// What became of a completed descriptor that is not a good frame's end, with long
/// packets on ([`take_part`]).
enum Part {
    /// A part of a long frame, taken into `Reassembly` (true: that dropped the frame, an
    /// error); the slot holds a fresh buffer.
    Kept(bool),
    /// A part, but the pool had no buffer to refill its slot: it waits.
    NoBuffer,
    /// A bad descriptor (the frame under way is dropped): rejected as without long
    /// packets.
    Bad,
}

/// Reads the completed descriptor in `slot` again (the receive loop keeps only what its
/// fast path needs): a part of a long frame, not its end, goes into `reasm` and a fresh
/// buffer, `refill` or one from `cache`, into the slot.
#[cold]
#[inline(never)]
fn take_part(
    ring: Words<'_>,
    bufs: &mut [Option<Packet>],
    slot: usize,
    cache: &mut PoolCache,
    reasm: &mut Reassembly,
    refill: Option<Packet>,
) -> Part {
    let desc = RxDesc::from_words(ring.read(slot));
    if !desc.is_part(DATA_ROOM as u16) {
        reasm.abort(desc.status & RxStatus::EOP.bits() != 0);
        return Part::Bad;
    }
    let Some(new) = refill.or_else(|| cache.alloc()) else {
        return Part::NoBuffer;
    };
    // Acquire: the part's bytes are read (by whoever gets the frame) only after its DD.
    fence(Ordering::Acquire);
    ring.write(slot, RxDesc::ready(new.iova()).to_words());
    match bufs[slot].replace(new) {
        Some(pkt) => Part::Kept(!reasm.part(pkt, DATA_ROOM as u16)),
        // A slot without a buffer (a driver fault): the frame cannot be whole.
        None => {
            reasm.abort(false);
            Part::Kept(true)
        }
    }
}

/// Delivers the frame the device wrote into `pkt` (ring slot `slot`: `len` good bytes,
/// status word `word`) by trading places with the refill `new`, which goes into the slot.
#[inline(always)]
fn deliver(ring: Words<'_>, slot: usize, pkt: &mut Packet, new: &mut Packet, len: u16, word: u64) {
    // The device wrote `len` <= DATA_ROOM bytes at the default headroom; its status,
    // errors and special (a stripped tag, checksum verdicts) go with the frame as they
    // are, decoded only when asked (`Packet::rx_checksum`, `Packet::vlan`).
    pkt.reset_len_rx(len, word);
    let refill = new.iova();
    std::mem::swap(new, pkt);
    ring.write(slot, RxDesc::ready(refill).to_words());
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
        // The refills go at the end of `out` (no allocation when it has room for
        // `max`), and each frame's buffer trades places with one: the refill goes into
        // the ring slot, the frame into the refill's place, so `out[base..][..k]` ends up
        // holding the frames in order and what follows them the refills left over,
        // without a copy from a refill list to `out`. The ring, the slices and
        // the counters are locals, so the loop keeps them in registers (a volatile store to
        // the ring could alias fields, as far as the compiler knows; it would reload them).
        let ring = q.ring.words();
        let jumbo = q.jumbo;
        let mut busy = q.reasm.busy();
        let (mut at, mut end) = (start, start.wrapping_add(limit as u32));
        let (mut k, mut bytes, mut errors) = (0, 0, 0);
        let base = out.len();
        out.reserve(waiting);
        let given = crate::nic::take_spares(out, spare, waiting, &self.pool);
        q.cache.alloc_batch(out, waiting - given);
        // A part of a long frame found the cache dry: the burst's own refills may still
        // have one to spare (each part's descriptor was counted in `waiting`), taken into
        // `short` for it.
        let (mut short, mut stalled): (Option<Packet>, bool) = (None, false);
        'burst: loop {
            let (bufs, fresh) = (&mut q.bufs[..=ring.last()], &mut out[base..]);
            let (reasm, cache) = (&mut q.reasm, &mut q.cache);
            while at != end {
                if !busy {
                    // The common frame (one good descriptor, a buffer in its slot, a refill
                    // waiting) in a run that tests only its own conditions; anything else
                    // leaves it for the one-descriptor step below, which then comes back.
                    let (at0, run) = (at, (end.wrapping_sub(at) as usize).min(fresh.len() - k));
                    for new in &mut fresh[k..k + run] {
                        let slot = ring.slot(at);
                        let word = ring.read_second(slot);
                        let Some(len) = RxDesc::from_words([0, word]).good_len(DATA_ROOM as u16)
                        else {
                            break;
                        };
                        let Some(pkt) = &mut bufs[slot] else {
                            break;
                        };
                        // Acquire: as below.
                        fence(Ordering::Acquire);
                        deliver(ring, slot, pkt, new, len, word);
                        at = at.wrapping_add(1);
                        bytes += u64::from(len);
                    }
                    k += at.wrapping_sub(at0) as usize;
                    if at == end {
                        break;
                    }
                }
                let slot = ring.slot(at);
                // Status and length are in the second word (the first is the address).
                let word = ring.read_second(slot);
                let desc = RxDesc::from_words([0, word]);
                let Some(len) = desc.good_len(DATA_ROOM as u16) else {
                    if !desc.done() {
                        break;
                    }
                    if jumbo {
                        // A part of a long frame, not its last: kept (refilled from the
                        // cache), and it too leaves room under `max`.
                        match take_part(ring, bufs, slot, cache, reasm, short.take()) {
                            Part::Kept(error) => {
                                errors += u64::from(error);
                                busy = reasm.busy();
                                (at, end) = (at.wrapping_add(1), beyond(end, q.produced));
                                continue;
                            }
                            Part::NoBuffer => {
                                stalled = true;
                                break;
                            }
                            Part::Bad => busy = reasm.busy(),
                        }
                    }
                    reject(self.addr, ring, bufs, slot, q.sink.as_ref());
                    errors += 1;
                    // A bad descriptor delivers nothing, so it leaves room under `max` for
                    // one more (its refill is left over for that one, too).
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
                    // A slot without a buffer would be a driver fault: refill it from the
                    // pool, off the hot path. No frame comes out (and a long frame under
                    // way lost its end), so it too leaves room under `max`.
                    if !refill_empty(ring, bufs, slot, &self.pool) {
                        self.sw.rx_no_buf += 1;
                        break;
                    }
                    if busy {
                        reasm.abort(true);
                        busy = false;
                    }
                    (at, end) = (at.wrapping_add(1), beyond(end, q.produced));
                    continue;
                };
                deliver(ring, slot, pkt, new, len, word);
                at = at.wrapping_add(1);
                if busy {
                    // The last part of a long frame: `new` becomes the whole frame, or
                    // goes on as a refill when the frame was dropped.
                    busy = false;
                    match reasm.finish(new) {
                        Ending::Frame(total) => bytes += total as u64,
                        ending => {
                            // Nothing delivered: room under `max` for one more, as for a
                            // bad descriptor.
                            errors += u64::from(ending == Ending::Dropped);
                            end = beyond(end, q.produced);
                            continue;
                        }
                    }
                    k += 1;
                    continue;
                }
                bytes += u64::from(len);
                k += 1;
            }
            if stalled {
                stalled = false;
                // The refills after the frames are the burst's own: one goes to the part
                // (a frame after it may then wait for the next call, as on a dry pool).
                if out.len() > base + k {
                    short = out.pop();
                    continue 'burst;
                }
                self.sw.rx_no_buf += 1;
            }
            break 'burst;
        }
        // Refills left over for bad descriptors, which keep their buffer: the caller's go
        // back to it (they came first), the cache's to the cache. (A part may have taken
        // one of them from the back.)
        if out.len() > base + k {
            let theirs = (base + given.max(k)).min(out.len());
            q.cache.free_all(out.drain(theirs..));
            spare.extend(out.drain(base + k..));
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
}
