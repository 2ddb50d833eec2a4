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
    // 63 free descriptors, 5 per 9018-byte frame: 12 go; the 8 after them, for which
    // 3 descriptors are left, wait in order in the caller's vector.
    let frames: Vec<Vec<u8>> = (0..20u32).map(|i| frame(i, 9018)).collect();
    let mut batch: Vec<Packet> = frames.iter().map(|f| pool.alloc_copy(f).unwrap()).collect();
    assert_eq!(nic.tx_batch(&mut batch), 12);
    let left: Vec<Vec<u8>> = batch.iter().map(Packet::to_vec).collect();
    assert_eq!(
        left,
        frames[12..],
        "the rest are the caller's again, in order"
    );
    assert_eq!(nic.tx_batch(&mut batch), 0, "3 left: none");
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

/// A burst of one still takes a whole long frame (its parts deliver nothing, so they leave
/// room under `max`), and a dropped one leaves room for the next frame.
#[test]
fn a_long_frame_comes_out_of_a_burst_of_one() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 9000, 64);
    dev.inject(Inject::Frame(frame(1, 4 * DATA_ROOM + 826)));
    dev.inject(Inject::Frame(frame(2, 60)));
    let mut got = Vec::new();
    wait("the long frame", || {
        nic.rx_batch(&mut got, 1);
        !got.is_empty()
    });
    let lens: Vec<usize> = got.iter().map(|p| p.total_len()).collect();
    let s = nic.stats();
    assert_eq!(lens, [4 * DATA_ROOM + 826], "{s:?}");
    assert!(got[0].to_vec() == frame(1, 4 * DATA_ROOM + 826));
    assert_eq!(s.rx_no_buf, 0);
    // One byte over the 9018 an MTU of 9000 allows: dropped, and the same burst of one
    // goes on to the frame after it.
    dev.inject(Inject::Frame(frame(3, 4 * DATA_ROOM + 827)));
    dev.inject(Inject::Frame(frame(4, 60)));
    wait("the frame after", || {
        nic.rx_batch(&mut got, 1);
        got.len() == 3
    });
    let lens: Vec<usize> = got.iter().map(|p| p.total_len()).collect();
    assert_eq!(lens, [4 * DATA_ROOM + 826, 60, 60]);
    assert_eq!(nic.stats().rx_errors, 1);
}

/// Ceiling mode points every descriptor at one buffer: a frame longer than one is never
/// posted (a chain there would go out cut to its first buffer).
#[test]
fn ceiling_mode_posts_no_frame_longer_than_a_buffer() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 9000, 64);
    for _ in 0..10 {
        assert_eq!(nic.repost(&frame(1, DATA_ROOM + 1), 32), Some(0));
    }
    assert!(nic.flush());
    assert_eq!(dev.sent_count(), 0);
    assert!(nic.repost(&frame(2, DATA_ROOM), 32).unwrap() > 0);
}

/// A part that does not fill its buffer is not one (the device fills every buffer of a
/// frame but the last): a device writing 1-byte parts without end gets errors, never the
/// pool, and frames after them arrive.
#[test]
fn short_parts_are_errors_and_never_take_the_pool() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 9000, 64);
    let pool = nic.pool().clone();
    for _ in 0..1500 {
        dev.inject(Inject::Part(vec![7; 1]));
    }
    dev.inject(Inject::Frame(frame(1, 60)));
    dev.inject(Inject::Frame(frame(2, 60)));
    let got = receive(&mut nic, 1);
    let got: Vec<Vec<u8>> = got.iter().map(Packet::to_vec).collect();
    assert!(got.contains(&frame(2, 60)), "{} frames", got.len());
    let s = nic.stats();
    assert!(s.rx_errors >= 1500, "{s:?}");
    assert!(pool.free_count() > pool.capacity() / 2);
}

/// With as many free buffers as a long frame has descriptors (5 for 9018 bytes), it
/// arrives: a part takes a refill the burst took for it when the cache is dry.
#[test]
fn a_long_frame_arrives_with_one_free_buffer_per_descriptor() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 9000, 64);
    let pool = nic.pool().clone();
    let mut hog = Vec::new();
    while pool.free_count() > 5 {
        hog.push(pool.alloc().expect("buffers left"));
    }
    dev.inject(Inject::Frame(frame(1, 9018)));
    let got = receive(&mut nic, 1);
    assert_eq!(got[0].to_vec(), frame(1, 9018));
    drop((got, hog));
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
}

/// One dropped frame, one error: too long by a part (not its last), or cut by a bad
/// first part.
#[test]
fn a_dropped_long_frame_counts_one_error() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 3000, 64);
    dev.inject(Inject::Frame(frame(1, 6000)));
    dev.inject(Inject::Frame(frame(2, 60)));
    let got = receive(&mut nic, 1);
    assert_eq!(got[0].to_vec(), frame(2, 60));
    assert!(drain(&mut nic).is_empty());
    assert_eq!(nic.stats().rx_errors, 1, "too long by a part");
    dev.inject(Inject::Part(Vec::new()));
    dev.inject(Inject::Part(vec![4; DATA_ROOM]));
    dev.inject(Inject::Frame(frame(5, 50)));
    dev.inject(Inject::Frame(frame(6, 70)));
    let got = receive(&mut nic, 1);
    assert_eq!(got[0].to_vec(), frame(6, 70));
    assert_eq!(nic.stats().rx_errors, 2, "a bad first part");
}

/// A 32-slot ring whose frames are all done but whose clean-up group is not complete: a
/// chain that needs more than the slots left still goes (everything done is taken back).
#[test]
fn a_chain_after_a_partial_group_is_sent() {
    let dev = FakeE1000::start(Behaviour::default());
    let cfg = Config {
        tx_ring: 32,
        ..config(9000, 64)
    };
    let mut nic = E1000::new(dev.bar.clone(), &dev.dma, addr(), &cfg).unwrap();
    let pool = nic.pool().clone();
    let mut batch: Vec<Packet> = (0..30)
        .map(|i| pool.alloc_copy(&frame(i, 60)).unwrap())
        .collect();
    assert_eq!(nic.tx_batch(&mut batch), 30);
    wait("30 frames sent", || dev.sent_count() >= 30);
    let mut batch = vec![pool.alloc_copy(&frame(99, 9018)).unwrap()];
    assert_eq!(nic.tx_batch(&mut batch), 1, "the chain goes at once");
    assert!(nic.flush());
    wait("the chain sent", || dev.sent_count() >= 31);
    assert_eq!(dev.sent.lock().unwrap()[30], frame(99, 9018));
}

/// A chain at the front of a long queue goes at once: the frames after it wait for the
/// descriptors it leaves, not the other way round.
#[test]
fn a_chain_before_many_frames_goes_first() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, 9000, 64);
    let pool = nic.pool().clone();
    let mut frames = vec![frame(0, 9018)];
    frames.extend((1..200u32).map(|i| frame(i, 60)));
    let mut batch: Vec<Packet> = frames.iter().map(|f| pool.alloc_copy(f).unwrap()).collect();
    assert_eq!(
        nic.tx_batch(&mut batch),
        59,
        "5 descriptors for it, 58 for 58 frames"
    );
    let start = Instant::now();
    while !batch.is_empty() && start.elapsed() < Duration::from_secs(20) {
        nic.tx_batch(&mut batch);
    }
    assert!(nic.flush());
    wait("all of them", || dev.sent_count() >= 200);
    assert_eq!(*dev.sent.lock().unwrap(), frames);
}
