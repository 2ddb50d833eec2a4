//! The igb's multi-queue port against a thread playing an 82576 with RSS: the key and
//! table land in the registers as configured, each queue receives exactly the flows the
//! Toeplitz hash gives it and sends on its own ring, each from its own thread, and the
//! port and its queues tear down safely in either order.

use etherparse::PacketBuilder;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::igb::{regs, IgbPort};
use zcnic::rss::{HashType, Reta, Toeplitz};
use zcnic::{Bar, Config, FakeBar, Mempool, Packet, PciAddr, Port, RxQueue, TxQueue};
use zcnic_tests::fake_igb::{FakeIgb, Inject};

const QUEUES: u16 = 4;

fn open(
    dev: &FakeIgb,
    queues: u16,
) -> (
    IgbPort<FakeBar>,
    Vec<(zcnic::igb::IgbRxQueue, zcnic::igb::IgbTxQueue)>,
) {
    let cfg = Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 1024,
        link_timeout: Duration::from_secs(2),
        queues,
        ..Config::default()
    };
    let addr: PciAddr = "0000:00:02.0".parse().unwrap();
    IgbPort::new(dev.bar.clone(), &dev.dma, addr, &cfg).expect("driver comes up")
}

/// The source address of flow `flow`: two octets vary, so the hash's low bits do too.
fn src_of(flow: u16) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        0,
        flow as u8,
        (flow as u8).wrapping_mul(37).wrapping_add(1),
    )
}

/// A UDP frame of flow `flow` (source address and port vary) carrying `seq`.
fn udp(flow: u16, seq: u32) -> Vec<u8> {
    let src = src_of(flow);
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), [10, 0, 0, 2], 64)
        .udp(1000 + flow, 9);
    let mut f = Vec::new();
    b.write(&mut f, &seq.to_le_bytes()).unwrap();
    f
}

fn flow_of(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[34], f[35]]) - 1000
}

fn seq_of(f: &[u8]) -> u32 {
    u32::from_le_bytes(f[42..46].try_into().unwrap())
}

/// What a packet says of its RSS hash.
type Rx = Option<(u32, HashType)>;

/// The Toeplitz hash of `flow`'s addresses and UDP ports over the default key.
fn hash_of(flow: u16) -> u32 {
    Toeplitz::default().ipv4_l4(
        SocketAddrV4::new(src_of(flow), 1000 + flow),
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 9),
    )
}

