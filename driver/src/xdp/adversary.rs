//! The kernel as an adversary: tests that play the kernel's side of the four rings on
//! plain memory ([`Queue::fake`]) and write what a buggy or hostile kernel might —
//! producers run past the ring, consumers that move backwards, addresses outside the UMEM
//! or of buffers the kernel does not hold (or holds from the other ring), a buffer
//! returned twice, a length or offset past its buffer. Each is counted and refused; none
//! panics, none reaches a `Packet`, and good entries around a bad one still go through.
//! And what the pool as UMEM promises: no copy on either way, and every buffer back in
//! the pool, once, after the close.

use super::init::{Hook, Queue, RING};
use super::umem::{place, Umem, CHUNK, OFFSET_SHIFT};
use super::XdpPort;
use crate::{Config, Nic};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use zcnic_hugepages::{FakeDma, Mempool};

/// XDP_PACKET_HEADROOM: where the kernel puts a received frame in its chunk.
const HEADROOM: u64 = 256;
/// Buffers of the pool in these tests.
const POOL: usize = 4096;

/// The kernel's side: its own indices of the four rings.
#[derive(Default)]
struct Kernel {
    fill_cons: u32,
    rx_prod: u32,
    tx_cons: u32,
    comp_prod: u32,
}

impl Kernel {
    /// Takes the next fill entry's chunk, without receiving into it yet.
    fn take_fill(&mut self, port: &XdpPort) -> u64 {
        let a = port.rx.rings.fill.addr(self.fill_cons);
        self.fill_cons += 1;
        port.rx.rings.fill.set_consumer(self.fill_cons);
        a
    }

    /// Posts an RX descriptor as the kernel would (data written first, producer last).
    fn post_rx(&mut self, port: &XdpPort, addr: u64, len: u32) {
        port.rx.rings.rx.set_desc(self.rx_prod, addr, len);
        self.rx_prod += 1;
        port.rx.rings.rx.set_producer(self.rx_prod);
    }

    /// Receives `data` into the next fill chunk, at the kernel's headroom; its chunk.
    fn receive(&mut self, port: &mut XdpPort, data: &[u8]) -> u64 {
        let chunk = self.take_fill(port);
        let p = port.rx.rings.held.get_mut(chunk).expect("a chunk we hold");
        assert!(place(p, HEADROOM as usize, data.len()));
        p.data_mut().copy_from_slice(data);
        self.post_rx(port, chunk | HEADROOM << OFFSET_SHIFT, data.len() as u32);
        chunk
    }

    /// Sends every queued TX descriptor: their addresses and bytes, each completed.
    fn send_all(&mut self, port: &mut XdpPort) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while self.tx_cons != port.tx.rings.tx.producer() {
            let (addr, len) = port.tx.rings.tx.desc(self.tx_cons);
            let p = port.tx.rings.held.get_mut(addr).expect("a frame we hold");
            assert_eq!(p.len(), len as usize);
            out.push((addr, p.data().to_vec()));
            self.tx_cons += 1;
            self.complete(port, addr);
        }
        port.tx.rings.tx.set_consumer(self.tx_cons);
        out
    }

    fn complete(&mut self, port: &XdpPort, addr: u64) {
        port.tx.rings.comp.set_addr(self.comp_prod, addr);
        self.comp_prod += 1;
        port.tx.rings.comp.set_producer(self.comp_prod);
    }
}

fn port() -> XdpPort {
    let umem = Umem::new("zcfake0", POOL).unwrap();
    XdpPort::with_queue("zcfake0", Queue::fake(&umem), None, &Config::default()).unwrap()
}

fn bad(port: &XdpPort) -> u64 {
    port.rx.shared.bad.load(Ordering::Relaxed)
}

fn frame(i: u8, len: usize) -> Vec<u8> {
    (0..len).map(|k| (k as u8).wrapping_mul(3) ^ i).collect()
}

