//! Helpers for the QEMU suite: the skip-or-fail rule, one guest at a time, pcap reading,
//! and checks on frames zcnic pktgen generated.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use zcnic_qemu::{GuestRun, GuestSpec, Nic};
use zcnic_tools::frame::{self, Flow};

static ONE_GUEST: Mutex<()> = Mutex::new(());

/// The lock that keeps guests from booting side by side on a 2-core machine, or `None`
/// when the suite must skip: QEMU is missing on a developer box that cannot install it.
/// Under CI (`CI` set) or `cargo xtask test` (`ZCNIC_QEMU_REQUIRED` set) it fails instead.
pub fn guest_slot(test: &str) -> Option<MutexGuard<'static, ()>> {
    if let Err(why) = zcnic_qemu::qemu_available() {
        let required =
            std::env::var_os("ZCNIC_QEMU_REQUIRED").is_some() || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "{test}: the QEMU suite must run here but cannot: {why}"
        );
        eprintln!("skipping {test}: {why}");
        return None;
    }
    Some(ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner()))
}

/// What every suite scenario starts with: stop at the first failing command, and a
/// pipeline fails when any of its commands does (`zcnic … | tee` would otherwise report
/// tee's status and lose zcnic's). busybox ash has pipefail.
pub const PRELUDE: &str = "set -e\nset -o pipefail\n";

/// The suite's guest: `nics` behind a vIOMMU, `script` after [`PRELUDE`].
pub fn spec(name: &str, nics: Vec<Nic>, script: &str) -> GuestSpec {
    GuestSpec {
        nics,
        script: format!("{PRELUDE}{script}"),
        iommu: true,
        cpus: 2,
        timeout: Duration::from_secs(420),
        echo: std::env::var_os("ZCNIC_QEMU_ECHO").is_some(),
        kernel: zcnic_qemu::GuestKernel::Bookworm,
        name: name.into(),
    }
}

/// Boots a guest with `nics`, runs `script`, and insists the scenario exited 0.
pub fn boot(name: &str, nics: Vec<Nic>, script: &str) -> GuestRun {
    let spec = spec(name, nics, script);
    let run = zcnic_qemu::run(&spec).unwrap_or_else(|e| panic!("{name}: guest run failed: {e}"));
    assert_eq!(
        run.exit_code,
        0,
        "{name}: scenario failed; console tail:\n{}",
        tail(&run.console, 40)
    );
    run
}

/// The last `n` lines.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Shell: waits for the kernel's interface of PCI device `dev` and names it `$var`.
pub fn iface(var: &str, dev: &str, virtio: bool) -> String {
    let dir = if virtio {
        format!("/sys/bus/pci/devices/{dev}/virtio*/net/")
    } else {
        format!("/sys/bus/pci/devices/{dev}/net/")
    };
    format!(
        "n=0; until ls {dir} >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 100 ] || exit 4; done\n\
         {var}=$(ls {dir})\n"
    )
}

/// Shell: smoltcp's echo on zcnic's port at 0000:00:02.0 while `$1`'s TCP sends
/// `/tmp/data` through it (`BYTES` replaced by its length); the time, the hash of what came
/// back and the echo's summary go to `/results/*_$2`.
pub const ECHO_RUN: &str = r#"echo_run() {
  smol_echo 0000:00:02.0 10.0.0.2/24 7 0 1500 > /results/echo_$2.txt 2>&1 &
  echo_pid=$!
  n=0; until grep -q answering /results/echo_$2.txt; do sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || { cat /results/echo_$2.txt; exit 3; }; done
  ip addr add 10.0.0.1/24 dev $1
  ip link set $1 up
  sleep 1
  t0=$(cut -d' ' -f1 /proc/uptime)
  # Two processes on the socket, one writing and one reading: busybox nc alone reads
  # only between its writes and can deadlock with a full window (see qemu_jumbo.rs).
  : > /tmp/echoed_$2
  nc 10.0.0.2 7 -e sh -c "cat /tmp/data & exec cat > /tmp/echoed_$2" &
  nc_pid=$!
  n=0; until [ "$(wc -c < /tmp/echoed_$2)" -ge BYTES ]; do sleep 0.2; n=$((n+1)); [ $n -lt 900 ] || break; done
  t1=$(cut -d' ' -f1 /proc/uptime)
  echo "$t0 $t1" > /results/time_$2.txt
  sha256sum < /tmp/echoed_$2 > /results/sha_$2.txt
  wc -c < /tmp/echoed_$2 > /results/bytes_$2.txt
  kill $nc_pid 2> /dev/null || true
  kill -INT $echo_pid; wait $echo_pid
  ip addr flush dev $1
  ip link set $1 down
  rm /tmp/echoed_$2
}
"#;

