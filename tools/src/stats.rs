//! `zcnic stats`: open a port, receive for a while (dropping what arrives), and print
//! its counters, per queue with `--queues N`, with the RSS the port reads from its device
//! (which `--reta` may set first).

use crate::checks::{parse_pci, seconds};
use crate::cli::PortOpts;
use crate::idle::{self, Idle, Idler};
use crate::{msg, ToolError};
use zcnic::Config;

/// `zcnic stats`: open the port, receive for `duration` seconds (dropping what
/// arrives), print its counters; with several queues each queue's too, and the RSS.
pub fn run(
    pci: &str,
    duration: f64,
    json: bool,
    queues: u16,
    reta: &[u16],
    idle: Idle,
    port: PortOpts,
) -> Result<(), ToolError> {
    // `xdp:eth0` (AF_XDP) by name; a PCI address checked and spelled in full.
    let addr = match pci.starts_with("xdp:") {
        true => pci.to_string(),
        false => parse_pci(pci)?.to_string(),
    };
    let d = seconds("duration", Some(duration))?.unwrap_or_default();
    let cfg = Config {
        promisc: true,
        ..port.config()
    };
    if queues == 0 {
        return Err(msg("--queues 0: give at least 1"));
    }
    if !reta.is_empty() && queues == 1 {
        return Err(msg("--reta spreads over queues: give --queues 2 or more"));
    }
    if queues > 1 {
        let cfg = Config { queues, ..cfg };
        let (mut port, pairs) = zcnic::open_port(&addr, &cfg)?;
        if !reta.is_empty() {
            set_reta(port.as_mut(), reta)?;
        }
        eprintln!("stats {addr}: receiving on {queues} queues for {duration} s, idle {idle}");
        let (cpu0, wall0) = (idle::cpu_time(), std::time::Instant::now());
        let each = crate::multiqueue::receive_queues(pairs, d, idle)?;
        eprintln!(
            "stats {addr}: {}; {}",
            each.join("; "),
            idle::cpu_line(cpu0, wall0.elapsed())
        );
        let per_queue = port.queue_stats();
        let s = port.stats();
        let (driver, mac, link) = (port.driver(), port.mac(), port.link());
        let rss = rss_part(&port.rss(), json);
        let head = Head {
            addr: &addr,
            driver,
            mac,
            link,
        };
        print_stats(&head, &s, &per_queue, &rss, json);
        return Ok(());
    }
    let mut nic = zcnic::open_with(&addr, &cfg)?;
    eprintln!("stats {addr}: receiving for {duration} s, idle {idle}");
    let mut idler = Idler::new(idle);
    let (cpu0, wall0) = (idle::cpu_time(), std::time::Instant::now());
    receive_for(d, |buf| {
        let got = nic.rx_batch(buf, 64);
        if idler.due(got) {
            idler.sleep("stats", &mut [nic.as_mut()]);
        }
    });
    eprintln!(
        "stats {addr}: {}; {}",
        idler.describe(),
        idle::cpu_line(cpu0, wall0.elapsed())
    );
    let s = nic.stats();
    let head = Head {
        addr: &addr,
        driver: nic.driver(),
        mac: nic.mac(),
        link: nic.link(),
    };
    print_stats(&head, &s, &[], "", json);
    Ok(())
}

/// `--reta Q,Q,…`: the queues repeated over the device's table (its length as the port
/// reads it; 128, the igb's and QEMU's virtio-net's, when it reads none).
fn set_reta(port: &mut dyn zcnic::Port, queues: &[u16]) -> Result<(), ToolError> {
    let len = port
        .rss()
        .ok()
        .and_then(|r| r.reta)
        .map_or(128, |t| t.len());
    let entries = (0..len).map(|i| queues[i % queues.len()]).collect();
    let table = zcnic::rss::Reta::new(entries).map_err(|e| msg(format!("--reta: {e}")))?;
    port.set_reta(&table)?;
    Ok(())
}

/// `zcnic stats --queues`' RSS: the key, hashed types and table the port reads from its
/// device (a line `  rss key HEX types 0xN table Q Q …`), or why there is none
/// (`  rss: …`); in JSON a member of the object (`"rss":{"key":…,"types":…,"table":[…]}`
/// or `"rss_error":"…"`).
fn rss_part(rss: &Result<zcnic::Rss, zcnic::Error>, json: bool) -> String {
    match rss {
        Ok(r) => {
            let key: String = r.key.iter().map(|b| format!("{b:02x}")).collect();
            let table: Vec<String> = r
                .reta
                .iter()
                .flat_map(|t| t.entries())
                .map(u16::to_string)
                .collect();
            match json {
                true => format!(
                    ",\"rss\":{{\"key\":\"{key}\",\"types\":{},\"table\":[{}]}}",
                    r.types.bits(),
                    table.join(",")
                ),
                false => format!(
                    "  rss key {key} types {:#x} table {}",
                    r.types.bits(),
                    table.join(" ")
                ),
            }
        }
        Err(e) if json => format!(",\"rss_error\":{:?}", e.to_string()),
        Err(e) => format!("  rss: {e}"),
    }
}

/// Calls `rx` with an empty buffer until `d` has passed or Ctrl-C, dropping what it got.
fn receive_for(d: std::time::Duration, mut rx: impl FnMut(&mut Vec<zcnic::Packet>)) {
    let end = d.as_nanos() as u64;
    let mut clock = crate::clock::LoopClock::new();
    let mut buf = Vec::with_capacity(256);
    while clock.now_ns() < end && !crate::stopped() {
        rx(&mut buf);
        buf.clear();
    }
}

/// What `zcnic stats` says of the port before its counters.
struct Head<'a> {
    addr: &'a str,
    driver: &'a str,
    mac: [u8; 6],
    link: zcnic::Link,
}

/// `zcnic stats`' output: a line per counter (and per queue), or one JSON object with a
/// `queues` array when there are several.
fn print_stats(head: &Head, s: &zcnic::Stats, per_queue: &[zcnic::Stats], rss: &str, json: bool) {
    let Head {
        addr,
        driver,
        mac,
        link,
    } = head;
    let sw = s.software();
    if json {
        let f = |v: &[(&str, u64)]| {
            v.iter()
                .map(|(n, x)| format!("\"{n}\":{x}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let queues = if per_queue.is_empty() {
            String::new()
        } else {
            let each: Vec<String> = per_queue
                .iter()
                .map(|q| format!("{{{}}}", f(&q.software())))
                .collect();
            format!(",\"queues\":[{}]", each.join(","))
        };
        println!(
            "{{\"port\":\"{addr}\",\"driver\":\"{driver}\",\"link_up\":{},\"software\":{{{}}},\"device\":{{{}}}{queues}{rss}}}",
            link.up,
            f(&sw),
            f(&s.hw)
        );
    } else {
        println!("{addr}: {driver} {}, link {link}", zcnic::format_mac(*mac));
        for (n, v) in sw.iter().chain(s.hw.iter()) {
            println!("  {n:<12} {v}");
        }
        for (k, q) in per_queue.iter().enumerate() {
            println!(
                "  queue {k}: rx_packets {} rx_errors {} rx_no_buf {} tx_packets {}",
                q.rx_packets, q.rx_errors, q.rx_no_buf, q.tx_packets
            );
        }
        if !rss.is_empty() {
            println!("{rss}");
        }
    }
}
