//! `zcnic replay`: a capture's frames (pcap or pcapng) sent byte for byte, with their
//! original timing, that timing scaled (`--speed`), or at a fixed rate in packets or bits
//! per second (`--rate`), any number of times (`--loop`).
//!
//! The capture is read once into memory registered with the IOMMU ([`Capture::load`],
//! `zcnic::register_memory`); each frame then goes out as a pool buffer holding its first
//! [`HEAD`] bytes with the rest attached as a [`Segment`] of that memory, so the NIC reads
//! the capture itself and nothing is copied per frame past the head (`--copy`, or a port
//! without an IOMMU, copies each frame into pool buffers instead). Frames longer than the
//! port's MTU allows are counted and skipped, never cut.

use crate::clock::LoopClock;
use crate::{msg, stopped, ToolError};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use zcnic::{Nic, Packet, Segment, UserRegion};

/// Bytes of a frame copied into the pool buffer it goes out with; the rest is sent from
/// the capture's own memory.
pub const HEAD: usize = 64;
pub use crate::units::WIRE_OVERHEAD;
/// Frames handed to the NIC at most per call.
const BURST: usize = 64;

/// One frame of the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Where its bytes start in [`Capture::data`].
    pub off: usize,
    pub len: usize,
    /// Its timestamp, ns after the capture's first frame.
    pub ts_ns: u64,
}

/// A capture's frames in memory, in file order.
#[derive(Debug, Default)]
pub struct Capture {
    pub data: Vec<u8>,
    pub frames: Vec<Frame>,
    /// Frames longer than the port takes (skipped), and the longest of them.
    pub too_long: usize,
    pub longest: usize,
    /// Frames the capture holds only part of (its snap length): sent as captured.
    pub cut_short: usize,
}

