//! e1000 transmit: burst send on legacy descriptors, and the clean-up that gives sent
//! buffers back.
//!
//! The ring uses free-running counters (see `zcnic_descriptors::RingIndex`): `produced` is
//! the tail (TDT); `cleaned` trails it by the frames not yet reclaimed. RS is set on one
//! descriptor per [`TX_CLEAN_BATCH`], so the device writes back status once per batch and
//! cleanup checks one descriptor per batch; and on the last descriptor of every burst, so
//! `flush` has a DD to wait for. Buffers are released only on DD: TDH tracks descriptor
//! fetch, and the SDM lets the NIC read the data later. A frame of several parts (a
//! `Packet` chain, an attached payload) takes a descriptor per part (`chain`).
//!
//! One doorbell (tail write) per burst, no register read, no allocation, no system call.

use super::regs;
use super::E1000;
use crate::mmio::Bar;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use zcnic_descriptors::e1000::{
    TxContext, TxDesc, DCMD_TSE, POPTS_IXSM, POPTS_TXSM, TUCMD_IP, TUCMD_TCP, TUCMD_TSE,
};
use zcnic_descriptors::RingIndex;
use zcnic_hugepages::{
    DmaAllocator, DmaError, DmaRing, L4Csum, Mempool, Packet, PoolCache, TxOffload, Words,
    DATA_ROOM, HEADROOM,
};

/// Transmit descriptors reclaimed together; RS is set on the last of each group.
pub const TX_CLEAN_BATCH: u32 = 32;
/// Largest frame the e1000 sends (8254x SDM §3.3: 16288 bytes with a payload chain).
pub const MAX_FRAME: usize = 16288;
/// Largest frame the e1000 segments (TSO): an IPv4 packet of 65535 bytes after an
/// Ethernet header with a tag (each descriptor of it still at most [`MAX_FRAME`]).
const TSO_MAX_FRAME: usize = 65535 + 18;
// The fast path sends any non-empty single buffer as it is.
const _: () = assert!(HEADROOM + DATA_ROOM <= MAX_FRAME);

/// Whether the descriptor in `slot` asks for a status write-back (RS).
#[inline(always)]
fn report(slot: usize) -> bool {
    slot as u32 % TX_CLEAN_BATCH == TX_CLEAN_BATCH - 1
}

pub(crate) struct TxQueue {
    pub(crate) ring: DmaRing,
    idx: RingIndex,
    pub(crate) bufs: Vec<Option<Packet>>,
    produced: u32,
    cleaned: u32,
    /// Every descriptor points at ceiling mode's frame; `tx` writing any clears it.
    pub(crate) ceiling_posted: bool,
    /// Frames of a burst that did not fit, on their way back to the caller's front
    /// (room for a ring's worth, so nothing is allocated on the way).
    held: Vec<Packet>,
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
            held: Vec::with_capacity(idx.size() as usize),
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
                    self.reclaim_all::<KEEP>(keep, cache);
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

