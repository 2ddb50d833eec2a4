//! The conformance suite ([`zcnic_tests::conformance`]) against zcnic's own drivers on
//! the fake devices: the e1000, virtio-net (split and packed rings) and the igb, each
//! the same tests as AF_XDP runs in `conformance_xdp`.

use std::time::Duration;
use zcnic::{Nic, PciAddr};
use zcnic_tests::conformance::{Test, Wire, ETHERTYPE};

/// The suite's frames among `all`, from `*seen` on; moves `*seen` past them.
fn new_frames(all: &[Vec<u8>], seen: &mut usize) -> Vec<Vec<u8>> {
    let out = all[(*seen).min(all.len())..]
        .iter()
        .filter(|f| f.len() >= 14 && f[12..14] == ETHERTYPE.to_be_bytes())
        .cloned()
        .collect();
    *seen = all.len();
    out
}

mod e1000 {
    use super::*;
    use zcnic::e1000::{Config, E1000};
    use zcnic_tests::fake_e1000::{Behaviour, FakeE1000, Inject};

    struct Fake(FakeE1000, usize);

    impl Wire for Fake {
        fn open(&mut self) -> Box<dyn Nic> {
            let cfg = Config {
                rx_ring: 512,
                tx_ring: 512,
                pool: 2048,
                link_timeout: Duration::from_millis(200),
                ..Config::default()
            };
            let addr: PciAddr = "0000:00:02.0".parse().unwrap();
            Box::new(E1000::new(self.0.bar.clone(), &self.0.dma, addr, &cfg).expect("e1000 up"))
        }
        fn inject(&mut self, frame: &[u8]) {
            self.0.inject(Inject::Frame(frame.to_vec()));
        }
        fn sent(&mut self) -> Vec<Vec<u8>> {
            new_frames(&self.0.sent.lock().unwrap(), &mut self.1)
        }
    }

    fn with(test: Test) {
        test(&mut Fake(FakeE1000::start(Behaviour::default()), 0));
    }

    zcnic_tests::conformance_tests!(with);
}

mod virtio_split {
    use super::*;
    use zcnic::virtio::{negotiate, DmaMem, QueueKind, VirtioNet};
    use zcnic::Config;
    use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
    use zcnic_tests::fake_virtio::{Behaviour, FakeVirtio, Inject};

    pub struct Fake<Q>(FakeVirtio, usize, std::marker::PhantomData<Q>);

    impl<Q: QueueKind + 'static> Wire for Fake<Q>
    where
        VirtioNet<Q>: Nic,
    {
        fn open(&mut self) -> Box<dyn Nic> {
            let cfg = Config {
                rx_ring: 256,
                tx_ring: 256,
                pool: 1024,
                reset_timeout: Duration::from_millis(200),
                ..Config::default()
            };
            let addr: PciAddr = "0000:00:03.0".parse().unwrap();
            let t = self.0.transport();
            let features = negotiate(&t, &addr, &cfg, Q::PACKED).expect("features");
            Box::new(
                VirtioNet::<Q>::new(Box::new(t), features, &self.0.dma, addr, &cfg)
                    .expect("virtio-net up"),
            )
        }
        fn inject(&mut self, frame: &[u8]) {
            self.0.inject(Inject::Frame(frame.to_vec()));
        }
        fn sent(&mut self) -> Vec<Vec<u8>> {
            new_frames(&self.0.sent(), &mut self.1)
        }
    }

    pub fn with_kind<Q: QueueKind + 'static>(test: Test)
    where
        VirtioNet<Q>: Nic,
    {
        let dev = FakeVirtio::start(Behaviour {
            packed: Q::PACKED,
            ..Behaviour::default()
        });
        test(&mut Fake::<Q>(dev, 0, std::marker::PhantomData));
    }

    fn with(test: Test) {
        with_kind::<SplitQueue<DmaMem>>(test);
    }

    pub fn with_packed(test: Test) {
        with_kind::<PackedQueue<DmaMem>>(test);
    }

    zcnic_tests::conformance_tests!(with);
}

mod virtio_packed {
    use super::virtio_split::with_packed;
    zcnic_tests::conformance_tests!(with_packed);
}

mod igb {
    use super::*;
    use zcnic::igb::{Config, Igb};
    use zcnic_tests::fake_igb::{FakeIgb, Inject};

    struct Fake(FakeIgb, usize);

    impl Wire for Fake {
        fn open(&mut self) -> Box<dyn Nic> {
            let cfg = Config {
                rx_ring: 512,
                tx_ring: 512,
                pool: 2048,
                link_timeout: Duration::from_secs(2),
                ..Config::default()
            };
            let addr: PciAddr = "0000:00:02.0".parse().unwrap();
            Box::new(Igb::new(self.0.bar.clone(), &self.0.dma, addr, &cfg).expect("igb up"))
        }
        fn inject(&mut self, frame: &[u8]) {
            self.0.inject(Inject::Frame(frame.to_vec()));
        }
        fn sent(&mut self) -> Vec<Vec<u8>> {
            new_frames(&self.0.sent.lock().unwrap(), &mut self.1)
        }
    }

    fn with(test: Test) {
        test(&mut Fake(FakeIgb::start(), 0));
    }

    zcnic_tests::conformance_tests!(with);
}
