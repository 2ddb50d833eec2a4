//! virtio-net's control queue and queue pairs against the fake device: the receive filter
//! (VIRTIO_NET_CTRL_RX), several queue pairs (VIRTIO_NET_F_MQ), RSS (VIRTIO_NET_F_RSS with
//! its whole `virtio_net_rss_config` checked byte for byte) and the hash each received
//! frame carries (VIRTIO_NET_F_HASH_REPORT), one thread per queue pair.

use std::time::{Duration, Instant};
use zcnic::rss::{HashType, HashTypes, Reta, DEFAULT_KEY};
use zcnic::virtio::{feature, negotiate, DmaMem, VirtioNet, VirtioPort, VirtioQueues};
use zcnic::{Config, Error, Nic, Packet, PciAddr, Port, RxQueue, TxQueue};
use zcnic_descriptors::virtio::SplitQueue;
use zcnic_tests::fake_virtio::{Behaviour, Command, FakeVirtio, Inject, HASH_TYPES, MAC};

type Split = SplitQueue<DmaMem>;
const TIMEOUT: Duration = Duration::from_secs(20);

fn addr() -> PciAddr {
    "0000:00:03.0".parse().unwrap()
}

fn config(queues: u16) -> Config {
    Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 1024,
        queues,
        reset_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

fn device(pairs: u16, rss: bool) -> FakeVirtio {
    FakeVirtio::start(Behaviour {
        ctrl: true,
        pairs,
        rss,
        ..Behaviour::default()
    })
}

fn open_port(
    dev: &FakeVirtio,
    cfg: &Config,
) -> Result<(VirtioPort<Split>, VirtioQueues<Split>), Error> {
    let t = dev.transport();
    let features = negotiate(&t, &addr(), cfg, false)?;
    VirtioPort::<Split>::new(Box::new(t), features, &dev.dma, addr(), cfg)
}

/// A frame to `dst` whose payload starts with `tag`.
fn frame(dst: [u8; 6], tag: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[14..18].copy_from_slice(&tag.to_le_bytes());
    f
}

fn tag(p: &[u8]) -> u32 {
    u32::from_le_bytes(p[14..18].try_into().unwrap())
}

/// Receives on `rx` until `n` frames came or the timeout.
fn receive(rx: &mut dyn RxQueue, n: usize) -> Vec<Packet> {
    let (mut got, start) = (Vec::new(), Instant::now());
    while got.len() < n && start.elapsed() < TIMEOUT {
        rx.rx_batch(&mut got, 32);
    }
    got
}

#[test]
fn the_port_turns_promiscuity_off_and_the_filter_follows_it() {
    let dev = device(1, false);
    let t = dev.transport();
    let cfg = config(1);
    let features = negotiate(&t, &addr(), &cfg, false).unwrap();
    assert_ne!(features & feature::CTRL_RX, 0);
    let mut nic = VirtioNet::<Split>::new(Box::new(t), features, &dev.dma, addr(), &cfg).unwrap();
    let off = vec![Command {
        class: 0,
        cmd: 0,
        data: vec![0],
        ack: 0,
    }];
    assert_eq!(dev.commands(), off, "Config::promisc false is sent at open");
    assert!(!dev.promisc());
    let other = [0x52, 0x54, 0, 0, 0, 0x77];
    for (i, dst) in [other, MAC, [0xff; 6], other].into_iter().enumerate() {
        dev.inject(Inject::Frame(frame(dst, i as u32)));
    }
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 2 && start.elapsed() < TIMEOUT {
        nic.rx_batch(&mut got, 8);
    }
    let tags: Vec<u32> = got.iter().map(|p| tag(p.data())).collect();
    assert_eq!(tags, [1, 2], "ours and broadcast only");
    // The last frame is turned away after the two arrived, on the device's own time.
    let start = Instant::now();
    while dev.counts().filtered < 2 && start.elapsed() < TIMEOUT {
        std::thread::yield_now();
    }
    assert_eq!(dev.counts().filtered, 2);
    nic.set_promisc(true);
    assert_eq!(dev.commands().last().unwrap().data, [1]);
    dev.inject(Inject::Frame(frame(other, 9)));
    let mut got = Vec::new();
    let start = Instant::now();
    while got.is_empty() && start.elapsed() < TIMEOUT {
        nic.rx_batch(&mut got, 8);
    }
    assert_eq!(
        tag(got[0].data()),
        9,
        "promiscuous: another MAC's frame arrives"
    );
    // The same state again sends nothing.
    nic.set_promisc(true);
    assert_eq!(dev.commands().len(), 2);
}

/// The RSS configuration the port sends, parsed as virtio 1.2 §5.1.6.5.7.1 lays it out.
fn parse_rss(data: &[u8]) -> (u32, u16, u16, Vec<u16>, u16, Vec<u8>) {
    let u16_at = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]);
    let types = u32::from_le_bytes(data[..4].try_into().unwrap());
    let (mask, unclassified) = (u16_at(4), u16_at(6));
    let len = usize::from(mask) + 1;
    let table = (0..len).map(|i| u16_at(8 + 2 * i)).collect();
    let at = 8 + 2 * len;
    let max_tx = u16_at(at);
    let key_len = usize::from(data[at + 2]);
    let key = data[at + 3..].to_vec();
    assert_eq!(key.len(), key_len, "key length byte vs bytes sent");
    (types, mask, unclassified, table, max_tx, key)
}