/// How many frames of the pcap at `path` tshark's display filter `filter` matches, with
/// IPv4, UDP and TCP checksums verified and pktgen's UDP port decoded as raw data (else a
/// heuristic dissector may claim it). Fails the test when tshark does.
pub fn tshark_count(path: &Path, filter: &str) -> usize {
    let out = std::process::Command::new("tshark")
        .args(["-r", &path.to_string_lossy(), "-Y", filter])
        .args(["-T", "fields", "-e", "frame.number"])
        .args(["-d", "udp.port==23107,data"])
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ])
        .args(["-o", "tcp.check_checksum:TRUE"])
        .output()
        .expect("tshark runs (apt-get install tshark)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The jumbo scenarios' common end (`qemu_jumbo*.rs`): `pings` are the kernel's 20
/// echo requests of 9014 bytes `zcnic dump` captured in `rx.pcap`, whole and decoded by
/// tshark; smol_echo on zcnic answered `ping -s 8000` 5 of 5 with MTU 9000.
pub fn assert_jumbo_kernel_exchange(run: &GuestRun, pings: &[&Vec<u8>]) {
    let read = |f: &str| std::fs::read_to_string(run.results.join(f)).unwrap_or_default();
    let rx = run.results.join("rx.pcap");
    assert_eq!(pings.len(), 20, "{}", read("dump.err"));
    let lens: Vec<usize> = pings.iter().map(|f| f.len()).collect();
    assert!(lens.iter().all(|&n| n == 9014), "whole frames: {lens:?}");
    assert_eq!(tshark_count(&rx, "icmp.type == 8 && ip.len == 9000"), 20);
    assert_eq!(
        tshark_count(&rx, "ip.checksum.status == \"Good\""),
        20,
        "valid IPv4 headers"
    );
    assert_eq!(
        tshark_count(&rx, "_ws.malformed || _ws.expert.severity >= error"),
        0,
        "malformed frames"
    );
    // smoltcp on zcnic answers 8000-byte pings (8042-byte frames, 4 buffers each way).
    let (ping, echo) = (read("ping.txt"), read("echo.txt"));
    assert!(
        ping.contains("5 packets transmitted, 5 packets received"),
        "jumbo ping replies from smoltcp:\n{ping}\n{echo}"
    );
    assert!(echo.contains("MTU 9000"), "{echo}");
}

/// Every frame of a pcap file.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = pcap_file::pcap::PcapReader::new(f).expect("a pcap header");
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.expect("a well-formed pcap record").data.into_owned());
    }
    out
}

/// Checks that `frames` are exactly pktgen's frames 0..n, in order, byte for byte as
/// generated (all but the timestamp, which is compared for monotonicity).
pub fn assert_pktgen_sequence(frames: &[Vec<u8>], n: usize, size: usize, src_mac: [u8; 6]) {
    let flow = Flow {
        src_mac,
        ..Flow::default()
    };
    assert_generated(frames, n, size, flow, "pktgen");
}

/// [`assert_pktgen_sequence`] for stream `stream` (what queue k of `pktgen --queues`
/// sends as stream k).
pub fn assert_stream_sequence(
    frames: &[Vec<u8>],
    n: usize,
    size: usize,
    src_mac: [u8; 6],
    stream: u16,
) {
    let flow = Flow {
        src_mac,
        stream,
        ..Flow::default()
    };
    assert_generated(frames, n, size, flow, &format!("pktgen stream {stream}"));
}

