//! AF_XDP with several queues on the host: a veth pair of four queues each way across
//! two namespaces ([`zcnic_tests::veth`]), `zcnic::open_port("xdp:veth0")` with four
//! queues (one socket each, each at its queue's key of the map). Each queue's transmit
//! handle puts its own frames on the wire; frames of many flows sent from the peer
//! spread over the queues by the kernel's hash, and every one arrives exactly once,
//! byte for byte, on some queue, counted per queue. All queues share one pool, the UMEM
//! of every socket: each frame received goes back out on the next queue, uncopied, and
//! after the close every buffer is back in the pool. Needs root.

use etherparse::PacketBuilder;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::{Config, Packet};
use zcnic_tests::conformance::{frame, ETHERTYPE};
use zcnic_tests::veth::{PacketSocket, VethPair};

const QUEUES: u16 = 4;

/// Flow `i`: IPv4 UDP from port 1024 + i, its index in the payload, 60..~1000 bytes.
fn flow(i: u32) -> Vec<u8> {
    let payload: Vec<u8> = i
        .to_be_bytes()
        .into_iter()
        .chain((0..(i as usize * 37) % 900).map(|k| (k as u32 ^ i) as u8))
        .collect();
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [0xff; 6])
        .ipv4([10, 77, 0, 2], [10, 77, 0, 1], 64)
        .udp(1024 + i as u16, 9);
    let mut f = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut f, &payload).unwrap();
    f.resize(f.len().max(60), 0);
    f
}

/// The flow index a received frame carries (after 14 + 20 + 8 header bytes).
fn index(p: &Packet) -> u32 {
    let d = p.data();
    u32::from_be_bytes([d[42], d[43], d[44], d[45]])
}

