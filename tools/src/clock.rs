//! A clock for the packet loops that does not stall the device it is timing.
//!
//! Inside a guest whose clocksource is the HPET — QEMU under TCG, where the kernel marks
//! the TSC unstable — every system clock read is a system call plus an emulated register
//! read, and that read takes QEMU's global lock. virtio-net's transmit work holds that lock
//! for a whole batch of frames, so a loop that reads the system clock often spends most of
//! its time waiting for the device instead of feeding it (the bench note in
//! docs/performance.md has the measurements).
//!
//! On x86-64 the loops count TSC cycles instead, as DPDK's do: `rdtsc` is an unprivileged
//! instruction that QEMU emulates without that lock. Cycles become nanoseconds at a rate
//! measured against the system clock, re-measured every [`ANCHOR_NS`], so the clock follows
//! the system clock however the TSC runs. Elsewhere the loops read the system clock.

use std::time::Instant;

/// How often the TSC rate is re-measured against the system clock (and so how many system
/// clock reads a busy loop makes: 50 a second).
pub const ANCHOR_NS: u64 = 20_000_000;
/// The shortest span a rate is measured over: shorter ones are mostly clock-read jitter.
const MIN_SPAN_NS: u64 = 500_000;
/// The longest window in cycles: [`ANCHOR_NS`] at 10 GHz. A rate spoiled by a TSC that
/// jumped forward cannot stretch the window (and slow the clock) for longer than that.
const MAX_WINDOW: u64 = ANCHOR_NS * 10;
/// How long one system clock read may take, TSC to TSC around it, for the pair to count.
/// A thread held up inside the read (preempted by the host, or in a TCG guest waiting for
/// the QEMU lock the HPET read takes) pairs a late time with an early count, and a rate
/// measured from such a pair is off by the hold-up over a whole window: 3 ms in a 20 ms
/// window ran the clock 15% fast, and `replay` sent gaps that much short. 100 µs keeps
/// the rate within 0.5%.
const SAMPLE_SLACK_NS: u64 = 100_000;
/// How many reads a measurement tries for one within [`SAMPLE_SLACK_NS`] before it keeps
/// the rate it has and tries again an eighth of a window later.
const SAMPLE_TRIES: u32 = 4;

/// Nanoseconds since a start, for a busy loop: cheap to read on every burst, never going
/// backwards, and within a fraction of a percent of the system clock.
#[derive(Debug, Clone)]
pub struct LoopClock {
    epoch: Instant,
    /// System-clock nanoseconds and TSC at the last measurement.
    anchor_ns: u64,
    anchor_tsc: u64,
    /// Nanoseconds per TSC cycle, as a 32.32 fixed-point number.
    ns_per_cycle: u64,
    /// Cycles between measurements.
    window: u64,
    /// The last value returned: the clock never goes backwards.
    last: u64,
}

/// How long a sender waits after its device took no frame (a full ring) before offering
/// frames again. A ring that refuses frames holds at least a chunk of them, tens of
/// microseconds of the device's work, so the wait costs no rate; asking again at once
/// would pull the ring's cache lines away from the device thread on every look, which
/// under QEMU cost virtio-net up to a sixth of its rate (docs/performance.md).
pub const BUSY_WAIT_NS: u64 = 20_000;