fn rx_all(port: &mut XdpPort) -> Vec<Vec<u8>> {
    let mut got = Vec::with_capacity(64);
    port.rx_batch(&mut got, 64);
    got.iter().map(|p| p.data().to_vec()).collect()
}

#[test]
fn good_frames_go_both_ways_byte_for_byte_and_uncopied() {
    let (mut port, mut k) = (port(), Kernel::default());
    let fill = port.rx.rings.held.len();
    assert_eq!(port.rx.rings.fill.producer() as usize, fill);
    let umem = port.rx.shared.umem.clone();
    let (base, len) = umem.region();
    let mut chunks = vec![];
    for i in 0..3 {
        chunks.push(k.receive(&mut port, &frame(i, 60 + usize::from(i) * 700)));
    }
    let mut got = Vec::with_capacity(8);
    assert_eq!(port.rx_batch(&mut got, 8), 3);
    for (i, (p, c)) in got.iter().zip(&chunks).enumerate() {
        assert_eq!(p.data(), frame(i as u8, 60 + i * 700));
        // The frame is where the kernel put it, inside the pool's region: no copy.
        let at = p.data().as_ptr() as usize;
        assert_eq!(at, base + (c + HEADROOM) as usize);
        assert!(at >= base && at + p.len() <= base + len);
    }
    // The fill ring was topped up with fresh buffers.
    assert_eq!(port.rx.rings.held.len(), fill);
    assert_eq!(port.rx.rings.fill.producer() as usize, fill + 3);
    // Forwarded back out: the kernel sends from the very bytes it received into.
    let want: Vec<_> = got
        .iter()
        .map(|p| p.data().as_ptr() as usize - base)
        .collect();
    assert_eq!(port.tx_batch(&mut got), 3);
    let sent = k.send_all(&mut port);
    assert_eq!(
        sent.iter().map(|(a, _)| *a as usize).collect::<Vec<_>>(),
        want
    );
    assert_eq!(sent[2].1, frame(2, 1460));
    assert!(port.flush());
    assert_eq!(port.tx.in_flight(), 0);
    assert_eq!(port.stats().hw("bad_kernel_index"), Some(0));
    assert_eq!(umem.pool().free_count(), POOL - fill, "the rest is free");
}

#[test]
fn a_packet_of_another_pool_is_copied_into_ours_to_be_sent() {
    let (mut port, mut k) = (port(), Kernel::default());
    let other = Mempool::new(&FakeDma::new(), 8).unwrap();
    let mut tx = vec![other.alloc_copy(&frame(5, 300)).unwrap()];
    assert_eq!(port.tx_batch(&mut tx), 1);
    assert_eq!(other.free_count(), 8, "the original went back to its pool");
    let sent = k.send_all(&mut port);
    assert_eq!(sent[0].1, frame(5, 300));
    assert!(sent[0].0 + 300 <= port.rx.shared.umem.region().1 as u64);
    assert!(port.flush());
}

#[test]
fn an_rx_producer_past_the_ring_is_refused() {
    let (mut port, mut k) = (port(), Kernel::default());
    k.receive(&mut port, &frame(1, 60));
    port.rx.rings.rx.set_producer(port.rx.rings.rx.size + 5);
    assert!(rx_all(&mut port).is_empty());
    assert_eq!(bad(&port), 1);
    // Back in order, the frame arrives.
    port.rx.rings.rx.set_producer(1);
    assert_eq!(rx_all(&mut port), vec![frame(1, 60)]);
}

