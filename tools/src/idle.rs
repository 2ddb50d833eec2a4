//! `--idle`: what a receive loop does when a poll finds nothing.
//!
//! - `poll`: poll again at once. Lowest latency and highest rate; a whole core even when
//!   nothing arrives. `fwd`'s default (benchmarks).
//! - `sleep`: arm the port's receive interrupt after every empty poll and sleep until a
//!   frame comes. Least CPU; every frame after a quiet spell pays a wake-up.
//! - `hybrid[=T|=N]`: poll while frames come; once the port has been quiet for a time T
//!   (`hybrid=2ms`, `hybrid=500us`; default [`HYBRID_QUIET`]) over at least
//!   [`QUIET_POLLS`] empty polls, or after N empty polls in a row (`hybrid=1000`), arm and
//!   sleep. Busy ports cost what `poll` costs, idle ones almost nothing (DPDK's
//!   l3fwd-power pattern). `dump`'s and `stats`' default.
//!
//! Why a time, and one that adapts: a port under load still sees empty streaks (the
//! sender or the device's thread descheduled for a moment), and a count of polls is a
//! time that changes with the CPU and the driver. A sleep in such a streak pays a wake-up
//! while frames pile up. So a sleep that ends sooner than the polling before it had
//! lasted (a stall in a stream, not a quiet spell) doubles the quiet time, up to
//! [`ADAPT_MAX`] T, and a nap that runs out with nothing arriving halves it back towards
//! T: a loaded port soon stops sleeping in its stalls and forwards what `poll` forwards,
//! a port with bursts and longer silences sleeps in the silences, and an idle one sleeps
//! after T again.
//!
//! The e1000 sleeps on INTx (vfio-pci or uio_pci_generic), a modern virtio-net and the igb
//! on an MSI-X vector per queue (vfio-pci), a one-pair virtio-net, legacy or modern, on
//! INTx without MSI-X (vfio-pci or uio_pci_generic; a modern one's ISR is read through its
//! ISR capability), a one-queue igb on INTx under uio_pci_generic. With `--queues N`
//! (`dump`, `fwd`, `stats`) each queue's thread sleeps on its own queue's vector. A port
//! without a receive interrupt (a multi-queue port without MSI-X, under uio_pci_generic
//! every multi-queue port) polls whatever the mode, after one line saying so. A sleep lasts at most [`NAP`], so the loop still sees its
//! duration end, Ctrl-C and link events.

use crate::clock::LoopClock;
use crate::{msg, ToolError};
use std::ops::DerefMut;
use std::os::fd::BorrowedFd;
use std::str::FromStr;
use std::time::Duration;
use zcnic::Nic;

/// How long a `hybrid` port must have been quiet before it sleeps, when `--idle hybrid`
/// names no time or count.
pub const HYBRID_QUIET: Duration = Duration::from_millis(1);

/// How far hiccups can stretch a `hybrid=T` quiet time: to 256 T (256 ms by default).
/// Under QEMU's TCG a flooded virtio-net forwarder sees stalls of tens of milliseconds
/// in the stream, 14 to 53 a 3 s round beyond 32 ms; at 256 ms 10 to 20 sleeps. An idle port
/// after such a load spins that long once, then each nap halves it.
pub const ADAPT_MAX: u32 = 256;

/// Empty polls a quiet time needs as well (one poll after the thread was descheduled for
/// longer than the time does not make the port quiet), and how often the clock is read
/// during a quiet spell.
pub const QUIET_POLLS: u32 = 64;

/// The longest one sleep lasts.
pub const NAP: Duration = Duration::from_millis(200);

/// An `--idle` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Never sleep.
    Poll,
    /// Sleep after every empty poll.
    Sleep,
    /// Sleep after this many empty polls in a row.
    Hybrid(u32),
    /// Sleep once no frame came for this long (over at least [`QUIET_POLLS`] polls).
    HybridFor(Duration),
}

