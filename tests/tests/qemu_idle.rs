//! Interrupt and hybrid polling on INTx, the e1000's only interrupt and a legacy
//! virtio-net's, in one guest boot per platform: VFIO (vIOMMU), and uio_pci_generic (a
//! guest without one):
//!
//! ```text
//!  e1000 02.0 ── hub 0 (pcap) ─┬─ e1000 03.0
//!  sender (pktgen)             │  receiver (dump --idle …), open/close cycles
//!                              ├─ legacy virtio-net 04.0: receiver (dump --idle hybrid)
//!                              ├─ igb 05.0: receiver (dump --idle hybrid)
//!                              └─ modern virtio-net 06.0, no MSI-X: receiver (dump
//!                                 --idle hybrid)
//! ```
//!
//! - idle: `zcnic dump` with nothing arriving, 5 s in `poll` then 5 s in `hybrid`; the
//!   CPU each used (the tool reads its own `/proc/self/stat`).
//! - wake-up: after 2 s idle, 20 000 frames at 50 kpps in bursts of 1000 with 100 ms of
//!   silence between, to a `dump` in `hybrid`: every frame arrives, in order, across every
//!   sleep and wake.
//! - the same idle and wake-up legs on a legacy virtio-net (INTx acknowledged through its
//!   ISR) and an igb (MSI-X under VFIO, INTx in legacy interrupt mode under uio), with the
//!   guest's `/proc/interrupts` read around them; and on a modern virtio-net without MSI-X
//!   (uio_pci_generic offers none; under VFIO the device is given none, `vectors=0`),
//!   INTx acknowledged through the ISR capability in its memory BAR. With MSI-X it sleeps
//!   on its vectors, which `qemu_idle_virtio` covers.
//! - teardown: 200 open/close cycles in one process, each sleeping on the interrupt once,
//!   leave its descriptor count unchanged; the kernel logs nothing about the IRQ.

use std::sync::OnceLock;
use zcnic_qemu::{GuestRun, Nic};
use zcnic_tests::idle_lines::{
    assert_cycles_quiet, assert_cycles_quiet_in, count_before, idle_line, result,
};
use zcnic_tests::qemu_suite::{
    assert_leg_received, figure, guest_slot, nic_mac, read_pcap, spec, tail, wait_ready,
};

const SENDER: &str = "0000:00:02.0";
const RECEIVER: &str = "0000:00:03.0";
/// The legacy virtio-net receiver: MSI-X stays off (it would move the device
/// configuration), so it sleeps on INTx.
const LEGACY: &str = "0000:00:04.0";
const LEGACY_NIC: &str = "virtio-net-pci,disable-modern=on";
/// The modern virtio-net receiver without MSI-X: the one-pair port sleeps on INTx, its ISR
/// read where the ISR capability points.
const MODERN: &str = "0000:00:06.0";
/// It under uio_pci_generic (which hands userspace INTx only; no vIOMMU, so no
/// `iommu_platform`), and under VFIO, where `vectors=0` takes its MSI-X capability away.
const MODERN_UIO: &str = "virtio-net-pci,disable-legacy=on";
const MODERN_VFIO: &str = "virtio-net-pci,disable-legacy=on,iommu_platform=on,vectors=0";
/// An igb receiver: MSI-X per queue through VFIO; under uio_pci_generic (INTx only) the
/// one-queue port runs the 82576's legacy interrupt mode on INTx.
const IGB: &str = "0000:00:05.0";
/// Frames of the wake-up leg.
const FRAMES: usize = 20_000;
/// Frames per burst and the silence after each (ms).
const BURST: usize = 1000;
const GAP_MS: u32 = 100;
/// Open/close cycles of the teardown leg: 200 fit in a few minutes of a TCG guest (the
/// issue asks 1000; each cycle is a full e1000 bring-up with reset and link wait).
const CYCLES: u32 = 200;

/// Open/close cycles of each extra receiver (the legacy virtio-net, the igb), each
/// sleeping on its interrupt once: its line or vectors let go at every close. Fewer than
/// the e1000's: an igb bring-up waits about a second for auto-negotiation under TCG.
const SLEEPER_CYCLES: u32 = 30;

