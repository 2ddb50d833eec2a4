//! Turns each tool's own output, as the guest saved it, into a counter [`Series`]:
//! zcnic's per-second lines, testpmd's per-second port statistics, and the samples the
//! bench's sampler took of the kernel's counters while kernel pktgen ran.

use super::stats::Series;

/// The number after the word `key` in `line` (`total 123` → 123).
fn after<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    words.next()?.trim_end_matches([',', ';']).parse().ok()
}

/// zcnic pktgen's (and `--ceiling`'s) per-second lines,
/// `pktgen ADDR:    3.0 s  tx 123 pps … total N  device GPTC M`: the device's count when
/// `device` and the line has one, else pktgen's own total. pktgen's clock starts with its
/// first burst, so the series starts at (0, 0).
pub fn zcnic(out: &str, device: bool) -> Series {
    let mut samples = vec![(0.0, 0)];
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("pktgen ") else {
            continue;
        };
        let Some((_, rest)) = rest.split_once(": ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(t), Some("s")) = (words.next().and_then(|w| w.parse().ok()), words.next()) else {
            continue;
        };
        let count = if device {
            after(rest, "GPTC")
        } else {
            after(rest, "total")
        };
        if let Some(c) = count {
            samples.push((t, c));
        }
    }
    Series::new(samples)
}

/// zcnic pktgen's summary: (frames sent, the device's GPTC when it reported one).
pub fn zcnic_summary(out: &str) -> Option<(u64, Option<u64>)> {
    let line = out
        .lines()
        .find(|l| l.contains(": sent ") && l.contains(" frames ("))?;
    Some((
        after(line, "sent")?,
        after(line.split("device").nth(1).unwrap_or(""), "GPTC"),
    ))
}

/// zcnic fwd's per-second lines for the direction `from -> to`:
/// `fwd IN -> OUT:    2.0 s  rx … pps  tx … pps  total rx X tx Y dropped 0`; the count is
/// Y, what it sent out of `to`.
pub fn fwd(out: &str, from: &str, to: &str) -> Series {
    let prefix = format!("fwd {from} -> {to}: ");
    let mut samples = vec![(0.0, 0)];
    for line in out.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(t), Some("s")) = (words.next().and_then(|w| w.parse().ok()), words.next()) else {
            continue;
        };
        let total = rest.split(" total ").nth(1).unwrap_or("");
        if let Some(c) = after(total, "tx") {
            samples.push((t, c));
        }
    }
    Series::new(samples)
}

/// testpmd's per-second `NIC statistics for port P` blocks (`--stats-period 1`): the
/// port's `TX-packets` total (on the e1000 DPDK reads it from GPTC). testpmd prints no
/// time, but each block's `Tx-pps` is the increase over the exact time since the last
/// block, so that time is the increase divided by the rate (a second when nothing was
/// sent); the first block is time 0.
pub fn testpmd(out: &str, port: u32) -> Series {
    let header = format!("NIC statistics for port {port} ");
    let (mut inside, mut count) = (false, None::<u64>);
    let mut samples: Vec<(f64, u64)> = Vec::new();
    for line in out.lines() {
        if line.contains("NIC statistics for port") {
            inside = line.contains(&header);
            count = None;
        } else if !inside {
            continue;
        } else if line.contains("TX-packets:") {
            count = after(line, "TX-packets:");
        } else if line.contains("Tx-pps:") {
            let (Some(c), Some(pps)) = (count, after::<f64>(line, "Tx-pps:")) else {
                continue;
            };
            let t = match samples.last() {
                None => 0.0,
                Some(&(t, prev)) if pps > 0.0 && c > prev => t + (c - prev) as f64 / pps,
                Some(&(t, _)) => t + 1.0,
            };
            samples.push((t, c));
            inside = false;
        }
    }
    Series::new(samples)
}

/// Whether testpmd shut down cleanly (stopped its ports and said goodbye).
pub fn testpmd_clean(out: &str) -> bool {
    out.contains("Bye...")
}

/// The bench's sampler lines, `NANOSECONDS COUNT` (guest clock, a kernel counter).
pub fn samples(out: &str) -> Series {
    let raw: Vec<(u64, u64)> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect();
    let t0 = raw.first().map_or(0, |r| r.0);
    Series::new(
        raw.iter()
            .map(|&(ns, c)| (ns.saturating_sub(t0) as f64 / 1e9, c))
            .collect(),
    )
}

