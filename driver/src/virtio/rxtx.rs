//! The virtio-net datapath of one queue pair: its two handles made ([`pair`]), each owned
//! by one thread, and the receive queue ([`VirtioRxQueue`]); the transmit queue is in
//! `tx.rs`.
//!
//! The `virtio_net_hdr` (12 bytes with VERSION_1 or MRG_RXBUF, 10 for legacy, 20 with
//! HASH_REPORT) lives in the packet's headroom, so each frame is a single descriptor and
//! nothing is copied. A legacy device without VIRTIO_F_ANY_LAYOUT needs the header in a
//! descriptor of its own (virtio 1.1 §2.6.4.3): then the header stays in the headroom but
//! gets its own descriptor, and every buffer takes one descriptor more (the ring holds
//! half as many). Receive buffers are refilled in a batch after each burst; with
//! VIRTIO_NET_F_MRG_RXBUF a frame may span several (`mergeable.rs`); with
//! VIRTIO_NET_F_GUEST_CSUM each header's checksum verdict is read (`offload.rs`). The
//! device is notified only when it asks (EVENT_IDX or its NO_NOTIFY flag).

use super::legacy::Isr;
use super::mergeable::Merge;
use super::queue::QueueKind;
use super::transport::Notifier;
use super::tx::{TxState, VirtioTxQueue};
use crate::irq::RxIrq;
use crate::pci::PciAddr;
use crate::port::{QueueCounters, RxQueue, Teardown};
use crate::Error;
use std::sync::Arc;
use zcnic_descriptors::virtio::Buf;
use zcnic_hugepages::{Mempool, Packet, DATA_ROOM};

/// Where `hash_value` (le32) and `hash_report` (le16) sit in `virtio_net_hdr_v1_hash`
/// (virtio 1.2 §5.1.6).
const HASH_VALUE: usize = 12;
const HASH_REPORT: usize = 16;

/// The receive queue of one virtio-net queue pair.
pub struct VirtioRxQueue<Q: QueueKind> {
    queue: u16,
    pub(super) addr: PciAddr,
    /// The ring and what is posted in it; `None` once handed to the port on drop.
    pub(super) st: Option<RxState<Q>>,
    /// The queue's MSI-X vector or the port's INTx, or none (`irq.rs`, `legacy.rs`).
    pub(super) irq: Option<RxIrq>,
    /// With INTx: the ISR status register the queue reads to acknowledge it (`legacy.rs`).
    pub(super) isr: Option<Isr>,
    pool: Arc<Mempool>,
    pub(crate) counters: Arc<QueueCounters>,
    teardown: Arc<Teardown>,
}

pub(super) struct RxState<Q> {
    pub(super) vq: Q,
    bufs: Vec<Option<Packet>>,
    /// Fresh receive buffers for one refill, taken from the pool in one operation.
    fresh: Vec<Packet>,
    hdr_len: usize,
    /// The header has a descriptor of its own (see [`super::header_apart`]).
    hdr_apart: bool,
    /// The header carries the device's RSS hash (VIRTIO_NET_F_HASH_REPORT).
    hash_report: bool,
    /// Frames may span several buffers (VIRTIO_NET_F_MRG_RXBUF; `mergeable.rs`).
    merge: Option<Merge>,
    /// The header carries a checksum verdict (VIRTIO_NET_F_GUEST_CSUM; `offload.rs`).
    guest_csum: bool,
    /// Either of the two: the header is read at all (one test per frame when not).
    read_header: bool,
    kick: Notifier,
}

/// What a queue pair is made of, as the port sets it up.
pub(crate) struct PairParts<Q> {
    pub queue: u16,
    pub addr: PciAddr,
    pub rx: Q,
    pub rx_kick: Notifier,
    pub tx: Q,
    pub tx_kick: Notifier,
    pub hdr_len: usize,
    pub hdr_apart: bool,
    pub hash_report: bool,
    /// VIRTIO_NET_F_MRG_RXBUF was negotiated.
    pub merge: bool,
    pub max_frame: usize,
    /// The checksum offloads negotiated (`offload.rs`).
    pub offloads: crate::Offloads,
    pub pool: Arc<Mempool>,
    pub teardown: Arc<Teardown>,
    /// The receive queue's MSI-X vector or INTx (`irq.rs`, `legacy.rs`).
    pub irq: Option<RxIrq>,
    /// With INTx: its ISR status.
    pub isr: Option<Isr>,
}