/// A receiver's legs, its files named `NAME-…`: bound, 5 s idle in hybrid, then
/// the wake-up bursts, with `/proc/interrupts` read twice while dump holds its interrupt
/// (an MSI or MSI-X line disappears from it once released): before the bursts, and once
/// dump has counted every frame; then Ctrl-C ends dump; then [`SLEEPER_CYCLES`]
/// open/close cycles.
fn sleeper_legs(bdf: &str, name: &str) -> String {
    format!(
        "zcnic bind {bdf}\n\
         zcnic dump {bdf} --out /results/{name}-idle.pcap --duration 5 --idle hybrid \
            > /results/{name}-idle.txt 2> /results/{name}-idle.err\n\
         cat /results/{name}-idle.err /results/{name}-idle.txt\n\
         zcnic dump {bdf} --out /results/{name}-wake.pcap --duration 300 \
            > /results/{name}-wake-dump.txt 2> /results/{name}-wake-dump.err &\n\
         dump=$!\n\
         {ready}\
         sleep 2\n\
         cat /proc/interrupts > /results/{name}-interrupts-before.txt\n\
         zcnic pktgen {SENDER} --count {FRAMES} --rate 50k --gap {BURST}:{GAP_MS} \
            | tee /results/{name}-wake-pktgen.txt\n\
         {all_in}\
         cat /proc/interrupts > /results/{name}-interrupts.txt\n\
         kill -INT $dump; wait $dump\n\
         cat /results/{name}-wake-dump.err /results/{name}-wake-dump.txt\n\
         irq_cycles {bdf} {cycles} | tee /results/{name}-cycles.txt\n",
        cycles = SLEEPER_CYCLES,
        ready = wait_ready(&format!("/results/{name}-wake-dump.err"), "listening"),
        all_in = wait_ready(
            &format!("/results/{name}-wake-dump.err"),
            &format!(" {FRAMES} frames")
        ),
    )
}

fn scenario() -> String {
    format!(
        "zcnic bind {SENDER}\n\
         zcnic bind {RECEIVER}\n\
         zcnic dump {RECEIVER} --out /results/idle-poll.pcap --duration 5 --idle poll \
            > /results/idle-poll.txt 2> /results/idle-poll.err\n\
         zcnic dump {RECEIVER} --out /results/idle-hybrid.pcap --duration 5 --idle hybrid \
            > /results/idle-hybrid.txt 2> /results/idle-hybrid.err\n\
         cat /results/idle-poll.txt /results/idle-hybrid.txt\n\
         zcnic dump {RECEIVER} --out /results/wake.pcap --count {FRAMES} --duration 120 \
            > /results/wake-dump.txt 2> /results/wake-dump.err &\n\
         dump=$!\n\
         {ready}\
         # 2 s of nothing: the receiver has long gone to sleep.\n\
         sleep 2\n\
         zcnic pktgen {SENDER} --count {FRAMES} --rate 50k --gap {BURST}:{GAP_MS} \
            | tee /results/wake-pktgen.txt\n\
         wait $dump\n\
         cat /results/wake-dump.err /results/wake-dump.txt\n\
         {legacy}{igb}{modern}\
         irq_cycles {RECEIVER} {CYCLES} | tee /results/cycles.txt\n\
         dmesg > /results/dmesg.txt\n",
        ready = wait_ready("/results/wake-dump.err", "listening"),
        legacy = sleeper_legs(LEGACY, "legacy"),
        igb = sleeper_legs(IGB, "igb"),
        modern = sleeper_legs(MODERN, "modern"),
    )
}

/// The platform a guest hands the NICs to userspace with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    /// vfio-pci behind the vIOMMU: INTx routed to an eventfd.
    Vfio,
    /// uio_pci_generic, no IOMMU: INTx counted on `/dev/uioN`.
    Uio,
}

/// The one boot the tests of `platform` share.
fn guest(platform: Platform) -> Option<&'static GuestRun> {
    static VFIO: OnceLock<GuestRun> = OnceLock::new();
    static UIO: OnceLock<GuestRun> = OnceLock::new();
    let _slot = guest_slot("qemu_idle")?;
    let (cell, name) = match platform {
        Platform::Vfio => (&VFIO, "idle-vfio"),
        Platform::Uio => (&UIO, "idle-uio"),
    };
    Some(cell.get_or_init(|| {
        let modern = match platform {
            Platform::Vfio => MODERN_VFIO,
            Platform::Uio => MODERN_UIO,
        };
        let nics = vec![
            Nic::new("e1000", 0, true),
            Nic::new("e1000", 0, false),
            Nic::new(LEGACY_NIC, 0, false),
            Nic::new("igb", 0, false),
            Nic::new(modern, 0, false),
        ];
        let mut spec = spec(name, nics, &scenario());
        // Without the vIOMMU, `zcnic bind` picks uio_pci_generic.
        spec.iommu = platform == Platform::Vfio;
        let run =
            zcnic_qemu::run(&spec).unwrap_or_else(|e| panic!("{name}: guest run failed: {e}"));
        assert_eq!(
            run.exit_code,
            0,
            "{name}: scenario failed; console tail:\n{}",
            tail(&run.console, 40)
        );
        run
    }))
}

