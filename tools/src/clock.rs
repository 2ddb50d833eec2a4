//! Reading the clock sparingly in the packet loops.
//!
//! Inside a guest whose clocksource is the HPET — QEMU under TCG, where the kernel marks
//! the TSC unstable — every clock read is a system call plus an emulated register read,
//! and that read takes QEMU's global lock, the lock the emulated NICs hold while they work.
//! pktgen read the clock three times per burst and stalled on it: on virtio-net it sent
//! 670k pps where reading the clock once per 64 bursts sends far more (see the bench
//! note). DPDK's forwarding loops do not read the clock per burst either.

use std::time::Instant;

/// A clock for a busy loop: reads the system clock on every `every`th call to
/// [`now_ns`](LoopClock::now_ns) and repeats that value in between.
#[derive(Debug, Clone)]
pub struct LoopClock {
    epoch: Instant,
    every: u32,
    left: u32,
    ns: u64,
}

impl LoopClock {
    /// A clock counting from now that reads the system clock once per `every` calls
    /// (1: every call).
    pub fn new(every: u32) -> Self {
        Self {
            epoch: Instant::now(),
            every: every.max(1),
            left: 0,
            ns: 0,
        }
    }

    /// When the clock started.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Nanoseconds since the start, at most `every - 1` calls old.
    #[inline]
    pub fn now_ns(&mut self) -> u64 {
        if self.left == 0 {
            return self.read_ns();
        }
        self.left -= 1;
        self.ns
    }

    /// Nanoseconds since the start, read from the system clock now.
    pub fn read_ns(&mut self) -> u64 {
        self.ns = self.epoch.elapsed().as_nanos() as u64;
        self.left = self.every - 1;
        self.ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_once_per_every_calls() {
        let mut c = LoopClock::new(4);
        let first = c.now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        // The next three calls repeat the first reading; the fourth reads again.
        assert_eq!([c.now_ns(), c.now_ns(), c.now_ns()], [first; 3]);
        assert!(c.now_ns() >= first + 2_000_000);
        let mut every = LoopClock::new(1);
        let a = every.now_ns();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(every.now_ns() > a);
    }
}
