//! The e1000 driver against a thread playing the device (FakeBar + FakeDma).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::e1000::{Config, E1000};
use zcnic::{Bar, Error, FakeBar, FakeDma, Mempool, Nic, Packet, PciAddr, UserRegion};
use zcnic_tests::chains;
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000, Inject, MAC};

fn addr() -> PciAddr {
    "0000:00:02.0".parse().unwrap()
}

fn config() -> Config {
    Config {
        rx_ring: 512,
        tx_ring: 512,
        pool: 2048,
        link_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

fn open(dev: &FakeE1000) -> E1000<FakeBar> {
    E1000::new(dev.bar.clone(), &dev.dma, addr(), &config()).expect("driver comes up")
}

fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7)).collect();
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

/// Receives until `n` frames arrived (or the wait times out).
fn receive(nic: &mut E1000<FakeBar>, n: usize) -> Vec<Packet> {
    let mut got = Vec::with_capacity(n + 64);
    wait("frames to arrive", || {
        nic.rx_batch(&mut got, 32);
        got.len() >= n
    });
    got
}

#[test]
fn comes_up_with_mac_and_link() {
    let dev = FakeE1000::start(Behaviour::default());
    let nic = open(&dev);
    assert_eq!(nic.mac(), MAC);
    assert!(nic.link().up);
    assert_eq!(nic.link().speed_mbps, 1000);
}

#[test]
fn tx_wraps_ten_times_and_returns_every_buffer() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let total = 10 * 512 + 17; // not a multiple of the cleanup batch
    let mut seq = 0u32;
    let mut batch = Vec::with_capacity(32);
    while seq < total as u32 || !batch.is_empty() {
        while batch.len() < 32 && seq < total as u32 {
            let len = 60 + (seq as usize % 1400);
            let Some(p) = pool.alloc_copy(&frame(seq, len)) else {
                break;
            };
            batch.push(p);
            seq += 1;
        }
        nic.tx_batch(&mut batch);
    }
    wait("the device to send everything", || {
        dev.sent_count() == total
    });
    assert!(nic.flush());
    let sent = dev.sent.lock().unwrap().clone();
    for (i, f) in sent.iter().enumerate() {
        assert_eq!(f, &frame(i as u32, 60 + i % 1400), "frame {i}");
    }
    let stats = nic.stats();
    assert_eq!(stats.tx_packets, total as u64);
    assert_eq!(stats.tx_errors, 0);
    // Buffers still in the rings come back when the port closes.
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
    assert_eq!(dev.faults.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn tx_recycle_hands_back_every_frame_as_sent() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let total = 4 * 512 + 17;
    let len = |seq: u32| 60 + seq as usize % 1400;
    let reused = zcnic_tests::datapath::send_recycling(&mut nic, total, |s| frame(s, len(s)));
    // All but the first ring's worth (and a cleanup batch) went out in a returned packet.
    assert!(reused >= total as usize - 512 - 32, "only {reused} reused");
    wait("the device to send everything", || {
        dev.sent_count() == total as usize
    });
    let sent = dev.sent.lock().unwrap().clone();
    for (i, f) in sent.iter().enumerate() {
        assert_eq!(f, &frame(i as u32, len(i as u32)), "frame {i}");
    }
    assert!(nic.flush());
    assert_eq!(
        (nic.stats().tx_packets, nic.stats().tx_errors),
        (u64::from(total), 0)
    );
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
}

#[test]
fn tx_refuses_empty_frames_without_stalling() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let mut batch = Vec::new();
    pool.alloc_batch(&mut batch, 3);
    batch[1].set_len(60).unwrap();
    assert_eq!(nic.tx_batch(&mut batch), 3);
    wait("one frame", || dev.sent_count() == 1);
    assert_eq!(nic.stats().tx_errors, 2);
}

