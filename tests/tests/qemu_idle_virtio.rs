//! Interrupt and hybrid polling on a modern virtio-net behind the vIOMMU: an MSI-X vector
//! per receive queue, used buffer notifications armed only to sleep. One guest boot:
//!
//! ```text
//!  e1000 A 02.0 ── hub 0 ── virtio B 03.0 ═ fwd / dump / async_echo / irq_cycles
//!  pktgen TX          └──── e1000 K 06.0 (the kernel's driver: a UDP peer, last leg)
//!  virtio B ═ fwd ═ e1000 C 04.0 ── hub 1 ── virtio D 05.0
//!                                            pktgen RX (latency)
//! ```
//!
//! - idle: `dump` on B with nothing arriving, 5 s `poll` then 5 s `hybrid`, CPU of each.
//! - wake-up: 20 000 frames at 50 kpps in bursts of 1000 with 100 ms silences after 2 s of
//!   idle, to a `dump --idle hybrid` on B: every frame, in order, with the sleeps ended by
//!   the vector (and the guest's `/proc/interrupts` shows B's vfio-msix vectors).
//! - latency at 10 kpps through `fwd --idle poll` and `fwd --idle hybrid` (A → B → C → D).
//! - throughput flat out through the same forwarder, five rounds of each mode alternating:
//!   frames forwarded a second and the share of what pktgen sent (medians of five each,
//!   printed: `cargo xtask bench` is where rates are compared); asserted is what makes
//!   hybrid forward what poll does under load: it stops sleeping (at most [`HICCUPS`]
//!   hiccups a round) and so takes almost no interrupts ([`LOADED_IRQS`]).
//! - tokio: `async_echo` on B (an `AsyncFd` on the vector) answers the kernel's UDP.
//! - teardown, in a boot of its own (one vCPU): 1000 open/close cycles of B, each sleeping
//!   on its vector once, then 1000 of the e1000 A on its INTx: no descriptor leaked, and
//!   the kernel logs nothing about an interrupt.

use std::sync::OnceLock;
use zcnic_qemu::{GuestRun, Nic};
use zcnic_tests::idle_lines::{
    assert_cycles_quiet, assert_cycles_quiet_in, count_before, idle_line, result,
};
use zcnic_tests::qemu_suite::{
    assert_leg_received, figure, guest_slot, nic_mac, read_pcap, spec, tail, wait_ready,
};

const MODERN: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on";
const A: &str = "0000:00:02.0";
const B: &str = "0000:00:03.0";
const C: &str = "0000:00:04.0";
const D: &str = "0000:00:05.0";
const K: &str = "0000:00:06.0";
const FRAMES: usize = 20_000;
const BURST: usize = 1000;
const GAP_MS: u32 = 100;
/// Frames of each latency run, at [`LATENCY_RATE`].
const LATENCY_N: u64 = 20_000;
const LATENCY_RATE: &str = "10k";
/// Seconds of each flat-out run, and the rounds of each mode. One round's share swings by
/// 3x under TCG on a shared 2-core host (13% to 39% seen in one boot, either mode); the
/// median of five alternating rounds of each is what is compared, over the whole run and
/// (as `cargo xtask bench` measures) over its per-second rates after the first second.
const TPUT_SECS: u32 = 4;
const ROUNDS: u32 = 5;
/// Open/close cycles of the teardown leg, each enabling and disabling B's MSI-X (and then
/// A's INTx). The teardown boot has one vCPU: with two, twice a long run of this churn
/// wedged QEMU 10's TCG guest behind the vIOMMU (QEMU aborted on its `iotlb_to_section`
/// assertion; a guest went idle with the cycles unfinished); with one, 1000 cycles each of
/// the virtio-net, the e1000 and the igb ran clean (60, 52 s in the guest).
const CYCLES: u32 = 1000;
const ECHOES: u32 = 20;

fn fwd(mode: &str, name: &str) -> String {
    format!(
        "zcnic fwd --port {B} --port {C} --idle {mode} > /results/{name}.txt 2>&1 &\nfwd=$!\n{}",
        wait_ready(&format!("/results/{name}.txt"), "Ctrl-C stops")
    )
}