#[test]
fn bad_rx_descriptors_are_dropped_and_good_ones_around_them_delivered() {
    let (mut port, mut k) = (port(), Kernel::default());
    let pool = port.pool().clone();
    let at = |chunk: u64| chunk | HEADROOM << OFFSET_SHIFT;
    k.receive(&mut port, &frame(1, 60));
    // Outside the UMEM.
    k.post_rx(&port, u64::MAX - 10, 60);
    k.post_rx(&port, at(1 << 40), 60);
    // A buffer of the pool the kernel was never given.
    let free = pool.alloc().unwrap();
    let not_held = port.rx.shared.umem.chunk_of(&free).unwrap();
    k.post_rx(&port, at(not_held), 60);
    // Inside a held chunk but not its start.
    let inside = k.take_fill(&port);
    k.post_rx(&port, at(inside + 64), 60);
    // A chunk received twice.
    let twice = k.take_fill(&port);
    k.post_rx(&port, at(twice), 60);
    k.post_rx(&port, at(twice), 60);
    // A length that runs past its chunk, a length of 0, an offset past the chunk.
    let long = k.take_fill(&port);
    k.post_rx(&port, at(long), (CHUNK - HEADROOM + 1) as u32);
    let empty = k.take_fill(&port);
    k.post_rx(&port, at(empty), 0);
    let far = k.take_fill(&port);
    k.post_rx(&port, far | CHUNK << OFFSET_SHIFT, 1);
    k.receive(&mut port, &frame(2, 61));
    let got = rx_all(&mut port);
    assert_eq!(
        got.len(),
        3,
        "two good frames and the first of the twice-received one"
    );
    assert_eq!(
        (got[0].as_slice(), got[2].as_slice()),
        (&frame(1, 60)[..], &frame(2, 61)[..])
    );
    let st = port.stats();
    assert_eq!(st.rx_errors, 8);
    assert_eq!(st.hw("bad_kernel_index"), Some(8));
    // The chunk posted at an offset is still the kernel's; the long, empty and far ones
    // came back (to the pool) with their errors, and the fill ring was topped up.
    assert!(port.rx.rings.held.get_mut(inside).is_some());
    // Six chunks came back (two good, the twice-received one, the long, empty and far
    // ones), so six fresh entries went to the fill ring: a bad descriptor's chunk is
    // not kept in the table as if the kernel still had it.
    let fill = port.rx.fill;
    assert_eq!(port.rx.rings.fill.producer() as usize, fill + 6);
    assert_eq!(port.rx.rings.held.len(), port.rx.fill);
    drop((got, free));
    assert_eq!(pool.free_count(), POOL - fill, "nothing lost");
}

#[test]
fn bad_completions_are_refused_and_a_backwards_tx_consumer_stops_sending() {
    let (mut port, mut k) = (port(), Kernel::default());
    // Completions of buffers never sent, outside the UMEM, or held by the fill ring.
    let filled = port.rx.rings.fill.addr(0);
    k.complete(&port, 0);
    k.complete(&port, u64::MAX);
    k.complete(&port, filled);
    let mut tx = vec![port.pool().alloc_copy(&frame(9, 60)).unwrap()];
    assert_eq!(port.tx_batch(&mut tx), 1);
    assert_eq!(bad(&port), 3);
    assert_eq!(
        port.tx.in_flight(),
        1,
        "the real frame is still the kernel's"
    );
    assert!(
        port.rx.rings.held.get_mut(filled).is_some(),
        "still in the fill ring"
    );
    // The kernel's TX consumer jumps past our producer: nothing more is posted.
    port.tx.rings.tx.set_consumer(5);
    let mut tx = vec![port.pool().alloc_copy(&frame(8, 60)).unwrap()];
    assert_eq!(port.tx_batch(&mut tx), 0);
    assert_eq!(tx.len(), 1, "the frame stays with the caller");
    assert_eq!(bad(&port), 4);
    port.tx.rings.tx.set_consumer(0);
    let sent = k.send_all(&mut port);
    assert_eq!(sent.len(), 1);
    assert!(port.flush(), "the real frame completed");
    // The same completion again: that buffer is no longer held.
    k.complete(&port, sent[0].0);
    assert!(port.flush());
    assert_eq!(bad(&port), 5);
    // Sending resumes.
    assert_eq!(port.tx_batch(&mut tx), 1);
    assert_eq!(k.send_all(&mut port)[0].1, frame(8, 60));
    assert!(port.flush());
    // A completion producer past the ring.
    port.tx.rings.comp.set_producer(k.comp_prod + RING + 1);
    assert!(port.flush());
    assert_eq!(bad(&port), 6);
}