impl Capture {
    /// Reads `path` (pcap or pcapng, Ethernet), keeping frames of at most `max_frame`
    /// bytes.
    pub fn load(path: &Path, max_frame: usize) -> Result<Self, ToolError> {
        let name = path.display();
        let bytes = std::fs::read(path).map_err(|e| msg(format!("{name}: {e}")))?;
        let bad = |e: pcap_file::PcapError| msg(format!("{name}: not a readable capture: {e}"));
        let mut cap = Capture::default();
        // The first frame's timestamp: every other is kept relative to it.
        let mut first: Option<u64> = None;
        // pcapng starts with a section header block, 0x0a0d0d0a.
        if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            let mut r = PcapNgReader::new(&bytes[..]).map_err(bad)?;
            // Per interface: its link type and timestamp resolution (`if_tsresol`).
            let mut ifaces: Vec<(DataLink, u8)> = Vec::new();
            while let Some(block) = r.next_block() {
                let (iface, ts, data, orig) = match block.map_err(bad)? {
                    Block::InterfaceDescription(idb) => {
                        let unit = idb.options.iter().find_map(|o| match o {
                            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                            _ => None,
                        });
                        ifaces.push((idb.linktype, unit.unwrap_or(6)));
                        continue;
                    }
                    Block::EnhancedPacket(p) => {
                        let id = p.interface_id as usize;
                        (id, Some(p.timestamp.as_nanos()), p.data, p.original_len)
                    }
                    Block::SimplePacket(p) => (0, None, p.data, p.original_len),
                    _ => continue,
                };
                let &(link, unit) = ifaces
                    .get(iface)
                    .ok_or_else(|| msg(format!("{name}: a packet of an undeclared interface")))?;
                check_link(link, &name)?;
                // pcap-file reads the raw timestamp as ns whatever the unit. A simple
                // packet has none: right after the one before.
                let ts = match ts {
                    Some(raw) => to_ns(raw, unit),
                    None => first.unwrap_or(0) + cap.frames.last().map_or(0, |l| l.ts_ns),
                };
                let at = *first.get_or_insert(ts);
                cap.push(ts.saturating_sub(at), &data, orig as usize, max_frame);
            }
        } else {
            let mut r = PcapReader::new(&bytes[..]).map_err(bad)?;
            check_link(r.header().datalink, &name)?;
            while let Some(p) = r.next_packet() {
                let p = p.map_err(bad)?;
                let ts = p.timestamp.as_nanos() as u64;
                let at = *first.get_or_insert(ts);
                cap.push(
                    ts.saturating_sub(at),
                    &p.data,
                    p.orig_len as usize,
                    max_frame,
                );
            }
        }
        if cap.frames.is_empty() && cap.too_long == 0 {
            return Err(msg(format!("{name}: the capture holds no frame")));
        }
        Ok(cap)
    }

    /// Appends a frame captured `ts_ns` after the first (`orig` bytes long on the wire).
    pub fn push(&mut self, ts_ns: u64, data: &[u8], orig: usize, max_frame: usize) {
        if data.is_empty() {
            return;
        }
        if data.len() > max_frame {
            self.too_long += 1;
            self.longest = self.longest.max(data.len());
            return;
        }
        if orig > data.len() {
            self.cut_short += 1;
        }
        self.frames.push(Frame {
            off: self.data.len(),
            len: data.len(),
            ts_ns,
        });
        self.data.extend_from_slice(data);
    }

    /// One pass of the capture in original time: its first to last frame, plus the mean
    /// gap between frames (so a loop keeps the rhythm across its seam).
    pub fn pass_ns(&self) -> u64 {
        match (self.frames.first(), self.frames.last()) {
            (Some(a), Some(b)) if self.frames.len() > 1 => {
                let span = b.ts_ns.saturating_sub(a.ts_ns);
                span + span / (self.frames.len() as u64 - 1)
            }
            _ => 0,
        }
    }

    /// What the summary says about frames not sent as they were.
    pub fn notes(&self, mtu: usize) -> Vec<String> {
        let mut v = Vec::new();
        if self.too_long > 0 {
            v.push(format!(
                "skipped {} frames longer than MTU {mtu} allows (the longest {} bytes: --mtu {} sends them)",
                self.too_long,
                self.longest,
                self.longest - 14
            ));
        }
        if self.cut_short > 0 {
            v.push(format!(
                "{} frames were cut short by the capture's snap length: sent as captured",
                self.cut_short
            ));
        }
        v
    }
}

/// `raw` timestamp units of a pcapng `if_tsresol` `r` (10^-n s, or 2^-n with the top
/// bit) in ns, in integers: a float loses the nanoseconds of a present-day timestamp.
fn to_ns(raw: u128, r: u8) -> u64 {
    let exp = u32::from(r & 0x7f).min(100);
    let ns = if r & 0x80 != 0 {
        raw.saturating_mul(1_000_000_000)
            .checked_shr(exp)
            .unwrap_or(0)
    } else if exp <= 9 {
        raw.saturating_mul(10u128.pow(9 - exp))
    } else {
        raw / 10u128.pow((exp - 9).min(38))
    };
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn check_link(link: DataLink, name: &impl std::fmt::Display) -> Result<(), ToolError> {
    if link == DataLink::ETHERNET {
        Ok(())
    } else {
        Err(msg(format!(
            "{name}: link type {link:?}, not Ethernet: zcnic replays Ethernet captures"
        )))
    }
}

/// When frames go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timing {
    /// The capture's own gaps, divided by this.
    Original { speed: f64 },
    /// Frames per second.
    Pps(f64),
    /// Bits per second on the wire (frame plus [`WIRE_OVERHEAD`] bytes each).
    Bits(f64),
}

