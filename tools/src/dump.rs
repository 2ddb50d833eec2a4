//! `zcnic dump`: receive frames and write them to a pcap file tcpdump and tshark read.

use crate::clock::LoopClock;
use crate::{msg, stopped, ToolError};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use zcnic::rss::{Flow, Toeplitz, L4};
use zcnic::{Nic, Packet, Port, QueuePair};

/// Where to write and when to stop.
#[derive(Debug, Clone)]
pub struct Args {
    /// Stop after this many frames (that pass the filter).
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Which frames to keep.
    pub filter: Filter,
    /// What to do when a poll finds nothing (`--idle`; one-queue captures).
    pub idle: crate::idle::Idle,
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
    /// Frames written from each queue (one entry on a one-queue port).
    pub per_queue: Vec<u64>,
    /// Of those, per queue: how many carried the device's RSS hash, and how many of
    /// those disagree with the software Toeplitz over the port's key (hash, type, or the
    /// queue the port's table gives it).
    pub hashes: Vec<(u64, u64)>,
    /// What the NIC reported with the frames written (one-queue captures).
    pub offloads: RxTally,
    /// The idle policy's work and the CPU the capture took: `idle hybrid=1ms: 3 wakes,
    /// 49 naps; cpu 0.04 s of 5.00 s (0.8% of a core)`.
    pub idle: String,
}

/// Receive offload results of a capture: tags the NIC stripped (and the capture put
/// back), and checksum verdicts, the NIC's and a software check's, as [good, bad, unknown].
#[derive(Debug, Clone, Default)]
pub struct RxTally {
    /// Frames whose 802.1Q tag the NIC stripped.
    pub stripped: u64,
    /// The NIC's checksum verdicts.
    pub nic: [u64; 3],
    /// `zcnic::offload::verify_checksums` over the same frames.
    pub software: [u64; 3],
}

impl RxTally {
    fn count(&mut self, p: &Packet) {
        let slot = |c: zcnic::Checksum| match c {
            zcnic::Checksum::Good => 0,
            zcnic::Checksum::Bad => 1,
            zcnic::Checksum::Unknown => 2,
        };
        self.stripped += u64::from(p.vlan().is_some());
        self.nic[slot(p.rx_checksum())] += 1;
        self.software[slot(zcnic::offload::verify_checksums(p))] += 1;
    }

    /// One line for the summary.
    pub fn line(&self) -> String {
        let v = |c: &[u64; 3]| format!("good {} bad {} unknown {}", c[0], c[1], c[2]);
        format!(
            "tags stripped {}; checksums: nic {}; software {}",
            self.stripped,
            v(&self.nic),
            v(&self.software)
        )
    }
}

/// The fields RSS hashes in `frame`, when it is IPv4 or IPv6 (ports for TCP and UDP, but
/// not for a fragment).
/// The whole frame: the buffer itself, or a jumbo frame's buffers gathered into
/// `scratch` (reused, so a capture allocates only for its longest frame).
/// A tag the NIC stripped (`--vlan-strip`) goes back in after the MAC addresses, so the
/// capture shows the frame as it was on the wire.
fn whole<'a>(p: &'a Packet, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let tag = p.vlan();
    if tag.is_none() && p.next().is_none() && p.payload().is_none() {
        return p.data();
    }
    scratch.resize(p.total_len(), 0);
    let n = p.copy_frame(scratch);
    scratch.truncate(n);
    if let Some(tci) = tag.filter(|_| n >= 12) {
        let [a, b] = tci.to_be_bytes();
        scratch.splice(12..12, [0x81, 0x00, a, b]);
    }
    &scratch[..]
}

fn flow_of(frame: &[u8]) -> Option<Flow> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst, fragment): (IpAddr, IpAddr, bool) = match &p.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let frag = h.more_fragments() || h.fragments_offset().value() != 0;
            (h.source_addr().into(), h.destination_addr().into(), frag)
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let frag = ip.is_payload_fragmented();
            (h.source_addr().into(), h.destination_addr().into(), frag)
        }
        _ => return None,
    };
    let ports = match &p.transport {
        _ if fragment => None,
        Some(etherparse::TransportSlice::Udp(u)) => {
            Some((L4::Udp, u.source_port(), u.destination_port()))
        }
        Some(etherparse::TransportSlice::Tcp(t)) => {
            Some((L4::Tcp, t.source_port(), t.destination_port()))
        }
        _ => None,
    };
    Some(Flow { src, dst, ports })
}

