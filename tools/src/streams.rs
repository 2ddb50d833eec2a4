//! Several streams at once from one port: `zcnic pktgen PCI --stream size=64,rate=1M
//! --stream imix,rate=200Mbit`. Each stream has its own id (in every payload), sizes, rate
//! (pps, bits on the wire or a share of the link) and count, its own counters and, with
//! `--rx`, its own loss and latency; the addresses, shape flags, offloads and `--pacing`
//! are the run's. The streams take turns filling each burst, each as far as its own pacer
//! allows, so a flat-out stream cannot starve a paced one.
//!
//! Every second each stream gets a line part and a [`Sample`] (for `--csv` and `--plot`);
//! this runner also serves a single stream when a picture of the run is asked.

use crate::clock::{LoopClock, BUSY_WAIT_NS};
use crate::frame::{Flow, FrameGen};
use crate::pace::{Pacer, Pacing};
use crate::pktgen::{write_long, write_template, Args, Rx};
use crate::pktgen_cli::rx_json;
use crate::plot::Sample;
use crate::seq::{Latency, Percentiles, SeqTracker};
use crate::sizes::Sizes;
use crate::template::Template;
use crate::units::{parse_rate_spec, RateSpec};
use crate::{msg, stopped, ToolError};
use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;
use zcnic::{Nic, Packet, DATA_ROOM};

/// One `--stream` as given.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    pub id: Option<u16>,
    pub sizes: Sizes,
    pub rate: Option<RateSpec>,
    pub count: Option<u64>,
}

impl StreamSpec {
    /// Parses `size=64,rate=1M`, `imix,rate=200Mbit`, `id=7,size=64-1514,rate=10%,count=1000`,
    /// or a bare id (`3`); what it leaves out is `base`'s.
    pub fn parse(s: &str, base: &StreamSpec) -> Result<Self, String> {
        let mut spec = base.clone();
        if let Ok(id) = s.trim().parse::<u16>() {
            spec.id = Some(id);
            return Ok(spec);
        }
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            let bad = |e: String| format!("--stream `{s}`: {e}");
            match k {
                "imix" if v.is_empty() => spec.sizes = Sizes::Imix,
                "size" => spec.sizes = Sizes::parse(v).map_err(bad)?,
                "rate" => spec.rate = Some(parse_rate_spec(v).map_err(bad)?),
                "id" => spec.id = Some(v.parse().map_err(|_| bad(format!("id `{v}`: 0-65535")))?),
                "count" => match v.parse() {
                    Ok(0) | Err(_) => return Err(bad(format!("count `{v}`: 1 or more"))),
                    Ok(n) => spec.count = Some(n),
                },
                _ => {
                    return Err(bad(format!(
                        "`{item}`: give size=N|A-B, imix, rate=R, id=N, count=N"
                    )))
                }
            }
        }
        Ok(spec)
    }
}

/// One stream's outcome.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    pub id: u16,
    pub sent: u64,
    pub bytes: u64,
    /// Its rate over the run, frames per second.
    pub pps: f64,
    /// What came back of it, and its latency.
    pub rx: Option<(SeqTracker, Option<Percentiles>)>,
}

/// A streams run's outcome.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub port: String,
    pub secs: f64,
    pub streams: Vec<StreamSummary>,
    /// Frames received that were no stream's.
    pub other: u64,
    pub samples: Vec<Sample>,
    pub flushed: bool,
}

struct State {
    id: u16,
    sizes: Sizes,
    limit: u64,
    pacer: Option<Pacer>,
    gen: FrameGen,
    template: Option<Template>,
    seq: u64,
    sent: u64,
    bytes: u64,
    rx: SeqTracker,
    latency: Latency,
    /// This second's latency, and the counts at the last sample.
    second: Latency,
    last: (u64, u64, u64),
}

