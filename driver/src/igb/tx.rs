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
//! A frame that asks for offloads (`Packet::tx_offload`) goes off the fast path with an
//! advanced context descriptor before its data descriptors (§7.2.2.2, context slot 0): the
//! checksums' offsets and the tag to insert, which the data descriptors' POPTS and VLE
//! ask for. A context descriptor takes no RS (its DCMD has none): where one ends a
//! clean-up group, the frame's first data descriptor, right after it, reports for it.
//!
//! One doorbell per burst, no register read, no allocation, no system call.

use crate::e1000::TX_CLEAN_BATCH;
use crate::mmio::Doorbell;
use crate::port::{QueueCounters, Teardown, TxQueue};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zcnic_descriptors::igb::{popts, tucmd, TxContext, TxDesc};
use zcnic_descriptors::RingIndex;
use zcnic_hugepages::{
    DmaAllocator, DmaError, DmaRing, L4Csum, Mempool, Packet, PoolCache, Words, DATA_ROOM,
};

/// Largest frame the 82576 sends without TSO (§7.2.1: 9.5 KB jumbo limit).
pub const MAX_FRAME: usize = 9728;
/// Largest frame the igb segments: an IPv4 packet of 65535 bytes after an Ethernet
/// header with a tag.
const TSO_MAX_FRAME: usize = 65535 + 18;

pub(crate) struct TxRing {
    pub(crate) ring: DmaRing,
    idx: RingIndex,
    pub(crate) bufs: Vec<Option<Packet>>,
    produced: u32,
    cleaned: u32,
    /// CTRL.VME is set (`Config::vlan_strip`): VLE inserts tags, as tag insertion is
    /// promised only in VLAN mode.
    vlan_insert: bool,
    /// Frames of a burst that did not fit, on their way back to the caller's front
    /// (room for a ring's worth, so nothing is allocated on the way).
    held: Vec<Packet>,
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
    pub(crate) fn new(
        dma: &dyn DmaAllocator,
        idx: RingIndex,
        vlan_insert: bool,
    ) -> Result<Self, DmaError> {
        let ring = DmaRing::new(dma, idx.size() as usize)?;
        let bufs = (0..idx.size()).map(|_| None).collect();
        Ok(Self {
            ring,
            idx,
            bufs,
            produced: 0,
            cleaned: 0,
            vlan_insert,
            held: Vec::with_capacity(idx.size() as usize),
        })
    }

    #[inline(always)]
    fn desc(&self, slot: usize) -> TxDesc {
        TxDesc::from_words(self.ring.read_words(slot))
    }

