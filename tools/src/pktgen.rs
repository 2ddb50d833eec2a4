//! `zcnic pktgen`: send numbered frames flat out or at a set rate, and optionally receive
//! them back (another port, or the same one) to count loss, duplicates, reordering and
//! latency.

use crate::clock::{LoopClock, BUSY_WAIT_NS};
use crate::frame::{self, Flow, FrameGen};
use crate::pace::Pacer;
use crate::seq::{Latency, Percentiles, SeqTracker};
use crate::{msg, stopped, ToolError};
use std::io::Write;
use std::time::{Duration, Instant};
use zcnic::{Nic, Packet, DATA_ROOM};

pub use crate::pktgen_cli::{summary_json, summary_lines};

pub use crate::sizes::Sizes;

/// What to send.
#[derive(Debug, Clone)]
pub struct Args {
    /// Frame sizes.
    pub sizes: Sizes,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Frames per burst.
    pub batch: usize,
    /// Packets per second; `None` sends flat out.
    pub rate: Option<f64>,
    /// Addresses of flow 0 (source MAC is the port's own).
    pub flow: Flow,
    /// Flows: frame `seq` belongs to flow `seq % flows` (source IP and port + flow).
    pub flows: u16,
    /// After sending, keep receiving until this long passes with nothing new.
    pub rx_wait: Duration,
    /// Send the filler from one registered application region instead of writing it into
    /// each buffer: the pool buffer holds only headers and stamp, the NIC reads the rest in
    /// place (a two-descriptor chain per frame).
    pub zero_copy: bool,
    /// Re-post one prebuilt frame instead (see [`crate::ceiling`]).
    pub ceiling: bool,
    /// No per-second lines (a caller prints its own: `pktgen --queues`).
    pub quiet: bool,
    /// Checksums and a tag asked of the NIC for every frame (`Offloads::request`: in
    /// software what the port cannot do).
    pub offload: Option<zcnic::TxOffload>,
    /// Spoil every frame's UDP checksum (a test of receivers).
    pub bad_csum: bool,
    /// Frames of another shape than the fast IPv4/UDP ones, or with ranges
    /// (`template.rs`); `flow`'s single values are in it.
    pub template: Option<crate::template::Template>,
    /// How paced frames spread in time (`--pacing`).
    pub pacing: crate::pace::Pacing,
    /// Silences in the paced stream (`--gap`, with a rate).
    pub gap: Option<crate::pace::Gap>,
}

/// Where frames come back, if anywhere.
pub enum Rx<'a> {
    /// Send only.
    None,
    /// Receive on the sending port.
    Same,
    /// Receive on another port.
    Other(&'a mut dyn Nic),
}

impl std::fmt::Debug for Rx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rx::None => write!(f, "None"),
            Rx::Same => write!(f, "Same"),
            Rx::Other(n) => write!(f, "Other({})", n.addr()),
        }
    }
}

/// The receive side's result.
#[derive(Debug, Clone)]
pub struct RxSummary {
    /// The receiving port, by the name it was opened with ([`zcnic::Nic::name`]).
    pub port: String,
    /// Sequence accounting of our stream.
    pub seq: SeqTracker,
    /// Frames that were not ours (other traffic, other streams).
    pub other: u64,
    /// Latency percentiles of our frames.
    pub latency: Option<Percentiles>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The sending port, by the name it was opened with ([`zcnic::Nic::name`]).
    pub port: String,
    /// Frames the NIC accepted.
    pub sent: u64,
    /// Their bytes (without FCS).
    pub bytes: u64,
    /// Seconds from the first to the last burst.
    pub secs: f64,
    /// The device's own transmit counters (e1000: GPTC), when it has them.
    pub device: Vec<(&'static str, u64)>,
    /// What came back.
    pub rx: Option<RxSummary>,
    /// Whether the device had sent every queued frame when pktgen stopped; when not, the
    /// device's counts above are short and the run is reported as failed.
    pub flushed: bool,
}

impl Summary {
    /// Frames per second.
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9)
    }

    /// Megabits per second (frame bytes, no FCS or preamble).
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e6 / self.secs.max(1e-9)
    }
}

