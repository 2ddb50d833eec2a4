//! The datapath allocates nothing: a counting global allocator watches the driver's thread
//! while it runs `tx_batch` and `rx_batch` bursts against the fake e1000.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};
use zcnic::e1000::E1000;
use zcnic::{Config, Nic, Packet};
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000, Inject};

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

#[test]
fn e1000_tx_and_rx_bursts_allocate_nothing() {
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
    let pool = nic.pool().clone();
    let mut tx: Vec<Packet> = Vec::with_capacity(32);
    let mut rx: Vec<Packet> = Vec::with_capacity(64);
    for _ in 0..4000 {
        dev.inject(Inject::Frame(vec![0xab; 60]));
    }
    let ((sent, received), allocations) = measured(|| {
        let (mut sent, mut received) = (0usize, 0usize);
        let end = Instant::now() + Duration::from_secs(20);
        while (sent < 20_000 || received < 4000) && Instant::now() < end {
            if sent < 20_000 {
                let have = tx.len();
                pool.alloc_batch(&mut tx, 32 - have);
                for p in &mut tx[have..] {
                    let _ = p.set_len(60);
                    p.data_mut()[..6].fill(0xff);
                }
                sent += nic.tx_batch(&mut tx);
            }
            received += nic.rx_batch(&mut rx, 64);
            rx.clear();
        }
        (sent, received)
    });
    assert!(
        sent >= 20_000 && received == 4000,
        "the loop did its work: {sent} {received}"
    );
    assert_eq!(allocations, 0, "heap allocations on the datapath");
}