/// Sends `specs` from `tx` (receiving on `rx`), with `args`'s addresses, shapes, batch,
/// duration and offloads; `link_mbps` for rates given as a share of the link. A line a
/// second goes to `out`.
pub fn run(
    tx: &mut dyn Nic,
    mut rx: Rx<'_>,
    args: &Args,
    specs: &[StreamSpec],
    link_mbps: u32,
    out: &mut dyn Write,
) -> Result<RunSummary, ToolError> {
    let port = tx.name();
    let mut states = Vec::new();
    for (k, s) in specs.iter().enumerate() {
        crate::pktgen::check_mtu(s.sizes.max(), tx.mtu(), &port)?;
        let id = s.id.unwrap_or(args.flow.stream.wrapping_add(k as u16));
        let flow = Flow {
            src_mac: tx.mac(),
            stream: id,
            ..args.flow
        };
        let pps = s
            .rate
            .map(|r| r.pps(s.sizes.mean(), link_mbps))
            .transpose()
            .map_err(|e| msg(format!("stream {id}: --rate: {e}")))?;
        let template = args.template.clone().map(|mut t| {
            if !t.ranges_src_mac() {
                t.flow.src_mac = tx.mac();
            }
            t.flow.stream = id;
            t
        });
        states.push(State {
            id,
            sizes: s.sizes,
            limit: s.count.or(args.count).unwrap_or(u64::MAX),
            pacer: pps.map(|r| Pacer::with(r, 0, seeded(args.pacing, k)).with_gap(args.gap)),
            gen: FrameGen::sized(flow, s.sizes.max()),
            template,
            seq: 0,
            sent: 0,
            bytes: 0,
            rx: SeqTracker::with_expected(s.count.or(args.count).unwrap_or(1 << 20)),
            latency: Latency::new(),
            second: Latency::new(),
            last: (0, 0, 0),
        });
    }
    let ids: Vec<u16> = states.iter().map(|s| s.id).collect();
    if (1..ids.len()).any(|i| ids[..i].contains(&ids[i])) {
        return Err(msg(format!("--stream: two streams with one id ({ids:?})")));
    }
    let pool = tx.pool().clone();
    let caps = tx.offloads();
    let batch = args.batch.clamp(1, 256);
    let end = args.duration.map(|d| d.as_nanos() as u64);
    let mut clock = LoopClock::new();
    let epoch = clock.epoch();
    let mut pending: Vec<Packet> = Vec::with_capacity(batch);
    // Per frame in `pending`: its stream and length, so what the NIC takes is counted.
    let mut owners: VecDeque<(usize, usize)> = VecDeque::with_capacity(batch);
    let receiving = !matches!(rx, Rx::None);
    let (mut buf, mut other, mut last_rx_at) = (Vec::with_capacity(64), 0u64, 0u64);
    let (mut samples, mut last_t, mut last_progress) = (Vec::new(), 0u64, 0u64);
    let mut sending_until: Option<Instant> = None;
    loop {
        let now = clock.now_ns();
        let mut more = false;
        for (k, s) in states.iter_mut().enumerate() {
            if stopped() || s.seq >= s.limit || end.is_some_and(|e| now >= e) {
                continue;
            }
            more = true;
            let mut want = (batch - pending.len()).min((s.limit - s.seq) as usize);
            if let Some(p) = s.pacer.as_mut() {
                want = want.min(p.allowance(now, s.seq, batch));
            }
            let have = pending.len();
            pool.alloc_batch(&mut pending, want);
            for p in &mut pending[have..] {
                let size = s.sizes.of(s.seq);
                let (n, total) = match s.template.as_mut() {
                    Some(t) => write_template(t, p, &pool, size, s.seq, now)?,
                    None if size > DATA_ROOM => {
                        (write_long(&mut s.gen, p, &pool, size, 0, s.seq, now)?, size)
                    }
                    None => {
                        let n = s.gen.write(p.room_mut(), size, 0, s.seq, now);
                        (n, n)
                    }
                };
                let _ = p.set_len(n);
                if let Some(req) = args.offload {
                    caps.request(p, req)
                        .map_err(|e| msg(format!("offload request: {e}")))?;
                }
                owners.push_back((k, total));
                s.seq += 1;
            }
        }
        let took = if pending.is_empty() {
            0
        } else {
            tx.tx_batch(&mut pending)
        };
        for (k, len) in owners.drain(..took) {
            states[k].sent += 1;
            states[k].bytes += len as u64;
        }
        if took > 0 {
            last_progress = now;
        } else if !pending.is_empty() && !receiving {
            clock.spin_until(now + BUSY_WAIT_NS);
        }
        if !more && !pending.is_empty() && (stopped() || now - last_progress > 1_000_000_000) {
            // Not sent: the device took nothing for a second, or Ctrl-C.
            pending.clear();
            owners.clear();
        }
        if !more && pending.is_empty() {
            let done_at = *sending_until.get_or_insert_with(Instant::now);
            let all_back = states.iter().all(|s| s.rx.unique >= s.sent);
            let quiet = now.saturating_sub(last_rx_at) >= args.rx_wait.as_nanos() as u64
                && done_at.elapsed() >= args.rx_wait;
            if !receiving || all_back || quiet || stopped() {
                break;
            }
        }
        if receiving {
            let nic: &mut dyn Nic = match &mut rx {
                Rx::Other(n) => *n,
                _ => &mut *tx,
            };
            let t = clock.now_ns();
            if nic.rx_batch(&mut buf, 64) > 0 {
                last_rx_at = t;
            }
            for p in buf.drain(..) {
                let m = crate::frame::parse_meta(p.data());
                match m
                    .ok()
                    .and_then(|m| states.iter_mut().find(|s| s.id == m.stream).map(|s| (s, m)))
                {
                    Some((s, m)) => {
                        s.rx.record(m.seq);
                        let lat = t.saturating_sub(m.tx_ns);
                        s.latency.record(lat);
                        s.second.record(lat);
                    }
                    None => other += 1,
                }
            }
        }
        if now.saturating_sub(last_t) >= 1_000_000_000 {
            let line = sample(&mut states, &mut samples, (last_t, now), receiving);
            if !args.quiet {
                let _ = writeln!(out, "pktgen {port}: {line}");
                let _ = out.flush();
            }
            last_t = now;
        }
    }
    // The last part of a second, so every second of the run has its row.
    let now = clock.now_ns();
    if now.saturating_sub(last_t) >= 100_000_000 {
        sample(&mut states, &mut samples, (last_t, now), receiving);
    }
    let secs = sending_until
        .map_or(epoch.elapsed(), |t| t.duration_since(epoch))
        .as_secs_f64();
    let flushed = tx.flush();
    let streams = states
        .into_iter()
        .map(|s| StreamSummary {
            id: s.id,
            sent: s.sent,
            bytes: s.bytes,
            pps: s.sent as f64 / secs.max(1e-9),
            rx: receiving.then(|| (s.rx, s.latency.percentiles())),
        })
        .collect();
    Ok(RunSummary {
        port,
        secs,
        streams,
        other,
        samples,
        flushed,
    })
}

