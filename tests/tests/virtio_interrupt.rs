//! virtio-net receive interrupts against the fake device (`fake_virtio`, its MSI-X table in
//! `fake_virtio/irq.rs`): MSI-X entries routed per receive queue and for configuration
//! changes, used buffer notifications suppressed while polling, and arm / re-check / sleep
//! with frames landing at every point of it, on split rings (flags and EVENT_IDX) and
//! packed ones. The exact interleavings (a used entry written just before or just after the
//! arm store) are pinned in `zcnic-descriptors`' `notify_tests`; here a device thread races
//! the waiter for real. Without MSI-X, a one-pair port sleeps on INTx (`virtio/legacy.rs`):
//! the same rounds again on the fake's line and ISR status, legacy (ISR through the I/O
//! register, here a hook) and modern (ISR read where the ISR capability points in the BAR,
//! as under uio_pci_generic).

use std::time::{Duration, Instant};
use zcnic::irq::wait_readable;
use zcnic::port::RxQueue;
use zcnic::virtio::{negotiate, DmaMem, VirtioNet, VirtioPort};
use zcnic::{Config, Error, Nic, PciAddr};
use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
use zcnic_tests::fake_virtio::{Behaviour, FakeVirtio, Inject, LegacyView};
use zcnic_tests::wake_race::{self, readable, receive, NEVER};

/// Long enough never to pass on a working driver: a wait that should end at once and takes
/// this long slept through a frame.
type Split = SplitQueue<DmaMem>;
type Packed = PackedQueue<DmaMem>;

fn addr() -> PciAddr {
    "0000:00:03.0".parse().unwrap()
}

fn config(queues: u16) -> Config {
    Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 1024,
        queues,
        ..Config::default()
    }
}

fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0xffu8; 60];
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[14] = tag;
    f
}

/// A one-queue port on a fake whose MSI-X table has `entries` entries.
fn open<Q: zcnic::virtio::QueueKind>(b: Behaviour, entries: usize) -> (FakeVirtio, VirtioNet<Q>) {
    let dev = FakeVirtio::start(b);
    let t = dev.transport().with_vectors(dev.msix(entries));
    let cfg = config(1);
    let features = negotiate(&t, &addr(), &cfg, Q::PACKED).unwrap();
    let nic = VirtioNet::<Q>::new(Box::new(t), features, &dev.dma, addr(), &cfg).unwrap();
    (dev, nic)
}

fn split(event_idx: bool) -> (FakeVirtio, VirtioNet<Split>) {
    open(
        Behaviour {
            event_idx,
            ..Behaviour::default()
        },
        3,
    )
}

fn packed() -> (FakeVirtio, VirtioNet<Packed>) {
    open(
        Behaviour {
            packed: true,
            ..Behaviour::default()
        },
        3,
    )
}

/// Waits until the device has used `n` receive buffers in all.
fn used(dev: &FakeVirtio, n: u64) {
    let start = Instant::now();
    while dev.counts().rx_used < n {
        assert!(start.elapsed() < NEVER, "the fake never used {n} buffers");
        std::thread::yield_now();
    }
}

/// Polling costs no interrupt: notifications stay suppressed until a waiter arms.
fn polling_never_interrupts(dev: &FakeVirtio, nic: &mut dyn Nic) {
    for t in 0..3 {
        dev.inject(Inject::Frame(frame(t)));
    }
    used(dev, 3);
    assert_eq!(receive(nic), 3);
    assert_eq!(dev.interrupts(0), 0, "{}", nic.driver());
    assert!(!readable(nic, Duration::ZERO));
}

/// A frame already used when the waiter arms: `enable` says so, no sleep needed.
fn a_waiting_frame_is_seen_by_the_recheck(dev: &FakeVirtio, nic: &mut dyn Nic) {
    let before = dev.counts().rx_used;
    dev.inject(Inject::Frame(frame(9)));
    used(dev, before + 1);
    assert!(
        nic.enable_rx_interrupt().unwrap(),
        "{}: the re-check",
        nic.driver()
    );
    assert_eq!(receive(nic), 1);
    assert_eq!(dev.interrupts(0), 0, "disarmed again: no interrupt");
}

