//! The virtio-net driver against a thread playing a modern virtio-net device
//! (`VirtioBar` over `FakeBar`, and `FakeDma`), on split and on packed rings.

use std::collections::HashSet;
use std::ops::Range;
use std::time::{Duration, Instant};
use zcnic::virtio::{feature, negotiate, status, DmaMem, QueueKind, Transport, VirtioNet};
use zcnic::{Config, Error, Nic, Packet, PciAddr, DATA_ROOM};
use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
use zcnic_tests::chains;
use zcnic_tests::fake_virtio::{
    Behaviour, Counts, FakeVirtio, Inject, Notify, Started, HDR_LEN, MAC, RX, TX,
};

type Split = SplitQueue<DmaMem>;
type Packed = PackedQueue<DmaMem>;

/// The fake's queue maximum, and so the size of both rings.
const QUEUE: u16 = 64;
/// What the driver accepts from the fake by default (RING_PACKED aside).
const BASE: u64 = feature::VERSION_1
    | feature::ACCESS_PLATFORM
    | feature::MAC
    | feature::STATUS
    | feature::EVENT_IDX;
/// A guard against hangs only; every wait ends on a condition.
const TIMEOUT: Duration = Duration::from_secs(20);

fn addr() -> PciAddr {
    "0000:00:03.0".parse().unwrap()
}

fn config() -> Config {
    Config {
        rx_ring: 256,
        tx_ring: 256,
        pool: 1024,
        reset_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

/// The default device, offering RING_PACKED exactly when `Q` is the packed format.
fn behaviour<Q: QueueKind>() -> Behaviour {
    Behaviour {
        packed: Q::PACKED,
        ..Behaviour::default()
    }
}

fn open_with<Q: QueueKind>(dev: &FakeVirtio, cfg: &Config) -> VirtioNet<Q> {
    let t = dev.transport();
    let features = negotiate(&t, &addr(), cfg, Q::PACKED).expect("features negotiated");
    assert_eq!(features & feature::RING_PACKED != 0, Q::PACKED);
    VirtioNet::<Q>::new(Box::new(t), features, &dev.dma, addr(), cfg).expect("driver comes up")
}

fn open<Q: QueueKind>(dev: &FakeVirtio) -> VirtioNet<Q> {
    open_with(dev, &config())
}

fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ seq as u8)
        .collect();
    f[..4].copy_from_slice(&seq.to_le_bytes());
    f
}

/// Frame lengths 60..=1514, varying with the sequence number.
fn len_of(seq: u32) -> usize {
    60 + (seq as usize * 37) % 1455
}

/// Frame lengths 60..=63, for the long runs.
fn small(seq: u32) -> usize {
    60 + seq as usize % 4
}

/// How long frame `seq` is.
type Lens = fn(u32) -> usize;

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn packet(nic: &impl Nic, seq: u32, len: Lens) -> Packet {
    nic.pool()
        .alloc_copy(&frame(seq, len(seq)))
        .expect("a free buffer")
}

/// Sends frames `seqs` in bursts of `burst`, retrying while the ring is full.
fn send(nic: &mut impl Nic, seqs: Range<u32>, burst: usize, len: Lens) {
    let mut batch = Vec::with_capacity(burst);
    let (mut seq, end) = (seqs.start, Instant::now() + TIMEOUT);
    while seq < seqs.end || !batch.is_empty() {
        while batch.len() < burst && seq < seqs.end {
            batch.push(packet(nic, seq, len));
            seq += 1;
        }
        if nic.tx_batch(&mut batch) == 0 {
            assert!(Instant::now() < end, "transmit stuck before frame {seq}");
            std::thread::yield_now();
        }
    }
}

/// One `tx_batch` of frames `seqs`, which must take them all (one publish, at most one kick).
fn burst(nic: &mut impl Nic, seqs: Range<u32>) {
    let mut batch: Vec<Packet> = seqs.clone().map(|s| packet(nic, s, len_of)).collect();
    assert_eq!(nic.tx_batch(&mut batch), seqs.len(), "burst {seqs:?}");
}

