//! `zcnic pktgen --queues N`: one sending thread per transmit queue of a multi-queue port,
//! each running the ordinary generator on its own queue. Queue k sends stream
//! `--stream + k`, numbered from 0, at `--rate / N`, and its share of `--count`, so a
//! capture shows N streams, each complete and in order on its own.

use crate::pktgen::{self, Args, Rx, Summary};
use crate::{msg, ToolError};
use std::sync::Arc;
use zcnic::{Link, Mempool, Nic, Packet, PciAddr, PoolCache, Port, QueuePair, Stats, CACHE_SIZE};

/// One queue pair behind the [`Nic`] trait, so the generator drives it unchanged. It has
/// no device counters (those are the port's) and no filters. Its burst calls go through
/// the thread's own cache of the pool (the queues' `*_cached` calls), as a DPDK lcore's do.
#[derive(Debug)]
pub struct QueueNic {
    pair: QueuePair,
    cache: PoolCache,
    addr: PciAddr,
    name: String,
    driver: &'static str,
    mac: [u8; 6],
    link: Link,
}

impl QueueNic {
    /// Queue pair `pair` of `port`, as a one-queue port.
    pub fn new(pair: QueuePair, port: &dyn Port) -> Self {
        let cache = pair.tx.pool().cache(CACHE_SIZE / 2);
        Self {
            pair,
            cache,
            addr: port.addr(),
            name: port.name(),
            driver: port.driver(),
            mac: port.mac(),
            link: port.link(),
        }
    }
}

impl Nic for QueueNic {
    fn addr(&self) -> PciAddr {
        self.addr
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn driver(&self) -> &'static str {
        self.driver
    }
    fn pool(&self) -> &Arc<Mempool> {
        self.pair.tx.pool()
    }
    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.pair.rx.rx_batch_cached(out, max, &mut self.cache)
    }
    fn rx_batch_recycle(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        spare: &mut Vec<Packet>,
    ) -> usize {
        self.pair.rx.rx_batch_recycle(out, max, spare)
    }
    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        self.pair.tx.tx_batch_cached(pkts, &mut self.cache)
    }
    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        self.pair.tx.tx_batch_recycle(pkts, done)
    }
    fn flush(&mut self) -> bool {
        self.pair.tx.flush()
    }
    fn stats(&mut self) -> Stats {
        Stats::default()
    }
    fn link(&self) -> Link {
        self.link
    }
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    fn set_promisc(&mut self, _on: bool) {}
    fn set_allmulti(&mut self, _on: bool) -> Result<(), zcnic::Error> {
        Err(self.no_filters())
    }
    fn add_multicast(&mut self, _mac: [u8; 6]) -> Result<(), zcnic::Error> {
        Err(self.no_filters())
    }
    fn remove_multicast(&mut self, _mac: [u8; 6]) -> Result<(), zcnic::Error> {
        Err(self.no_filters())
    }
    fn add_unicast(&mut self, _mac: [u8; 6]) -> Result<(), zcnic::Error> {
        Err(self.no_filters())
    }
    fn remove_unicast(&mut self, _mac: [u8; 6]) -> Result<(), zcnic::Error> {
        Err(self.no_filters())
    }
    /// The queue's own receive interrupt (its MSI-X vector), so a forwarding thread
    /// sleeps on its queues alone.
    fn rx_interrupt_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>, zcnic::Error> {
        self.pair.rx.rx_interrupt_fd()
    }
    fn enable_rx_interrupt(&mut self) -> Result<bool, zcnic::Error> {
        self.pair.rx.enable_rx_interrupt()
    }
    fn disable_rx_interrupt(&mut self) -> Result<(), zcnic::Error> {
        self.pair.rx.disable_rx_interrupt()
    }
}

impl QueueNic {
    /// Filters are the port's: a queue handle says where to set them.
    fn no_filters(&self) -> zcnic::Error {
        zcnic::Error::Filter {
            addr: self.addr,
            source: zcnic::FilterError::Unsupported(format!(
                "queue {} of this {} port has no filters of its own: set them on its Port",
                self.pair.rx.queue(),
                self.driver
            )),
        }
    }
}

/// Sets the tool's stop flag when dropped armed: a thread that fails or panics stops its
/// siblings, instead of leaving them running until Ctrl-C.
struct StopOthers(bool);

