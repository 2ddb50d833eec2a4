//! Reads what the guest saved for each run, measures it by the one rule
//! ([`super::stats`]), checks it, and prints the table. A run that failed, a count that
//! disagrees with the device, or a peer that is missing is a failure with one line
//! saying which; the bench then exits non-zero.

use super::parse;
use super::plan::{Plan, Run, Target, Tool};
use super::stats::{figure, median, spread, window, Series};
use std::path::Path;

/// zcnic's transmit ring (driver `Config::default().tx_ring`): its `sent` may run ahead
/// of the device's count by at most this many frames.
pub const ZCNIC_RING: u64 = 512;
/// The kernel e1000 and virtio-net drivers' transmit rings (256 descriptors by default),
/// plus the few frames the kernel's own stack sends while the link is up (IPv6 neighbour
/// and router discovery).
pub const KERNEL_RING: u64 = 256 + 16;
/// Runs of one tool further apart than this are flagged.
pub const FLAG_SPREAD: f64 = 0.20;

/// One measured run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub run: Run,
    /// Frames per second by the target's rule.
    pub pps: f64,
    /// Forwarding: the source's median per-second rate over the same window of its own.
    pub source_pps: Option<f64>,
    /// What the device check compared, when the run had one.
    pub check: Option<String>,
}

/// Everything the bench found.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// One line each: what failed and why.
    pub failures: Vec<String>,
    /// Peers that were not there (allowed with `--allow-missing`).
    pub missing: Vec<String>,
}

impl Report {
    /// The figures of `tool` on `target`, in round order.
    pub fn figures(&self, target: Target, tool: Tool) -> Vec<f64> {
        self.outcomes
            .iter()
            .filter(|o| o.run.target == target && o.run.tool == tool)
            .map(|o| o.pps)
            .collect()
    }

    fn sources(&self, target: Target, tool: Tool) -> Vec<f64> {
        self.outcomes
            .iter()
            .filter(|o| o.run.target == target && o.run.tool == tool)
            .filter_map(|o| o.source_pps)
            .collect()
    }
}

/// Measures every run of `plan` from the files in `dir` (the guest's `/results`).
pub fn analyse(dir: &Path, plan: &Plan) -> Report {
    let read = |name: String| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let mut report = Report::default();
    for run in plan.runs() {
        match measure(&run, plan, &read) {
            Ok(o) => report.outcomes.push(o),
            Err(why) => report
                .failures
                .push(format!("bench: {}: {why}", run.describe())),
        }
    }
    report
}

/// The last non-empty line of a tool's output, for a failure's one line.
fn last_line(out: &str) -> &str {
    out.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output)")
}

fn measure(run: &Run, plan: &Plan, read: &dyn Fn(String) -> String) -> Result<Outcome, String> {
    let id = run.id();
    let out = read(format!("{id}.out"));
    let rc = read(format!("{id}.rc"));
    let rc: i32 = rc
        .trim()
        .parse()
        .map_err(|_| "did not run to the end (the guest scenario stopped first)".to_string())?;
    // testpmd stops on SIGINT, closes its ports, says goodbye and exits 0.
    let clean = run.tool != Tool::Testpmd || parse::testpmd_clean(&out);
    if rc != 0 {
        return Err(format!("exited {rc}: {}", last_line(&out)));
    }
    if !clean {
        return Err(format!(
            "did not shut down cleanly (no \"Bye...\"): {}",
            last_line(&out)
        ));
    }
    let series = series(run, &out, read);
    let intervals = window(&series, plan.window).map_err(|e| format!("cannot be measured: {e}"))?;
    let pps = figure(run.target.rule(), &intervals);
    let check = check(run, &out, read)?;
    let source_pps = match run.target.fwd_ports() {
        Some((src, _, _)) => Some(source(&id, src, plan, read)?),
        None => None,
    };
    Ok(Outcome {
        run: *run,
        pps,
        source_pps,
        check,
    })
}