/// The device sent frames `seqs`, in order, byte for byte, and nothing else.
fn assert_sent(dev: &FakeVirtio, seqs: Range<u32>, len: Lens) {
    let sent = dev.sent();
    assert_eq!(sent.len(), seqs.len(), "frames sent");
    for (f, seq) in sent.iter().zip(seqs) {
        assert!(f == &frame(seq, len(seq)), "frame {seq} differs");
    }
}

/// Polls until `n` frames arrived; every packet stays alive, so a buffer handed out twice
/// would show up as a repeated IOVA.
fn receive(nic: &mut impl Nic, n: usize) -> Vec<Packet> {
    let mut got = Vec::with_capacity(n + 4 * usize::from(QUEUE));
    // A `max` above what can be pending at once: each call drains every visible used entry,
    // so entries the device exposes together are consumed before the ring is refilled.
    wait("frames to arrive", || {
        nic.rx_batch(&mut got, 4 * usize::from(QUEUE));
        got.len() >= n
    });
    let iovas: HashSet<u64> = got.iter().map(Packet::iova).collect();
    assert_eq!(iovas.len(), got.len(), "a buffer was handed out twice");
    got
}

/// Nothing the device saw was malformed: no DMA fault, no bad header, register access or
/// doorbell write.
fn assert_clean(dev: &FakeVirtio) {
    let c = dev.counts();
    let bad = (c.faults, c.bad_headers, c.bad_accesses, c.misdirected_kicks);
    assert_eq!(bad, (0, 0, 0, 0), "{c:?}");
}

// 1. Bring-up.

#[test]
fn negotiation_takes_packed_only_when_offered_and_allowed() {
    for (offered, allowed) in [(true, true), (true, false), (false, true), (false, false)] {
        let dev = FakeVirtio::start(Behaviour {
            packed: offered,
            ..Behaviour::default()
        });
        let t = dev.transport();
        let got = negotiate(&t, &addr(), &config(), allowed).expect("negotiated");
        let packed = if offered && allowed {
            feature::RING_PACKED
        } else {
            0
        };
        assert_eq!(got, BASE | packed, "offered {offered}, allowed {allowed}");
        assert_eq!(dev.driver_features(), got, "what the device saw written");
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        assert_eq!(t.status(), s);
        assert_clean(&dev);
    }
    // Features the device does not offer are not taken.
    let dev = FakeVirtio::start(Behaviour {
        event_idx: false,
        ..Behaviour::default()
    });
    let got = negotiate(&dev.transport(), &addr(), &config(), true).unwrap();
    assert_eq!(got, BASE & !feature::EVENT_IDX);
}

fn comes_up<Q: QueueKind>() {
    let dev = FakeVirtio::start(behaviour::<Q>());
    let nic = open::<Q>(&dev);
    assert_eq!(nic.mac(), MAC);
    assert!(nic.link().up);
    let name = if Q::PACKED { "packed" } else { "split" };
    assert_eq!(nic.driver(), format!("virtio-net {name}"));
    let started = Started {
        packed: Q::PACKED,
        event_idx: true,
        sizes: [Some(QUEUE), Some(QUEUE)],
    };
    assert_eq!(dev.started(), Some(started));
    // The receive ring was filled with one publish, which crossed the device's event.
    assert_eq!(dev.counts().kicks, [1, 0]);
    drop(nic);
    // Closing resets the device (negotiation reset it once already): its rings are gone
    // before their memory is freed.
    assert_eq!(dev.started(), None);
    assert_eq!(dev.counts().resets, 2);
    assert_clean(&dev);
}

#[test]
fn comes_up_split_with_mac_link_and_rings() {
    comes_up::<Split>();
}

#[test]
fn comes_up_packed_with_mac_link_and_rings() {
    comes_up::<Packed>();
}

#[test]
fn link_down_is_reported_not_fatal() {
    let dev = FakeVirtio::start(Behaviour {
        link_up: false,
        ..Behaviour::default()
    });
    let nic = open::<Split>(&dev);
    assert!(!nic.link().up);
    assert_eq!(nic.link().to_string(), "down");
}

fn queue_sizes<Q: QueueKind>() {
    let dev = FakeVirtio::start(Behaviour {
        queue_max: 100,
        ..behaviour::<Q>()
    });
    let cfg = Config {
        rx_ring: 512,
        tx_ring: 16,
        ..config()
    };
    let _nic = open_with::<Q>(&dev, &cfg);
    // The smaller of the wish and the maximum, rounded down to a power of two.
    let sizes = dev.started().expect("running").sizes;
    assert_eq!(sizes, [Some(64), Some(16)]);
}

