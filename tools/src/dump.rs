//! `zcnic dump`: receive frames and write them to a pcap file tcpdump and tshark read.

use crate::{msg, stopped, ToolError};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use zcnic::{Nic, Packet};

/// Where to write and when to stop.
#[derive(Debug, Clone)]
pub struct Args {
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// The outcome of a capture.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Frames written.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The device's receive counters (e1000: GPRC, MPC), when it has them.
    pub device_counters: Vec<(&'static str, u64)>,
}

/// An open pcap file.
pub type Writer = PcapWriter<BufWriter<File>>;

/// Creates the pcap file (before the NIC is touched, so a bad path costs nothing).
pub fn create(path: &Path) -> Result<Writer, ToolError> {
    let f = File::create(path).map_err(|e| {
        msg(format!(
            "cannot create {}: {e}: choose a writable path with --out",
            path.display()
        ))
    })?;
    PcapWriter::new(BufWriter::new(f)).map_err(|e| msg(format!("writing {}: {e}", path.display())))
}

/// Captures until the count, the duration or Ctrl-C.
pub fn run(nic: &mut dyn Nic, mut w: Writer, args: &Args) -> Result<Summary, ToolError> {
    let limit = args.count.unwrap_or(u64::MAX);
    let start = Instant::now();
    let end = args.duration.map(|d| start + d);
    let mut batch: Vec<Packet> = Vec::with_capacity(64);
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut last = start;
    while frames < limit && !stopped() && end.is_none_or(|e| Instant::now() < e) {
        let max = (limit - frames).min(64) as usize;
        if nic.rx_batch(&mut batch, max) == 0 {
            std::hint::spin_loop();
        } else {
            let ts = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            for p in batch.drain(..) {
                let data = p.data();
                w.write_packet(&PcapPacket::new(ts, data.len() as u32, data))
                    .map_err(|e| msg(format!("writing the pcap: {e}")))?;
                frames += 1;
                bytes += data.len() as u64;
            }
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprintln!(
                "dump {}: {:6.1} s  {frames} frames",
                nic.addr(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    w.into_writer()
        .flush()
        .map_err(|e| msg(format!("writing the pcap: {e}")))?;
    let stats = nic.stats();
    let device_counters = ["GPRC", "MPC"]
        .iter()
        .filter_map(|n| stats.hw(n).map(|v| (*n, v)))
        .collect();
    Ok(Summary {
        frames,
        bytes,
        device_counters,
    })
}
