//! Receive-side accounting for pktgen streams: received, lost, duplicated and reordered
//! frames by sequence number, and the latency distribution.

use hdrhistogram::Histogram;

/// Sequence numbers above this are counted as invalid instead of being tracked (the
/// bitmap would need 512 MiB).
pub const MAX_TRACKED: u64 = 1 << 32;

/// Tracks which sequence numbers arrived.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    seen: Vec<u64>,
    /// Frames received, duplicates included.
    pub received: u64,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Frames whose sequence number had arrived before.
    pub duplicates: u64,
    /// Frames that arrived after a higher sequence number (late, not duplicates).
    pub reordered: u64,
    /// Sequence numbers beyond [`MAX_TRACKED`].
    pub invalid: u64,
    max_seq: Option<u64>,
}

impl SeqTracker {
    /// A tracker expecting about `expected` frames (pre-sizes the bitmap).
    pub fn with_expected(expected: u64) -> Self {
        Self {
            seen: Vec::with_capacity((expected.min(MAX_TRACKED) / 64 + 1) as usize),
            ..Self::default()
        }
    }

    /// Counts one received frame.
    #[inline]
    pub fn record(&mut self, seq: u64) {
        self.received += 1;
        if seq >= MAX_TRACKED {
            self.invalid += 1;
            return;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        match self.max_seq {
            Some(m) if seq < m => self.reordered += 1,
            _ => self.max_seq = Some(seq),
        }
    }

    /// Frames of `sent` (sequence 0..sent) that never arrived.
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.unique)
    }
}

/// Latency distribution in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Samples.
    pub count: u64,
}

impl Latency {
    /// An empty distribution from 1 ns to 60 s, 3 significant digits.
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Adds one sample (clamped into the histogram's range).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let _ = self.hist.record(ns.clamp(1, 60_000_000_000));
    }

    /// The percentiles, or `None` without samples.
    pub fn percentiles(&self) -> Option<Percentiles> {
        (!self.hist.is_empty()).then(|| Percentiles {
            p50: self.hist.value_at_quantile(0.50),
            p90: self.hist.value_at_quantile(0.90),
            p99: self.hist.value_at_quantile(0.99),
            p999: self.hist.value_at_quantile(0.999),
            max: self.hist.max(),
            count: self.hist.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::default();
        for &s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn in_order_no_loss() {
        let t = run(&(0..1000).collect::<Vec<_>>());
        assert_eq!(
            (t.unique, t.duplicates, t.reordered, t.lost(1000)),
            (1000, 0, 0, 0)
        );
    }

    #[test]
    fn every_hundredth_lost() {
        let seqs: Vec<u64> = (0..20_000).filter(|s| s % 100 != 99).collect();
        let t = run(&seqs);
        assert_eq!(t.lost(20_000), 200);
        assert_eq!((t.duplicates, t.reordered), (0, 0));
    }

    #[test]
    fn duplicates_and_reordering_are_told_apart() {
        let t = run(&[0, 1, 3, 2, 2, 5, 4, 4, 6, u64::MAX]);
        assert_eq!(t.received, 10);
        assert_eq!(t.unique, 7);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.reordered, 2, "2 after 3, 4 after 5");
        assert_eq!(t.invalid, 1);
        assert_eq!(t.lost(7), 0);
        assert_eq!(t.lost(10), 3);
    }

    #[test]
    fn latency_percentiles() {
        let mut l = Latency::new();
        assert!(l.percentiles().is_none());
        for ns in 1..=1000u64 {
            l.record(ns * 1000);
        }
        let p = l.percentiles().unwrap();
        assert!((495_000..=505_000).contains(&p.p50), "{p:?}");
        assert!((985_000..=995_000).contains(&p.p99), "{p:?}");
        assert!(p.max >= 999_000 && p.count == 1000);
    }
}
