//! The igb driver against a thread playing an 82576 (FakeBar + FakeDma) whose
//! write-backs overwrite descriptor addresses, as the datasheet allows.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::igb::{Config, Igb};
use zcnic::{FakeBar, Mempool, Nic, Packet, PciAddr, UserRegion};
use zcnic_tests::chains;
use zcnic_tests::fake_igb::{FakeIgb, Inject, MAC};

fn open(dev: &FakeIgb) -> Igb<FakeBar> {
    let cfg = Config {
        rx_ring: 512,
        tx_ring: 512,
        pool: 2048,
        link_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let addr: PciAddr = "0000:00:02.0".parse().unwrap();
    Igb::new(dev.bar.clone(), &dev.dma, addr, &cfg).expect("driver comes up")
}

fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(13)).collect();
    f[..4].copy_from_slice(&seq.to_le_bytes());
    f
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn pool_full(pool: &Arc<Mempool>) {
    assert_eq!(
        pool.free_count(),
        pool.capacity(),
        "every buffer back in the pool"
    );
}

#[test]
fn comes_up_with_mac_and_link_through_the_phy() {
    let dev = FakeIgb::start();
    let nic = open(&dev);
    assert_eq!(nic.mac(), MAC);
    assert!(
        nic.link().up,
        "auto-negotiation restarted through MDIC brings the link up"
    );
    assert_eq!(nic.link().speed_mbps, 1000);
    assert_eq!(nic.driver(), "igb");
}

/// Every frame leaves once, in order, byte for byte, over several laps of the ring,
/// although the device zeroes each written-back descriptor's address.
#[test]
fn transmit_sends_every_frame_in_order() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let total = 10 * 512 + 17;
    let mut want = Vec::with_capacity(total);
    let mut batch: Vec<Packet> = Vec::with_capacity(32);
    let mut seq = 0u32;
    while (seq as usize) < total || !batch.is_empty() {
        while batch.len() < 32 && (seq as usize) < total {
            let f = frame(seq, 60 + (seq as usize % 1400));
            batch.push(pool.alloc_copy(&f).expect("a buffer"));
            want.push(f);
            seq += 1;
        }
        nic.tx_batch(&mut batch);
    }
    assert!(nic.flush(), "the device reports every frame done");
    wait("every frame on the wire", || {
        dev.sent.lock().unwrap().len() == total
    });
    assert!(
        *dev.sent.lock().unwrap() == want,
        "sent in order, byte-exact"
    );
    let stats = nic.stats();
    assert_eq!(stats.tx_packets, total as u64);
    assert_eq!(
        dev.faults.load(Ordering::Relaxed),
        0,
        "no DMA outside the mappings"
    );
    drop(nic);
    pool_full(&pool);
}

/// A header from the pool and a payload of application memory go out as one frame.
#[test]
fn transmit_chains_header_and_payload() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let payload: Vec<u8> = (0..9000u32).map(|i| (i * 7 % 251) as u8).collect();
    let region = Arc::new(UserRegion::with_data(&payload, dev.dma.mapper()).unwrap());
    let mut batch = chains::batch(nic.pool(), &region);
    assert_eq!(nic.tx_batch(&mut batch), 3);
    assert!(nic.flush());
    wait("the chains on the wire", || {
        dev.sent.lock().unwrap().len() == 3
    });
    chains::assert_sent(&dev.sent.lock().unwrap(), &payload);
}

/// A frame of several pool buffers (a `Packet` chain, one with a payload after its last
/// buffer) leaves as one frame, byte for byte; one beyond the igb's 9728 bytes is refused,
/// not cut; every buffer comes back.
#[test]
fn transmit_sends_a_chain_of_buffers_as_one_frame() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let region = Arc::new(UserRegion::with_data(&[0x77; 700], dev.dma.mapper()).unwrap());
    let frames = [frame(1, 9000), frame(2, 2049), frame(3, 60)];
    let mut batch: Vec<Packet> = frames.iter().map(|f| pool.alloc_copy(f).unwrap()).collect();
    let mut with_payload = pool.alloc_copy(&frame(4, 3000)).unwrap();
    with_payload
        .next_mut()
        .unwrap()
        .attach(zcnic::Segment::new(&region, 0, 700).unwrap());
    let mut want = frame(4, 3000);
    want.extend_from_slice(&[0x77; 700]);
    batch.push(with_payload);
    batch.push(pool.alloc_copy(&frame(5, 9729)).unwrap());
    assert_eq!(nic.tx_batch(&mut batch), 5);
    assert!(nic.flush());
    wait("the chains on the wire", || {
        dev.sent.lock().unwrap().len() == 4
    });
    let sent = dev.sent.lock().unwrap().clone();
    assert_eq!(sent[..3], frames);
    assert_eq!(sent[3], want);
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_errors), (4, 1));
    drop(nic);
    pool_full(&pool);
}