#[test]
fn rx_refills_across_four_rings() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let n = 4 * 512 + 5;
    let mut got = 0usize;
    let mut out = Vec::with_capacity(64);
    for chunk in 0..(n / 100 + 1) {
        let from = chunk * 100;
        let to = (from + 100).min(n);
        for seq in from..to {
            dev.inject(Inject::Frame(frame(seq as u32, 60 + seq % 1000)));
        }
        let end = Instant::now() + Duration::from_secs(20);
        while got < to {
            assert!(Instant::now() < end, "stuck at {got} of {to}");
            nic.rx_batch(&mut out, 32);
            for p in out.drain(..) {
                assert_eq!(
                    p.data(),
                    &frame(got as u32, 60 + got % 1000)[..],
                    "frame {got}"
                );
                got += 1;
            }
        }
    }
    let stats = nic.stats();
    assert_eq!(stats.rx_packets, n as u64);
    assert_eq!(stats.rx_errors, 0);
    // The ring keeps one buffer per slot and its spare; everything handed out came back.
    assert_eq!(pool.free_count(), pool.capacity() - 512 - 1);
}

/// Frames read and handed back become the next refills: once they circulate the pool
/// gives no more buffers, and every frame still arrives intact (a handed-back buffer with a
/// moved front is reset first). A packet from another pool is not taken: the driver stops
/// at it and leaves it, and what is behind it, with the caller.
#[test]
fn rx_recycle_receives_into_the_buffers_handed_back() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let (mut got, mut spare) = (Vec::with_capacity(64), Vec::new());
    let (total, mut seq, mut next) = (3 * 512 + 9, 0u32, 0u32);
    let mut conserved = None;
    let end = Instant::now() + Duration::from_secs(20);
    while next < total {
        assert!(Instant::now() < end, "stuck at frame {next}");
        while seq < total && seq < next + 64 {
            dev.inject(Inject::Frame(frame(seq, 60 + seq as usize % 900)));
            seq += 1;
        }
        // A whole burst written before each call (the device thread fills the ring at its
        // own pace; a call that finds only a few frames would hand back only a few, and
        // the spares would never reach a burst): RDH is the device's next slot, and frame
        // `next` is in slot `next % 512`.
        let want = (seq - next).min(32);
        wait("a burst of frames", || {
            (dev.bar.read32(zcnic::e1000::regs::RDH) + 512 - next % 512) % 512 >= want
        });
        // With a burst's worth of spares at hand, the pool gives nothing.
        let (free, enough) = (pool.free_count(), spare.len() >= 32);
        nic.rx_batch_recycle(&mut got, 32, &mut spare);
        if enough {
            assert_eq!(pool.free_count(), free, "a buffer from the pool");
            conserved = Some(conserved.unwrap_or(0) + 1);
        }
        for mut p in got.drain(..) {
            assert_eq!(p.data(), &frame(next, 60 + next as usize % 900)[..]);
            next += 1;
            p.trim_front(10).unwrap();
            spare.push(p);
        }
        assert!(spare.len() <= 64, "{} spares left untaken", spare.len());
    }
    assert_eq!(nic.stats().rx_packets, total as u64);
    assert!(
        conserved.is_some(),
        "no call had a burst of spares to check"
    );

    let other = zcnic::Mempool::new(&zcnic::FakeDma::new(), 4).unwrap();
    spare.push(other.alloc().unwrap());
    let before = spare.len();
    dev.inject(Inject::Frame(frame(total, 60)));
    wait("the frame", || {
        nic.rx_batch_recycle(&mut got, 32, &mut spare) == 1
    });
    assert_eq!(got[0].data(), &frame(total, 60)[..]);
    assert_eq!(spare.len(), before, "nothing taken past the foreign packet");
    assert!(spare.last().unwrap().is_from(&other));
    drop((got, spare));
    assert_eq!(
        pool.free_count(),
        pool.capacity() - 512 - 1,
        "the ring and its spare"
    );
    assert_eq!((nic.stats().rx_errors, other.free_count()), (0, 4));
}

#[test]
fn rx_length_beyond_the_buffer_is_an_error_not_a_frame() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    dev.inject(Inject::Length(3000));
    dev.inject(Inject::Length(0));
    dev.inject(Inject::Frame(frame(7, 64)));
    let got = receive(&mut nic, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data(), &frame(7, 64)[..]);
    assert_eq!(nic.stats().rx_errors, 2);
}