fn scenario() -> String {
    let mut s = format!(
        "for d in {A} {B} {C} {D}; do zcnic bind $d; done\n\
         zcnic dump {B} --out /results/idle-poll.pcap --duration 5 --idle poll \
            > /results/idle-poll.txt 2> /results/idle-poll.err\n\
         zcnic dump {B} --out /results/idle-hybrid.pcap --duration 5 --idle hybrid \
            > /results/idle-hybrid.txt 2> /results/idle-hybrid.err\n\
         cat /results/idle-poll.txt /results/idle-hybrid.txt\n\
         zcnic dump {B} --out /results/wake.pcap --count {FRAMES} --duration 120 \
            > /results/wake-dump.txt 2> /results/wake-dump.err &\n\
         dump=$!\n\
         {ready}\
         sleep 2\n\
         cat /proc/interrupts > /results/interrupts.txt\n\
         zcnic pktgen {A} --count {FRAMES} --rate 50k --gap {BURST}:{GAP_MS} \
            | tee /results/wake-pktgen.txt\n\
         wait $dump\n\
         cat /results/wake-dump.err /results/wake-dump.txt\n",
        ready = wait_ready("/results/wake-dump.err", "listening"),
    );
    for mode in ["poll", "hybrid"] {
        s += &fwd(mode, &format!("lat-fwd-{mode}"));
        s += &format!(
            "zcnic pktgen {A} --count {LATENCY_N} --rate {LATENCY_RATE} --rx {D} --json \
               > /results/lat-{mode}.json 2> /results/lat-{mode}.txt\n\
             kill -INT $fwd; wait $fwd\n\
             cat /results/lat-{mode}.txt /results/lat-{mode}.json\n"
        );
    }
    for round in 1..=ROUNDS {
        for mode in ["poll", "hybrid"] {
            let name = format!("tput-{mode}-{round}");
            s += &fwd(mode, &name);
            s += &format!(
                "grep vfio /proc/interrupts > /results/{name}-irq0.txt\n\
                 zcnic pktgen {A} --duration {TPUT_SECS} > /results/{name}-pktgen.txt\n\
                 grep vfio /proc/interrupts > /results/{name}-irq1.txt\n\
                 kill -INT $fwd; wait $fwd\n\
                 grep -- '-> ' /results/{name}.txt | head -n 8\n"
            );
        }
    }
    s += &format!(
        "modload e1000\n\
         n=0; until ls /sys/bus/pci/devices/{K}/net/ >/dev/null 2>&1; do sleep 0.2; n=$((n+1)); [ $n -lt 50 ] || exit 4; done\n\
         IF=$(ls /sys/bus/pci/devices/{K}/net/)\n\
         ip addr add 10.0.0.1/24 dev $IF\n\
         ip link set $IF up\n\
         sleep 2\n\
         async_echo {B} 10.0.0.2 7 {ECHOES} > /results/echo.txt 2>&1 &\n\
         echo_pid=$!\n\
         {echo_ready}\
         udp_probe 10.0.0.2:7 {ECHOES} > /results/udp.txt 2>&1 || true\n\
         sleep 1; kill -INT $echo_pid 2>/dev/null || true; wait $echo_pid || true\n\
         cat /results/udp.txt /results/echo.txt\n",
        echo_ready = wait_ready("/results/echo.txt", "answering"),
    );
    s
}

/// The teardown leg, in a boot of its own: [`CYCLES`] open/close cycles of B, then of A.
fn cycles_scenario() -> String {
    format!(
        "zcnic bind {A}\nzcnic bind {B}\n\
         date +%s > /results/cycles-start.txt\n\
         irq_cycles {B} {CYCLES} > /results/cycles.txt\n\
         date +%s > /results/cycles-end.txt\n\
         irq_cycles {A} {CYCLES} > /results/cycles-e1000.txt\n\
         date +%s > /results/cycles-e1000-end.txt\n\
         cat /results/cycles.txt /results/cycles-e1000.txt\n\
         dmesg > /results/dmesg.txt\n"
    )
}

fn boot(
    cell: &'static OnceLock<GuestRun>,
    name: &str,
    nics: Vec<Nic>,
    script: &str,
    cpus: u32,
) -> &'static GuestRun {
    cell.get_or_init(|| {
        let mut spec = spec(name, nics, script);
        spec.cpus = cpus;
        spec.timeout = std::time::Duration::from_secs(1500);
        let run =
            zcnic_qemu::run(&spec).unwrap_or_else(|e| panic!("{name}: guest run failed: {e}"));
        assert_eq!(
            run.exit_code,
            0,
            "{name}: scenario failed; console tail:\n{}",
            tail(&run.console, 60)
        );
        run
    })
}

/// The boot the datapath tests share.
fn guest() -> Option<&'static GuestRun> {
    static RUN: OnceLock<GuestRun> = OnceLock::new();
    let _slot = guest_slot("qemu_idle_virtio")?;
    let nics = vec![
        Nic::new("e1000", 0, true),
        Nic::new(MODERN, 0, false),
        Nic::new("e1000", 1, false),
        Nic::new(MODERN, 1, false),
        Nic::new("e1000", 0, false),
    ];
    Some(boot(&RUN, "idle-virtio", nics, &scenario(), 2))
}

