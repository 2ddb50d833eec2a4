//! The tools' `--idle` policy (`zcnic_tools::idle`) on the fake e1000: hybrid polls N times
//! before it sleeps, a sleep ends on the first frame, and a port without an interrupt
//! falls back to polling instead of failing. Then on a multi-queue port (`fwd --queues`,
//! `stats --queues`), on the fake virtio-net with an MSI-X vector per receive queue: a
//! thread's queue handle sleeps on its own queue's vector, so a frame on one queue wakes
//! its thread and leaves the other asleep.

use std::time::{Duration, Instant};
use zcnic::e1000::E1000;
use zcnic::virtio::{negotiate, DmaMem, VirtioPort};
use zcnic::{Config, Nic, PciAddr, Port, QueuePair};
use zcnic_descriptors::virtio::SplitQueue;
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000, Inject};
use zcnic_tests::fake_virtio::{self, FakeVirtio};
use zcnic_tools::idle::{Idle, Idler, Woke, QUIET_POLLS};
use zcnic_tools::multiqueue::{receive_queues, QueueNic};

fn addr() -> PciAddr {
    "0000:00:02.0".parse().unwrap()
}

fn config() -> Config {
    Config {
        rx_ring: 256,
        tx_ring: 256,
        pool: 1024,
        link_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

#[test]
fn hybrid_sleeps_after_n_empty_polls_and_wakes_on_a_frame() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = E1000::new(dev.irq_bar(), &dev.dma, addr(), &config()).unwrap();
    nic.attach_interrupt(dev.irq.driver_end());
    let mut idler = Idler::new(Idle::Hybrid(3));
    assert!(
        !idler.due(0) && !idler.due(0),
        "two empty polls: keep polling"
    );
    assert!(!idler.due(5), "a frame restarts the count");
    assert!(!idler.due(0) && !idler.due(0));
    assert!(idler.due(0), "the third empty poll in a row");
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(5));
            dev.inject(Inject::Frame(vec![7; 60]));
        });
        // A nap is 200 ms; the frame comes well within a few of them.
        for _ in 0..200 {
            if idler.wakes + idler.ready > 0 {
                break;
            }
            idler.sleep("test", &mut [&mut nic]);
        }
        // Almost always the interrupt; the frame may also land between two naps, where
        // the next arm finds it.
        assert_eq!(idler.wakes + idler.ready, 1, "woken by the frame");
    });
    assert_eq!(idler.mode(), Idle::Hybrid(3));
    let mut got = Vec::with_capacity(8);
    assert_eq!(nic.rx_batch(&mut got, 8), 1, "the frame that woke it");
}

#[test]
fn hybrid_for_a_time_sleeps_only_after_the_port_was_quiet_that_long() {
    let quiet = Duration::from_millis(30);
    let mut idler = Idler::new(Idle::HybridFor(quiet));
    let polls = |idler: &mut Idler, n: u32| (0..n).filter(|_| idler.due(0)).count();
    assert_eq!(
        polls(&mut idler, 10 * QUIET_POLLS),
        0,
        "many quick empty polls: not yet"
    );
    std::thread::sleep(quiet);
    assert!(!idler.due(3), "a frame after the quiet time restarts it");
    std::thread::sleep(quiet);
    assert!(
        !idler.due(0),
        "the clock starts at the first empty poll, not at the frame (the thread may have \
         been descheduled in between)"
    );
    std::thread::sleep(quiet);
    assert_eq!(
        polls(&mut idler, QUIET_POLLS - 2),
        0,
        "quiet long enough, but fewer than QUIET_POLLS polls"
    );
    assert!(
        idler.due(0),
        "the QUIET_POLLS-th empty poll, {quiet:?} after the first"
    );
    assert_eq!(
        polls(&mut idler, QUIET_POLLS),
        0,
        "after a sleep the quiet time starts anew"
    );
}

#[test]
fn a_port_without_an_interrupt_turns_the_policy_into_polling() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = E1000::new(dev.bar.clone(), &dev.dma, addr(), &config()).unwrap();
    let mut idler = Idler::new(Idle::Sleep);
    assert!(idler.due(0));
    idler.sleep("test", &mut [&mut nic]);
    assert_eq!(idler.mode(), Idle::Poll);
    assert!(!idler.due(0), "polling from now on");
}

#[test]
fn two_ports_sleep_together_and_either_wakes_them() {
    let (a, b) = (
        FakeE1000::start(Behaviour::default()),
        FakeE1000::start(Behaviour::default()),
    );
    let mut na = E1000::new(a.irq_bar(), &a.dma, addr(), &config()).unwrap();
    let mut nb = E1000::new(b.irq_bar(), &b.dma, addr(), &config()).unwrap();
    na.attach_interrupt(a.irq.driver_end());
    nb.attach_interrupt(b.irq.driver_end());
    let mut ports: [&mut dyn Nic; 2] = [&mut na, &mut nb];
    let nap = zcnic_tools::idle::sleep(&mut ports, Duration::from_millis(1)).unwrap();
    assert_eq!(nap, Woke::Timeout);
    assert_eq!(
        (a.irq.mask(), b.irq.mask()),
        (0, 0),
        "both disarmed after the nap"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(5));
            b.inject(Inject::Frame(vec![9; 60]));
        });
        let mut woke = false;
        for _ in 0..200 {
            let w = zcnic_tools::idle::sleep(&mut ports, Duration::from_millis(100)).unwrap();
            if w != Woke::Timeout {
                woke = true;
                break;
            }
        }
        assert!(woke, "the second port's frame woke the pair");
    });
    assert_eq!((a.irq.mask(), b.irq.mask()), (0, 0));
}