/// The queue a frame of `flow` must land on: software Toeplitz over the default key and
/// the default table, independent of the registers.
fn expected_queue(flow: u16) -> u16 {
    Reta::spread(QUEUES, 128).unwrap().queue(hash_of(flow))
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn key_table_and_hash_types_are_programmed_before_receive_starts() {
    let dev = FakeIgb::start();
    let (port, queues) = open(&dev, QUEUES);
    let b = &dev.bar;
    assert_eq!(b.read32(regs::MRQC), 0x01FF_0002, "RSS only, every type");
    assert_ne!(
        b.read32(regs::RXCSUM) & regs::RXCSUM_PCSD,
        0,
        "the hash in write-backs"
    );
    assert_eq!(
        b.read32(regs::RSSRK),
        0xda56_5a6d,
        "key byte 0 in the low byte"
    );
    for i in 0..32 {
        assert_eq!(b.read32(regs::RETA + 4 * i), 0x0302_0100, "RETA[{i}]");
    }
    for q in 0..u32::from(QUEUES) {
        assert_ne!(b.read32(regs::rxdctl(q)) & regs::QUEUE_ENABLE, 0);
        assert_ne!(b.read32(regs::txdctl(q)) & regs::QUEUE_ENABLE, 0);
        assert_eq!(
            b.read32(regs::rdt(q)),
            63,
            "queue {q} handed over all but one slot"
        );
    }
    assert_eq!(b.read32(regs::rxdctl(4)) & regs::QUEUE_ENABLE, 0);
    assert_eq!((port.queues(), queues.len()), (QUEUES, 4));
    assert_eq!(
        port.rss().unwrap().reta,
        Some(Reta::spread(QUEUES, 128).unwrap())
    );
}

#[test]
fn one_queue_turns_off_rss_an_earlier_user_left_on() {
    let dev = FakeIgb::start();
    dev.bar.write32(regs::MRQC, 0x01FF_0002);
    let (_port, queues) = open(&dev, 1);
    assert_eq!(dev.bar.read32(regs::MRQC), 0);
    let (rxs, _txs): (Vec<_>, Vec<_>) = queues.into_iter().unzip();
    for seq in 0..64 {
        dev.inject(Inject::Frame(udp(seq as u16, seq)));
    }
    let got = receive_all(rxs, 64);
    assert_eq!(got[0].len(), 64, "every flow on the one queue");
    assert!(
        got[0].iter().all(|(_, rss)| rss.is_none()),
        "and no hash reported"
    );
}

#[test]
fn a_pool_the_receive_rings_would_drain_is_refused() {
    let dev = FakeIgb::start();
    let cfg = Config {
        rx_ring: 512,
        pool: 4096,
        queues: 8,
        ..Config::default()
    };
    let addr: PciAddr = "0000:00:02.0".parse().unwrap();
    let err = IgbPort::new(dev.bar.clone(), &dev.dma, addr, &cfg).unwrap_err();
    assert!(
        err.to_string()
            .contains("a pool of 4096 buffers cannot feed 8 receive rings of 512"),
        "{err}"
    );
}

#[test]
fn more_queues_than_the_driver_spreads_over_is_a_clear_error() {
    let dev = FakeIgb::start();
    let cfg = Config {
        queues: 9,
        ..Config::default()
    };
    let addr: PciAddr = "0000:00:02.0".parse().unwrap();
    let err = IgbPort::new(dev.bar.clone(), &dev.dma, addr, &cfg).unwrap_err();
    assert!(
        err.to_string().contains("queues 9 must be in 1..=8"),
        "{err}"
    );
}

/// Receives on every queue from its own thread until `n` frames arrived in all; each
/// frame with the RSS hash and type its packet carried.
fn receive_all(rxs: Vec<zcnic::igb::IgbRxQueue>, n: usize) -> Vec<Vec<(Vec<u8>, Rx)>> {
    let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            let got = Arc::clone(&got);
            std::thread::spawn(move || {
                let mut frames = Vec::new();
                let mut batch = Vec::with_capacity(32);
                let end = Instant::now() + Duration::from_secs(20);
                while got.load(std::sync::atomic::Ordering::SeqCst) < n && Instant::now() < end {
                    let k = rx.rx_batch(&mut batch, 32);
                    got.fetch_add(k, std::sync::atomic::Ordering::SeqCst);
                    frames.extend(batch.drain(..).map(|p| (p.data().to_vec(), p.rss())));
                }
                (frames, rx)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap().0).collect()
}

#[test]
fn each_queue_receives_exactly_the_flows_the_toeplitz_hash_gives_it() {
    let dev = FakeIgb::start();
    let (mut port, queues) = open(&dev, QUEUES);
    let (rxs, _txs): (Vec<_>, Vec<_>) = queues.into_iter().unzip();
    const N: u32 = 2000;
    for seq in 0..N {
        dev.inject(Inject::Frame(udp((seq % 64) as u16, seq)));
    }
    let per_queue = receive_all(rxs, N as usize);
    let mut spread = [0u64; 4];
    for (q, frames) in per_queue.iter().enumerate() {
        let mut last_seq = vec![None; 64];
        for (f, rss) in frames {
            let flow = flow_of(f);
            assert_eq!(
                *rss,
                Some((hash_of(flow), HashType::UdpV4)),
                "flow {flow}'s hash"
            );
            assert_eq!(
                usize::from(expected_queue(flow)),
                q,
                "flow {flow} on queue {q}"
            );
            let seq = seq_of(f);
            assert!(
                last_seq[usize::from(flow)] < Some(seq),
                "flow {flow} in order"
            );
            last_seq[usize::from(flow)] = Some(seq);
        }
        spread[q] = frames.len() as u64;
    }
    let expected: Vec<u64> = (0..4)
        .map(|q| {
            (0..N)
                .filter(|s| expected_queue((s % 64) as u16) == q)
                .count() as u64
        })
        .collect();
    assert_eq!(spread.to_vec(), expected, "frames per queue");
    assert!(
        spread.iter().all(|&n| n > 0),
        "64 flows reach all four queues: {spread:?}"
    );
    assert_eq!(dev.per_queue.lock().unwrap().rx[..4], spread);
    let stats: Vec<u64> = port.queue_stats().iter().map(|s| s.rx_packets).collect();
    assert_eq!(stats, spread.to_vec(), "per-queue counters");
    assert_eq!(port.stats().rx_packets, u64::from(N));
}

#[test]
fn a_new_table_steers_every_flow_and_a_bad_one_is_refused() {
    let dev = FakeIgb::start();
    let (mut port, queues) = open(&dev, QUEUES);
    let all_to_2 = Reta::new(vec![2; 128]).unwrap();
    port.set_reta(&all_to_2).unwrap();
    assert_eq!(port.rss().unwrap().reta, Some(all_to_2));
    let (rxs, _txs): (Vec<_>, Vec<_>) = queues.into_iter().unzip();
    for seq in 0..200 {
        dev.inject(Inject::Frame(udp((seq % 64) as u16, seq)));
    }
    let got: Vec<usize> = receive_all(rxs, 200).iter().map(Vec::len).collect();
    assert_eq!(got, [0, 0, 200, 0]);
    let err = port.set_reta(&Reta::spread(5, 128).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("naming queue 4 on a port of 4 queues"),
        "{err}"
    );
    let err = port.set_reta(&Reta::spread(4, 64).unwrap()).unwrap_err();
    assert!(err.to_string().contains("64 entries"), "{err}");
}

#[test]
fn each_queue_sends_on_its_own_ring_from_its_own_thread() {
    let dev = FakeIgb::start();
    let (mut port, queues) = open(&dev, QUEUES);
    const PER: u32 = 1000;
    let threads: Vec<_> = queues
        .into_iter()
        .map(|(rx, mut tx)| {
            std::thread::spawn(move || {
                let q = tx.queue();
                let mut batch: Vec<Packet> = Vec::with_capacity(32);
                let mut seq = 0;
                while seq < PER {
                    while batch.len() < 32 && seq + (batch.len() as u32) < PER {
                        let Some(mut p) = tx.pool().alloc() else {
                            break;
                        };
                        let f = udp(q, seq + batch.len() as u32);
                        p.set_len(f.len()).unwrap();
                        p.data_mut().copy_from_slice(&f);
                        batch.push(p);
                    }
                    seq += tx.tx_batch(&mut batch) as u32;
                }
                assert!(tx.flush(), "queue {q} drains");
                (rx, tx)
            })
        })
        .collect();
    let queues: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    wait("every frame sent", || {
        dev.sent.lock().unwrap().len() == 4 * PER as usize
    });
    assert_eq!(dev.per_queue.lock().unwrap().tx[..4], [1000; 4]);
    let sent = dev.sent.lock().unwrap().clone();
    for q in 0..4u16 {
        let seqs: Vec<u32> = sent
            .iter()
            .filter(|f| flow_of(f) == q)
            .map(|f| seq_of(f))
            .collect();
        assert_eq!(seqs, (0..PER).collect::<Vec<_>>(), "queue {q} in order");
    }
    assert_eq!(port.stats().tx_packets, 4 * u64::from(PER));
    drop(queues);
}

fn pool_of(queues: &[(zcnic::igb::IgbRxQueue, zcnic::igb::IgbTxQueue)]) -> Arc<Mempool> {
    Arc::clone(queues[0].0.pool())
}

#[test]
fn queues_dropped_first_keep_their_buffers_until_the_device_stops() {
    let dev = FakeIgb::start();
    let (port, queues) = open(&dev, QUEUES);
    let pool = pool_of(&queues);
    drop(queues);
    assert!(
        pool.free_count() + 4 * 64 <= pool.capacity(),
        "the receive buffers stay with the device while it runs"
    );
    // The device keeps receiving into the dropped queues' rings: memory still mapped.
    for seq in 0..100 {
        dev.inject(Inject::Frame(udp((seq % 64) as u16, seq)));
    }
    wait("the device to fill the parked rings", || {
        dev.per_queue.lock().unwrap().rx.iter().sum::<u64>() == 100
    });
    assert_eq!(dev.faults.load(std::sync::atomic::Ordering::SeqCst), 0);
    drop(port);
    assert_eq!(dev.bar.read32(regs::RCTL), 0, "receive stopped");
    assert_eq!(
        pool.free_count(),
        pool.capacity(),
        "every buffer back once it stopped"
    );
    assert_eq!(dev.faults.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn queues_outliving_their_port_stay_safe_and_free_on_drop() {
    let dev = FakeIgb::start();
    let (port, mut queues) = open(&dev, QUEUES);
    let pool = pool_of(&queues);
    drop(port);
    assert_eq!(dev.bar.read32(regs::RCTL), 0, "receive stopped");
    for seq in 0..64 {
        dev.inject(Inject::Frame(udp(seq as u16, seq)));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(dev.per_queue.lock().unwrap().rx, [0; 8]);
    let (rx, tx) = &mut queues[1];
    let mut out = Vec::with_capacity(32);
    assert_eq!(
        rx.rx_batch(&mut out, 32),
        0,
        "a stopped device delivers nothing"
    );
    let mut one = vec![pool.alloc_copy(&udp(1, 0)).unwrap()];
    tx.tx_batch(&mut one);
    assert!(!tx.flush(), "nothing completes on a stopped device");
    drop(queues);
    assert_eq!(pool.free_count(), pool.capacity(), "every buffer back");
}

/// Each queue's thread receives its flows and echoes them through a cache of its own (the
/// `*_cached` calls: DPDK's per-lcore mempool cache): every frame goes back out on the
/// queue it came in on, each flow in order, the caches hold no more than their capacity,
/// and once they and the port are gone every buffer is back in the pool.
#[test]
fn each_thread_forwards_through_a_cache_of_its_own() {
    let dev = FakeIgb::start();
    let (port, queues) = open(&dev, QUEUES);
    let pool = pool_of(&queues);
    const N: usize = 3000;
    for seq in 0..N as u32 {
        dev.inject(Inject::Frame(udp((seq % 64) as u16, seq)));
    }
    let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = queues
        .into_iter()
        .map(|(mut rx, mut tx)| {
            let got = Arc::clone(&got);
            std::thread::spawn(move || {
                let mut cache = rx.pool().cache(16);
                let mut batch = Vec::with_capacity(32);
                let end = Instant::now() + Duration::from_secs(20);
                while got.load(std::sync::atomic::Ordering::SeqCst) < N && Instant::now() < end {
                    let k = rx.rx_batch_cached(&mut batch, 32, &mut cache);
                    got.fetch_add(k, std::sync::atomic::Ordering::SeqCst);
                    while !batch.is_empty() && Instant::now() < end {
                        tx.tx_batch_cached(&mut batch, &mut cache);
                    }
                }
                assert!(tx.flush(), "queue {} drains", tx.queue());
                assert!(cache.len() <= cache.capacity());
                (rx, tx)
            })
        })
        .collect();
    let queues: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    wait("every frame echoed", || dev.sent.lock().unwrap().len() == N);
    {
        let per_queue = dev.per_queue.lock().unwrap();
        assert_eq!(per_queue.tx[..4], per_queue.rx[..4], "out where it came in");
    }
    let sent = dev.sent.lock().unwrap().clone();
    for flow in 0..64u16 {
        let seqs: Vec<u32> = sent
            .iter()
            .filter(|f| flow_of(f) == flow)
            .map(|f| seq_of(f))
            .collect();
        let want: Vec<u32> = (0..N as u32)
            .filter(|s| s % 64 == u32::from(flow))
            .collect();
        assert_eq!(seqs, want, "flow {flow} whole and in order");
    }
    drop((queues, port));
    assert_eq!(pool.free_count(), pool.capacity(), "every buffer back");
}

/// Echoes `bursts` bursts of up to 32 frames on queue 0 of a one-queue port, through a
/// thread's cache or the plain calls; returns how often the pool's shared stack changed
/// meanwhile (after a warm-up) and the frames echoed.
fn echo_stack_changes(cached: bool, bursts: usize) -> (u64, usize) {
    let dev = FakeIgb::start();
    let (_port, mut queues) = open(&dev, 1);
    let (mut rx, mut tx) = queues.pop().unwrap();
    let pool = Arc::clone(rx.pool());
    let mut cache = pool.cache(32);
    let mut batch = Vec::with_capacity(32);
    let (mut echoed, mut changes_from) = (0, None);
    for burst in 0..bursts + 10 {
        if burst == 10 {
            changes_from = Some(pool.stack_changes());
        }
        for seq in 0..32 {
            dev.inject(Inject::Frame(udp(
                seq,
                (burst * 32) as u32 + u32::from(seq),
            )));
        }
        wait("a burst", || {
            let k = if cached {
                rx.rx_batch_cached(&mut batch, 32, &mut cache)
            } else {
                rx.rx_batch(&mut batch, 32)
            };
            echoed += k;
            batch.len() == 32
        });
        while !batch.is_empty() {
            if cached {
                tx.tx_batch_cached(&mut batch, &mut cache);
            } else {
                tx.tx_batch(&mut batch);
            }
        }
    }
    (pool.stack_changes() - changes_from.unwrap(), echoed)
}

/// A forwarder through its thread's cache leaves the pool's shared stack nearly still:
/// refills come from what transmit freed. Through the plain calls every burst pops its
/// refills off the stack and pushes its sent buffers back.
#[test]
fn a_cached_forwarder_leaves_the_shared_stack_still() {
    let (plain, n) = echo_stack_changes(false, 40);
    assert_eq!(n, 50 * 32);
    let (cached, n) = echo_stack_changes(true, 40);
    assert_eq!(n, 50 * 32);
    eprintln!("shared stack changes over 40 bursts: plain {plain}, cached {cached}");
    assert!(
        plain >= 40,
        "plain calls: at least a pop per burst ({plain})"
    );
    assert!(
        cached * 8 <= plain,
        "cached: {cached} changes against {plain} for the plain calls"
    );
}

/// A cache of another pool is never used for refills: every frame arrives in a buffer of
/// the port's own pool, and the other pool is untouched.
#[test]
fn a_cache_of_another_pool_is_not_used_for_refills() {
    let dev = FakeIgb::start();
    let (_port, mut queues) = open(&dev, 1);
    let (mut rx, _tx) = queues.pop().unwrap();
    let other = Mempool::new(&zcnic::FakeDma::new(), 256).unwrap();
    let mut foreign = other.cache(16);
    let untouched = other.stack_changes();
    for seq in 0..200 {
        dev.inject(Inject::Frame(udp((seq % 64) as u16, seq)));
    }
    let mut got = Vec::new();
    let mut batch = Vec::with_capacity(32);
    wait("200 frames", || {
        rx.rx_batch_cached(&mut batch, 32, &mut foreign);
        got.append(&mut batch);
        got.len() == 200
    });
    assert!(
        got.iter().all(|p| p.is_from(rx.pool())),
        "the port's own buffers"
    );
    assert_eq!(other.free_count(), 256);
    assert_eq!(other.stack_changes(), untouched, "the other pool untouched");
}
