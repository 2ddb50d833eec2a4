//! Link events (`Nic::link_event`, `Port::link_event`) against the fake devices: nothing
//! when nothing changed, each change once and in order, and the e1000/igb interrupt cause
//! register read the way silicon has it (clear on read, other causes beside LSC).

use std::time::Duration;
use zcnic::e1000::{regs, E1000};
use zcnic::igb::{Igb, IgbPort};
use zcnic::virtio::{negotiate, DmaMem, VirtioNet};
use zcnic::{Config, FakeBar, Link, Nic, PciAddr, Port};
use zcnic_descriptors::virtio::SplitQueue;
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000};
use zcnic_tests::fake_igb::FakeIgb;
use zcnic_tests::fake_virtio::{self, FakeVirtio};

fn addr() -> PciAddr {
    "0000:00:02.0".parse().unwrap()
}

fn config() -> Config {
    Config {
        rx_ring: 256,
        tx_ring: 256,
        pool: 1024,
        link_timeout: Duration::from_secs(2),
        reset_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

fn e1000(dev: &FakeE1000) -> E1000<FakeBar> {
    E1000::new(dev.bar.clone(), &dev.dma, addr(), &config()).expect("e1000 comes up")
}

/// What a link back up at the fakes' 1000 Mbit/s full duplex reports.
const UP_1000: Link = Link {
    up: true,
    speed_mbps: 1000,
    full_duplex: true,
};

/// Sends `n` frames and waits for the device to finish them: every DD it writes latches
/// ICR.TXDW too, a cause that is not a link event.
fn traffic(nic: &mut dyn Nic, n: usize) {
    let pool = nic.pool().clone();
    let mut pkts = Vec::with_capacity(n);
    for _ in 0..n {
        pkts.push(pool.alloc_copy(&[0xab; 60]).expect("a buffer"));
    }
    while !pkts.is_empty() {
        nic.tx_batch(&mut pkts);
    }
    assert!(nic.flush(), "the fake sent them");
}

/// Down, then up, each reported once, with `nothing` between them.
fn down_then_up(nic: &mut dyn Nic, set_link: &dyn Fn(bool), up: Link) {
    set_link(false);
    assert_eq!(nic.link_event(), Some(Link::DOWN));
    assert_eq!(nic.link_event(), None, "one change, one event");
    set_link(true);
    assert_eq!(nic.link_event(), Some(up));
    assert_eq!(nic.link_event(), None);
}

#[test]
fn e1000_reports_nothing_while_nothing_changes_among_other_causes() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = e1000(&dev);
    assert_eq!(nic.link_event(), None, "the link as opened is not an event");
    traffic(&mut nic, 100);
    for _ in 0..10 {
        assert_eq!(nic.link_event(), None);
    }
    assert!(nic.link().up);
}

#[test]
fn e1000_reports_down_then_up_once_each_in_order() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = e1000(&dev);
    down_then_up(&mut nic, &|up| dev.set_link(up), UP_1000);
    // And again, with traffic between: the same, each time.
    traffic(&mut nic, 40);
    down_then_up(&mut nic, &|up| dev.set_link(up), UP_1000);
}

/// ICR clears when read (8254x SDM §13.4.17): the driver's read consumes LSC and every
/// other cause, so it must act on what that one read returned. `link()` reads STATUS only
/// and leaves the event for `link_event`.
#[test]
fn e1000_icr_clears_on_the_drivers_read_and_link_leaves_the_event() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = e1000(&dev);
    dev.set_link(false);
    assert!(!nic.link().up, "STATUS says down at once");
    assert_ne!(
        dev.bar.peek32(regs::ICR) & regs::ICR_LSC,
        0,
        "LSC still latched"
    );
    assert_eq!(nic.link_event(), Some(Link::DOWN));
    assert_eq!(dev.bar.peek32(regs::ICR), 0, "the read cleared ICR");
    // A bounce between two calls: LSC latched, STATUS as before: nothing to report.
    dev.set_link(true);
    dev.set_link(false);
    assert_eq!(nic.link_event(), None);
    dev.set_link(true);
    assert_eq!(nic.link_event(), Some(UP_1000));
}

#[test]
fn e1000_opened_with_the_link_down_reports_it_coming_up() {
    let dev = FakeE1000::start(Behaviour {
        link_up: false,
        ..Behaviour::default()
    });
    let cfg = Config {
        link_timeout: Duration::from_millis(20),
        ..config()
    };
    let mut nic = E1000::new(dev.bar.clone(), &dev.dma, addr(), &cfg).expect("comes up");
    assert_eq!(nic.link_event(), None, "down as opened: not an event");
    dev.set_link(true);
    assert_eq!(nic.link_event(), Some(UP_1000));
}

#[test]
fn igb_reports_down_then_up_on_the_nic_and_on_the_port() {
    let dev = FakeIgb::start();
    let mut nic = Igb::new(dev.bar.clone(), &dev.dma, addr(), &config()).expect("the igb comes up");
    assert_eq!(
        nic.link_event(),
        None,
        "the link coming up at open is not an event"
    );
    traffic(&mut nic, 40);
    assert_eq!(nic.link_event(), None);
    down_then_up(&mut nic, &|up| dev.set_link(up), UP_1000);
    drop(nic);

    let dev = FakeIgb::start();
    let cfg = Config {
        queues: 2,
        ..config()
    };
    let (mut port, queues) =
        IgbPort::new(dev.bar.clone(), &dev.dma, addr(), &cfg).expect("the port comes up");
    assert_eq!(port.link_event(), None);
    dev.set_link(false);
    assert_eq!(port.link_event(), Some(Link::DOWN));
    assert_eq!(port.link_event(), None);
    dev.set_link(true);
    assert_eq!(port.link_event(), Some(UP_1000));
    drop(queues);
}

fn virtio(dev: &FakeVirtio) -> VirtioNet<SplitQueue<DmaMem>> {
    let t = dev.transport();
    let features = negotiate(&t, &addr(), &config(), false).expect("features negotiated");
    VirtioNet::new(Box::new(t), features, &dev.dma, addr(), &config()).expect("comes up")
}

/// virtio-net says up without a speed (VIRTIO_NET_F_SPEED_DUPLEX is not negotiated).
const VIRTIO_UP: Link = Link {
    up: true,
    speed_mbps: 0,
    full_duplex: true,
};

#[test]
fn virtio_reports_down_then_up_once_each_and_nothing_otherwise() {
    let dev = FakeVirtio::start(fake_virtio::Behaviour::default());
    let mut nic = virtio(&dev);
    assert_eq!(nic.link_event(), None);
    traffic(&mut nic, 40);
    assert_eq!(nic.link_event(), None);
    down_then_up(&mut nic, &|up| dev.set_link(up), VIRTIO_UP);
    down_then_up(&mut nic, &|up| dev.set_link(up), VIRTIO_UP);
}

#[test]
fn virtio_opened_with_the_link_down_reports_it_coming_up() {
    let dev = FakeVirtio::start(fake_virtio::Behaviour {
        link_up: false,
        ..fake_virtio::Behaviour::default()
    });
    let mut nic = virtio(&dev);
    assert!(!nic.link().up);
    assert_eq!(nic.link_event(), None);
    dev.set_link(true);
    assert_eq!(nic.link_event(), Some(VIRTIO_UP));
}
