//! The conformance suite ([`zcnic_tests::conformance`]) against AF_XDP: an
//! [`XdpPort`] on `veth0`, a raw packet socket on `veth1` in a namespace of its own
//! (see [`zcnic_tests::veth`]); the same tests `conformance_fake` runs on zcnic's own
//! drivers. Needs root, which the machines this project runs on give.

use zcnic::xdp::XdpPort;
use zcnic::{Config, Nic};
use zcnic_tests::conformance::{Test, Wire};
use zcnic_tests::veth::{PacketSocket, VethPair};

struct Veth(PacketSocket);

impl Wire for Veth {
    fn open(&mut self) -> Box<dyn Nic> {
        let cfg = Config {
            pool: 2048,
            ..Config::default()
        };
        Box::new(XdpPort::open("veth0", &cfg).expect("open xdp:veth0"))
    }
    fn inject(&mut self, frame: &[u8]) {
        self.0.send(frame);
    }
    fn sent(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.0.try_recv()).collect()
    }
}

fn with(test: Test) {
    let pair = VethPair::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            pair.enter_peer();
            let peer = PacketSocket::open("veth1");
            pair.enter_port();
            test(&mut Veth(peer));
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
    if let Err(link) = pair.wait_detached() {
        panic!("program left behind: {link}");
    }
}

zcnic_tests::conformance_tests!(with);
