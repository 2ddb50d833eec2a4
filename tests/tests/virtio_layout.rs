//! Message framing (issue 19 part 5, "ANY_LAYOUT"): virtio-net against a fake legacy device
//! that offers or withholds VIRTIO_F_ANY_LAYOUT, on split and packed rings.
//!
//! Withheld, the device frames as VirtualBox's does: the header is the first descriptor
//! and must be nothing else, and a chain that shares it with frame bytes counts as
//! `misframed` (and comes out wrong). Offered, it reads header and frame over the chain as
//! QEMU does. In both, frames must cross byte for byte and every buffer come home.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::virtio::{feature, negotiate, DmaMem, QueueKind, VirtioNet};
use zcnic::{Config, Nic, Packet, PciAddr, UserRegion};
use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
use zcnic_tests::chains;
use zcnic_tests::fake_virtio::{Behaviour, FakeVirtio, Inject};

type Split = SplitQueue<DmaMem>;
type Packed = PackedQueue<DmaMem>;

/// The fake's queue maximum; a legacy driver takes the size the device has.
const QUEUE: u16 = 64;
const TIMEOUT: Duration = Duration::from_secs(20);

fn addr() -> PciAddr {
    "0000:00:03.0".parse().unwrap()
}

fn config() -> Config {
    Config {
        pool: 1024,
        reset_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

/// A legacy device on `Q`'s ring format, offering ANY_LAYOUT or not.
fn legacy<Q: QueueKind>(any_layout: bool) -> Behaviour {
    Behaviour {
        queue_max: QUEUE,
        packed: Q::PACKED,
        legacy: true,
        any_layout,
        ..Behaviour::default()
    }
}

/// Opens the driver on `dev`; `lie` adds ANY_LAYOUT to what the driver believes it
/// negotiated (the device does not know), which makes it frame as zcnic did before.
fn open<Q: QueueKind>(dev: &FakeVirtio, lie: bool) -> VirtioNet<Q> {
    open_with(dev, lie, &config())
}

fn open_with<Q: QueueKind>(dev: &FakeVirtio, lie: bool, cfg: &Config) -> VirtioNet<Q> {
    let t = dev.any_transport();
    let features = negotiate(t.as_ref(), &addr(), cfg, Q::PACKED).expect("negotiated");
    assert_eq!(features & feature::RING_PACKED != 0, Q::PACKED);
    let features = if lie {
        features | feature::ANY_LAYOUT
    } else {
        features
    };
    VirtioNet::<Q>::new(t, features, &dev.dma, addr(), cfg).expect("driver comes up")
}

fn frame(seq: u32) -> Vec<u8> {
    let len = 60 + (seq as usize * 37) % 1455;
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ seq as u8)
        .collect();
    f[..4].copy_from_slice(&seq.to_le_bytes());
    f
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn send(nic: &mut impl Nic, seqs: Range<u32>) {
    let mut batch = Vec::with_capacity(32);
    let (mut seq, end) = (seqs.start, Instant::now() + TIMEOUT);
    while seq < seqs.end || !batch.is_empty() {
        while batch.len() < 32 && seq < seqs.end {
            batch.push(nic.pool().alloc_copy(&frame(seq)).expect("a free buffer"));
            seq += 1;
        }
        if nic.tx_batch(&mut batch) == 0 {
            assert!(Instant::now() < end, "transmit stuck before frame {seq}");
            std::thread::yield_now();
        }
    }
}

/// No DMA fault, bad header, bad register access or mis-framed chain.
fn assert_clean(dev: &FakeVirtio) {
    let c = dev.counts();
    let bad = (c.faults, c.bad_headers, c.bad_accesses, c.misframed);
    assert_eq!(bad, (0, 0, 0, 0), "{c:?}");
}

#[test]
fn any_layout_is_taken_when_offered_and_the_header_goes_apart_only_without_it() {
    for (b, apart) in [
        (legacy::<Split>(false), true),
        (legacy::<Split>(true), false),
        (Behaviour::default(), false),
        (
            Behaviour {
                any_layout: true,
                ..Behaviour::default()
            },
            false,
        ),
    ] {
        let dev = FakeVirtio::start(b);
        let nic = open::<Split>(&dev, false);
        assert_eq!(nic.header_apart(), apart, "{b:?}");
        let offered = b.offered() & feature::ANY_LAYOUT;
        assert_eq!(
            dev.driver_features() & feature::ANY_LAYOUT,
            offered,
            "{b:?}"
        );
        let name = nic.driver();
        assert_eq!(name.ends_with("header apart"), apart, "{name}");
    }
}

/// Ten rings' worth of frames of every length, byte for byte; every buffer back.
fn tx<Q: QueueKind>(any_layout: bool) {
    let dev = FakeVirtio::start(legacy::<Q>(any_layout));
    let mut nic = open::<Q>(&dev, false);
    let pool = nic.pool().clone();
    let n = 10 * u32::from(QUEUE) + 17;
    send(&mut nic, 0..n);
    wait("the device to send everything", || {
        dev.sent_count() == u64::from(n)
    });
    assert!(nic.flush());
    let sent = dev.sent();
    assert_eq!(sent.len(), n as usize);
    for (seq, f) in (0..n).zip(&sent) {
        assert!(*f == frame(seq), "frame {seq} differs");
    }
    assert_eq!(
        (nic.stats().tx_packets, nic.stats().tx_errors),
        (u64::from(n), 0)
    );
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
    assert_clean(&dev);
}

#[test]
fn tx_split_header_apart() {
    tx::<Split>(false);
}
#[test]
fn tx_packed_header_apart() {
    tx::<Packed>(false);
}
#[test]
fn tx_split_any_layout() {
    tx::<Split>(true);
}
#[test]
fn tx_packed_any_layout() {
    tx::<Packed>(true);
}

/// Four rings' worth of frames received byte for byte, no buffer handed out twice.
fn rx<Q: QueueKind>(any_layout: bool) {
    let dev = FakeVirtio::start(legacy::<Q>(any_layout));
    let mut nic = open::<Q>(&dev, false);
    let pool = nic.pool().clone();
    let n = 4 * u32::from(QUEUE);
    for seq in 0..n {
        dev.inject(Inject::Frame(frame(seq)));
    }
    // Two descriptors a buffer with the header apart: the ring holds half as many.
    let posted = if any_layout { QUEUE } else { QUEUE / 2 };
    wait("the first ring to fill", || {
        dev.counts().rx_used >= u64::from(posted)
    });
    assert_eq!(dev.counts().rx_used, u64::from(posted));
    let mut got: Vec<Packet> = Vec::new();
    wait("every frame", || {
        nic.rx_batch(&mut got, 64);
        got.len() >= n as usize
    });
    for (seq, p) in (0..n).zip(&got) {
        assert!(p.data() == frame(seq), "frame {seq} differs");
    }
    let iovas: HashSet<u64> = got.iter().map(Packet::iova).collect();
    assert_eq!(iovas.len(), got.len(), "a buffer was handed out twice");
    assert_eq!(
        (nic.stats().rx_packets, nic.stats().rx_errors),
        (u64::from(n), 0)
    );
    drop(got);
    assert_eq!(pool.free_count(), pool.capacity() - usize::from(posted));
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
    assert_clean(&dev);
}

#[test]
fn rx_split_header_apart() {
    rx::<Split>(false);
}
#[test]
fn rx_packed_header_apart() {
    rx::<Packed>(false);
}
#[test]
fn rx_split_any_layout() {
    rx::<Split>(true);
}
#[test]
fn rx_packed_any_layout() {
    rx::<Packed>(true);
}

/// With the header apart a full ring takes half as many frames, and the driver neither
/// overruns it nor loses what did not fit.
fn capacity<Q: QueueKind>() {
    let dev = FakeVirtio::start(legacy::<Q>(false));
    let mut nic = open::<Q>(&dev, false);
    dev.pause_tx(true);
    let mut batch: Vec<Packet> = (0..u32::from(QUEUE))
        .map(|s| nic.pool().alloc_copy(&frame(s)).unwrap())
        .collect();
    assert_eq!(nic.tx_batch(&mut batch), usize::from(QUEUE / 2));
    assert_eq!(
        batch.len(),
        usize::from(QUEUE / 2),
        "the rest stay with the caller"
    );
    assert_eq!(nic.tx_batch(&mut batch), 0, "the ring is full");
    dev.pause_tx(false);
    let end = Instant::now() + TIMEOUT;
    while !batch.is_empty() {
        nic.tx_batch(&mut batch);
        assert!(Instant::now() < end, "stuck");
    }
    assert!(nic.flush());
    let sent = dev.sent();
    assert_eq!(sent.len(), usize::from(QUEUE));
    assert!((0..u32::from(QUEUE))
        .zip(&sent)
        .all(|(s, f)| *f == frame(s)));
    assert_clean(&dev);
}

#[test]
fn capacity_split_header_apart() {
    capacity::<Split>();
}
#[test]
fn capacity_packed_header_apart() {
    capacity::<Packed>();
}

/// Zero copy with the header apart: header, head bytes and payload, three descriptors.
/// The longest frame is 9000 bytes: the port's MTU must allow it.
fn tx_payload<Q: QueueKind>() {
    let dev = FakeVirtio::start(Behaviour {
        mrg_rxbuf: true,
        ..legacy::<Q>(false)
    });
    let cfg = Config {
        mtu: 9000,
        ..config()
    };
    let mut nic = open_with::<Q>(&dev, false, &cfg);
    let payload: Vec<u8> = (0..9000u32).map(|i| (i * 13 % 251) as u8).collect();
    let region = Arc::new(UserRegion::with_data(&payload, dev.dma.mapper()).unwrap());
    let mut batch = chains::batch(nic.pool(), &region);
    assert_eq!(nic.tx_batch(&mut batch), 3);
    wait("the chains", || dev.sent_count() == 3);
    assert!(nic.flush());
    chains::assert_sent(&dev.sent(), &payload);
    assert_clean(&dev);
}

#[test]
fn tx_split_payload_header_apart() {
    tx_payload::<Split>();
}
#[test]
fn tx_packed_payload_header_apart() {
    tx_payload::<Packed>();
}

/// Ceiling mode re-posts its one frame with the header apart too.
fn ceiling<Q: QueueKind>() {
    let dev = FakeVirtio::start(legacy::<Q>(false));
    let mut nic = open::<Q>(&dev, false);
    let f = frame(7);
    let (mut posted, end) = (0, Instant::now() + TIMEOUT);
    while posted < 500 {
        posted += nic.repost(&f, 32).expect("virtio-net has a ceiling mode");
        assert!(Instant::now() < end, "ceiling mode stuck at {posted}");
    }
    assert!(nic.flush());
    wait("every copy", || dev.sent_count() >= posted as u64);
    assert!(
        dev.sent().iter().all(|s| *s == f),
        "every copy is the frame"
    );
    assert_eq!(dev.sent().len(), posted);
    assert_clean(&dev);
}

#[test]
fn ceiling_split_header_apart() {
    ceiling::<Split>();
}
#[test]
fn ceiling_packed_header_apart() {
    ceiling::<Packed>();
}

/// What zcnic did before: the header in the frame's descriptor on a legacy device that
/// did not offer ANY_LAYOUT. The fake catches it on both sides, as VirtualBox would
/// mis-frame it (ixy issue #35).
fn regression_shared_header<Q: QueueKind>() {
    let dev = FakeVirtio::start(legacy::<Q>(false));
    let mut nic = open::<Q>(&dev, true);
    send(&mut nic, 0..4);
    wait("the frames", || dev.sent_count() == 4);
    assert_eq!(dev.counts().misframed, 4, "{:?}", dev.counts());
    assert!(dev.sent()[0] != frame(0), "mis-framed on the wire");
    dev.inject(Inject::Frame(frame(9)));
    let mut got = Vec::new();
    wait("the frame", || {
        nic.rx_batch(&mut got, 8);
        !got.is_empty() || dev.counts().misframed > 4
    });
    assert!(dev.counts().misframed > 4, "{:?}", dev.counts());
}

#[test]
fn regression_legacy_without_any_layout_split_catches_a_shared_header() {
    regression_shared_header::<Split>();
}
#[test]
fn regression_legacy_without_any_layout_packed_catches_a_shared_header() {
    regression_shared_header::<Packed>();
}
