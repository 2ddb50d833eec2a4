//! Interrupt and hybrid polling on INTx, the e1000's only interrupt and a legacy
//! virtio-net's, in one guest boot per platform: VFIO (vIOMMU), and uio_pci_generic (a
//! guest without one):
//!
//! ```text
//!  e1000 02.0 ── hub 0 (pcap) ─┬─ e1000 03.0
//!  sender (pktgen)             │  receiver (dump --idle …), open/close cycles
//!                              └─ legacy virtio-net 04.0: receiver (dump --idle hybrid)
//! ```
//!
//! - idle: `zcnic dump` with nothing arriving, 5 s in `poll` then 5 s in `hybrid`; the
//!   CPU each used (the tool reads its own `/proc/self/stat`).
//! - wake-up: after 2 s idle, 20 000 frames at 50 kpps in bursts of 1000 with 100 ms of
//!   silence between, to a `dump` in `hybrid`: every frame arrives, in order, across every
//!   sleep and wake.
//! - the same idle and wake-up legs on the legacy virtio-net (INTx acknowledged through its
//!   ISR), with the guest's `/proc/interrupts` read after.
//! - teardown: 200 open/close cycles in one process, each sleeping on the interrupt once,
//!   leave its descriptor count unchanged; the kernel logs nothing about the IRQ.

use std::sync::OnceLock;
use zcnic_qemu::{GuestRun, Nic};
use zcnic_tests::idle_lines::{assert_cycles_quiet, count_before, idle_line, result};
use zcnic_tests::qemu_suite::{
    assert_leg_received, figure, guest_slot, nic_mac, read_pcap, spec, tail, wait_ready,
};

const SENDER: &str = "0000:00:02.0";
const RECEIVER: &str = "0000:00:03.0";
/// The legacy virtio-net receiver: MSI-X stays off (it would move the device
/// configuration), so it sleeps on INTx.
const LEGACY: &str = "0000:00:04.0";
const LEGACY_NIC: &str = "virtio-net-pci,disable-modern=on";
/// Frames of the wake-up leg.
const FRAMES: usize = 20_000;
/// Frames per burst and the silence after each (ms).
const BURST: usize = 1000;
const GAP_MS: u32 = 100;
/// Open/close cycles of the teardown leg: 200 fit in a few minutes of a TCG guest (the
/// issue asks 1000; each cycle is a full e1000 bring-up with reset and link wait).
const CYCLES: u32 = 200;

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
         zcnic bind {LEGACY}\n\
         zcnic dump {LEGACY} --out /results/legacy-idle.pcap --duration 5 --idle hybrid \
            > /results/legacy-idle.txt 2> /results/legacy-idle.err\n\
         cat /results/legacy-idle.err /results/legacy-idle.txt\n\
         zcnic dump {LEGACY} --out /results/legacy-wake.pcap --count {FRAMES} --duration 120 \
            > /results/legacy-wake-dump.txt 2> /results/legacy-wake-dump.err &\n\
         dump=$!\n\
         {legacy_ready}\
         sleep 2\n\
         cat /proc/interrupts > /results/legacy-interrupts-before.txt\n\
         zcnic pktgen {SENDER} --count {FRAMES} --rate 50k --gap {BURST}:{GAP_MS} \
            | tee /results/legacy-wake-pktgen.txt\n\
         wait $dump\n\
         cat /proc/interrupts > /results/legacy-interrupts.txt\n\
         cat /results/legacy-wake-dump.err /results/legacy-wake-dump.txt\n\
         irq_cycles {RECEIVER} {CYCLES} | tee /results/cycles.txt\n\
         dmesg > /results/dmesg.txt\n",
        ready = wait_ready("/results/wake-dump.err", "listening"),
        legacy_ready = wait_ready("/results/legacy-wake-dump.err", "listening"),
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
        let nics = vec![
            Nic::new("e1000", 0, true),
            Nic::new("e1000", 0, false),
            Nic::new(LEGACY_NIC, 0, false),
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
    // It slept on the interrupt: a nap (100 ms) after another, none cut short by frames.
    assert!(
        count_before(&hybrid, " naps") >= 40,
        "about 50 naps of 100 ms in 5 s: {hybrid}"
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
    // would lose nothing here either: the ring holds a burst, and every nap ends in 100 ms;
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
    legacy_virtio_sleeps_on_intx_and_wakes_for_every_burst(Platform::Vfio);
}

#[test]
fn uio_legacy_virtio_sleeps_on_intx_and_wakes_for_every_burst() {
    legacy_virtio_sleeps_on_intx_and_wakes_for_every_burst(Platform::Uio);
}

/// The legacy virtio-net idles asleep on INTx, receives every frame of the bursts, and its
/// sleeps were ended by the line (`wakes`), which the guest's kernel counted.
fn legacy_virtio_sleeps_on_intx_and_wakes_for_every_burst(platform: Platform) {
    let Some(run) = guest(platform) else { return };
    let (idle, idle_pct) = idle_line(run, "legacy-idle.txt");
    assert!(idle_pct < 2.0, "hybrid sleeps on INTx: {idle}");
    assert!(count_before(&idle, " naps") >= 40, "{idle}");
    let pktgen = result(run, "legacy-wake-pktgen.txt");
    let sent = pktgen
        .lines()
        .find(|l| l.contains(": sent "))
        .unwrap_or_default();
    assert_eq!(figure(sent, "sent"), Some(FRAMES as u64), "{pktgen}");
    let frames = read_pcap(&run.results.join("legacy-wake.pcap"));
    assert_leg_received(frames, nic_mac(0), FRAMES, 0, "legacy wake-up leg");
    let (wake, _) = idle_line(run, "legacy-wake-dump.txt");
    // The line's IRQ numbers, named while dump held them open: vfio-pci names its line
    // after the device (and blanks the name once released; the count stays),
    // uio_pci_generic after itself (the e1000s' lines too, but they are closed by now).
    let label = match platform {
        Platform::Vfio => format!("vfio-intx({LEGACY})"),
        Platform::Uio => "uio_pci_generic".to_string(),
    };
    let before = result(run, "legacy-interrupts-before.txt");
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
    let after = result(run, "legacy-interrupts.txt");
    let fired = count(&after).saturating_sub(count(&before));
    eprintln!(
        "{platform:?} legacy virtio:\n  idle: {idle}\n  wake-up: {wake}\n  {label} (IRQ {irqs:?}): {fired} interrupts during the bursts"
    );
    assert!(
        fired > 0,
        "the kernel counted the line `{label}`:\n{before}\n{after}"
    );
    let wakes = count_before(&wake, " wakes");
    assert!(
        wakes >= (FRAMES / BURST / 2) as u64,
        "the receiver slept between bursts and INTx woke it: {wake}"
    );
}