/// A burst takes `min(len, free)` frames and lets a chain check its own room: once a
/// chain is queued, the frames at the end that no longer have a descriptor each wait; a
/// chain that does not fit waits with every frame after it. What waits goes back to the
/// front of the caller's vector, in order, and every frame leaves once, in order.
#[test]
fn a_chain_takes_its_room_and_the_frames_that_no_longer_fit_wait_in_order() {
    let dev = FakeIgb::start();
    let cfg = Config {
        rx_ring: 64,
        tx_ring: 32,
        pool: 1024,
        link_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let addr: PciAddr = "0000:00:02.0".parse().unwrap();
    let mut nic = Igb::new(dev.bar.clone(), &dev.dma, addr, &cfg).expect("driver comes up");
    let pool = nic.pool().clone();
    let seq = |p: &Packet| u32::from_le_bytes(p.data()[..4].try_into().unwrap());
    let mut all = Vec::new();
    let mut burst = |lens: &[usize]| -> Vec<Packet> {
        lens.iter()
            .map(|&len| {
                let f = frame(all.len() as u32, len);
                let p = pool.alloc_copy(&f).unwrap();
                all.push(f);
                p
            })
            .collect()
    };
    // 31 descriptors free: a single, a chain of five (9000 bytes), then 38 singles. Of the
    // 31 frames taken up front, the last four lose their descriptor to the chain.
    let mut lens = vec![60, 9000];
    lens.extend([60; 38]);
    let mut pkts = burst(&lens);
    assert_eq!(nic.tx_batch(&mut pkts), 27);
    let left: Vec<u32> = pkts.iter().map(seq).collect();
    assert_eq!(left, (27..40).collect::<Vec<_>>(), "the rest, in order");
    assert!(nic.flush());
    wait("the first burst on the wire", || {
        dev.sent.lock().unwrap().len() == 27
    });
    // Those are not sent: the next burst is a new one.
    drop(pkts);
    // An empty ring again (31 free): 29 singles leave two descriptors, a chain of five
    // does not fit, and it waits with the frame after it.
    let mut lens = vec![60; 29];
    lens.extend([9000, 60]);
    let mut pkts = burst(&lens);
    assert_eq!(nic.tx_batch(&mut pkts), 29);
    assert_eq!(pkts.iter().map(seq).collect::<Vec<_>>(), [69, 70]);
    while !pkts.is_empty() {
        nic.tx_batch(&mut pkts);
    }
    assert!(nic.flush());
    wait("every frame on the wire", || {
        dev.sent.lock().unwrap().len() == 27 + 31
    });
    let sent = dev.sent.lock().unwrap().clone();
    assert_eq!(sent[..27], all[..27]);
    assert_eq!(sent[27..], all[40..]);
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_errors), (58, 0));
    drop(nic);
    pool_full(&pool);
}

/// Frames arrive byte-exact; a frame spread over two descriptors and a frame with an
/// error are counted and dropped without disturbing the frames around them.
#[test]
fn receive_delivers_good_frames_and_counts_bad_ones() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let n = 2000u32;
    let mut want = Vec::new();
    for seq in 0..n {
        let f = frame(seq, 60 + (seq as usize % 1000));
        match seq {
            500 => dev.inject(Inject::Split(f)),
            900 => dev.inject(Inject::Bad(f)),
            _ => {
                dev.inject(Inject::Frame(f.clone()));
                want.push(f);
            }
        }
    }
    // Frames are copied out and their buffers dropped as they come: the pool holds the
    // ring's buffers and a few bursts, not all 2000 frames.
    let (mut got, mut data): (Vec<Packet>, Vec<Vec<u8>>) = (Vec::with_capacity(32), Vec::new());
    let end = Instant::now() + Duration::from_secs(20);
    while data.len() < want.len() {
        nic.rx_batch(&mut got, 32);
        data.extend(got.drain(..).map(|p| p.data().to_vec()));
        assert!(
            Instant::now() < end,
            "{} of {} frames arrived; {:?}",
            data.len(),
            want.len(),
            nic.stats()
        );
    }
    assert!(data == want, "received in order, byte-exact");
    let stats = nic.stats();
    assert_eq!(stats.rx_packets, want.len() as u64);
    assert_eq!(
        stats.rx_errors, 3,
        "both halves of the split frame and the bad one"
    );
    drop(nic);
    pool_full(&pool);
}