/// Kernel pktgen's report (`/proc/net/pktgen/IF` after the run): frames it sent
/// (`pkts-sofar`), or the reason the run did not finish (`Result:` other than `OK`).
pub fn kernel_pktgen(report: &str) -> Result<u64, String> {
    let result = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Result: "))
        .ok_or("no Result line in its report")?;
    if !result.starts_with("OK") {
        return Err(format!("its report says: {result}"));
    }
    report
        .lines()
        .find_map(|l| after(l, "pkts-sofar:"))
        .ok_or_else(|| "no pkts-sofar in its report".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zcnic_lines_give_the_device_count_or_pktgens_own() {
        let out = "pktgen 0000:00:02.0: e1000 52:54:00:12:34:10, link up 1000 Mbit/s full duplex, 60-byte frames
pktgen 0000:00:02.0:    1.0 s  tx   2199276 pps    1055.7 Mbit/s  total 2199296  device GPTC 2198784
pktgen 0000:00:02.0:    2.0 s  tx   1863056 pps     975.0 Mbit/s  total 4062368  device GPTC 4061856
pktgen 0000:00:02.0: sent 4100000 frames (246000000 bytes) in 2.050 s: 2000000 pps, 960.0 Mbit/s; device GPTC 4100000, TPT 4100000
";
        assert_eq!(
            zcnic(out, true).samples,
            [(0.0, 0), (1.0, 2198784), (2.0, 4061856)]
        );
        assert_eq!(
            zcnic(out, false).samples,
            [(0.0, 0), (1.0, 2199296), (2.0, 4062368)]
        );
        assert_eq!(zcnic_summary(out), Some((4100000, Some(4100000))));
        let ceiling = "pktgen 0000:00:03.0:    1.0 s  ceiling tx    843159 pps  total 843200\n";
        assert_eq!(zcnic(ceiling, false).samples, [(0.0, 0), (1.0, 843200)]);
        let virtio =
            "pktgen 0000:00:03.0: sent 12 frames (720 bytes) in 1.000 s: 12 pps, 0.0 Mbit/s\n";
        assert_eq!(zcnic_summary(virtio), Some((12, None)));
        assert_eq!(zcnic_summary("pktgen: no such device\n"), None);
    }

    #[test]
    fn fwd_lines_give_what_one_direction_sent() {
        let out = "fwd 0000:00:05.0 -> 0000:00:06.0:    1.0 s  rx     88408 pps  tx     88408 pps  total rx 88414 tx 88410 dropped 0
fwd 0000:00:06.0 -> 0000:00:05.0:    1.0 s  rx         0 pps  tx         0 pps  total rx 0 tx 0 dropped 0
fwd 0000:00:05.0 -> 0000:00:06.0:    2.0 s  rx     83593 pps  tx     83593 pps  total rx 172066 tx 172060 dropped 0
fwd 0000:00:05.0 -> 0000:00:06.0: received 609136, forwarded 609136, dropped on purpose 0
";
        let s = fwd(out, "0000:00:05.0", "0000:00:06.0");
        assert_eq!(s.samples, [(0.0, 0), (1.0, 88410), (2.0, 172060)]);
        let back = fwd(out, "0000:00:06.0", "0000:00:05.0");
        assert_eq!(back.samples, [(0.0, 0), (1.0, 0)]);
    }

    const TESTPMD: &str = "Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: 0          RX-missed: 0          RX-bytes:  0
  TX-packets: 0          TX-errors: 0          TX-bytes:  0

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
  ######################## NIC statistics for port 1  ########################
  TX-packets: 7          TX-errors: 0          TX-bytes:  0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  TX-packets: 1000000    TX-errors: 0          TX-bytes:  60000000
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:      2000000          Tx-bps:    831880648
  ############################################################################
  ######################## NIC statistics for port 1  ########################
  TX-packets: 500007     TX-errors: 0          TX-bytes:  0
  Tx-pps:       500000          Tx-bps:            0
  ############################################################################
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  TX-packets: 2000000    TX-errors: 0          TX-bytes:  60000000
  Tx-pps:      1000000          Tx-bps:    831880648
  ############################################################################
  ---------------------- Forward statistics for port 0  ----------------------
  TX-packets: 23820544       TX-dropped: 0             TX-total: 23820544
Bye...
";

    #[test]
    fn testpmd_blocks_give_each_ports_count_and_the_time_its_rate_implies() {
        let p0 = testpmd(TESTPMD, 0);
        assert_eq!(p0.samples, [(0.0, 0), (0.5, 1000000), (1.5, 2000000)]);
        let p1 = testpmd(TESTPMD, 1);
        assert_eq!(p1.samples, [(0.0, 7), (1.0, 500007)]);
        assert!(testpmd(TESTPMD, 2).samples.is_empty());
        assert!(testpmd_clean(TESTPMD));
        assert!(!testpmd_clean("EAL: Error - exiting with code: 1\n"));
    }

    #[test]
    fn sampler_lines_count_from_their_first_sample() {
        let s = samples("5000000000 100\n6000000000 300\ngarbage\n7500000000 600\n");
        assert_eq!(s.samples, [(0.0, 100), (1.0, 300), (2.5, 600)]);
    }

    #[test]
    fn kernel_pktgen_reports_its_count_or_why_not() {
        let ok = "Params: count 0  min_pkt_size: 60  max_pkt_size: 60
Current:
     pkts-sofar: 7654321  errors: 0
Result: OK: 8000123(c7999000+d1123) usec, 7654321 (60byte,0frags)
  956789pps 459Mb/sec (459258720bps) errors: 0
";
        assert_eq!(kernel_pktgen(ok), Ok(7654321));
        let idle = "Current:\n     pkts-sofar: 0  errors: 0\nResult: Idle\n";
        assert_eq!(kernel_pktgen(idle).unwrap_err(), "its report says: Idle");
        assert!(kernel_pktgen("").is_err());
    }
}
