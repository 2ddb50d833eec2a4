//! A filtering bridge on zcnic's raw burst API: frames go A→B and B→A unless a rule drops
//! them; every rule counts what it dropped. No copy: a frame leaves in the buffer it came in.
//!
//! ```text
//! l2_filter <PCI-A> <PCI-B> [RULE...] [--seconds N]
//!   RULE: ether:0x86dd   drop this EtherType
//!         udp:53         drop UDP from or to this port
//!         mac:ff:ff:ff:ff:ff:ff   drop frames to this destination MAC
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};
use zcnic::Packet;

#[derive(Debug)]
enum Rule {
    EtherType(u16),
    UdpPort(u16),
    DstMac([u8; 6]),
}

impl Rule {
    fn parse(s: &str) -> Option<Rule> {
        let (kind, v) = s.split_once(':')?;
        match kind {
            "ether" => u16::from_str_radix(v.trim_start_matches("0x"), 16)
                .ok()
                .map(Rule::EtherType),
            "udp" => v.parse().ok().map(Rule::UdpPort),
            "mac" => {
                let b: Vec<u8> = v
                    .split(':')
                    .filter_map(|x| u8::from_str_radix(x, 16).ok())
                    .collect();
                <[u8; 6]>::try_from(b).ok().map(Rule::DstMac)
            }
            _ => None,
        }
    }

    /// Whether the rule matches `f` (an Ethernet frame; IPv4 without options assumed for
    /// the UDP rule, as a small L2/L3 filter would).
    fn matches(&self, f: &[u8]) -> bool {
        let ether_type = f.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]]));
        match *self {
            Rule::EtherType(t) => ether_type == Some(t),
            Rule::DstMac(m) => f.get(..6) == Some(&m[..]),
            Rule::UdpPort(p) => {
                ether_type == Some(0x0800)
                    && f.get(23) == Some(&17)
                    && f.get(34..38).is_some_and(|u| {
                        u16::from_be_bytes([u[0], u[1]]) == p
                            || u16::from_be_bytes([u[2], u[3]]) == p
                    })
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!(
            "usage: l2_filter <PCI-A> <PCI-B> [ether:HEX|udp:PORT|mac:MAC ...] [--seconds N]"
        );
        return ExitCode::from(2);
    }
    let mut rules = Vec::new();
    let mut seconds = None;
    let mut it = args[2..].iter();
    while let Some(a) = it.next() {
        if a == "--seconds" {
            seconds = it
                .next()
                .and_then(|s| s.parse::<f64>().ok())
                .map(Duration::from_secs_f64);
        } else if let Some(r) = Rule::parse(a) {
            rules.push(r);
        } else {
            eprintln!("l2_filter: error: `{a}` is not a rule (ether:0x86dd, udp:53, mac:ff:ff:ff:ff:ff:ff)");
            return ExitCode::from(2);
        }
    }
    let mut ports = Vec::new();
    for pci in &args[..2] {
        match zcnic::open(pci) {
            Ok(n) => ports.push(n),
            Err(e) => {
                eprintln!("l2_filter: error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut dropped = vec![0u64; rules.len()];
    let mut forwarded = [0u64; 2];
    let mut burst: Vec<Packet> = Vec::with_capacity(32);
    let start = Instant::now();
    println!(
        "l2_filter: bridging {} <-> {} with {} rules",
        args[0],
        args[1],
        rules.len()
    );
    while seconds.is_none_or(|s| start.elapsed() < s) {
        for (from, to) in [(0, 1), (1, 0)] {
            if ports[from].rx_batch(&mut burst, 32) == 0 {
                continue;
            }
            burst.retain(|p| match rules.iter().position(|r| r.matches(p.data())) {
                Some(i) => {
                    dropped[i] += 1;
                    false // dropping the Packet returns its buffer to the pool
                }
                None => true,
            });
            forwarded[from] += ports[to].tx_batch(&mut burst) as u64;
            burst.clear(); // what the ring could not take is dropped, as a bridge would
        }
    }
    println!(
        "l2_filter: forwarded A->B {}, B->A {}",
        forwarded[0], forwarded[1]
    );
    for (r, n) in rules.iter().zip(&dropped) {
        println!("l2_filter: rule {r:?} dropped {n}");
    }
    ExitCode::SUCCESS
}