/// Each stream's [`Sample`] of the span `from..to` (ns), appended to `samples`; returns
/// the per-second line.
fn sample(
    states: &mut [State],
    samples: &mut Vec<Sample>,
    (from, to): (u64, u64),
    receiving: bool,
) -> String {
    let dt = (to - from) as f64 / 1e9;
    let mut line = format!("{:6.1} s", to as f64 / 1e9);
    for s in states {
        let (sent, bytes, got) = s.last;
        let p = s.second.percentiles();
        let sample = Sample {
            t: to as f64 / 1e9,
            stream: s.id,
            tx_pps: (s.sent - sent) as f64 / dt,
            tx_mbps: (s.bytes - bytes) as f64 * 8.0 / 1e6 / dt,
            rx_pps: (s.rx.received - got) as f64 / dt,
            lost: if receiving { s.rx.lost(s.sent) } else { 0 },
            p50_us: p.map(|p| p.p50 as f64 / 1e3),
            p99_us: p.map(|p| p.p99 as f64 / 1e3),
        };
        line += &format!("  | stream {}: tx {:>8.0} pps", s.id, sample.tx_pps);
        if receiving {
            line += &format!(" rx {:>8.0} pps missing {}", sample.rx_pps, sample.lost);
        }
        samples.push(sample);
        s.last = (s.sent, s.bytes, s.rx.received);
        s.second = Latency::new();
    }
    line
}

/// The streams spread over `queues` of `port`, one thread each (queue k sends streams k,
/// k + n, …; send only): each thread runs [`run`] on its queue, and the summaries join.
pub fn on_queues(
    port: &mut dyn zcnic::Port,
    queues: Vec<zcnic::QueuePair>,
    args: &Args,
    specs: &[StreamSpec],
) -> Result<RunSummary, ToolError> {
    use crate::multiqueue::{join_all, progress, spawn_stopping, QueueNic};
    let n = queues.len();
    if specs.len() < n {
        return Err(msg(format!(
            "--queues {n} with {} streams: give a stream per queue at least",
            specs.len()
        )));
    }
    let link = port.link().speed_mbps;
    // Ids as one run would give them, before the streams are dealt out.
    let specs: Vec<StreamSpec> = specs
        .iter()
        .enumerate()
        .map(|(k, s)| StreamSpec {
            id: Some(s.id.unwrap_or(args.flow.stream.wrapping_add(k as u16))),
            ..s.clone()
        })
        .collect();
    let threads: Vec<_> = queues
        .into_iter()
        .enumerate()
        .map(|(k, pair)| {
            let mut nic = QueueNic::new(pair, port);
            let mine: Vec<StreamSpec> = specs.iter().skip(k).step_by(n).cloned().collect();
            let args = Args {
                quiet: true,
                ..args.clone()
            };
            spawn_stopping(move || {
                run(&mut nic, Rx::None, &args, &mine, link, &mut std::io::sink())
            })
        })
        .collect();
    progress(port, &threads);
    let each = join_all(threads, "sending")?;
    let mut samples: Vec<Sample> = each
        .iter()
        .flat_map(|r| r.samples.iter().copied())
        .collect();
    samples.sort_by(|a, b| a.t.total_cmp(&b.t).then(a.stream.cmp(&b.stream)));
    Ok(RunSummary {
        port: port.addr().to_string(),
        secs: each.iter().map(|r| r.secs).fold(0.0, f64::max),
        streams: each
            .iter()
            .flat_map(|r| r.streams.iter().cloned())
            .collect(),
        other: 0,
        samples,
        flushed: each.iter().all(|r| r.flushed),
    })
}