/// The teardown boot, one vCPU: the e1000 A at 02.0 and B.
fn cycles_guest() -> Option<&'static GuestRun> {
    static RUN: OnceLock<GuestRun> = OnceLock::new();
    let _slot = guest_slot("qemu_idle_virtio cycles")?;
    let nics = vec![Nic::new("e1000", 0, false), Nic::new(MODERN, 0, false)];
    Some(boot(&RUN, "cycles-virtio", nics, &cycles_scenario(), 1))
}

#[test]
fn idle_hybrid_sleeps_on_msix_where_poll_spins() {
    let Some(run) = guest() else { return };
    let (poll, poll_pct) = idle_line(run, "idle-poll.txt");
    let (hybrid, hybrid_pct) = idle_line(run, "idle-hybrid.txt");
    eprintln!("virtio idle, 5 s with nothing arriving:\n  {poll}\n  {hybrid}");
    assert!(poll_pct > 80.0, "poll mode spins a whole core: {poll}");
    assert!(hybrid_pct < 2.0, "hybrid mode sleeps: {hybrid}");
    assert!(
        count_before(&hybrid, " naps") >= 20,
        "about 25 naps of 200 ms: {hybrid}"
    );
}

#[test]
fn msix_vectors_wake_the_sleeper_and_no_frame_is_lost() {
    let Some(run) = guest() else { return };
    let irqs = result(run, "interrupts.txt");
    let msix: Vec<&str> = irqs
        .lines()
        .filter(|l| l.contains("vfio-msix") && l.contains(B))
        .collect();
    assert!(
        msix.len() >= 2,
        "B's MSI-X vectors (config and receive queue 0) routed through vfio-pci:\n{irqs}"
    );
    let pktgen = result(run, "wake-pktgen.txt");
    let sent = pktgen
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(sent, "sent"), Some(FRAMES as u64), "{pktgen}");
    let frames = read_pcap(&run.results.join("wake.pcap"));
    assert_leg_received(frames, nic_mac(0), FRAMES, 0, "wake-up leg");
    let (idle, _) = idle_line(run, "wake-dump.txt");
    eprintln!("virtio wake-up leg: {idle}\n  vectors: {msix:?}");
    // `wakes` counts only sleeps the eventfd ended: a vector that never fired would lose
    // nothing here (every nap ends in 200 ms and the ring holds a burst); only this tells.
    assert!(
        count_before(&idle, " wakes") >= (FRAMES / BURST / 2) as u64,
        "the receiver slept between bursts and its vector woke it: {idle}"
    );
}

/// The number after `"key":` in pktgen's flat JSON (latencies in ns).
fn json_num(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 3;
    let end = json[at..].find([',', '}']).map_or(json.len(), |e| at + e);
    json[at..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {json}"))
}

#[test]
fn latency_at_10kpps_poll_and_hybrid_from_one_boot() {
    let Some(run) = guest() else { return };
    let mut p99 = Vec::new();
    for mode in ["poll", "hybrid"] {
        let json = result(run, &format!("lat-{mode}.json"));
        let received = json_num(&json, "received") as u64;
        let (p50, p99m) = (json_num(&json, "p50") / 1e3, json_num(&json, "p99") / 1e3);
        eprintln!(
            "virtio fwd --idle {mode}, {LATENCY_N} frames at {LATENCY_RATE} pps: received {received}, latency p50 {p50:.1} us p99 {p99m:.1} us"
        );
        assert!(
            received >= LATENCY_N * 99 / 100,
            "{mode}: nearly every frame back: {json}"
        );
        assert!(p50 > 0.0 && p99m >= p50, "{mode}: {json}");
        p99.push(p99m);
    }
    // TCG latencies are not absolute; what must hold is that hybrid's sleeps do not stretch
    // the tail beyond what a wake-up costs (a vector that failed to fire would show as
    // naps of 200 ms).
    assert!(
        p99[1] < 50_000.0,
        "hybrid p99 {} us: a sleep ended by its 200 ms nap, not by the vector",
        p99[1]
    );
}

/// One flat-out round: frames pktgen sent, and frames the forwarder took from B and sent
/// on. Their ratio is the forwarder's share of the offered load, measured against the
/// sender in the same guest, so a host busy elsewhere (the guest's vCPUs slowed as a whole)
/// moves both counts together.
fn fwd_share(run: &GuestRun, name: &str) -> (u64, u64) {
    let pktgen = result(run, &format!("{name}-pktgen.txt"));
    let sent = pktgen
        .lines()
        .find_map(|l| figure(l, "sent"))
        .unwrap_or_else(|| panic!("{name}: no pktgen summary:\n{pktgen}"));
    let fwd = result(run, &format!("{name}.txt"));
    let forwarded = fwd
        .lines()
        .filter(|l| {
            l.contains(": received ") && l.split("->").next().is_some_and(|f| f.contains(B))
        })
        .find_map(|l| figure(l, "forwarded"))
        .unwrap_or_else(|| panic!("{name}: no fwd totals:\n{fwd}"));
    (sent, forwarded)
}

/// The number after `key` in a line whose columns are padded (`rx    12345 pps`).
fn padded(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("{key} "))? + key.len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// The median of the per-second `key` rates in `lines` once the first non-zero second
/// (the start, partly counted) is past: the steady rate, as the bench's warm-up rule.
fn steady<'a>(lines: impl Iterator<Item = &'a str>, key: &str) -> Option<f64> {
    let rates: Vec<f64> = lines
        .filter(|l| l.ends_with(" pps") || l.contains(" pps "))
        .filter_map(|l| padded(l, key))
        .skip_while(|r| *r == 0.0)
        .skip(1)
        .collect();
    (!rates.is_empty()).then(|| median(rates))
}

