//! `zcnic fwd`: forward frames between two ports (or back out of one), testpmd-style.
//!
//! Zero copy: the `Packet` received is the one transmitted — the descriptor on the way out
//! points at the buffer the other NIC wrote (all ports of a process share one IOMMU
//! address space). A burst the transmit ring cannot take waits, and receiving on that
//! direction pauses until it is gone, so the forwarder itself loses nothing.

use crate::clock::LoopClock;
use crate::{stopped, ToolError};
use std::io::Write;
use std::time::{Duration, Instant};
use zcnic::{Nic, Packet};

/// Most sent packets one `tx_batch_recycle` call hands back: a whole ring of the largest
/// size a driver takes (the e1000's 4096), so the spares never reallocate in the loop.
const MAX_HANDED_BACK: usize = 4096;

/// What happens to a frame on its way through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Unchanged.
    Io,
    /// Source and destination MAC swapped.
    Macswap,
}

/// How to forward.
#[derive(Debug, Clone)]
pub struct Args {
    /// Frame handling.
    pub mode: Mode,
    /// Frames per receive burst.
    pub burst: usize,
    /// Debugging aid: drop every Nth frame received on each direction (the Nth, 2Nth, …).
    pub drop_every: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// No per-second lines (a caller prints its own: `fwd --queues`).
    pub quiet: bool,
    /// What to do when a round receives nothing (`--idle`).
    pub idle: crate::idle::Idle,
    /// Give the CPU away (`sched_yield`) after a round in which nothing arrived: for
    /// several forwarding threads sharing fewer CPUs (`fwd --queues`).
    pub yield_idle: bool,
    /// The queue index this thread forwards (`fwd --queues`): its idle line names it and
    /// is printed even when `quiet`.
    pub queue: Option<u16>,
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Frames received.
    pub rx: u64,
    /// Frames handed to the transmit port.
    pub tx: u64,
    /// Frames dropped on purpose (`--drop-every`).
    pub dropped: u64,
}

struct Direction {
    from: usize,
    to: usize,
    pending: Vec<Packet>,
    /// Sent packets handed back, for `from`'s next receive refills.
    spare: Vec<Packet>,
    stats: DirStats,
}

fn macswap(p: &mut Packet) {
    let d = p.data_mut();
    if d.len() >= 12 {
        for i in 0..6 {
            d.swap(i, i + 6);
        }
    }
}

/// Forwards until the duration or Ctrl-C; a line per direction every second. Returns the
/// counters of each direction (`from`, `to`, stats).
pub fn run(
    ports: &mut [Box<dyn Nic>],
    args: &Args,
) -> Result<Vec<(usize, usize, DirStats)>, ToolError> {
    let burst = args.burst.clamp(1, 512);
    // Spares kept per direction: two bursts, and at least what one hand-back can hold
    // (the e1000 hands sent packets back 32 at a time, virtio-net up to its whole queue of
    // 256 once it runs short of room), so small bursts recycle too.
    let spare_cap = (2 * burst).max(256);
    let mut dirs: Vec<Direction> = match ports.len() {
        1 => vec![(0, 0)],
        _ => vec![(0, 1), (1, 0)],
    }
    .into_iter()
    .map(|(from, to)| Direction {
        from,
        to,
        pending: Vec::with_capacity(burst),
        spare: Vec::with_capacity(spare_cap + MAX_HANDED_BACK),
        stats: DirStats::default(),
    })
    .collect();
    let mut clock = LoopClock::new();
    let end = args.duration.map(|d| d.as_nanos() as u64);
    let mut last = 0u64;
    let mut last_stats: Vec<DirStats> = dirs.iter().map(|d| d.stats).collect();
    // Locked only to print a line: other threads (`--queues`) print too.
    let stdout = std::io::stdout();
    let mut link_tick = crate::link::Tick::new();
    let mut idler = crate::idle::Idler::new(args.idle);
    loop {
        let now = clock.now_ns();
        if stopped() || end.is_some_and(|e| now >= e) {
            break;
        }
        if link_tick.due(now) {
            for p in ports.iter_mut() {
                crate::link::report("fwd", p.as_mut());
            }
        }
        let mut idle = true;
        for d in &mut dirs {
            if d.pending.is_empty() {
                let n = ports[d.from].rx_batch_recycle(&mut d.pending, burst, &mut d.spare);
                idle &= n == 0;
                let first = d.stats.rx;
                d.stats.rx += n as u64;
                if let Some(every) = args.drop_every.filter(|e| *e > 0) {
                    // Keep frame k (1-based count) unless k is a multiple of `every`.
                    let mut k = first;
                    let before = d.pending.len();
                    d.pending.retain(|_| {
                        k += 1;
                        k % every != 0
                    });
                    d.stats.dropped += (before - d.pending.len()) as u64;
                }
                if args.mode == Mode::Macswap {
                    d.pending.iter_mut().for_each(macswap);
                }
            }
            if !d.pending.is_empty() {
                let sent = ports[d.to].tx_batch_recycle(&mut d.pending, &mut d.spare);
                d.stats.tx += sent as u64;
                // Sent packets come back and are received into again, so no buffer goes
                // through the pool. A port that takes none leaves them here: beyond
                // `spare_cap` the oldest go back to the pool.
                if d.spare.len() > spare_cap {
                    Packet::drop_all(d.spare.drain(..d.spare.len() - spare_cap));
                }
            }
        }
        if idle && args.yield_idle {
            std::thread::yield_now();
        }
        // Sleep only with nothing left to send either.
        let waiting = dirs.iter().any(|d| !d.pending.is_empty());
        if idler.due(usize::from(!idle || waiting)) {
            idler.sleep("fwd", ports);
        }
        if !args.quiet && now.saturating_sub(last) >= 1_000_000_000 {
            let dt = (now - last) as f64 / 1e9;
            last = now;
            let mut out = stdout.lock();
            for (d, prev) in dirs.iter().zip(&mut last_stats) {
                let _ = writeln!(
                    out,
                    "fwd {} -> {}: {:6.1} s  rx {:>9.0} pps  tx {:>9.0} pps  total rx {} tx {} dropped {}",
                    ports[d.from].name(),
                    ports[d.to].name(),
                    now as f64 / 1e9,
                    (d.stats.rx - prev.rx) as f64 / dt,
                    (d.stats.tx - prev.tx) as f64 / dt,
                    d.stats.rx,
                    d.stats.tx,
                    d.stats.dropped
                );
                *prev = d.stats;
            }
            let _ = out.flush();
        }
    }
    if args.idle != crate::idle::Idle::Poll {
        match args.queue {
            Some(k) => println!("fwd: queue {k} {}", idler.describe()),
            None if !args.quiet => println!("fwd: {}", idler.describe()),
            None => {}
        }
    }
    // Whatever is still waiting goes out before the ports close.
    for d in &mut dirs {
        let end = Instant::now() + Duration::from_millis(500);
        while !d.pending.is_empty() && Instant::now() < end {
            d.stats.tx += ports[d.to].tx_batch(&mut d.pending) as u64;
        }
    }
    Ok(dirs.into_iter().map(|d| (d.from, d.to, d.stats)).collect())
}

/// `fwd`'s last lines: each port's pool, counted once its port is closed (every buffer a
/// ring held is back by then, so anything short of full is a leak).
pub fn print_pools(addrs: &[impl std::fmt::Display], pools: &[std::sync::Arc<zcnic::Mempool>]) {
    for (a, p) in addrs.iter().zip(pools) {
        println!(
            "fwd {a}: {} of {} buffers back in the pool",
            p.free_count(),
            p.capacity()
        );
    }
}