#[test]
fn vfio_idle_hybrid_sleeps_where_poll_spins() {
    idle_hybrid_sleeps_where_poll_spins(Platform::Vfio);
}

#[test]
fn uio_idle_hybrid_sleeps_where_poll_spins() {
    idle_hybrid_sleeps_where_poll_spins(Platform::Uio);
}

fn idle_hybrid_sleeps_where_poll_spins(platform: Platform) {
    let Some(run) = guest(platform) else { return };
    let (poll, poll_pct) = idle_line(run, "idle-poll.txt");
    let (hybrid, hybrid_pct) = idle_line(run, "idle-hybrid.txt");
    eprintln!("{platform:?} idle, 5 s with nothing arriving:\n  {poll}\n  {hybrid}");
    assert!(poll_pct > 80.0, "poll mode spins a whole core: {poll}");
    assert!(hybrid_pct < 2.0, "hybrid mode sleeps: {hybrid}");
    // It slept on the interrupt: a nap (200 ms) after another, none cut short by frames.
    assert!(
        count_before(&hybrid, " naps") >= 20,
        "about 25 naps of 200 ms in 5 s: {hybrid}"
    );
}

#[test]
fn vfio_bursts_after_silences_all_arrive_across_every_sleep() {
    bursts_after_silences_all_arrive_across_every_sleep(Platform::Vfio);
}

#[test]
fn uio_bursts_after_silences_all_arrive_across_every_sleep() {
    bursts_after_silences_all_arrive_across_every_sleep(Platform::Uio);
}

fn bursts_after_silences_all_arrive_across_every_sleep(platform: Platform) {
    let Some(run) = guest(platform) else { return };
    let pktgen = result(run, "wake-pktgen.txt");
    let sent = pktgen
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(sent, "sent"), Some(FRAMES as u64), "{pktgen}");
    let frames = read_pcap(&run.results.join("wake.pcap"));
    assert_leg_received(frames, nic_mac(0), FRAMES, 0, "wake-up leg");
    let out = result(run, "wake-dump.txt");
    let summary = out
        .lines()
        .find(|l| l.contains(": wrote "))
        .unwrap_or_default();
    assert_eq!(
        figure(summary, "MPC"),
        Some(0),
        "no frame missed: {summary}"
    );
    let (idle, _) = idle_line(run, "wake-dump.txt");
    eprintln!("{platform:?} wake-up leg: {summary}\n  {idle}");
    // One sleep per silence at least, each ended by the interrupt (a broken interrupt
    // would lose nothing here either: the ring holds a burst, and every nap ends in 200 ms;
    // only this count tells). `wakes` counts only sleeps the eventfd ended.
    let wakes = count_before(&idle, " wakes");
    assert!(
        wakes >= (FRAMES / BURST / 2) as u64,
        "the receiver slept between bursts and woke for them: {idle}"
    );
}

#[test]
fn vfio_open_close_cycles_leak_no_descriptor_and_the_kernel_stays_quiet() {
    open_close_cycles_leak_no_descriptor_and_the_kernel_stays_quiet(Platform::Vfio);
}

#[test]
fn uio_open_close_cycles_leak_no_descriptor_and_the_kernel_stays_quiet() {
    open_close_cycles_leak_no_descriptor_and_the_kernel_stays_quiet(Platform::Uio);
}

fn open_close_cycles_leak_no_descriptor_and_the_kernel_stays_quiet(platform: Platform) {
    let Some(run) = guest(platform) else { return };
    // The device and the eventfd.
    let line = assert_cycles_quiet(run, CYCLES, 1, &[]);
    eprintln!("{platform:?}: {line}");
}

