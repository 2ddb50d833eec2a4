//! How far apart the host's CPUs are: the time a cache line takes to go from one CPU to
//! another and back.
//!
//! Under TCG, virtio-net's device model runs on QEMU's I/O thread and the driver on a vCPU
//! thread, so every ring entry and every frame crosses between two host CPUs. On a cloud
//! machine the hypervisor moves its virtual CPUs between physical cores; when it puts this
//! machine's two far apart, each crossing costs several times more, and virtio-net's rate
//! drops by a quarter for tens of seconds (docs/performance.md, "virtio's slow mode"). The
//! bench measures the round trip beside every run, so a rate can be read with the state of
//! the machine it was measured in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Round trips in one batch; a measurement takes the median of [`BATCHES`] batch means, so
/// a batch in which the host preempted one side does not count.
const TRIPS: u32 = 100;
const BATCHES: usize = 9;
/// A side that has not answered for this long was preempted: the measurement gives up (a
/// whole healthy batch takes well under 0.1 ms).
const PATIENCE: Duration = Duration::from_millis(2);

/// The median round trip of one cache line between host CPUs `a` and `b`, or `None` when
/// either CPU cannot be used (absent, or not in the calling thread's affinity), no thread
/// can be started, or one side stalled. The calling thread runs on `a` meanwhile and gets
/// its old affinity back.
pub fn round_trip(a: usize, b: usize) -> Option<Duration> {
    let old = affinity()?;
    if a == b || !old.contains(&a) || !old.contains(&b) {
        return None;
    }
    let line = AtomicU64::new(0);
    let result = std::thread::scope(|s| {
        let echo = std::thread::Builder::new().spawn_scoped(s, || {
            pin(&[b])?;
            // Answers each value with the next one until the measurer writes u64::MAX
            // after its last trip, or stops sending.
            let mut last = 0;
            loop {
                let seen = wait_for(&line, |v| v != last)?;
                if seen == u64::MAX {
                    return Some(());
                }
                last = seen + 1;
                line.store(last, Ordering::Release);
            }
        });
        let Ok(echo) = echo else {
            return None;
        };
        let measured = pin(&[a]).and_then(|()| measure(&line));
        line.store(u64::MAX, Ordering::Release);
        let echoed = echo.join().ok().flatten();
        measured.filter(|_| echoed.is_some())
    });
    let _ = pin(&old);
    result
}

/// [`round_trip`] between the first two CPUs this process may use; `None` with one CPU.
pub fn host_round_trip() -> Option<Duration> {
    match affinity()?.as_slice() {
        [a, b, ..] => round_trip(*a, *b),
        _ => None,
    }
}

/// Sends `BATCHES × TRIPS` values through `line` and waits for each echo.
fn measure(line: &AtomicU64) -> Option<Duration> {
    let mut means = Vec::with_capacity(BATCHES);
    let mut v = 1;
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..TRIPS {
            line.store(v, Ordering::Release);
            wait_for(line, |now| now == v + 1)?;
            v += 2;
        }
        means.push(start.elapsed() / TRIPS);
    }
    means.sort();
    Some(means[BATCHES / 2])
}

/// Spins until `line` holds a value `ok` accepts; `None` after [`PATIENCE`].
fn wait_for(line: &AtomicU64, ok: impl Fn(u64) -> bool) -> Option<u64> {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let v = line.load(Ordering::Acquire);
        if ok(v) {
            return Some(v);
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) && start.elapsed() > PATIENCE {
            return None;
        }
        std::hint::spin_loop();
    }
}

/// The CPUs this thread may run on.
fn affinity() -> Option<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills it and we pass
    // its true size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: as above; pid 0 is the calling thread.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return None;
    }
    let cpus = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: every index is below CPU_SETSIZE, the set's capacity.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    Some(cpus)
}

/// Restricts the calling thread to `cpus`.
fn pin(cpus: &[usize]) -> Option<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: c is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: a valid set of its true size; pid 0 is the calling thread.
    let ok = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    (ok == 0).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_between_two_cpus_is_measured_and_the_affinity_restored() {
        let before = affinity().expect("sched_getaffinity works");
        match before.as_slice() {
            [a, b, ..] => {
                // A preempted side gives None rather than a wrong figure; other tests
                // running meanwhile preempt often on a 2-CPU machine: retry for a while.
                let t = (0..200).find_map(|_| {
                    round_trip(*a, *b).or_else(|| {
                        std::thread::sleep(Duration::from_millis(5));
                        None
                    })
                });
                let t = t.expect("two CPUs answer each other within 2 ms");
                assert!(t > Duration::ZERO && t < PATIENCE, "{t:?}");
            }
            _ => eprintln!("one CPU only: nothing to measure"),
        }
        assert_eq!(affinity(), Some(before.clone()), "affinity restored");
        assert_eq!(
            round_trip(before[0], before[0]),
            None,
            "one CPU with itself"
        );
        assert_eq!(
            round_trip(before[0], usize::MAX / 2),
            None,
            "a CPU not there"
        );
    }
}
