//! The igb on one line (`igb/irq.rs`), the fallback without MSI-X (MSI, or INTx under
//! uio_pci_generic), against the fake 82576 in legacy interrupt mode (`fake_igb_irq`):
//! every cause masked while polling, arm / re-check / sleep with frames landing at each
//! point of it (one exactly between the driver's ICR read and its IMS write), and the line
//! dropped (ICR read, IMS clear) once the waiter is awake.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use zcnic::igb::{regs, Config, Igb};
use zcnic::{Nic, PciAddr};
use zcnic_tests::fake_igb::{FakeIgb, Inject};
use zcnic_tests::fake_igb_irq::IgbIrqBar;
use zcnic_tests::wake_race::{self, readable, receive, NEVER};

/// A wait that should end at once and takes this long slept through a frame.
fn config() -> Config {
    Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 1024,
        link_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

fn addr() -> PciAddr {
    "0000:00:02.0".parse().unwrap()
}

/// A one-queue igb on the fake, sleeping on its one line.
fn open(dev: &FakeIgb) -> Igb<IgbIrqBar> {
    let mut nic = Igb::new(dev.irq_bar(), &dev.dma, addr(), &config()).expect("comes up");
    nic.attach_line(dev.irq.line());
    nic
}

fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0xffu8; 60];
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[14] = tag;
    f
}

fn received(dev: &FakeIgb) -> u64 {
    dev.per_queue.lock().unwrap().rx.iter().sum()
}

fn written_back(dev: &FakeIgb, n: u64) {
    let start = Instant::now();
    while received(dev) < n {
        assert!(
            start.elapsed() < NEVER,
            "the fake never received {n} frames"
        );
        std::thread::yield_now();
    }
}

#[test]
fn polling_never_raises_the_line_and_a_waiting_frame_is_seen_by_the_recheck() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    assert_eq!(dev.irq.ims(), 0, "every cause masked after bring-up");
    assert_eq!(dev.bar.peek32(regs::GPIE) & regs::GPIE_MSIX_MODE, 0);
    for t in 0..3 {
        dev.inject(Inject::Frame(frame(t)));
    }
    written_back(&dev, 3);
    assert_eq!(receive(&mut nic), 3);
    assert_eq!(dev.irq.line_sent.load(Ordering::SeqCst), 0);
    // Written back before the arm: its RXDW is cleared by the arm's ICR read, so only the
    // re-check can see it.
    dev.inject(Inject::Frame(frame(9)));
    written_back(&dev, 4);
    assert!(nic.enable_rx_interrupt().unwrap(), "the re-check sees it");
    assert_eq!(dev.irq.ims(), 0, "masked again");
    assert_eq!(receive(&mut nic), 1);
}

#[test]
fn a_frame_after_the_arm_raises_the_line_and_waking_drops_it() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    assert!(!nic.enable_rx_interrupt().unwrap());
    assert_ne!(dev.irq.ims() & regs::ICR_RXDW, 0);
    dev.inject(Inject::Frame(frame(1)));
    assert!(readable(&nic, NEVER), "the line woke the waiter");
    nic.disable_rx_interrupt().unwrap();
    assert_eq!(dev.irq.ims(), 0);
    assert_eq!(dev.bar.peek32(regs::ICR) & regs::ICR_RXDW, 0, "ICR read");
    assert_eq!(receive(&mut nic), 1);
    assert_eq!(dev.irq.line_sent.load(Ordering::SeqCst), 1);
}

/// A frame written back right after the driver read ICR and before IMS enables RXDW: the
/// cause is latched, so the IMS write raises the line (or the re-check sees the frame).
#[test]
fn a_frame_between_the_icr_read_and_the_ims_write_is_not_slept_through() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let (inject, per_queue) = (dev.inject_handle(), dev.per_queue.clone());
    dev.irq.after_icr_read(move || {
        inject.send(Inject::Frame(frame(5))).unwrap();
        let start = Instant::now();
        while per_queue.lock().unwrap().rx[0] < 1 {
            assert!(start.elapsed() < NEVER);
            std::thread::yield_now();
        }
    });
    let ready = nic.enable_rx_interrupt().unwrap();
    assert!(
        ready || readable(&nic, NEVER),
        "neither the re-check nor the line"
    );
    nic.disable_rx_interrupt().unwrap();
    assert_eq!(receive(&mut nic), 1);
}

/// A device thread injects at a random moment around the waiter's arm, 300 times: every
/// `rx_wait` ends at once, never at NEVER.
#[test]
fn the_waiter_never_sleeps_through_a_frame() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let inject = dev.inject_handle();
    wake_race::waiter_never_sleeps_through_a_frame(&mut nic, 0x1b87_3593_u32, &|round| {
        inject.send(Inject::Frame(frame(round))).unwrap()
    });
}

/// A link change during a sleep does not wake the receiver (LSC is not enabled), and the
/// arm's ICR reads keep it for `link_event`.
#[test]
fn the_arms_icr_reads_keep_link_changes_for_link_event() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    while nic.link_event().is_some() {}
    dev.set_link(false);
    assert!(!nic.enable_rx_interrupt().unwrap());
    assert!(!readable(&nic, Duration::from_millis(50)));
    nic.disable_rx_interrupt().unwrap();
    assert_eq!(nic.link_event().map(|l| l.up), Some(false));
}
