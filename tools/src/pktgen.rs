//! `zcnic pktgen`: send numbered frames as fast as the NIC takes them, or at a set rate.

use crate::frame::{self, Flow};
use crate::{stopped, ToolError};
use std::io::Write;
use std::time::{Duration, Instant};
use zcnic::{Nic, Packet};

/// What to send.
#[derive(Debug, Clone)]
pub struct Args {
    /// Frame size in bytes, without FCS (60..=1514).
    pub size: usize,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Frames per burst.
    pub batch: usize,
    /// Packets per second; `None` sends flat out.
    pub rate: Option<f64>,
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Stream id in every payload.
    pub stream: u16,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Frames the NIC accepted.
    pub sent: u64,
    /// Seconds from the first to the last burst.
    pub secs: f64,
    /// The device's own transmit counters (e1000: GPTC), when it has them.
    pub device_counters: Vec<(&'static str, u64)>,
}

impl Summary {
    /// Frames per second.
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9)
    }
}

fn mbps(pps: f64, size: usize) -> f64 {
    pps * size as f64 * 8.0 / 1e6
}

/// Sends until the count, the duration or Ctrl-C; prints a line every second.
pub fn run(nic: &mut dyn Nic, args: &Args) -> Result<Summary, ToolError> {
    let addr = nic.addr();
    let flow = Flow {
        src_mac: nic.mac(),
        dst_mac: args.dst_mac,
        stream: args.stream,
        ..Flow::default()
    };
    let tmpl = frame::template(&flow, args.size);
    let pool = nic.pool().clone();
    let batch = args.batch.clamp(1, 256);
    let limit = args.count.unwrap_or(u64::MAX);
    let mut pending: Vec<Packet> = Vec::with_capacity(batch);
    let (mut seq, mut sent) = (0u64, 0u64);
    let start = Instant::now();
    let end = args.duration.map(|d| start + d);
    let (mut last_t, mut last_sent) = (start, 0u64);
    let mut out = std::io::stdout().lock();

    loop {
        let now = Instant::now();
        if stopped() || end.is_some_and(|e| now >= e) || (seq >= limit && pending.is_empty()) {
            break;
        }
        let elapsed_ns = now.duration_since(start).as_nanos() as u64;
        let mut want = (batch - pending.len()).min((limit - seq) as usize);
        if let Some(rate) = args.rate {
            let due = (rate * elapsed_ns as f64 / 1e9) as u64;
            want = want.min(due.saturating_sub(seq) as usize);
        }
        let have = pending.len();
        pool.alloc_batch(&mut pending, want);
        for p in &mut pending[have..] {
            // The pool's buffers hold 2048 bytes; sizes are checked to be <= 1514.
            let _ = p.set_len(tmpl.len());
            let data = p.data_mut();
            data.copy_from_slice(&tmpl);
            frame::stamp(data, seq, elapsed_ns, args.stream);
            seq += 1;
        }
        sent += nic.tx_batch(&mut pending) as u64;

        if now.duration_since(last_t) >= Duration::from_secs(1) {
            let dt = now.duration_since(last_t).as_secs_f64();
            let pps = (sent - last_sent) as f64 / dt;
            let _ = writeln!(
                out,
                "pktgen {addr}: {:6.1} s  tx {:>9.0} pps  {:>8.1} Mbit/s  total {sent}",
                now.duration_since(start).as_secs_f64(),
                pps,
                mbps(pps, tmpl.len()),
            );
            let _ = out.flush();
            (last_t, last_sent) = (now, sent);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(pending); // stamped but never queued: not sent, so no gap in what was
    if !nic.flush() {
        log::warn!("{addr}: the device had not sent everything when pktgen stopped");
    }
    let stats = nic.stats();
    let device_counters = ["GPTC", "TPT"]
        .iter()
        .filter_map(|n| stats.hw(n).map(|v| (*n, v)))
        .collect();
    Ok(Summary {
        sent,
        secs,
        device_counters,
    })
}

/// The final line: `pktgen ADDR: sent N frames of S bytes in T s: R pps, M Mbit/s; device GPTC N`.
pub fn summary_line(addr: &zcnic::PciAddr, size: usize, s: &Summary) -> String {
    let mut line = format!(
        "pktgen {addr}: sent {} frames of {size} bytes in {:.3} s: {:.0} pps, {:.1} Mbit/s",
        s.sent,
        s.secs,
        s.pps(),
        mbps(s.pps(), size)
    );
    if !s.device_counters.is_empty() {
        let c: Vec<String> = s
            .device_counters
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        line += &format!("; device {}", c.join(", "));
    }
    line
}