/// Whether the hash the device gave `pkt` (on queue `q`) is what the software Toeplitz
/// over `rss`'s key and types says, and its table sends that hash to `q`.
fn hash_agrees(pkt: &Packet, q: usize, rss: &zcnic::Rss, toeplitz: &Toeplitz) -> bool {
    let Some((hash, kind)) = pkt.rss() else {
        return false;
    };
    let want = flow_of(pkt.data()).and_then(|f| toeplitz.flow(&f, rss.types));
    let queue_ok = rss
        .reta
        .as_ref()
        .is_none_or(|t| usize::from(t.queue(hash)) == q);
    want == Some((hash, kind)) && queue_ok
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
    let mut scratch = Vec::new();
    let (mut frames, mut bytes, mut filtered) = (0u64, 0u64, 0u64);
    let mut tally = RxTally::default();
    let mut last = 0u64;
    let mut link_tick = crate::link::Tick::new();
    let mut idler = crate::idle::Idler::new(args.idle);
    let (cpu0, wall0) = (crate::idle::cpu_time(), std::time::Instant::now());
    loop {
        let now = clock.now_ns();
        if frames >= limit || stopped() || end.is_some_and(|e| now >= e) {
            break;
        }
        if link_tick.due(now) {
            crate::link::report("dump", nic);
        }
        let max = if args.filter == Filter::default() {
            (limit - frames).min(64) as usize
        } else {
            64 // filtered frames do not count, so never stop short
        };
        // An empty poll just polls again: no PAUSE (`spin_loop`), which under QEMU's TCG
        // leaves the vCPU's translated code and takes QEMU's global lock, the lock the
        // sending NIC's model needs (see `LoopClock::spin_until`).
        let got = nic.rx_batch(&mut batch, max);
        if idler.due(got) {
            idler.sleep("dump", &mut [&mut *nic]);
        }
        if got != 0 {
            let ts = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            for p in batch.drain(..) {
                if frames >= limit {
                    break; // the rest of this burst is past the count
                }
                let data = whole(&p, &mut scratch);
                if !args.filter.matches(data) {
                    filtered += 1;
                    continue;
                }
                w.write_packet(&PcapPacket::new(ts, data.len() as u32, data))
                    .map_err(|e| msg(format!("writing the pcap: {e}")))?;
                tally.count(&p);
                frames += 1;
                bytes += data.len() as u64;
            }
        }
        if now.saturating_sub(last) >= 1_000_000_000 {
            last = now;
            eprintln!(
                "dump {}: {:6.1} s  {frames} frames",
                nic.name(),
                now as f64 / 1e9
            );
        }
    }
    w.into_writer()
        .flush()
        .map_err(|e| msg(format!("writing the pcap: {e}")))?;
    let device_counters = receive_counters(&nic.stats());
    Ok(Summary {
        frames,
        filtered,
        bytes,
        device_counters,
        per_queue: vec![frames],
        hashes: Vec::new(),
        offloads: tally,
        idle: format!(
            "{}; {}",
            idler.describe(),
            crate::idle::cpu_line(cpu0, wall0.elapsed())
        ),
    })
}

/// The device counters a capture reports.
fn receive_counters(stats: &zcnic::Stats) -> Vec<(&'static str, u64)> {
    ["GPRC", "MPC"]
        .iter()
        .filter_map(|n| stats.hw(n).map(|v| (*n, v)))
        .collect()
}