#[test]
fn every_buffer_is_back_in_the_pool_once_after_the_close() {
    let (mut port, mut k) = (port(), Kernel::default());
    let pool: Arc<Mempool> = port.pool().clone();
    for i in 0..5 {
        k.receive(&mut port, &frame(i, 100));
    }
    let mut got = Vec::with_capacity(8);
    assert_eq!(port.rx_batch(&mut got, 8), 5);
    // Two sent and completed, three left with the kernel, never completed.
    let mut first: Vec<_> = got.drain(..2).collect();
    assert_eq!(port.tx_batch(&mut first), 2);
    k.send_all(&mut port);
    assert_eq!(port.tx_batch(&mut got), 3);
    assert_eq!(port.tx.in_flight(), 3);
    assert!(pool.free_count() < POOL);
    drop(port);
    assert_eq!(pool.free_count(), POOL, "nothing lost, nothing freed twice");
    // Each buffer is handed out once more, and then the pool is empty.
    let mut all = Vec::with_capacity(POOL + 1);
    assert_eq!(pool.alloc_batch(&mut all, POOL + 1), POOL);
}

/// The socket closes before any buffer the kernel held goes back to the pool: when they
/// are about to, the socket's fd is closed (here one end of a socket pair, whose peer
/// then reads end-of-file) and the pool has none of them yet, whichever half held them.
#[test]
fn the_socket_is_closed_before_the_buffers_it_held_go_back() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let umem = Umem::new("zcfake0", POOL).unwrap();
    let pool = umem.pool().clone();
    let (mut peer, sock) = UnixStream::pair().unwrap();
    peer.set_nonblocking(true).unwrap();
    let seen = Arc::new(Mutex::new(None));
    let mut q = Queue::fake(&umem);
    let shared = Arc::get_mut(&mut q.shared).unwrap();
    shared.sock = Some(sock.into());
    let (s, p) = (seen.clone(), pool.clone());
    shared.before_release = Hook(Some(Box::new(move || {
        let closed = matches!(peer.read(&mut [0; 1]), Ok(0));
        *s.lock().unwrap() = Some((closed, p.free_count()));
    })));
    let mut port = XdpPort::with_queue("zcfake0", q, None, &Config::default()).unwrap();
    let mut k = Kernel::default();
    for i in 0..5 {
        k.receive(&mut port, &frame(i, 100));
    }
    let mut got = Vec::with_capacity(8);
    assert_eq!(port.rx_batch(&mut got, 8), 5);
    // All five left with the kernel to send, never completed; the fill ring full.
    assert_eq!(port.tx_batch(&mut got), 5);
    let free = pool.free_count();
    assert_eq!(free, POOL - 5 - port.rx.fill);
    drop(port);
    assert_eq!(
        *seen.lock().unwrap(),
        Some((true, free)),
        "the socket closed first, and not one of its buffers freed before"
    );
    assert_eq!(pool.free_count(), POOL, "then every one, once");
}

/// Regression: an `epoll_wait` on a duplicate of the interrupt fd holds a reference to
/// the socket while it polls it (Linux 6.10 on), so the socket must be off that epoll
/// before it closes: else that reference could be the last, the socket released in the
/// polling thread after our close returned, and the fill ring's buffers freed while the
/// kernel could still write them. A duplicate of the socket stands in for that reference;
/// when the buffers go back, the epoll must watch nothing.
#[test]
fn regression_the_interrupt_fd_no_longer_reaches_the_socket_when_buffers_go_back() {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    let umem = Umem::new("zcfake0", POOL).unwrap();
    let (_peer, sock) = UnixStream::pair().unwrap();
    let sock = OwnedFd::from(sock);
    let elsewhere = sock.try_clone().unwrap();
    let mut q = Queue::fake(&umem);
    let shared = Arc::get_mut(&mut q.shared).unwrap();
    let wake = super::sys::readiness(&sock).unwrap();
    let ep = wake.as_raw_fd();
    let watched = move || {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{ep}")).unwrap();
        info.lines().filter(|l| l.starts_with("tfd:")).count()
    };
    assert_eq!(watched(), 1);
    (shared.sock, shared.wake) = (Some(sock), Some(wake));
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    shared.before_release = Hook(Some(Box::new(move || {
        *s.lock().unwrap() = Some(watched());
    })));
    let mut port = XdpPort::with_queue("zcfake0", q, None, &Config::default()).unwrap();
    assert!(!port.enable_rx_interrupt().unwrap());
    drop(port);
    assert_eq!(
        *seen.lock().unwrap(),
        Some(0),
        "the socket is off the epoll"
    );
    drop(elsewhere);
}