/// `tx_batch_recycle` hands sent packets back exactly as they were given, so a sender
/// re-stamps them instead of going through the pool; the device still sends every frame.
#[test]
fn transmit_recycle_hands_sent_packets_back_intact() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let total = 4 * 512 + 17;
    let (mut batch, mut done): (Vec<Packet>, Vec<Packet>) = (Vec::new(), Vec::new());
    let mut back = 0;
    for seq in 0..total as u32 {
        batch.push(
            pool.alloc_copy(&frame(seq, 60 + seq as usize % 64))
                .unwrap(),
        );
        if batch.len() == 32 || seq as usize == total - 1 {
            while !batch.is_empty() {
                nic.tx_batch_recycle(&mut batch, &mut done);
            }
            for p in done.drain(..) {
                let seq_back = u32::from_le_bytes(p.data()[..4].try_into().unwrap());
                assert_eq!(
                    p.data(),
                    frame(seq_back, 60 + seq_back as usize % 64),
                    "intact"
                );
                back += 1;
            }
        }
    }
    assert!(nic.flush());
    wait("every frame on the wire", || {
        dev.sent.lock().unwrap().len() == total
    });
    assert!(back >= total - 512 - 32, "only {back} of {total} came back");
    drop(nic);
    pool_full(&pool);
}

/// Ceiling mode sends the one frame over and over, each descriptor written whole (the
/// fake zeroes addresses on write-back); the device sees exactly what `repost` reported,
/// and normal sends work after.
#[test]
fn ceiling_mode_reposts_one_frame() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let f = frame(7, 60);
    let mut posted = 0;
    while posted < 5000 {
        posted += nic.repost(&f, 32).expect("the igb has a ceiling mode");
    }
    assert!(nic.flush());
    wait("every copy on the wire", || {
        dev.sent.lock().unwrap().len() >= posted
    });
    let sent = dev.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), posted, "the device sent what repost reported");
    assert!(sent.iter().all(|s| *s == f), "every copy is the frame");
    assert_eq!(nic.stats().tx_packets, posted as u64);
    let mut one = vec![pool.alloc_copy(&frame(8, 70)).unwrap()];
    assert_eq!(nic.tx_batch(&mut one), 1);
    assert!(nic.flush());
    wait("the normal frame", || {
        dev.sent.lock().unwrap().len() == posted + 1
    });
    assert_eq!(dev.sent.lock().unwrap()[posted], frame(8, 70));
    assert_eq!(dev.faults.load(Ordering::Relaxed), 0);
    drop(nic);
    pool_full(&pool);
}

/// `rx_batch_recycle` refills the ring from the caller's spares first; spares it did not
/// need come back; frames arrive intact either way.
#[test]
fn receive_recycle_refills_from_spares() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let n = 1000u32;
    for seq in 0..n {
        dev.inject(Inject::Frame(frame(seq, 60 + seq as usize % 200)));
    }
    let (mut got, mut spare) = (Vec::with_capacity(32), Vec::new());
    let mut seen = 0u32;
    let end = Instant::now() + Duration::from_secs(20);
    while seen < n {
        assert!(Instant::now() < end, "{seen} of {n} frames arrived");
        let (free_before, offered) = (pool.free_count(), spare.len());
        nic.rx_batch_recycle(&mut got, 32, &mut spare);
        if got.len() <= offered {
            assert_eq!(
                pool.free_count(),
                free_before,
                "{} frames, {offered} spares: every refill a spare",
                got.len()
            );
        }
        for p in got.drain(..) {
            assert_eq!(
                p.data(),
                frame(seen, 60 + seen as usize % 200),
                "frame {seen}"
            );
            seen += 1;
            // The application is done with it: it becomes a spare for the next refill.
            spare.push(p);
        }
        if !spare.is_empty() {
            assert!(
                pool.free_count() <= free_before,
                "spares were used before the pool"
            );
        }
    }
    assert!(
        !spare.is_empty() && spare.len() <= 32,
        "unused spares come back"
    );
    drop(spare);
    drop(nic);
    pool_full(&pool);
}
