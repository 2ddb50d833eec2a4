//! Running the adversarial state machines: how many cases, and on how many threads.
//!
//! The short form runs in CI; `ZCNIC_LONG=1` (set by `cargo xtask test --long`) runs the
//! long form. The long form of a breadth test spreads its cases over threads, each with its
//! own random seed: most of an e1000 case is the 1 ms the SDM asks for after a reset, so
//! threads overlap those waits even on a 2-core machine.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

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
/// spread over [`THREADS`] threads in the long form. Panics with the first (shrunk) failure.
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
