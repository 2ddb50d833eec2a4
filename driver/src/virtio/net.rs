//! virtio-net driver (virtio 1.1 §5.1): one receive and one transmit queue, split or packed
//! rings, modern or legacy transport.
//!
//! The `virtio_net_hdr` (12 bytes with VERSION_1, 10 for legacy) lives in the packet's
//! headroom, so each frame is a single descriptor and nothing is copied. Receive buffers
//! are refilled in a batch after each burst; completed transmit buffers are reclaimed in a
//! batch when the transmit queue runs short of room, and by `flush`; the device is notified
//! only when it asks (EVENT_IDX or its NO_NOTIFY flag).

use super::queue::QueueKind;
use super::transport::{status, Transport};
use crate::nic::{Link, Nic, Stats};
use crate::pci::PciAddr;
use crate::platform::PciDevice;
use crate::{Config, Error};
use std::sync::Arc;
use std::time::Duration;
use zcnic_descriptors::virtio::Buf;
use zcnic_hugepages::{AddressSpace, DmaAllocator, Mempool, Packet, DATA_ROOM};

/// Feature bits (virtio 1.1 §5.1.3 and §6).
pub mod feature {
    /// Device has a MAC address in its configuration.
    pub const MAC: u64 = 1 << 5;
    /// Configuration has a link status field.
    pub const STATUS: u64 = 1 << 16;
    /// used_event / avail_event notification suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// virtio 1.0 or later.
    pub const VERSION_1: u64 = 1 << 32;
    /// The device goes through the platform's IOMMU.
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    /// Packed virtqueues.
    pub const RING_PACKED: u64 = 1 << 34;
}

const RX: u16 = 0;
const TX: u16 = 1;
/// Free descriptors the transmit queue waits for before it adds more frames (at most half
/// the queue, so it waits only while more than half is in flight).
const TX_CHUNK: usize = 128;
/// Link status bit in the net configuration's `status` (§5.1.4).
const NET_S_LINK_UP: u8 = 1;

/// A virtio-net port.
pub struct VirtioNet<Q: QueueKind> {
    addr: PciAddr,
    transport: Box<dyn Transport>,
    mac: [u8; 6],
    features: u64,
    hdr_len: usize,
    rx: Q,
    tx: Q,
    rx_bufs: Vec<Option<Packet>>,
    /// Fresh receive buffers for one refill, taken from the pool in one operation.
    rx_fresh: Vec<Packet>,
    tx_bufs: Vec<Option<Packet>>,
    /// The one frame ceiling mode sends over and over (its chains own no packet).
    ceiling: Option<Packet>,
    pool: Arc<Mempool>,
    /// The addresses the device reads (the pool's): what `send` checks packets against.
    space: AddressSpace,
    sw: Stats,
    /// Keeps the device open; declared last so it closes after the queues are freed.
    device: Option<Arc<dyn PciDevice>>,
}

impl<Q: QueueKind> std::fmt::Debug for VirtioNet<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioNet")
            .field("addr", &self.addr)
            .field("features", &format_args!("{:#x}", self.features))
            .finish_non_exhaustive()
    }
}

/// Features zcnic asks for; none is required except VERSION_1 on a modern device (QEMU
/// withholds the checksum and offload bits on hub and socket wires, so zcnic needs none).
pub fn wanted_features(packed: bool) -> u64 {
    let mut f = feature::VERSION_1
        | feature::ACCESS_PLATFORM
        | feature::MAC
        | feature::STATUS
        | feature::EVENT_IDX;
    if packed {
        f |= feature::RING_PACKED;
    }
    f
}

