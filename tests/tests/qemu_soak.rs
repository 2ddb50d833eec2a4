//! Soak: pktgen → fwd → pktgen across four NICs at half the path's measured maximum rate,
//! 10 s (60 s with `ZCNIC_LONG=1`, i.e. `cargo xtask test --long`): nothing lost, nothing
//! duplicated or reordered, and every hop's counters agree.
//!
//! ```text
//!  e1000 #1 (02.0) ── hub 0 ── virtio #1 (03.0) ═ zcnic fwd ═ e1000 #2 (04.0) ── hub 1 ── virtio #2 (05.0)
//!  pktgen TX                                                                         pktgen RX
//! ```
//!
//! One boot: first a 2 s flat-out run through the same path measures what it carries
//! (frames received per second of sending), then the soak runs at half of that. Each phase
//! has its own fwd process, so fwd's totals are the phase's own. After closing their ports,
//! pktgen and fwd print how many buffers came back to each port's pool.
//!
//! Not visible from the shell, so not checked: drops inside QEMU between a NIC and the
//! hub (virtio-net has no drop counter; fwd prints no device counters of its ports).

use std::sync::OnceLock;
use zcnic_qemu::{GuestRun, Nic};
use zcnic_tests::qemu_suite::{boot, figure, guest_slot, tail, wait_ready};

const MODERN: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on";
const E1: &str = "0000:00:02.0";
const V1: &str = "0000:00:03.0";
const E2: &str = "0000:00:04.0";
const V2: &str = "0000:00:05.0";
/// Seconds of flat-out sending that measure the path.
const MEASURE_SECS: u32 = 2;
/// The soak's stream id (the measurement uses another).
const STREAM: u16 = 1;

/// How long the soak sends.
fn soak_secs() -> u32 {
    if std::env::var("ZCNIC_LONG").is_ok_and(|v| v == "1") {
        60
    } else {
        10
    }
}

/// Starts fwd between virtio #1 and e1000 #2 into /results/fwd-NAME.txt, waits until its
/// ports are up and QEMU's e1000 receive hold (1 s after RCTL is written) has passed.
fn start_fwd(name: &str) -> String {
    format!(
        "zcnic fwd --port {V1} --port {E2} > /results/fwd-{name}.txt 2>&1 &\nfwd=$!\n{}",
        wait_ready(&format!("/results/fwd-{name}.txt"), "Ctrl-C stops")
    )
}

fn stop_fwd(name: &str) -> String {
    format!("kill -INT $fwd; wait $fwd\ncat /results/fwd-{name}.txt\n")
}

fn scenario(secs: u32) -> String {
    let mut s = format!("for d in {E1} {V1} {E2} {V2}; do zcnic bind $d; done\n");
    s += &start_fwd("measure");
    s += &format!(
        "zcnic pktgen {E1} --duration {MEASURE_SECS} --stream 9 --rx {V2} --rx-wait 0.5 --json \
           > /results/pktgen-measure.json 2> /results/pktgen-measure.txt\n"
    );
    s += &stop_fwd("measure");
    // Half of what came back per second of sending, at least 1000 pps.
    s += "cat /results/pktgen-measure.txt /results/pktgen-measure.json\n\
          unique=$(sed -n 's/.*\"unique\":\\([0-9]*\\).*/\\1/p' /results/pktgen-measure.json)\n\
          secs=$(sed -n 's/.*\"seconds\":\\([0-9.]*\\).*/\\1/p' /results/pktgen-measure.json)\n\
          rate=$(awk -v u=\"$unique\" -v s=\"$secs\" 'BEGIN { r = int(u / s / 2); if (r < 1000) r = 1000; print r }')\n\
          echo \"$rate\" > /results/rate.txt\n\
          echo \"soak rate: $rate pps (half of $unique frames back in $secs s)\"\n";
    s += &start_fwd("soak");
    s += &format!(
        "zcnic pktgen {E1} --duration {secs} --rate $rate --stream {STREAM} --rx {V2} --json \
           > /results/pktgen-soak.json 2> /results/pktgen-soak.txt\n"
    );
    s += &stop_fwd("soak");
    s += "cat /results/pktgen-soak.txt /results/pktgen-soak.json\n";
    s
}

/// The one boot all tests here share.
fn guest() -> Option<&'static GuestRun> {
    static RUN: OnceLock<GuestRun> = OnceLock::new();
    let _slot = guest_slot("qemu_soak")?;
    Some(RUN.get_or_init(|| {
        let nics = vec![
            Nic::new("e1000", 0, false),
            Nic::new(MODERN, 0, false),
            Nic::new("e1000", 1, false),
            Nic::new(MODERN, 1, false),
        ];
        boot(
            &format!("soak-{}s", soak_secs()),
            nics,
            &scenario(soak_secs()),
        )
    }))
}

/// The number after `"key":` in a flat JSON text (the first occurrence).
fn json_num(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let end = json[at..].find([',', '}']).map_or(json.len(), |e| at + e);
    json[at..end].parse().ok()
}