impl Default for LoopClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LoopClock {
    /// A clock counting from now. On x86-64 it first times the TSC over 1 ms.
    pub fn new() -> Self {
        let epoch = Instant::now();
        let mut c = Self {
            epoch,
            anchor_ns: 0,
            anchor_tsc: tsc(),
            ns_per_cycle: 1 << 32,
            window: 0,
            last: 0,
        };
        if HAS_TSC {
            let pair = c.sample(|| read_pair(epoch));
            if let Some((t, ns)) = pair {
                (c.anchor_tsc, c.anchor_ns) = (t, ns);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            c.measure();
        }
        c
    }

    /// When the clock started.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Nanoseconds since the start.
    #[inline]
    pub fn now_ns(&mut self) -> u64 {
        if !HAS_TSC {
            return self.system_ns();
        }
        let t = tsc();
        // A TSC that went backwards (another CPU's) wraps to a huge count: measure again.
        let cycles = t.wrapping_sub(self.anchor_tsc);
        if cycles >= self.window {
            return self.measure();
        }
        self.last = self.last.max(self.since_anchor(cycles));
        self.last
    }

    /// The time `cycles` after the anchor, at the measured rate.
    #[inline]
    fn since_anchor(&self, cycles: u64) -> u64 {
        self.anchor_ns + ((u128::from(cycles) * u128::from(self.ns_per_cycle)) >> 32) as u64
    }

    /// Spins until `ns` (since the start) and returns the time then. A sender whose device
    /// took nothing waits here rather than asking again at once: the spin touches no
    /// memory the device writes. It reads the clock and nothing else: no PAUSE
    /// (`spin_loop`), which QEMU's TCG runs by leaving the vCPU's translated code and
    /// taking QEMU's global lock, the lock virtio-net's device model needs.
    pub fn spin_until(&mut self, ns: u64) -> u64 {
        loop {
            let now = self.now_ns();
            if now >= ns {
                return now;
            }
        }
    }

    fn system_ns(&mut self) -> u64 {
        self.last = self.last.max(self.epoch.elapsed().as_nanos() as u64);
        self.last
    }

    /// Reads the system clock with the TSC around it and re-measures the rate from that
    /// pair ([`apply`](Self::apply)). When no read in [`SAMPLE_TRIES`] was quick enough to
    /// pair, the rate and anchor stay and the window grows by an eighth, so the loop
    /// tries again soon without paying the reads on every call.
    #[cold]
    fn measure(&mut self) -> u64 {
        let epoch = self.epoch;
        let pair = self.sample(|| read_pair(epoch));
        self.take(pair)
    }

    /// [`apply`](Self::apply)s a pair; without one, keeps the rate and anchor and grows
    /// the window by an eighth (a clock with no rate yet reads the system clock).
    fn take(&mut self, pair: Option<(u64, u64)>) -> u64 {
        if let Some((t, ns)) = pair {
            return self.apply(t, ns);
        }
        if self.window == 0 {
            return self.system_ns();
        }
        // `apply` keeps the window within MAX_WINDOW; so does this.
        self.window = (self.window + self.window / 8).min(MAX_WINDOW);
        let cycles = tsc().wrapping_sub(self.anchor_tsc).min(self.window);
        self.last = self.last.max(self.since_anchor(cycles));
        self.last
    }

    /// A TSC count and the system clock's nanoseconds at it (the middle of the counts
    /// `read` gives before and after its clock read), from the first of [`SAMPLE_TRIES`]
    /// reads that took at most [`SAMPLE_SLACK_NS`].
    fn sample(&self, mut read: impl FnMut() -> (u64, u64, u64)) -> Option<(u64, u64)> {
        let slack = ((u128::from(SAMPLE_SLACK_NS) << 32) / u128::from(self.ns_per_cycle)) as u64;
        (0..SAMPLE_TRIES).find_map(|_| {
            let (before, ns, after) = read();
            let took = after.wrapping_sub(before);
            (took <= slack).then(|| (before.wrapping_add(took / 2), ns))
        })
    }

    /// Takes the system clock's `ns` at TSC `t` and, when the window since the anchor is
    /// long enough, re-measures the rate over it and starts a new window at `t`. A TSC
    /// that went backwards starts a new window without a rate; a span too short to trust
    /// keeps the anchor, so the next call measures a longer one.
    fn apply(&mut self, t: u64, ns: u64) -> u64 {
        let (dns, dt) = (
            ns.saturating_sub(self.anchor_ns),
            t.wrapping_sub(self.anchor_tsc),
        );
        if dt >= 1 << 62 {
            (self.anchor_ns, self.anchor_tsc) = (ns, t);
        } else if dns >= MIN_SPAN_NS && dt > 0 {
            let rate = (u128::from(dns) << 32) / u128::from(dt);
            self.ns_per_cycle = rate.clamp(1, u128::from(u64::MAX)) as u64;
            let window = (u128::from(ANCHOR_NS) << 32) / u128::from(self.ns_per_cycle);
            self.window = window.clamp(1, u128::from(MAX_WINDOW)) as u64;
            (self.anchor_ns, self.anchor_tsc) = (ns, t);
        }
        self.last = self.last.max(ns);
        self.last
    }
}

/// The TSC, the system clock's nanoseconds since `epoch`, the TSC again: one read and how
/// long it took.
fn read_pair(epoch: Instant) -> (u64, u64, u64) {
    let before = tsc();
    let ns = epoch.elapsed().as_nanos() as u64;
    (before, ns, tsc())
}

#[cfg(target_arch = "x86_64")]
const HAS_TSC: bool = true;
#[cfg(not(target_arch = "x86_64"))]
const HAS_TSC: bool = false;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tsc() -> u64 {
    // SAFETY: rdtsc reads a counter; it has no memory effects and user mode may run it
    // (Linux leaves CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn tsc() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn follows_the_system_clock_and_never_goes_back() {
        let mut c = LoopClock::new();
        let mut prev = c.now_ns();
        let start = Instant::now();
        // Long enough to cross several re-measurements.
        while start.elapsed() < Duration::from_millis(120) {
            let now = c.now_ns();
            assert!(now >= prev, "went back from {prev} to {now}");
            prev = now;
        }
        let sys = c.epoch().elapsed().as_nanos() as i64;
        let ours = c.now_ns() as i64;
        // Within 5 ms of the system clock after 120 ms (a loaded CI box can preempt us
        // between the two reads).
        assert!(
            (sys - ours).abs() < 5_000_000,
            "system {sys} ns, LoopClock {ours} ns"
        );
    }

