//! Where QEMU's host CPU goes while a guest runs: the CPU time of each QEMU thread, sampled
//! from `/proc` every [`PERIOD`], and marks the guest prints to say when something began.
//!
//! Under TCG a guest's packet rate is set by two host threads: the vCPU that runs the
//! driver (and, for the e1000, the device model, which QEMU runs inside the register
//! write) and the I/O thread that runs virtio-net's transmit work. Which one is at 100%
//! of a host CPU says what limits a rate; a vCPU well below 100% while the guest thinks
//! it is busy means it is waiting for QEMU's global lock.
//!
//! A scenario marks a moment by printing `zcnic-mark: NAME` on the console
//! ([`mark`]); [`GuestRun::load`](crate::GuestRun::load) gives each thread's busy share
//! between two marks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Console prefix of a mark.
pub const MARK: &str = "zcnic-mark: ";
/// How often the threads are sampled.
pub const PERIOD: Duration = Duration::from_millis(250);
/// `/proc` reports CPU time in clock ticks of this many per second on Linux (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// A guest shell line that prints mark `name`.
pub fn mark(name: &str) -> String {
    format!("echo '{MARK}{name}'\n")
}

/// The mark a console line carries, if any.
pub(crate) fn parse_mark(line: &str) -> Option<&str> {
    let at = line.find(MARK)?;
    Some(line[at + MARK.len()..].trim())
}

/// One look at every QEMU thread: (thread name, user + system ticks so far).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since QEMU started.
    pub at: Duration,
    /// Per thread id: its name (`CPU 0/TCG`; `I/O` for the main thread, which runs the
    /// main loop) and CPU ticks.
    pub threads: Vec<(u32, String, u64)>,
    /// The host's core-to-core round trip ([`crate::cores`]), measured every
    /// `TRIP_EVERY` samples once [`measure_trips`] turned it on.
    pub trip: Option<Duration>,
}

static TRIPS: AtomicBool = AtomicBool::new(false);

/// Turns the core-to-core measurement in the samples on or off for the runs that follow
/// (off by default: only the bench wants it, and it costs each run's QEMU threads a
/// fraction of a millisecond of both host CPUs a second).
pub fn measure_trips(on: bool) {
    TRIPS.store(on, Ordering::Relaxed);
}

/// Samples between two core-to-core measurements.
const TRIP_EVERY: usize = 4;

/// How busy one thread was over a span: 1.0 is one host CPU all the time.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadLoad {
    /// The thread's name; the I/O thread is called "I/O" here.
    pub name: String,
    /// Share of one host CPU.
    pub busy: f64,
}

/// Samples process `pid`'s threads until `stop` is set or the process is gone.
pub(crate) fn spawn_sampler(
    pid: u32,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<Sample>> {
    thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let trip = (TRIPS.load(Ordering::Relaxed) && samples.len().is_multiple_of(TRIP_EVERY))
                .then(crate::cores::host_round_trip)
                .flatten();
            match sample(pid) {
                Some(threads) => samples.push(Sample {
                    at: started.elapsed(),
                    threads,
                    trip,
                }),
                None => break,
            }
            thread::sleep(PERIOD);
        }
        samples
    })
}

fn sample(pid: u32) -> Option<Vec<(u32, String, u64)>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut threads = Vec::new();
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(path.join("stat")),
            std::fs::read_to_string(path.join("comm")),
        ) else {
            continue; // the thread ended between the listing and the read
        };
        if let Some(ticks) = cpu_ticks(&stat) {
            // The main thread (its id is the process id) runs QEMU's main loop.
            let name = if tid == pid { "I/O" } else { comm.trim() };
            threads.push((tid, name.to_string(), ticks));
        }
    }
    Some(threads)
}