#[test]
fn a_buffer_being_sent_is_refused_on_the_rx_ring() {
    let (mut port, mut k) = (port(), Kernel::default());
    let mut tx = vec![port.pool().alloc_copy(&frame(3, 80)).unwrap()];
    assert_eq!(port.tx_batch(&mut tx), 1);
    let (addr, _) = port.tx.rings.tx.desc(0);
    // The kernel claims to have received into the buffer it is sending: as a chunk, and
    // at the frame's own address.
    let chunk = addr - zcnic_hugepages::HEADROOM as u64;
    k.post_rx(&port, chunk | HEADROOM << OFFSET_SHIFT, 60);
    k.post_rx(&port, addr, 60);
    assert!(rx_all(&mut port).is_empty());
    assert_eq!(bad(&port), 2);
    assert_eq!(port.tx.in_flight(), 1, "still the kernel's to send");
    assert_eq!(k.send_all(&mut port)[0].1, frame(3, 80));
    assert!(port.flush());
}

#[test]
fn recycling_hands_sent_packets_back_and_refills_from_the_spares() {
    let (mut port, mut k) = (port(), Kernel::default());
    let pool = port.pool().clone();
    let other = Mempool::new(&FakeDma::new(), 4).unwrap();
    let mut tx: Vec<_> = (0..3)
        .map(|i| pool.alloc_copy(&frame(i, 90)).unwrap())
        .collect();
    let ptrs: Vec<_> = tx.iter().map(|p| p.data().as_ptr()).collect();
    let mut done = Vec::with_capacity(8);
    assert_eq!(port.tx_batch_recycle(&mut tx, &mut done), 3);
    k.send_all(&mut port);
    assert_eq!(port.tx_batch_recycle(&mut tx, &mut done), 0);
    // The very packets, as they were sent.
    assert_eq!(
        done.iter().map(|p| p.data().as_ptr()).collect::<Vec<_>>(),
        ptrs
    );
    assert_eq!(done[1].data(), frame(1, 90));
    // Received frames are refilled from the back of the spares while they are ours.
    let free = pool.free_count();
    let chunk = k.receive(&mut port, &frame(7, 64));
    let mut spare = vec![other.alloc().unwrap()];
    spare.append(&mut done);
    let mut got = Vec::with_capacity(4);
    assert_eq!(port.rx_batch_recycle(&mut got, 4, &mut spare), 1);
    assert_eq!(got[0].data(), frame(7, 64));
    assert_eq!(
        spare.len(),
        3,
        "one taken, from the back, for the chunk received"
    );
    assert!(!spare[0].is_from(&pool), "the foreign one is where it was");
    assert_eq!(pool.free_count(), free, "nothing came from the pool");
    // The fill ring's new entry is the buffer that was sent last.
    let refilled = port.rx.rings.fill.addr(port.rx.rings.held.len() as u32);
    let base = port.rx.shared.umem.region().0;
    let sent_last = ptrs[2] as usize - base - zcnic_hugepages::HEADROOM;
    assert_eq!((refilled as usize, refilled == chunk), (sent_last, false));
    assert!(port.rx.rings.held.get_mut(refilled).is_some());
}