struct Receiver {
    seq: SeqTracker,
    latency: Latency,
    other: u64,
    stream: u16,
    buf: Vec<Packet>,
    /// When a frame last arrived (ns on the run's clock).
    last_rx: u64,
}

impl Receiver {
    fn poll(&mut self, nic: &mut dyn Nic, now_ns: u64) -> usize {
        let n = nic.rx_batch(&mut self.buf, 64);
        for p in self.buf.drain(..) {
            match frame::parse_meta(p.data()) {
                Ok(m) if m.stream == self.stream => {
                    self.seq.record(m.seq);
                    self.latency.record(now_ns.saturating_sub(m.tx_ns));
                }
                _ => self.other += 1,
            }
        }
        if n > 0 {
            self.last_rx = now_ns;
        }
        n
    }
}

/// Moves up to `want` packets the driver handed back from `recycled` to `pending`,
/// re-stamped with sequence numbers from `seq`; returns how many, and their bytes. From a
/// packet not as last written (another size) on, they go back to the pool instead, and the
/// caller builds new frames in fresh buffers. Its own function, so the loop has the
/// registers to itself rather than sharing them with all of `run`.
#[inline(never)]
fn restamp(
    gen: &FrameGen,
    recycled: &mut Vec<Packet>,
    pending: &mut Vec<Packet>,
    want: usize,
    seq: u64,
    now: u64,
) -> (usize, u64) {
    let start = recycled.len() - want.min(recycled.len());
    // Stamped where they lie, then moved in one go.
    let (mut n, mut bytes, mut stamp) = (0, 0, gen.restamper(seq, now));
    for p in &mut recycled[start..] {
        // Only one buffer's frame passes `next` (a jumbo chain's first buffer is shorter
        // than the frame it starts), so its length is the frame's.
        let len = p.len() as u64;
        if !stamp.next(p.data_mut()) {
            break;
        }
        bytes += len;
        n += 1;
    }
    pending.extend(recycled.drain(start..start + n));
    recycled.truncate(start);
    (n, bytes)
}

/// Refuses sizes beyond what the port's MTU allows (`mtu` + the 14-byte header).
pub fn check_mtu(
    max_size: usize,
    mtu: usize,
    port: impl std::fmt::Display,
) -> Result<(), ToolError> {
    if max_size > mtu + 14 {
        return Err(msg(format!(
            "--size {max_size}: {port} with MTU {mtu} sends frames of up to {} bytes; give --mtu {} or more",
            mtu + 14,
            max_size - 14
        )));
    }
    Ok(())
}

/// Writes frame `seq` of `size` bytes (more than one buffer holds) into `p` and buffers
/// of `pool` linked after it; returns the bytes in `p` itself. Cold: only jumbo frames.
#[cold]
#[inline(never)]
pub(crate) fn write_long(
    gen: &mut FrameGen,
    p: &mut Packet,
    pool: &std::sync::Arc<zcnic::Mempool>,
    size: usize,
    flow: u16,
    seq: u64,
    now: u64,
) -> Result<usize, ToolError> {
    let n = gen.write_first(p.room_mut(), DATA_ROOM, size, flow, seq, now);
    // n <= DATA_ROOM: inside the buffer.
    let _ = p.set_len(n);
    let (mut at, mut last) = (n, p);
    while at < size {
        let part = gen.tail(at, (at + DATA_ROOM).min(size));
        if part.is_empty() {
            // Beyond the generator's longest frame: `check_mtu` keeps sizes within it.
            return Err(msg(format!(
                "--size {size}: beyond {} bytes",
                frame::MAX_FRAME
            )));
        }
        let copy = pool.alloc_copy(part).ok_or_else(|| {
            msg(format!(
                "the pool of {} buffers ran dry building {size}-byte frames ({} buffers each): send fewer at once (--batch) or smaller frames",
                pool.capacity(),
                size.div_ceil(DATA_ROOM)
            ))
        })?;
        at += part.len();
        last = last.link(copy);
    }
    Ok(n)
}