impl Timing {
    /// Parses `--rate`: packets per second (`20k`, `1.5M`, `20kpps`) or bits per second
    /// (`100Mbit`, `1Gbit`, `100Mbit/s`, `100Mbps`).
    pub fn parse_rate(s: &str) -> Result<Self, String> {
        match crate::units::parse_rate_spec(s)? {
            crate::units::RateSpec::Pps(r) => Ok(Timing::Pps(r)),
            crate::units::RateSpec::Bits(b) => Ok(Timing::Bits(b)),
            crate::units::RateSpec::Percent(_) => Err(format!(
                "rate `{s}`: replay takes packets or bits per second (20k, 100Mbit)"
            )),
        }
    }
}

/// What `run` is asked.
#[derive(Debug, Clone)]
pub struct Args {
    pub timing: Timing,
    /// Passes over the capture; 0 = until Ctrl-C.
    pub loops: u64,
    /// Copy each frame into pool buffers instead of sending from registered memory.
    pub copy: bool,
}

/// How long a `tx_batch` call may take before the rest of it counts as a hold-up that
/// delays the next frame (original timing): on hardware a call takes microseconds; under
/// QEMU it includes the emulated transmission, 20-80 µs for these frames.
const TX_CALL_NS: u64 = 50_000;

/// When each frame is due, ns after the start, frame after frame.
///
/// The capture's timing is kept as gaps: each frame is due its gap (scaled) after the
/// frame before it actually went, so a sender held up for a moment (a busy host, a
/// preempted vCPU) delays the frames after it instead of sending them back to back to
/// catch up, and every gap but the one held up is the capture's. The fixed rates are
/// kept in absolute time, so the rate over a run is the one asked.
#[derive(Debug)]
pub struct Schedule {
    timing: Timing,
    pass_ns: u64,
    sent: u64,
    wire_bytes: u64,
    /// The previous frame's time in the capture (passes laid end to end), ns.
    last_ts: u64,
}

impl Schedule {
    pub fn new(timing: Timing, cap: &Capture) -> Self {
        Self {
            timing,
            pass_ns: cap.pass_ns(),
            sent: 0,
            wire_bytes: 0,
            last_ts: 0,
        }
    }

