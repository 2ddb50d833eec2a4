//! The datapath allocates nothing: a counting global allocator watches the driver's thread
//! while it runs `tx_batch` and `rx_batch` bursts, and the recycling `tx_batch_recycle` and
//! `rx_batch_recycle`, against the fake e1000, the fake igb and the fake virtio-net (split
//! and packed); and the igb's transmit off the fast path (offload requests, chains).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};
use zcnic::e1000::E1000;
use zcnic::virtio::{negotiate, QueueKind, VirtioNet};
use zcnic::{Config, L4Csum, Nic, Packet};
use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000, Inject};
use zcnic_tests::fake_igb::{self, FakeIgb};
use zcnic_tests::fake_virtio::{self, FakeVirtio};
use zcnic_tests::offload_frames::frame;

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator; only counts, on this thread,
// through const thread-locals that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MEASURING.with(Cell::get) {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if MEASURING.with(Cell::get) {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn measured<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|c| c.set(0));
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, ALLOCATIONS.with(Cell::get))
}

/// Frames each run sends and receives.
const SEND: usize = 20_000;
const RECEIVE: usize = 4000;

/// Sends [`SEND`] 60-byte frames and receives the [`RECEIVE`] injected ones in bursts,
/// through the plain or the recycling calls, and checks that the loop did its work and the
/// calls allocated nothing. Every vector the loop uses is allocated before it, with room
/// to spare, so any allocation counted is the driver's.
fn assert_bursts_allocate_nothing(nic: &mut dyn Nic, recycle: bool, what: &str) {
    let pool = nic.pool().clone();
    let mut tx: Vec<Packet> = Vec::with_capacity(32);
    let mut rx: Vec<Packet> = Vec::with_capacity(64);
    // Sent frames handed back (recycling TX) and received ones handed back as refills.
    let mut done: Vec<Packet> = Vec::with_capacity(4096);
    let mut spare: Vec<Packet> = Vec::with_capacity(4096);
    let ((sent, received, reused), allocations) = measured(|| {
        let (mut sent, mut received, mut reused) = (0usize, 0usize, 0usize);
        let end = Instant::now() + Duration::from_secs(20);
        while (sent < SEND || received < RECEIVE) && Instant::now() < end {
            if sent < SEND {
                let reuse = (32 - tx.len()).min(done.len());
                tx.extend(done.drain(done.len() - reuse..));
                reused += reuse;
                let have = tx.len();
                pool.alloc_batch(&mut tx, 32 - have);
                for p in &mut tx[have..] {
                    let _ = p.set_len(60);
                    p.data_mut()[..6].fill(0xff);
                }
                sent += if recycle {
                    nic.tx_batch_recycle(&mut tx, &mut done)
                } else {
                    nic.tx_batch(&mut tx)
                };
            }
            if recycle {
                received += nic.rx_batch_recycle(&mut rx, 64, &mut spare);
                spare.append(&mut rx);
            } else {
                received += nic.rx_batch(&mut rx, 64);
                rx.clear();
            }
        }
        (sent, received, reused)
    });
    assert!(
        sent >= SEND && received == RECEIVE,
        "{what}: the loop did its work: sent {sent}, received {received}"
    );
    assert_eq!(
        reused > 0,
        recycle,
        "{what}: sent frames came back to be sent again ({reused}) only when recycling"
    );
    assert_eq!(allocations, 0, "{what}: heap allocations on the datapath");
}

