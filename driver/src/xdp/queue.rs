//! The datapath of one AF_XDP socket, as two handles: [`XdpRx`] (fill and RX rings)
//! and [`XdpTx`] (TX and completion rings), each `Send` and not `Sync`, so a queue's
//! receive and transmit may run on different threads as with zcnic's own drivers. The
//! kernel receives into and sends from the port's pool buffers themselves (the pool is
//! the UMEM, see `umem.rs`); only a packet of another pool is copied, into one of ours,
//! to be sent.

use super::init::{Attach, Queue, RxRings, Shared, TxRings, FILL, RING};
use super::ring::{check_rx, ready, room};
use super::sys;
use super::umem::{place, OFFSET_SHIFT};
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
    pool: Arc<Mempool>,
    /// Our producer index of the fill ring, and the kernel's consumer when last read.
    fill_prod: u32,
    fill_seen: u32,
    rx_cons: u32,
    /// Buffers the fill ring should hold.
    pub(super) fill: usize,
    /// Fresh buffers on their way to the fill ring (room for `fill`, so refilling
    /// allocates nothing).
    spare: Vec<Packet>,
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
    pool: Arc<Mempool>,
    /// Our producer index of the TX ring, and the kernel's consumer when last read.
    tx_prod: u32,
    tx_seen: u32,
    comp_cons: u32,
    /// Packets the completion ring gave back, on their way to the pool (room for a
    /// ring's worth).
    done: Vec<Packet>,
    pub(super) counters: Arc<QueueCounters>,
    _attach: Option<Arc<Attach>>,
}

/// Both halves of queue `queue`'s socket, receiving into and sending from the pool of
/// its UMEM, `fill` buffers posted to the fill ring.
pub fn split(queue: u16, q: Queue, fill: usize, attach: Option<&Arc<Attach>>) -> (XdpRx, XdpTx) {
    let pool = q.shared.umem.pool().clone();
    let fill = fill.min(FILL);
    let mut rx = XdpRx {
        queue,
        rings: q.rx,
        shared: q.shared.clone(),
        pool: pool.clone(),
        fill_prod: 0,
        fill_seen: 0,
        rx_cons: 0,
        fill,
        spare: Vec::with_capacity(fill),
        counters: Arc::default(),
        _attach: attach.cloned(),
    };
    rx.refill(None);
    let tx = XdpTx {
        queue,
        rings: q.tx,
        shared: q.shared,
        pool,
        tx_prod: 0,
        tx_seen: 0,
        comp_cons: 0,
        done: Vec::with_capacity(RING as usize),
        counters: Arc::default(),
        _attach: attach.cloned(),
    };
    (rx, tx)
}

impl XdpRx {
    /// Tops the fill ring up to `fill` buffers, each held in the table until the kernel
    /// gives its chunk back: from the back of `recycled` while those are this pool's
    /// (reset to empty buffers), then from the pool.
    fn refill(&mut self, recycled: Option<&mut Vec<Packet>>) {
        let want = self.fill.saturating_sub(self.rings.held.len());
        if want == 0 {
            return;
        }
        let fill = &self.rings.fill;
        let cons = fill.consumer();
        let free = match room(self.fill_prod, self.fill_seen, cons, fill.size) {
            Ok(r) => r,
            Err(_) => return self.shared.bad(),
        };
        self.fill_seen = cons;
        let n = want.min(free as usize);
        if let Some(r) = recycled {
            while self.spare.len() < n && r.last().is_some_and(|p| p.is_from(&self.pool)) {
                if let Some(mut p) = r.pop() {
                    p.reset();
                    self.spare.push(p);
                }
            }
        }
        let more = n - self.spare.len();
        if self.pool.alloc_batch(&mut self.spare, more) < more {
            self.counters.no_buf();
        }
        let umem = &self.shared.umem;
        let mut posted = 0u32;
        for p in self.spare.drain(..) {
            // Always a chunk: the buffer is the UMEM's pool's.
            let Some(chunk) = umem.chunk_of(&p) else {
                continue;
            };
            if self.rings.held.hold(chunk, p).is_ok() {
                fill.set_addr(self.fill_prod.wrapping_add(posted), chunk);
                posted += 1;
            }
        }
        self.fill_prod = self.fill_prod.wrapping_add(posted);
        fill.set_producer(self.fill_prod);
    }

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
        let got = self.receive(out, max);
        self.refill(None);
        got
    }

    /// Receives as [`rx_batch`](RxQueue::rx_batch), refilling from the back of `spare`
    /// first (this pool's packets only, reset).
    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        let got = self.receive(out, max);
        self.refill(Some(spare));
        got
    }
}