/// Resets the device and negotiates features (§3.1.1); returns what was accepted.
pub fn negotiate(
    t: &dyn Transport,
    addr: &PciAddr,
    cfg: &Config,
    packed: bool,
) -> Result<u64, Error> {
    t.set_status(0);
    if !crate::wait_until(cfg.reset_timeout, || t.status() == 0) {
        return Err(Error::Timeout {
            addr: *addr,
            what: "the virtio device to reset (status to read 0)",
            ms: cfg.reset_timeout.as_millis() as u64,
        });
    }
    t.set_status(status::ACKNOWLEDGE);
    t.set_status(status::ACKNOWLEDGE | status::DRIVER);
    let offered = t.device_features();
    let fail = |what: String| {
        t.set_status(status::FAILED);
        Err(Error::Io(format!("{addr}: {what}")))
    };
    if !t.legacy() && offered & feature::VERSION_1 == 0 {
        return fail("the device does not offer VIRTIO_F_VERSION_1 (bit 32)".into());
    }
    let accepted = offered & wanted_features(packed);
    t.set_driver_features(accepted);
    if !t.legacy() {
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        t.set_status(s);
        if t.status() & status::FEATURES_OK == 0 {
            return fail(format!(
                "the device refused features {accepted:#x} (FEATURES_OK cleared)"
            ));
        }
    }
    Ok(accepted)
}

impl<Q: QueueKind> VirtioNet<Q> {
    /// Brings the port up on a negotiated transport: queues, buffers, DRIVER_OK.
    pub fn new(
        mut transport: Box<dyn Transport>,
        features: u64,
        dma: &dyn DmaAllocator,
        addr: PciAddr,
        cfg: &Config,
    ) -> Result<Self, Error> {
        let legacy = transport.legacy();
        let event_idx = features & feature::EVENT_IDX != 0;
        let dma_err = |source| Error::Dma { addr, source };
        let mut queue = |q: u16, want: u32| -> Result<Q, Error> {
            let max = transport.queue_max(q);
            if max == 0 {
                return Err(Error::Io(format!("{addr}: the device has no queue {q}")));
            }
            let size = if legacy {
                max
            } else {
                prev_power_of_two(max.min(want.min(32768) as u16))
            };
            let (queue, areas) = Q::create(dma, size, legacy, event_idx).map_err(dma_err)?;
            if let Err(e) = transport.queue_setup(q, size, areas.desc, areas.driver, areas.device) {
                give_up(transport.as_ref(), addr, vec![queue]);
                return Err(Error::Io(format!("{addr}: {e}")));
            }
            Ok(queue)
        };
        // Once the device has a queue's addresses, an error path resets it before the
        // queue's memory is freed (and leaks the memory if the reset is not confirmed).
        let rx = queue(RX, cfg.rx_ring)?;
        let tx = match queue(TX, cfg.tx_ring) {
            Ok(tx) => tx,
            Err(e) => {
                give_up(transport.as_ref(), addr, vec![rx]);
                return Err(e);
            }
        };
        let pool = match Mempool::new(dma, cfg.pool) {
            Ok(pool) => pool,
            Err(e) => {
                give_up(transport.as_ref(), addr, vec![rx, tx]);
                return Err(dma_err(e));
            }
        };
        let mac = if features & feature::MAC != 0 {
            std::array::from_fn(|i| transport.config8(i as u32))
        } else {
            log::warn!("{addr}: the device has no MAC address; using 02:00:00:00:00:01");
            [2, 0, 0, 0, 0, 1]
        };
        let hdr_len = if legacy { 10 } else { 12 };
        let mut nic = Self {
            addr,
            mac,
            features,
            hdr_len,
            rx_bufs: (0..rx.size()).map(|_| None).collect(),
            rx_fresh: Vec::with_capacity(rx.size().into()),
            ceiling: None,
            tx_bufs: (0..tx.size()).map(|_| None).collect(),
            rx,
            tx,
            space: pool.space(),
            pool,
            sw: Stats::default(),
            transport,
            device: None,
        };
        let s = status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK;
        let s = if legacy { s } else { s | status::FEATURES_OK };
        nic.transport.set_status(s);
        nic.refill_rx(&mut Vec::new());
        Ok(nic)
    }

