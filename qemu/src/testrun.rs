//! `cargo xtask test`'s run of `cargo test`: its output streamed live and scanned for
//! results, so the end of a long run says in one line what failed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// What a `cargo test` transcript says, gathered line by line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// The test binary now running (`qemu_tools`, `zcnic_qemu`, `zcnic_qemu (doc)`).
    current: Option<String>,
    /// Whether `current` printed its `test result:` line yet.
    finished: bool,
    /// `binary::test` of every failed test, in order.
    pub failed: Vec<String>,
    /// Binaries that started and never printed a result (crashed or killed).
    pub crashed: Vec<String>,
    pub passed: u64,
    pub ignored: u64,
    /// Sum of the failure counts of the `test result:` lines.
    pub failed_count: u64,
}

impl Tally {
    /// Takes one line of cargo's merged stdout and stderr.
    pub fn line(&mut self, line: &str) {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("Running ") {
            self.start(binary_of(rest));
        } else if let Some(krate) = l.strip_prefix("Doc-tests ") {
            self.start(format!("{} (doc)", krate.trim()));
        } else if let Some(counts) = l.strip_prefix("test result: ") {
            self.finished = true;
            self.passed += count(counts, "passed");
            self.failed_count += count(counts, "failed");
            self.ignored += count(counts, "ignored");
        } else if let Some(name) = l
            .strip_prefix("test ")
            .and_then(|t| t.strip_suffix(" ... FAILED"))
        {
            let bin = self.current.as_deref().unwrap_or("?");
            self.failed.push(format!("{bin}::{name}"));
        }
    }

    fn start(&mut self, binary: String) {
        self.end();
        self.current = Some(binary);
        self.finished = false;
    }

    /// Ends the transcript (or a binary): one that never reported a result crashed.
    pub fn end(&mut self) {
        if let Some(bin) = self.current.take() {
            if !self.finished {
                self.crashed.push(bin);
            }
        }
    }

    /// The one-line verdict; `status_ok` is cargo's own exit status.
    pub fn summary(&self, status_ok: bool) -> String {
        let counts = format!(
            "{} passed, {} failed, {} ignored",
            self.passed, self.failed_count, self.ignored
        );
        let mut wrong = Vec::new();
        if !self.failed.is_empty() {
            let s = if self.failed.len() == 1 { "" } else { "s" };
            wrong.push(format!(
                "{} test{s} failed: {}",
                self.failed.len(),
                self.failed.join(", ")
            ));
        }
        if !self.crashed.is_empty() {
            wrong.push(format!(
                "no result from {} (crashed or killed)",
                self.crashed.join(", ")
            ));
        }
        if wrong.is_empty() && (!status_ok || self.failed_count > 0) {
            // A build error, or a failure this scan did not recognise: cargo's output says.
            wrong.push("cargo test failed outside any test it reported (see above)".into());
        }
        if wrong.is_empty() {
            format!("xtask: all tests passed ({counts})")
        } else {
            format!("xtask: {} ({counts})", wrong.join("; "))
        }
    }
}

/// `qemu_tools` from `tests/qemu_tools.rs (target/debug/deps/qemu_tools-0123abcd)`: the
/// test binary's file name without cargo's hash.
fn binary_of(running: &str) -> String {
    let path = running
        .rsplit_once('(')
        .map_or(running, |(_, p)| p.trim_end_matches(')'));
    let file = path.rsplit('/').next().unwrap_or(path);
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => file.to_string(),
    }
}

