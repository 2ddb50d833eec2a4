//! Descriptor layouts and ring arithmetic for zcnic's NIC drivers.
//!
//! Everything here is plain data and pure logic: no I/O, no `unsafe`. The drivers in the
//! `zcnic` crate copy descriptors in and out of DMA memory with volatile accesses and use
//! these types to decide what a descriptor means. [`rss`] computes receive-side scaling's
//! Toeplitz hash and redirection in software.
//!
//! ```
//! use zcnic_descriptors::RingIndex;
//! let ring = RingIndex::new(512).unwrap();
//! // Free-running counters wrap at 2^32; slots wrap at the ring size.
//! assert_eq!(ring.slot(513), 1);
//! assert_eq!(ring.in_flight(5, u32::MAX - 2), 8);
//! ```

pub mod e1000;
pub mod igb;
mod ring;
pub mod rss;
pub mod virtio;

pub use ring::{RingIndex, RingSizeError};

/// Proptest's settings for this crate's property tests: the default number of cases
/// natively; under Miri, which interprets a case thousands of times slower, a few (the
/// native runs cover the space, Miri checks each operation's memory accesses), and no
/// failure file, since Miri's isolation has no working directory to put it in.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    use proptest::test_runner::Config;
    if cfg!(miri) {
        Config {
            cases: 1,
            failure_persistence: None,
            ..Config::default()
        }
    } else {
        Config::default()
    }
}