/// A burst with bad descriptors among good frames, received with spares: the frames
/// land after what `out` already held, in order; bad descriptors keep their buffers, so
/// refills are left over, and the caller's go back to it (the same packets), none lost.
#[test]
fn rx_spares_left_over_by_bad_descriptors_go_back_to_the_caller() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let mut spare = Vec::new();
    pool.alloc_batch(&mut spare, 6);
    let mut given: Vec<u64> = spare.iter().map(|p| p.iova()).collect();
    let held = pool.alloc().unwrap();
    let held_at = held.iova();
    let mut got = vec![held];
    for (i, bad) in [false, true, false, true, true, false]
        .into_iter()
        .enumerate()
    {
        dev.inject(match bad {
            true => Inject::Length(0),
            false => Inject::Frame(frame(i as u32, 60)),
        });
    }
    wait("six descriptors done", || {
        dev.bar.read32(zcnic::e1000::regs::RDH) >= 6
    });
    assert_eq!(nic.rx_batch_recycle(&mut got, 32, &mut spare), 3);
    assert_eq!(got[0].iova(), held_at, "what out held stays first");
    let seqs: Vec<&[u8]> = got[1..].iter().map(|p| p.data()).collect();
    assert_eq!(
        seqs,
        [&frame(0, 60)[..], &frame(2, 60)[..], &frame(5, 60)[..]]
    );
    assert_eq!(nic.stats().rx_errors, 3);
    // Three spares refilled the good frames' slots; the bad ones kept their buffers, so
    // three spares come back, and they are three of the six handed over.
    assert_eq!(spare.len(), 3, "the spares not used");
    let mut back: Vec<u64> = spare.iter().map(|p| p.iova()).collect();
    back.sort();
    given.sort();
    assert!(back.iter().all(|b| given.binary_search(b).is_ok()));
    let free = pool.free_count();
    drop((got, spare));
    assert_eq!(pool.free_count(), free + 7);
}

#[test]
fn rx_dd_on_a_descriptor_never_handed_over_is_counted() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    dev.inject(Inject::DdOnTail);
    for seq in 0..40 {
        dev.inject(Inject::Frame(frame(seq, 60)));
    }
    let got = receive(&mut nic, 40);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.data(), &frame(i as u32, 60)[..]);
    }
    assert_eq!(nic.stats().rx_errors, 1);
}

#[test]
fn reset_that_never_finishes_times_out() {
    let dev = FakeE1000::start(Behaviour {
        reset_completes: false,
        ..Behaviour::default()
    });
    let cfg = Config {
        reset_timeout: Duration::from_millis(50),
        ..config()
    };
    match E1000::new(dev.bar.clone(), &dev.dma, addr(), &cfg) {
        Err(Error::Timeout { what, .. }) => assert!(what.contains("CTRL.RST")),
        other => panic!("expected a reset timeout, got {other:?}"),
    }
}

#[test]
fn link_down_is_reported_not_fatal() {
    let dev = FakeE1000::start(Behaviour {
        link_up: false,
        ..Behaviour::default()
    });
    let nic = open(&dev);
    assert!(!nic.link().up);
    assert_eq!(nic.link().to_string(), "down");
}

/// Scatter-gather TX: a header from the pool and a payload from application memory leave as
/// one frame; the application's region is writable again only once the device is done.
#[test]
fn tx_chains_header_and_application_payload() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let payload: Vec<u8> = (0..9000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut region = Arc::new(UserRegion::with_data(&payload, dev.dma.mapper()).unwrap());
    dev.tx_paused.store(true, Ordering::Release);
    let mut batch = chains::batch(nic.pool(), &region);
    assert_eq!(nic.tx_batch(&mut batch), 3);
    // The NIC is stalled: the payload is still in flight, so it stays read-only.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!nic.flush(), "a stalled NIC has not sent anything");
    assert!(UserRegion::data_mut(&mut region).is_none());
    dev.tx_paused.store(false, Ordering::Release);
    wait("the device to send the chains", || dev.sent_count() == 3);
    assert!(nic.flush());
    let sent = dev.sent.lock().unwrap().clone();
    chains::assert_sent(&sent, &payload);
    assert!(
        UserRegion::data_mut(&mut region).is_some(),
        "the region comes back once the device is done"
    );
    assert_eq!(nic.stats().tx_bytes, (3 * 42 + 64 + 1458 + 8958) as u64);
}