    #[test]
    fn a_sleep_shows_up() {
        let mut c = LoopClock::new();
        let a = c.now_ns();
        std::thread::sleep(Duration::from_millis(30));
        let b = c.now_ns();
        assert!(b >= a + 29_000_000, "slept 30 ms, clock moved {} ns", b - a);
    }

    #[test]
    fn a_spin_lasts_until_its_deadline_on_the_system_clock_too() {
        let mut c = LoopClock::new();
        let started = Instant::now();
        let a = c.now_ns();
        let b = c.spin_until(a + 2_000_000);
        assert!(b >= a + 2_000_000);
        // The TSC's rate is measured over 1 ms at start: allow it to be well off.
        assert!(
            started.elapsed() >= Duration::from_millis(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn start_up_measures_a_real_rate() {
        let c = LoopClock::new();
        if HAS_TSC {
            // 20 ms of any TSC from 10 MHz up: a window of one system-clock read per
            // call would be a handful of cycles.
            assert!(c.window >= 200_000, "window of {} cycles", c.window);
        }
    }

    #[test]
    fn a_tsc_gone_backwards_starts_a_new_window_and_keeps_the_rate() {
        let mut c = LoopClock::new();
        let (before, rate) = (c.now_ns(), c.ns_per_cycle);
        // A TSC far behind the anchor, as from a CPU whose counter lags.
        let t = c.anchor_tsc.wrapping_sub(1000);
        let ns = c.apply(t, c.epoch.elapsed().as_nanos() as u64);
        assert!(ns >= before);
        assert_eq!((c.anchor_tsc, c.ns_per_cycle), (t, rate));
    }

    #[test]
    fn a_tsc_jumped_forward_slows_the_clock_for_one_window_at_most() {
        let mut c = LoopClock::new();
        std::thread::sleep(Duration::from_millis(1));
        // A counter 2^50 cycles ahead: the rate it gives is far too small, but the window
        // stays bounded, so the next measurement comes within MAX_WINDOW cycles.
        let ns = c.epoch.elapsed().as_nanos() as u64;
        c.apply(c.anchor_tsc.wrapping_add(1 << 50), ns);
        assert!(c.window <= MAX_WINDOW);
        assert!(c.ns_per_cycle >= 1);
    }

    #[test]
    fn a_short_span_keeps_the_anchor() {
        let mut c = LoopClock::new();
        let anchor = (c.anchor_ns, c.anchor_tsc, c.ns_per_cycle);
        let ns = c.epoch.elapsed().as_nanos() as u64;
        c.apply(c.anchor_tsc.wrapping_add(10), ns);
        // Well under MIN_SPAN_NS since new() measured: nothing to learn from it.
        if c.epoch.elapsed().as_nanos() as u64 - anchor.0 < MIN_SPAN_NS {
            assert_eq!((c.anchor_ns, c.anchor_tsc, c.ns_per_cycle), anchor);
        }
    }

    /// A clock at 1 ns a cycle, anchored at (0, 0), as a measurement left it.
    fn at_one_ghz() -> LoopClock {
        let mut c = LoopClock::new();
        (c.anchor_ns, c.anchor_tsc, c.ns_per_cycle, c.window) = (0, 0, 1 << 32, ANCHOR_NS);
        c.last = 0;
        c
    }

    #[test]
    fn a_clock_read_held_up_is_read_again_and_the_quick_one_pairs() {
        let c = at_one_ghz();
        // Three reads held up 3 ms (the count after is 3 ms past the one before), then a
        // quick one: the pair is the quick read's, at the middle of its counts.
        let mut reads = [
            (20_000_000, 20_000_000, 23_000_000),
            (23_000_100, 23_003_000, 26_000_000),
            (26_000_100, 26_000_200, 26_200_101),
            (26_300_000, 26_300_040, 26_300_080),
        ]
        .into_iter();
        let pair = c.sample(|| reads.next().unwrap());
        assert_eq!(pair, Some((26_300_040, 26_300_040)));
    }

    #[test]
    fn with_every_read_held_up_the_rate_stays_and_the_window_grows() {
        let mut c = at_one_ghz();
        let mut n = 0;
        let pair = c.sample(|| {
            n += 1;
            (20_000_000, 23_000_000, 23_000_000)
        });
        assert_eq!((pair, n), (None, SAMPLE_TRIES));
        c.take(None);
        assert_eq!((c.anchor_ns, c.anchor_tsc, c.ns_per_cycle), (0, 0, 1 << 32));
        assert_eq!(c.window, ANCHOR_NS + ANCHOR_NS / 8);
    }

    #[test]
    fn a_pair_held_up_would_have_run_the_clock_fast_and_a_quick_one_does_not() {
        // What the slack guards against: a system clock read 3 ms late at the end of a
        // 20 ms window gives a rate 15% high for the next window.
        let mut late = at_one_ghz();
        late.apply(ANCHOR_NS, ANCHOR_NS + 3_000_000);
        let fast = late.ns_per_cycle as f64 / (1u64 << 32) as f64;
        assert!((fast - 1.15).abs() < 0.001, "{fast}");
        // The same read with the counts around it: refused, and the rate is the one the
        // next quick read gives.
        let mut c = at_one_ghz();
        let mut reads = [
            (ANCHOR_NS, ANCHOR_NS + 3_000_000, ANCHOR_NS + 3_000_000),
            (
                ANCHOR_NS + 3_000_100,
                ANCHOR_NS + 3_000_120,
                ANCHOR_NS + 3_000_140,
            ),
        ]
        .into_iter();
        let pair = c.sample(|| reads.next().unwrap());
        c.take(pair);
        let rate = c.ns_per_cycle as f64 / (1u64 << 32) as f64;
        assert!((rate - 1.0).abs() < 1e-6, "{rate}");
    }
}
