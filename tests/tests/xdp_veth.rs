//! AF_XDP on the host: a veth pair in a network namespace this test creates (and
//! removes), an [`XdpPort`] on one end, a raw packet socket on the other. Frames sent
//! through the port arrive on the peer byte for byte and in order, frames sent from the
//! peer arrive through the port the same way, and once the port is dropped no XDP
//! program is left on the interface. Needs root (the machines this project runs on are).

use std::time::{Duration, Instant};
use zcnic::xdp::XdpPort;
use zcnic::{Config, Nic};
use zcnic_tests::conformance::ETHERTYPE;
use zcnic_tests::veth::{ip, receive_within, PacketSocket, VethPair};

/// Frame `i`: broadcast, ETHERTYPE, the index, then a pattern; 60 to 1514 bytes.
fn frame(i: usize) -> Vec<u8> {
    let len = 60 + (i * 97) % (1514 - 60);
    let mut f = vec![0xffu8; 6];
    f.extend([0x02, 0, 0, 0, 0, 1]);
    f.extend(ETHERTYPE.to_be_bytes());
    f.extend((i as u32).to_be_bytes());
    f.extend((f.len()..len).map(|k| (k * 7 + i) as u8));
    f
}

/// `n` frames received on `port` within 5 s (fails with fewer).
fn receive(port: &mut XdpPort, n: usize) -> Vec<zcnic::Packet> {
    let got = receive_within(port, n, Duration::from_secs(5));
    assert_eq!(got.len(), n, "frames received through AF_XDP");
    got
}

#[test]
fn frames_cross_a_veth_pair_both_ways_byte_exact() {
    let ns = VethPair::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_peer();
            let peer = PacketSocket::open("veth1");
            ns.enter_port();
            let cfg = Config {
                promisc: true,
                ..Config::default()
            };
            let mut port = XdpPort::open("veth0", &cfg).expect("open xdp:veth0");
            assert!(ns.port_link().contains("PROMISC"), "promiscuous while open");
            assert!(
                ns.port_link().contains("xdp"),
                "program attached: {}",
                ns.port_link()
            );
            assert_eq!(port.name(), "xdp:veth0");
            // veth has XDP in its driver; AF_XDP zero copy it has not.
            assert_eq!(port.driver(), "af_xdp (copy, native XDP)");
            // Port -> peer.
            const N: usize = 300;
            let mut sent = 0;
            while sent < N {
                let mut batch: Vec<_> = (sent..N.min(sent + 32))
                    .map(|i| port.pool().alloc_copy(&frame(i)).expect("pool"))
                    .collect();
                let want = batch.len();
                let took = port.tx_batch(&mut batch);
                sent += took;
                assert!(took == want || port.flush(), "ring stuck");
            }
            assert!(port.flush(), "every frame completed");
            let until = Instant::now() + Duration::from_secs(5);
            for i in 0..N {
                let got = peer
                    .recv(until)
                    .unwrap_or_else(|| panic!("frame {i} never reached veth1"));
                assert_eq!(got, frame(i), "frame {i} as the peer saw it");
            }
            let st = port.stats();
            assert_eq!((st.tx_packets, st.tx_errors), (N as u64, 0));
            // Peer -> port.
            for i in 0..N {
                peer.send(&frame(1000 + i));
            }
            let got = receive(&mut port, N);
            for (i, p) in got.iter().enumerate() {
                assert_eq!(
                    p.data(),
                    &frame(1000 + i)[..],
                    "frame {i} as the port saw it"
                );
            }
            let st = port.stats();
            assert_eq!((st.rx_errors, st.hw("bad_kernel_index")), (0, Some(0)));
            drop(got);
            drop(port);
            if let Err(link) = ns.wait_detached() {
                panic!("program left behind: {link}");
            }
            let after = ns.port_link();
            assert!(
                !after.contains("PROMISC"),
                "promiscuous mode left on: {after}"
            );
            // A second open works: nothing stale blocks it.
            let again = XdpPort::open("veth0", &Config::default()).expect("open again");
            drop(again);
        });
    });
}

/// The pool is the UMEM: each frame received is a buffer of the port's pool that the
/// kernel wrote (its bytes inside the pool's memory), sent back out from where it is
/// (the peer gets it byte for byte), and after the close every buffer is back in the pool
/// once (none lost in a ring, none freed twice).
#[test]
fn received_frames_are_pool_buffers_and_go_back_out_uncopied() {
    let ns = VethPair::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_peer();
            let peer = PacketSocket::open("veth1");
            ns.enter_port();
            let mut port = XdpPort::open("veth0", &Config::default()).expect("open");
            let (pool, umem) = (port.pool().clone(), port.umem());
            const N: usize = 200;
            for i in 0..N {
                peer.send(&frame(2000 + i));
            }
            let mut got = receive(&mut port, N);
            for (i, p) in got.iter().enumerate() {
                assert_eq!(p.data(), &frame(2000 + i)[..]);
                assert!(p.is_from(&pool), "frame {i} is a buffer of the port's pool");
                let at = p.data().as_ptr() as usize;
                assert!(
                    umem.contains(&at) && umem.contains(&(at + p.len() - 1)),
                    "frame {i} at {at:#x} is inside the UMEM {umem:x?}"
                );
            }
            // Straight back out: the same buffers, no copy on the way.
            while !got.is_empty() {
                let want = got.len();
                let took = port.tx_batch(&mut got);
                assert!(took == want || port.flush(), "ring stuck");
            }
            assert!(port.flush(), "every frame completed");
            let until = Instant::now() + Duration::from_secs(5);
            for i in 0..N {
                let back = peer
                    .recv(until)
                    .unwrap_or_else(|| panic!("frame {i} not back"));
                assert_eq!(back, frame(2000 + i), "frame {i} as it came back");
            }
            let st = port.stats();
            assert_eq!((st.tx_packets, st.tx_errors), (N as u64, 0));
            assert_eq!(st.hw("bad_kernel_index"), Some(0));
            drop(port);
            assert_eq!(
                pool.free_count(),
                pool.capacity(),
                "every buffer back, once"
            );
        });
    });
}