/// `frames` are frames 0..n of `flow`, `size` bytes each, in order, byte for byte what
/// pktgen generates with each frame's own timestamp, which never goes back.
fn assert_generated(frames: &[Vec<u8>], n: usize, size: usize, flow: Flow, name: &str) {
    assert_eq!(frames.len(), n, "{name}: frame count");
    let mut gen = frame::FrameGen::new(flow);
    let mut expect = vec![0u8; frame::MAX_FRAME];
    let mut last_ts = 0;
    for (i, f) in frames.iter().enumerate() {
        let meta = frame::parse(f).unwrap_or_else(|e| panic!("{name}: frame {i}: {e}"));
        assert_eq!(
            meta.seq, i as u64,
            "{name}: frame {i} carries sequence {}",
            meta.seq
        );
        assert!(
            meta.tx_ns >= last_ts,
            "{name}: frame {i}: timestamp went back"
        );
        last_ts = meta.tx_ns;
        let n = gen.write(&mut expect, size, 0, i as u64, meta.tx_ns);
        assert_eq!(
            f[..],
            expect[..n],
            "{name}: frame {i} differs from what pktgen generated"
        );
    }
}

/// Checks `pktgen --ceiling`'s frames: `n` copies of the one frame it builds (`size` bytes
/// from `src_mac`, sequence 0, timestamp 0), byte for byte, and that frame is valid on the
/// wire by an independent parser: its IPv4 header checksum and UDP checksum are right.
pub fn assert_ceiling_frames(frames: &[Vec<u8>], n: usize, size: usize, src_mac: [u8; 6]) {
    assert_eq!(frames.len(), n, "ceiling: frame count");
    let mut gen = frame::FrameGen::new(Flow {
        src_mac,
        ..Flow::default()
    });
    let mut expect = vec![0u8; frame::MAX_FRAME];
    let len = gen.write(&mut expect, size, 0, 0, 0);
    let expect = &expect[..len];
    if let Some(i) = frames.iter().position(|f| f[..] != *expect) {
        panic!(
            "ceiling: frame {i} of {n} differs from the frame pktgen built: {:02x?}",
            frames[i]
        );
    }
    assert_checksums(expect, "ceiling");
}

/// The IPv4 header checksum and UDP checksum of an Ethernet/IPv4/UDP frame are right, as
/// etherparse computes them.
pub fn assert_checksums(f: &[u8], name: &str) {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(f).unwrap_or_else(|e| panic!("{name}: {e}"));
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("{name}: not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "{name}: IPv4 header checksum"
    );
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!("{name}: not UDP")
    };
    let uh = udp.to_header();
    let want = uh
        .calc_checksum_ipv4(&h, udp.payload())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(uh.checksum, want, "{name}: UDP checksum");
}

/// MAC the harness gives NIC `i`.
pub fn nic_mac(i: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x12, 0x34, 0x10 + i]
}

/// A `key value` figure from a line like `…; device GPTC 100000, TPT 100000`.
pub fn figure(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key} "))? + key.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Checks one receive leg: among `frames`, those sent by `src_mac` are exactly pktgen's
/// 60-byte frames 0..n of `stream`, in order (nothing lost, duplicated or late), byte for
/// byte as generated.
pub fn assert_leg_received(
    frames: Vec<Vec<u8>>,
    src_mac: [u8; 6],
    n: usize,
    stream: u16,
    name: &str,
) {
    // Only this leg's sender: the receiver's own frames never come back to it.
    let frames: Vec<Vec<u8>> = frames
        .into_iter()
        .filter(|f| f.len() >= 12 && f[6..12] == src_mac)
        .collect();
    let flow = Flow {
        src_mac,
        stream,
        ..Flow::default()
    };
    assert_generated(&frames, n, 60, flow, name);
}

/// Shell lines that wait for `file` to contain `text` (fwd and dump print a line once their
/// port is up; a minute at most, then the scenario fails showing the file), then for QEMU's
/// e1000 receive hold (1 s after RCTL is written) to pass.
pub fn wait_ready(file: &str, text: &str) -> String {
    format!(
        "n=0; until grep -q '{text}' {file}; do sleep 0.2; n=$((n+1)); \
         [ $n -lt 300 ] || {{ cat {file}; exit 3; }}; done; sleep 2\n"
    )
}

