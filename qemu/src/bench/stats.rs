//! The one rule every tool in the bench is measured by: a counter sampled about once a
//! second, a warm-up from the moment it starts counting, then a window of whole intervals.
//!
//! On a NIC with a device counter (e1000 GPTC) the figure is the counter's increase over
//! the window divided by the window's length; elsewhere it is the median of the window's
//! per-interval rates. The same window and the same statistic apply to every tool.

/// A counter sampled over one run: (seconds since an arbitrary origin, count so far).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub samples: Vec<(f64, u64)>,
    /// Width of the counter in bits: a count may wrap at `2^bits` (64 for the 64-bit
    /// totals the tools keep; 32 for a raw e1000 statistics register).
    pub bits: u32,
}

impl Series {
    pub fn new(samples: Vec<(f64, u64)>) -> Self {
        Series { samples, bits: 64 }
    }
}

/// How a window's intervals become one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The device counter's increase over the window, divided by its length.
    DeviceDelta,
    /// The median of the per-interval rates.
    MedianPerSecond,
}

impl Rule {
    pub fn describe(self) -> &'static str {
        match self {
            Rule::DeviceDelta => "device GPTC delta over the window",
            Rule::MedianPerSecond => "median of per-second rates over the window",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Rule::DeviceDelta => "device-delta",
            Rule::MedianPerSecond => "median-per-second",
        }
    }
}

/// The warm-up and window every run is measured over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Seconds skipped once the counter starts moving.
    pub warm: u32,
    /// Seconds measured after the warm-up: the intervals that start within them (each
    /// about a second; testpmd's are sometimes two).
    pub secs: u32,
}

/// One interval of a window: its length in seconds and the counter's increase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub secs: f64,
    pub count: u64,
}

impl Interval {
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.secs
    }
}

/// A sample this close before the end of the warm-up still starts the window: samples
/// come about a second apart, give or take the sampler's own scheduling.
const SLACK: f64 = 0.25;

/// `to - from` for a counter of `bits` bits that may have wrapped once in between.
pub fn delta(from: u64, to: u64, bits: u32) -> u64 {
    let d = to.wrapping_sub(from);
    if bits >= 64 {
        d
    } else {
        d & ((1u64 << bits) - 1)
    }
}

/// The window's intervals: the counter starts at the last sample still showing the
/// first sample's count (nothing sent yet); the window holds the consecutive sample pairs
/// from the first that starts `window.warm` seconds after that, up to the first that
/// reaches `window.secs` seconds further, and the run must have gone on that far. An error says why a run cannot be
/// measured.
pub fn window(series: &Series, window: Window) -> Result<Vec<Interval>, String> {
    let s = &series.samples;
    let Some(&(_, first)) = s.first() else {
        return Err("no samples".into());
    };
    let start = s.iter().take_while(|(_, c)| *c == first).count();
    if start == s.len() {
        return Err(format!(
            "the counter never moved ({} samples, all {first})",
            s.len()
        ));
    }
    let origin = s[start - 1].0;
    let from = origin + f64::from(window.warm) - SLACK;
    let to = from + f64::from(window.secs);
    // Consecutive intervals from the first that starts after the warm-up, until they
    // reach the window's end (testpmd's may be two seconds long, longer than a 1 s window).
    let mut pairs: Vec<Interval> = Vec::new();
    let mut reached = false;
    for w in s.windows(2).filter(|w| w[0].0 >= from) {
        pairs.push(Interval {
            secs: w[1].0 - w[0].0,
            count: delta(w[0].1, w[1].1, series.bits),
        });
        if w[1].0 >= to {
            reached = true;
            break;
        }
    }
    if let Some(bad) = pairs.iter().find(|i| i.secs.is_nan() || i.secs <= 0.0) {
        return Err(format!("samples out of order ({} s apart)", bad.secs));
    }
    if !reached {
        let last = s.last().map_or(0.0, |l| l.0);
        return Err(format!(
            "ran too briefly: its samples end {:.1} s into the {} s window after a {} s warm-up",
            (last - from - SLACK).max(0.0),
            window.secs,
            window.warm
        ));
    }
    Ok(pairs)
}