#[test]
fn bad_interfaces_are_one_line_errors() {
    let e = zcnic::open("xdp:zcnosuch0")
        .err()
        .expect("no such interface");
    let text = e.to_string();
    assert!(
        text.contains("zcnosuch0") && text.contains("ip link"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);
    let e = zcnic::open("xdp:").err().expect("empty name").to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn a_down_interface_is_a_one_line_error() {
    let ns = VethPair::new();
    ip(&format!("-n {} link set veth0 down", ns.port_ns));
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_port();
            let e = zcnic::open("xdp:veth0").err().expect("down").to_string();
            assert!(
                e.contains("down") && e.contains("ip link set veth0 up"),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        });
    });
}

/// The kernel's own traffic: a ping across the pair works before the port opens, goes
/// to the socket while it is open (the program redirects every frame of queue 0), and
/// works again once it closes — the interface is the kernel's again, nothing stays
/// attached. Twice, so a port opened after a closed one lets go just the same.
#[test]
fn the_kernel_has_its_interface_back_after_close() {
    let ns = VethPair::new();
    ns.address();
    assert!(ns.ping_port(), "ping before any port opened");
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_port();
            for round in 0..2 {
                let mut port = XdpPort::open("veth0", &Config::default()).expect("open");
                assert!(
                    !ns.ping_port(),
                    "round {round}: ping answered by the kernel while the socket has queue 0"
                );
                let mut got = Vec::with_capacity(64);
                port.rx_batch(&mut got, 64);
                assert!(
                    got.iter()
                        .any(|p| p.data()[12..14] == [8, 6] || p.data()[12..14] == [8, 0]),
                    "round {round}: the ping's ARP or IPv4 frames reached the socket"
                );
                drop(got);
                drop(port);
                if let Err(link) = ns.wait_detached() {
                    panic!("round {round}: program left behind: {link}");
                }
                assert!(ns.ping_port(), "round {round}: ping after close");
            }
        });
    });
}

/// `rx_wait` sleeps on the socket: it times out on a quiet wire, wakes for a frame the
/// peer sends while it sleeps (long before its timeout), and the frame is there.
#[test]
fn rx_wait_sleeps_on_the_socket_until_a_frame_comes() {
    let ns = VethPair::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_peer();
            let peer = PacketSocket::open("veth1");
            ns.enter_port();
            let mut port = XdpPort::open("veth0", &Config::default()).expect("open");
            assert!(
                port.rx_interrupt_fd().is_ok(),
                "the socket is the descriptor"
            );
            let t = Instant::now();
            assert!(
                !port.rx_wait(Duration::from_millis(100)).unwrap(),
                "quiet wire"
            );
            assert!(t.elapsed() >= Duration::from_millis(90), "it slept");
            std::thread::scope(|s2| {
                s2.spawn(|| {
                    std::thread::sleep(Duration::from_millis(200));
                    peer.send(&frame(7));
                });
                let t = Instant::now();
                assert!(port.rx_wait(Duration::from_secs(10)).unwrap(), "woken");
                let slept = t.elapsed();
                assert!(
                    slept >= Duration::from_millis(150) && slept < Duration::from_secs(5),
                    "slept {slept:?}: until the frame, not the timeout"
                );
            });
            let mut got = Vec::with_capacity(8);
            port.rx_batch(&mut got, 8);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].data(), &frame(7)[..]);
            // A frame already there: enabling says so instead of sleeping.
            peer.send(&frame(8));
            let end = Instant::now() + Duration::from_secs(5);
            while !port.enable_rx_interrupt().unwrap() {
                assert!(Instant::now() < end, "the frame never showed");
                std::thread::sleep(Duration::from_millis(1));
            }
            port.disable_rx_interrupt().unwrap();
        });
    });
}

/// The interrupt fd is not the socket: a duplicate of it kept past the close does not
/// keep the socket bound (with pool buffers in its fill ring the kernel could still
/// write after the pool handed them out again), so the queue opens again at once.
#[test]
fn regression_a_duplicate_of_the_interrupt_fd_does_not_keep_the_socket() {
    let ns = VethPair::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_port();
            let port = XdpPort::open("veth0", &Config::default()).expect("open");
            let dup = port
                .rx_interrupt_fd()
                .unwrap()
                .try_clone_to_owned()
                .unwrap();
            let pool = port.pool().clone();
            drop(port);
            assert_eq!(pool.free_count(), pool.capacity());
            let again = XdpPort::open("veth0", &Config::default())
                .expect("queue 0 free again although a duplicate of the fd lives");
            drop((again, dup));
        });
    });
}
