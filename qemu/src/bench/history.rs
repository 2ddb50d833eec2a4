//! The bench's memory: one JSON line per guest bench in
//! `target/zcnic-bench/history.jsonl` (commit, date, QEMU, the host's round trip and
//! every figure), from which [`super::chart`] draws the last runs side by side.

use super::plan::{Plan, Target, Tool};
use super::report::Report;
use super::stats::median;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One tool's runs on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub target: String,
    pub tool: String,
    /// How each run was measured (`device-delta`, `median-per-second`).
    pub rule: String,
    /// Frames per second, one per run, in round order.
    pub runs: Vec<f64>,
    pub median: f64,
    /// Forwarding: the source's rate during each run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<f64>,
}

/// One guest bench.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub commit: String,
    /// Whether the working tree had uncommitted changes to tracked files.
    pub dirty: bool,
    /// UTC, `2026-12-04T05:06:07Z`.
    pub date: String,
    pub qemu: String,
    /// `full` or `smoke`.
    pub mode: String,
    pub warm_s: u32,
    #[serde(alias = "window_intervals")]
    pub window_s: u32,
    pub rounds: usize,
    /// The median of the host's core-to-core round trips over the runs.
    pub host_trip_ns: Option<u64>,
    pub figures: Vec<Figure>,
    /// `zcnic/DPDK` and the like per target: (target, name, ratio of medians).
    pub ratios: Vec<(String, String, f64)>,
    /// Failure lines, if the bench failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl Entry {
    /// What `report` measured, with where and when.
    pub fn new(report: &Report, plan: &Plan, mode: &str, trips: &[u64]) -> Entry {
        let mut figures = Vec::new();
        let mut ratios = Vec::new();
        for target in Target::ALL {
            for &tool in target.tools() {
                let runs = report.figures(target, tool);
                if runs.is_empty() {
                    continue;
                }
                let source = report
                    .outcomes
                    .iter()
                    .filter(|o| o.run.target == target && o.run.tool == tool)
                    .filter_map(|o| o.source_pps)
                    .collect();
                figures.push(Figure {
                    target: target.key().into(),
                    tool: tool.key().into(),
                    rule: target.rule().key().into(),
                    median: median(&runs),
                    runs,
                    source,
                });
            }
            for (a, b) in [
                (Tool::Zcnic, Tool::Testpmd),
                (Tool::Zcnic, Tool::Kernel),
                (Tool::Hybrid, Tool::Zcnic),
            ] {
                let (x, y) = (report.figures(target, a), report.figures(target, b));
                if !x.is_empty() && !y.is_empty() {
                    let name = format!("{}/{}", a.key(), b.key());
                    ratios.push((target.key().into(), name, median(&x) / median(&y)));
                }
            }
        }
        let mut trips = trips.to_vec();
        trips.sort_unstable();
        Entry {
            commit: git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into()),
            dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()),
            date: command("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
            qemu: String::new(),
            mode: mode.into(),
            warm_s: plan.window.warm,
            window_s: plan.window.secs,
            rounds: plan.rounds,
            host_trip_ns: trips.get(trips.len() / 2).copied(),
            figures,
            ratios,
            failures: report.failures.clone(),
        }
    }

    /// The runs of `tool` on `target`.
    pub fn runs(&self, target: Target, tool: Tool) -> &[f64] {
        self.figures
            .iter()
            .find(|f| f.target == target.key() && f.tool == tool.key())
            .map_or(&[], |f| &f.runs)
    }

    /// The ratio `name` (`zcnic/testpmd`) on `target`.
    pub fn ratio(&self, target: Target, name: &str) -> Option<f64> {
        self.ratios
            .iter()
            .find(|r| r.0 == target.key() && r.1 == name)
            .map(|r| r.2)
    }
}