/// Writes templated frame `seq` of `size` bytes into `p` (and buffers of `pool` linked
/// after it when it is longer than one); returns (bytes in `p`, bytes in the frame).
#[cold]
#[inline(never)]
pub(crate) fn write_template(
    t: &mut crate::template::Template,
    p: &mut Packet,
    pool: &std::sync::Arc<zcnic::Mempool>,
    size: usize,
    seq: u64,
    now: u64,
) -> Result<(usize, usize), ToolError> {
    let f = t.write(size, seq, now)?;
    let n = f.len().min(DATA_ROOM);
    p.room_mut()[..n].copy_from_slice(&f[..n]);
    let _ = p.set_len(n);
    if f.len() > n {
        let rest = pool.alloc_copy(&f[n..]).ok_or_else(|| {
            msg(format!(
                "the pool of {} buffers ran dry building {size}-byte frames: send fewer at once (--batch)",
                pool.capacity()
            ))
        })?;
        p.append(rest);
    }
    Ok((n, f.len()))
}

/// Sends until the count, the duration or Ctrl-C, receiving on `rx` meanwhile; prints a
/// line every second.
pub fn run(tx: &mut dyn Nic, mut rx: Rx<'_>, args: &Args) -> Result<Summary, ToolError> {
    if args.flows == 0 {
        return Err(msg("--flows must be at least 1"));
    }
    if args.ceiling {
        crate::ceiling::check(args, !matches!(rx, Rx::None))?;
        return crate::ceiling::run(tx, args);
    }
    let port = tx.name();
    check_mtu(args.sizes.max(), tx.mtu(), &port)?;
    let mut gen = FrameGen::sized(
        Flow {
            src_mac: tx.mac(),
            ..args.flow
        },
        args.sizes.max(),
    );
    let pool = tx.pool().clone();
    let filler = if args.zero_copy {
        Some(std::sync::Arc::new(zcnic::register_memory(
            &frame::filler(),
        )?))
    } else {
        None
    };
    let batch = args.batch.clamp(1, 256);
    let limit = args.count.unwrap_or(u64::MAX);
    let mut clock = LoopClock::new();
    let epoch = clock.epoch();
    let mut pacer = args
        .rate
        .map(|r| Pacer::with(r, 0, args.pacing).with_gap(args.gap));
    let end = args.duration.map(|d| d.as_nanos() as u64);
    let mut recv = (!matches!(rx, Rx::None)).then(|| Receiver {
        seq: SeqTracker::with_expected(args.count.unwrap_or(1 << 20)),
        latency: Latency::new(),
        other: 0,
        stream: args.flow.stream,
        buf: Vec::with_capacity(64),
        last_rx: 0,
    });
    let mut pending: Vec<Packet> = Vec::with_capacity(batch);
    // With one frame size and one flow every frame differs only in its stamp, so sent
    // frames come back from the driver and are re-stamped instead of rebuilt: no pool
    // round trip and no header writes per frame.
    // (Not with offloads: a request rewrites the checksum fields the re-stamp keeps.)
    let recycle = filler.is_none()
        && args.template.is_none()
        && args.flows == 1
        && matches!(args.sizes, Sizes::Fixed(_))
        && args.offload.is_none()
        && !args.bad_csum;
    let caps = tx.offloads();
    // A template's source MAC is the port's unless a range gives it.
    let mut template = args.template.clone().map(|mut t| {
        if !t.ranges_src_mac() {
            t.flow.src_mac = tx.mac();
        }
        t
    });
    let bad_csum_at = template
        .as_ref()
        .map_or(14 + 20 + 6, |t| t.l4_checksum_at());
    let mut recycled: Vec<Packet> = Vec::new();
    let (mut seq, mut sent, mut bytes) = (0u64, 0u64, 0u64);
    let mut sending_until = None;
    let mut last_progress = 0u64;
    let (mut last_t, mut last_sent, mut last_rx) = (0u64, 0u64, 0u64);
    // Locked only to print a line: other threads (`--queues`) print too.
    let stdout = std::io::stdout();
    let mut link_tick = crate::link::Tick::new();

    loop {
        let now = clock.now_ns();
        let more = !stopped() && seq < limit && end.is_none_or(|e| now < e);
        if more || !pending.is_empty() {
            let mut want = (batch - pending.len()).min((limit - seq) as usize);
            if !more {
                want = 0;
            }
            if let Some(p) = pacer.as_mut() {
                want = want.min(p.allowance(now, seq, batch));
            }
            // Sent frames the driver handed back (one size, one flow): only their stamp
            // changes.
            let (reused, reused_bytes) = restamp(&gen, &mut recycled, &mut pending, want, seq, now);
            (seq, bytes) = (seq + reused as u64, bytes + reused_bytes);
            let fresh = want - reused;
            let have = pending.len();
            pool.alloc_batch(&mut pending, fresh);
            for p in &mut pending[have..] {
                let size = args.sizes.of(seq);
                let flow = if args.flows > 1 {
                    (seq % u64::from(args.flows)) as u16
                } else {
                    0
                };
                // (bytes in the buffer, bytes in the frame)
                let (n, total) = match (&filler, template.as_mut()) {
                    (_, Some(t)) => write_template(t, p, &pool, size, seq, now)?,
                    (None, None) if size > DATA_ROOM => {
                        let n = write_long(&mut gen, p, &pool, size, flow, seq, now)?;
                        (n, size)
                    }
                    (None, None) => {
                        let n = gen.write(p.room_mut(), size, flow, seq, now);
                        (n, n)
                    }
                    (Some(region), None) => {
                        let n = gen.write_head(p.room_mut(), size, flow, seq, now);
                        if size > n {
                            p.attach(zcnic::Segment::new(region, 0, size - n)?);
                        }
                        (n, p.total_len())
                    }
                };
                // n <= DATA_ROOM, inside the buffer's room: this cannot fail.
                let _ = p.set_len(n);
                if args.bad_csum {
                    // The transport checksum (UDP: after the 14-byte Ethernet and 20-byte
                    // IP headers).
                    if let Some(b) = p.data_mut().get_mut(bad_csum_at) {
                        *b ^= 0x5a;
                    }
                }
                if let Some(req) = args.offload {
                    // The generator's own headers: always where the request says.
                    caps.request(p, req)
                        .map_err(|e| msg(format!("offload request: {e}")))?;
                }
                bytes += total as u64;
                seq += 1;
            }
            let queued = if recycle {
                tx.tx_batch_recycle(&mut pending, &mut recycled)
            } else {
                tx.tx_batch(&mut pending)
            } as u64;
            sent += queued;
            if queued > 0 {
                last_progress = now;
            } else if recv.is_none() && !pending.is_empty() {
                // A full ring: give the device time (a receiver polls instead, so that
                // arrival times stay exact).
                clock.spin_until(now + BUSY_WAIT_NS);
            }
            // A count is a promise: frames already stamped wait for ring space (the ring
            // drains as the device works). Only Ctrl-C, the duration, or a device that has
            // taken nothing for a second give up on them: they were not sent.
            let give_up = stopped()
                || end.is_some_and(|e| now >= e)
                || now.saturating_sub(last_progress) > 1_000_000_000;
            if !more && queued == 0 && give_up {
                bytes -= pending.iter().map(|p| p.total_len() as u64).sum::<u64>();
                pending.clear();
            }
        } else {
            let Some(r) = &recv else { break };
            let done_at = *sending_until.get_or_insert_with(Instant::now);
            let all_back = r.seq.unique >= sent;
            let wait = args.rx_wait.as_nanos() as u64;
            let quiet = now.saturating_sub(r.last_rx) >= wait && done_at.elapsed() >= args.rx_wait;
            if all_back || quiet {
                break;
            }
        }
        if let Some(r) = &mut recv {
            match &mut rx {
                Rx::Other(nic) => r.poll(*nic, clock.now_ns()),
                _ => r.poll(tx, clock.now_ns()),
            };
        }
        if link_tick.due(now) {
            crate::link::report("pktgen", tx);
            if let Rx::Other(nic) = &mut rx {
                crate::link::report("pktgen", *nic);
            }
        }
        if !args.quiet && now.saturating_sub(last_t) >= 1_000_000_000 {
            let dt = (now - last_t) as f64 / 1e9;
            let pps = (sent - last_sent) as f64 / dt;
            let elapsed = now as f64 / 1e9;
            let mut line = format!(
                "pktgen {port}: {:6.1} s  tx {:>9.0} pps  {:>8.1} Mbit/s  total {sent}",
                elapsed,
                pps,
                bytes as f64 * 8.0 / 1e6 / elapsed,
            );
            if let Some(r) = &recv {
                let got = r.seq.received;
                line += &format!(
                    "  rx {:>9.0} pps  missing {}",
                    (got - last_rx) as f64 / dt,
                    r.seq.lost(sent)
                );
                last_rx = got;
            }
            line += &device_count(tx);
            let mut out = stdout.lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            (last_t, last_sent) = (now, sent);
        }
    }
    let secs = sending_until
        .map_or(epoch.elapsed(), |t| t.duration_since(epoch))
        .as_secs_f64();
    let flushed = tx.flush();
    let stats = tx.stats();
    let device = ["GPTC", "TPT"]
        .iter()
        .filter_map(|n| stats.hw(n).map(|v| (*n, v)))
        .collect();
    let rx_summary = recv.map(|r| RxSummary {
        port: match &rx {
            Rx::Other(nic) => nic.name(),
            _ => port.clone(),
        },
        seq: r.seq,
        other: r.other,
        latency: r.latency.percentiles(),
    });
    Ok(Summary {
        port,
        sent,
        bytes,
        secs,
        device,
        rx: rx_summary,
        flushed,
    })
}