#[test]
fn four_queues_each_send_and_receive_their_share() {
    let pair = VethPair::with_queues(u32::from(QUEUES));
    std::thread::scope(|s| {
        s.spawn(|| {
            pair.enter_peer();
            let peer = PacketSocket::open("veth1");
            pair.enter_port();
            let cfg = Config {
                queues: QUEUES,
                pool: 4096,
                ..Config::default()
            };
            let (mut port, mut queues) = zcnic::open_port("xdp:veth0", &cfg).expect("open");
            assert_eq!((port.queues(), queues.len()), (QUEUES, usize::from(QUEUES)));
            assert!(
                pair.port_link().contains("prog/xdp"),
                "{}",
                pair.port_link()
            );
            // Each queue sends frames tagged with its index, 50 each.
            for q in &mut queues {
                let tag = q.tx.queue() as u8;
                let pool = q.tx.pool().clone();
                let mut batch: Vec<_> = (0..50)
                    .map(|i| {
                        pool.alloc_copy(&frame(tag, i, 60 + i as usize * 9))
                            .unwrap()
                    })
                    .collect();
                let end = Instant::now() + Duration::from_secs(5);
                while !batch.is_empty() {
                    assert!(Instant::now() < end, "queue {tag} stuck");
                    q.tx.tx_batch(&mut batch);
                }
                assert!(q.tx.flush(), "queue {tag} flushed");
            }
            let mut seen: HashMap<u8, Vec<Vec<u8>>> = HashMap::new();
            let until = Instant::now() + Duration::from_secs(5);
            for _ in 0..200 {
                let f = peer.recv(until).expect("a frame from the port");
                seen.entry(f[14]).or_default().push(f);
            }
            for q in 0..QUEUES as u8 {
                let want: Vec<_> = (0..50).map(|i| frame(q, i, 60 + i as usize * 9)).collect();
                assert_eq!(seen.get(&q), Some(&want), "queue {q}'s frames, in order");
            }
            // Many flows from the peer: the kernel's flow hash picks veth1's transmit
            // queue, which is veth0's receive queue.
            const N: u32 = 400;
            for i in 0..N {
                peer.send(&flow(i));
            }
            let mut got: Vec<Option<u16>> = vec![None; N as usize];
            let mut per_queue = [0u64; QUEUES as usize];
            let end = Instant::now() + Duration::from_secs(10);
            let mut b = Vec::with_capacity(64);
            let mut fwd: Vec<Vec<Packet>> = (0..QUEUES).map(|_| Vec::new()).collect();
            while per_queue.iter().sum::<u64>() < u64::from(N) {
                assert!(Instant::now() < end, "received {per_queue:?} of {N}");
                for q in &mut queues {
                    q.rx.rx_batch(&mut b, 64);
                    for mut p in b.drain(..) {
                        let i = index(&p);
                        assert_eq!(p.data(), &flow(i)[..], "flow {i} byte for byte");
                        let slot = &mut got[i as usize];
                        assert_eq!(*slot, None, "flow {i} twice");
                        *slot = Some(q.rx.queue());
                        per_queue[usize::from(q.rx.queue())] += 1;
                        // Edited in place to the type the peer's socket takes.
                        p.data_mut()[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
                        fwd[usize::from(q.rx.queue())].push(p);
                    }
                }
            }
            assert!(
                per_queue.iter().filter(|n| **n > 0).count() >= 2,
                "the flows spread over the queues: {per_queue:?}"
            );
            let by_queue = port.queue_stats();
            for (q, st) in by_queue.iter().enumerate() {
                assert_eq!(st.rx_packets, per_queue[q], "queue {q}'s rx counter");
                assert_eq!(st.tx_packets, 50, "queue {q}'s tx counter");
            }
            let total = port.stats();
            assert_eq!((total.rx_packets, total.tx_packets), (u64::from(N), 200));
            assert_eq!(total.hw("bad_kernel_index"), Some(0));
            // One pool for every queue: what queue q received goes out on queue q + 1
            // from where it is (its type edited in place), and reaches the peer byte
            // for byte, once.
            let pool = queues[0].rx.pool().clone();
            assert!(queues
                .iter()
                .all(|q| Arc::ptr_eq(q.rx.pool(), &pool) && Arc::ptr_eq(q.tx.pool(), &pool)));
            for (from, pkts) in fwd.iter_mut().enumerate() {
                let q = &mut queues[(from + 1) % usize::from(QUEUES)];
                let end = Instant::now() + Duration::from_secs(5);
                while !pkts.is_empty() {
                    assert!(Instant::now() < end, "forwarding from queue {from} stuck");
                    q.tx.tx_batch(pkts);
                }
                assert!(q.tx.flush(), "forwarded from queue {from}");
            }
            let mut back = vec![false; N as usize];
            let until = Instant::now() + Duration::from_secs(5);
            for n in 0..N {
                let f = peer
                    .recv(until)
                    .unwrap_or_else(|| panic!("{n} of {N} forwarded frames came back"));
                let i = u32::from_be_bytes([f[42], f[43], f[44], f[45]]);
                let mut want = flow(i);
                want[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
                assert_eq!(f, want, "flow {i} forwarded byte for byte");
                assert!(!back[i as usize], "flow {i} forwarded twice");
                back[i as usize] = true;
            }
            // veth has no RSS: reading and writing it are errors that say so, not the
            // defaults standing in for it.
            let e = port.rss().expect_err("veth has no RSS").to_string();
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(
                e.starts_with("xdp:veth0: ") && e.contains("has no RSS"),
                "{e}"
            );
            let reta = zcnic::rss::Reta::new(vec![0; 128]).unwrap();
            let e = port.set_reta(&reta).unwrap_err().to_string();
            assert!(e.contains("has no RSS to set"), "{e}");
            let e = port
                .set_reta(&zcnic::rss::Reta::spread(QUEUES + 1, 128).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("names queue 4; the port has 4"), "{e}");
            drop(queues);
            assert!(
                pair.port_link().contains("prog/xdp"),
                "the port still holds it"
            );
            drop(port);
            assert_eq!(
                pool.free_count(),
                pool.capacity(),
                "every buffer back, once"
            );
            if let Err(link) = pair.wait_detached() {
                panic!("program left behind: {link}");
            }
            // More queues than the interface has: one line, naming the queue count.
            let cfg = Config {
                queues: QUEUES + 1,
                ..Config::default()
            };
            let e = zcnic::open_port("xdp:veth0", &cfg).err().expect("5 of 4");
            let text = e.to_string();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(text.contains("ethtool -l veth0"), "{text}");
            if let Err(link) = pair.wait_detached() {
                panic!("a failed open left a program: {link}");
            }
        });
    });
}