#[test]
fn queue_size_is_the_wish_capped_by_the_device_maximum() {
    queue_sizes::<Split>();
    queue_sizes::<Packed>();
}

#[test]
fn device_refusing_features_fails_negotiation() {
    let dev = FakeVirtio::start(Behaviour {
        refuse_features: true,
        ..Behaviour::default()
    });
    let t = dev.transport();
    match negotiate(&t, &addr(), &config(), true) {
        Err(Error::Io(msg)) => assert!(msg.contains("FEATURES_OK"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_ne!(t.status() & status::FAILED, 0);
}

// 2. Transmit.

fn tx_wraps<Q: QueueKind>(b: Behaviour, total: u32, len: Lens) {
    let dev = FakeVirtio::start(b);
    let mut nic = open::<Q>(&dev);
    let pool = nic.pool().clone();
    send(&mut nic, 0..total, 32, len);
    wait("the device to send everything", || {
        dev.sent_count() == u64::from(total)
    });
    assert!(nic.flush());
    assert_sent(&dev, 0..total, len);
    let stats = nic.stats();
    assert_eq!((stats.tx_packets, stats.tx_errors), (u64::from(total), 0));
    let bytes: usize = (0..total).map(len).sum();
    assert_eq!(stats.tx_bytes, bytes as u64);
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
    assert_clean(&dev);
}

#[test]
fn tx_split_wraps_ten_rings_and_returns_every_buffer() {
    tx_wraps::<Split>(behaviour::<Split>(), 10 * u32::from(QUEUE) + 17, len_of);
}

#[test]
fn tx_packed_wraps_ten_rings_and_returns_every_buffer() {
    tx_wraps::<Packed>(behaviour::<Packed>(), 10 * u32::from(QUEUE) + 17, len_of);
}

/// Recycled frames come back without their virtio header, exactly as sent.
fn tx_recycle<Q: QueueKind>() {
    let dev = FakeVirtio::start(behaviour::<Q>());
    let mut nic = open::<Q>(&dev);
    let pool = nic.pool().clone();
    let total = 4 * u32::from(QUEUE) + 17;
    let reused = zcnic_tests::datapath::send_recycling(&mut nic, total, |s| frame(s, len_of(s)));
    assert!(
        reused >= (total - 2 * u32::from(QUEUE)) as usize,
        "only {reused} reused"
    );
    wait("the device to send everything", || {
        dev.sent_count() == u64::from(total)
    });
    assert!(nic.flush());
    assert_sent(&dev, 0..total, len_of);
    assert_eq!(
        (nic.stats().tx_packets, nic.stats().tx_errors),
        (u64::from(total), 0)
    );
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
    assert_clean(&dev);
}

#[test]
fn tx_recycle_split_hands_back_frames_without_the_header() {
    tx_recycle::<Split>();
}

#[test]
fn tx_recycle_packed_hands_back_frames_without_the_header() {
    tx_recycle::<Packed>();
}

/// 70 000 small frames: the split ring's 16-bit avail and used indices wrap past 65535.
#[test]
fn tx_split_indices_wrap_past_65536() {
    let b = Behaviour {
        queue_max: 32,
        ..behaviour::<Split>()
    };
    tx_wraps::<Split>(b, 70_000, small);
}

/// 70 000 small frames on 32 descriptors: both wrap counters flip over 4000 times.
#[test]
fn tx_packed_wrap_counters_flip_thousands_of_times() {
    let b = Behaviour {
        queue_max: 32,
        ..behaviour::<Packed>()
    };
    tx_wraps::<Packed>(b, 70_000, small);
}

// 3. Receive.

/// Receives four rings of frames; with `recycle`, through `rx_batch_recycle`, every frame
/// read handed back (its front moved, which the driver must undo) as a spare.
fn rx_refills<Q: QueueKind>(recycle: bool) {
    let dev = FakeVirtio::start(behaviour::<Q>());
    let mut nic = open::<Q>(&dev);
    let pool = nic.pool().clone();
    let n = 4 * u32::from(QUEUE);
    for seq in 0..n {
        dev.inject(Inject::Frame(frame(seq, len_of(seq))));
    }
    // Until the driver refills, the device has the buffers of one ring and no more.
    wait("the first ring to fill", || {
        dev.counts().rx_used >= u64::from(QUEUE)
    });
    assert_eq!(dev.counts().rx_used, u64::from(QUEUE));
    let (mut out, mut spare) = (Vec::with_capacity(64), Vec::new());
    let (mut got, end) = (0u32, Instant::now() + TIMEOUT);
    while got < n {
        assert!(Instant::now() < end, "stuck at {got} of {n}");
        if recycle {
            nic.rx_batch_recycle(&mut out, 32, &mut spare);
        } else {
            nic.rx_batch(&mut out, 32);
        }
        for mut p in out.drain(..) {
            assert!(p.data() == frame(got, len_of(got)), "frame {got} differs");
            got += 1;
            if recycle {
                p.trim_front(3).unwrap();
                spare.push(p);
            }
        }
        // The refills are taken from the spares: they do not pile up.
        assert!(spare.len() <= 64, "{} spares left untaken", spare.len());
    }
    drop(spare);
    let stats = nic.stats();
    assert_eq!((stats.rx_packets, stats.rx_errors), (u64::from(n), 0));
    let bytes: usize = (0..n).map(len_of).sum();
    assert_eq!(stats.rx_bytes, bytes as u64);
    // The ring holds one buffer per slot; everything handed out came back.
    assert_eq!(pool.free_count(), pool.capacity() - usize::from(QUEUE));
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
    assert_clean(&dev);
}

#[test]
fn rx_split_refills_across_four_rings() {
    rx_refills::<Split>(false);
}

#[test]
fn rx_packed_refills_across_four_rings() {
    rx_refills::<Packed>(false);
}

#[test]
fn rx_recycle_split_refills_from_the_frames_handed_back() {
    rx_refills::<Split>(true);
}

#[test]
fn rx_recycle_packed_refills_from_the_frames_handed_back() {
    rx_refills::<Packed>(true);
}

// 4. A device writing bad used entries.

/// Bad used entries are counted in `rx_errors` and dropped; no buffer reaches the
/// application twice; the frames around them arrive in order. What each costs:
/// - an out-of-range id: the buffer the device took for it is lost to the driver (it
///   cannot know the device is done with it) and stays posted until the port closes;
/// - a duplicate of a buffer just returned: the second entry is refused, and the buffer
///   whose place it took is lost likewise;
/// - a length beyond the buffer: the buffer is quarantined (the device may still write
///   it), so neither it nor its slot is reused until the port closes;
/// - a length of 0 or less than the header: the buffer goes back to the pool.
///
/// The ring then works on with 4 slots fewer. On a split ring a `used.idx` that jumps
/// ahead of what was published is reported once and consumes nothing: the queue stalls
/// until the index is plausible again, then carries on.
fn rx_bad_used_entries<Q: QueueKind>() {
    let dev = FakeVirtio::start(behaviour::<Q>());
    let mut nic = open::<Q>(&dev);
    let pool = nic.pool().clone();
    let f = |seq: u32| frame(seq, len_of(seq));
    // Split ids are 32 bits: one beyond 16 bits must not alias a valid id.
    let huge = if Q::PACKED { 0xffff } else { 0x1_0003 };
    let too_long = (DATA_ROOM + HDR_LEN + 1) as u32;
    // Each bad entry is followed by a good frame: when that frame arrives, the entry before
    // it has been consumed, so the error count moves by exactly one per bad entry.
    let bad = [
        Inject::BadId(u32::from(QUEUE)),
        Inject::BadId(huge),
        Inject::Length(too_long),
        Inject::Length(HDR_LEN as u32 - 7),
        Inject::Length(0),
    ];
    let (mut held, mut errors, mut seq) = (Vec::new(), 0, 0);
    for what in bad {
        let label = format!("{what:?}");
        dev.inject(what);
        dev.inject(Inject::Frame(f(seq)));
        held.extend(receive(&mut nic, 1));
        assert!(held[seq as usize].data() == f(seq), "frame after {label}");
        errors += 1;
        assert_eq!(nic.stats().rx_errors, errors, "after {label}");
        seq += 1;
    }
    // The duplicate comes with the frame it repeats.
    dev.inject(Inject::Duplicate(f(seq)));
    dev.inject(Inject::Frame(f(seq + 1)));
    held.extend(receive(&mut nic, 2));
    for s in seq..seq + 2 {
        assert!(held[s as usize].data() == f(s), "frame {s} differs");
    }
    errors += 1;
    assert_eq!(nic.stats().rx_errors, errors, "after the duplicate");
    seq += 2;
    if !Q::PACKED {
        dev.inject(Inject::IndexJump);
        let mut out = Vec::new();
        wait("the index jump to be seen", || {
            nic.rx_batch(&mut out, 64);
            nic.stats().rx_errors == errors + 1
        });
        errors += 1;
        for _ in 0..100 {
            assert_eq!(nic.rx_batch(&mut out, 64), 0, "the queue is stalled");
        }
        assert_eq!(nic.stats().rx_errors, errors, "the jump is reported once");
        dev.inject(Inject::Frame(f(seq)));
        held.extend(receive(&mut nic, 1));
        assert!(held[seq as usize].data() == f(seq), "frame after the jump");
    }
    // Lost and quarantined buffers stay in the ring: one per slot still, plus what the
    // application holds.
    let in_app = held.len();
    assert_eq!(
        pool.free_count(),
        pool.capacity() - usize::from(QUEUE) - in_app
    );
    // The ring works on, four slots short.
    let from = 100;
    let n = 4 * u32::from(QUEUE);
    for seq in from..from + n {
        dev.inject(Inject::Frame(f(seq)));
    }
    let more = receive(&mut nic, n as usize);
    assert_eq!(more.len(), n as usize);
    for (seq, p) in (from..).zip(&more) {
        assert!(p.data() == f(seq), "frame {seq} differs");
    }
    let all: HashSet<u64> = held.iter().chain(&more).map(Packet::iova).collect();
    assert_eq!(
        all.len(),
        held.len() + more.len(),
        "a buffer handed out twice"
    );
    let stats = nic.stats();
    assert_eq!(stats.rx_packets, (held.len() + more.len()) as u64);
    assert_eq!(stats.rx_errors, errors);
    drop((held, more, nic));
    assert_eq!(pool.free_count(), pool.capacity());
    assert_clean(&dev);
}

#[test]
fn rx_split_bad_used_entries_are_counted_not_delivered() {
    rx_bad_used_entries::<Split>();
}

#[test]
fn rx_packed_bad_used_entries_are_counted_not_delivered() {
    rx_bad_used_entries::<Packed>();
}

/// A transmit completion claiming the device wrote 100 bytes into a buffer it may only
/// read: counted in `tx_errors`, the buffer quarantined until the port closes, and the
/// queue drains.
fn tx_used_len<Q: QueueKind>() {
    let dev = FakeVirtio::start(behaviour::<Q>());
    let mut nic = open::<Q>(&dev);
    let pool = nic.pool().clone();
    dev.bad_tx_len(1);
    send(&mut nic, 0..10, 32, len_of);
    wait("ten frames", || dev.sent_count() == 10);
    assert!(nic.flush());
    assert_sent(&dev, 0..10, len_of);
    let stats = nic.stats();
    assert_eq!((stats.tx_packets, stats.tx_errors), (10, 1));
    assert_eq!(pool.free_count(), pool.capacity() - usize::from(QUEUE) - 1);
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
    assert_clean(&dev);
}

#[test]
fn tx_split_used_len_on_a_read_only_buffer_is_counted() {
    tx_used_len::<Split>();
}

#[test]
fn tx_packed_used_len_on_a_read_only_buffer_is_counted() {
    tx_used_len::<Packed>();
}

// 5. Notification suppression.

/// EVENT_IDX: the device asks for a kick when the driver adds past what it has consumed.
/// While it is busy (paused), eight bursts cross that point once: one kick. Once it has
/// caught up before each burst, every burst crosses it: one kick each. (Bursts of four
/// while it is paused: the driver takes nothing while more than half the queue is in
/// flight, see `queue_more_than_half_full_takes_nothing_until_a_chunk_completes`.)
fn kicks_with_event_idx<Q: QueueKind>() {
    let dev = FakeVirtio::start(behaviour::<Q>());
    let mut nic = open::<Q>(&dev);
    dev.pause_tx(true);
    for b in 0..8 {
        burst(&mut nic, b * 4..b * 4 + 4);
    }
    assert_eq!(dev.counts().kicks[TX], 1, "eight bursts to a busy device");
    dev.pause_tx(false);
    wait("the backlog to drain", || dev.sent_count() == 32);
    for b in 4..12 {
        burst(&mut nic, b * 8..b * 8 + 8);
        wait("the burst to be sent", || {
            dev.sent_count() == u64::from(b * 8 + 8)
        });
    }
    assert_eq!(
        dev.counts().kicks[TX],
        1 + 8,
        "eight bursts to an idle device"
    );
    assert!(nic.flush());
    assert_sent(&dev, 0..96, len_of);
    assert_clean(&dev);
}

#[test]
fn kicks_split_event_idx_one_per_catch_up() {
    kicks_with_event_idx::<Split>();
}

#[test]
fn kicks_packed_event_idx_one_per_catch_up() {
    kicks_with_event_idx::<Packed>();
}

/// Without EVENT_IDX, a device that wants notifications gets one per burst, busy or not.
fn kicks_without_event_idx<Q: QueueKind>() {
    let dev = FakeVirtio::start(Behaviour {
        event_idx: false,
        ..behaviour::<Q>()
    });
    let mut nic = open::<Q>(&dev);
    dev.pause_tx(true);
    for b in 0..8 {
        burst(&mut nic, b * 4..b * 4 + 4);
    }
    assert_eq!(dev.counts().kicks[TX], 8);
    dev.pause_tx(false);
    wait("the backlog to drain", || dev.sent_count() == 32);
    assert!(nic.flush());
    assert_sent(&dev, 0..32, len_of);
    assert_clean(&dev);
}

/// With more than half the queue in flight the driver takes nothing, however much room is
/// left, until enough completes; then it takes what fits (virtio's slow mode,
/// docs/performance.md).
fn chunked<Q: QueueKind>() {
    let dev = FakeVirtio::start(behaviour::<Q>());
    let mut nic = open::<Q>(&dev);
    dev.pause_tx(true);
    burst(&mut nic, 0..40);
    let mut more: Vec<Packet> = (40..44).map(|s| packet(&nic, s, len_of)).collect();
    assert_eq!(
        nic.tx_batch(&mut more),
        0,
        "24 free of 64: below a chunk of 32"
    );
    assert_eq!(more.len(), 4, "nothing taken");
    dev.pause_tx(false);
    wait("the queue to drain", || dev.sent_count() == 40);
    assert_eq!(nic.tx_batch(&mut more), 4);
    assert!(nic.flush());
    assert_sent(&dev, 0..44, len_of);
    assert_clean(&dev);
}

#[test]
fn queue_more_than_half_full_takes_nothing_until_a_chunk_completes() {
    chunked::<Split>();
    chunked::<Packed>();
}

/// Completed frames stay in the queue while it has room for a chunk (each look at the
/// used ring costs the device a cache line), come back all at once when room is short
/// (to the pool, or with `tx_batch_recycle` to the caller, unchanged), and none is lost.
fn reclaimed_when_short<Q: QueueKind>(recycle: bool) {
    let dev = FakeVirtio::start(behaviour::<Q>());
    let mut nic = open::<Q>(&dev);
    let mut done = Vec::new();
    let send = |nic: &mut VirtioNet<Q>, done: &mut Vec<Packet>, seqs: Range<u32>| {
        let mut batch: Vec<Packet> = seqs.clone().map(|s| packet(nic, s, len_of)).collect();
        let sent = if recycle {
            nic.tx_batch_recycle(&mut batch, done)
        } else {
            nic.tx_batch(&mut batch)
        };
        assert_eq!(sent, seqs.len(), "burst {seqs:?}");
    };
    // Buffers back with the pool or the caller.
    let back = |nic: &VirtioNet<Q>, done: &Vec<Packet>| nic.pool().free_count() + done.len();
    send(&mut nic, &mut done, 0..20);
    wait("the first burst to be sent", || dev.sent_count() == 20);
    let before = back(&nic, &done);
    send(&mut nic, &mut done, 20..30);
    assert_eq!(
        back(&nic, &done),
        before - 10,
        "44 of 64 were free: the 20 sent stay"
    );
    send(&mut nic, &mut done, 30..50);
    wait("the queue to drain", || dev.sent_count() == 50);
    assert_eq!(
        back(&nic, &done),
        before - 30,
        "34 were free: still a chunk"
    );
    send(&mut nic, &mut done, 50..54);
    assert_eq!(
        back(&nic, &done),
        before + 20 - 4,
        "14 were free: all 50 sent come back, 4 new are out"
    );
    if recycle {
        assert_eq!(done.len(), 50, "all to the caller");
        for (p, seq) in done.iter().zip(0..) {
            assert!(
                p.data() == frame(seq, len_of(seq)),
                "frame {seq} as handed in"
            );
        }
    }
    drop(done);
    assert!(nic.flush());
    assert_sent(&dev, 0..54, len_of);
    assert_clean(&dev);
    let pool = nic.pool().clone();
    drop(nic);
    assert_eq!(
        pool.free_count(),
        pool.capacity(),
        "every buffer back once closed"
    );
}

#[test]
fn completions_are_collected_when_the_queue_is_short_of_room() {
    for recycle in [false, true] {
        reclaimed_when_short::<Split>(recycle);
        reclaimed_when_short::<Packed>(recycle);
    }
}

#[test]
fn kicks_split_without_event_idx_one_per_burst() {
    kicks_without_event_idx::<Split>();
}

#[test]
fn kicks_packed_without_event_idx_one_per_burst() {
    kicks_without_event_idx::<Packed>();
}

/// A polling device that suppresses notifications (split VIRTQ_USED_F_NO_NOTIFY, or with
/// EVENT_IDX an event index already passed; packed RING_EVENT_FLAGS_DISABLE) gets none on
/// either queue, and everything is still sent.
fn no_kicks_when_suppressed<Q: QueueKind>(event_idx: bool) {
    let dev = FakeVirtio::start(Behaviour {
        event_idx,
        notify: Notify::Suppressed,
        ..behaviour::<Q>()
    });
    let mut nic = open::<Q>(&dev);
    let total = 10 * u32::from(QUEUE) + 17;
    send(&mut nic, 0..total, 32, len_of);
    wait("everything to be sent", || {
        dev.sent_count() == u64::from(total)
    });
    assert!(nic.flush());
    assert_sent(&dev, 0..total, len_of);
    let Counts { kicks, .. } = dev.counts();
    assert_eq!(kicks, [0, 0], "event_idx {event_idx}");
    assert_eq!(kicks[RX] + kicks[TX], 0);
    assert_clean(&dev);
}

#[test]
fn no_kicks_split_when_the_device_suppresses_them() {
    no_kicks_when_suppressed::<Split>(false);
    no_kicks_when_suppressed::<Split>(true);
}

#[test]
fn no_kicks_packed_when_the_device_suppresses_them() {
    no_kicks_when_suppressed::<Packed>(false);
    no_kicks_when_suppressed::<Packed>(true);
}

/// A device that acts on a queue only when notified, and asks for each kick as the spec
/// says (see `Behaviour::only_when_notified`), still moves every frame: receive runs the
/// ring dry several times, so each refill must kick it awake; transmit sends ten rings in
/// bursts. A driver that forgets a notification the device asked for stalls here.
fn frames_flow_when_only_notified<Q: QueueKind>(event_idx: bool) {
    let dev = FakeVirtio::start(Behaviour {
        event_idx,
        only_when_notified: true,
        ..behaviour::<Q>()
    });
    let mut nic = open::<Q>(&dev);
    let n = 4 * u32::from(QUEUE);
    for seq in 0..n {
        dev.inject(Inject::Frame(frame(seq, len_of(seq))));
    }
    // The kick after the first refill wakes the device; it fills the ring and sleeps.
    wait("the first ring to fill", || {
        dev.counts().rx_used >= u64::from(QUEUE)
    });
    let got = receive(&mut nic, n as usize);
    assert_eq!(got.len(), n as usize, "event_idx {event_idx}");
    for (seq, p) in (0..n).zip(&got) {
        assert!(p.data() == frame(seq, len_of(seq)), "frame {seq} differs");
    }
    drop(got);
    let total = 10 * u32::from(QUEUE) + 17;
    send(&mut nic, 0..total, 32, len_of);
    wait("everything to be sent", || {
        dev.sent_count() == u64::from(total)
    });
    assert!(nic.flush());
    assert_sent(&dev, 0..total, len_of);
    let Counts { kicks, .. } = dev.counts();
    assert!(kicks[RX] > 0 && kicks[TX] > 0, "{kicks:?}");
    assert_clean(&dev);
}

#[test]
fn frames_flow_split_when_the_device_acts_only_on_notifications() {
    frames_flow_when_only_notified::<Split>(false);
    frames_flow_when_only_notified::<Split>(true);
}

#[test]
fn frames_flow_packed_when_the_device_acts_only_on_notifications() {
    frames_flow_when_only_notified::<Packed>(false);
    frames_flow_when_only_notified::<Packed>(true);
}

// Zero-copy transmit: a header from the pool and a payload from application memory.

fn tx_chain<Q: QueueKind>() {
    use std::sync::Arc;
    use zcnic::UserRegion;
    // The longest frame is 9000 bytes: the port's MTU must allow it.
    let dev = FakeVirtio::start(Behaviour {
        mrg_rxbuf: true,
        ..behaviour::<Q>()
    });
    let cfg = Config {
        mtu: 9000,
        ..config()
    };
    let mut nic = open_with::<Q>(&dev, &cfg);
    let payload: Vec<u8> = (0..9000u32).map(|i| (i * 13 % 251) as u8).collect();
    let mut region = Arc::new(UserRegion::with_data(&payload, dev.dma.mapper()).unwrap());
    dev.pause_tx(true);
    let mut batch = chains::batch(nic.pool(), &region);
    assert_eq!(nic.tx_batch(&mut batch), 3);
    assert!(!nic.flush(), "a stalled device has not sent anything");
    assert!(
        UserRegion::data_mut(&mut region).is_none(),
        "in flight: read-only"
    );
    dev.pause_tx(false);
    wait("the chains", || dev.sent_count() == 3);
    assert!(nic.flush());
    chains::assert_sent(&dev.sent(), &payload);
    assert!(
        UserRegion::data_mut(&mut region).is_some(),
        "the region comes back once the device is done"
    );
}

#[test]
fn tx_split_chains_header_and_application_payload() {
    tx_chain::<SplitQueue<DmaMem>>();
}

#[test]
fn tx_packed_chains_header_and_application_payload() {
    tx_chain::<PackedQueue<DmaMem>>();
}

// Ceiling mode.

/// The one frame goes out exactly as many times as `repost` reported, none of its chains
/// counts as an error, and normal sends work after a flush.
fn ceiling<Q: QueueKind>() {
    let dev = FakeVirtio::start(behaviour::<Q>());
    let mut nic = open::<Q>(&dev);
    let f = frame(7, 60);
    let mut posted = 0;
    let end = Instant::now() + TIMEOUT;
    while posted < 2000 {
        posted += nic.repost(&f, 32).expect("virtio-net has a ceiling mode");
        assert!(Instant::now() < end, "ceiling mode stuck at {posted}");
    }
    assert!(nic.flush());
    wait("every copy on the wire", || {
        dev.sent_count() >= posted as u64
    });
    let sent = dev.sent();
    assert_eq!(sent.len(), posted, "the device sent what repost reported");
    assert!(sent.iter().all(|s| *s == f), "every copy is the frame");
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_errors), (posted as u64, 0));
    send(&mut nic, 0..3, 3, len_of);
    wait("the normal frames", || {
        dev.sent_count() >= posted as u64 + 3
    });
    assert!(
        dev.sent()[posted..]
            == [
                frame(0, len_of(0)),
                frame(1, len_of(1)),
                frame(2, len_of(2))
            ]
    );
    assert_clean(&dev);
}

#[test]
fn ceiling_split() {
    ceiling::<Split>();
}

#[test]
fn ceiling_packed() {
    ceiling::<Packed>();
}