/// `"  device GPTC N"`: the device's own count of frames sent so far, for the per-second
/// lines of NICs that keep one (e1000), so that a reader (and `cargo xtask bench`) can
/// measure any window by the device rather than by pktgen's word. Empty elsewhere.
pub fn device_count(tx: &mut dyn Nic) -> String {
    tx.stats()
        .hw("GPTC")
        .map_or(String::new(), |n| format!("  device GPTC {n}"))
}

/// The error for a run whose device had not sent everything when it stopped: its counts
/// are short, so the run must not pass as measured.
pub fn unflushed(s: &Summary) -> Option<ToolError> {
    (!s.flushed).then(|| {
        msg(format!(
            "{}: the device had not sent every queued frame when pktgen stopped; the device counts above are short (is the link up? `zcnic list`)",
            s.port
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_object() {
        let s = Summary {
            port: "0000:00:02.0".parse().unwrap(),
            sent: 10,
            bytes: 600,
            secs: 1.0,
            device: vec![("GPTC", 10)],
            rx: None,
            flushed: true,
        };
        let j = summary_json(&s);
        assert!(j.starts_with('{') && j.ends_with('}'));
        assert!(j.contains("\"sent\":10") && j.contains("\"GPTC\":10"));
        assert!(j.contains("\"flushed\":true"), "{j}");
        assert!(unflushed(&s).is_none());
        let e = unflushed(&Summary {
            flushed: false,
            ..s
        })
        .expect("an unflushed run fails");
        assert!(
            e.to_string()
                .contains("0000:00:02.0: the device had not sent"),
            "{e}"
        );
    }
}