    /// Posts a buffer in every free receive slot, from the back of `spare` first (see
    /// `Nic::rx_batch_recycle`), then fresh from the pool; notifies when the device asks.
    fn refill_rx(&mut self, spare: &mut Vec<Packet>) {
        let want = usize::from(self.rx.free());
        if want == 0 {
            return;
        }
        let given = crate::nic::take_spares(&mut self.rx_fresh, spare, want, &self.pool);
        if self.pool.alloc_batch(&mut self.rx_fresh, want - given) < want - given {
            self.sw.rx_no_buf += 1;
        }
        let mut added = 0;
        while let Some(pkt) = self.rx_fresh.pop() {
            // The header lands in the headroom just before the frame.
            let buf = Buf {
                addr: pkt.iova() - self.hdr_len as u64,
                len: (DATA_ROOM + self.hdr_len) as u32,
                device_writes: true,
            };
            match self.rx.add(&[buf]) {
                Ok(id) => {
                    self.rx_bufs[usize::from(id)] = Some(pkt);
                    added += 1;
                }
                Err(_) => break,
            }
        }
        // Only when the ring refused a buffer it said it had room for (spares too: a
        // device or driver fault, and nothing is lost).
        Packet::drop_all(self.rx_fresh.drain(..));
        if added > 0 && self.rx.publish() {
            self.transport.notify(RX);
        }
    }

    /// Whether the transmit queue takes frames now: not while more than half of it is in
    /// flight and fewer than [`TX_CHUNK`] descriptors are free (see `send`).
    #[inline(always)]
    fn tx_room_for_a_chunk(&self) -> bool {
        let chunk = usize::from(self.tx.size() / 2).min(TX_CHUNK);
        usize::from(self.tx.free()) >= chunk
    }

    /// [`tx_room_for_a_chunk`](Self::tx_room_for_a_chunk), collecting completed frames
    /// first (into `keep` with `KEEP`, else to the pool) only when the room is short.
    #[inline(always)]
    fn make_tx_room<const KEEP: bool>(&mut self, keep: &mut Vec<Packet>) -> bool {
        if self.tx_room_for_a_chunk() {
            return true;
        }
        self.reclaim_tx::<KEEP>(keep);
        self.tx_room_for_a_chunk()
    }

    /// Frees transmit buffers the device is done with, in one pool operation; with `KEEP`
    /// they go into `keep` instead, without their virtio header (`Nic::tx_batch_recycle`).
    fn reclaim_tx<const KEEP: bool>(&mut self, keep: &mut Vec<Packet>) {
        let (tx, bufs, sw, addr) = (&mut self.tx, &mut self.tx_bufs, &mut self.sw, self.addr);
        let ceiling = self.ceiling.is_some();
        let mut budget = tx.size();
        let done = std::iter::from_fn(|| {
            while budget > 0 {
                budget -= 1;
                match tx.pop_used()? {
                    Ok(used) => match bufs.get_mut(usize::from(used.id)).and_then(Option::take) {
                        Some(pkt) => return Some(pkt),
                        // Ceiling mode's chains hold no packet of their own.
                        None if ceiling => {}
                        None => sw.tx_errors += 1,
                    },
                    Err(e) => {
                        log::debug!("{addr}: tx used entry: {e}");
                        sw.tx_errors += 1;
                    }
                }
            }
            None
        });
        if KEEP {
            let hdr_len = self.hdr_len;
            // Each was prepended by exactly hdr_len in `send`, so this cannot fail.
            keep.extend(done.map(|mut p| {
                let _ = p.trim_front(hdr_len);
                p
            }));
        } else {
            Packet::drop_all(done);
        }
    }