/// Builds a queue pair's two handles; the receive ring is filled and the device told.
pub(crate) fn pair<Q: QueueKind>(p: PairParts<Q>) -> (VirtioRxQueue<Q>, VirtioTxQueue<Q>) {
    let rx_size = p.rx.size().into();
    // A chain of two descriptors per buffer when the header goes apart.
    let rx_bufs = p.rx.size() >> u16::from(p.hdr_apart);
    let merge = p.merge.then(|| Merge::new(p.max_frame, p.hdr_len, rx_bufs));
    let tx_size = p.tx.size().into();
    let mut rx = VirtioRxQueue {
        queue: p.queue,
        addr: p.addr,
        st: Some(RxState {
            vq: p.rx,
            bufs: (0..rx_size).map(|_| None).collect(),
            fresh: Vec::with_capacity(rx_size),
            hdr_len: p.hdr_len,
            hdr_apart: p.hdr_apart,
            hash_report: p.hash_report,
            merge,
            guest_csum: p.offloads.rx_checksum,
            read_header: p.hash_report || p.offloads.rx_checksum,
            kick: p.rx_kick,
        }),
        irq: p.irq,
        isr: p.isr,
        pool: Arc::clone(&p.pool),
        counters: Arc::default(),
        teardown: Arc::clone(&p.teardown),
    };
    rx.refill(&mut Vec::new());
    let tx = VirtioTxQueue {
        queue: p.queue,
        addr: p.addr,
        st: Some(TxState {
            vq: p.tx,
            bufs: (0..tx_size).map(|_| None).collect(),
            ceiling: None,
            hdr_len: p.hdr_len,
            hdr_apart: p.hdr_apart,
            max_frame: p.max_frame,
            caps: p.offloads,
            kick: p.tx_kick,
        }),
        space: p.pool.space(),
        pool: p.pool,
        counters: Arc::default(),
        teardown: p.teardown,
    };
    (rx, tx)
}

impl<Q: QueueKind> std::fmt::Debug for VirtioRxQueue<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VirtioRxQueue({} queue {})", self.addr, self.queue)
    }
}

impl<Q: QueueKind> VirtioRxQueue<Q> {
    /// Posts a buffer in every free receive slot, from the back of `spare` first (see
    /// `Nic::rx_batch_recycle`), then fresh from the pool; notifies when the device asks.
    fn refill(&mut self, spare: &mut Vec<Packet>) {
        let Some(st) = self.st.as_mut() else { return };
        // A chain of two descriptors per buffer when the header needs its own.
        let want = usize::from(st.vq.free()) >> usize::from(st.hdr_apart);
        if want == 0 {
            return;
        }
        let given = crate::nic::take_spares(&mut st.fresh, spare, want, &self.pool);
        if self.pool.alloc_batch(&mut st.fresh, want - given) < want - given {
            self.counters.no_buf();
        }
        let mut added = 0;
        while let Some(pkt) = st.fresh.pop() {
            // The header lands in the headroom just before the frame; the used length
            // counts both, in one descriptor or in two.
            let hdr = pkt.iova() - st.hdr_len as u64;
            let chain = if st.hdr_apart {
                st.vq.add(&[
                    Buf {
                        addr: hdr,
                        len: st.hdr_len as u32,
                        device_writes: true,
                    },
                    Buf {
                        addr: pkt.iova(),
                        len: DATA_ROOM as u32,
                        device_writes: true,
                    },
                ])
            } else {
                st.vq.add(&[Buf {
                    addr: hdr,
                    len: (DATA_ROOM + st.hdr_len) as u32,
                    device_writes: true,
                }])
            };
            match chain {
                Ok(id) => {
                    st.bufs[usize::from(id)] = Some(pkt);
                    added += 1;
                }
                Err(_) => break,
            }
        }
        // Only when the ring refused a buffer it said it had room for (spares too: a
        // device or driver fault, and nothing is lost).
        Packet::drop_all(st.fresh.drain(..));
        if added > 0 && st.vq.publish() {
            st.kick.kick();
        }
    }
}

