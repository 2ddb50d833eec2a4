//! The e1000 receive interrupt against the fake device (`fake_irq`): arm, re-check, sleep,
//! with frames landing at each point of that sequence; a port without an interrupt saying
//! so; link events and the interrupt sharing ICR without stealing each other's causes.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;
use zcnic::e1000::{regs, E1000};
use zcnic::irq::wait_readable;
use zcnic::{Config, Error, FakeBar, Link, Nic, PciAddr};
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000, Inject};
use zcnic_tests::fake_irq::IrqBar;

/// Long enough never to pass on a working driver, however slow the machine: a wait that
/// should return at once and takes this long means the waiter slept through a frame.
const NEVER: Duration = Duration::from_secs(20);

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

/// An e1000 on the fake, with the fake's interrupt attached.
fn open(dev: &FakeE1000) -> E1000<IrqBar> {
    let mut nic = E1000::new(dev.irq_bar(), &dev.dma, addr(), &config()).expect("comes up");
    nic.attach_interrupt(dev.irq.driver_end());
    nic
}

fn readable(nic: &E1000<IrqBar>, timeout: Duration) -> bool {
    wait_readable(nic.rx_interrupt_fd().expect("an fd"), timeout).expect("poll")
}

fn receive_all(nic: &mut impl Nic) -> usize {
    let mut got = Vec::with_capacity(256);
    nic.rx_batch(&mut got, 256)
}

/// The interrupt is masked while the port polls: frames then cost no interrupt.
#[test]
fn polling_never_interrupts() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    assert_eq!(dev.irq.mask(), 0, "nothing enabled after bring-up");
    assert_eq!(dev.complete_rx(3, 60), 3);
    assert!(!readable(&nic, Duration::ZERO));
    assert_eq!(receive_all(&mut nic), 3);
    assert_eq!(dev.irq.signals.load(Ordering::SeqCst), 0);
}

/// A frame already in the ring when the waiter arms: `enable` says so (poll, do not sleep)
/// and leaves the causes masked again.
#[test]
fn a_frame_waiting_before_the_arm_is_reported_by_the_arm() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    assert_eq!(dev.complete_rx(1, 60), 1);
    assert!(
        nic.enable_rx_interrupt().unwrap(),
        "the re-check saw the frame"
    );
    assert_eq!(dev.irq.mask(), 0, "disarmed again");
    assert_eq!(receive_all(&mut nic), 1);
}

/// A frame completed between the arm's ICR read (which clears stale causes) and its IMS
/// write: the cause is latched after the clear, so the IMS write raises the interrupt, and
/// the re-check after it sees the frame too.
#[test]
fn a_frame_between_the_icr_clear_and_the_arm_wakes() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    dev.irq.on_icr_read(dev.rx_completer(1, 60));
    assert!(nic.enable_rx_interrupt().unwrap());
    assert!(readable(&nic, NEVER), "the IMS write raised the line");
    assert_eq!(receive_all(&mut nic), 1);
}

/// The race of the issue: the ring was found empty, then a frame lands before the waiter
/// sleeps. The sleep must return at once, and the frame be there.
#[test]
fn a_frame_between_the_check_and_the_sleep_wakes_the_sleeper() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    for round in 0..50 {
        assert!(
            !nic.enable_rx_interrupt().unwrap(),
            "round {round}: ring empty"
        );
        assert!(
            !readable(&nic, Duration::ZERO),
            "round {round}: nothing yet"
        );
        assert_eq!(dev.complete_rx(1, 60), 1);
        assert!(
            readable(&nic, NEVER),
            "round {round}: slept through a frame"
        );
        nic.disable_rx_interrupt().unwrap();
        assert_eq!(dev.irq.mask(), 0);
        assert_eq!(receive_all(&mut nic), 1, "round {round}");
    }
}

/// `rx_wait` end to end, with the device thread delivering a frame while the caller
/// sleeps; and a sleep with nothing arriving ends at its timeout with `false`.
#[test]
fn rx_wait_sleeps_until_a_frame_and_times_out_without_one() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    assert!(
        !nic.rx_wait(Duration::from_millis(30)).unwrap(),
        "nothing came"
    );
    for n in 0..20u8 {
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(5));
                dev.inject(Inject::Frame(vec![n; 60]));
            });
            let mut got = Vec::with_capacity(8);
            while got.is_empty() {
                assert!(
                    nic.rx_wait(NEVER).unwrap(),
                    "woken by the frame, not the timeout"
                );
                nic.rx_batch(&mut got, 8);
            }
            assert_eq!(got[0].data(), &[n; 60][..]);
        });
    }
    assert_eq!(dev.irq.mask(), 0, "disarmed after every wait");
}

/// The interrupt reads ICR to drop its line; a link change it reads on the way is still a
/// link event, once.
#[test]
fn link_events_survive_the_interrupts_icr_reads() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    assert_eq!(nic.link_event(), None);
    assert!(!nic.enable_rx_interrupt().unwrap());
    dev.set_link(false);
    assert_eq!(dev.complete_rx(1, 60), 1);
    assert!(readable(&nic, NEVER));
    nic.disable_rx_interrupt().unwrap();
    assert_eq!(dev.bar.peek32(regs::ICR), 0, "the disarm read ICR");
    assert_eq!(nic.link_event(), Some(Link::DOWN));
    assert_eq!(nic.link_event(), None);
}

/// A port given no interrupt answers with a typed error from every call, and keeps
/// working as a polled port.
#[test]
fn a_port_without_an_interrupt_says_so() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic: E1000<FakeBar> =
        E1000::new(dev.bar.clone(), &dev.dma, addr(), &config()).expect("comes up");
    let no = |e: Error| assert!(matches!(e, Error::NoInterrupt { .. }), "{e}");
    no(nic.rx_interrupt_fd().unwrap_err());
    no(nic.enable_rx_interrupt().unwrap_err());
    no(nic.disable_rx_interrupt().unwrap_err());
    no(nic.rx_wait(Duration::from_millis(1)).unwrap_err());
    assert_eq!(dev.complete_rx(2, 60), 2);
    assert_eq!(receive_all(&mut nic), 2);
}

/// The descriptor stays the same across arms (epoll registers it once).
#[test]
fn the_fd_is_stable() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let fd = nic.rx_interrupt_fd().unwrap().as_raw_fd();
    for _ in 0..3 {
        assert!(!nic.rx_wait(Duration::from_millis(1)).unwrap());
        assert_eq!(nic.rx_interrupt_fd().unwrap().as_raw_fd(), fd);
    }
}
