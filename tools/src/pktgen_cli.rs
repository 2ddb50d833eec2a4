//! `zcnic pktgen` from its command line: the flags checked and turned into
//! [`pktgen::Args`], the port opened, the run, and the summary printed (as text or
//! JSON).

use crate::checks::{check_burst, check_count, open, parse_pci, seconds, MAX_BATCH};
use crate::cli::PktgenCmd;
use crate::pktgen::Summary;
use crate::seq::Percentiles;
use crate::streams::{self, StreamSpec};
use crate::{frame, msg, multiqueue, pace, pktgen, plot, units, ToolError};
use std::time::Duration;

/// `zcnic pktgen` from its command line.
pub fn pktgen_cmd(c: PktgenCmd) -> Result<(), ToolError> {
    // `xdp:eth0`: an AF_XDP port on a kernel-driven interface, opened by name.
    let xdp = c.pci.starts_with("xdp:");
    let addr = if xdp {
        zcnic::PciAddr::XDP
    } else {
        parse_pci(&c.pci)?
    };
    let sizes = if c.imix {
        pktgen::Sizes::Imix
    } else {
        pktgen::Sizes::parse(&c.size).map_err(msg)?
    };
    check_count(c.count)?;
    check_burst("batch", c.batch, MAX_BATCH)?;
    if c.flows == 0 {
        return Err(msg("--flows 0: give at least 1"));
    }
    let rate_spec = c
        .rate
        .as_deref()
        .map(|r| units::parse_rate_spec(r).map_err(|e| msg(format!("--rate: {e}"))))
        .transpose()?;
    // A share of the link is known once the port is open; the rest now.
    let mut rate = rate_spec
        .filter(|r| !matches!(r, units::RateSpec::Percent(_)))
        .map(|r| r.pps(sizes.mean(), 0).map_err(msg))
        .transpose()?;
    let pacing = pace::Pacing::parse(&c.pacing, c.seed).map_err(msg)?;
    let gap = c
        .gap
        .as_deref()
        .map(pace::Gap::parse)
        .transpose()
        .map_err(msg)?;
    // The receiving port by name: `same`, a PCI address (spelled in full, so two spellings
    // of one device compare equal) or `xdp:IFACE`.
    let tx_name = if xdp { c.pci.clone() } else { addr.to_string() };
    let rx_name = match c.rx.as_deref() {
        None => None,
        Some("same") => Some(tx_name.clone()),
        Some(p) if p.starts_with("xdp:") => Some(p.to_string()),
        Some(p) => Some(parse_pci(p)?.to_string()),
    };
    // Several streams (or a picture of the run): the streams runner (`streams.rs`).
    let base = StreamSpec {
        id: None,
        sizes,
        rate: rate_spec,
        count: c.count,
    };
    let specs = c
        .stream
        .iter()
        .map(|s| StreamSpec::parse(s, &base))
        .collect::<Result<Vec<_>, _>>()
        .map_err(msg)?;
    let several = specs.len() > 1 || c.stream.iter().any(|s| s.trim().parse::<u16>().is_err());
    let streams_run = several || c.csv.is_some() || c.plot.is_some();
    if streams_run && (c.zero_copy || c.ceiling) {
        return Err(msg(
            "--zero-copy and --ceiling send one stream: drop the stream specs, --csv and --plot",
        ));
    }
    let mut flow = frame::Flow {
        stream: specs.first().and_then(|s| s.id).unwrap_or(0),
        ..frame::Flow::default()
    };
    let template = crate::template::from_cli(&c, &mut flow)?;
    if template.is_some() && (c.zero_copy || c.ceiling) {
        return Err(msg(
            "--zero-copy and --ceiling send the default UDP frames: drop --proto, --ipv6 and the ranges",
        ));
    }
    let mut args = pktgen::Args {
        sizes,
        count: c.count,
        duration: seconds("duration", c.duration)?,
        batch: c.batch,
        rate,
        flow,
        flows: c.flows,
        rx_wait: match c.rx_wait {
            // 0 is fine here: do not wait for stragglers.
            0.0 => Duration::ZERO,
            w => seconds("rx-wait", Some(w))?.unwrap_or_default(),
        },
        zero_copy: c.zero_copy,
        ceiling: c.ceiling,
        quiet: false,
        offload: (c.csum_offload || c.vlan.is_some())
            .then_some(zcnic::TxOffload {
                ip_csum: c.csum_offload,
                l4: c.csum_offload.then_some(zcnic::L4Csum::Udp),
                vlan: c.vlan,
                ..zcnic::TxOffload::ipv4(14, 20)
            })
            .map(|r| template.as_ref().map_or(r, |t| t.offload(r))),
        bad_csum: c.bad_csum,
        template,
        pacing,
        gap,
    };
    if c.queues == 0 {
        return Err(msg("--queues 0: give at least 1"));
    }
    // Before the port opens: a size beyond the MTU asked for is a usage error.
    pktgen::check_mtu(sizes.max(), c.port.mtu.into(), &c.pci)?;
    if c.queues > 1 && streams_run {
        if c.rx.is_some() {
            return Err(msg(
                "--queues sends only: drop --rx, and receive with `zcnic dump --queues`",
            ));
        }
        let cfg = zcnic::Config {
            queues: c.queues,
            ..c.port.config()
        };
        let (mut port, queues) = zcnic::open_port(&tx_name, &cfg)?;
        println!(
            "pktgen {tx_name}: {} {}, link {}, {} streams on {} queues",
            port.driver(),
            zcnic::format_mac(port.mac()),
            port.link(),
            specs.len(),
            c.queues
        );
        let s = streams::on_queues(port.as_mut(), queues, &args, &specs)?;
        drop(port);
        return report_streams(&c, &s);
    }
    if c.queues > 1 {
        if let Some(units::RateSpec::Percent(_)) = rate_spec {
            return Err(msg(
                "--rate N% with --queues: give the rate in pps or bits (100k, 500Mbit)",
            ));
        }
        return multiqueue::pktgen_cmd(&tx_name, &c, &args);
    }
    let mut cfg = c.port.config();
    // Tags inserted by the NIC: the e1000 honours VLE only in VLAN mode.
    cfg.vlan_strip |= c.vlan.is_some();
    let mut tx = if xdp {
        zcnic::open_with(&c.pci, &cfg)?
    } else {
        open(&addr, &cfg)?
    };
    let mut rx_nic = match &rx_name {
        Some(r) if *r != tx_name => Some(zcnic::open_with(r, &cfg)?),
        _ => None,
    };
    if let Some(r @ units::RateSpec::Percent(_)) = rate_spec {
        let pps = r
            .pps(sizes.mean(), tx.link().speed_mbps)
            .map_err(|e| msg(format!("--rate {}: {e}", c.rate.as_deref().unwrap_or(""))))?;
        (rate, args.rate) = (Some(pps), Some(pps));
    }
    let size_text = match sizes {
        pktgen::Sizes::Fixed(n) => format!("{n}-byte frames"),
        pktgen::Sizes::Range(a, b) => format!("{a}..{b}-byte frames"),
        pktgen::Sizes::Imix => "IMIX frames".into(),
    };
    let head = format!(
        "pktgen {}: {} {}, link {}, {size_text}{}{}{}",
        tx.name(),
        tx.driver(),
        zcnic::format_mac(tx.mac()),
        tx.link(),
        rate.map_or(String::new(), |r| format!(
            " at {r:.0} pps ({:.1} Mbit/s on the wire{})",
            r * (sizes.mean() + units::WIRE_OVERHEAD as f64) * 8.0 / 1e6,
            match pacing {
                pace::Pacing::Burst => "",
                pace::Pacing::Smooth => ", smooth",
                pace::Pacing::Poisson(_) => ", Poisson gaps",
            }
        )),
        rx_name
            .as_ref()
            .map_or(String::new(), |r| format!(", receiving on {r}")),
        args.offload
            .map_or(String::new(), |r| offload_split(&r, tx.offloads())),
    );
    if c.json {
        eprintln!("{head}");
    } else {
        println!("{head}");
    }
    let rx = match (&mut rx_nic, &rx_name) {
        (Some(n), _) => pktgen::Rx::Other(n.as_mut()),
        (None, Some(_)) => pktgen::Rx::Same,
        (None, None) => pktgen::Rx::None,
    };
    if streams_run {
        let link = tx.link().speed_mbps;
        // With --json only the JSON goes to stdout.
        let mut out: Box<dyn std::io::Write> = if c.json {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        };
        let s = streams::run(tx.as_mut(), rx, &args, &specs, link, &mut out)?;
        drop(rx_nic);
        drop(tx);
        return report_streams(&c, &s);
    }
    let s = pktgen::run(tx.as_mut(), rx, &args)?;
    let pools: Vec<_> = std::iter::once(&tx)
        .chain(rx_nic.as_ref())
        .map(|n| (n.name(), n.pool().clone()))
        .collect();
    drop(rx_nic);
    drop(tx); // stops DMA; every buffer a ring held goes back to its pool
    for line in pktgen::summary_lines(&s) {
        if c.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    for (a, p) in &pools {
        let line = format!(
            "pktgen {a}: {} of {} buffers back in the pool",
            p.free_count(),
            p.capacity()
        );
        if c.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    if c.json {
        println!("{}", pktgen::summary_json(&s));
    }
    // Reported after the summary, so nothing is lost; the exit status says it failed.
    pktgen::unflushed(&s).map_or(Ok(()), Err)
}

/// A streams run's summary (text, or JSON with --json), and its CSV and plot.
fn report_streams(c: &PktgenCmd, s: &streams::RunSummary) -> Result<(), ToolError> {
    for line in streams::summary_lines(s) {
        if c.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    if c.json {
        println!("{}", streams::summary_json(s));
    }
    if let Some(path) = &c.csv {
        plot::write_csv(path, &s.samples).map_err(|e| msg(format!("{}: {e}", path.display())))?;
        eprintln!(
            "pktgen {}: wrote {} ({} rows)",
            s.port,
            path.display(),
            s.samples.len()
        );
    }
    if let Some(path) = &c.plot {
        plot::write_svg(path, &format!("pktgen {}", s.port), &s.samples).map_err(msg)?;
        eprintln!("pktgen {}: drew {}", s.port, path.display());
    }
    if s.flushed {
        Ok(())
    } else {
        Err(msg(format!(
            "{}: the device had not sent every queued frame when pktgen stopped (is the link up? `zcnic list`)",
            s.port
        )))
    }
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// The summary as lines of text; the first is
/// `pktgen ADDR: sent N frames (B bytes) in T s: R pps, M Mbit/s; device GPTC N`.
pub fn summary_lines(s: &Summary) -> Vec<String> {
    let mut first = format!(
        "pktgen {}: sent {} frames ({} bytes) in {:.3} s: {:.0} pps, {:.1} Mbit/s",
        s.port,
        s.sent,
        s.bytes,
        s.secs,
        s.pps(),
        s.mbps()
    );
    if !s.device.is_empty() {
        let c: Vec<String> = s.device.iter().map(|(n, v)| format!("{n} {v}")).collect();
        first += &format!("; device {}", c.join(", "));
    }
    let mut lines = vec![first];
    if let Some(r) = &s.rx {
        let lost = r.seq.lost(s.sent);
        let pct = 100.0 * lost as f64 / s.sent.max(1) as f64;
        lines.push(format!(
            "pktgen {}: received {} of {}: lost {lost} ({pct:.3}%), duplicated {}, reordered {}, other frames {}",
            r.port, r.seq.unique, s.sent, r.seq.duplicates, r.seq.reordered, r.other
        ));
        if let Some(p) = r.latency {
            lines.push(format!(
                "pktgen latency (us): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                us(p.p50),
                us(p.p90),
                us(p.p99),
                us(p.p999),
                us(p.max),
                p.count
            ));
        }
    }
    lines
}

/// The summary as one JSON object.
pub fn summary_json(s: &Summary) -> String {
    let mut j = format!(
        "{{\"port\":\"{}\",\"sent\":{},\"bytes\":{},\"seconds\":{:.6},\"pps\":{:.1},\"mbps\":{:.3}",
        s.port,
        s.sent,
        s.bytes,
        s.secs,
        s.pps(),
        s.mbps()
    );
    j += ",\"device\":{";
    j += &s
        .device
        .iter()
        .map(|(n, v)| format!("\"{n}\":{v}"))
        .collect::<Vec<_>>()
        .join(",");
    j += "}";
    j += &format!(",\"flushed\":{}", s.flushed);
    if let Some(r) = &s.rx {
        j += &format!(
            ",\"rx\":{{\"port\":\"{}\",\"other\":{},{}}}",
            r.port,
            r.other,
            rx_json(&r.seq, s.sent, r.latency.as_ref())
        );
    }
    j + "}"
}

/// What came back of `sent` frames as JSON fields: counts, then the latency if measured.
pub fn rx_json(seq: &crate::seq::SeqTracker, sent: u64, latency: Option<&Percentiles>) -> String {
    let mut j = format!(
        "\"received\":{},\"unique\":{},\"lost\":{},\"duplicated\":{},\"reordered\":{}",
        seq.received,
        seq.unique,
        seq.lost(sent),
        seq.duplicates,
        seq.reordered
    );
    if let Some(p) = latency {
        j += &format!(
            ",\"latency_ns\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"samples\":{}}}",
            p.p50, p.p90, p.p99, p.p999, p.max, p.count
        );
    }
    j
}

/// What of `req` the port does and what is done in software before the frame leaves,
/// for pktgen's first line: `", offloaded: UDP checksum; in software: IPv4 checksum"`.
pub fn offload_split(req: &zcnic::TxOffload, caps: zcnic::Offloads) -> String {
    let (mut nic, mut soft) = (Vec::new(), Vec::new());
    let mut put = |by_nic: bool, what: &'static str| {
        if by_nic {
            nic.push(what)
        } else {
            soft.push(what)
        }
    };
    if req.ip_csum {
        put(caps.tx_ipv4_csum, "IPv4 checksum");
    }
    if let Some(l4) = req.l4 {
        let what = match l4 {
            zcnic::L4Csum::Udp => "UDP checksum",
            zcnic::L4Csum::Tcp => "TCP checksum",
        };
        put(caps.tx_l4(l4), what);
    }
    if req.vlan.is_some() {
        put(caps.tx_vlan_insert, "VLAN tag");
    }
    let list = |v: &[&str]| {
        if v.is_empty() {
            "nothing".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(", offloaded: {}; in software: {}", list(&nic), list(&soft))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_split_names_who_does_what() {
        let req = zcnic::TxOffload {
            ip_csum: true,
            l4: Some(zcnic::L4Csum::Udp),
            vlan: Some(100),
            ..zcnic::TxOffload::ipv4(14, 20)
        };
        let virtio = zcnic::Offloads {
            tx_tcp_csum: true,
            tx_udp_csum: true,
            ..zcnic::Offloads::NONE
        };
        assert_eq!(
            offload_split(&req, virtio),
            ", offloaded: UDP checksum; in software: IPv4 checksum, VLAN tag"
        );
        assert_eq!(
            offload_split(&req, zcnic::Offloads::NONE),
            ", offloaded: nothing; in software: IPv4 checksum, UDP checksum, VLAN tag"
        );
    }
}