/// A script leg: `zcnic dump` on `to` until `n` frames (with `dump`'s extra options), then
/// `zcnic pktgen` from `from` at a rate every receiver keeps up with under TCG (25k pps,
/// unless `pktgen` has a `--rate`; with `pktgen`'s other options). The receiver gets 2 s after it listens: QEMU's e1000 holds received frames
/// back for about a second after RCTL is written. Leaves `/results/NAME.pcap`,
/// `NAME-dump.txt` and `NAME-pktgen.txt`.
pub fn dump_leg(from: &str, to: &str, name: &str, n: usize, dump: &str, pktgen: &str) -> String {
    let rate = if pktgen.contains("--rate") {
        ""
    } else {
        "--rate 25k"
    };
    format!(
        "zcnic dump {to} --out /results/{name}.pcap --count {n} --duration 120 {dump} \
            > /results/{name}-dump.txt 2> /results/{name}-dump.err &\n\
         dump=$!\n\
         n=0; until grep -q listening /results/{name}-dump.err; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/{name}-dump.err; exit 3; }}\n\
         done\n\
         sleep 2\n\
         zcnic pktgen {from} --count {n} {rate} {pktgen} | tee /results/{name}-pktgen.txt\n\
         wait $dump\n\
         cat /results/{name}-dump.err /results/{name}-dump.txt\n"
    )
}

/// The queue RSS picks for one of pktgen's IPv4/UDP frames: the Toeplitz hash of its
/// addresses and ports with Microsoft's key, through `reta`.
pub fn rss_queue_of(frame: &[u8], reta: &zcnic::rss::Reta) -> usize {
    let p = etherparse::SlicedPacket::from_ethernet(frame).expect("an Ethernet frame");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("pktgen sends IPv4");
    };
    let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else {
        panic!("pktgen sends UDP");
    };
    let h = zcnic::rss::Toeplitz::default().ipv4_l4(
        std::net::SocketAddrV4::new(ip.header().source_addr(), u.source_port()),
        std::net::SocketAddrV4::new(ip.header().destination_addr(), u.destination_port()),
    );
    usize::from(reta.queue(h))
}

/// `zcnic dump --queues N`'s summary line of queue `q`.
pub fn dump_queue_line(dump: &str, q: usize) -> &str {
    dump.lines()
        .find(|l| l.contains(&format!(": queue {q}: ")))
        .unwrap_or_else(|| panic!("queue {q} in the summary:\n{dump}"))
}

