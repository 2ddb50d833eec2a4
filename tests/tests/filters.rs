//! Receive filters (multicast groups, all-multicast, extra unicast addresses) against fake
//! devices whose filters are modelled on the datasheets and QEMU (`fake_filter`), not on
//! the driver: with promiscuity off, a joined group arrives and a group of another hash
//! bit does not; all-multicast lets every group in; a group leaves cleanly although
//! another joined group shares its hash bit; virtio-net's MAC table goes out byte for byte
//! as virtio 1.1 §5.1.6.5.2 lays it out, and QEMU's parsing of it takes it.

use std::time::{Duration, Instant};
use zcnic::filter::{mta_hash, FilterError};
use zcnic::virtio::{negotiate, DmaMem, VirtioNet};
use zcnic::{Config, Error, Nic, Packet, PciAddr, Port, RxQueue};
use zcnic_descriptors::virtio::SplitQueue;
use zcnic_tests::datapath::SinkNic;
use zcnic_tests::{fake_e1000, fake_igb, fake_virtio};

const TIMEOUT: Duration = Duration::from_secs(20);
/// IPv6 solicited-node group of ::1 (hash 0x010: MTA[0] bit 16).
const JOINED: [u8; 6] = [0x33, 0x33, 0xff, 0x00, 0x00, 0x01];
/// Another solicited-node group, of another hash bit (0x020: MTA[1] bit 0).
const OTHER: [u8; 6] = [0x33, 0x33, 0xff, 0x00, 0x00, 0x02];
/// IPv4 all-hosts: the same hash bit as [`JOINED`].
const SAME_BIT: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
const BROADCAST: [u8; 6] = [0xff; 6];

fn addr() -> PciAddr {
    "0000:00:02.0".parse().unwrap()
}

fn config() -> Config {
    Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 1024,
        link_timeout: Duration::from_secs(2),
        reset_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

/// A frame to `dst` whose payload starts with `tag`.
fn frame(dst: [u8; 6], tag: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[14..18].copy_from_slice(&tag.to_le_bytes());
    f
}

/// One test's wire: a port, and a way to put frames on its wire (through the device's
/// filter) and count what the filter turned away.
struct Wire<'a> {
    nic: &'a mut dyn Nic,
    send: &'a dyn Fn(Vec<u8>),
    filtered: &'a dyn Fn() -> u64,
    tag: u32,
}

impl Wire<'_> {
    /// Sends a frame to each of `dsts`, then a broadcast one that every filter admits, and
    /// receives up to that last one: true for each of `dsts` that arrived. What the filter
    /// turned away is counted by the device, so the count must make up the rest.
    fn arrive(&mut self, dsts: &[[u8; 6]]) -> Vec<bool> {
        let first = self.tag;
        let before = (self.filtered)();
        for &d in dsts.iter().chain([&BROADCAST]) {
            (self.send)(frame(d, self.tag));
            self.tag += 1;
        }
        let last = self.tag - 1;
        let (mut got, start) = (Vec::new(), Instant::now());
        let mut tags = Vec::new();
        while !tags.contains(&last) {
            assert!(start.elapsed() < TIMEOUT, "the broadcast frame never came");
            self.nic.rx_batch(&mut got, 32);
            tags.extend(
                got.drain(..)
                    .map(|p| u32::from_le_bytes(p.data()[14..18].try_into().unwrap())),
            );
        }
        let seen: Vec<bool> = (first..last).map(|t| tags.contains(&t)).collect();
        let turned_away = seen.iter().filter(|s| !**s).count() as u64;
        assert_eq!((self.filtered)() - before, turned_away, "{seen:?}");
        seen
    }
}

