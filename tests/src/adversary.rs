//! Running the adversarial state machines: how many cases, and on how many threads.
//!
//! The short form runs in CI; `ZCNIC_LONG=1` (set by `cargo xtask test --long`) runs the
//! long form. The long form of a breadth test spreads its cases over threads, each with its
//! own random seed: most of an e1000 case is the 1 ms the SDM asks for after a reset, so
//! threads overlap those waits even on a 2-core machine.

use proptest::prelude::{prop_assert, prop_assert_eq};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::collections::HashSet;
use std::sync::Arc;
use zcnic::{Mempool, Nic, Packet, Segment, Stats, UserRegion};

/// Whether the long form runs (`ZCNIC_LONG=1`, set by `cargo xtask test --long`).
pub fn long() -> bool {
    std::env::var("ZCNIC_LONG").is_ok_and(|v| v == "1")
}

/// A proptest configuration of `short` cases, or `long_cases` in the long form.
pub fn config(short: u32, long_cases: u32) -> Config {
    Config {
        cases: if long() { long_cases } else { short },
        // A failure is turned into a `regression_*` test by hand, not a file.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Threads for the long form of a breadth test.
const THREADS: u32 = 8;

/// Runs `test` on `short` cases from the strategy `strategy()` builds, or on `long_cases`
/// spread over `THREADS` threads in the long form. Panics with the first (shrunk) failure.
pub fn run_cases<S: Strategy>(
    short: u32,
    long_cases: u32,
    strategy: impl Fn() -> S + Sync,
    test: impl Fn(S::Value) -> Result<(), TestCaseError> + Sync,
) {
    let threads = if long() { THREADS } else { 1 };
    let per_thread = if long() {
        long_cases.div_ceil(threads)
    } else {
        short
    };
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut runner = TestRunner::new(config(per_thread, per_thread));
                    runner.run(&strategy(), &test).err().map(|e| e.to_string())
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().expect("a case runner panicked"))
            .collect()
    });
    if let Some(first) = failures.first() {
        panic!("{first}");
    }
}

/// The application's side of an adversarial run: the frames it holds, and the checks that
/// no buffer is handed to it twice. Shared by the e1000, igb and virtio state machines.
#[derive(Debug, Default)]
pub struct Held {
    pkts: Vec<Packet>,
    iovas: HashSet<u64>,
}

impl Held {
    /// The application takes `p` from `what`: none of its buffers (a frame of several is
    /// a chain) may be one it holds yet.
    pub fn take(&mut self, p: Packet, what: &str) -> Result<(), TestCaseError> {
        for s in p.segments() {
            prop_assert!(
                self.iovas.insert(s.iova()),
                "{what}: buffer {:#x} handed out while the application still holds it",
                s.iova()
            );
        }
        self.pkts.push(p);
        Ok(())
    }

    fn forget(&mut self, p: &Packet) {
        for s in p.segments() {
            self.iovas.remove(&s.iova());
        }
    }

    /// How many frames the application holds.
    pub fn len(&self) -> usize {
        self.pkts.len()
    }

    /// Whether the application holds no frame.
    pub fn is_empty(&self) -> bool {
        self.pkts.is_empty()
    }

    /// Whether the application holds the buffer at `iova`.
    pub fn holds(&self, iova: u64) -> bool {
        self.iovas.contains(&iova)
    }

    /// Gives up to `n` held frames, the last taken first, for `rx_batch_recycle`.
    pub fn give(&mut self, n: usize) -> Vec<Packet> {
        let spare = self
            .pkts
            .split_off(self.pkts.len() - n.min(self.pkts.len()));
        for p in &spare {
            self.forget(p);
        }
        spare
    }

    /// Drops every held frame (`all`) or the one at `i` modulo the count.
    pub fn release(&mut self, i: usize, all: bool) {
        if all {
            self.clear();
        } else if !self.pkts.is_empty() {
            let p = self.pkts.swap_remove(i % self.pkts.len());
            self.forget(&p);
        }
    }

    /// Drops every held frame.
    pub fn clear(&mut self) {
        self.pkts.clear();
        self.iovas.clear();
    }

    /// Builds a transmit batch of `frames` (length, optional payload length from
    /// `payload`) from `pool`, as far as the pool goes; no buffer may be one held.
    pub fn batch(
        &self,
        pool: &Arc<Mempool>,
        payload: &Arc<UserRegion>,
        frames: &[(u16, Option<u16>)],
    ) -> Result<Vec<Packet>, TestCaseError> {
        let mut batch = Vec::with_capacity(frames.len());
        for &(len, plen) in frames {
            let Some(mut p) = pool.alloc() else {
                break;
            };
            prop_assert!(
                !self.iovas.contains(&p.iova()),
                "the pool gave out {:#x}, which the application holds",
                p.iova()
            );
            p.set_len(len.into()).unwrap();
            p.data_mut().fill(0xa5);
            if let Some(plen) = plen {
                p.attach(Segment::new(payload, 0, plen.into()).unwrap());
            }
            batch.push(p);
        }
        Ok(batch)
    }
}

/// One `tx_batch` of `batch` on `nic`: it takes a prefix and leaves the rest in `batch`.
/// Returns how many it took.
pub fn send(nic: &mut dyn Nic, batch: &mut Vec<Packet>) -> Result<usize, TestCaseError> {
    send_with(batch, |b| nic.tx_batch(b))
}

/// [`send`] through any `tx_batch`: a queue's, for one.
pub fn send_with(
    batch: &mut Vec<Packet>,
    tx_batch: impl FnOnce(&mut Vec<Packet>) -> usize,
) -> Result<usize, TestCaseError> {
    let before = batch.len();
    let n = tx_batch(batch);
    prop_assert!(n <= before, "took {n} of {before}");
    prop_assert_eq!(
        batch.len(),
        before - n,
        "frames taken stay out of the batch"
    );
    Ok(n)
}

/// Every counter, the driver's and the device's, is at least what it was in `last`.
pub fn counters_grow(last: &Stats, now: &Stats) -> Result<(), TestCaseError> {
    fn all(s: &Stats) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        s.software().into_iter().chain(s.hw.iter().copied())
    }
    for ((name, was), (_, is)) in all(last).zip(all(now)) {
        prop_assert!(is >= was, "{name} went back from {was} to {is}");
    }
    Ok(())
}