impl Drop for StopOthers {
    fn drop(&mut self) {
        if self.0 {
            crate::STOP.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Runs `work` on a thread of its own; its failure (an error or a panic) stops the others.
pub(crate) fn spawn_stopping<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ToolError> + Send + 'static,
) -> std::thread::JoinHandle<Result<T, ToolError>> {
    std::thread::spawn(move || {
        let mut guard = StopOthers(true);
        let r = work();
        guard.0 = r.is_err();
        r
    })
}

/// Joins every thread, then returns their results, or the first failure.
pub(crate) fn join_all<T>(
    threads: Vec<std::thread::JoinHandle<Result<T, ToolError>>>,
    what: &str,
) -> Result<Vec<T>, ToolError> {
    let results: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    results
        .into_iter()
        .map(|r| r.map_err(|_| msg(format!("a {what} thread panicked")))?)
        .collect()
}

/// What queue `k` of `n` sends: its stream, its share of the count, its share of the
/// rate.
pub fn share(args: &Args, k: u16, n: u16) -> Args {
    let (k64, n64) = (u64::from(k), u64::from(n));
    Args {
        count: args.count.map(|c| c / n64 + u64::from(k64 < c % n64)),
        rate: args.rate.map(|r| r / f64::from(n)),
        // Each queue falls silent after its share of a stretch, so the silences line up.
        gap: args.gap.map(|g| crate::pace::Gap {
            every: (g.every / u64::from(n)).max(1),
            ..g
        }),
        flow: crate::frame::Flow {
            stream: args.flow.stream.wrapping_add(k),
            ..args.flow
        },
        ..args.clone()
    }
}

/// Runs the generator on every queue of `port`, one thread each, and sums what they sent;
/// the device's counters are the port's, read once every queue has flushed. Returns the
/// total and each queue's own summary.
pub fn run(
    port: &mut dyn Port,
    queues: Vec<QueuePair>,
    args: &Args,
) -> Result<(Summary, Vec<Summary>), ToolError> {
    if args.ceiling {
        return Err(msg("--ceiling measures one queue: run it without --queues"));
    }
    let n = queues.len() as u16;
    let threads: Vec<_> = queues
        .into_iter()
        .enumerate()
        .map(|(k, pair)| {
            let mut nic = QueueNic::new(pair, port);
            let mine = Args {
                quiet: true,
                ..share(args, k as u16, n)
            };
            spawn_stopping(move || pktgen::run(&mut nic, Rx::None, &mine))
        })
        .collect();
    progress(port, &threads);
    let each = join_all(threads, "sending")?;
    let stats = port.stats();
    let total = Summary {
        port: port.name(),
        sent: each.iter().map(|s| s.sent).sum(),
        bytes: each.iter().map(|s| s.bytes).sum(),
        secs: each.iter().map(|s| s.secs).fold(0.0, f64::max),
        device: ["GPTC", "TPT"]
            .iter()
            .filter_map(|n| stats.hw(n).map(|v| (*n, v)))
            .collect(),
        rx: None,
        flushed: each.iter().all(|s| s.flushed),
    };
    Ok((total, each))
}

/// `zcnic fwd --queues N`: one forwarding thread per queue index, queue k of each port
/// with queue k of the other (or of itself with one port), each running the ordinary
/// forwarder; a line per direction every second from the ports' per-queue counters.
/// Returns each direction's totals, and each queue's.
pub fn forward(
    ports: &mut [Box<dyn Port>],
    queues: Vec<Vec<QueuePair>>,
    args: &crate::fwd::Args,
) -> Result<Vec<(usize, usize, DirTotals)>, ToolError> {
    let n = queues.first().map_or(0, Vec::len);
    let mut by_queue: Vec<Vec<Box<dyn Nic>>> = (0..n).map(|_| Vec::new()).collect();
    for (port, pairs) in ports.iter().zip(queues) {
        for (k, pair) in pairs.into_iter().enumerate() {
            by_queue[k].push(Box::new(QueueNic::new(pair, port.as_ref())));
        }
    }
    // More forwarding threads than vCPUs is common in a VM: an idle one gives its CPU
    // away, or a busy one may keep it (under QEMU's TCG for seconds). With `--idle`, each
    // thread sleeps on its own queues' vectors (queue k of each port), as `dump --queues`'
    // workers do.
    let quiet = crate::fwd::Args {
        quiet: true,
        yield_idle: true,
        ..args.clone()
    };
    let threads: Vec<_> = by_queue
        .into_iter()
        .enumerate()
        .map(|(k, mut nics)| {
            let a = crate::fwd::Args {
                queue: Some(k as u16),
                ..quiet.clone()
            };
            spawn_stopping(move || crate::fwd::run(&mut nics, &a))
        })
        .collect();
    let dirs: Vec<(usize, usize)> = if ports.len() == 1 {
        vec![(0, 0)]
    } else {
        vec![(0, 1), (1, 0)]
    };
    let start = std::time::Instant::now();
    let mut next = std::time::Duration::from_secs(1);
    let (mut last_t, mut last) = (0.0, vec![(0u64, 0u64); dirs.len()]);
    while !threads.iter().all(|t| t.is_finished()) {
        // The queues' threads never see the port: link events are this loop's, every
        // 10 ms nap.
        for p in ports.iter_mut() {
            crate::link::report_port("fwd", p.as_mut());
        }
        if start.elapsed() < next {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        // A second from now, not from the tick missed: a stalled printer skips lines
        // rather than bunching them.
        next = start.elapsed() + std::time::Duration::from_secs(1);
        let t = start.elapsed().as_secs_f64();
        let dt = t - last_t;
        for (&(from, to), prev) in dirs.iter().zip(&mut last) {
            let rx: u64 = ports[from].queue_stats().iter().map(|s| s.rx_packets).sum();
            let tx: u64 = ports[to].queue_stats().iter().map(|s| s.tx_packets).sum();
            println!(
                "fwd {} -> {}: {t:6.1} s  rx {:>9.0} pps  tx {:>9.0} pps  total rx {rx} tx {tx}",
                ports[from].name(),
                ports[to].name(),
                (rx - prev.0) as f64 / dt,
                (tx - prev.1) as f64 / dt,
            );
            *prev = (rx, tx);
        }
        last_t = t;
    }
    let mut totals: Vec<(usize, usize, DirTotals)> = dirs
        .iter()
        .map(|&(f, t)| (f, t, DirTotals::default()))
        .collect();
    for each in join_all(threads, "forwarding")? {
        for ((_, _, tot), (_, _, s)) in totals.iter_mut().zip(each) {
            tot.total.rx += s.rx;
            tot.total.tx += s.tx;
            tot.total.dropped += s.dropped;
            tot.per_queue.push(s);
        }
    }
    Ok(totals)
}

/// One direction's counters over every queue, and each queue's.
#[derive(Debug, Clone, Default)]
pub struct DirTotals {
    /// The sum.
    pub total: crate::fwd::DirStats,
    /// By queue.
    pub per_queue: Vec<crate::fwd::DirStats>,
}

/// The per-second lines of the whole port while the queues send, in the form of a
/// one-queue run's (`cargo xtask bench` reads them): the frames every queue has handed
/// to the device, from the queues' own counters, and the device's GPTC.
pub(crate) fn progress<T>(port: &mut dyn Port, threads: &[std::thread::JoinHandle<T>]) {
    let addr = port.name();
    let start = std::time::Instant::now();
    let (mut last_t, mut last_sent) = (0.0, 0u64);
    let mut next = std::time::Duration::from_secs(1);
    while !threads.iter().all(|t| t.is_finished()) {
        // The queues' threads never see the port: link events are this loop's.
        crate::link::report_port("pktgen", port);
        if start.elapsed() < next {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        next = start.elapsed() + std::time::Duration::from_secs(1);
        let t = start.elapsed().as_secs_f64();
        let sent: u64 = port.queue_stats().iter().map(|s| s.tx_packets).sum();
        let pps = (sent - last_sent) as f64 / (t - last_t);
        println!(
            "pktgen {addr}: {t:6.1} s  tx {pps:>9.0} pps  total {sent}{}",
            device_line(port)
        );
        (last_t, last_sent) = (t, sent);
    }
}

/// `"  device GPTC N"` for the port, as a one-queue run prints it.
fn device_line(port: &mut dyn Port) -> String {
    port.stats()
        .hw("GPTC")
        .map_or(String::new(), |n| format!("  device GPTC {n}"))
}

/// `zcnic fwd --queues N` on the command line: open the ports (a PCI address spelled in
/// full, or `xdp:IFACE`), forward, print the totals.
pub fn fwd_cmd(
    names: &[String],
    cfg: &zcnic::Config,
    args: &crate::fwd::Args,
) -> Result<(), ToolError> {
    let (mut ports, mut queues) = (Vec::new(), Vec::new());
    for a in names {
        let (p, q) = zcnic::open_port(a, cfg)?;
        println!(
            "fwd: {a} {} {}, link {}, {} queues (RSS)",
            p.driver(),
            zcnic::format_mac(p.mac()),
            p.link(),
            q.len()
        );
        ports.push(p);
        queues.push(q);
    }
    println!(
        "fwd: {:?} mode, burst {}, one thread per queue; Ctrl-C stops",
        args.mode, args.burst
    );
    let pools: Vec<_> = queues
        .iter()
        .filter_map(|q: &Vec<QueuePair>| q.first().map(|p| p.rx.pool().clone()))
        .collect();
    let totals = forward(&mut ports, queues, args)?;
    for (from, to, t) in totals {
        let (a, b) = (ports[from].name(), ports[to].name());
        for (k, s) in t.per_queue.iter().enumerate() {
            println!(
                "fwd {a} -> {b}: queue {k}: received {}, forwarded {}",
                s.rx, s.tx
            );
        }
        println!(
            "fwd {a} -> {b}: received {}, forwarded {}, dropped on purpose {}",
            t.total.rx, t.total.tx, t.total.dropped
        );
    }
    drop(ports); // the queues are gone: this stops DMA, and every buffer is back
    crate::fwd::print_pools(names, &pools);
    Ok(())
}

/// `zcnic stats --queues N`'s receiving: one thread per queue pair for `d` (or until
/// Ctrl-C), each dropping what it receives and sleeping on its own queue's interrupt as
/// `idle` says. Returns each queue's idle words (`queue 0 idle hybrid=1000: …`).
pub fn receive_queues(
    pairs: Vec<QueuePair>,
    d: std::time::Duration,
    idle: crate::idle::Idle,
) -> Result<Vec<String>, ToolError> {
    let end = d.as_nanos() as u64;
    let threads: Vec<_> = pairs
        .into_iter()
        .map(|mut q| {
            spawn_stopping(move || {
                let mut idler = crate::idle::Idler::new(idle);
                let mut clock = crate::clock::LoopClock::new();
                let mut buf = Vec::with_capacity(64);
                while clock.now_ns() < end && !crate::stopped() {
                    let got = q.rx.rx_batch(&mut buf, 64);
                    buf.clear();
                    if idler.due(got) {
                        idler.sleep_queue("stats", q.rx.as_mut());
                    } else if got == 0 && idle == crate::idle::Idle::Poll {
                        // More receiving threads than vCPUs is common in a VM: a polling
                        // one gives its core away when idle. A sleeping mode does not (a
                        // system call per empty poll, 1000 of them before each sleep in
                        // hybrid, cost more than the sleeps saved: 4.6% of a core for two
                        // idle igb queues under TCG).
                        std::thread::yield_now();
                    }
                }
                Ok(format!("queue {} {}", q.rx.queue(), idler.describe()))
            })
        })
        .collect();
    join_all(threads, "receiving")
}

/// `zcnic pktgen --queues N` on the command line: open the port, send, print the totals.
pub fn pktgen_cmd(addr: &str, c: &crate::cli::PktgenCmd, args: &Args) -> Result<(), ToolError> {
    if c.rx.is_some() || c.json {
        return Err(msg(
            "--queues sends only, in text: drop --rx/--json, and receive with `zcnic dump --queues`",
        ));
    }
    let cfg = zcnic::Config {
        queues: c.queues,
        ..c.port.config()
    };
    let (mut port, queues) = zcnic::open_port(addr, &cfg)?;
    println!(
        "pktgen {addr}: {} {}, link {}, {} queues, streams {}..={}",
        port.driver(),
        zcnic::format_mac(port.mac()),
        port.link(),
        c.queues,
        args.flow.stream,
        args.flow.stream.wrapping_add(c.queues - 1),
    );
    let (total, each) = run(port.as_mut(), queues, args)?;
    for (k, s) in each.iter().enumerate() {
        println!(
            "pktgen {addr}: queue {k}: {} frames sent (stream {}), {:.0} pps",
            s.sent,
            args.flow.stream.wrapping_add(k as u16),
            s.pps()
        );
    }
    for line in pktgen::summary_lines(&total) {
        println!("{line}");
    }
    pktgen::unflushed(&total).map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(count: Option<u64>) -> Args {
        Args {
            sizes: pktgen::Sizes::Fixed(60),
            count,
            duration: None,
            batch: 32,
            rate: Some(1000.0),
            flow: crate::frame::Flow {
                stream: 5,
                ..Default::default()
            },
            flows: 1,
            rx_wait: Duration::ZERO,
            zero_copy: false,
            ceiling: false,
            quiet: false,
            offload: None,
            bad_csum: false,
            template: None,
            pacing: crate::pace::Pacing::Burst,
            gap: None,
        }
    }

    #[test]
    fn shares_cover_the_count_exactly_with_a_stream_each() {
        let a = args(Some(10));
        let shares: Vec<_> = (0..3).map(|k| share(&a, k, 3)).collect();
        let counts: Vec<_> = shares.iter().map(|s| s.count.unwrap()).collect();
        assert_eq!(counts, [4, 3, 3]);
        let streams: Vec<_> = shares.iter().map(|s| s.flow.stream).collect();
        assert_eq!(streams, [5, 6, 7]);
        assert!(shares.iter().all(|s| s.rate == Some(1000.0 / 3.0)));
        assert_eq!(
            share(&args(None), 1, 2).count,
            None,
            "no count: each runs until stopped"
        );
    }
}