    /// Sends what fits of `pkts`; when the queue is short of room, first reclaims completed
    /// frames (into `done` with `KEEP`, else to the pool).
    fn send<const KEEP: bool>(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        // Frames go in by the chunk: with room for fewer than a chunk, the queue is busy
        // (more than half of it in flight) and the caller waits until a chunk completes.
        // Adding a frame or two each time one completed, QEMU's virtio-net ran at one of
        // two rates, about 0.92M or 1.54M pps; by the chunk, about 1.23M or 1.70M. And
        // completions are collected only when the room is short: each look at the used
        // ring pulls the cache lines QEMU's I/O thread is writing over to this CPU, which
        // costs the device most when the host's cores are far apart
        // (docs/performance.md, "virtio's slow mode").
        if !self.make_tx_room::<KEEP>(done) {
            return 0;
        }
        let free = usize::from(self.tx.free());
        // A frame with an attached payload is a chain of two descriptors.
        let n = crate::nic::frames_that_fit(pkts, free);
        let (mut sent, mut bytes) = (0u64, 0u64);
        for pkt in pkts.drain(..n) {
            // A buffer (or payload) of another address space is copied into ours first.
            let pkt = if pkt.payload().is_none() && pkt.reachable_in(self.space) {
                Some(pkt)
            } else {
                crate::nic::into_space(pkt, &self.pool)
            };
            let Some(mut pkt) = pkt else {
                self.sw.tx_errors += 1;
                continue;
            };
            let total = pkt.total_len();
            if pkt.is_empty() || pkt.prepend(self.hdr_len).is_err() {
                self.sw.tx_errors += 1;
                continue;
            }
            // No offloads: an all-zero header (flags 0, GSO_NONE). Fixed-size fills are
            // plain stores; a variable one is a memset call per frame.
            let hdr = pkt.data_mut();
            hdr[..8].fill(0);
            if self.hdr_len == 12 {
                hdr[8..12].fill(0);
            } else {
                hdr[8..10].fill(0);
            }
            let head = Buf {
                addr: pkt.iova(),
                len: pkt.len() as u32,
                device_writes: false,
            };
            let added = match pkt.payload() {
                None => self.tx.add(&[head]),
                Some(seg) => {
                    let payload = Buf {
                        addr: seg.iova(),
                        len: seg.len() as u32,
                        device_writes: false,
                    };
                    self.tx.add(&[head, payload])
                }
            };
            match added {
                Ok(id) => self.tx_bufs[usize::from(id)] = Some(pkt),
                Err(_) => {
                    self.sw.tx_errors += 1;
                    continue;
                }
            }
            sent += 1;
            bytes += total as u64;
        }
        if sent > 0 && self.tx.publish() {
            self.transport.notify(TX);
        }
        self.sw.tx_packets += sent;
        self.sw.tx_bytes += bytes;
        n
    }

    /// Links this port to the device handle that keeps it open.
    pub(crate) fn attach(&mut self, dev: Arc<dyn PciDevice>) {
        self.device = Some(dev);
    }
}

/// Resets the device (status 0, which stops its DMA, virtio 1.1 §2.1); true when the
/// device confirms it by reading 0 back.
fn stop(t: &dyn Transport) -> bool {
    t.set_status(0);
    crate::wait_until(Duration::from_millis(100), || t.status() == 0)
}

/// Bring-up failed after the device was given `queues`: reset it, and when the reset is not
/// confirmed leak their memory, which the device may still reach.
fn give_up<Q: QueueKind>(t: &dyn Transport, addr: PciAddr, queues: Vec<Q>) {
    if !stop(t) {
        log::error!("{addr}: the device did not reset; leaking the queues it was given");
        for mut q in queues {
            q.leak();
        }
    }
}

fn prev_power_of_two(n: u16) -> u16 {
    if n == 0 {
        0
    } else {
        1 << (15 - n.leading_zeros())
    }
}

impl<Q: QueueKind> Nic for VirtioNet<Q> {
    fn addr(&self) -> PciAddr {
        self.addr
    }

