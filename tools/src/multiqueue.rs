//! `zcnic pktgen --queues N`: one sending thread per transmit queue of a multi-queue port,
//! each running the ordinary generator on its own queue. Queue k sends stream
//! `--stream + k`, numbered from 0, at `--rate / N`, and its share of `--count`, so a
//! capture shows N streams, each complete and in order on its own.

use crate::pktgen::{self, Args, Rx, Summary};
use crate::{msg, ToolError};
use std::sync::Arc;
use zcnic::{Link, Mempool, Nic, Packet, PciAddr, Port, QueuePair, Stats};

/// One queue pair behind the [`Nic`] trait, so the generator drives it unchanged. It has
/// no device counters (those are the port's) and no filters.
#[derive(Debug)]
pub struct QueueNic {
    pair: QueuePair,
    addr: PciAddr,
    driver: &'static str,
    mac: [u8; 6],
    link: Link,
}

impl Nic for QueueNic {
    fn addr(&self) -> PciAddr {
        self.addr
    }
    fn driver(&self) -> &'static str {
        self.driver
    }
    fn pool(&self) -> &Arc<Mempool> {
        self.pair.tx.pool()
    }
    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.pair.rx.rx_batch(out, max)
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
        self.pair.tx.tx_batch(pkts)
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
}

/// What queue `k` of `n` sends: its stream, its share of the count, its share of the
/// rate.
pub fn share(args: &Args, k: u16, n: u16) -> Args {
    let (k64, n64) = (u64::from(k), u64::from(n));
    Args {
        count: args.count.map(|c| c / n64 + u64::from(k64 < c % n64)),
        rate: args.rate.map(|r| r / f64::from(n)),
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
            let mut nic = QueueNic {
                pair,
                addr: port.addr(),
                driver: port.driver(),
                mac: port.mac(),
                link: port.link(),
            };
            let mine = Args {
                quiet: true,
                ..share(args, k as u16, n)
            };
            std::thread::spawn(move || pktgen::run(&mut nic, Rx::None, &mine))
        })
        .collect();
    progress(port, &threads);
    let mut each = Vec::new();
    for t in threads {
        let s = t.join().map_err(|_| msg("a sending thread panicked"))??;
        each.push(s);
    }
    let stats = port.stats();
    let total = Summary {
        port: port.addr(),
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

/// The per-second lines of the whole port while the queues send, in the form of a
/// one-queue run's (`cargo xtask bench` reads them): the frames every queue has handed
/// to the device, from the queues' own counters, and the device's GPTC.
fn progress<T>(port: &mut dyn Port, threads: &[std::thread::JoinHandle<T>]) {
    let addr = port.addr();
    let start = std::time::Instant::now();
    let (mut last_t, mut last_sent) = (0.0, 0u64);
    let mut next = std::time::Duration::from_secs(1);
    while !threads.iter().all(|t| t.is_finished()) {
        if start.elapsed() < next {
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        next += std::time::Duration::from_secs(1);
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
