//! `cargo xtask shell` driven through its console, as a person would use it, so that it
//! cannot rot: the guest boots to a prompt, `zcnic list` typed on stdin prints the table,
//! and the guest ends on `poweroff -f`; a second boot ends on QEMU's own Ctrl-A X.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};
use zcnic_qemu::shell::Shell;
use zcnic_tests::qemu_suite::guest_slot;

/// The prompt the shell's scenario sets.
const PROMPT: &str = "zcnic-guest:/#";

/// A running `cargo xtask shell` guest with its console on pipes.
struct Console {
    qemu: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: String,
}

impl Console {
    fn boot(name: &str) -> Console {
        let shell = Shell {
            name: name.into(),
            ..Shell::parse(&[]).expect("default shell")
        };
        let mut cmd = shell.command().expect("prepare the shell guest");
        let mut qemu = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start QEMU");
        let stdin = qemu.stdin.take().unwrap();
        let stdout = qemu.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        // Whatever arrives, as it arrives: the prompt has no newline after it.
        std::thread::spawn(move || {
            let mut r = stdout;
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let l = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Console {
            qemu,
            stdin,
            lines,
            seen: String::new(),
        }
    }

    /// Reads the console until `pred` holds for what came since `from`, at most `secs`.
    fn wait_for(&mut self, from: usize, secs: u64, what: &str, pred: impl Fn(&str) -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !pred(&self.seen[from..]) {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push_str(&l),
                Err(_) => {
                    let _ = self.qemu.kill();
                    panic!("no {what} within {secs} s; console:\n{}", self.seen);
                }
            }
        }
    }

    fn send(&mut self, text: &str) -> usize {
        let at = self.seen.len();
        self.stdin
            .write_all(text.as_bytes())
            .expect("write to QEMU");
        self.stdin.flush().unwrap();
        at
    }

    /// Waits for QEMU to exit by itself; its status.
    fn ended(&mut self, secs: u64) -> std::process::ExitStatus {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.qemu.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                let _ = self.qemu.kill();
                panic!("QEMU still running {secs} s later; console:\n{}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The table `zcnic list` prints: every NIC of the default guest, unbound.
fn assert_table(text: &str) {
    for row in [
        "0000:00:02.0  8086:100e",
        "0000:00:03.0  1af4:1041",
        "0000:00:04.0  8086:100e",
        "0000:00:05.0  1af4:1041",
    ] {
        assert!(text.contains(row), "row {row} in:\n{text}");
    }
    assert!(text.contains("IFACE") && text.contains("STATE"), "{text}");
}

#[test]
fn shell_lists_nics_on_request_and_powers_off() {
    let Some(_slot) = guest_slot("shell_lists_nics_on_request_and_powers_off") else {
        return;
    };
    let started = Instant::now();
    let mut c = Console::boot("shell-test");
    c.wait_for(0, 240, "prompt", |s| s.contains(PROMPT));
    // What the scenario printed before the prompt is not what this test checks: the table
    // must come from the command typed below.
    let at = c.send("zcnic list; echo listed-$((6*7))\n");
    c.wait_for(at, 60, "zcnic list's table", |s| s.contains("listed-42"));
    assert_table(&c.seen[at..]);
    // The shell owns ttyS0, so Ctrl-C stops what runs in it (pktgen, say) and the prompt
    // comes back long before the sleep would have ended.
    let at = c.send("tty; sleep 300\n");
    c.wait_for(at, 30, "tty", |s| s.contains("/dev/ttyS0"));
    std::thread::sleep(Duration::from_secs(1));
    let at = c.send("\x03echo back-$((2+3))\n");
    c.wait_for(at, 30, "the prompt after Ctrl-C", |s| s.contains("back-5"));
    c.send("poweroff -f\n");
    let status = c.ended(60);
    assert!(status.success(), "QEMU after poweroff: {status}");
    eprintln!("shell session: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn shell_quits_on_ctrl_a_x() {
    let Some(_slot) = guest_slot("shell_quits_on_ctrl_a_x") else {
        return;
    };
    let mut c = Console::boot("shell-test-quit");
    c.wait_for(0, 240, "prompt", |s| s.contains(PROMPT));
    let at = c.send("\x01x");
    let status = c.ended(30);
    // QEMU's mux says so on the console as it quits; the reader has the rest of it.
    c.seen.extend(c.lines.iter());
    assert!(
        c.seen[at..].contains("QEMU: Terminated"),
        "Ctrl-A X ends QEMU ({status}); after it:\n{}",
        &c.seen[at..]
    );
}