/// Armed on an empty ring, the next frame raises the queue's vector and ends the sleep.
fn a_frame_after_the_arm_wakes_the_sleeper(dev: &FakeVirtio, nic: &mut dyn Nic) {
    assert!(!nic.enable_rx_interrupt().unwrap());
    assert!(!readable(nic, Duration::ZERO));
    dev.inject(Inject::Frame(frame(1)));
    assert!(
        readable(nic, NEVER),
        "{}: the vector woke the waiter",
        nic.driver()
    );
    nic.disable_rx_interrupt().unwrap();
    assert_eq!(receive(nic), 1);
    let sent = dev.interrupts(0);
    assert!(sent >= 1);
    // Disarmed: frames again cost nothing.
    let before = dev.counts().rx_used;
    dev.inject(Inject::Frame(frame(2)));
    used(dev, before + 1);
    assert_eq!(dev.interrupts(0), sent);
    assert_eq!(receive(nic), 1);
}

fn all(dev: &FakeVirtio, nic: &mut dyn Nic) {
    polling_never_interrupts(dev, nic);
    a_waiting_frame_is_seen_by_the_recheck(dev, nic);
    a_frame_after_the_arm_wakes_the_sleeper(dev, nic);
    wake_race::waiter_never_sleeps_through_a_frame(nic, 0x9e37_79b9, &|round| {
        dev.inject(Inject::Frame(frame(round)))
    });
}

#[test]
fn split_ring_with_flags() {
    let (dev, mut nic) = split(false);
    all(&dev, &mut nic);
}

#[test]
fn split_ring_with_event_idx() {
    let (dev, mut nic) = split(true);
    all(&dev, &mut nic);
}

#[test]
fn packed_ring() {
    let (dev, mut nic) = packed();
    all(&dev, &mut nic);
}

/// Without MSI-X (uio_pci_generic, a legacy device) the port says so and polls.
#[test]
fn without_vectors_the_port_has_no_interrupt() {
    let dev = FakeVirtio::start(Behaviour::default());
    let t = dev.transport();
    let cfg = config(1);
    let features = negotiate(&t, &addr(), &cfg, false).unwrap();
    let mut nic = VirtioNet::<Split>::new(Box::new(t), features, &dev.dma, addr(), &cfg).unwrap();
    assert!(matches!(
        nic.rx_interrupt_fd(),
        Err(Error::NoInterrupt { .. })
    ));
    assert!(matches!(
        nic.enable_rx_interrupt(),
        Err(Error::NoInterrupt { .. })
    ));
    assert!(nic.link_interrupt().is_none());
}

/// Entry 0 goes to configuration changes: a link change makes it readable.
#[test]
fn a_link_change_raises_the_config_vector() {
    let (dev, mut nic) = split(true);
    let link = nic
        .link_interrupt()
        .expect("msix_config routed")
        .try_clone()
        .unwrap();
    assert!(!link.wait(Duration::ZERO).unwrap());
    dev.set_link(false);
    assert!(link.wait(NEVER).unwrap());
    assert_eq!(link.drain().unwrap(), 1);
    assert!(!nic.link_event().unwrap().up);
}

/// Each receive queue of a multi-queue port has its own vector: a frame on pair 1 wakes
/// queue 1's waiter and leaves queue 0's asleep.
#[test]
fn each_queue_sleeps_on_its_own_vector() {
    let dev = FakeVirtio::start(Behaviour {
        ctrl: true,
        pairs: 2,
        ..Behaviour::default()
    });
    let t = dev.transport().with_vectors(dev.msix(5));
    let cfg = config(2);
    let features = negotiate(&t, &addr(), &cfg, false).unwrap();
    let (_port, mut queues) =
        VirtioPort::<Split>::new(Box::new(t), features, &dev.dma, addr(), &cfg).unwrap();
    let (mut rx1, _tx1) = queues.pop().unwrap();
    let (mut rx0, _tx0) = queues.pop().unwrap();
    assert!(!rx0.enable_rx_interrupt().unwrap());
    assert!(!rx1.enable_rx_interrupt().unwrap());
    dev.inject_on(1, Inject::Frame(frame(7)));
    assert!(wait_readable(rx1.rx_interrupt_fd().unwrap(), NEVER).unwrap());
    assert!(!wait_readable(rx0.rx_interrupt_fd().unwrap(), Duration::from_millis(50)).unwrap());
    rx0.disable_rx_interrupt().unwrap();
    rx1.disable_rx_interrupt().unwrap();
    let mut got = Vec::new();
    assert_eq!(rx1.rx_batch(&mut got, 8), 1);
    assert_eq!(rx0.rx_batch(&mut got, 8), 0);
    assert_eq!((dev.interrupts(0), dev.interrupts(2)), (0, 1));
    drop(got);
    assert_eq!(dev.counts().rx_used, 1);
}