/// utime + stime from a `/proc/*/stat` line: fields 14 and 15, counted after the command
/// name, which is in parentheses and may itself hold spaces.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Each thread's busy share between `from` and `to`, using the samples nearest inside the
/// span; busiest first, threads under 2% left out. Empty when the span holds fewer than
/// two samples.
pub fn load(samples: &[Sample], from: Duration, to: Duration) -> Vec<ThreadLoad> {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .collect();
    let (Some(a), Some(b)) = (inside.first(), inside.last()) else {
        return Vec::new();
    };
    let secs = (b.at - a.at).as_secs_f64();
    if secs <= 0.0 {
        return Vec::new();
    }
    let mut loads: Vec<ThreadLoad> = b
        .threads
        .iter()
        .filter_map(|(tid, name, end)| {
            let start = a.threads.iter().find(|t| t.0 == *tid)?.2;
            let busy = end.saturating_sub(start) as f64 / TICKS_PER_SEC / secs;
            (busy >= 0.02).then(|| ThreadLoad {
                name: name.clone(),
                busy,
            })
        })
        .collect();
    loads.sort_by(|x, y| y.busy.total_cmp(&x.busy));
    loads
}

/// The median core-to-core round trip measured between `from` and `to`.
pub fn trip(samples: &[Sample], from: Duration, to: Duration) -> Option<Duration> {
    let mut trips: Vec<Duration> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .filter_map(|s| s.trip)
        .collect();
    trips.sort();
    trips.get(trips.len().wrapping_sub(1) / 2).copied()
}

/// "I/O 100%, CPU 1/TCG 98%": a load list in one line.
pub fn describe(loads: &[ThreadLoad]) -> String {
    if loads.is_empty() {
        return "(not sampled)".into();
    }
    loads
        .iter()
        .map(|l| format!("{} {:.0}%", l.name, l.busy * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_ms: u64, threads: &[(u32, &str, u64)]) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            threads: threads
                .iter()
                .map(|&(t, n, c)| (t, n.to_string(), c))
                .collect(),
            trip: Some(Duration::from_nanos(at_ms)),
        }
    }

    #[test]
    fn stat_fields_after_a_name_with_spaces() {
        let line = "4242 (CPU 0/TCG) R 1 2 3 4 5 6 7 8 9 10 123 45 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(line), Some(168));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn load_is_the_share_of_one_cpu_between_the_samples_in_the_span() {
        let samples = [
            s(0, &[(10, "I/O", 0), (11, "CPU 0/TCG", 0)]),
            s(1000, &[(10, "I/O", 50), (11, "CPU 0/TCG", 100)]),
            s(
                3000,
                &[(10, "I/O", 250), (11, "CPU 0/TCG", 101), (12, "worker", 1)],
            ),
            s(9000, &[(10, "I/O", 900), (11, "CPU 0/TCG", 700)]),
        ];
        let l = load(
            &samples,
            Duration::from_millis(500),
            Duration::from_millis(3500),
        );
        // 200 ticks of I/O and 1 of vCPU over 2 s; the idle vCPU and the new worker drop out.
        assert_eq!(
            l,
            vec![ThreadLoad {
                name: "I/O".into(),
                busy: 1.0
            }]
        );
        assert_eq!(describe(&l), "I/O 100%");
        assert!(load(
            &samples,
            Duration::from_millis(100),
            Duration::from_millis(900)
        )
        .is_empty());
    }

    #[test]
    fn the_trip_is_the_median_of_those_measured_in_the_span() {
        let mut samples: Vec<Sample> = [100, 200, 300, 400].map(|t| s(t, &[])).into();
        samples[2].trip = None;
        let span = |a, b| trip(&samples, Duration::from_millis(a), Duration::from_millis(b));
        // Trips of 100, 200 and 400 ns (the sample at 300 ms measured none).
        assert_eq!(span(0, 1000), Some(Duration::from_nanos(200)));
        assert_eq!(span(150, 450), Some(Duration::from_nanos(200)));
        assert_eq!(span(250, 350), None);
    }

    #[test]
    fn marks_are_found_anywhere_in_a_line() {
        assert_eq!(parse_mark("[ 1.0] zcnic-mark: begin x"), Some("begin x"));
        assert_eq!(parse_mark("zcnic-mark"), None);
        assert_eq!(mark("a"), "echo 'zcnic-mark: a'\n");
    }
}