fn e1000_bursts(recycle: bool) {
    let dev = FakeE1000::start(Behaviour::default());
    let cfg = Config {
        pool: 2048,
        link_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let mut nic = E1000::new(
        dev.bar.clone(),
        &dev.dma,
        "0000:00:02.0".parse().unwrap(),
        &cfg,
    )
    .expect("driver comes up");
    for _ in 0..RECEIVE {
        dev.inject(Inject::Frame(vec![0xab; 60]));
    }
    assert_bursts_allocate_nothing(&mut nic, recycle, "e1000");
}

fn igb_bursts(recycle: bool) {
    let dev = FakeIgb::start();
    let cfg = zcnic::igb::Config {
        pool: 2048,
        link_timeout: Duration::from_secs(2),
        // The fake's thread finishes the reset; a loaded machine may keep it waiting.
        reset_timeout: Duration::from_secs(5),
        ..zcnic::igb::Config::default()
    };
    let addr = "0000:00:02.0".parse().unwrap();
    let mut nic =
        zcnic::igb::Igb::new(dev.bar.clone(), &dev.dma, addr, &cfg).expect("driver comes up");
    for _ in 0..RECEIVE {
        dev.inject(fake_igb::Inject::Frame(vec![0xab; 60]));
    }
    assert_bursts_allocate_nothing(&mut nic, recycle, "igb");
}

fn virtio_bursts<Q: QueueKind>(recycle: bool) {
    let dev = FakeVirtio::start(fake_virtio::Behaviour {
        packed: Q::PACKED,
        ..fake_virtio::Behaviour::default()
    });
    let cfg = Config {
        pool: 2048,
        ..Config::default()
    };
    let addr = "0000:00:03.0".parse().unwrap();
    let t = dev.transport();
    let features = negotiate(&t, &addr, &cfg, Q::PACKED).expect("features negotiated");
    let mut nic = VirtioNet::<Q>::new(Box::new(t), features, &dev.dma, addr, &cfg)
        .expect("fake virtio-net comes up");
    for _ in 0..RECEIVE {
        dev.inject(fake_virtio::Inject::Frame(vec![0xab; 60]));
    }
    let what = if Q::PACKED {
        "virtio packed"
    } else {
        "virtio split"
    };
    assert_bursts_allocate_nothing(&mut nic, recycle, what);
}

#[test]
fn e1000_tx_and_rx_bursts_allocate_nothing() {
    e1000_bursts(false);
}

#[test]
fn e1000_recycling_bursts_allocate_nothing() {
    e1000_bursts(true);
}

#[test]
fn virtio_split_tx_and_rx_bursts_allocate_nothing() {
    virtio_bursts::<SplitQueue<zcnic::virtio::DmaMem>>(false);
}

#[test]
fn virtio_split_recycling_bursts_allocate_nothing() {
    virtio_bursts::<SplitQueue<zcnic::virtio::DmaMem>>(true);
}

#[test]
fn virtio_packed_tx_and_rx_bursts_allocate_nothing() {
    virtio_bursts::<PackedQueue<zcnic::virtio::DmaMem>>(false);
}

#[test]
fn virtio_packed_recycling_bursts_allocate_nothing() {
    virtio_bursts::<PackedQueue<zcnic::virtio::DmaMem>>(true);
}

#[test]
fn igb_tx_and_rx_bursts_allocate_nothing() {
    igb_bursts(false);
}

#[test]
fn igb_recycling_bursts_allocate_nothing() {
    igb_bursts(true);
}

/// igb transmit off the fast path: one-buffer frames and 4000-byte chains asking for
/// checksum offloads (a context descriptor each) and tag insertion, mixed with plain
/// frames on a 64-slot ring, so chains set frames aside and hand them back: nothing on
/// the heap.
#[test]
fn igb_offloaded_and_chained_bursts_allocate_nothing() {
    const FRAMES: usize = 3000;
    let dev = FakeIgb::start();
    let cfg = zcnic::igb::Config {
        pool: 2048,
        tx_ring: 64,
        vlan_strip: true,
        link_timeout: Duration::from_secs(2),
        reset_timeout: Duration::from_secs(5),
        ..zcnic::igb::Config::default()
    };
    let addr = "0000:00:02.0".parse().unwrap();
    let mut nic =
        zcnic::igb::Igb::new(dev.bar.clone(), &dev.dma, addr, &cfg).expect("driver comes up");
    let caps = nic.offloads();
    let pool = nic.pool().clone();
    let (short, long) = (frame(L4Csum::Udp, 100, 1), frame(L4Csum::Tcp, 4000, 2));
    let req = |l4, vlan| zcnic_tests::offload_frames::request(l4, vlan);
    let mut tx: Vec<Packet> = Vec::with_capacity(16);
    let (sent, allocations) = measured(|| {
        let mut sent = 0;
        let end = Instant::now() + Duration::from_secs(20);
        while sent < FRAMES && Instant::now() < end {
            while tx.len() < 16 {
                let i = sent + tx.len();
                let (bytes, ask) = match i % 3 {
                    0 => (&short, Some(req(L4Csum::Udp, None))),
                    1 => (&long, Some(req(L4Csum::Tcp, Some(100)))),
                    _ => (&short, None),
                };
                let Some(mut p) = pool.alloc_copy(bytes) else {
                    break;
                };
                if let Some(r) = ask {
                    caps.request(&mut p, r).unwrap();
                }
                tx.push(p);
            }
            sent += nic.tx_batch(&mut tx);
        }
        sent
    });
    assert!(sent >= FRAMES, "sent {sent}");
    assert_eq!(allocations, 0, "heap allocations on the igb offload path");
    assert_eq!(dev.misuse.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Jumbo frames on virtio-net: 9000-byte chains sent (one descriptor chain each) and
/// received over mergeable buffers (a chain gathered per frame), nothing on the heap.
fn virtio_jumbo_bursts<Q: QueueKind>() {
    const FRAMES: usize = 400;
    let dev = FakeVirtio::start(fake_virtio::Behaviour {
        packed: Q::PACKED,
        mrg_rxbuf: true,
        ..fake_virtio::Behaviour::default()
    });
    let cfg = Config {
        pool: 2048,
        mtu: 9000,
        ..Config::default()
    };
    let addr = "0000:00:03.0".parse().unwrap();
    let t = dev.transport();
    let features = negotiate(&t, &addr, &cfg, Q::PACKED).expect("features negotiated");
    let mut nic = VirtioNet::<Q>::new(Box::new(t), features, &dev.dma, addr, &cfg)
        .expect("fake virtio-net comes up");
    let frame = vec![0xab; 9000];
    for _ in 0..FRAMES {
        dev.inject(fake_virtio::Inject::Frame(frame.clone()));
    }
    let pool = nic.pool().clone();
    let mut tx: Vec<Packet> = Vec::with_capacity(8);
    let mut rx: Vec<Packet> = Vec::with_capacity(64);
    let ((sent, received), allocations) = measured(|| {
        let (mut sent, mut received) = (0, 0);
        let end = Instant::now() + Duration::from_secs(20);
        while (sent < FRAMES || received < FRAMES) && Instant::now() < end {
            while sent < FRAMES && tx.len() < 8 {
                match pool.alloc_copy(&frame) {
                    Some(p) => tx.push(p),
                    None => break,
                }
            }
            sent += nic.tx_batch(&mut tx);
            received += nic.rx_batch(&mut rx, 64);
            assert!(rx.iter().all(|p| p.total_len() == 9000));
            rx.clear();
        }
        (sent, received)
    });
    assert!(
        sent >= FRAMES && received == FRAMES,
        "sent {sent}, received {received}"
    );
    assert_eq!(allocations, 0, "heap allocations on the jumbo datapath");
}

#[test]
fn virtio_split_jumbo_bursts_allocate_nothing() {
    virtio_jumbo_bursts::<SplitQueue<zcnic::virtio::DmaMem>>();
}

#[test]
fn virtio_packed_jumbo_bursts_allocate_nothing() {
    virtio_jumbo_bursts::<PackedQueue<zcnic::virtio::DmaMem>>();
}
