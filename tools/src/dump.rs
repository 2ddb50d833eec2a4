//! `zcnic dump`: receive frames and write them to a pcap file tcpdump and tshark read.

use crate::clock::LoopClock;
use crate::{msg, stopped, ToolError};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};
use zcnic::{Nic, Packet};

/// Where to write and when to stop.
#[derive(Debug, Clone)]
pub struct Args {
    /// Stop after this many frames (that pass the filter).
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Which frames to keep.
    pub filter: Filter,
}

/// A simple capture filter; every set condition must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// EtherType of the frame (the one after any VLAN tags).
    pub ether_type: Option<u16>,
    /// UDP source or destination port.
    pub udp_port: Option<u16>,
}

impl Filter {
    /// Whether `frame` passes.
    pub fn matches(&self, frame: &[u8]) -> bool {
        if *self == Filter::default() {
            return true;
        }
        let Ok(p) = etherparse::SlicedPacket::from_ethernet(frame) else {
            return false;
        };
        if let Some(t) = self.ether_type {
            let inner = match (&p.link, p.vlan_ids().is_empty()) {
                (Some(etherparse::LinkSlice::Ethernet2(e)), true) => e.ether_type().0,
                _ => p
                    .vlan()
                    .map(|v| v.payload().ether_type.0)
                    .unwrap_or_default(),
            };
            if inner != t {
                return false;
            }
        }
        if let Some(port) = self.udp_port {
            match &p.transport {
                Some(etherparse::TransportSlice::Udp(u)) => {
                    if u.source_port() != port && u.destination_port() != port {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }
}

/// The outcome of a capture.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Frames written.
    pub frames: u64,
    /// Frames the filter left out.
    pub filtered: u64,
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
    let mut clock = LoopClock::new();
    let end = args.duration.map(|d| d.as_nanos() as u64);
    let mut batch: Vec<Packet> = Vec::with_capacity(64);
    let (mut frames, mut bytes, mut filtered) = (0u64, 0u64, 0u64);
    let mut last = 0u64;
    loop {
        let now = clock.now_ns();
        if frames >= limit || stopped() || end.is_some_and(|e| now >= e) {
            break;
        }
        let max = if args.filter == Filter::default() {
            (limit - frames).min(64) as usize
        } else {
            64 // filtered frames do not count, so never stop short
        };
        // An empty poll just polls again: no PAUSE (`spin_loop`), which under QEMU's TCG
        // leaves the vCPU's translated code and takes QEMU's global lock, the lock the
        // sending NIC's model needs (see `LoopClock::spin_until`).
        if nic.rx_batch(&mut batch, max) != 0 {
            let ts = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            for p in batch.drain(..) {
                let data = p.data();
                if frames >= limit {
                    break; // the rest of this burst is past the count
                }
                if !args.filter.matches(data) {
                    filtered += 1;
                    continue;
                }
                w.write_packet(&PcapPacket::new(ts, data.len() as u32, data))
                    .map_err(|e| msg(format!("writing the pcap: {e}")))?;
                frames += 1;
                bytes += data.len() as u64;
            }
        }
        if now.saturating_sub(last) >= 1_000_000_000 {
            last = now;
            eprintln!(
                "dump {}: {:6.1} s  {frames} frames",
                nic.addr(),
                now as f64 / 1e9
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
        filtered,
        bytes,
        device_counters,
    })
}