/// Long enough never to pass on a working driver.
const NEVER: Duration = Duration::from_secs(20);

fn virtio_addr() -> PciAddr {
    "0000:00:03.0".parse().unwrap()
}

fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0xffu8; 60];
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[14] = tag;
    f
}

/// A two-pair port whose receive queues each have an MSI-X vector (entries 1 and 2).
fn two_pairs() -> (FakeVirtio, VirtioPort<SplitQueue<DmaMem>>, Vec<QueuePair>) {
    let dev = FakeVirtio::start(fake_virtio::Behaviour {
        ctrl: true,
        pairs: 2,
        ..fake_virtio::Behaviour::default()
    });
    let t = dev.transport().with_vectors(dev.msix(5));
    let cfg = Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 1024,
        queues: 2,
        ..Config::default()
    };
    let features = negotiate(&t, &virtio_addr(), &cfg, false).unwrap();
    let (port, queues) =
        VirtioPort::<SplitQueue<DmaMem>>::new(Box::new(t), features, &dev.dma, virtio_addr(), &cfg)
            .unwrap();
    let pairs = queues
        .into_iter()
        .map(|(rx, tx)| QueuePair {
            rx: Box::new(rx),
            tx: Box::new(tx),
        })
        .collect();
    (dev, port, pairs)
}

/// `fwd --queues`: each forwarding thread's [`QueueNic`]s sleep on their own queue's
/// vector through the ordinary `Idler` sleep; a frame on queue 1 ends queue 1's sleep and
/// not queue 0's.
#[test]
fn a_queue_nic_sleeps_on_its_own_queues_vector() {
    let (dev, port, mut pairs) = two_pairs();
    let q1 = QueueNic::new(pairs.pop().unwrap(), &port);
    let q0 = QueueNic::new(pairs.pop().unwrap(), &port);
    let mut ones: Vec<Box<dyn Nic>> = vec![Box::new(q1)];
    let mut zeros: Vec<Box<dyn Nic>> = vec![Box::new(q0)];
    assert!(!ones[0].enable_rx_interrupt().unwrap());
    assert!(!zeros[0].enable_rx_interrupt().unwrap());
    dev.inject_on(1, fake_virtio::Inject::Frame(frame(1)));
    let fd = ones[0].rx_interrupt_fd().unwrap();
    assert!(
        zcnic::irq::wait_readable(fd, NEVER).unwrap(),
        "queue 1's vector"
    );
    let other = zeros[0].rx_interrupt_fd().unwrap();
    assert!(!zcnic::irq::wait_readable(other, Duration::from_millis(50)).unwrap());
    ones[0].disable_rx_interrupt().unwrap();
    zeros[0].disable_rx_interrupt().unwrap();
    // The tools' sleep over the same handles: queue 1 finds its frame already there, queue
    // 0 naps out.
    assert_eq!(
        zcnic_tools::idle::sleep(&mut ones, NEVER).unwrap(),
        Woke::Ready
    );
    assert_eq!(
        zcnic_tools::idle::sleep(&mut zeros, Duration::from_millis(20)).unwrap(),
        Woke::Timeout
    );
    let mut got = Vec::new();
    assert_eq!(ones[0].rx_batch(&mut got, 8), 1);
    assert_eq!(zeros[0].rx_batch(&mut got, 8), 0);
    assert_eq!((dev.interrupts(0), dev.interrupts(2)), (0, 1));
}

/// `stats --queues`: a receiving thread per queue, each sleeping on its own vector with
/// `--idle sleep`. Queue 0 gets nothing and only naps (never woken: its vector never
/// fired); queue 1's frames all arrive. Neither fell back to polling.
#[test]
fn stats_queues_sleep_each_on_its_own_vector() {
    let (dev, port, pairs) = two_pairs();
    let lines = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            for t in 0..3 {
                dev.inject_on(1, fake_virtio::Inject::Frame(frame(t)));
            }
        });
        receive_queues(pairs, Duration::from_millis(700), Idle::Sleep).unwrap()
    });
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("queue 0 idle sleep: 0 wakes, 0 ready, "),
        "{lines:?}"
    );
    for line in &lines {
        let naps: u64 = line
            .split(" naps")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(naps >= 1, "it slept on its vector, not polled: {line}");
    }
    let start = Instant::now();
    while port.queue_stats()[1].rx_packets < 3 {
        assert!(start.elapsed() < NEVER, "{:?}", port.queue_stats());
        std::thread::yield_now();
    }
    assert_eq!(port.queue_stats()[0].rx_packets, 0);
}