/// Ceiling mode sends the one frame over and over from descriptors written once; the
/// device sees exactly as many copies as `repost` reported, and normal sends work after.
#[test]
fn ceiling_mode_reposts_one_frame() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let f = frame(7, 60);
    let mut posted = 0;
    while posted < 5000 {
        posted += nic.repost(&f, 32).expect("the e1000 has a ceiling mode");
    }
    assert!(nic.flush());
    wait("every copy on the wire", || dev.sent_count() >= posted);
    let sent = dev.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), posted, "the device sent what repost reported");
    assert!(sent.iter().all(|s| *s == f), "every copy is the frame");
    assert_eq!(nic.stats().tx_packets, posted as u64);
    assert_eq!(
        pool.free_count(),
        pool.capacity() - 512 - 1 - 1,
        "rx ring, its spare, and the one frame"
    );

    let mut b = vec![pool.alloc_copy(&frame(8, 60)).unwrap()];
    assert_eq!(nic.tx_batch(&mut b), 1);
    assert!(nic.flush());
    wait("the normal frame", || dev.sent_count() > posted);
    assert_eq!(dev.sent.lock().unwrap()[posted], frame(8, 60));
}

/// Regression: `flush` released transmit buffers once TDH reached TDT, without DD. The SDM's
/// TDH tracks descriptor fetch: silicon may read the data after, so buffers (and
/// application segments) went back while the NIC could still read them.
#[test]
fn regression_flush_waits_for_dd_not_for_the_head() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let before = pool.free_count();
    dev.tx_fetch_only.store(true, Ordering::Release);
    let mut batch: Vec<Packet> = (0..40)
        .map(|i| pool.alloc_copy(&frame(i, 100)).unwrap())
        .collect();
    assert_eq!(nic.tx_batch(&mut batch), 40);
    wait("the device to fetch every descriptor", || {
        use zcnic::{e1000::regs, Bar};
        dev.bar.read32(regs::TDH) == dev.bar.read32(regs::TDT)
    });
    assert!(!nic.flush(), "TDH = TDT without DD is not done");
    assert_eq!(
        pool.free_count(),
        before - 40,
        "no buffer released before DD"
    );
    dev.tx_fetch_only.store(false, Ordering::Release);
    wait("the device to send them", || dev.sent_count() == 40);
    assert!(nic.flush());
    assert_eq!(pool.free_count(), before, "all released after DD");
    let sent = dev.sent.lock().unwrap().clone();
    for (i, f) in sent.iter().enumerate() {
        assert_eq!(f, &frame(i as u32, 100), "frame {i}");
    }
}

/// Regression: ceiling mode re-posted its descriptors as they were, so after a `tx_batch`
/// in between they pointed at that batch's buffers, since freed and reused.
#[test]
fn regression_ceiling_after_tx_batch_sends_its_frame_not_stale_buffers() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let pool = nic.pool().clone();
    let f = frame(0xCE11, 60);
    let mut posted = 0;
    while posted < 600 {
        posted += nic.repost(&f, 64).unwrap();
    }
    let mut batch: Vec<Packet> = (0..100)
        .map(|i| pool.alloc_copy(&frame(i, 90)).unwrap())
        .collect();
    while !batch.is_empty() {
        nic.tx_batch(&mut batch);
    }
    let mut again = 0;
    while again < 1200 {
        again += nic.repost(&f, 64).unwrap();
    }
    assert!(nic.flush());
    let total = posted + 100 + again;
    wait("every frame on the wire", || dev.sent_count() >= total);
    let sent = dev.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), total);
    for (i, s) in sent[posted..posted + 100].iter().enumerate() {
        assert_eq!(s, &frame(i as u32, 90), "batch frame {i}");
    }
    let stale = sent[posted + 100..].iter().filter(|s| **s != f).count();
    assert_eq!(
        stale, 0,
        "re-posted descriptors that did not send the frame"
    );
}