    /// Releases every frame still held once the device is done with all
    /// ([`all_done`](Self::all_done), which the caller checked): into `keep` with `KEEP`,
    /// else into `cache`.
    #[cold]
    fn reclaim_all<const KEEP: bool>(&mut self, keep: &mut Vec<Packet>, cache: &mut PoolCache) {
        // Acquire: the DD status was read before the buffers are reused.
        fence(Ordering::Acquire);
        let (bufs, idx, from) = (&mut self.bufs, self.idx, self.cleaned);
        let count = self.produced.wrapping_sub(from);
        let slot = |i: u32| idx.slot(from.wrapping_add(i));
        give::<KEEP>(keep, cache, (0..count).filter_map(|i| bufs[slot(i)].take()));
        self.cleaned = self.produced;
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
/// into buffers of `pool` first (`nic::into_space`); or one with an offload request
/// (`Packet::tx_offload`), which takes a context descriptor and extended data descriptors. Returns the frame's length and the
/// descriptors used; `Ok(None)` (the frame is dropped) when a part is empty, the frame
/// is longer than [`MAX_FRAME`], or it cannot be copied; the frame back when it needs
/// more than `room` descriptors, to be sent later.
#[inline(never)]
fn chain(
    ring: Words<'_>,
    bufs: &mut [Option<Packet>],
    at: u32,
    pkt: Packet,
    pool: &Arc<Mempool>,
    room: u32,
) -> Result<Option<(usize, u32)>, Packet> {
    let Some(pkt) = crate::nic::into_space(pkt, pool) else {
        return Ok(None);
    };
    let parts = || crate::nic::tx_parts(&pkt).flat_map(pieces);
    let (parts_n, total) = parts().fold((0, 0), |(n, t), (_, len)| (n + 1, t + len));
    // An offload request: a context descriptor first when it asks for checksums or
    // segmentation, and extended data descriptors that point at it (8254x SDM §3.3.6,
    // §3.3.7, §3.5).
    let req = pkt.tx_offload();
    let (ctx, max) = match req {
        Some(r) if r.tso.is_some() => match tso_context(&pkt, r) {
            Some(c) => (Some(c), TSO_MAX_FRAME),
            None => return Ok(None),
        },
        Some(r) if r.wants_checksum() => (Some(context(r)), MAX_FRAME),
        _ => (None, MAX_FRAME),
    };
    let n = parts_n + usize::from(ctx.is_some());
    // Longer than the ring could ever hold (one slot stays empty) would wait forever.
    if total > max || n > ring.last() || parts().any(|(_, len)| len == 0) {
        return Ok(None);
    }
    if n > room as usize {
        return Err(pkt);
    }
    let mut slot = ring.slot(at);
    let first = match ctx {
        Some(c) => {
            ring.write(slot, c.to_desc().to_words());
            1
        }
        None => 0,
    };
    for (i, (iova, len)) in (first + 1..).zip(parts()) {
        slot = ring.slot(at.wrapping_add(i as u32 - 1));
        // Each part is at most MAX_FRAME bytes, so its length fits the field.
        let desc = match req {
            Some(r) if r.tso.is_some() => {
                let mut d = TxDesc::extended(iova, len as u16, i == n, popts(&r), r.vlan);
                d.cmd |= DCMD_TSE;
                d
            }
            Some(r) => TxDesc::extended(iova, len as u16, i == n, popts(&r), r.vlan),
            None if i == n => TxDesc::frame(iova, len as u16, false),
            None => TxDesc::data(iova, len as u16, false),
        };
        ring.write(slot, desc.to_words());
    }
    park(bufs, slot, pkt);
    Ok(Some((total, n as u32)))
}

/// A part of a frame in pieces of at most [`MAX_FRAME`] bytes, a descriptor each (a
/// segmented frame's attached payload may be longer); an empty part stays one piece.
fn pieces((iova, len): (u64, usize)) -> impl Iterator<Item = (u64, usize)> {
    (0..len.div_ceil(MAX_FRAME).max(1)).map(move |k| {
        let at = k * MAX_FRAME;
        (iova + at as u64, (len - at).min(MAX_FRAME))
    })
}

/// The context descriptor for a checksum request: offsets from the frame's start.
fn context(r: TxOffload) -> TxContext {
    let ip = r.l2_len;
    let l4 = ip.saturating_add(r.l3_len);
    let mut tucmd = 0;
    if r.ipv4 {
        tucmd |= TUCMD_IP;
    }
    if r.l4 == Some(L4Csum::Tcp) {
        tucmd |= TUCMD_TCP;
    }
    TxContext {
        ipcss: ip,
        // The IPv4 header checksum field is 10 bytes into the header.
        ipcso: ip.saturating_add(10),
        ipcse: u16::from(l4).saturating_sub(1),
        tucss: l4,
        tucso: r
            .l4
            .map_or(0, |k| l4.saturating_add(k.field_offset() as u8)),
        // To the frame's end.
        tucse: 0,
        tucmd,
        ..TxContext::default()
    }
}

/// The context descriptor for a segmentation request (8254x SDM §3.5): the checksum
/// offsets as for [`context`], the IPv4 header's end, TSE, and how to cut: the headers'
/// length, the MSS and the payload's. `None` when the frame does not fit the request
/// (headers as `offload::tso_headers` checks them) or the context's fields.
fn tso_context(pkt: &Packet, r: TxOffload) -> Option<TxContext> {
    let h = crate::offload::tso_headers(pkt, &r).ok()?;
    let mss = r.tso?.get();
    Some(TxContext {
        tucmd: TUCMD_TSE | TUCMD_IP | TUCMD_TCP,
        paylen: h.payload as u32,
        hdrlen: u8::try_from(h.hdr).ok()?,
        mss,
        ..context(r)
    })
}

/// POPTS for a request: which of the context's checksums to insert.
fn popts(r: &TxOffload) -> u8 {
    let mut p = 0;
    if r.ip_csum {
        p |= POPTS_IXSM;
    }
    if r.l4.is_some() {
        p |= POPTS_TXSM;
    }
    p
}

/// What queueing a frame off the fast path needs ([`Odd::queue`]), kept out of the fast
/// loop's registers.
struct Odd<'a> {
    /// The burst's first counter, and the descriptors free then.
    start: u32,
    free: u32,
    pool: &'a Arc<Mempool>,
    /// Frames set aside for the next call: first `back` of them from the end of the
    /// burst, last frame first; then a frame that did not fit and those after it.
    held: &'a mut Vec<Packet>,
    back: usize,
    /// Frames refused.
    errors: u64,
}

impl Odd<'_> {
    /// Queues `pkt` at counter `at` through [`chain`] (which parks the frame as the fast
    /// path would, dropping a stale packet it finds in the slot: none should be there).
    /// Returns the descriptors used and the bytes sent. A frame that does not fit is set
    /// aside with every frame after it; so are the frames at the end that no longer have
    /// one descriptor each once it is queued.
    #[inline(never)]
    fn queue(
        &mut self,
        ring: Words<'_>,
        bufs: &mut [Option<Packet>],
        at: u32,
        pkt: Packet,
        frames: &mut std::vec::Drain<'_, Packet>,
    ) -> (u32, u64) {
        let room = self.free - at.wrapping_sub(self.start);
        match chain(ring, bufs, at, pkt, self.pool, room) {
            Ok(Some((total, used))) => {
                let fit = room - used;
                while frames.len() as u32 > fit {
                    self.held.extend(frames.next_back());
                    self.back += 1;
                }
                (used, total as u64)
            }
            Ok(None) => {
                self.errors += 1;
                (0, 0)
            }
            Err(later) => {
                self.held.push(later);
                self.held.extend(frames.by_ref());
                (0, 0)
            }
        }
    }
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

#[cold]
#[inline(never)]
fn drop_stale(pkt: Packet) {
    drop(pkt);
}

impl<B: Bar> E1000<B> {
    /// Sends what fits of `pkts`; completed packets go to the port's cache, or into `done`
    /// with `KEEP`.
    pub(crate) fn tx<const KEEP: bool>(
        &mut self,
        pkts: &mut Vec<Packet>,
        done: &mut Vec<Packet>,
    ) -> usize {
        let q = &mut self.tx;
        q.clean::<KEEP>(done, &mut self.rx.cache);
        // Every frame takes at least one descriptor; one of several parts takes more:
        // `chain` checks it fits, or it and the frames after it are set aside in `held`,
        // to go back to the front of `pkts`; so are the frames after it that no longer
        // have one descriptor each.
        let free = q.free();
        let n = pkts.len().min(free as usize);
        if n == 0 {
            return 0;
        }
        let start = q.produced;
        // The ring and the parked packets in locals, and the counters too, so
        // the loop keeps them in registers: nothing in it can make the compiler reload or
        // store them per frame. RS is set after the loop, on one descriptor per batch.
        let (mut bytes, mut at) = (0u64, start);
        let (ring, space) = (q.ring.words(), self.space);
        let bufs = &mut q.bufs[..=ring.last()];
        let mut frames = pkts.drain(..n);
        // What only the frames off the fast path need, in memory the loop does not touch.
        let mut odd_ctx = Odd {
            start,
            free,
            pool: &self.pool,
            held: &mut q.held,
            back: 0,
            errors: 0,
        };
        loop {
            // The common frame (one buffer of this port's address space, not empty, one
            // descriptor, into an empty slot) in a loop that calls nothing, so it keeps
            // its values in registers; any other leaves it. One buffer holds at most
            // HEADROOM + DATA_ROOM bytes, far below MAX_FRAME: its length needs no other
            // test.
            let mut odd = None;
            for pkt in frames.by_ref() {
                let len = pkt.len();
                let slot = ring.slot(at);
                let plain = pkt.is_single() && len != 0 && pkt.reachable_in(space);
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
            let (used, total) = odd_ctx.queue(ring, bufs, at, pkt, &mut frames);
            at = at.wrapping_add(used);
            bytes += total;
        }
        drop(frames);
        let (back, errors) = (odd_ctx.back, odd_ctx.errors);
        if back > 0 {
            // `held` is [the end, last frame first][a frame that did not fit and those
            // after it, in order]: the frames' own order is the second part, then the
            // first reversed.
            q.held.rotate_left(back);
            let len = q.held.len();
            q.held[len - back..].reverse();
        }
        let n = n - q.held.len();
        // Nothing fit, while the device is done with every frame but `clean` waits for a
        // group's RS descriptor (a 32-slot ring, say): take all back, then try once more.
        let mut again = false;
        if !q.held.is_empty() {
            // Back to the front, in order: no allocation, `pkts` had room for them.
            pkts.splice(..0, q.held.drain(..));
            again = n == 0 && q.cleaned != q.produced && q.all_done();
        }
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
        if again {
            self.tx.reclaim_all::<KEEP>(done, &mut self.rx.cache);
            return self.tx::<KEEP>(pkts, done);
        }
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