/// Each stream's Poisson gaps from a seed of its own (the run's, plus its index).
fn seeded(p: Pacing, k: usize) -> Pacing {
    match p {
        Pacing::Poisson(seed) => Pacing::Poisson(seed.wrapping_add(k as u64)),
        p => p,
    }
}

/// The summary: a line per stream, then frames no stream claims.
pub fn summary_lines(s: &RunSummary) -> Vec<String> {
    let mut out = Vec::new();
    for t in &s.streams {
        let mut line = format!(
            "pktgen {} stream {}: sent {} frames ({} bytes) in {:.3} s: {:.0} pps, {:.1} Mbit/s",
            s.port,
            t.id,
            t.sent,
            t.bytes,
            s.secs,
            t.pps,
            t.bytes as f64 * 8.0 / 1e6 / s.secs.max(1e-9)
        );
        if let Some((rx, lat)) = &t.rx {
            line += &format!(
                "; received {} of {}: lost {}, duplicated {}, reordered {}",
                rx.unique,
                t.sent,
                rx.lost(t.sent),
                rx.duplicates,
                rx.reordered
            );
            if let Some(p) = lat {
                line += &format!(
                    "; latency us p50 {:.1} p99 {:.1} max {:.1}",
                    p.p50 as f64 / 1e3,
                    p.p99 as f64 / 1e3,
                    p.max as f64 / 1e3
                );
            }
        }
        out.push(line);
    }
    if s.streams.iter().any(|t| t.rx.is_some()) {
        out.push(format!(
            "pktgen {}: {} frames received were no stream's",
            s.port, s.other
        ));
    }
    out
}

/// The summary as one JSON object, a `streams` array with each one's counts, loss and
/// latency.
pub fn summary_json(s: &RunSummary) -> String {
    let streams: Vec<String> = s
        .streams
        .iter()
        .map(|t| {
            let mut j = format!(
                "{{\"id\":{},\"sent\":{},\"bytes\":{},\"pps\":{:.1}",
                t.id, t.sent, t.bytes, t.pps
            );
            if let Some((rx, lat)) = &t.rx {
                j += &format!(",\"rx\":{{{}}}", rx_json(rx, t.sent, lat.as_ref()));
            }
            j + "}"
        })
        .collect();
    format!(
        "{{\"port\":\"{}\",\"seconds\":{:.6},\"flushed\":{},\"other\":{},\"streams\":[{}]}}",
        s.port,
        s.secs,
        s.flushed,
        s.other,
        streams.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: StreamSpec = StreamSpec {
        id: None,
        sizes: Sizes::Fixed(60),
        rate: None,
        count: None,
    };

    #[test]
    fn specs_parse() {
        assert_eq!(
            StreamSpec::parse("size=64,rate=1M", &BASE),
            Ok(StreamSpec {
                id: None,
                sizes: Sizes::Fixed(64),
                rate: Some(RateSpec::Pps(1e6)),
                count: None
            })
        );
        let s = StreamSpec::parse("imix, rate=200Mbit, id=7, count=10", &BASE).unwrap();
        assert_eq!(
            (s.sizes, s.rate, s.id, s.count),
            (Sizes::Imix, Some(RateSpec::Bits(200e6)), Some(7), Some(10))
        );
        for bad in [
            "size=10",
            "rate=fast",
            "id=-1",
            "count=0",
            "colour=red",
            "imix=3",
        ] {
            assert!(StreamSpec::parse(bad, &BASE).is_err(), "{bad}");
        }
        let base = StreamSpec {
            count: Some(5),
            ..BASE
        };
        assert_eq!(
            StreamSpec::parse("3", &base).map(|s| (s.id, s.count)),
            Ok((Some(3), Some(5)))
        );
        assert_eq!(
            StreamSpec::parse("rate=1k", &base).map(|s| s.count),
            Ok(Some(5))
        );
    }
}