impl FromStr for Idle {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "poll" => Ok(Idle::Poll),
            "sleep" => Ok(Idle::Sleep),
            "hybrid" => Ok(Idle::HybridFor(HYBRID_QUIET)),
            _ => s
                .strip_prefix("hybrid=")
                .and_then(parse_threshold)
                .ok_or_else(|| {
                    format!(
                        "`{s}`: give poll, sleep, hybrid, hybrid=T (a quiet time: 5ms, 500us) \
                         or hybrid=N (N > 0 empty polls)"
                    )
                }),
        }
    }
}

impl std::fmt::Display for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Idle::Poll => write!(f, "poll"),
            Idle::Sleep => write!(f, "sleep"),
            Idle::Hybrid(n) => write!(f, "hybrid={n}"),
            Idle::HybridFor(t) if t.subsec_nanos() % 1_000_000 == 0 => {
                write!(f, "hybrid={}ms", t.as_millis())
            }
            Idle::HybridFor(t) => write!(f, "hybrid={}us", t.as_micros()),
        }
    }
}

/// `hybrid=`'s value: `N` empty polls, or a quiet time `Tms`/`Tus` (0 < T <= 10 s).
fn parse_threshold(v: &str) -> Option<Idle> {
    let time = |digits: &str, unit: fn(u64) -> Duration| {
        let t = unit(digits.parse().ok()?);
        (!t.is_zero() && t <= Duration::from_secs(10)).then_some(Idle::HybridFor(t))
    };
    if let Some(ms) = v.strip_suffix("ms") {
        time(ms, Duration::from_millis)
    } else if let Some(us) = v.strip_suffix("us") {
        time(us, Duration::from_micros)
    } else {
        v.parse().ok().filter(|n| *n > 0).map(Idle::Hybrid)
    }
}

/// A receive loop's idle policy at work: counts empty polls and sleeps when the mode says.
#[derive(Debug)]
pub struct Idler {
    mode: Idle,
    empty: u32,
    /// When the current run of empty polls began (`hybrid=T`), on `clock`.
    quiet_since: u64,
    /// The loop's clock (TSC-based on x86-64): a system clock read in a TCG guest is an
    /// HPET read under QEMU's global lock, which stalls the device being forwarded from
    /// (`clock.rs`); an empty streak under load would pay one at each start.
    clock: LoopClock,
    /// When the last sleep ended, on `clock` (0: the policy's start).
    woke_at: u64,
    /// The quiet time in force (`hybrid=T`): T, doubled by each hiccup (see `count`).
    quiet: Duration,
    /// Sleeps the receive interrupt ended.
    pub wakes: u64,
    /// Sleeps not begun: arming found a frame already waiting.
    pub ready: u64,
    /// Sleeps that ran to [`NAP`] with nothing arriving.
    pub naps: u64,
    /// `hybrid=T`: sleeps the interrupt ended sooner than the polling before them had
    /// lasted, each a stall in a stream that doubled the quiet time (see `adapt`).
    pub early: u64,
}

/// How a [`sleep`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// It never began: arming found a frame already in a ring.
    Ready,
    /// The receive interrupt fired.
    Interrupt,
    /// The nap ran out (or a signal ended it) with no interrupt.
    Timeout,
}

impl Idler {
    /// A policy of `mode`.
    pub fn new(mode: Idle) -> Self {
        Self {
            mode,
            empty: 0,
            quiet_since: 0,
            clock: LoopClock::new(),
            woke_at: 0,
            quiet: match mode {
                Idle::HybridFor(t) => t,
                _ => Duration::ZERO,
            },
            wakes: 0,
            ready: 0,
            naps: 0,
            early: 0,
        }
    }

    /// The mode in force (`poll` once a port turned out to have no interrupt).
    pub fn mode(&self) -> Idle {
        self.mode
    }