#[test]
fn four_pairs_with_rss_send_the_whole_configuration() {
    let dev = device(4, true);
    let (mut port, queues) = open_port(&dev, &config(4)).unwrap();
    assert_eq!((port.queues(), queues.len()), (4, 4));
    let want = feature::CTRL_VQ | feature::MQ | feature::RSS | feature::HASH_REPORT;
    assert_eq!(dev.driver_features() & want, want);
    let cmds = dev.commands();
    assert_eq!(cmds.len(), 2, "promiscuity, then RSS: {cmds:?}");
    let rss = &cmds[1];
    assert_eq!((rss.class, rss.cmd, rss.ack), (4, 1, 0));
    let (types, mask, unclassified, table, max_tx, key) = parse_rss(&rss.data);
    assert_eq!(types, HashTypes::all().bits() & HASH_TYPES);
    assert_eq!((mask, unclassified, max_tx), (127, 0, 4));
    assert_eq!(table, (0..128).map(|i| i % 4).collect::<Vec<u16>>());
    assert_eq!(key, DEFAULT_KEY);
    // A new table is sent whole; a wrong one is refused before anything is sent.
    let reta = Reta::new((0..128).map(|i| u16::from(i >= 64) * 3).collect()).unwrap();
    port.set_reta(&reta).unwrap();
    assert_eq!(parse_rss(&dev.commands()[2].data).3, reta.entries());
    assert_eq!(port.rss().unwrap().reta.as_ref(), Some(&reta));
    let short = Reta::spread(4, 64).unwrap();
    let beyond = Reta::spread(5, 128).unwrap();
    for bad in [short, beyond] {
        let e = port.set_reta(&bad).unwrap_err().to_string();
        assert!(e.contains("redirection table"), "{e}");
    }
    assert_eq!(dev.commands().len(), 3);
}