/// What a received frame's header says beyond its length: the RSS hash (HASH_REPORT) and
/// the checksum verdict (GUEST_CSUM). False when the header's checksum offsets do not fit
/// the frame (a receive error).
#[inline(never)]
fn header<Q>(pkt: &mut Packet, st: &RxState<Q>) -> bool {
    if st.hash_report {
        let hash = hash_of(pkt, st.hdr_len);
        pkt.set_rss(hash);
    }
    !st.guest_csum || super::offload::rx_verdict(pkt, st.hdr_len)
}

/// The RSS hash and type of a received frame, from its header in the headroom.
#[inline]
fn hash_of(pkt: &mut Packet, hdr_len: usize) -> (u32, u8) {
    if pkt.prepend(hdr_len).is_err() {
        return (0, 0);
    }
    let h = pkt.data();
    let value = u32::from_le_bytes([
        h[HASH_VALUE],
        h[HASH_VALUE + 1],
        h[HASH_VALUE + 2],
        h[HASH_VALUE + 3],
    ]);
    let report = u16::from_le_bytes([h[HASH_REPORT], h[HASH_REPORT + 1]]);
    // Prepended just above, so this cannot fail.
    let _ = pkt.trim_front(hdr_len);
    // The types with IPv6 extension headers (7–9) as their plain kind, as the igb does.
    let report = match report {
        7 => 4,
        8 => 5,
        9 => 6,
        r => u8::try_from(r).unwrap_or(0),
    };
    (value, report)
}

impl<Q: QueueKind> RxQueue for VirtioRxQueue<Q> {
    fn queue(&self) -> u16 {
        self.queue
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
        let Some(st) = self.st.as_mut() else { return 0 };
        let (mut delivered, mut bytes, mut errors) = (0, 0u64, 0u64);
        // Each iteration consumes one used entry (bad ones included), so this ends.
        for _ in 0..max {
            let used = match st.vq.pop_used() {
                None => break,
                Some(Ok(u)) => u,
                Some(Err(e)) => {
                    log::debug!("{}: rx used entry: {e}", self.addr);
                    errors += 1;
                    continue;
                }
            };
            let Some(mut pkt) = st.bufs.get_mut(usize::from(used.id)).and_then(Option::take) else {
                errors += 1;
                continue;
            };
            if let Some(m) = st.merge.as_mut() {
                // Each buffer may be part of a frame: gathered on their own path.
                let Some(mut frame) = m.take(pkt, used.len, &mut st.vq, &mut st.bufs, &mut errors)
                else {
                    continue;
                };
                if st.read_header && !header(&mut frame, st) {
                    errors += 1;
                    continue;
                }
                bytes += frame.total_len() as u64;
                out.push(frame);
                delivered += 1;
                continue;
            }
            let len = (used.len as usize).saturating_sub(st.hdr_len);
            if len == 0 || pkt.set_len(len).is_err() {
                errors += 1;
                continue; // dropping `pkt` returns it to the pool
            }
            if st.read_header && !header(&mut pkt, st) {
                errors += 1;
                continue;
            }
            bytes += len as u64;
            out.push(pkt);
            delivered += 1;
        }
        let free = st.vq.free();
        if delivered > 0 || free > 0 {
            self.refill(spare);
        }
        self.counters.add(delivered as u64, bytes, errors);
        delivered
    }

    /// The queue's MSI-X vector (`irq.rs`).
    fn rx_interrupt_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, Error> {
        self.irq_fd()
    }

    /// Used buffer notifications on, then the ring again (`irq.rs`).
    fn enable_rx_interrupt(&mut self) -> Result<bool, Error> {
        self.arm()
    }

    fn disable_rx_interrupt(&mut self) -> Result<(), Error> {
        self.disarm()
    }
}

impl<Q: QueueKind> Drop for VirtioRxQueue<Q> {
    /// The ring and its buffers go to the port, which frees them once the device is
    /// stopped (or at once, if it already is).
    fn drop(&mut self) {
        if let Some(st) = self.st.take() {
            self.teardown.park(Box::new((st.vq, st.bufs)));
        }
    }
}