#[test]
fn vfio_legacy_virtio_sleeps_on_intx_and_wakes_for_every_burst() {
    sleeps_and_wakes_for_every_burst(Platform::Vfio, "legacy", LEGACY);
}

#[test]
fn uio_legacy_virtio_sleeps_on_intx_and_wakes_for_every_burst() {
    sleeps_and_wakes_for_every_burst(Platform::Uio, "legacy", LEGACY);
}

/// Issue 20: a modern virtio-net without MSI-X sleeps on INTx too, under either platform.
#[test]
fn vfio_modern_virtio_without_msix_sleeps_on_intx_and_wakes_for_every_burst() {
    sleeps_and_wakes_for_every_burst(Platform::Vfio, "modern", MODERN);
}

#[test]
fn uio_modern_virtio_sleeps_on_intx_and_wakes_for_every_burst() {
    sleeps_and_wakes_for_every_burst(Platform::Uio, "modern", MODERN);
}

#[test]
fn vfio_igb_sleeps_on_its_msix_vector_and_wakes_for_every_burst() {
    sleeps_and_wakes_for_every_burst(Platform::Vfio, "igb", IGB);
}

#[test]
fn uio_igb_sleeps_on_intx_in_legacy_mode_and_wakes_for_every_burst() {
    sleeps_and_wakes_for_every_burst(Platform::Uio, "igb", IGB);
}

/// The receiver `name` (at `bdf`) idles asleep, receives every frame of the bursts, and its
/// sleeps were ended by its interrupt (`wakes`), which the guest's kernel counted.
fn sleeps_and_wakes_for_every_burst(platform: Platform, name: &str, bdf: &str) {
    let Some(run) = guest(platform) else { return };
    let file = |f: &str| format!("{name}-{f}");
    let (idle, idle_pct) = idle_line(run, &file("idle.txt"));
    // The issue's 2% is the e1000's test above; here 5%, since 2% of 5 s is 10 ticks of
    // the kernel's 10 ms CPU accounting and one receiver's start-up reached it (0.10 s).
    // What tells it slept on its interrupt is the naps count.
    assert!(idle_pct < 5.0, "hybrid sleeps: {idle}");
    assert!(count_before(&idle, " naps") >= 20, "{idle}");
    let pktgen = result(run, &file("wake-pktgen.txt"));
    let sent = pktgen
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(sent, "sent"), Some(FRAMES as u64), "{pktgen}");
    let frames = read_pcap(&run.results.join(file("wake.pcap")));
    assert_leg_received(frames, nic_mac(0), FRAMES, 0, &file("wake-up leg"));
    let (wake, _) = idle_line(run, &file("wake-dump.txt"));
    // The IRQ numbers, named while dump held them open: vfio-pci names its lines after the
    // device (`vfio-intx(BDF)`, `vfio-msix[0](BDF)`; blanked once released, the count
    // stays), uio_pci_generic after itself (the other NICs' lines too, closed by now).
    let label = match platform {
        Platform::Vfio => format!("({bdf})"),
        Platform::Uio => "uio_pci_generic".to_string(),
    };
    let before = result(run, &file("interrupts-before.txt"));
    let irqs: Vec<&str> = before
        .lines()
        .filter(|l| l.contains(&label))
        .filter_map(|l| l.split(':').next())
        .collect();
    let count = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.split(':').next().is_some_and(|n| irqs.contains(&n)))
            .flat_map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .map_while(|w| w.parse::<u64>().ok())
            })
            .sum()
    };
    let after = result(run, &file("interrupts.txt"));
    let fired = count(&after).saturating_sub(count(&before));
    eprintln!(
        "{platform:?} {name}:\n  idle: {idle}\n  wake-up: {wake}\n  {label} (IRQ {irqs:?}): {fired} interrupts during the bursts"
    );
    assert!(
        fired > 0,
        "the kernel counted the line `{label}`:\n{before}\n{after}"
    );
    let wakes = count_before(&wake, " wakes");
    assert!(
        wakes >= (FRAMES / BURST / 2) as u64,
        "the receiver slept between bursts and its interrupt woke it: {wake}"
    );
    // The device and the line's or vectors' descriptors, none left after; the kernel's log
    // (read after every leg) quiet.
    let line = assert_cycles_quiet_in(run, &file("cycles.txt"), SLEEPER_CYCLES, 1, &[]);
    eprintln!("  {line}");
}