/// The filter contract on any port whose device hashes multicast into an MTA.
fn hashed_groups(w: &mut Wire) {
    assert_eq!(mta_hash(JOINED), mta_hash(SAME_BIT));
    assert_ne!(mta_hash(JOINED) >> 5, mta_hash(OTHER) >> 5);
    assert_eq!(
        w.arrive(&[JOINED, OTHER]),
        [false, false],
        "no group joined: multicast stays out"
    );
    w.nic.add_multicast(JOINED).unwrap();
    assert_eq!(w.arrive(&[JOINED, OTHER]), [true, false]);
    w.nic.set_allmulti(true).unwrap();
    assert_eq!(w.arrive(&[JOINED, OTHER]), [true, true], "all-multicast");
    w.nic.set_allmulti(false).unwrap();
    assert_eq!(w.arrive(&[JOINED, OTHER]), [true, false]);
    // Two groups on one bit: leaving one keeps the bit for the other (which lets the
    // first in too: an imperfect filter, as the datasheet's is).
    w.nic.add_multicast(SAME_BIT).unwrap();
    w.nic.remove_multicast(JOINED).unwrap();
    assert_eq!(w.arrive(&[SAME_BIT, OTHER]), [true, false]);
    w.nic.remove_multicast(SAME_BIT).unwrap();
    assert_eq!(w.arrive(&[SAME_BIT, JOINED]), [false, false], "bit cleared");
    // Joins count: twice joined, once left, still joined.
    w.nic.add_multicast(OTHER).unwrap();
    w.nic.add_multicast(OTHER).unwrap();
    w.nic.remove_multicast(OTHER).unwrap();
    assert_eq!(w.arrive(&[OTHER]), [true]);
    w.nic.remove_multicast(OTHER).unwrap();
    assert_eq!(w.arrive(&[OTHER]), [false]);
    // An extra unicast address, then gone.
    let extra = [0x02, 0, 0, 0, 0, 0x42];
    assert_eq!(w.arrive(&[extra]), [false]);
    w.nic.add_unicast(extra).unwrap();
    assert_eq!(w.arrive(&[extra]), [true]);
    w.nic.remove_unicast(extra).unwrap();
    assert_eq!(w.arrive(&[extra]), [false]);
}