    fn driver(&self) -> &'static str {
        match (self.transport.legacy(), Q::PACKED) {
            (true, _) => "virtio-net legacy",
            (false, true) => "virtio-net packed",
            (false, false) => "virtio-net split",
        }
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.rx_batch_recycle(out, max, &mut Vec::new())
    }

    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        let mut delivered = 0;
        // Each iteration consumes one used entry (bad ones included), so this ends.
        for _ in 0..max {
            let used = match self.rx.pop_used() {
                None => break,
                Some(Ok(u)) => u,
                Some(Err(e)) => {
                    log::debug!("{}: rx used entry: {e}", self.addr);
                    self.sw.rx_errors += 1;
                    continue;
                }
            };
            let Some(mut pkt) = self
                .rx_bufs
                .get_mut(usize::from(used.id))
                .and_then(Option::take)
            else {
                self.sw.rx_errors += 1;
                continue;
            };
            let len = (used.len as usize).saturating_sub(self.hdr_len);
            if len == 0 || pkt.set_len(len).is_err() {
                self.sw.rx_errors += 1;
                continue; // dropping `pkt` returns it to the pool
            }
            self.sw.rx_bytes += len as u64;
            out.push(pkt);
            delivered += 1;
        }
        if delivered > 0 || self.rx.free() > 0 {
            self.refill_rx(spare);
        }
        self.sw.rx_packets += delivered as u64;
        delivered
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.send::<false>(pkts, &mut Vec::new())
    }

    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        self.send::<true>(pkts, done)
    }

    fn repost(&mut self, frame: &[u8], burst: usize) -> Option<usize> {
        if self.ceiling.is_none() {
            let Some(mut pkt) = crate::nic::ceiling_frame(self, frame) else {
                return Some(0);
            };
            if pkt.prepend(self.hdr_len).is_err() {
                return Some(0);
            }
            pkt.data_mut()[..self.hdr_len].fill(0);
            self.ceiling = Some(pkt);
        }
        // Every chain is the same one buffer: reclaiming frees nothing, adding writes one
        // descriptor and one avail entry, and nothing is allocated or built per frame.
        if !self.make_tx_room::<false>(&mut Vec::new()) {
            return Some(0);
        }
        let buf = self.ceiling.as_ref().map(|p| Buf {
            addr: p.iova(),
            len: p.len() as u32,
            device_writes: false,
        })?;
        let mut n = 0;
        while n < burst && self.tx.add(&[buf]).is_ok() {
            n += 1;
        }
        if n > 0 && self.tx.publish() {
            self.transport.notify(TX);
        }
        self.sw.tx_packets += n as u64;
        self.sw.tx_bytes += (n * frame.len()) as u64;
        Some(n)
    }

    fn flush(&mut self) -> bool {
        crate::wait_until(Duration::from_millis(500), || {
            self.reclaim_tx::<false>(&mut Vec::new());
            self.tx.in_flight() == 0
        })
    }

    fn stats(&mut self) -> Stats {
        self.sw.clone()
    }

    fn link(&self) -> Link {
        let up =
            self.features & feature::STATUS == 0 || self.transport.config8(6) & NET_S_LINK_UP != 0;
        Link {
            up,
            speed_mbps: 0,
            full_duplex: true,
        }
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn set_promisc(&mut self, on: bool) {
        // Without a control queue the filter cannot change; QEMU's virtio-net starts
        // promiscuous, so every frame on the wire arrives either way.
        log::debug!(
            "{}: promiscuous {on}: virtio-net receives everything already",
            self.addr
        );
    }
}

impl<Q: QueueKind> Drop for VirtioNet<Q> {
    /// Sends what is queued, then resets the device (which stops its DMA) and turns bus
    /// mastering off before queues and buffers are freed. When neither can be confirmed
    /// the device may still reach them: they are leaked on purpose, never freed under it.
    fn drop(&mut self) {
        if !self.flush() {
            log::warn!("{}: transmit queue did not drain before close", self.addr);
        }
        let reset = stop(self.transport.as_ref());
        let master_off = self
            .device
            .as_deref()
            .is_some_and(crate::platform::stop_bus_master);
        if !reset && !master_off {
            log::error!(
                "{}: the device did not stop; leaking its queues and buffers so it cannot write freed memory",
                self.addr
            );
            self.rx.leak();
            self.tx.leak();
            self.pool.leak();
            // Receive buffers must not go back to the pool's free list while the device may
            // write them; transmit packets may hold segments it may still read.
            std::mem::forget(std::mem::take(&mut self.rx_bufs));
            std::mem::forget(std::mem::take(&mut self.tx_bufs));
            std::mem::forget(self.ceiling.take());
        }
    }
}