/// The run's counter: the device's where it has one, else the tool's own.
fn series(run: &Run, out: &str, read: &dyn Fn(String) -> String) -> Series {
    let device = run.target.device_counted();
    match (run.tool, run.target.fwd_ports()) {
        (Tool::Kernel, _) => parse::samples(&read(format!("{}.samples", run.id()))),
        (Tool::Testpmd, Some(_)) => parse::testpmd(out, 1),
        (Tool::Testpmd, None) => parse::testpmd(out, 0),
        (Tool::Zcnic | Tool::Hybrid, Some((_, inp, outp))) => parse::fwd(out, inp, outp),
        // The plan has no ceiling run on a forwarding target, no hybrid run elsewhere.
        (Tool::Zcnic | Tool::Ceiling | Tool::Hybrid, _) => parse::zcnic(out, device),
    }
}

/// The cross-checks: zcnic's `sent` against the device's count (within one ring), and
/// kernel pktgen's count against the device's increase over its run.
fn check(run: &Run, out: &str, read: &dyn Fn(String) -> String) -> Result<Option<String>, String> {
    let device = run.target.device_counted();
    match run.tool {
        Tool::Zcnic | Tool::Ceiling if run.target.fwd_ports().is_none() => {
            let (sent, gptc) = parse::zcnic_summary(out).ok_or("printed no summary line")?;
            let Some(gptc) = gptc.filter(|_| device) else {
                return Ok(None);
            };
            // One ring per transmit queue may still be in flight.
            let rings = ZCNIC_RING * u64::from(run.target.queues());
            if sent.abs_diff(gptc) > rings {
                return Err(format!(
                    "sent {sent} frames but the device counted {gptc} (GPTC), more than its rings ({rings}) apart"
                ));
            }
            Ok(Some(format!("sent {sent}, GPTC {gptc}")))
        }
        Tool::Kernel => {
            let sofar = parse::kernel_pktgen(&read(format!("{}.report", run.id())))?;
            let number = |name: &str| -> Result<u64, String> {
                read(format!("{}.{name}", run.id()))
                    .trim()
                    .parse()
                    .map_err(|_| format!("no {name} reading of the device counter"))
            };
            let counted = number("end")?.saturating_sub(number("base")?);
            let what = if device { "GPTC" } else { "netdev tx_packets" };
            if sofar.abs_diff(counted) > KERNEL_RING {
                return Err(format!(
                    "sent {sofar} frames but the {what} count rose by {counted}, more than one ring ({KERNEL_RING}) apart"
                ));
            }
            Ok(Some(format!("sent {sofar}, {what} +{counted}")))
        }
        _ => Ok(None),
    }
}

/// The forwarding source's rate: the median of its per-second rates over a window of the
/// same warm-up and length from its own start. It ran on through the forwarder's run.
fn source(
    id: &str,
    pci: &str,
    plan: &Plan,
    read: &dyn Fn(String) -> String,
) -> Result<f64, String> {
    let rc = read(format!("{id}.source-rc"));
    let out = read(format!("{id}.source"));
    if rc.trim() != "0" {
        return Err(format!(
            "its source, zcnic pktgen on {pci}, exited {}: {}",
            rc.trim(),
            last_line(&out)
        ));
    }
    let intervals = window(&parse::zcnic(&out, false), plan.window)
        .map_err(|e| format!("its source cannot be measured: {e}"))?;
    Ok(figure(super::stats::Rule::MedianPerSecond, &intervals))
}

/// Records a peer that could not be had: a failure, unless the user allowed it.
pub fn missing_peer(report: &mut Report, what: String, allowed: bool) {
    if allowed {
        report.missing.push(what);
    } else {
        report.failures.push(format!(
            "bench: {what}; `cargo xtask bench --allow-missing` runs without it"
        ));
    }
}

/// Ok when nothing failed; else every failure, one line each (the first says the most).
pub fn verdict(report: &Report) -> Result<(), String> {
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(report.failures.join("\n"))
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.0}")
    }
}

/// `a / b` for the same rounds (a run of each per round), as (of the figures, min, max).
fn ratio(report: &Report, target: Target, a: Tool, b: Tool) -> Option<(f64, f64, f64)> {
    ratio_of(report.figures(target, a), report.figures(target, b))
}

/// A tool's figure on a multi-queue target over its figure on the one-queue target.
pub fn scaling_text(report: &Report, target: Target, tool: Tool) -> Option<String> {
    let one = target.one_queue()?;
    let (r, min, max) = ratio_of(report.figures(target, tool), report.figures(one, tool))?;
    Some(format!("{r:.2}x (runs {min:.2}–{max:.2}x)"))
}

