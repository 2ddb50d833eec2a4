//! Rate pacing: how many frames may go now, from a clock and what was already sent.
//!
//! Pure arithmetic on nanoseconds so tests can drive it with a fake clock. The sender asks
//! before each burst with the frames it has generated so far; the allowance is what the
//! schedule has made due by `now` beyond those, capped at one burst, so a late loop
//! catches up in bursts instead of all at once. Three schedules ([`Pacing`]):
//!
//! - `burst`: frame k is due at k / rate; whatever is due goes together, up to a burst
//!   (fewest doorbells, the rate exact over any second);
//! - `smooth`: the same times, but one frame per call, so frames leave evenly spaced as far
//!   as the loop keeps up;
//! - `poisson`: gaps drawn from the exponential distribution of mean 1 / rate (a Poisson
//!   arrival process, as traffic from many independent sources looks), from a seed: the
//!   same seed, the same gaps.

/// How frames are spread in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    Burst,
    Smooth,
    /// Exponential gaps from this seed.
    Poisson(u64),
}

impl Pacing {
    /// Parses `--pacing` (`burst`, `smooth`, `poisson`), with the seed for poisson.
    pub fn parse(s: &str, seed: u64) -> Result<Self, String> {
        match s {
            "burst" => Ok(Pacing::Burst),
            "smooth" => Ok(Pacing::Smooth),
            "poisson" => Ok(Pacing::Poisson(seed)),
            _ => Err(format!("--pacing {s}: give burst, smooth or poisson")),
        }
    }
}

/// Silences in a paced stream (`pktgen --gap FRAMES:MS`): a stretch of `every` frames'
/// time at the rate, then none for `pause_ns`, then on. What wakes a receiver that sleeps
/// when idle, over and over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Frames per stretch between two silences (> 0).
    pub every: u64,
    /// Length of each silence.
    pub pause_ns: u64,
}

impl Gap {
    /// Parses `FRAMES:MS`, e.g. `1000:100`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("--gap {s}: give FRAMES:MS, e.g. 1000:100 (100 ms of silence after every 1000 frames)")
        };
        let (n, ms) = s.split_once(':').ok_or_else(bad)?;
        let every: u64 = n.parse().map_err(|_| bad())?;
        let ms: f64 = ms.parse().map_err(|_| bad())?;
        if every == 0 || !(ms > 0.0 && ms.is_finite()) {
            return Err(bad());
        }
        Ok(Self {
            every,
            pause_ns: (ms * 1e6) as u64,
        })
    }
}

/// Paces a sender at `rate` frames per second from time `start_ns`.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    rate: f64,
    start_ns: u64,
    pacing: Pacing,
    gap: Option<Gap>,
    /// Poisson: frames scheduled so far (due by `due_ns`), and when the next one is due.
    scheduled: u64,
    due_ns: f64,
    rng: u64,
}

impl Pacer {
    /// A pacer for `rate` frames per second (positive) starting at `start_ns`, in bursts.
    pub fn new(rate: f64, start_ns: u64) -> Self {
        Self::with(rate, start_ns, Pacing::Burst)
    }

    /// A pacer of the given schedule.
    pub fn with(rate: f64, start_ns: u64, pacing: Pacing) -> Self {
        let seed = match pacing {
            Pacing::Poisson(s) => s,
            _ => 0,
        };
        Self {
            rate,
            start_ns,
            pacing,
            gap: None,
            scheduled: 0,
            // The first frame goes at the start, as a stopwatch-started generator's would.
            due_ns: start_ns as f64,
            rng: seed ^ 0x2545_f491_4f6c_dd1d | 1,
        }
    }

    /// This pacer with silences ([`Gap`]): its schedule runs on a clock that stops during
    /// each of them.
    pub fn with_gap(self, gap: Option<Gap>) -> Self {
        Self { gap, ..self }
    }

    /// Frames allowed at `now_ns` given `sent` (generated) so far, at most `burst`.
    #[inline]
    pub fn allowance(&mut self, now_ns: u64, sent: u64, burst: usize) -> usize {
        let now_ns = self.schedule_ns(now_ns);
        match self.pacing {
            Pacing::Burst => self.due_by(now_ns, sent, burst),
            Pacing::Smooth => self.due_by(now_ns, sent, burst.min(1)),
            Pacing::Poisson(_) => self.poisson(now_ns, sent, burst),
        }
    }

    /// The schedule's clock at `now_ns`: real time less the silences passed. In a silence
    /// it stands 1 ns before the next stretch, where the stretch's last frame is due and
    /// the next one not yet.
    #[inline]
    fn schedule_ns(&self, now_ns: u64) -> u64 {
        let Some(g) = self.gap else {
            return now_ns;
        };
        let stretch = ((g.every as f64 * 1e9 / self.rate) as u64).max(1);
        let elapsed = now_ns.saturating_sub(self.start_ns);
        let (k, into) = (
            elapsed / (stretch + g.pause_ns),
            elapsed % (stretch + g.pause_ns),
        );
        self.start_ns + k * stretch + into.min(stretch - 1)
    }

