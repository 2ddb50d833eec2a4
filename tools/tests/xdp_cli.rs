//! The `zcnic` binary on `xdp:` ports on the host: a veth pair of two queues across two
//! network namespaces this test makes (and removes). `stats` on two queues counts per
//! queue; a `dump` killed with SIGKILL, and one stopped with Ctrl-C, leave the
//! interface to the kernel (a ping across works) and nothing that blocks the next run.
//! Needs root, as every machine this project runs on gives; fails loudly without it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `veth0` (10.78.0.1, in `.0`) and `veth1` (10.78.0.2, in `.1`), two queues each,
/// IPv6 off; both namespaces removed on drop.
struct Pair(String, String);

impl Pair {
    fn new(tag: &str) -> Self {
        let base = format!("zccli{}{tag}", std::process::id());
        let p = Pair(format!("{base}a"), format!("{base}b"));
        for ns in [&p.0, &p.1] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            ip(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ]);
            ip(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        let q = ["numtxqueues", "2", "numrxqueues", "2"];
        let mut add = vec!["-n", &p.0, "link", "add", "veth0"];
        add.extend(q);
        add.extend(["type", "veth", "peer", "name", "veth1"]);
        add.extend(q);
        add.extend(["netns", &p.1]);
        ip(&add);
        ip(&["-n", &p.0, "addr", "add", "10.78.0.1/24", "dev", "veth0"]);
        ip(&["-n", &p.1, "addr", "add", "10.78.0.2/24", "dev", "veth1"]);
        ip(&["-n", &p.0, "link", "set", "veth0", "up"]);
        ip(&["-n", &p.1, "link", "set", "veth1", "up"]);
        p
    }

    /// `zcnic ARGS` inside the port's namespace.
    fn zcnic(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, env!("CARGO_BIN_EXE_zcnic")])
            .args(args);
        c
    }

    fn attached(&self) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-d", "link", "show", "veth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }

    fn ping(&self) -> bool {
        let ping = ["busybox", "ping", "-c", "1", "-W", "2", "10.78.0.1"];
        Command::new("ip")
            .args(["netns", "exec", &self.1])
            .args(ping)
            .output()
            .expect("run ping")
            .status
            .success()
    }

    /// A `dump` running until stopped, once its program is attached.
    fn dump(&self) -> Child {
        let pcap = std::env::temp_dir().join(format!("{}.pcap", self.0));
        let mut child = self
            .zcnic(&["dump", "xdp:veth0", "-w", pcap.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn zcnic dump");
        let end = Instant::now() + Duration::from_secs(10);
        while !self.attached() {
            assert!(Instant::now() < end, "dump never attached its program");
            assert!(child.try_wait().unwrap().is_none(), "dump exited early");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.0, &self.1] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < end, "zcnic did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stats_on_two_af_xdp_queues() {
    let p = Pair::new("s");
    let out = p
        .zcnic(&["stats", "xdp:veth0", "--queues", "2", "--duration", "0.3"])
        .output()
        .expect("run zcnic stats");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("xdp:veth0: af_xdp (copy, native XDP)"),
        "{text}"
    );
    assert!(text.contains("queue 1"), "per-queue counters: {text}");
    assert!(!p.attached(), "stats left its program attached");
    let out = p
        .zcnic(&["stats", "xdp:veth0", "--duration", "0.2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"port\":\"xdp:veth0\""), "{text}");
}

#[test]
fn kill_and_ctrl_c_leave_the_interface_to_the_kernel() {
    let p = Pair::new("k");
    assert!(p.ping(), "ping before zcnic ran");
    // kill -9: the kernel closes the bpf_link with the process's fds.
    let mut child = p.dump();
    assert!(!p.ping(), "while dump runs the frames are the socket's");
    child.kill().unwrap();
    wait_exit(&mut child);
    let end = Instant::now() + Duration::from_secs(2);
    while p.attached() {
        assert!(Instant::now() < end, "a killed zcnic left its program");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(p.ping(), "ping after kill -9");
    // Ctrl-C: a clean stop, exit status 0.
    let mut child = p.dump();
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success(), "kill -INT {pid}");
    let status = wait_exit(&mut child);
    assert!(status.success(), "dump after Ctrl-C: {status:?}");
    assert!(!p.attached(), "Ctrl-C left the program");
    assert!(p.ping(), "ping after Ctrl-C");
}