    /// Reclaims every completed group: DD on its last descriptor (which had RS; on the one
    /// after it when that is a context descriptor), and the device completes in order. A group not queued whole has no RS at its end yet, but
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
            if !self.reported_done(last) {
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

    /// Whether the descriptor at counter `c`, which ends a clean-up group, is done: DD
    /// there, or on the data descriptor after it when it is a context descriptor, which
    /// the device writes nothing back into (that one is queued: a context never ends a
    /// frame, and the group is queued whole).
    #[inline]
    fn reported_done(&self, c: u32) -> bool {
        let d = self.desc(self.idx.slot(c));
        d.done() || d.is_context() && self.desc(self.idx.slot(c.wrapping_add(1))).done()
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
    /// burst, not per frame. A context descriptor there has none; the frame's first data
    /// descriptor, queued right after it in the same burst, reports instead.
    #[inline(always)]
    fn mark_reports(&mut self, from: u32, to: u32) {
        let span = to.wrapping_sub(from);
        let mut c = from | (TX_CLEAN_BATCH - 1);
        while c.wrapping_sub(from) < span {
            let mut slot = self.idx.slot(c);
            let mut d = self.desc(slot);
            if d.is_context() {
                slot = self.idx.slot(c.wrapping_add(1));
                d = self.desc(slot);
            }
            self.ring.write_words(slot, d.reporting().to_words());
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
}

/// Queues a frame the fast path did not take at counter `at`: a context descriptor first
/// when it asks for offloads ([`offload`]), then one data descriptor per part (the pool
/// buffer, each buffer chained after it, each attached payload from application memory),
/// the frame's length (PAYLEN) and the offloads asked (POPTS) in the first, EOP on the
/// last, which holds the packet until the device is done (dropping a stale packet found
/// there: none should be). A frame from another address space is copied into buffers of
/// `pool` first (`nic::into_space`). RS is left to `mark_reports`. Returns the frame's
/// length and the descriptors used; `Ok(None)` (the frame is dropped) when a part is
/// empty or too long, the frame is longer than [`MAX_FRAME`] or than the ring could ever
/// hold, it cannot be copied, or a request done in software fails; the frame back when it
/// needs more than `room` descriptors, to be sent later.
#[inline(never)]
fn chain(
    ring: Words<'_>,
    bufs: &mut [Option<Packet>],
    at: u32,
    pkt: Packet,
    pool: &Arc<Mempool>,
    room: u32,
    vlan_insert: bool,
) -> Result<Option<(usize, u32)>, Packet> {
    let Some(mut pkt) = crate::nic::into_space(pkt, pool) else {
        return Ok(None);
    };
    let Some(ask) = offload(&mut pkt, vlan_insert) else {
        return Ok(None);
    };
    let parts = || crate::nic::tx_parts(&pkt);
    let (n, total) = parts().fold((0, 0), |(n, t), (_, len)| (n + 1, t + len));
    let bad = |&(_, len): &(u64, usize)| len == 0 || len > usize::from(u16::MAX);
    let first = u32::from(ask.is_some());
    let used = n + first as usize;
    let tso = ask.and_then(|a| a.paylen);
    let max = if tso.is_some() {
        TSO_MAX_FRAME
    } else {
        MAX_FRAME
    };
    // Longer than the ring could ever hold (one slot stays empty) would wait forever.
    if total > max || used > ring.last() || parts().any(|p| bad(&p)) {
        return Ok(None);
    }
    if used > room as usize {
        return Err(pkt);
    }
    if let Some(a) = ask {
        // Never with RS: `mark_reports` moves a group's report past it.
        ring.write(ring.slot(at), a.context.to_words());
    }
    let mut last = ring.slot(at);
    for (i, (iova, len)) in (first..).zip(parts()) {
        last = ring.slot(at.wrapping_add(i));
        let head = i == first;
        let paylen = if head { tso.unwrap_or(total as u32) } else { 0 };
        let eop = i as usize == used - 1;
        let mut d = TxDesc::data(iova, len as u16, paylen, eop, false);
        if tso.is_some() {
            // TSE on every descriptor of the frame, as Linux's igb sets it.
            d.cmd_type_len |= zcnic_descriptors::igb::tx_cmd::TSE;
        }
        if let Some(a) = ask {
            // POPTS is read on the first data descriptor; VLE on each, as Linux sets it.
            d = d.offloaded(if head { a.popts } else { 0 }, 0, a.vle);
        }
        ring.write(last, d.to_words());
    }
    // The packet (its chain and payloads) stays until the frame's last descriptor is
    // done.
    bufs[last] = Some(pkt);
    Ok(Some((total, used as u32)))
}

/// What queueing a frame off the fast path needs ([`Odd::queue`]), kept out of the fast
/// loop's registers.
struct Odd<'a> {
    /// The burst's first counter, and the descriptors free then.
    start: u32,
    free: u32,
    pool: &'a Arc<Mempool>,
    vlan_insert: bool,
    /// Frames set aside for the next call: first `back` of them from the end of the
    /// burst, last frame first; then a frame that did not fit and those after it.
    held: &'a mut Vec<Packet>,
    back: usize,
    /// Frames refused.
    errors: u64,
}

impl Odd<'_> {
    /// Queues `pkt` at counter `at` through [`chain`]. Returns the descriptors used and
    /// the bytes sent. A frame that does not fit is set aside with every frame after it;
    /// so are the frames at the end that no longer have one descriptor each once it is
    /// queued.
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
        match chain(ring, bufs, at, pkt, self.pool, room, self.vlan_insert) {
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

/// What a frame asks of the device: the context descriptor (slot 0) before it, and the
/// data descriptors' POPTS and VLE.
#[derive(Clone, Copy)]
struct Ask {
    context: TxContext,
    popts: u32,
    vle: bool,
    /// Segmentation: PAYLEN, the TCP payload's length (else the frame's).
    paylen: Option<u32>,
}

/// The device's part of `pkt`'s offload request (`Packet::tx_offload`): `Some(None)` when
/// nothing is asked of it, because there is no request or it asks nothing, or because
/// the device cannot do what it asks and it was done here in software
/// (`offload::apply_in_software`): a checksum with a MACLEN outside 14..=127 (§7.2.2.2),
/// an IPv4 header checksum of a frame that says it is IPv6, a tag without VLAN mode.
/// `None` when that fails (the frame is dropped).
#[cold]
fn offload(pkt: &mut Packet, vlan_insert: bool) -> Option<Option<Ask>> {
    let Some(r) = pkt.tx_offload() else {
        return Some(None);
    };
    let csum = r.wants_checksum();
    let maclen = (TxContext::MIN_MACLEN..=TxContext::MAX_MACLEN).contains(&r.l2_len);
    let can = (!csum || maclen) && (r.ipv4 || !r.ip_csum) && (r.vlan.is_none() || vlan_insert);
    if !can {
        crate::offload::apply_in_software(pkt).ok()?;
        return Some(None);
    }
    if !csum && r.vlan.is_none() {
        return Some(None);
    }
    let mut t = 0;
    if r.ipv4 {
        t |= tucmd::IPV4;
    }
    if r.l4 == Some(L4Csum::Tcp) {
        t |= tucmd::L4T_TCP;
    }
    let mut p = 0;
    if r.ip_csum {
        p |= popts::IXSM;
    }
    if r.l4.is_some() {
        p |= popts::TXSM;
    }
    let mut context = TxContext {
        // A tag alone asks for no checksum: MACLEN is then not read.
        maclen: if maclen { r.l2_len } else { 0 },
        iplen: u16::from(r.l3_len),
        vlan: r.vlan.unwrap_or(0),
        tucmd: t,
        ..TxContext::default()
    };
    // Segmentation (the datasheet's TCP segmentation, with §7.2.2.2-3): the MSS and TCP header length in the context, the payload's
    // length as PAYLEN. Headers that do not hold up drop the frame (never sent whole).
    let mut paylen = None;
    if let Some(mss) = r.tso {
        let h = crate::offload::tso_headers(pkt, &r).ok()?;
        context.mss = mss.get();
        context.l4len = u8::try_from(h.hdr - h.tcp).ok()?;
        paylen = Some(h.payload as u32);
    }
    Some(Some(Ask {
        context,
        popts: p,
        vle: r.vlan.is_some(),
        paylen,
    }))
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
    /// when `None`), or into `done` with `KEEP`. Every frame takes at least one
    /// descriptor, so `min(len, free)` of them are taken; one that needs more (a chain, an
    /// offload request) checks its own room in [`Odd::queue`], off the fast loop, and what
    /// no longer fits goes back to the front of `pkts`, in order.
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
        let free = q.free();
        let n = pkts.len().min(free as usize);
        if n == 0 {
            return 0;
        }
        let (start, mut at) = (q.produced, q.produced);
        let mut bytes = 0u64;
        let space = self.pool.space();
        let ring = q.ring.words();
        let bufs = &mut q.bufs[..=ring.last()];
        let mut frames = pkts.drain(..n);
        // What only the frames off the fast path need, in memory the loop does not touch.
        let mut odd_ctx = Odd {
            start,
            free,
            pool: &self.pool,
            vlan_insert: q.vlan_insert,
            held: &mut q.held,
            back: 0,
            errors: 0,
        };
        loop {
            // The common frame (one buffer of this port's address space, 1..=DATA_ROOM
            // bytes, one descriptor, into an empty slot; RS goes on after the loop) in a
            // loop that calls nothing, so it keeps its values in registers; any other
            // leaves it.
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
        if !q.held.is_empty() {
            // Back to the front, in order: no allocation, `pkts` had room for them.
            pkts.splice(..0, q.held.drain(..));
        }
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