    /// Counts a poll that received `got` frames; true when the loop should sleep now
    /// ([`sleep`](Self::sleep)). Cheap: nothing allocated, no system call (the clock is
    /// the loop's TSC count, read at the first empty poll of a run and every
    /// [`QUIET_POLLS`] after; it checks the system clock 50 times a second).
    #[inline]
    pub fn due(&mut self, got: usize) -> bool {
        if got > 0 || self.mode == Idle::Poll {
            self.empty = 0;
            return false;
        }
        self.empty = self.empty.saturating_add(1);
        let due = match self.mode {
            Idle::Poll => false,
            Idle::Sleep => true,
            Idle::Hybrid(n) => self.empty >= n,
            Idle::HybridFor(_) => {
                if self.empty == 1 {
                    self.quiet_since = self.clock.now_ns();
                }
                self.empty.is_multiple_of(QUIET_POLLS)
                    && self.clock.now_ns().saturating_sub(self.quiet_since)
                        >= self.quiet.as_nanos() as u64
            }
        };
        if due {
            self.empty = 0;
        }
        due
    }

    /// Sleeps on the receive interrupts of `ports` for up to [`NAP`]. A port without an
    /// interrupt turns the policy into `poll`, after a line on stderr from `tool`.
    pub fn sleep<P, N>(&mut self, tool: &str, ports: &mut [P])
    where
        P: DerefMut<Target = N>,
        N: Nic + ?Sized,
    {
        let start = self.clock.now_ns();
        match sleep(ports, NAP) {
            Ok(woke) => self.count(woke, start),
            Err(e) => {
                eprintln!("{tool}: --idle {}: {e}; polling instead", self.mode);
                self.mode = Idle::Poll;
            }
        }
    }

    /// [`sleep`](Self::sleep) for one queue of a multi-queue port, on its own vector (a
    /// worker thread per queue, each with its own `Idler`).
    pub fn sleep_queue(&mut self, tool: &str, rx: &mut dyn zcnic::RxQueue) {
        let start = self.clock.now_ns();
        let woke = match rx.enable_rx_interrupt() {
            Ok(true) => Ok(Woke::Ready),
            Ok(false) => {
                let woke = rx
                    .rx_interrupt_fd()
                    .map_err(ToolError::from)
                    .and_then(|fd| {
                        zcnic::irq::wait_readable(fd, NAP)
                            .map_err(|e| msg(format!("waiting for a receive interrupt: {e}")))
                    });
                rx.disable_rx_interrupt()
                    .map_err(ToolError::from)
                    .and(woke)
                    .map(|w| if w { Woke::Interrupt } else { Woke::Timeout })
            }
            Err(e) => Err(e.into()),
        };
        match woke {
            Ok(woke) => self.count(woke, start),
            Err(e) => {
                eprintln!(
                    "{tool}: queue {}: --idle {}: {e}; polling instead",
                    rx.queue(),
                    self.mode
                );
                self.mode = Idle::Poll;
            }
        }
    }

    /// Counts how a sleep begun at `start` (on the loop's clock) ended, and adapts a
    /// `hybrid=T` quiet time to it.
    fn count(&mut self, woke: Woke, start: u64) {
        let end = self.clock.now_ns();
        let slept = Duration::from_nanos(end.saturating_sub(start));
        let awake = Duration::from_nanos(start.saturating_sub(self.woke_at));
        self.woke_at = end;
        self.adapt(woke, slept, awake);
    }

    /// Counts a sleep that lasted `slept` after `awake` of polling, and adapts a
    /// `hybrid=T` quiet time to it.
    ///
    /// A sleep shorter than the polling before it (or one that never began: a frame was
    /// there at arming) was a stall in a stream, not a quiet spell: under TCG a wake-up
    /// costs more than such a stall, and frames pile up while it lasts, so the quiet time
    /// doubles, up to [`ADAPT_MAX`] times T. A nap that ran out with nothing arriving (quiet
    /// for the quiet time and then [`NAP`]) is an idle port: the quiet time halves, down to
    /// T. A sleep longer than the polling before it leaves it: a port busy less than half
    /// the time (bursts with longer silences between) keeps sleeping in its silences. So a
    /// loaded port stops sleeping in its stalls after a few of them and stays so while it
    /// is loaded, and an idle one is back to sleeping after T within a few naps.
    fn adapt(&mut self, woke: Woke, slept: Duration, awake: Duration) {
        match woke {
            Woke::Interrupt => self.wakes += 1,
            Woke::Ready => self.ready += 1,
            Woke::Timeout => self.naps += 1,
        }
        if let Idle::HybridFor(base) = self.mode {
            let stall = slept < awake.max(self.quiet);
            let hiccup = woke == Woke::Ready || (woke == Woke::Interrupt && stall);
            if hiccup {
                self.early += u64::from(woke == Woke::Interrupt);
                self.quiet = (self.quiet * 2).min(base * ADAPT_MAX);
            } else if woke == Woke::Timeout {
                self.quiet = (self.quiet / 2).max(base);
            }
        }
    }