/// Captures from every queue of a multi-queue port, one receiving thread per queue (as
/// an application would run them), into one pcap in the order the bursts reach the
/// writer; frames of one flow stay in order, as RSS keeps a flow on one queue.
pub fn run_queues(
    port: &mut dyn Port,
    queues: Vec<QueuePair>,
    mut w: Writer,
    args: &Args,
) -> Result<Summary, ToolError> {
    let limit = args.count.unwrap_or(u64::MAX);
    let stop = Arc::new(AtomicBool::new(false));
    // Bounded: a writer that falls behind holds the receivers back (their rings then
    // drop, counted by the device), instead of buffering without limit.
    let (to_writer, bursts) = mpsc::sync_channel::<(usize, Vec<Packet>)>(64);
    let workers: Vec<_> = queues
        .into_iter()
        .enumerate()
        .map(|(i, mut q)| {
            let (stop, to_writer) = (Arc::clone(&stop), to_writer.clone());
            let mode = args.idle;
            std::thread::spawn(move || {
                let mut batch = Vec::with_capacity(64);
                // Each queue sleeps on its own vector (`--idle`), as its own worker would.
                let mut idler = crate::idle::Idler::new(mode);
                while !stop.load(Ordering::Relaxed) {
                    let got = q.rx.rx_batch(&mut batch, 64);
                    if idler.due(got) {
                        idler.sleep_queue("dump", q.rx.as_mut());
                        continue;
                    }
                    if got == 0 {
                        // More receive threads than vCPUs is common here: an idle queue
                        // gives its core to the writer and the busy ones.
                        std::thread::yield_now();
                        continue;
                    }
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(64));
                    if to_writer.send((i, full)).is_err() {
                        break;
                    }
                }
                idler.describe()
            })
        })
        .collect();
    drop(to_writer);
    let mut per_queue = vec![0u64; workers.len()];
    let mut hashes = vec![(0u64, 0u64); workers.len()];
    // A port without RSS of its own to read (an AF_XDP port on veth) hands out no
    // hashes either; one that did would count them all as disagreeing.
    let rss = port.rss().ok();
    let toeplitz = rss.as_ref().map(|r| Toeplitz::new(r.key));
    let (mut frames, mut bytes, mut filtered) = (0u64, 0u64, 0u64);
    let mut clock = LoopClock::new();
    let end = args.duration.map(|d| d.as_nanos() as u64);
    let mut last = 0u64;
    let mut failed = None;
    let mut scratch = Vec::new();
    while frames < limit && !stopped() && end.is_none_or(|e| clock.now_ns() < e) {
        let now = clock.now_ns();
        if now.saturating_sub(last) >= 1_000_000_000 {
            last = now;
            eprintln!(
                "dump {}: {:6.1} s  {frames} frames",
                port.addr(),
                now as f64 / 1e9
            );
        }
        let (q, batch) = match bursts.recv_timeout(Duration::from_millis(50)) {
            Ok(b) => b,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failed = Some(msg("every receiving thread stopped".to_string()));
                break;
            }
        };
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        for p in batch.iter().take((limit - frames) as usize) {
            let data = whole(p, &mut scratch);
            if !args.filter.matches(data) {
                filtered += 1;
                continue;
            }
            if let Err(e) = w.write_packet(&PcapPacket::new(ts, data.len() as u32, data)) {
                failed = Some(msg(format!("writing the pcap: {e}")));
                break;
            }
            frames += 1;
            per_queue[q] += 1;
            bytes += data.len() as u64;
            if p.rss().is_some() {
                hashes[q].0 += 1;
                let agrees = rss
                    .as_ref()
                    .zip(toeplitz.as_ref())
                    .is_some_and(|(r, t)| hash_agrees(p, q, r, t));
                if !agrees {
                    hashes[q].1 += 1;
                }
            }
        }
        if failed.is_some() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(bursts);
    let mut idle = Vec::with_capacity(workers.len());
    for (q, t) in workers.into_iter().enumerate() {
        match t.join() {
            Ok(line) => idle.push(format!("queue {q} {line}")),
            Err(_) => return Err(msg("a receiving thread panicked".to_string())),
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    w.into_writer()
        .flush()
        .map_err(|e| msg(format!("writing the pcap: {e}")))?;
    Ok(Summary {
        frames,
        filtered,
        bytes,
        device_counters: receive_counters(&port.stats()),
        per_queue,
        hashes,
        offloads: RxTally::default(),
        idle: idle.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn udp(more_fragments: bool) -> Vec<u8> {
        let mut ip = etherparse::Ipv4Header::new(
            0,
            64,
            etherparse::IpNumber::UDP,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
        )
        .unwrap();
        ip.more_fragments = more_fragments;
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .udp(1000, 9);
        let mut f = Vec::new();
        b.write(&mut f, &[1, 2, 3, 4]).unwrap();
        f
    }

    #[test]
    fn a_udp_frame_hashes_with_its_ports_and_a_fragment_without() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let f = flow_of(&udp(false)).unwrap();
        assert_eq!((f.src, f.dst), (a.into(), b.into()));
        assert_eq!(f.ports, Some((L4::Udp, 1000, 9)));
        assert_eq!(flow_of(&udp(true)).unwrap().ports, None, "a fragment");
        assert_eq!(flow_of(&[0u8; 60]), None, "not IP");
    }
}
