//! e1000 jumbo frames against the fake device: long packets (RCTL.LPE) received over
//! several 2 KiB descriptors as one `Packet` chain, and chains sent as one frame.

use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::e1000::{Config, E1000};
use zcnic::{Error, FakeBar, Mempool, Nic, Packet, PciAddr, DATA_ROOM};
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000, Inject};

fn addr() -> PciAddr {
    "0000:00:02.0".parse().unwrap()
}

fn config(mtu: usize, rx_ring: u32) -> Config {
    Config {
        rx_ring,
        tx_ring: 64,
        pool: 1024,
        mtu,
        link_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

fn open(dev: &FakeE1000, mtu: usize, rx_ring: u32) -> E1000<FakeBar> {
    E1000::new(dev.bar.clone(), &dev.dma, addr(), &config(mtu, rx_ring)).expect("driver comes up")
}

fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seq as u8)
        .collect();
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

fn receive(nic: &mut E1000<FakeBar>, n: usize) -> Vec<Packet> {
    let mut got = Vec::new();
    wait("frames to arrive", || {
        nic.rx_batch(&mut got, 8);
        got.len() >= n
    });
    got
}

/// Receives for a while and returns everything (for "nothing more arrives").
fn drain(nic: &mut E1000<FakeBar>) -> Vec<Packet> {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        nic.rx_batch(&mut got, 32);
    }
    got
}

#[test]
fn long_frames_arrive_whole_over_several_buffers_across_the_ring_wrap() {
    let dev = FakeE1000::start(Behaviour::default());
    // A 16-slot ring: a 9018-byte frame takes 5 descriptors, so frames wrap mid-way.
    let mut nic = open(&dev, 9000, 16);
    assert_eq!(nic.mtu(), 9000);
    let sizes = [
        60,
        9018,
        DATA_ROOM,
        DATA_ROOM + 1,
        4096,
        1514,
        8000,
        9018,
        3 * DATA_ROOM,
    ];
    let frames: Vec<Vec<u8>> = (0..60u32)
        .map(|i| frame(i, sizes[i as usize % sizes.len()]))
        .collect();
    for f in &frames {
        dev.inject(Inject::Frame(f.clone()));
    }
    let got = receive(&mut nic, frames.len());
    assert_eq!(got.len(), frames.len());
    for (p, f) in got.iter().zip(&frames) {
        assert_eq!(p.to_vec(), *f, "frame {} byte for byte", p.data()[0]);
        assert_eq!(p.segments().count(), f.len().div_ceil(DATA_ROOM));
        assert!(p.segments().all(|s| !s.is_empty() && s.len() <= DATA_ROOM));
    }
    let s = nic.stats();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    assert_eq!(
        (s.rx_packets, s.rx_bytes, s.rx_errors),
        (60, bytes as u64, 0)
    );
    let pool = nic.pool().clone();
    drop(got);
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity(), "every part came back");
}

#[test]
fn a_frame_longer_than_the_mtu_allows_is_dropped_and_the_next_arrives() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 3000, 64);
    // 3018 allowed: 4000 is too long; the device takes it (LPE is on) and the driver drops
    // it, counted once.
    dev.inject(Inject::Frame(frame(1, 4000)));
    dev.inject(Inject::Frame(frame(2, 3018)));
    let got = receive(&mut nic, 1);
    assert_eq!(got[0].to_vec(), frame(2, 3018));
    assert!(drain(&mut nic).is_empty());
    let s = nic.stats();
    assert_eq!((s.rx_packets, s.rx_errors), (1, 1));
}

#[test]
fn a_bad_end_drops_the_parts_before_it_and_a_missing_end_holds_nothing_at_close() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 9000, 64);
    let pool: Arc<Mempool> = nic.pool().clone();
    // Two parts, then an end of length 0: the whole frame is dropped.
    dev.inject(Inject::Part(vec![1; DATA_ROOM]));
    dev.inject(Inject::Part(vec![2; DATA_ROOM]));
    dev.inject(Inject::Length(0));
    dev.inject(Inject::Frame(frame(3, 100)));
    let got = receive(&mut nic, 1);
    assert_eq!(got[0].to_vec(), frame(3, 100), "only the good frame");
    assert_eq!(nic.stats().rx_errors, 1);
    // A bad part (empty) first: its frame's other parts never pass for a frame.
    dev.inject(Inject::Part(Vec::new()));
    dev.inject(Inject::Part(vec![4; DATA_ROOM]));
    dev.inject(Inject::Frame(frame(5, 50)));
    dev.inject(Inject::Frame(frame(6, 70)));
    let more = receive(&mut nic, 1);
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].to_vec(), frame(6, 70));
    // Parts whose end never comes: held across calls, freed at close.
    dev.inject(Inject::Part(vec![7; DATA_ROOM]));
    dev.inject(Inject::Part(vec![8; DATA_ROOM]));
    assert!(drain(&mut nic).is_empty());
    drop((got, more));
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
}

