//! The tools' `--idle` on a multi-queue port (`fwd --queues`, `stats --queues`), on the
//! fake virtio-net with an MSI-X vector per receive queue: a thread's queue handle sleeps on
//! its own queue's vector, so a frame on one queue wakes its thread and leaves the other
//! asleep.

use std::time::{Duration, Instant};
use zcnic::virtio::{negotiate, DmaMem, VirtioPort};
use zcnic::{Config, Nic, PciAddr, Port, QueuePair};
use zcnic_descriptors::virtio::SplitQueue;
use zcnic_tests::fake_virtio::{Behaviour, FakeVirtio, Inject};
use zcnic_tools::idle::{Idle, Woke};
use zcnic_tools::multiqueue::{receive_queues, QueueNic};

/// Long enough never to pass on a working driver.
const NEVER: Duration = Duration::from_secs(20);

fn addr() -> PciAddr {
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
    let dev = FakeVirtio::start(Behaviour {
        ctrl: true,
        pairs: 2,
        ..Behaviour::default()
    });
    let t = dev.transport().with_vectors(dev.msix(5));
    let cfg = Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 1024,
        queues: 2,
        ..Config::default()
    };
    let features = negotiate(&t, &addr(), &cfg, false).unwrap();
    let (port, queues) =
        VirtioPort::<SplitQueue<DmaMem>>::new(Box::new(t), features, &dev.dma, addr(), &cfg)
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
    dev.inject_on(1, Inject::Frame(frame(1)));
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
                dev.inject_on(1, Inject::Frame(frame(t)));
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