#[test]
fn each_pair_receives_its_frames_with_their_hash_and_sends_on_its_own_queue() {
    let dev = device(4, true);
    // Each thread holds its 300 frames until it has them all: the pool must hold the four
    // threads' 1200 besides the rings, or they can all wait on it at once.
    let cfg = Config {
        pool: 2048,
        ..config(4)
    };
    let (mut port, queues) = open_port(&dev, &cfg).unwrap();
    const N: u32 = 300;
    // The device's hash reports: TCPv4, UDPv6, TCPv6 with extension headers, and none.
    let reports = [
        (2, Some(HashType::TcpV4)),
        (6, Some(HashType::UdpV6)),
        (8, Some(HashType::TcpV6)),
        (0, None),
    ];
    for k in 0..4u16 {
        for i in 0..N {
            let hash = 0x1000 * u32::from(k) + i;
            let f = frame([0xff; 6], u32::from(k) << 16 | i);
            dev.inject_on(k, Inject::Hashed(f, hash, reports[usize::from(k)].0));
        }
    }
    let workers: Vec<_> = queues
        .into_iter()
        .map(|(mut rx, mut tx)| {
            let want = reports[usize::from(rx.queue())].1;
            std::thread::spawn(move || {
                let k = u32::from(rx.queue());
                let mut got = receive(&mut rx, N as usize);
                assert_eq!(got.len(), N as usize, "queue {k}");
                for (i, p) in (0..).zip(&got) {
                    assert_eq!(tag(p.data()), k << 16 | i, "queue {k}: in order, its own");
                    let hash = want.map(|t| (0x1000 * k + i, t));
                    assert_eq!(p.rss(), hash, "queue {k} frame {i}");
                }
                // Echo them back on this pair's transmit queue.
                let start = Instant::now();
                while !got.is_empty() && start.elapsed() < TIMEOUT {
                    tx.tx_batch(&mut got);
                }
                assert!(got.is_empty() && tx.flush(), "queue {k} sent everything");
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a queue's thread failed");
    }
    let (sent, pairs) = (dev.sent(), dev.sent_pairs());
    assert_eq!(sent.len(), 4 * N as usize);
    for k in 0..4u16 {
        let mine: Vec<u32> = sent
            .iter()
            .zip(&pairs)
            .filter(|(_, &p)| p == k)
            .map(|(f, _)| tag(f))
            .collect();
        let want: Vec<u32> = (0..N).map(|i| u32::from(k) << 16 | i).collect();
        assert_eq!(
            mine, want,
            "pair {k} sent its own frames, in order, on its own queue"
        );
    }
    let per = port.queue_stats();
    assert!(per
        .iter()
        .all(|s| (s.rx_packets, s.tx_packets) == (u64::from(N), u64::from(N))));
    let all = port.stats();
    assert_eq!(
        (all.rx_packets, all.tx_packets),
        (4 * u64::from(N), 4 * u64::from(N))
    );
}

#[test]
fn more_pairs_than_the_device_has_is_one_clear_error() {
    let dev = device(2, true);
    let e = open_port(&dev, &config(3)).unwrap_err().to_string();
    assert!(e.contains("3 queue pairs asked; the device has 2"), "{e}");
    let single = device(1, false);
    let e = open_port(&single, &config(2)).unwrap_err().to_string();
    assert!(e.contains("mq=on") && e.contains("queues=N"), "{e}");
}

#[test]
fn without_rss_the_pairs_are_set_and_there_is_no_table() {
    let dev = device(2, false);
    let (mut port, _queues) = open_port(&dev, &config(2)).unwrap();
    let cmds = dev.commands();
    assert_eq!(
        (cmds[1].class, cmds[1].cmd, &cmds[1].data[..]),
        (4, 0, &[2u8, 0][..])
    );
    let e = port.set_reta(&Reta::spread(2, 128).unwrap()).unwrap_err();
    assert!(e.to_string().contains("VIRTIO_NET_F_RSS"), "{e}");
}

/// The port and its queues close in either order, and every buffer comes back.
#[test]
fn port_and_queues_close_in_either_order_with_every_buffer_back() {
    for port_first in [false, true] {
        let dev = device(2, true);
        let (port, queues) = open_port(&dev, &config(2)).unwrap();
        let pool = queues[0].0.pool().clone();
        for k in 0..2 {
            dev.inject_on(k, Inject::Frame(frame([0xff; 6], k.into())));
        }
        let mut held = Vec::new();
        let mut queues = queues;
        for (rx, _) in &mut queues {
            held.extend(receive(rx, 1));
        }
        assert_eq!(held.len(), 2);
        if port_first {
            drop(port);
            drop(queues);
        } else {
            drop(queues);
            drop(port);
        }
        assert!(
            pool.free_count() < pool.capacity(),
            "the application still holds two"
        );
        drop(held);
        assert_eq!(
            pool.free_count(),
            pool.capacity(),
            "port first: {port_first}"
        );
    }
}

/// A command the device does not answer in time fails (and the port keeps the mode the
/// device has); once the device answers again, the late answer frees its buffer and the
/// next command goes through: the queue never falls out of step, and no buffer is lost.
#[test]
fn a_late_answer_does_not_put_the_control_queue_out_of_step() {
    let dev = device(1, false);
    let t = dev.transport();
    let cfg = config(1);
    let features = negotiate(&t, &addr(), &cfg, false).unwrap();
    let mut nic = VirtioNet::<Split>::new(Box::new(t), features, &dev.dma, addr(), &cfg).unwrap();
    let pool = nic.pool().clone();
    let free = pool.free_count();
    dev.hold_ctrl(true);
    nic.set_promisc(true);
    assert_eq!(
        pool.free_count(),
        free - 1,
        "the unanswered command keeps its buffer"
    );
    dev.hold_ctrl(false);
    // The port still thinks the device is not promiscuous, so this is sent again.
    nic.set_promisc(true);
    let cmds = dev.commands();
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert!(cmds[1..].iter().all(|c| c.data == [1] && c.ack == 0));
    assert!(dev.promisc());
    assert_eq!(pool.free_count(), free, "the late answer freed its buffer");
    nic.set_promisc(false);
    assert_eq!(dev.commands().len(), 4);
    assert!(!dev.promisc());
}
