//! `--idle`: what a receive loop does when a poll finds nothing.
//!
//! - `poll`: poll again at once. Lowest latency and highest rate; a whole core even when
//!   nothing arrives. `fwd`'s default (benchmarks).
//! - `sleep`: arm the port's receive interrupt after every empty poll and sleep until a
//!   frame comes. Least CPU; every frame after a quiet spell pays a wake-up.
//! - `hybrid[=N]`: poll while frames come; after N empty polls in a row (default
//!   [`HYBRID_POLLS`]), arm and sleep. Busy ports cost what `poll` costs, idle ones almost
//!   nothing (DPDK's l3fwd-power pattern). `dump`'s and `stats`' default.
//!
//! The e1000 sleeps on INTx (vfio-pci or uio_pci_generic), a modern virtio-net and the igb
//! on an MSI-X vector per queue (vfio-pci), a one-pair legacy virtio-net on INTx (vfio-pci
//! or uio_pci_generic). With `--queues N` (`dump`, `fwd`, `stats`) each queue's thread
//! sleeps on its own queue's vector. A port without a receive interrupt (a modern
//! virtio-net or igb under uio, a multi-queue port without MSI-X) polls whatever the mode,
//! after one line saying so. A sleep lasts at most [`NAP`], so the loop still sees its
//! duration end, Ctrl-C and link events.

use crate::{msg, ToolError};
use std::ops::DerefMut;
use std::os::fd::BorrowedFd;
use std::str::FromStr;
use std::time::Duration;
use zcnic::Nic;

/// Empty polls before a `hybrid` loop sleeps, when `--idle hybrid` names no count.
pub const HYBRID_POLLS: u32 = 1000;

/// The longest one sleep lasts.
pub const NAP: Duration = Duration::from_millis(100);

/// An `--idle` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Never sleep.
    Poll,
    /// Sleep after every empty poll.
    Sleep,
    /// Sleep after this many empty polls in a row.
    Hybrid(u32),
}

impl FromStr for Idle {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "poll" => Ok(Idle::Poll),
            "sleep" => Ok(Idle::Sleep),
            "hybrid" => Ok(Idle::Hybrid(HYBRID_POLLS)),
            _ => match s.strip_prefix("hybrid=").map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => Ok(Idle::Hybrid(n)),
                _ => Err(format!(
                    "`{s}`: give poll, sleep, hybrid or hybrid=N with N > 0 empty polls"
                )),
            },
        }
    }
}

impl std::fmt::Display for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Idle::Poll => write!(f, "poll"),
            Idle::Sleep => write!(f, "sleep"),
            Idle::Hybrid(n) => write!(f, "hybrid={n}"),
        }
    }
}

/// A receive loop's idle policy at work: counts empty polls and sleeps when the mode says.
#[derive(Debug)]
pub struct Idler {
    mode: Idle,
    empty: u32,
    /// Sleeps the receive interrupt ended.
    pub wakes: u64,
    /// Sleeps not begun: arming found a frame already waiting.
    pub ready: u64,
    /// Sleeps that ran to [`NAP`] with nothing arriving.
    pub naps: u64,
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
            wakes: 0,
            ready: 0,
            naps: 0,
        }
    }

    /// The mode in force (`poll` once a port turned out to have no interrupt).
    pub fn mode(&self) -> Idle {
        self.mode
    }

    /// Counts a poll that received `got` frames; true when the loop should sleep now
    /// ([`sleep`](Self::sleep)). Cheap: no system call, nothing allocated.
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
        match sleep(ports, NAP) {
            Ok(Woke::Interrupt) => self.wakes += 1,
            Ok(Woke::Ready) => self.ready += 1,
            Ok(Woke::Timeout) => self.naps += 1,
            Err(e) => {
                eprintln!("{tool}: --idle {}: {e}; polling instead", self.mode);
                self.mode = Idle::Poll;
            }
        }
    }

    /// [`sleep`](Self::sleep) for one queue of a multi-queue port, on its own vector (a
    /// worker thread per queue, each with its own `Idler`).
    pub fn sleep_queue(&mut self, tool: &str, rx: &mut dyn zcnic::RxQueue) {
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
            Ok(Woke::Interrupt) => self.wakes += 1,
            Ok(Woke::Ready) => self.ready += 1,
            Ok(Woke::Timeout) => self.naps += 1,
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

    /// The summary line's words: `idle hybrid=1000: 12 wakes, 3 ready, 50 naps` (woken
    /// by the interrupt, frames found when arming, naps that ran out).
    pub fn describe(&self) -> String {
        format!(
            "idle {}: {} wakes, {} ready, {} naps",
            self.mode, self.wakes, self.ready, self.naps
        )
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
        assert_eq!("hybrid".parse(), Ok(Idle::Hybrid(HYBRID_POLLS)));
        assert_eq!("hybrid=7".parse(), Ok(Idle::Hybrid(7)));
        for bad in ["hybrid=0", "hybrid=", "hybrid=x", "spin", ""] {
            assert!(bad.parse::<Idle>().is_err(), "{bad}");
        }
        assert_eq!(Idle::Hybrid(7).to_string(), "hybrid=7");
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