    #[inline]
    fn due_by(&self, now_ns: u64, sent: u64, burst: usize) -> usize {
        let elapsed = now_ns.saturating_sub(self.start_ns) as f64;
        // +1: the first frame goes at time 0.
        let due = (self.rate * elapsed / 1e9) as u64 + 1;
        (due.saturating_sub(sent)).min(burst as u64) as usize
    }

    /// Frames `sent..` whose exponential due times have come, at most `burst`: those
    /// scheduled before and not yet sent first, then new ones as their times come.
    fn poisson(&mut self, now_ns: u64, sent: u64, burst: usize) -> usize {
        let burst = burst as u64;
        let mut n = self.scheduled.saturating_sub(sent).min(burst);
        while n < burst && self.due_ns <= now_ns as f64 {
            self.scheduled += 1;
            self.due_ns += self.gap_ns();
            n += 1;
        }
        n as usize
    }

    /// An exponential gap of mean 1 / rate seconds, in ns: -ln(U) / rate with U uniform
    /// in (0, 1] from xorshift64*.
    fn gap_ns(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        -u.ln() * 1e9 / self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs a sender loop on a fake clock that advances by `step_ns` per iteration for
    /// `secs`; returns frames sent.
    fn simulate(rate: f64, burst: usize, step_ns: u64, secs: f64) -> u64 {
        let mut p = Pacer::new(rate, 1_000);
        let end = 1_000 + (secs * 1e9) as u64;
        let (mut now, mut sent) = (1_000u64, 0u64);
        while now < end {
            sent += p.allowance(now, sent, burst) as u64;
            now += step_ns;
        }
        sent
    }

    #[test]
    fn gaps_pause_after_every_n_frames() {
        // 1000 pps in stretches of 10 (10 ms), then 90 ms of nothing: 100 ms a period.
        let g = Gap::parse("10:90").unwrap();
        let mut p = Pacer::new(1000.0, 0).with_gap(Some(g));
        let mut due = |ms: u64| p.allowance(ms * 1_000_000, 0, usize::MAX);
        assert_eq!(due(0), 1);
        assert_eq!(due(9), 10);
        assert_eq!(due(10), 10, "the stretch is over");
        assert_eq!(due(50), 10, "silent in the gap");
        assert_eq!(due(99), 10);
        assert_eq!(due(100), 11, "the next stretch");
        assert_eq!(due(1000), 101);
        for bad in ["10", "0:5", "10:0", "10:x", "x:5"] {
            assert!(Gap::parse(bad).is_err(), "{bad}");
        }
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
        let mut p = Pacer::new(1e6, 0);
        assert_eq!(p.allowance(1_000_000, 0, 32), 32);
        assert_eq!(p.allowance(0, 0, 32), 1);
    }

    #[test]
    fn smooth_sends_one_at_a_time() {
        let mut p = Pacer::with(1e6, 0, Pacing::Smooth);
        assert_eq!(p.allowance(1_000_000, 0, 32), 1);
        assert_eq!(p.allowance(1_000_000, 999, 32), 1);
        assert_eq!(p.allowance(1_000_000, 1001, 32), 0);
    }

    /// Send times on a 100 ns fake clock: the gaps' mean and variance are those of the
    /// exponential distribution (1/rate and 1/rate²) within 5%, and none is lost when the
    /// sender takes fewer than allowed.
    #[test]
    fn poisson_gaps_have_the_exponential_mean_and_variance() {
        for (rate, seed) in [(10_000.0, 1), (200_000.0, 7), (1e6, 42)] {
            let mut p = Pacer::with(rate, 0, Pacing::Poisson(seed));
            let (mut now, mut sent, mut times) = (0u64, 0u64, Vec::new());
            while times.len() < 200_000 {
                // Take at most 3 of what is allowed: the rest stays due.
                let n = p.allowance(now, sent, 8).min(3);
                times.extend(std::iter::repeat_n(now as f64, n));
                sent += n as u64;
                now += 100;
            }
            let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) / 1e9).collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            let (m, v) = (1.0 / rate, 1.0 / (rate * rate));
            assert!(
                (mean - m).abs() < 0.05 * m,
                "rate {rate}: mean {mean} vs {m}"
            );
            assert!(
                (var - v).abs() < 0.05 * v,
                "rate {rate}: variance {var} vs {v}"
            );
        }
        // The same seed, the same schedule.
        let run = |seed| {
            let mut p = Pacer::with(1e5, 0, Pacing::Poisson(seed));
            (0..1000)
                .map(|t| p.allowance(t * 1000, 0, 1000))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