/// The figure `rule` makes of a window's intervals (frames per second).
pub fn figure(rule: Rule, intervals: &[Interval]) -> f64 {
    match rule {
        Rule::DeviceDelta => {
            let count: u64 = intervals.iter().map(|i| i.count).sum();
            let secs: f64 = intervals.iter().map(|i| i.secs).sum();
            count as f64 / secs
        }
        Rule::MedianPerSecond => median(&intervals.iter().map(Interval::rate).collect::<Vec<_>>()),
    }
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// How far apart runs are: (max - min) / min, 0 for fewer than two.
pub fn spread(values: &[f64]) -> f64 {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() < 2 || min <= 0.0 {
        0.0
    } else {
        (max - min) / min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(f64, u64)]) -> Series {
        Series::new(points.to_vec())
    }

    const W: Window = Window { warm: 2, secs: 3 };

    #[test]
    fn the_window_starts_a_warm_up_after_the_counter_first_moves() {
        // Idle for two samples (start-up), then 100/s with one slow second in the window.
        let s = series(&[
            (0.0, 0),
            (1.0, 0),
            (2.0, 100),
            (3.0, 200),
            (4.0, 300),
            (5.0, 330),
            (6.0, 430),
            (7.0, 530),
        ]);
        let w = window(&s, W).unwrap();
        // Origin 1.0 (the last sample still at 0); the window starts at 3.0.
        assert_eq!(
            w.iter().map(|i| i.count).collect::<Vec<_>>(),
            [100, 30, 100]
        );
        assert_eq!(figure(Rule::MedianPerSecond, &w), 100.0);
        assert!((figure(Rule::DeviceDelta, &w) - 230.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn uneven_intervals_count_by_their_length() {
        let s = series(&[
            (0.0, 0),
            (1.0, 10),
            (2.0, 20),
            (3.5, 170),
            (4.5, 270),
            (5.0, 320),
        ]);
        let w = window(&s, W).unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].rate(), 100.0);
        assert!((figure(Rule::DeviceDelta, &w) - 300.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn an_interval_longer_than_the_window_is_the_window() {
        // testpmd's two-second blocks and a one-second (smoke) window.
        let s = series(&[(0.0, 0), (2.0, 200), (4.0, 400), (6.0, 600)]);
        let w = window(&s, Window { warm: 1, secs: 1 }).unwrap();
        assert_eq!(
            w,
            [Interval {
                secs: 2.0,
                count: 200
            }]
        );
    }

    #[test]
    fn a_sample_a_little_early_still_starts_the_window() {
        let s = series(&[(0.0, 0), (1.9, 10), (2.9, 20), (3.9, 30), (4.9, 40)]);
        let w = window(&s, W).unwrap();
        assert_eq!(w.len(), 3, "the sample at 1.9 s is within the slack of 2 s");
    }

    #[test]
    fn a_short_run_or_an_idle_counter_is_an_error_not_a_figure() {
        let short = series(&[(0.0, 0), (1.0, 10), (2.0, 20), (3.0, 30)]);
        let e = window(&short, W).unwrap_err();
        assert!(
            e.contains("ran too briefly: its samples end 1.0 s into the 3 s window"),
            "{e}"
        );
        let idle = series(&[(0.0, 5), (1.0, 5), (2.0, 5)]);
        assert!(window(&idle, W).unwrap_err().contains("never moved"));
        assert!(window(&Series::default(), W).is_err());
        let backwards = series(&[(0.0, 0), (2.0, 10), (3.0, 20), (2.5, 30), (4.0, 40)]);
        assert!(window(&backwards, W).unwrap_err().contains("out of order"));
    }

    #[test]
    fn a_32_bit_counter_wraps_into_the_right_delta() {
        assert_eq!(delta(u64::from(u32::MAX) - 9, 20, 32), 30);
        assert_eq!(delta(100, 130, 32), 30);
        assert_eq!(
            delta(5, 3, 64),
            u64::MAX - 1,
            "64-bit totals do not wrap in practice"
        );
        let s = Series {
            samples: vec![
                (0.0, 0xffff_ff00),
                (1.0, 0xffff_ff00),
                (2.0, 0xffff_ff80),
                (3.0, 0x0000_0000),
                (4.0, 0x0000_0080),
                (5.0, 0x0000_0100),
            ],
            bits: 32,
        };
        // From the second sample (the first move) one second on: 2.0 → 3.0 wraps.
        let w = window(&s, Window { warm: 1, secs: 3 }).unwrap();
        assert_eq!(
            w.iter().map(|i| i.count).collect::<Vec<_>>(),
            [128, 128, 128]
        );
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert!((spread(&[100.0, 125.0]) - 0.25).abs() < 1e-12);
        assert_eq!(spread(&[100.0]), 0.0);
    }
}