/// Median over median, with the range of the per-round ratios.
fn ratio_of(x: Vec<f64>, y: Vec<f64>) -> Option<(f64, f64, f64)> {
    if x.is_empty() || y.is_empty() {
        return None;
    }
    let per_round: Vec<f64> = x.iter().zip(&y).map(|(x, y)| x / y).collect();
    let min = per_round.iter().copied().fold(f64::INFINITY, f64::min);
    let max = per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((median(&x) / median(&y), min, max))
}

/// The ratio as text: `1.31x (runs 1.24–1.38x)`.
pub fn ratio_text(report: &Report, target: Target, a: Tool, b: Tool) -> Option<String> {
    let (r, min, max) = ratio(report, target, a, b)?;
    Some(format!("{r:.2}x (runs {min:.2}–{max:.2}x)"))
}

/// The table: per target, each tool's figure (the median of its runs), every run, the
/// spread, then the ratios.
pub fn print(report: &Report, plan: &Plan) {
    println!(
        "\nbench: one boot, TCG, 60-byte frames; every run measured over a {} s window after {} s of warm-up; {} round(s), tools interleaved",
        plan.window.secs, plan.window.warm, plan.rounds
    );
    for &target in &plan.targets {
        println!("  {} ({}, pps):", target.label(), target.rule().describe());
        for &tool in target.tools() {
            let runs = report.figures(target, tool);
            if runs.is_empty() {
                println!("    {:<18}{:>10}", tool.label(target), "-");
                continue;
            }
            let s = spread(&runs);
            let flag = if s > FLAG_SPREAD {
                "  (!) runs differ by more than 20%"
            } else {
                ""
            };
            let mut line = format!(
                "    {:<18}{:>10}   runs {}   spread {:.1}%{flag}",
                tool.label(target),
                fmt(median(&runs)),
                runs.iter().map(|v| fmt(*v)).collect::<Vec<_>>().join(" "),
                s * 100.0
            );
            let src = report.sources(target, tool);
            if !src.is_empty() {
                line += &format!(
                    "   source {}",
                    src.iter().map(|v| fmt(*v)).collect::<Vec<_>>().join(" ")
                );
            }
            println!("{line}");
        }
        let mut ratios = Vec::new();
        for (a, b, name) in [
            (Tool::Zcnic, Tool::Testpmd, "zcnic/DPDK"),
            (Tool::Zcnic, Tool::Kernel, "zcnic/kernel"),
            (Tool::Testpmd, Tool::Ceiling, "DPDK/ceiling"),
            (Tool::Zcnic, Tool::Ceiling, "zcnic/ceiling"),
            (Tool::Hybrid, Tool::Zcnic, "hybrid/poll"),
        ] {
            if let Some(t) = ratio_text(report, target, a, b) {
                ratios.push(format!("{name} {t}"));
            }
        }
        if let Some(other) = target.compared_with() {
            for (a, b, name) in [
                (Tool::Zcnic, Tool::Zcnic, "zcnic AF_XDP/zcnic's driver"),
                (Tool::Zcnic, Tool::Kernel, "zcnic AF_XDP/kernel pktgen"),
                (
                    Tool::Testpmd,
                    Tool::Testpmd,
                    "DPDK net_af_xdp/DPDK's driver",
                ),
            ] {
                let x = report.figures(target, a);
                if let Some((r, min, max)) = ratio_of(x, report.figures(other, b)) {
                    ratios.push(format!("{name} {r:.2}x (runs {min:.2}–{max:.2}x)"));
                }
            }
        }
        for (tool, name) in [(Tool::Zcnic, "zcnic"), (Tool::Testpmd, "DPDK")] {
            if let Some(t) = scaling_text(report, target, tool) {
                ratios.push(format!("{name} {} queues/1 queue {t}", target.queues()));
            }
        }
        if !ratios.is_empty() {
            println!("    {}", ratios.join(", "));
        }
    }
    let checks: Vec<String> = report
        .outcomes
        .iter()
        .filter_map(|o| Some(format!("{} {}", o.run.id(), o.check.as_deref()?)))
        .collect();
    if !checks.is_empty() {
        println!("  device checks passed ({}):", checks.len());
        for c in checks {
            println!("    {c}");
        }
    }
    for m in &report.missing {
        println!("  missing (allowed by --allow-missing): {m}");
    }
}

#[cfg(test)]
mod tests;
