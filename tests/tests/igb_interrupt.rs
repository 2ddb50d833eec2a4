//! The igb's per-queue MSI-X vectors against the fake 82576 (`fake_igb_irq`): every vector
//! masked while polling, arm / re-check / sleep with frames landing at each point of it
//! (one exactly between the driver's EICR clear and its EIMS write), and on a two-queue
//! port a frame on queue 1 waking queue 1's waiter only.

use etherparse::PacketBuilder;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use zcnic::igb::{Config, Igb, IgbPort};
use zcnic::irq::wait_readable;
use zcnic::{Nic, PciAddr, RxQueue};
use zcnic_tests::fake_igb::{FakeIgb, Inject};
use zcnic_tests::fake_igb_irq::IgbIrqBar;
use zcnic_tests::wake_race::{self, readable, receive, NEVER};

/// A wait that should end at once and takes this long slept through a frame.
fn config(queues: u16) -> Config {
    Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 1024,
        link_timeout: Duration::from_secs(2),
        queues,
        ..Config::default()
    }
}

fn addr() -> PciAddr {
    "0000:00:02.0".parse().unwrap()
}

/// A one-queue igb on the fake, sleeping on vector 0.
fn open(dev: &FakeIgb) -> Igb<IgbIrqBar> {
    let mut nic = Igb::new(dev.irq_bar(), &dev.dma, addr(), &config(1)).expect("comes up");
    nic.attach_interrupt(dev.irq.table(1).pop().unwrap());
    nic
}

fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0xffu8; 60];
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[14] = tag;
    f
}

/// A UDP frame whose source port is `port` (RSS spreads these over queues).
fn udp(port: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(port, 9);
    let mut f = Vec::new();
    b.write(&mut f, &[0u8; 18]).unwrap();
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
fn polling_never_interrupts_and_a_waiting_frame_is_seen_by_the_recheck() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    assert_eq!(dev.irq.mask(), 0, "every vector masked after bring-up");
    for t in 0..3 {
        dev.inject(Inject::Frame(frame(t)));
    }
    written_back(&dev, 3);
    assert_eq!(receive(&mut nic), 3);
    assert_eq!(dev.irq.sent[0].load(Ordering::SeqCst), 0);
    dev.inject(Inject::Frame(frame(9)));
    written_back(&dev, 4);
    assert!(nic.enable_rx_interrupt().unwrap(), "the re-check sees it");
    assert_eq!(dev.irq.mask(), 0, "masked again");
    assert_eq!(receive(&mut nic), 1);
}

#[test]
fn a_frame_after_the_arm_raises_the_vector() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    assert!(!nic.enable_rx_interrupt().unwrap());
    assert_eq!(dev.irq.mask(), 1);
    dev.inject(Inject::Frame(frame(1)));
    assert!(readable(&nic, NEVER), "vector 0 woke the waiter");
    nic.disable_rx_interrupt().unwrap();
    assert_eq!(dev.irq.mask(), 0);
    assert_eq!(receive(&mut nic), 1);
}

/// A frame written back right after the driver cleared EICR and before it unmasks: its
/// cause is latched, so the unmask sends the message (or the re-check sees the frame).
#[test]
fn a_frame_between_the_eicr_clear_and_the_unmask_is_not_slept_through() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let (inject, irq) = (dev.inject_handle(), dev.irq.clone());
    let per_queue = dev.per_queue.clone();
    irq.after_eicr_clear(move || {
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
        "neither the re-check nor the vector"
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
    wake_race::waiter_never_sleeps_through_a_frame(&mut nic, 0x2545_f491_u32, &|round| {
        inject.send(Inject::Frame(frame(round))).unwrap()
    });
}

/// Two queues, two vectors: a frame RSS puts on queue 1 wakes queue 1's waiter, and queue
/// 0's stays asleep.
#[test]
fn each_queue_sleeps_on_its_own_vector() {
    let dev = FakeIgb::start();
    let (mut port, mut queues) =
        IgbPort::new(dev.irq_bar(), &dev.dma, addr(), &config(2)).expect("comes up");
    port.attach_interrupts(&mut queues, dev.irq.table(2));
    let (mut rx1, _tx1) = queues.pop().unwrap();
    let (mut rx0, _tx0) = queues.pop().unwrap();
    assert!(!rx0.enable_rx_interrupt().unwrap());
    assert!(!rx1.enable_rx_interrupt().unwrap());
    // The first source port whose flow RSS sends to queue 1.
    let mut sent = 0;
    for port in 1000..1100 {
        dev.inject(Inject::Frame(udp(port)));
        sent += 1;
        written_back(&dev, sent);
        if dev.per_queue.lock().unwrap().rx[1] > 0 {
            break;
        }
    }
    assert!(wait_readable(rx1.rx_interrupt_fd().unwrap(), NEVER).unwrap());
    let q0 = dev.per_queue.lock().unwrap().rx[0];
    assert_eq!(
        wait_readable(rx0.rx_interrupt_fd().unwrap(), Duration::from_millis(50)).unwrap(),
        q0 > 0,
        "queue 0's vector fired exactly when queue 0 got frames"
    );
    rx0.disable_rx_interrupt().unwrap();
    rx1.disable_rx_interrupt().unwrap();
    let mut got = Vec::new();
    assert_eq!(rx1.rx_batch(&mut got, 64), 1);
    assert_eq!(rx0.rx_batch(&mut got, 64) as u64, q0);
    assert_eq!(dev.irq.sent[1].load(Ordering::SeqCst), 1);
}

/// One vector more than the queues: the other-cause vector. A link change sends it (and
/// only it), `link_event` then reports the change; the queues' vectors stay quiet.
#[test]
fn a_link_change_sends_the_other_cause_vector() {
    let dev = FakeIgb::start();
    let (mut port, mut queues) =
        IgbPort::new(dev.irq_bar(), &dev.dma, addr(), &config(2)).expect("comes up");
    port.attach_interrupts(&mut queues, dev.irq.table(3));
    let link = port
        .link_interrupt()
        .expect("vector 2")
        .try_clone()
        .unwrap();
    while zcnic::Port::link_event(&mut port).is_some() {}
    assert!(!link.wait(Duration::ZERO).unwrap());
    dev.set_link(false);
    assert!(link.wait(NEVER).unwrap(), "the link vector fired");
    assert_eq!(link.drain().unwrap(), 1);
    assert_eq!(
        zcnic::Port::link_event(&mut port).map(|l| l.up),
        Some(false)
    );
    dev.set_link(true);
    assert!(link.wait(NEVER).unwrap(), "and again once LSC was read");
    assert_eq!(zcnic::Port::link_event(&mut port).map(|l| l.up), Some(true));
    assert_eq!(dev.irq.sent[2].load(Ordering::SeqCst), 2);
    assert_eq!(dev.irq.sent[0].load(Ordering::SeqCst), 0);
    assert_eq!(dev.irq.sent[1].load(Ordering::SeqCst), 0);
    drop(queues);
}

/// Only as many vectors as queues: no link vector, and the queues keep theirs.
#[test]
fn without_a_spare_vector_there_is_no_link_interrupt() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    assert!(nic.link_interrupt().is_none());
    assert!(!nic.enable_rx_interrupt().unwrap());
    nic.disable_rx_interrupt().unwrap();
}