/// A one-queue port on a fake without MSI-X whose INTx the transport hands over: the
/// legacy interface (`legacy`, ISR through a hook standing in for its I/O register) or
/// the modern one (ISR through the ISR capability's window of the BAR).
fn open_intx<Q: zcnic::virtio::QueueKind>(
    legacy: bool,
    b: Behaviour,
) -> (FakeVirtio, VirtioNet<Q>) {
    let dev = FakeVirtio::start(Behaviour {
        legacy,
        packed: Q::PACKED,
        ..b
    });
    let t: Box<dyn zcnic::virtio::Transport> = if legacy {
        Box::new(LegacyView(dev.transport().with_intx(dev.intx())))
    } else {
        Box::new(dev.isr_transport())
    };
    let cfg = config(1);
    let features = negotiate(t.as_ref(), &addr(), &cfg, Q::PACKED).unwrap();
    let nic = VirtioNet::<Q>::new(t, features, &dev.dma, addr(), &cfg).unwrap();
    (dev, nic)
}

#[test]
fn intx_legacy_split_ring() {
    let (dev, mut nic) = open_intx::<Split>(true, Behaviour::default());
    all(&dev, &mut nic);
}

#[test]
fn intx_modern_split_ring_with_event_idx() {
    let b = Behaviour {
        event_idx: true,
        ..Behaviour::default()
    };
    let (dev, mut nic) = open_intx::<Split>(false, b);
    all(&dev, &mut nic);
}

#[test]
fn intx_modern_packed_ring() {
    let (dev, mut nic) = open_intx::<Packed>(false, Behaviour::default());
    all(&dev, &mut nic);
}

/// The line is level-triggered on ISR: the waiter's wake-up finds the queue bit set, and
/// disarming reads ISR, which clears it (the line drops while the port polls). A link
/// change sets the config bit, but the port reports no link interrupt on INTx.
fn acknowledged_through_isr(legacy: bool) {
    let (dev, mut nic) = open_intx::<Split>(legacy, Behaviour::default());
    assert!(nic.link_interrupt().is_none());
    assert!(!nic.enable_rx_interrupt().unwrap());
    dev.inject(Inject::Frame(frame(3)));
    assert!(readable(&nic, NEVER), "INTx woke the waiter");
    assert_eq!(dev.isr() & 1, 1, "the queue bit is what raised the line");
    nic.disable_rx_interrupt().unwrap();
    assert_eq!(dev.isr(), 0, "disarming acknowledged ISR");
    assert_eq!(receive(&mut nic), 1);
    dev.set_link(false);
    assert_eq!(dev.isr(), 2);
    assert!(!nic.enable_rx_interrupt().unwrap());
    assert_eq!(dev.isr(), 0, "arming acknowledged the config change first");
    nic.disable_rx_interrupt().unwrap();
    assert_eq!(dev.interrupts(0), 1);
}

#[test]
fn intx_is_acknowledged_through_isr() {
    acknowledged_through_isr(true);
}

/// The modern ISR is a byte of the BAR (where the ISR capability points) that the queue
/// reads through its own handle: the same acknowledgements land there.
#[test]
fn intx_modern_is_acknowledged_through_the_isr_capability() {
    acknowledged_through_isr(false);
}

/// One line cannot tell queues apart: a two-pair port without MSI-X leaves INTx alone and
/// its queues poll, though the modern device has its ISR capability.
#[test]
fn intx_serves_no_multi_queue_port() {
    let dev = FakeVirtio::start(Behaviour {
        ctrl: true,
        pairs: 2,
        ..Behaviour::default()
    });
    let t = dev.isr_transport();
    let cfg = config(2);
    let features = negotiate(&t, &addr(), &cfg, false).unwrap();
    let (_port, mut queues) =
        VirtioPort::<Split>::new(Box::new(t), features, &dev.dma, addr(), &cfg).unwrap();
    for (rx, _tx) in &mut queues {
        assert!(matches!(
            rx.enable_rx_interrupt(),
            Err(Error::NoInterrupt { .. })
        ));
    }
}