/// Interrupts the guest took on its vfio vectors and lines during a flat-out round (the
/// per-CPU counts of `/proc/interrupts`' vfio lines, summed, after pktgen less before).
fn round_irqs(run: &GuestRun, name: &str) -> u64 {
    let total = |f: &str| -> u64 {
        result(run, &format!("{name}-{f}.txt"))
            .lines()
            .flat_map(|l| l.split_whitespace().skip(1).take(2))
            .filter_map(|w| w.parse::<u64>().ok())
            .sum()
    };
    total("irq1").saturating_sub(total("irq0"))
}

/// One flat-out round's steady forwarding rate: the forwarder's median per-second receive
/// rate on B after its first second of frames, as `cargo xtask bench` measures.
fn steady_rate(run: &GuestRun, name: &str) -> Option<f64> {
    let fwd = result(run, &format!("{name}.txt"));
    let from_b = fwd
        .lines()
        .filter(|l| l.split("->").next().is_some_and(|f| f.contains(B)));
    steady(from_b, "rx")
}

/// Interrupts the guest may take on its vfio vectors during one hybrid flat-out round
/// (about 4 s of load). A forwarder that polls under load takes none (poll's rounds: 1, a
/// vector armed before pktgen started); one that slept in the stream's stalls took one
/// per sleep (the old count of 1000 polls: 58 to 910 sleeps a round), each a TCG
/// wake-up with frames piling up. Hybrid took 3 to 6 in a quiet boot. Rates themselves
/// are not asserted: one round's rate moves by up to 3x under TCG in either mode (34k to
/// 122k frames a second from one boot), and the medians of five rounds put hybrid at
/// 0.66 to 1.25 of poll in boots whose hybrid rounds slept and were interrupted 3 to 6
/// times each, so a bar on them would test the host, not the driver.
const LOADED_IRQS: u64 = 40;

/// Hiccups a hybrid forwarder may have in one flat-out round before it counts as sleeping
/// under load: sleeps woken sooner than the quiet time before them (`early` in its idle
/// line) or finding frames at arming (`ready`). Each doubles the quiet time
/// (`zcnic_tools::idle`), so a few stalls in the stream stretch it past them (the first
/// frame of a round also wakes the forwarder that slept while pktgen started). A sleep
/// through a pause longer than that is not one: on a host busy with other work the sender's
/// vCPU stops for tens of milliseconds, and one run counted 57 and 131 such sleeps in a
/// round (quiet time 16 to 64 ms). The old count of 1000 polls slept 58 to 910 times a
/// round on a quiet host; the quiet time capped at 32 ms 14 to 53;
/// capped at 256 ms and halved only by naps 13 to 17.
const HICCUPS: u64 = 40;

