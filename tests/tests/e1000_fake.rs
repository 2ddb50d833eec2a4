//! The e1000 driver against a thread playing the device (FakeBar + FakeDma).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::e1000::{Config, E1000};
use zcnic::{Error, FakeBar, Nic, Packet, PciAddr, UserRegion};
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
    // The ring keeps one buffer per slot; everything handed out came back.
    assert_eq!(pool.free_count(), pool.capacity() - 512);
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
        nic.rx_batch_recycle(&mut got, 32, &mut spare);
        for mut p in got.drain(..) {
            assert_eq!(p.data(), &frame(next, 60 + next as usize % 900)[..]);
            next += 1;
            p.trim_front(10).unwrap();
            spare.push(p);
        }
        if next >= 64 {
            let now = pool.free_count();
            assert_eq!(*conserved.get_or_insert(now), now, "a buffer from the pool");
        }
        assert!(spare.len() <= 64, "{} spares left untaken", spare.len());
    }
    assert_eq!(nic.stats().rx_packets, total as u64);

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
    assert_eq!(pool.free_count(), pool.capacity() - 512);
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
        pool.capacity() - 512 - 1,
        "rx ring + the one frame"
    );

    let mut b = vec![pool.alloc_copy(&frame(8, 60)).unwrap()];
    assert_eq!(nic.tx_batch(&mut b), 1);
    assert!(nic.flush());
    wait("the normal frame", || dev.sent_count() > posted);
    assert_eq!(dev.sent.lock().unwrap()[posted], frame(8, 60));
}