fn command(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn git(args: &[&str]) -> Option<String> {
    let root = zcnic_qemu::workspace_root();
    let mut all = vec!["-C", root.to_str()?];
    all.extend(args);
    command("git", &all)
}

/// The first line of `qemu --version`.
pub fn qemu_version(qemu: &Path) -> String {
    command(
        qemu.to_str().unwrap_or("qemu-system-x86_64"),
        &["--version"],
    )
    .and_then(|v| v.lines().next().map(str::to_string))
    .unwrap_or_default()
}

/// `target/zcnic-bench/`.
pub fn dir() -> PathBuf {
    zcnic_qemu::workspace_root().join("target/zcnic-bench")
}

/// Adds `entry` as the last line of the history at `path`.
pub fn append(path: &Path, entry: &Entry) -> Result<(), String> {
    let line = serde_json::to_string(entry).map_err(|e| e.to_string())?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))
}

/// Every entry of the history text (lines that do not parse, e.g. from an older format,
/// are skipped and counted).
pub fn parse(text: &str) -> (Vec<Entry>, usize) {
    let mut skipped = 0;
    let entries = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let e = serde_json::from_str(l).ok();
            skipped += usize::from(e.is_none());
            e
        })
        .collect();
    (entries, skipped)
}

/// The last `n` entries of `mode`, oldest first.
pub fn recent(entries: &[Entry], mode: &str, n: usize) -> Vec<Entry> {
    let same: Vec<&Entry> = entries.iter().filter(|e| e.mode == mode).collect();
    same[same.len().saturating_sub(n)..]
        .iter()
        .map(|e| (*e).clone())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two recorded entries (full mode), as the history file holds them.
    pub(crate) const HISTORY: &str = r#"{"commit":"2243195aaaaa","dirty":false,"date":"2026-12-03T02:00:00Z","qemu":"QEMU emulator version 7.2.15","mode":"full","warm_s":2,"window_s":6,"rounds":2,"host_trip_ns":120,"figures":[{"target":"e1000","tool":"kernel","rule":"device-delta","runs":[929694,911000],"median":920347},{"target":"e1000","tool":"testpmd","rule":"device-delta","runs":[1688122,1650000],"median":1669061},{"target":"e1000","tool":"zcnic","rule":"device-delta","runs":[2028016,2100000],"median":2064008},{"target":"e1000","tool":"ceiling","rule":"device-delta","runs":[2595812,2600000],"median":2597906},{"target":"virtio","tool":"zcnic","rule":"median-per-second","runs":[843159,800000],"median":821579},{"target":"fwd-virtio-e1000","tool":"zcnic","rule":"median-per-second","runs":[78072,80000],"median":79036,"source":[1900000,1800000]}],"ratios":[["e1000","zcnic/testpmd",1.2366]]}
not json from an older bench
{"commit":"bbbbbbbbbbbb","dirty":true,"date":"2026-12-04T02:00:00Z","qemu":"QEMU emulator version 7.2.15","mode":"full","warm_s":2,"window_s":6,"rounds":1,"host_trip_ns":null,"figures":[{"target":"e1000","tool":"testpmd","rule":"device-delta","runs":[1700000],"median":1700000},{"target":"e1000","tool":"zcnic","rule":"device-delta","runs":[2200000],"median":2200000}],"ratios":[["e1000","zcnic/testpmd",1.294]]}
{"commit":"cccccccccccc","dirty":false,"date":"2026-12-04T03:00:00Z","qemu":"QEMU emulator version 7.2.15","mode":"smoke","warm_s":1,"window_s":1,"rounds":1,"host_trip_ns":null,"figures":[],"ratios":[]}
"#;

    #[test]
    fn the_history_reads_back_what_was_appended() {
        let (entries, skipped) = parse(HISTORY);
        assert_eq!((entries.len(), skipped), (3, 1));
        let path = std::env::temp_dir().join(format!("zcnic-history-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        for e in &entries {
            append(&path, e).unwrap();
        }
        let (again, skipped) = parse(&std::fs::read_to_string(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!((again, skipped), (entries.clone(), 0));
        let full = recent(&entries, "full", 10);
        assert_eq!(full.len(), 2);
        assert_eq!(full[1].runs(Target::E1000, Tool::Zcnic), [2200000.0]);
        assert_eq!(full[0].ratio(Target::E1000, "zcnic/testpmd"), Some(1.2366));
        assert_eq!(recent(&entries, "full", 1)[0].commit, "bbbbbbbbbbbb");
    }
}
