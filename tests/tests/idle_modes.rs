//! The tools' `--idle` policy (`zcnic_tools::idle`) on the fake e1000: hybrid polls N times
//! before it sleeps, a sleep ends on the first frame, and a port without an interrupt
//! falls back to polling instead of failing.

use std::time::Duration;
use zcnic::e1000::E1000;
use zcnic::{Config, Nic, PciAddr};
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000, Inject};
use zcnic_tools::idle::{Idle, Idler, Woke, QUIET_POLLS};

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
        // A nap is 100 ms; the frame comes well within a few of them.
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
