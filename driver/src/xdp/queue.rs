//! The datapath of one AF_XDP socket, as two handles: [`XdpRx`] (fill and RX rings)
//! and [`XdpTx`] (TX and completion rings), each `Send` and not `Sync`, so a queue's
//! receive and transmit may run on different threads as with zcnic's own drivers. A
//! frame is copied once between its UMEM frame and a [`Packet`] of the port's pool.

use super::init::{Attach, RxRings, Shared, TxRings, RX_FRAMES, TX_BASE};
use super::ring::{check_rx, frame_of, ready, room, Bad, FRAME};
use super::sys;
use super::sys::View;
use crate::port::{QueueCounters, RxQueue, TxQueue};
use std::sync::Arc;
use std::time::Duration;
use zcnic_hugepages::{Mempool, Packet};

/// The receive half of one queue's socket.
#[derive(Debug)]
pub struct XdpRx {
    queue: u16,
    pub(super) rings: RxRings,
    pub(super) shared: Arc<Shared>,
    /// The receive frames of the UMEM (after `shared`: unmapped after the socket closes).
    pub(super) umem: View,
    pool: Arc<Mempool>,
    /// Our producer index of the fill ring, and the kernel's consumer when last read.
    fill_prod: u32,
    fill_seen: u32,
    rx_cons: u32,
    /// Frames read from the RX ring, going back to the fill ring.
    refill: Vec<u32>,
    pub(super) counters: Arc<QueueCounters>,
    /// Keeps the program redirecting to this socket while the handle lives (`None` in
    /// the tests that play the kernel).
    _attach: Option<Arc<Attach>>,
}

/// The transmit half of one queue's socket.
#[derive(Debug)]
pub struct XdpTx {
    queue: u16,
    pub(super) rings: TxRings,
    pub(super) shared: Arc<Shared>,
    /// The transmit frames of the UMEM, from [`TX_BASE`] (after `shared`, as for rx).
    pub(super) umem: View,
    pool: Arc<Mempool>,
    /// Our producer index of the TX ring, and the kernel's consumer when last read.
    tx_prod: u32,
    tx_seen: u32,
    comp_cons: u32,
    pub(super) counters: Arc<QueueCounters>,
    _attach: Option<Arc<Attach>>,
}

/// Both halves of queue `queue`'s socket, receiving into and sending from `pool`.
pub fn split(
    queue: u16,
    q: super::init::Queue,
    pool: &Arc<Mempool>,
    attach: Option<&Arc<Attach>>,
) -> (XdpRx, XdpTx) {
    let (rx_umem, tx_umem) = q.umem;
    let rx = XdpRx {
        queue,
        rings: q.rx,
        shared: q.shared.clone(),
        umem: rx_umem,
        pool: pool.clone(),
        fill_prod: RX_FRAMES,
        fill_seen: 0,
        rx_cons: 0,
        refill: Vec::with_capacity(super::init::RING as usize),
        counters: Arc::default(),
        _attach: attach.cloned(),
    };
    let tx = XdpTx {
        queue,
        rings: q.tx,
        shared: q.shared,
        umem: tx_umem,
        pool: pool.clone(),
        tx_prod: 0,
        tx_seen: 0,
        comp_cons: 0,
        counters: Arc::default(),
        _attach: attach.cloned(),
    };
    (rx, tx)
}

impl XdpRx {
    /// Gives the frames read from the RX ring back to the fill ring.
    fn refill(&mut self) {
        if self.refill.is_empty() {
            return;
        }
        let fill = &self.rings.fill;
        let cons = fill.consumer();
        let free = match room(self.fill_prod, self.fill_seen, cons, fill.size) {
            Ok(r) => r,
            Err(_) => return self.shared.bad(),
        };
        self.fill_seen = cons;
        let n = self.refill.len().min(free as usize);
        for (i, f) in self.refill.drain(..n).enumerate() {
            fill.set_addr(self.fill_prod.wrapping_add(i as u32), u64::from(f) * FRAME);
            self.rings.frames.refill(f);
        }
        self.fill_prod = self.fill_prod.wrapping_add(n as u32);
        fill.set_producer(self.fill_prod);
    }
}

impl XdpRx {
    /// Frames wait in the RX ring (the socket polls readable exactly then).
    pub(super) fn pending(&self) -> bool {
        self.rings.rx.producer() != self.rx_cons
    }
}