    /// When `frame` of pass `pass` is due, given when the frame before it went
    /// (`prev_ns`; anything for the first); call in sending order.
    pub fn due(&mut self, pass: u64, frame: &Frame, prev_ns: u64) -> u64 {
        let due = match self.timing {
            Timing::Original { speed } => {
                let t = pass
                    .saturating_mul(self.pass_ns)
                    .saturating_add(frame.ts_ns);
                let gap = t.saturating_sub(self.last_ts);
                self.last_ts = t;
                if self.sent == 0 {
                    0
                } else {
                    prev_ns + (gap as f64 / speed) as u64
                }
            }
            Timing::Pps(r) => (self.sent as f64 * 1e9 / r) as u64,
            Timing::Bits(r) => (self.wire_bytes as f64 * 8e9 / r) as u64,
        };
        self.sent += 1;
        self.wire_bytes += (frame.len + WIRE_OVERHEAD) as u64;
        due
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub sent: u64,
    pub bytes: u64,
    pub secs: f64,
}

/// Where frames come from: registered memory (zero copy) or a copy per frame.
enum Source {
    Region(Arc<UserRegion>),
    Copy,
}

/// Sends the capture as `args` say, one progress line a second to `out`.
pub fn run(
    nic: &mut dyn Nic,
    cap: &Capture,
    args: &Args,
    out: &mut dyn Write,
) -> Result<Summary, ToolError> {
    let src = if args.copy {
        Source::Copy
    } else {
        match zcnic::register_memory(&cap.data) {
            Ok(r) => Source::Region(Arc::new(r)),
            Err(e) => {
                log::info!("copying each frame: {e}");
                Source::Copy
            }
        }
    };
    let pool = nic.pool().clone();
    let mut sched = Schedule::new(args.timing, cap);
    let mut clock = LoopClock::new();
    let mut pending: Vec<Packet> = Vec::with_capacity(BURST);
    let (mut pass, mut i) = (0u64, 0usize);
    let mut next_due = cap.frames.first().map(|f| sched.due(0, f, 0));
    let mut s = Summary::default();
    let (mut last_print, mut last_sent) = (0u64, 0u64);
    while !stopped() && (next_due.is_some() || !pending.is_empty()) {
        let now = clock.now_ns();
        // Every frame due by now, a burst at a time.
        while next_due.is_some_and(|d| d <= now) && pending.len() < BURST {
            let f = cap.frames[i];
            let Some(pkt) = build(&pool, &src, cap, &f) else {
                break; // the pool is empty: the frames in flight come back first
            };
            pending.push(pkt);
            i += 1;
            if i == cap.frames.len() {
                (i, pass) = (0, pass + 1);
            }
            let more = args.loops == 0 || pass < args.loops;
            // This frame goes now: the next one's gap counts from here.
            next_due = more.then(|| sched.due(pass, &cap.frames[i], now));
        }
        if !pending.is_empty() {
            let before: u64 = pending.iter().map(|p| p.total_len() as u64).sum();
            let n = pending.len();
            // The capture's gaps count from the doorbell, not from when the loop looked
            // at the clock (a sender held up while it built the frames would shorten the
            // next gap by as much). Nor from when `tx_batch` returned: under QEMU the
            // doorbell write is the whole emulated transmission, and counting from its
            // end stretched every gap by it (0.3-1.2% of a 6 ms gap, median, on a loaded
            // host). A call longer than [`TX_CALL_NS`] was held up, though (the first
            // one's work under TCG took 3 ms): the rest of it delays the frames after it.
            let doorbell = clock.now_ns();
            nic.tx_batch(&mut pending);
            let left: u64 = pending.iter().map(|p| p.total_len() as u64).sum();
            s.sent += (n - pending.len()) as u64;
            s.bytes += before - left;
            if pending.is_empty() && matches!(args.timing, Timing::Original { .. }) {
                let went = doorbell.max(clock.now_ns().saturating_sub(TX_CALL_NS));
                next_due = next_due.map(|d| d.saturating_sub(now) + went);
            }
        }
        if now >= last_print + 1_000_000_000 {
            let secs = (now - last_print) as f64 / 1e9;
            let _ = writeln!(
                out,
                "replay: {} frames sent, {:.0} pps (pass {})",
                s.sent,
                (s.sent - last_sent) as f64 / secs,
                pass + 1
            );
            (last_print, last_sent) = (now, s.sent);
        }
    }
    drop(pending);
    nic.flush();
    s.secs = clock.now_ns() as f64 / 1e9;
    Ok(s)
}

/// Frame `f` as a packet of `pool`: its head copied and the rest attached from the
/// registered capture, or all of it copied. `None` when the pool is empty.
fn build(pool: &Arc<zcnic::Mempool>, src: &Source, cap: &Capture, f: &Frame) -> Option<Packet> {
    let bytes = &cap.data[f.off..f.off + f.len];
    match src {
        Source::Region(region) if f.len > HEAD => {
            let mut pkt = pool.alloc_copy(&bytes[..HEAD])?;
            pkt.attach(Segment::new(region, f.off + HEAD, f.len - HEAD).ok()?);
            Some(pkt)
        }
        _ => pool.alloc_copy(bytes),
    }
}

/// `zcnic replay` from its command line: opens the port, loads the capture, sends it, and
/// prints what was sent.
pub fn cmd(c: crate::cli::ReplayCmd) -> Result<(), ToolError> {
    let addr: zcnic::PciAddr = c.pci.parse()?;
    let timing = match (c.speed, c.rate.as_deref()) {
        (_, Some(r)) => Timing::parse_rate(r).map_err(|e| msg(format!("--rate: {e}")))?,
        (Some(v), None) if v.is_finite() && v > 0.0 && v <= 1e6 => Timing::Original { speed: v },
        (Some(v), None) => {
            return Err(msg(format!(
                "--speed {v}: give a factor above 0 (2 plays twice as fast, 0.5 half as fast)"
            )))
        }
        (None, None) => Timing::Original { speed: 1.0 },
    };
    let cfg = c.port.config();
    let cap = Capture::load(&c.file, cfg.max_frame())?;
    let mut nic = zcnic::open_with(&addr.to_string(), &cfg)?;
    let how = match timing {
        Timing::Original { speed: 1.0 } => "as captured".to_string(),
        Timing::Original { speed } => format!("at {speed}x the captured pace"),
        Timing::Pps(r) => format!("at {r:.0} pps"),
        Timing::Bits(r) => format!("at {:.1} Mbit/s on the wire", r / 1e6),
    };
    let passes = match c.loops {
        0 => "until Ctrl-C".to_string(),
        1 => "once".to_string(),
        n => format!("{n} times"),
    };
    println!(
        "replay {addr}: {} {}, link {}, {} frames ({} bytes) from {}, {how}, {passes}",
        nic.driver(),
        zcnic::format_mac(nic.mac()),
        nic.link(),
        cap.frames.len(),
        cap.data.len(),
        c.file.display()
    );
    let args = Args {
        timing,
        loops: c.loops,
        copy: c.copy,
    };
    let s = run(nic.as_mut(), &cap, &args, &mut std::io::stdout())?;
    println!(
        "replay {addr}: sent {} frames ({} bytes) in {:.3} s: {:.0} pps, {:.1} Mbit/s",
        s.sent,
        s.bytes,
        s.secs,
        s.sent as f64 / s.secs.max(1e-9),
        s.bytes as f64 * 8.0 / s.secs.max(1e-9) / 1e6
    );
    for note in cap.notes(nic.mtu()) {
        println!("replay {addr}: {note}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::PcapNgWriter;
    use std::borrow::Cow;
    use std::time::Duration;

    fn frame(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("zcnic-replay-{}-{name}", std::process::id()))
    }

    /// (µs timestamp, frame) pairs: irregular gaps, sizes up to 9014.
    fn frames() -> Vec<(u64, Vec<u8>)> {
        let lens = [60, 1514, 9014, 64, 3000, 9015];
        let gaps = [0, 1500, 20, 7000, 1, 333];
        let mut t = 1_700_000_000_000_000u64;
        lens.iter()
            .zip(gaps)
            .enumerate()
            .map(|(i, (&n, g))| {
                t += g;
                (t, frame(n, i as u8))
            })
            .collect()
    }

    fn check(cap: &Capture) {
        let want = frames();
        // The 9015-byte frame is over MTU 9000 (9014 bytes).
        assert_eq!(cap.frames.len(), 5);
        assert_eq!((cap.too_long, cap.longest), (1, 9015));
        for (f, (ts, bytes)) in cap.frames.iter().zip(&want) {
            assert_eq!(&cap.data[f.off..f.off + f.len], &bytes[..]);
            assert_eq!(f.ts_ns, (ts - want[0].0) * 1000);
        }
        assert!(cap.notes(9000)[0].contains("--mtu 9001"));
    }

    #[test]
    fn pcap_and_pcapng_load_alike() {
        let path = temp("a.pcap");
        let mut w = PcapWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        for (ts, f) in frames() {
            let p = PcapPacket::new(Duration::from_micros(ts), f.len() as u32, &f);
            w.write_packet(&p).unwrap();
        }
        drop(w);
        check(&Capture::load(&path, 9014).unwrap());
        std::fs::remove_file(&path).unwrap();

        // pcapng with microsecond stamps (no if_tsresol: the default 10^-6).
        let path = temp("b.pcapng");
        let mut w = PcapNgWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
        for (ts, f) in frames() {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                // pcap-file writes the raw count it is given as "ns".
                timestamp: Duration::from_nanos(ts),
                original_len: f.len() as u32,
                data: Cow::Borrowed(&f),
                options: vec![],
            })
            .unwrap();
        }
        drop(w);
        check(&Capture::load(&path, 9014).unwrap());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let path = temp("c.pcap");
        std::fs::write(&path, b"not a capture at all").unwrap();
        let e = Capture::load(&path, 1514).unwrap_err().to_string();
        assert!(e.contains("not a readable capture"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = Capture::load(&temp("missing"), 1514)
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn schedules() {
        let mut cap = Capture::default();
        for (ts, len) in [(0, 100), (1_000_000, 100), (3_000_000, 976)] {
            cap.push(ts, &vec![1; len], len, 1514);
        }
        // One pass: 3 ms of capture plus its mean gap, 1.5 ms.
        assert_eq!(cap.pass_ns(), 4_500_000);
        // Each frame sent when due: the capture's times, halved.
        let mut s = Schedule::new(Timing::Original { speed: 2.0 }, &cap);
        let mut prev = 0;
        let due: Vec<u64> = (0..2)
            .flat_map(|p| cap.frames.clone().into_iter().map(move |f| (p, f)))
            .map(|(p, f)| {
                prev = s.due(p, &f, prev);
                prev
            })
            .collect();
        assert_eq!(
            due,
            [0, 500_000, 1_500_000, 2_250_000, 2_750_000, 3_750_000]
        );
        // A frame held up 7 ms: the next keeps its gap after it, not its place in time.
        let mut s = Schedule::new(Timing::Original { speed: 1.0 }, &cap);
        assert_eq!(s.due(0, &cap.frames[0], 0), 0);
        assert_eq!(s.due(0, &cap.frames[1], 7_000_000), 8_000_000);
        assert_eq!(s.due(0, &cap.frames[2], 8_000_000), 10_000_000);
        // Fixed rates keep absolute time whenever frames went.
        let mut s = Schedule::new(Timing::Pps(1000.0), &cap);
        let due: Vec<u64> = cap.frames.iter().map(|f| s.due(0, f, 9_999_999)).collect();
        assert_eq!(due, [0, 1_000_000, 2_000_000]);
        // 1 Mbit/s: (100 + 24) bytes take 992 µs.
        let mut s = Schedule::new(Timing::Bits(1e6), &cap);
        let due: Vec<u64> = cap.frames.iter().map(|f| s.due(0, f, 0)).collect();
        assert_eq!(due, [0, 992_000, 1_984_000]);
    }

    #[test]
    fn pcapng_resolutions() {
        assert_eq!(to_ns(1_700_000_000_000_001, 6), 1_700_000_000_000_001_000);
        assert_eq!(
            to_ns(1_700_000_000_000_000_123, 9),
            1_700_000_000_000_000_123
        );
        assert_eq!(to_ns(5_000, 12), 5);
        assert_eq!(to_ns(3 << 30, 0x80 | 30), 3_000_000_000);
        assert_eq!(to_ns(u128::MAX / 2, 6), u64::MAX);
        assert_eq!(to_ns(1, 0xff), 0);
    }

    #[test]
    fn rates() {
        assert_eq!(Timing::parse_rate("20k"), Ok(Timing::Pps(20e3)));
        assert_eq!(Timing::parse_rate("20kpps"), Ok(Timing::Pps(20e3)));
        assert_eq!(Timing::parse_rate("100Mbit"), Ok(Timing::Bits(100e6)));
        assert_eq!(Timing::parse_rate("1Gbit/s"), Ok(Timing::Bits(1e9)));
        assert_eq!(Timing::parse_rate("2.5Gbps"), Ok(Timing::Bits(2.5e9)));
        for bad in ["0", "-1kpps", "fastbit", "0bit", "1e15bit", ""] {
            assert!(Timing::parse_rate(bad).is_err(), "{bad}");
        }
    }
}