    /// The quiet time a `hybrid=T` loop waits for now (T, or more after hiccups).
    pub fn quiet(&self) -> Duration {
        self.quiet
    }

    /// The summary line's words: `idle hybrid=1ms: 12 wakes, 3 ready, 50 naps, 2 early,
    /// quiet 1ms` (woken by the interrupt, frames found when arming, naps that ran out; of
    /// the wakes, those sooner than the polling before them had lasted; the quiet time in
    /// force at the end).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "idle {}: {} wakes, {} ready, {} naps",
            self.mode, self.wakes, self.ready, self.naps
        );
        if matches!(self.mode, Idle::HybridFor(_)) {
            s += &format!(", {} early, quiet {:?}", self.early, self.quiet);
        }
        s
    }
}

/// Arms every port's receive interrupt (each re-checking its ring), sleeps on all of them
/// up to `nap`, disarms; says how it ended. One port's sleep is its
/// [`rx_wait`](Nic::rx_wait), spelled out so the two ways of waking are told apart.
pub fn sleep<P, N>(ports: &mut [P], nap: Duration) -> Result<Woke, ToolError>
where
    P: DerefMut<Target = N>,
    N: Nic + ?Sized,
{
    let mut armed = 0;
    let mut woke = Ok(Woke::Ready);
    for p in ports.iter_mut() {
        match p.enable_rx_interrupt() {
            Ok(false) => armed += 1,
            Ok(true) => break,
            Err(e) => {
                woke = Err(e.into());
                break;
            }
        }
    }
    if armed == ports.len() {
        let fds: Result<Vec<BorrowedFd<'_>>, _> =
            ports.iter().map(|p| p.rx_interrupt_fd()).collect();
        woke = fds
            .map_err(ToolError::from)
            .and_then(|fds| match zcnic::irq::wait_any(&fds, nap) {
                Ok(true) => Ok(Woke::Interrupt),
                Ok(false) => Ok(Woke::Timeout),
                Err(e) => Err(msg(format!("waiting for a receive interrupt: {e}"))),
            });
    }
    for p in &mut ports[..armed] {
        p.disable_rx_interrupt()?;
    }
    woke
}

