//! The `zcnic` binary on `xdp:` ports on the host: a veth pair of two queues across two
//! network namespaces this test makes (and removes). `stats` on two queues counts per
//! queue; a `dump` killed with SIGKILL, and one stopped with Ctrl-C, leave the
//! interface to the kernel (a ping across works) and nothing that blocks the next run;
//! `fwd --queues 2` between two AF_XDP ports on a chain of three namespaces forwards two
//! streams, one per queue, without a loss, and refuses bad combinations in one line.
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
    // veth has no RSS: stats says so instead of showing a table.
    assert!(
        text.contains("  rss: xdp:veth0: the kernel's driver of veth0 has no RSS to read"),
        "{text}"
    );
    assert!(!p.attached(), "stats left its program attached");
    // --reta: on veth, whose driver has no table, and with bad queues, one line each.
    for (args, want) in [
        (&["--queues", "2", "--reta", "1"][..], "has no RSS to set"),
        (
            &["--queues", "2", "--reta", "0,5"][..],
            "names queue 5; the port has 2",
        ),
        (
            &["--reta", "1"][..],
            "--reta spreads over queues: give --queues 2",
        ),
        (&["--queues", "2", "--reta", "x"][..], "invalid value 'x'"),
    ] {
        let out = p
            .zcnic(&["stats", "xdp:veth0", "--duration", "0.1"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
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

/// Three namespaces in a row, joined by two veth pairs of two queues each:
/// `src` (a0) ── (a1) `mid` (b0) ── (b1) `dst`. No addresses and IPv6 off, so the only
/// frames on the wires are the test's. Removed on drop.
struct Chain([String; 3]);

impl Chain {
    fn new(tag: &str) -> Self {
        let base = format!("zcchain{}{tag}", std::process::id());
        let c = Chain(["s", "m", "d"].map(|n| format!("{base}{n}")));
        for ns in &c.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            for k in ["all", "default"] {
                let key = format!("net.ipv6.conf.{k}.disable_ipv6=1");
                ip(&["netns", "exec", ns, "sysctl", "-qw", &key]);
            }
        }
        let q = ["numtxqueues", "2", "numrxqueues", "2"];
        for (ns, peer, a, b) in [
            (&c.0[0], &c.0[1], "a0", "a1"),
            (&c.0[1], &c.0[2], "b0", "b1"),
        ] {
            let mut add = vec!["-n", ns, "link", "add", a];
            add.extend(q);
            add.extend(["type", "veth", "peer", "name", b]);
            add.extend(q);
            add.extend(["netns", peer]);
            ip(&add);
            ip(&["-n", ns, "link", "set", a, "up"]);
            ip(&["-n", peer, "link", "set", b, "up"]);
        }
        c
    }

    /// `zcnic ARGS` in namespace `i` (0 src, 1 mid, 2 dst), its output into `out`.
    fn spawn(&self, i: usize, args: &[&str], out: &std::path::Path) -> Child {
        let file = || std::fs::File::create(out).unwrap();
        Command::new("ip")
            .args(["netns", "exec", &self.0[i], env!("CARGO_BIN_EXE_zcnic")])
            .args(args)
            .stdout(file())
            .stderr(file())
            .spawn()
            .expect("spawn zcnic")
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Waits until `file` contains `text` (or fails the test after 20 s, or when `child`
/// exits first).
fn wait_for(file: &std::path::Path, text: &str, child: &mut Child) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let got = std::fs::read_to_string(file).unwrap_or_default();
        if got.contains(text) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "exited early: {got}");
        assert!(Instant::now() < end, "never said {text:?}: {got}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `fwd --queues 2` between two AF_XDP ports: pktgen sends a stream from each of a0's two
/// queues (veth hands a frame sent on queue k to its peer's queue k), fwd's thread k
/// takes a1's queue k to b0's queue k, and dump on b1's two queues gets each stream
/// whole, in order, every byte intact, on its own queue.
#[test]
fn fwd_on_two_af_xdp_queue_pairs_loses_nothing() {
    const N: u64 = 6000;
    let c = Chain::new("f");
    let dir = std::env::temp_dir();
    let tmp = |f: &str| dir.join(format!("{}-{f}", c.0[0]));
    let (pcap, dump_out, fwd_out) = (tmp("rx.pcap"), tmp("dump.txt"), tmp("fwd.txt"));
    let count = N.to_string();
    let mut dump = c.spawn(
        2,
        &[
            "dump",
            "xdp:b1",
            "--queues",
            "2",
            "--out",
            pcap.to_str().unwrap(),
            "--count",
            &count,
            "--udp-port",
            "23107",
            "--duration",
            "120",
        ],
        &dump_out,
    );
    wait_for(&dump_out, "listening", &mut dump);
    let mut fwd = c.spawn(
        1,
        &[
            "fwd", "--port", "xdp:a1", "--port", "xdp:b0", "--queues", "2",
        ],
        &fwd_out,
    );
    wait_for(&fwd_out, "Ctrl-C stops", &mut fwd);
    // 4k pps: veth's per-queue ring (256 frames) and the sockets' rings ride out a
    // forwarding thread off its core for a while on a loaded two-core host.
    let pktgen = Command::new("ip")
        .args(["netns", "exec", &c.0[0], env!("CARGO_BIN_EXE_zcnic")])
        .args(["pktgen", "xdp:a0", "--queues", "2", "--count", &count])
        .args(["--rate", "4k", "--stream", "10"])
        .output()
        .expect("run zcnic pktgen");
    let sent = String::from_utf8_lossy(&pktgen.stdout).to_string();
    assert!(pktgen.status.success(), "{pktgen:?}");
    let status = wait_exit_within(&mut dump, Duration::from_secs(60));
    let _ = Command::new("kill")
        .args(["-INT", &fwd.id().to_string()])
        .status();
    let fwd_status = wait_exit(&mut fwd);
    let (dumped, forwarded) = (
        std::fs::read_to_string(&dump_out).unwrap(),
        std::fs::read_to_string(&fwd_out).unwrap(),
    );
    eprintln!("{sent}{forwarded}{dumped}");
    assert!(status.success(), "dump: {dumped}");
    assert!(fwd_status.success(), "fwd after Ctrl-C: {forwarded}");
    assert!(forwarded.contains("2 queues (RSS)"), "{forwarded}");
    // Each of fwd's threads forwarded its queue's stream, all of it.
    let half = N / 2;
    for k in 0..2 {
        let line = format!("fwd xdp:a1 -> xdp:b0: queue {k}: received {half}, forwarded {half}");
        assert!(forwarded.contains(&line), "{line}: {forwarded}");
    }
    assert!(
        forwarded.contains(&format!(
            "received {N}, forwarded {N}, dropped on purpose 0"
        )),
        "{forwarded}"
    );
    for k in 0..2 {
        let line = format!("dump xdp:b1: queue {k}: {half} frames");
        assert!(dumped.contains(&line), "{line}: {dumped}");
    }
    // Every frame intact (headers, checksums, each payload byte), each stream in order.
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&pcap).unwrap()).unwrap();
    let mut next = [0u64; 2];
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let m = zcnic_tools::frame::parse(&p.data).expect("an intact pktgen frame");
        let s = usize::from(m.stream - 10);
        assert!(s < 2, "stream {}", m.stream);
        assert_eq!(m.seq, next[s], "stream {} in order", m.stream);
        next[s] += 1;
    }
    assert_eq!(next, [half, half], "every frame of both streams");
    let _ = std::fs::remove_file(&pcap);
}

fn wait_exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            panic!("zcnic did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bad combinations of `fwd --queues` on AF_XDP ports: one line each, exit status 2.
#[test]
fn fwd_queues_on_af_xdp_refuses_bad_input_in_one_line() {
    let p = Pair::new("q");
    for (args, want) in [
        (
            &["--port", "xdp:veth0", "--queues", "3"][..],
            "xdp:veth0: 3 queues asked; the interface has 2 receive queues",
        ),
        (
            &["--port", "xdp:nosuch0", "--queues", "2"][..],
            "no network interface nosuch0",
        ),
        (&["--port", "xdp:veth0", "--queues", "0"][..], "--queues 0"),
        (
            &[
                "--port",
                "xdp:veth0",
                "--port",
                "xdp:veth0",
                "--queues",
                "2",
            ][..],
            "the same device",
        ),
    ] {
        let out = p.zcnic(&["fwd"]).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!p.attached(), "{args:?} left a program attached");
    }
}