impl XdpRx {
    /// Moves what the RX ring holds (up to `max` frames) to `out`, without refilling.
    fn receive(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
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
            used += 1;
            let checked = check_rx(addr, len);
            // The chunk, if the kernel held it, is ours again whatever else is wrong.
            let chunk = checked.map_or(addr & ((1 << OFFSET_SHIFT) - 1), |(c, _)| c);
            let Some(mut p) = r.held.take(chunk) else {
                errors += 1;
                self.shared.bad();
                continue;
            };
            match checked {
                Ok((_, off)) if place(&mut p, off, len as usize) => {
                    bytes += u64::from(len);
                    out.push(p);
                    got += 1;
                }
                // A bad length: the buffer goes back to the pool, the frame nowhere.
                _ => {
                    errors += 1;
                    self.shared.bad();
                }
            }
        }
        self.rx_cons = self.rx_cons.wrapping_add(used);
        r.rx.set_consumer(self.rx_cons);
        self.counters.add(got as u64, bytes, errors);
        got
    }
}

impl Drop for XdpRx {
    /// The fill ring's buffers stay the kernel's until the socket closes.
    fn drop(&mut self) {
        self.shared.leave(&mut self.rings.held);
    }
}

impl XdpTx {
    /// Takes the sent packets back from the completion ring: into `done` when given,
    /// else to the pool.
    fn reclaim(&mut self, done: Option<&mut Vec<Packet>>) {
        let r = &mut self.rings;
        let n = match ready(r.comp.producer(), self.comp_cons, r.comp.size) {
            Ok(n) => n,
            Err(_) => return self.shared.bad(),
        };
        let sink = match done {
            Some(d) => d,
            None => &mut self.done,
        };
        for i in 0..n {
            let addr = r.comp.addr(self.comp_cons.wrapping_add(i));
            match r.held.take(addr) {
                Some(p) => sink.push(p),
                None => self.shared.bad(),
            }
        }
        self.comp_cons = self.comp_cons.wrapping_add(n);
        r.comp.set_consumer(self.comp_cons);
        Packet::drop_all(self.done.drain(..));
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

    /// Packets the kernel holds for sending.
    pub fn in_flight(&self) -> usize {
        self.rings.held.len()
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
        self.reclaim(None);
        self.send(pkts)
    }

    /// Sends as [`tx_batch`](TxQueue::tx_batch); the packets the kernel has completed
    /// come back in `done` (a packet of another pool as the copy that was sent).
    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        self.reclaim(Some(done));
        self.send(pkts)
    }

    fn flush(&mut self) -> bool {
        crate::wait_until(Duration::from_secs(2), || {
            self.reclaim(None);
            if self.in_flight() == 0 {
                return true;
            }
            self.kick();
            false
        })
    }
}

impl XdpTx {
    /// Posts what the TX ring has room for; how many packets were taken from `pkts`.
    fn send(&mut self, pkts: &mut Vec<Packet>) -> usize {
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
        let n = pkts.len().min(free as usize);
        let umem = &self.shared.umem;
        let (mut posted, mut bytes, mut errors) = (0u32, 0u64, 0u64);
        for p in pkts.drain(..n) {
            let len = p.len();
            if len == 0 || !p.is_single() {
                errors += 1;
                continue;
            }
            // A packet of another pool is out of the UMEM's reach: a copy of it in one
            // of ours goes instead (`None` when the pool is empty).
            let p = if umem.addr_of(&p).is_some() {
                Some(p)
            } else {
                self.pool.alloc_copy(p.data()).filter(|c| c.is_single())
            };
            let Some((addr, p)) = p.and_then(|p| Some((umem.addr_of(&p)?, p))) else {
                errors += 1;
                continue;
            };
            if r.held.hold(addr, p).is_err() {
                // Never: a packet is held once, and its buffer is found by its address.
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
}

impl Drop for XdpTx {
    /// Packets still queued are the kernel's until it completes them: a bounded moment
    /// for them to go out, then those left wait for the socket to close.
    fn drop(&mut self) {
        if self.in_flight() > 0 {
            self.flush();
        }
        self.shared.leave(&mut self.rings.held);
    }
}