/// CPU time this process has used (user + system), from `/proc/self/stat`, in the
/// kernel's clock ticks of 1/100 s (USER_HZ, 100 on every Linux ABI zcnic runs on).
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based 11, 12).
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// `cpu 0.04 s of 5.00 s (0.8% of a core)`: the CPU used since `start_cpu`, over `wall`.
pub fn cpu_line(start_cpu: Option<Duration>, wall: Duration) -> String {
    match (start_cpu, cpu_time()) {
        (Some(a), Some(b)) => {
            let used = b.saturating_sub(a).as_secs_f64();
            let wall = wall.as_secs_f64().max(1e-9);
            format!(
                "cpu {used:.2} s of {wall:.2} s ({:.1}% of a core)",
                100.0 * used / wall
            )
        }
        _ => "cpu unknown (no /proc/self/stat)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_mode_and_refuses_the_rest() {
        assert_eq!("poll".parse(), Ok(Idle::Poll));
        assert_eq!("sleep".parse(), Ok(Idle::Sleep));
        assert_eq!("hybrid".parse(), Ok(Idle::HybridFor(HYBRID_QUIET)));
        assert_eq!("hybrid=7".parse(), Ok(Idle::Hybrid(7)));
        let ms = |n| Idle::HybridFor(Duration::from_millis(n));
        assert_eq!("hybrid=2ms".parse(), Ok(ms(2)));
        assert_eq!(
            "hybrid=250us".parse(),
            Ok(Idle::HybridFor(Duration::from_micros(250)))
        );
        for bad in [
            "hybrid=0",
            "hybrid=",
            "hybrid=x",
            "hybrid=0ms",
            "hybrid=ms",
            "hybrid=2s",
            "hybrid=11000ms",
            "hybrid=-1",
            "spin",
            "",
        ] {
            assert!(bad.parse::<Idle>().is_err(), "{bad}");
        }
        for s in [
            "hybrid=7",
            "hybrid=2ms",
            "hybrid=250us",
            "hybrid=1500us",
            "poll",
            "sleep",
        ] {
            assert_eq!(s.parse::<Idle>().unwrap().to_string(), s, "round trip");
        }
        assert_eq!(ms(5).to_string(), "hybrid=5ms");
    }

    #[test]
    fn hiccups_stretch_the_quiet_time_and_quiet_spells_shrink_it_back() {
        let ms = Duration::from_millis;
        let mut idler = Idler::new(Idle::HybridFor(ms(1)));
        assert_eq!(idler.quiet(), ms(1));
        idler.adapt(Woke::Ready, ms(0), ms(1));
        assert_eq!(idler.quiet(), ms(2), "a frame at arming: a hiccup");
        idler.adapt(Woke::Interrupt, ms(1), ms(2));
        assert_eq!(
            idler.quiet(),
            ms(4),
            "woken sooner than the quiet time: a hiccup"
        );
        idler.adapt(Woke::Interrupt, ms(10), ms(50));
        assert_eq!(
            idler.quiet(),
            ms(8),
            "a 10 ms pause after 50 ms of polling: a stall in a stream"
        );
        idler.adapt(Woke::Interrupt, ms(80), ms(21));
        assert_eq!(
            idler.quiet(),
            ms(8),
            "an 80 ms silence after a 21 ms burst: a port that sleeps in its silences"
        );
        for _ in 0..10 {
            idler.adapt(Woke::Ready, ms(0), ms(300));
        }
        assert_eq!(
            idler.quiet(),
            ms(256),
            "stretched to ADAPT_MAX times T at most"
        );
        idler.adapt(Woke::Interrupt, ms(100), ms(256));
        assert_eq!(idler.quiet(), ms(256), "100 ms < 256 ms: a hiccup");
        idler.adapt(Woke::Interrupt, ms(300), ms(256));
        assert_eq!(
            idler.quiet(),
            ms(256),
            "a pause longer than the polling before it leaves it"
        );
        idler.adapt(Woke::Timeout, NAP, ms(256));
        assert_eq!(idler.quiet(), ms(128), "a nap that ran out: quiet indeed");
        for _ in 0..10 {
            idler.adapt(Woke::Timeout, NAP, ms(1));
        }
        assert_eq!(idler.quiet(), ms(1), "back to T, never below");
        assert_eq!((idler.wakes, idler.ready, idler.naps), (5, 11, 11));
        assert_eq!(
            idler.early, 3,
            "the wakes after 1, 10 and 100 ms, not 80 or 300 ms"
        );
        assert!(
            idler.describe().ends_with("11 naps, 3 early, quiet 1ms"),
            "{}",
            idler.describe()
        );
        let mut polls = Idler::new(Idle::Hybrid(10));
        polls.adapt(Woke::Ready, ms(0), ms(0));
        assert_eq!(
            polls.quiet(),
            Duration::ZERO,
            "a count of polls does not adapt"
        );
    }

    #[test]
    fn cpu_time_moves_with_work() {
        let a = cpu_time().expect("/proc/self/stat");
        let end = std::time::Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while std::time::Instant::now() < end {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_time().unwrap() > a, "300 ms of spinning shows");
    }
}