impl RxQueue for XdpRx {
    fn queue(&self) -> u16 {
        self.queue
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        if let Some(sock) = self
            .shared
            .sock
            .as_ref()
            .filter(|_| self.rings.fill.needs_wakeup())
        {
            sys::wake_rx(sock);
        }
        let r = &mut self.rings;
        let avail = match ready(r.rx.producer(), self.rx_cons, r.rx.size) {
            Ok(n) => n,
            Err(_) => {
                self.shared.bad();
                0
            }
        };
        let (mut got, mut used, mut bytes, mut errors) = (0, 0, 0, 0);
        while used < avail && got < max {
            let (addr, len) = r.rx.desc(self.rx_cons.wrapping_add(used));
            let count = r.frames.count();
            let (frame, off) = match check_rx(addr, len, count) {
                Ok(v) => v,
                Err(b) => {
                    // An address we cannot trust names no frame to give back.
                    used += 1;
                    errors += 1;
                    if b == Bad::Len && r.frames.received((addr / FRAME) as u32).is_ok() {
                        self.refill.push((addr / FRAME) as u32);
                    }
                    self.shared.bad();
                    continue;
                }
            };
            if r.frames.received(frame).is_err() {
                used += 1;
                errors += 1;
                self.shared.bad();
                continue;
            }
            let Some(mut p) = self.pool.alloc() else {
                // Leave it in the ring until the pool has a buffer again.
                r.frames.refill(frame);
                self.counters.no_buf();
                break;
            };
            used += 1;
            let start = frame as usize * FRAME as usize + off;
            let ok = p.set_len(len as usize).is_ok() && self.umem.read(start, p.data_mut());
            self.refill.push(frame);
            if !ok {
                errors += 1;
                continue;
            }
            bytes += u64::from(len);
            out.push(p);
            got += 1;
        }
        self.rx_cons = self.rx_cons.wrapping_add(used);
        r.rx.set_consumer(self.rx_cons);
        self.counters.add(got as u64, bytes, errors);
        self.refill();
        got
    }

    /// Receives as [`rx_batch`](RxQueue::rx_batch): the kernel receives into UMEM
    /// frames, not into `Packet`s, so no spare is taken.
    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        _spare: &mut Vec<Packet>,
    ) -> usize {
        self.rx_batch(out, max)
    }
}

impl XdpTx {
    /// Takes the sent frames back from the completion ring.
    fn reclaim(&mut self) {
        let r = &mut self.rings;
        let n = match ready(r.comp.producer(), self.comp_cons, r.comp.size) {
            Ok(n) => n,
            Err(_) => return self.shared.bad(),
        };
        for i in 0..n {
            let addr = r.comp.addr(self.comp_cons.wrapping_add(i));
            let count = r.frames.count();
            if frame_of(addr, count)
                .and_then(|f| r.frames.complete(f))
                .is_err()
            {
                self.shared.bad();
            }
        }
        self.comp_cons = self.comp_cons.wrapping_add(n);
        r.comp.set_consumer(self.comp_cons);
    }

    /// Tells the kernel about queued frames when it asked to be told.
    fn kick(&self) {
        let Some(sock) = &self.shared.sock else {
            return;
        };
        if self.rings.tx.needs_wakeup() {
            if let Err(e) = sys::kick(sock) {
                log::debug!("xdp queue {}: sendto: {e}", self.queue);
            }
        }
    }

    /// Frames the kernel holds for sending.
    pub fn in_flight(&self) -> usize {
        self.rings.frames.in_flight()
    }
}

impl TxQueue for XdpTx {
    fn queue(&self) -> u16 {
        self.queue
    }

    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.reclaim();
        let r = &mut self.rings;
        let cons = r.tx.consumer();
        let free = match room(self.tx_prod, self.tx_seen, cons, r.tx.size) {
            Ok(n) => {
                // Only a consumer that passed the check is the base of the next one.
                self.tx_seen = cons;
                n
            }
            Err(_) => {
                self.shared.bad();
                0
            }
        };
        let n = pkts.len().min(free as usize).min(r.frames.free());
        let (mut posted, mut bytes, mut errors) = (0u32, 0u64, 0u64);
        for p in pkts.drain(..n) {
            let len = p.len();
            if len == 0 || len > FRAME as usize || !p.is_single() {
                errors += 1;
                continue;
            }
            let Some(f) = r.frames.take_tx() else {
                break;
            };
            let addr = u64::from(f) * FRAME;
            // A transmit frame's address is past TX_BASE: `take_tx` gives only those.
            if !self.umem.write((addr - TX_BASE) as usize, p.data()) {
                // Never for a frame of one buffer; the frame goes back, unsent.
                let _ = r.frames.complete(f);
                errors += 1;
                continue;
            }
            r.tx.set_desc(self.tx_prod.wrapping_add(posted), addr, len as u32);
            posted += 1;
            bytes += len as u64;
        }
        if posted > 0 {
            self.tx_prod = self.tx_prod.wrapping_add(posted);
            r.tx.set_producer(self.tx_prod);
        }
        self.counters.add(u64::from(posted), bytes, errors);
        self.kick();
        n
    }

    /// Sends as [`tx_batch`](TxQueue::tx_batch): the frames were copied into UMEM frames,
    /// so nothing comes back in `done`.
    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, _done: &mut Vec<Packet>) -> usize {
        self.tx_batch(pkts)
    }

    fn flush(&mut self) -> bool {
        crate::wait_until(Duration::from_secs(2), || {
            self.reclaim();
            if self.in_flight() == 0 {
                return true;
            }
            self.kick();
            false
        })
    }
}

impl Drop for XdpTx {
    /// Frames still queued are the kernel's until it completes them: a bounded moment
    /// for them to go out before the socket may close.
    fn drop(&mut self) {
        if self.in_flight() > 0 {
            self.flush();
        }
    }
}