fn result(run: &GuestRun, file: &str) -> String {
    std::fs::read_to_string(run.results.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// fwd's totals for one direction: received, forwarded, dropped on purpose.
fn fwd_totals(fwd: &str, from: &str, to: &str) -> (u64, u64, u64) {
    let line = fwd
        .lines()
        .find(|l| l.starts_with(&format!("fwd {from} -> {to}: received")))
        .unwrap_or_else(|| panic!("no totals for {from} -> {to} in:\n{fwd}"));
    let get = |k| figure(line, k).unwrap_or_else(|| panic!("no `{k}` in {line}"));
    (get("received"), get("forwarded"), get("purpose"))
}

#[test]
fn soak_at_half_the_measured_rate_loses_nothing() {
    let Some(run) = guest() else { return };
    let measure = result(run, "pktgen-measure.json");
    let rate: u64 = result(run, "rate.txt").trim().parse().expect("a rate");
    let json = result(run, "pktgen-soak.json");
    let num = |k: &str| json_num(&json, k).unwrap_or_else(|| panic!("no `{k}` in {json}")) as u64;
    let sent = num("sent");
    eprintln!(
        "soak: {} s at {rate} pps (measured {} frames back in {} s flat out): sent {sent}, \
         back {} unique, lost {}, duplicated {}, reordered {}; guest boot {:.0} s, total {:.0} s",
        soak_secs(),
        json_num(&measure, "unique").unwrap_or(0.0),
        json_num(&measure, "seconds").unwrap_or(0.0),
        num("unique"),
        num("lost"),
        num("duplicated"),
        num("reordered"),
        run.boot_time.as_secs_f64(),
        run.total_time.as_secs_f64()
    );
    // Not too few to mean anything: at least half the rate asked for, whatever the load.
    assert!(
        sent >= rate * u64::from(soak_secs()) / 2,
        "sent only {sent} at {rate} pps for {} s: {json}",
        soak_secs()
    );
    assert_eq!(num("lost"), 0, "{json}");
    assert_eq!(num("duplicated"), 0, "{json}");
    assert_eq!(num("reordered"), 0, "{json}");
    assert_eq!(
        num("unique"),
        sent,
        "every sequence number back once: {json}"
    );
    assert_eq!(
        num("received"),
        sent,
        "no frame of the stream twice: {json}"
    );
    assert_eq!(num("other"), 0, "no foreign frames on the wire: {json}");
}

/// Every hop: the e1000 sent what pktgen queued (GPTC), fwd received all of it, forwarded
/// all it received, and pktgen got back all fwd forwarded. No hop drops without counting.
#[test]
fn soak_counters_agree_on_every_hop() {
    let Some(run) = guest() else { return };
    let json = result(run, "pktgen-soak.json");
    let num = |k: &str| json_num(&json, k).unwrap_or_else(|| panic!("no `{k}` in {json}")) as u64;
    let sent = num("sent");
    assert_eq!(num("GPTC"), sent, "e1000 #1 GPTC vs pktgen sent: {json}");
    let fwd = result(run, "fwd-soak.txt");
    let (rx, tx, dropped) = fwd_totals(&fwd, V1, E2);
    assert_eq!(dropped, 0, "{fwd}");
    assert_eq!(rx, sent, "fwd received what e1000 #1 sent:\n{fwd}\n{json}");
    assert_eq!(tx, rx - dropped, "fwd forwarded what it received:\n{fwd}");
    assert_eq!(
        num("received"),
        tx,
        "pktgen received what fwd forwarded: {json}\n{fwd}"
    );
    let (back_rx, back_tx, _) = fwd_totals(&fwd, E2, V1);
    assert_eq!(
        (back_rx, back_tx),
        (0, 0),
        "nothing comes back the other way:\n{fwd}"
    );
    for (name, text) in [("fwd", &fwd), ("pktgen", &result(run, "pktgen-soak.txt"))] {
        assert!(
            !text.contains("did not drain") && !text.contains("had not sent everything"),
            "{name} left frames behind:\n{text}"
        );
    }
}

/// The device never touched memory the IOMMU did not map for it.
#[test]
fn soak_has_no_iommu_faults() {
    let Some(run) = guest() else { return };
    let dmesg = result(run, "dmesg.txt");
    let faults: Vec<&str> = dmesg
        .lines()
        .filter(|l| l.contains("DMAR") && l.to_lowercase().contains("fault"))
        .collect();
    assert!(
        faults.is_empty(),
        "IOMMU faults:\n{}\n(dmesg tail:\n{})",
        faults.join("\n"),
        tail(&dmesg, 20)
    );
}

/// `<tool> <addr>: <free> of <capacity> buffers back in the pool` lines, as (addr, free,
/// capacity).
fn pools(text: &str, tool: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{tool} ")) && l.ends_with("buffers back in the pool"))
        .map(|l| {
            let addr = l[tool.len() + 1..]
                .split(':')
                .take(3)
                .collect::<Vec<_>>()
                .join(":");
            let free = figure(l, &format!("{addr}:")).unwrap_or_else(|| panic!("{l}"));
            let cap = figure(l, "of").unwrap_or_else(|| panic!("{l}"));
            (addr, free, cap)
        })
        .collect()
}

/// Every buffer of every port's pool is back once pktgen and fwd have closed their ports,
/// after a soak and after a flat-out run.
#[test]
fn soak_pools_are_full_after_close() {
    let Some(run) = guest() else { return };
    for phase in ["measure", "soak"] {
        let pktgen = result(run, &format!("pktgen-{phase}.txt"));
        let fwd = result(run, &format!("fwd-{phase}.txt"));
        let mut all = pools(&pktgen, "pktgen");
        all.extend(pools(&fwd, "fwd"));
        let mut addrs: Vec<&str> = all.iter().map(|(a, _, _)| a.as_str()).collect();
        addrs.sort_unstable();
        assert_eq!(
            addrs,
            [E1, V1, E2, V2],
            "{phase}: a pool line per port:\n{pktgen}\n{fwd}"
        );
        for (addr, free, cap) in &all {
            assert!(
                *cap > 0 && free == cap,
                "{phase}: {addr}: {free} of {cap} buffers back"
            );
        }
    }
}