/// Checks a `zcnic dump --queues N` run against the frames on the wire: each queue got
/// exactly the frames the software Toeplitz puts there (table spread over `queues`, of
/// `reta_len` entries), each with the device's hash and none disagreeing; the pcap holds
/// the same frames byte for byte, each flow (source port) in order. Returns the count per
/// queue.
pub fn assert_rss_placement(
    sent: &[Vec<u8>],
    dump: &str,
    received: &[Vec<u8>],
    queues: u16,
    reta_len: usize,
) -> Vec<u64> {
    let reta = zcnic::rss::Reta::spread(queues, reta_len).unwrap();
    let mut expected = vec![0u64; queues.into()];
    for f in sent {
        expected[rss_queue_of(f, &reta)] += 1;
    }
    let got: Vec<u64> = (0..usize::from(queues))
        .map(|q| figure(dump_queue_line(dump, q), &format!("queue {q}:")).unwrap())
        .collect();
    assert_eq!(got, expected, "frames per queue:\n{dump}");
    // Each frame's packet carried the device's hash, and every one equals the software
    // Toeplitz of that frame and sends it to the queue it came in on (zcnic dump checks).
    for (q, n) in got.iter().enumerate() {
        let line = dump_queue_line(dump, q);
        assert!(
            line.contains(&format!("{n} frames, {n} with an RSS hash, 0 disagreeing")),
            "{line}"
        );
    }
    assert!(
        expected.iter().filter(|&&n| n > 0).count() >= usize::from(queues) - 1,
        "64 flows reach all but at most one queue: {expected:?}"
    );
    let (mut a, mut b) = (received.to_vec(), sent.to_vec());
    a.sort();
    b.sort();
    assert!(a == b, "received frames equal the frames on the wire");
    let flow = |f: &Vec<u8>| u16::from_be_bytes([f[34], f[35]]);
    let ports: std::collections::BTreeSet<u16> = sent.iter().map(flow).collect();
    for port in ports {
        let of = |v: &[Vec<u8>]| {
            v.iter()
                .filter(|f| flow(f) == port)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert!(
            of(received) == of(sent),
            "flow of source port {port} in order"
        );
    }
    got
}

/// A script leg: `zcnic fwd --port PORT --queues Q` sends back out of `port` what each
/// queue receives, while `zcnic pktgen` sends `n` frames of 64 flows from `sender` at
/// `rate`; then Ctrl-C. Leaves `/results/fwd.txt` and `/results/pktgen.txt`.
pub fn fwd_hairpin_script(sender: &str, port: &str, queues: u16, n: usize, rate: &str) -> String {
    format!(
        "zcnic fwd --port {port} --queues {queues} --duration 300 > /results/fwd.txt 2>&1 &\n\
         F=$!\n\
         n=0; until grep -q 'Ctrl-C stops' /results/fwd.txt; do\n\
           sleep 0.2; n=$((n+1)); [ $n -lt 300 ] || {{ cat /results/fwd.txt; exit 3; }}\n\
         done\n\
         sleep 2\n\
         zcnic pktgen {sender} --count {n} --rate {rate} --flows 64 | tee /results/pktgen.txt\n\
         sleep 3\n\
         kill -INT $F\n\
         wait $F\n\
         cat /results/fwd.txt\n"
    )
}

/// Checks a [`fwd_hairpin_script`] run whose sender is NIC 0, from `wire` (every frame on
/// the wire, as a watcher saw it): every one of pktgen's `n` frames is there exactly
/// twice, byte for byte (sent, and forwarded back), nothing else is, each of the `queues` queues received and forwarded exactly the
/// frames the software Toeplitz (Microsoft's key, a 128-entry table spread round-robin)
/// gives it, and the pool is full at exit.
pub fn assert_fwd_hairpin(run: &GuestRun, wire: &[Vec<u8>], n: usize, queues: u16) {
    let reta = zcnic::rss::Reta::spread(queues, 128).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut expected = vec![0u64; queues.into()];
    for f in wire.iter().filter(|f| f[6..12] == nic_mac(0)) {
        let Ok(meta) = zcnic_tools::frame::parse(f) else {
            continue;
        };
        if seen.insert(meta.seq) {
            expected[rss_queue_of(f, &reta)] += 1;
        }
    }
    assert_eq!(seen.len(), n, "every sequence number on the wire");
    let mut times = std::collections::HashMap::new();
    for f in wire {
        *times.entry(f.clone()).or_insert(0u32) += 1;
    }
    assert_eq!(times.len(), n, "no frame on the wire but pktgen's");
    assert!(
        times.values().all(|&t| t == 2),
        "every frame forwarded back once"
    );
    let fwd = std::fs::read_to_string(run.results.join("fwd.txt")).unwrap();
    for (q, want) in expected.iter().enumerate() {
        let line = fwd
            .lines()
            .find(|l| l.contains(&format!(": queue {q}: ")))
            .unwrap_or_else(|| panic!("queue {q}'s line:\n{fwd}"));
        assert_eq!(figure(line, "received"), Some(*want), "{line}");
        assert_eq!(figure(line, "forwarded"), Some(*want), "{line}");
    }
    let pool = fwd
        .lines()
        .find(|l| l.contains("buffers back in the pool"))
        .unwrap_or_else(|| panic!("the pool's line:\n{fwd}"));
    let words: Vec<&str> = pool.split_whitespace().collect();
    let of = words.iter().position(|w| *w == "of").expect("N of M");
    assert_eq!(
        words[of - 1],
        words[of + 1],
        "every buffer back at exit: {pool}"
    );
}

/// Checks a command the script ran as `CMD > /results/NAME.out 2> /results/NAME.err;
/// echo $? > /results/NAME.rc`: exit code 2, nothing on stdout, and one line on stderr
/// that says `what` (no panic, no backtrace).
pub fn assert_one_line_error(run: &GuestRun, name: &str, what: &str) {
    let read = |ext: &str| {
        std::fs::read_to_string(run.results.join(format!("{name}.{ext}")))
            .unwrap_or_else(|e| panic!("{name}.{ext}: {e}"))
    };
    let (rc, out, err) = (read("rc"), read("out"), read("err"));
    assert_eq!(rc.trim(), "2", "{name}: exit code; stderr: {err}");
    assert!(out.trim().is_empty(), "{name}: nothing on stdout: {out}");
    assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
    assert!(err.contains(what), "{name}: {err}");
}

/// Frames from `mac` to pktgen's UDP port, whatever their size.
pub fn udp_to_pktgen(frames: Vec<Vec<u8>>, mac: [u8; 6]) -> Vec<Vec<u8>> {
    frames
        .into_iter()
        .filter(|f| {
            f.len() >= 38
                && f[6..12] == mac
                && f[12..14] == [8, 0]
                && f[23] == 17
                && f[36..38] == [0x5a, 0x43]
        })
        .collect()
}