/// `n` from `…; n word; …`.
fn count(counts: &str, word: &str) -> u64 {
    counts
        .split([';', '.'])
        .find_map(|part| part.trim().strip_suffix(word)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `cmd` (a `cargo test`) with its stdout and stderr merged into one pipe, so that
/// each test binary's results follow its `Running` line as cargo wrote them; prints every
/// line as it arrives and returns cargo's success and the tally.
pub fn run(cmd: &Command) -> Result<(bool, Tally), String> {
    // The shell merges the two streams in the kernel; two pipes read apart could reorder
    // a binary's last lines with the next one's `Running` line.
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("exec \"$0\" \"$@\" 2>&1")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let mut child = sh
        .spawn()
        .map_err(|e| format!("cannot start cargo test: {e}"))?;
    let pipe = child.stdout.take().expect("piped stdout");
    let mut tally = Tally::default();
    let mut out = std::io::stdout();
    for line in BufReader::new(pipe).split(b'\n') {
        let line = line.map_err(|e| format!("reading cargo test's output: {e}"))?;
        let text = String::from_utf8_lossy(&line);
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
        tally.line(&text);
    }
    tally.end();
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo test: {e}"))?;
    Ok((status.success(), tally))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSCRIPT: &str = "\
   Compiling zcnic-qemu v0.1.0 (/w/qemu)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 9.01s
     Running unittests src/lib.rs (target/debug/deps/zcnic_qemu-5d3c8e2f1a0b9c77)

running 2 tests
test tests::tail_keeps_last_lines ... ok
test tests::harness_dir_is_under_workspace_target ... ok

test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/qemu_tools.rs (target/debug/deps/qemu_tools-0123456789abcdef)

running 3 tests
test rate_is_measured_on_the_wire ... ok
test dump_pcap_is_read_by_tshark ... FAILED
test fwd_drop_every_loses_exactly_one_percent ... ignored

failures:

---- dump_pcap_is_read_by_tshark stdout ----
thread 'dump_pcap_is_read_by_tshark' panicked at tests/tests/qemu_tools.rs:186:14:
tshark runs (apt-get install tshark): No such file or directory
test not_a_result_line ... FAILED because this is prose

failures:
    dump_pcap_is_read_by_tshark

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 80.12s

error: test failed, to rerun pass `-p zcnic-tests --test qemu_tools`
     Running tests/no_alloc.rs (target/debug/deps/no_alloc-fedcba9876543210)

running 1 test
error: test failed, to rerun pass `-p zcnic-tests --test no_alloc`

Caused by:
  process didn't exit successfully: `/w/target/debug/deps/no_alloc-fedcba9876543210` (signal: 11, SIGSEGV: invalid memory reference)
   Doc-tests zcnic_qemu

running 1 test
test qemu/src/lib.rs - (line 21) ... FAILED

test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s

error: 3 targets failed:
";

    fn tally(text: &str) -> Tally {
        let mut t = Tally::default();
        text.lines().for_each(|l| t.line(l));
        t.end();
        t
    }

    #[test]
    fn failures_crashes_and_counts_come_out_of_a_transcript() {
        let t = tally(TRANSCRIPT);
        assert_eq!(
            t.failed,
            [
                "qemu_tools::dump_pcap_is_read_by_tshark",
                "zcnic_qemu (doc)::qemu/src/lib.rs - (line 21)"
            ]
        );
        assert_eq!(t.crashed, ["no_alloc"]);
        assert_eq!((t.passed, t.failed_count, t.ignored), (3, 2, 1));
        assert_eq!(
            t.summary(false),
            "xtask: 2 tests failed: qemu_tools::dump_pcap_is_read_by_tshark, \
             zcnic_qemu (doc)::qemu/src/lib.rs - (line 21); no result from no_alloc \
             (crashed or killed) (3 passed, 2 failed, 1 ignored)"
        );
    }

    #[test]
    fn a_clean_run_says_so_and_a_build_error_is_not_a_pass() {
        let clean = "     Running tests/a.rs (target/debug/deps/a-00ff)\n\
                     test result: ok. 5 passed; 0 failed; 2 ignored; 0 measured\n";
        assert_eq!(
            tally(clean).summary(true),
            "xtask: all tests passed (5 passed, 0 failed, 2 ignored)"
        );
        let broken = "error[E0425]: cannot find value `x` in this scope\n";
        assert_eq!(
            tally(broken).summary(false),
            "xtask: cargo test failed outside any test it reported (see above) \
             (0 passed, 0 failed, 0 ignored)"
        );
    }

    #[test]
    fn binary_names_lose_the_hash_only() {
        assert_eq!(
            binary_of("tests/x.rs (target/debug/deps/qemu_x-0a1b)"),
            "qemu_x"
        );
        assert_eq!(
            binary_of("src/main.rs (target/debug/deps/xtask-9f)"),
            "xtask"
        );
        assert_eq!(binary_of("weird"), "weird");
    }
}