/// Regression: a packet from a pool in another address space (another port's IOMMU, or
/// physical addresses) went into a descriptor by its own IOVA, which means nothing, or
/// other memory, to this device. It is copied into this port's pool instead.
#[test]
fn regression_a_packet_of_another_address_space_is_copied_not_sent_by_address() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev);
    let elsewhere = Mempool::new(&FakeDma::new(), 8).unwrap();
    let mut batch = vec![elsewhere.alloc_copy(&frame(7, 80)).unwrap()];
    assert_eq!(nic.tx_batch(&mut batch), 1);
    wait("the frame", || dev.sent_count() == 1);
    assert_eq!(dev.sent.lock().unwrap()[0], frame(7, 80));
    assert_eq!(
        dev.faults.load(Ordering::Relaxed),
        0,
        "no foreign address used"
    );
    assert_eq!(
        elsewhere.free_count(),
        8,
        "the original went back to its pool"
    );
    assert_eq!(nic.stats().tx_packets, 1);
}

/// A port whose device does not stop (its reset never completes, and there is no bus
/// master to turn off) leaks its memory instead of freeing it under the device; one that
/// stops frees it.
#[test]
fn a_device_that_does_not_stop_keeps_its_memory() {
    let dev = FakeE1000::start(Behaviour::default());
    let nic = open(&dev);
    let freed = Arc::downgrade(nic.pool());
    drop(nic);
    assert!(freed.upgrade().is_none(), "stopped: the pool is freed");

    let nic = open(&dev);
    let kept = Arc::downgrade(nic.pool());
    dev.resets_stuck.store(true, Ordering::Release);
    drop(nic);
    assert!(kept.upgrade().is_some(), "not stopped: the pool is leaked");
}

/// Regression (review): in ceiling mode the burst's last descriptor kept a DD from an
/// earlier lap when RS was ORed into it, so `flush` said done while the device had not
/// even started on the frames.
#[test]
fn regression_flush_after_repost_ignores_a_stale_dd() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev); // transmit ring of 512
    let f = frame(0xCE11, 60);
    // Lap 1 ends on slot 9 (not a cleanup-batch end), which gets RS and then DD.
    let mut posted = 0;
    while posted < 10 {
        posted += nic.repost(&f, 10 - posted).unwrap();
    }
    wait("10 sent", || dev.sent_count() == 10);
    while posted < 511 {
        posted += nic.repost(&f, 511 - posted).unwrap();
    }
    wait("511 sent", || dev.sent_count() == 511);
    dev.tx_paused.store(true, Ordering::Release);
    // The next burst ends on slot 9 again.
    let mut n = 0;
    while n < 11 {
        n += nic.repost(&f, 11 - n).unwrap();
    }
    assert!(
        !nic.flush(),
        "done while the paused device has 11 frames queued"
    );
    dev.tx_paused.store(false, Ordering::Release);
    assert!(nic.flush());
}

/// Regression (review): a port that did not stop leaked its pool, but its receive buffers,
/// still in descriptors the device may write, went back on the pool's free list, where
/// anyone holding the pool could allocate them.
#[test]
fn regression_an_unstopped_port_keeps_its_receive_buffers_out_of_the_pool() {
    let dev = FakeE1000::start(Behaviour::default());
    let nic = open(&dev);
    let pool = nic.pool().clone();
    dev.resets_stuck.store(true, Ordering::Release);
    drop(nic);
    assert!(
        pool.free_count() <= pool.capacity() - 512,
        "free {} of {}: receive buffers the device may still write are allocatable",
        pool.free_count(),
        pool.capacity()
    );
}

/// Regression: a 32-slot transmit ring (the smallest the driver takes) holds at most 31
/// frames, never a whole clean-up group of 32, so once full it took no frame again until a
/// flush. Now a full ring frees itself once the device is done with its last burst.
#[test]
fn a_full_32_slot_transmit_ring_keeps_sending() {
    let dev = FakeE1000::start(Behaviour::default());
    let cfg = Config {
        tx_ring: 32,
        ..config()
    };
    let mut nic = E1000::new(dev.bar.clone(), &dev.dma, addr(), &cfg).expect("driver comes up");
    let pool = nic.pool().clone();
    let total = 1000;
    let mut sent = 0;
    let mut batch: Vec<Packet> = Vec::new();
    wait("1000 frames through a 32-slot ring without a flush", || {
        while batch.len() < 8 && sent + batch.len() < total {
            batch.push(pool.alloc_copy(&frame(0, 60)).unwrap());
        }
        sent += nic.tx_batch(&mut batch);
        sent == total
    });
    assert!(nic.flush());
    wait("every frame on the wire", || dev.sent_count() == total);
}