/// Bad requests are errors that say what was wrong, and change nothing.
fn refusals(nic: &mut dyn Nic) {
    let unicast = [0x52, 0x54, 0, 0, 0, 1];
    let err = nic.add_multicast(unicast).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Filter {
                source: FilterError::NotMulticast(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("52:54:00:00:00:01 is not a multicast"));
    let err = nic.remove_multicast(OTHER).unwrap_err();
    assert!(err.to_string().contains("never added"), "{err}");
    let err = nic.add_unicast(JOINED).unwrap_err();
    assert!(err.to_string().contains("is a multicast address"), "{err}");
}

#[test]
fn e1000_joined_groups_arrive_and_others_stay_out() {
    use fake_e1000::{Behaviour, FakeE1000, Inject};
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = zcnic::e1000::E1000::new(dev.bar.clone(), &dev.dma, addr(), &config()).unwrap();
    refusals(&mut nic);
    let send = |f| dev.inject(Inject::Wire(f));
    let filtered = || dev.filtered.load(std::sync::atomic::Ordering::Acquire);
    let mut w = Wire {
        nic: &mut nic,
        send: &send,
        filtered: &filtered,
        tag: 0,
    };
    hashed_groups(&mut w);
    assert_eq!(w.arrive(&[fake_e1000::MAC]), [true], "its own MAC, as ever");
}

#[test]
fn e1000_has_fifteen_extra_unicast_addresses() {
    use fake_e1000::{Behaviour, FakeE1000};
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = zcnic::e1000::E1000::new(dev.bar.clone(), &dev.dma, addr(), &config()).unwrap();
    for n in 0..15 {
        nic.add_unicast([2, 0, 0, 0, 1, n]).unwrap();
    }
    let err = nic.add_unicast([2, 0, 0, 0, 1, 15]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Filter {
                source: FilterError::TableFull(15),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn igb_joined_groups_arrive_and_others_stay_out() {
    use fake_igb::{FakeIgb, Inject};
    let dev = FakeIgb::start();
    let mut nic = zcnic::igb::Igb::new(dev.bar.clone(), &dev.dma, addr(), &config()).unwrap();
    refusals(&mut nic);
    let send = |f| dev.inject(Inject::Wire(f));
    let filtered = || dev.filtered.load(std::sync::atomic::Ordering::Acquire);
    let mut w = Wire {
        nic: &mut nic,
        send: &send,
        filtered: &filtered,
        tag: 0,
    };
    hashed_groups(&mut w);
    // The 82576's second bank of receive addresses (entries 16–23, at 0x54E0).
    let extra: Vec<[u8; 6]> = (0..23).map(|n| [2, 0, 0, 0, 2, n]).collect();
    for &m in &extra {
        w.nic.add_unicast(m).unwrap();
    }
    assert!(w.nic.add_unicast([2, 0, 0, 0, 2, 99]).is_err(), "23 is all");
    assert_eq!(w.arrive(&[extra[0], extra[22]]), [true, true]);
}

type Split = SplitQueue<DmaMem>;

fn virtio(ctrl: bool) -> (fake_virtio::FakeVirtio, VirtioNet<Split>) {
    let dev = fake_virtio::FakeVirtio::start(fake_virtio::Behaviour {
        ctrl,
        ..fake_virtio::Behaviour::default()
    });
    let t = dev.transport();
    let features = negotiate(&t, &addr(), &config(), false).unwrap();
    let nic = VirtioNet::<Split>::new(Box::new(t), features, &dev.dma, addr(), &config()).unwrap();
    (dev, nic)
}

#[test]
fn virtio_sends_the_mac_table_as_the_spec_lays_it_out() {
    use fake_virtio::{Command, Inject};
    let (dev, mut nic) = virtio(true);
    refusals(&mut nic);
    nic.add_multicast(JOINED).unwrap();
    nic.add_unicast([0x02, 0, 0, 0, 0, 0x42]).unwrap();
    nic.add_multicast(SAME_BIT).unwrap();
    let mut data = vec![1, 0, 0, 0, 0x02, 0, 0, 0, 0, 0x42, 2, 0, 0, 0];
    data.extend(JOINED);
    data.extend(SAME_BIT);
    let last = dev.commands().last().cloned().unwrap();
    let want = Command {
        class: 1,
        cmd: 0,
        data,
        ack: 0,
    };
    assert_eq!(last, want, "le32 count + unicast, le32 count + multicast");
    let f = dev.rx_filter();
    assert_eq!(f.multicast, [JOINED, SAME_BIT], "as QEMU parses it");
    assert_eq!(f.unicast, [[0x02, 0, 0, 0, 0, 0x42]]);
    let n = dev.commands().len();
    nic.set_allmulti(true).unwrap();
    nic.set_allmulti(true).unwrap();
    assert_eq!(
        dev.commands().len(),
        n + 1,
        "the same mode again sends nothing"
    );
    assert_eq!(dev.commands()[n].data, [1]);
    assert!(dev.rx_filter().allmulti);
    nic.set_allmulti(false).unwrap();
    nic.remove_multicast(JOINED).unwrap();
    nic.remove_multicast(SAME_BIT).unwrap();
    nic.remove_unicast([0x02, 0, 0, 0, 0, 0x42]).unwrap();
    assert_eq!(
        dev.commands().last().unwrap().data,
        [0; 8],
        "both tables empty"
    );

    // The device's filter follows: exact matches, so a group of the same MTA hash as a
    // joined one stays out here.
    nic.add_multicast(JOINED).unwrap();
    let send = |f| dev.inject(Inject::Frame(f));
    let filtered = || dev.counts().filtered;
    let mut w = Wire {
        nic: &mut nic,
        send: &send,
        filtered: &filtered,
        tag: 0,
    };
    assert_eq!(w.arrive(&[JOINED, OTHER, SAME_BIT]), [true, false, false]);
    w.nic.set_allmulti(true).unwrap();
    assert_eq!(w.arrive(&[JOINED, OTHER, SAME_BIT]), [true, true, true]);
    w.nic.set_allmulti(false).unwrap();
    w.nic.remove_multicast(JOINED).unwrap();
    assert_eq!(w.arrive(&[JOINED]), [false]);
}

/// Without VIRTIO_NET_F_CTRL_RX the device has no filter and receives every frame: each
/// filter call succeeds with nothing to send, and the lists still count joins.
#[test]
fn virtio_without_a_receive_filter_takes_every_group_already() {
    use fake_virtio::Inject;
    let (dev, mut nic) = virtio(false);
    nic.add_multicast(JOINED).unwrap();
    nic.set_allmulti(false).unwrap();
    assert!(dev.commands().is_empty());
    let send = |f| dev.inject(Inject::Frame(f));
    let filtered = || dev.counts().filtered;
    let mut w = Wire {
        nic: &mut nic,
        send: &send,
        filtered: &filtered,
        tag: 0,
    };
    assert_eq!(w.arrive(&[JOINED, OTHER]), [true, true]);
    w.nic.remove_multicast(JOINED).unwrap();
    assert!(w.nic.remove_multicast(JOINED).is_err(), "left once already");
}

#[test]
fn a_port_without_filters_says_so() {
    let mut nic = SinkNic::new();
    let err = nic.add_multicast(JOINED).unwrap_err();
    assert!(err.to_string().contains("has no multicast filter"), "{err}");
    assert!(nic.set_allmulti(true).is_err());
}

/// Receives on `rx` until the frame tagged `last` came; the tags seen.
fn tags_until(rx: &mut dyn RxQueue, last: u32) -> Vec<u32> {
    let (mut got, mut tags, start) = (Vec::new(), Vec::new(), Instant::now());
    while !tags.contains(&last) {
        assert!(start.elapsed() < TIMEOUT, "frame {last} never came");
        rx.rx_batch(&mut got, 32);
        tags.extend(
            got.drain(..)
                .map(|p: Packet| u32::from_le_bytes(p.data()[14..18].try_into().unwrap())),
        );
    }
    tags
}

/// The multi-queue `Port` carries the same filters: joined through `dyn Port`, a group's
/// frames reach a queue (frames of no hashed type go to queue 0), another group's do not.
#[test]
fn a_multi_queue_port_joins_groups_for_all_its_queues() {
    // igb, two queue pairs.
    let dev = fake_igb::FakeIgb::start();
    let cfg = Config {
        queues: 2,
        ..config()
    };
    let (mut port, mut queues) =
        zcnic::igb::IgbPort::new(dev.bar.clone(), &dev.dma, addr(), &cfg).expect("driver comes up");
    let port: &mut dyn Port = &mut port;
    port.add_multicast(JOINED).unwrap();
    for (tag, dst) in [(0, OTHER), (1, JOINED), (2, BROADCAST)] {
        dev.inject(fake_igb::Inject::Wire(frame(dst, tag)));
    }
    assert_eq!(tags_until(&mut queues[0].0, 2), [1, 2]);
    port.set_allmulti(true).unwrap();
    dev.inject(fake_igb::Inject::Wire(frame(OTHER, 3)));
    assert_eq!(tags_until(&mut queues[0].0, 3), [3]);

    // virtio-net, two queue pairs.
    let dev = fake_virtio::FakeVirtio::start(fake_virtio::Behaviour {
        ctrl: true,
        pairs: 2,
        ..fake_virtio::Behaviour::default()
    });
    let t = dev.transport();
    let features = negotiate(&t, &addr(), &cfg, false).unwrap();
    let (mut port, mut queues) =
        zcnic::virtio::VirtioPort::<Split>::new(Box::new(t), features, &dev.dma, addr(), &cfg)
            .unwrap();
    let port: &mut dyn Port = &mut port;
    port.add_multicast(JOINED).unwrap();
    for (tag, dst) in [(0, OTHER), (1, JOINED), (2, BROADCAST)] {
        dev.inject_on(1, fake_virtio::Inject::Frame(frame(dst, tag)));
    }
    assert_eq!(tags_until(&mut queues[1].0, 2), [1, 2]);
    assert_eq!(dev.rx_filter().multicast, [JOINED]);
}
