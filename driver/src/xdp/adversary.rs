//! The kernel as an adversary: tests that play the kernel's side of the four rings on
//! plain memory ([`Queue::fake`](super::init::Xsk::fake)) and write what a buggy or hostile
//! kernel might — producers run past the ring, consumers that move backwards, addresses
//! outside the UMEM or of frames the kernel does not hold, a frame returned twice, a
//! length past its frame. Each is counted and refused; none panics, none reaches a
//! `Packet`, and good entries around a bad one still go through.

use super::init::{Queue, RX_FRAMES, TX_BASE};
use super::ring::FRAME;
use super::XdpPort;
use crate::{Config, Nic};

/// XDP_PACKET_HEADROOM: where the kernel puts a received frame in its UMEM frame.
const HEADROOM: u64 = 256;

/// The kernel's side: its own indices of the four rings.
#[derive(Default)]
struct Kernel {
    fill_cons: u32,
    rx_prod: u32,
    tx_cons: u32,
    comp_prod: u32,
}

impl Kernel {
    /// Takes the next fill entry's frame, without receiving into it yet.
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

    /// Receives `data` into the next fill frame.
    fn receive(&mut self, port: &mut XdpPort, data: &[u8]) {
        let frame = self.take_fill(port);
        assert!(port.rx.umem.write((frame + HEADROOM) as usize, data));
        self.post_rx(port, frame + HEADROOM, data.len() as u32);
    }

    /// Sends every queued TX descriptor: their bytes, each frame completed.
    fn send_all(&mut self, port: &XdpPort) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while self.tx_cons != port.tx.rings.tx.producer() {
            let (addr, len) = port.tx.rings.tx.desc(self.tx_cons);
            let mut b = vec![0u8; len as usize];
            assert!(port.tx.umem.read((addr - TX_BASE) as usize, &mut b));
            out.push(b);
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
    XdpPort::with_queue("zcfake0", Queue::fake(), None, &Config::default()).unwrap()
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
fn good_frames_go_both_ways_byte_for_byte() {
    let (mut port, mut k) = (port(), Kernel::default());
    for i in 0..3 {
        k.receive(&mut port, &frame(i, 60 + usize::from(i) * 700));
    }
    let got = rx_all(&mut port);
    assert_eq!(
        got,
        (0..3)
            .map(|i| frame(i, 60 + usize::from(i) * 700))
            .collect::<Vec<_>>()
    );
    // The frames went back to the fill ring.
    assert_eq!(port.rx.rings.fill.producer(), RX_FRAMES + 3);
    let mut tx: Vec<_> = (0..4)
        .map(|i| port.pool().alloc_copy(&frame(i, 100)).unwrap())
        .collect();
    assert_eq!(port.tx_batch(&mut tx), 4);
    assert_eq!(
        k.send_all(&port),
        (0..4).map(|i| frame(i, 100)).collect::<Vec<_>>()
    );
    assert!(port.flush());
    assert_eq!(port.stats().hw("bad_kernel_index"), Some(0));
}

#[test]
fn an_rx_producer_past_the_ring_is_refused() {
    let (mut port, mut k) = (port(), Kernel::default());
    k.receive(&mut port, &frame(1, 60));
    port.rx.rings.rx.set_producer(port.rx.rings.rx.size + 5);
    assert!(rx_all(&mut port).is_empty());
    assert_eq!(
        port.rx
            .shared
            .bad
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Back in order, the frame arrives.
    port.rx.rings.rx.set_producer(1);
    assert_eq!(rx_all(&mut port), vec![frame(1, 60)]);
}

#[test]
fn bad_rx_descriptors_are_dropped_and_good_ones_around_them_delivered() {
    let (mut port, mut k) = (port(), Kernel::default());
    k.receive(&mut port, &frame(1, 60));
    // Outside the UMEM.
    k.post_rx(&port, u64::MAX - 10, 60);
    // A TX frame the kernel never had for receiving.
    k.post_rx(&port, u64::from(RX_FRAMES) * FRAME + HEADROOM, 60);
    // A frame received twice.
    let twice = k.take_fill(&port);
    k.post_rx(&port, twice + HEADROOM, 60);
    k.post_rx(&port, twice + HEADROOM, 60);
    // A length that runs past its frame, and a length of 0.
    let long = k.take_fill(&port);
    k.post_rx(&port, long + HEADROOM, (FRAME - HEADROOM + 1) as u32);
    let empty = k.take_fill(&port);
    k.post_rx(&port, empty + HEADROOM, 0);
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
    assert_eq!(st.rx_errors, 5);
    assert_eq!(st.hw("bad_kernel_index"), Some(5));
    // The frames whose address was good went back to the fill ring, once each: the
    // twice-received one, the long one and the empty one, and the two good ones.
    assert_eq!(port.rx.rings.fill.producer(), RX_FRAMES + 5);
}

#[test]
fn bad_completions_and_a_backwards_tx_consumer_are_refused() {
    let (mut port, mut k) = (port(), Kernel::default());
    // Completions of frames never sent, or outside the UMEM.
    k.complete(&port, 0);
    k.complete(&port, u64::from(RX_FRAMES) * FRAME);
    k.complete(&port, 7);
    let mut tx = vec![port.pool().alloc_copy(&frame(9, 60)).unwrap()];
    assert_eq!(port.tx_batch(&mut tx), 1);
    assert_eq!(
        port.rx
            .shared
            .bad
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(
        port.tx.in_flight(),
        1,
        "the real frame is still the kernel's"
    );
    // The kernel's TX consumer jumps past our producer: nothing more is posted.
    port.tx.rings.tx.set_consumer(5);
    let mut tx = vec![port.pool().alloc_copy(&frame(8, 60)).unwrap()];
    assert_eq!(port.tx_batch(&mut tx), 0);
    assert_eq!(tx.len(), 1, "the frame stays with the caller");
    assert_eq!(
        port.rx
            .shared
            .bad
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    port.tx.rings.tx.set_consumer(0);
    assert_eq!(k.send_all(&port), vec![frame(9, 60)]);
    assert!(port.flush(), "the real frame completed");
    // Once the consumer is sane again, sending resumes.
    let mut tx = vec![port.pool().alloc_copy(&frame(7, 60)).unwrap()];
    assert_eq!(port.tx_batch(&mut tx), 1);
    assert_eq!(k.send_all(&port), vec![frame(7, 60)]);
    assert!(port.flush());
    // A completion producer past the ring.
    port.tx
        .rings
        .comp
        .set_producer(k.comp_prod + port.tx.rings.comp.size + 1);
    assert!(port.flush());
    assert_eq!(
        port.rx
            .shared
            .bad
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
}