/// The median of `v` (five rounds).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn flat_out_hybrid_stops_sleeping_and_takes_no_interrupts() {
    let Some(run) = guest() else { return };
    let mut shares = [Vec::new(), Vec::new()];
    let mut rates = [Vec::new(), Vec::new()];
    let mut steadies = [Vec::new(), Vec::new()];
    let mut hiccups = Vec::new();
    let mut irqs = Vec::new();
    for round in 1..=ROUNDS {
        for (i, mode) in ["poll", "hybrid"].into_iter().enumerate() {
            let name = format!("tput-{mode}-{round}");
            let (sent, fwd) = fwd_share(run, &name);
            let share = fwd as f64 / sent.max(1) as f64;
            let idle = if mode == "hybrid" {
                let (line, _) = idle_line(run, &format!("{name}.txt"));
                hiccups.push(count_before(&line, " early") + count_before(&line, " ready"));
                irqs.push(round_irqs(run, &name));
                line
            } else {
                String::new()
            };
            eprintln!(
                "virtio fwd --idle {mode}, flat out {TPUT_SECS} s, round {round}: sent {sent}, forwarded {fwd} ({:.1}%), {:.0} pps forwarded, {} interrupts {idle}",
                100.0 * share,
                fwd as f64 / f64::from(TPUT_SECS),
                round_irqs(run, &name)
            );
            shares[i].push(share);
            rates[i].push(fwd as f64 / f64::from(TPUT_SECS));
            if let Some(steady) = steady_rate(run, &name) {
                steadies[i].push(steady);
            }
        }
    }
    let [poll, hybrid] = shares.map(median);
    let ratio = hybrid / poll;
    // The throughput itself, frames forwarded a second: over the whole run, and steady.
    // (The share above divides by what pktgen sent from the same guest, which rises when
    // the forwarder sleeps and leaves pktgen's vCPU more of the host: it understates hybrid.)
    let [rp, rh] = rates.map(median);
    eprintln!(
        "throughput, median of {ROUNDS}: poll forwards {rp:.0} frames/s, hybrid {rh:.0}; hybrid/poll {:.3}",
        rh / rp
    );
    if steadies.iter().all(|s| !s.is_empty()) {
        let [sp, sh] = steadies.clone().map(median);
        eprintln!(
            "steady (per-second rates after the first second), median of {ROUNDS}: poll {sp:.0} frames/s, hybrid {sh:.0}; hybrid/poll {:.3}; rounds poll {:?}, hybrid {:?}",
            sh / sp,
            steadies[0].iter().map(|s| s.round()).collect::<Vec<_>>(),
            steadies[1].iter().map(|s| s.round()).collect::<Vec<_>>(),
        );
    }
    eprintln!(
        "median of {ROUNDS}: poll forwards {:.2}% of what is sent, hybrid {:.2}%; hybrid/poll {ratio:.3}; hybrid's hiccups per round {hiccups:?}",
        100.0 * poll,
        100.0 * hybrid
    );
    assert!(
        poll > 0.0 && hybrid > 0.0,
        "frames forwarded: {poll} {hybrid}"
    );
    assert!(
        hiccups.iter().all(|&h| h <= HICCUPS),
        "hybrid must stop sleeping under load (at most {HICCUPS} hiccups a round): {hiccups:?}"
    );
    assert!(
        irqs.iter().all(|&n| n <= LOADED_IRQS),
        "hybrid must take almost no interrupts under load (at most {LOADED_IRQS} a round): {irqs:?}"
    );
}

#[test]
fn tokio_async_echo_answers_the_kernel_over_the_msix_fd() {
    let Some(run) = guest() else { return };
    let udp = result(run, "udp.txt");
    let echo = result(run, "echo.txt");
    eprintln!("{udp}{echo}");
    assert!(
        udp.contains(&format!("{ECHOES} of {ECHOES} echoed intact")),
        "UDP through the kernel's stack to async_echo:\n{udp}\n{echo}"
    );
    assert!(
        echo.contains(&format!("echoed {ECHOES} UDP datagrams")),
        "{echo}"
    );
}

#[test]
fn open_close_cycles_leak_no_descriptor_and_the_kernel_stays_quiet() {
    let Some(run) = cycles_guest() else { return };
    let secs = |f: &str| -> u64 { result(run, f).trim().parse().unwrap_or(0) };
    let took = secs("cycles-end.txt").saturating_sub(secs("cycles-start.txt"));
    // Device, container and group, an eventfd per vector (config and receive queue 0).
    let bad = ["vfio-pci 0000:00:03.0: Masking broken INTx"];
    let line = assert_cycles_quiet(run, CYCLES, 2, &bad);
    eprintln!("virtio: {line} ({took} s in the guest)");
    // The e1000 after it, on its INTx through VFIO: the device and the line's eventfd.
    let took = secs("cycles-e1000-end.txt").saturating_sub(secs("cycles-end.txt"));
    let line = assert_cycles_quiet_in(run, "cycles-e1000.txt", CYCLES, 1, &bad);
    eprintln!("e1000: {line} ({took} s in the guest)");
}
