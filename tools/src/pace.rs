//! Rate pacing: how many frames may go now, from a clock and what was already sent.
//!
//! Pure arithmetic on nanoseconds so tests can drive it with a fake clock. The sender asks
//! before each burst; the allowance is what the rate permits up to `now` minus what was
//! sent, capped at one burst, so a late loop catches up in bursts instead of all at once.

/// Paces a sender at `rate` frames per second from time `start_ns`.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    rate: f64,
    start_ns: u64,
}

impl Pacer {
    /// A pacer for `rate` frames per second (positive) starting at `start_ns`.
    pub fn new(rate: f64, start_ns: u64) -> Self {
        Self { rate, start_ns }
    }

    /// Frames allowed at `now_ns` given `sent` so far, at most `burst`.
    #[inline]
    pub fn allowance(&self, now_ns: u64, sent: u64, burst: usize) -> usize {
        let elapsed = now_ns.saturating_sub(self.start_ns) as f64;
        // +1: the first frame goes at time 0, as a stopwatch-started generator would.
        let due = (self.rate * elapsed / 1e9) as u64 + 1;
        (due.saturating_sub(sent)).min(burst as u64) as usize
    }

    /// When the next frame is due, for a sender that wants to sleep instead of spin.
    pub fn next_due_ns(&self, sent: u64) -> u64 {
        self.start_ns + (sent as f64 * 1e9 / self.rate) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs a sender loop on a fake clock that advances by `step_ns` per iteration for
    /// `secs`; returns frames sent.
    fn simulate(rate: f64, burst: usize, step_ns: u64, secs: f64) -> u64 {
        let p = Pacer::new(rate, 1_000);
        let end = 1_000 + (secs * 1e9) as u64;
        let (mut now, mut sent) = (1_000u64, 0u64);
        while now < end {
            sent += p.allowance(now, sent, burst) as u64;
            now += step_ns;
        }
        sent
    }

    #[test]
    fn exact_on_a_fine_clock() {
        assert_eq!(simulate(1000.0, 1, 1_000, 1.0), 1000);
        assert_eq!(simulate(20_000.0, 32, 10_000, 5.0), 100_000);
    }

    proptest! {
        /// Rates 1k..10M, bursts 1..64, loop turns from 5% to 100% of a burst's worth of
        /// time: the count over the run is within 1% of rate × time.
        #[test]
        fn within_one_percent(rate in 1e3f64..1e7, burst in 1usize..=64, frac in 0.05f64..=1.0) {
            let step = ((burst as f64 * 1e9 / rate) * frac).max(1.0) as u64;
            let secs = 1e5 * step as f64 / 1e9; // 100 000 loop turns
            let want = rate * secs;
            let got = simulate(rate, burst, step, secs) as f64;
            prop_assert!((got - want).abs() <= want * 0.01 + 1.0, "rate {rate} burst {burst} step {step}: {got} vs {want}");
        }
    }

    #[test]
    fn a_late_loop_catches_up_one_burst_at_a_time() {
        let p = Pacer::new(1e6, 0);
        assert_eq!(p.allowance(1_000_000, 0, 32), 32);
        assert_eq!(p.allowance(0, 0, 32), 1);
        assert_eq!(p.next_due_ns(1000), 1_000_000);
    }
}