#[test]
fn with_the_standard_mtu_long_packets_stay_off() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 1500, 64);
    assert_eq!(nic.mtu(), 1500);
    // The device drops a long frame (LPE clear); a part with no end is a device fault.
    dev.inject(Inject::Frame(frame(1, 4000)));
    dev.inject(Inject::Part(vec![1; 100]));
    dev.inject(Inject::Frame(frame(2, 1514)));
    let got = receive(&mut nic, 1);
    assert_eq!(got[0].to_vec(), frame(2, 1514));
    assert_eq!(nic.stats().rx_errors, 1);
    assert!(
        dev.filtered.load(std::sync::atomic::Ordering::Acquire) >= 1,
        "the device turned the long frame away"
    );
}

#[test]
fn chains_go_out_as_one_frame_each_and_too_long_is_refused() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 9000, 64);
    let pool = nic.pool().clone();
    let sizes = [9018, 60, DATA_ROOM + 1, 16288, 5000, 1514];
    let frames: Vec<Vec<u8>> = (0..30u32)
        .map(|i| frame(i, sizes[i as usize % sizes.len()]))
        .collect();
    let mut batch: Vec<Packet> = frames.iter().map(|f| pool.alloc_copy(f).unwrap()).collect();
    // Beyond the e1000's 16288 bytes: refused, not cut.
    batch.push(pool.alloc_copy(&frame(99, 16289)).unwrap());
    let start = Instant::now();
    while !batch.is_empty() && start.elapsed() < Duration::from_secs(20) {
        nic.tx_batch(&mut batch);
    }
    assert!(batch.is_empty() && nic.flush());
    wait("the device to send them", || {
        dev.sent_count() >= frames.len()
    });
    assert_eq!(*dev.sent.lock().unwrap(), frames);
    let s = nic.stats();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    assert_eq!(
        (s.tx_packets, s.tx_bytes, s.tx_errors),
        (30, bytes as u64, 1)
    );
    assert_eq!(
        pool.free_count(),
        pool.capacity() - 65,
        "all back but the rx ring's 64 and its spare"
    );
}

#[test]
fn a_burst_of_chains_larger_than_the_ring_waits_in_order_and_a_chain_beyond_it_is_refused() {
    let dev = FakeE1000::start(Behaviour::default());
    dev.tx_paused
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut nic = open(&dev, 9000, 64);
    let pool = nic.pool().clone();
    // 63 free descriptors, 5 per 9018-byte frame, and each frame queued leaves one for
    // every frame after it (19 then): 10 go, the rest wait in order.
    let frames: Vec<Vec<u8>> = (0..20u32).map(|i| frame(i, 9018)).collect();
    let mut batch: Vec<Packet> = frames.iter().map(|f| pool.alloc_copy(f).unwrap()).collect();
    assert_eq!(nic.tx_batch(&mut batch), 10);
    let left: Vec<Vec<u8>> = batch.iter().map(Packet::to_vec).collect();
    assert_eq!(
        left,
        frames[10..],
        "the rest are the caller's again, in order"
    );
    // 13 descriptors free: the next burst's first frame takes the 5 it needs (a first
    // frame never waits for room kept for frames after it, which go back anyway: a burst
    // as long as the ring whose first frame needs two descriptors would never go), the
    // rest still wait; with 3 left, none goes.
    assert_eq!(nic.tx_batch(&mut batch), 1, "the first frame of a burst");
    assert_eq!(nic.tx_batch(&mut batch), 1);
    assert_eq!(nic.tx_batch(&mut batch), 0, "a full ring takes none");
    dev.tx_paused
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    while !batch.is_empty() && start.elapsed() < Duration::from_secs(20) {
        nic.tx_batch(&mut batch);
    }
    assert!(nic.flush());
    wait("the device to send them", || dev.sent_count() >= 20);
    assert_eq!(*dev.sent.lock().unwrap(), frames);
    // 70 parts of 60 bytes: more descriptors than the ring has, so never sendable.
    let mut long = pool.alloc_copy(&[1; 60]).unwrap();
    for _ in 1..70 {
        long.append(pool.alloc_copy(&[2; 60]).unwrap());
    }
    let mut batch = vec![long, pool.alloc_copy(&frame(7, 60)).unwrap()];
    assert_eq!(nic.tx_batch(&mut batch), 2);
    assert!(nic.flush());
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_errors), (21, 1));
    wait("the last frame", || dev.sent_count() >= 21);
    assert_eq!(dev.sent.lock().unwrap()[20], frame(7, 60));
}

#[test]
fn an_mtu_the_e1000_cannot_take_is_one_clear_error() {
    for mtu in [67, 16111, 65536] {
        let dev = FakeE1000::start(Behaviour::default());
        let err = E1000::new(dev.bar.clone(), &dev.dma, addr(), &config(mtu, 64)).unwrap_err();
        assert!(matches!(err, Error::Mtu { max: 16110, .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("MTU") && text.contains("16110"), "{text}");
    }
    let dev = FakeE1000::start(Behaviour::default());
    assert_eq!(open(&dev, 16110, 64).mtu(), 16110);
}
