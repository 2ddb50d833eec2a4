//! virtio-net jumbo frames against the fake device: mergeable receive buffers gathered
//! into a `Packet` chain (2 to 8 buffers a frame, the ring wrapping in the middle of one,
//! a frame published piecemeal, a lying `num_buffers`), chained frames transmitted as one
//! descriptor chain, and the MTU checks at open; on split and packed rings, modern and
//! legacy with the header apart. Every buffer goes back to the pool.

use std::time::{Duration, Instant};
use zcnic::virtio::{feature, negotiate, DmaMem, QueueKind, VirtioNet};
use zcnic::{Config, Error, Nic, Packet, PciAddr, DATA_ROOM};
use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
use zcnic_tests::fake_virtio::{Behaviour, FakeVirtio, Inject};

type Split = SplitQueue<DmaMem>;
type Packed = PackedQueue<DmaMem>;

const TIMEOUT: Duration = Duration::from_secs(20);
/// The fake's queue size: 16 buffers, so 5-buffer frames wrap the ring mid-frame.
const QUEUE: u16 = 16;

fn addr() -> PciAddr {
    "0000:00:03.0".parse().unwrap()
}

fn config(mtu: usize) -> Config {
    Config {
        rx_ring: QUEUE.into(),
        tx_ring: QUEUE.into(),
        pool: 256,
        mtu,
        reset_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

/// A device offering mergeable buffers; legacy with the header apart when asked.
fn device<Q: QueueKind>(legacy: bool) -> FakeVirtio {
    FakeVirtio::start(Behaviour {
        queue_max: QUEUE,
        packed: Q::PACKED,
        mrg_rxbuf: true,
        legacy,
        ..Behaviour::default()
    })
}

fn open<Q: QueueKind>(dev: &FakeVirtio, cfg: &Config) -> Result<VirtioNet<Q>, Error> {
    let t = dev.any_transport();
    let features = negotiate(t.as_ref(), &addr(), cfg, Q::PACKED)?;
    VirtioNet::<Q>::new(t, features, &dev.dma, addr(), cfg)
}

fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8 ^ seq as u8)
        .collect();
    f[..6].fill(0xff); // broadcast: past any receive filter
    f[6..10].copy_from_slice(&seq.to_le_bytes());
    f
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Reads frames until `n` have come (or the timeout).
fn receive(nic: &mut impl Nic, n: usize) -> Vec<Packet> {
    let mut got = Vec::new();
    wait("frames to arrive", || {
        nic.rx_batch(&mut got, 32);
        got.len() >= n
    });
    got
}

/// Buffers a frame of `len` bytes takes, its 12-byte header in the first.
fn buffers(len: usize) -> usize {
    (len + 12).div_ceil(DATA_ROOM + 12)
}

/// Frames of 60 to 16018 bytes arrive byte-exact, each over the buffers it needs (up to
/// 8), the 16-buffer ring wrapping in the middle of frames.
fn rx_exact<Q: QueueKind>(legacy: bool) {
    let dev = device::<Q>(legacy);
    let mut nic = open::<Q>(&dev, &config(16000)).expect("opens");
    assert_ne!(nic.features() & feature::MRG_RXBUF, 0);
    assert_eq!(nic.mtu(), 16000);
    let pool = nic.pool().clone();
    let lens = [
        60,
        DATA_ROOM,
        DATA_ROOM + 1,
        // The last buffer holds 1 byte; then the header's 12 bytes.
        2 * (DATA_ROOM + 12) - 12 + 1,
        2 * (DATA_ROOM + 12),
        9000,
        9018,
        9000,
        16018,
        9000,
        4000,
        9000,
        16018,
        1514,
    ];
    for round in 0..3u32 {
        for (i, &len) in lens.iter().enumerate() {
            let seq = round * 100 + i as u32;
            let want = frame(seq, len);
            dev.inject(Inject::Frame(want.clone()));
            let got = receive(&mut nic, 1);
            assert_eq!(got.len(), 1, "frame {seq}");
            assert_eq!(
                got[0].segments().count(),
                buffers(len),
                "frame {seq} of {len}"
            );
            assert_eq!(got[0].total_len(), len);
            assert!(got[0].to_vec() == want, "frame {seq} of {len} byte-exact");
        }
    }
    let s = nic.stats();
    assert_eq!((s.rx_packets, s.rx_errors), (3 * lens.len() as u64, 0));
    assert_eq!(s.rx_bytes, 3 * lens.iter().sum::<usize>() as u64);
    // The ring's buffers are out; every other is back.
    assert_eq!(
        pool.free_count(),
        pool.capacity() - usize::from(QUEUE >> u16::from(legacy))
    );
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity(), "all back at close");
}

#[test]
fn rx_split_frames_over_several_buffers_byte_exact() {
    rx_exact::<Split>(false);
}
#[test]
fn rx_packed_frames_over_several_buffers_byte_exact() {
    rx_exact::<Packed>(false);
}
#[test]
fn rx_split_legacy_header_apart_byte_exact() {
    rx_exact::<Split>(true);
}

/// Frames injected back to back, read in bursts: several frames a burst, the ring
/// wrapping mid-frame, none lost.
fn rx_bursts<Q: QueueKind>() {
    let dev = device::<Q>(false);
    let mut nic = open::<Q>(&dev, &config(9000)).expect("opens");
    let want: Vec<Vec<u8>> = (0..40).map(|s| frame(s, 3000 + 150 * s as usize)).collect();
    for f in &want {
        dev.inject(Inject::Frame(f.clone()));
    }
    let got = receive(&mut nic, want.len());
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g.to_vec() == *w, "frame {i}");
    }
    assert_eq!(nic.stats().rx_errors, 0);
}

#[test]
fn rx_split_back_to_back_frames_wrap_the_ring() {
    rx_bursts::<Split>();
}
#[test]
fn rx_packed_back_to_back_frames_wrap_the_ring() {
    rx_bursts::<Packed>();
}

/// A frame whose later buffers the device publishes later is held across calls, then
/// delivered whole; one never finished is dropped at close, every buffer back.
fn rx_piecemeal<Q: QueueKind>() {
    let dev = device::<Q>(false);
    let mut nic = open::<Q>(&dev, &config(9000)).expect("opens");
    let pool = nic.pool().clone();
    let want = frame(1, 9000);
    dev.inject(Inject::Partial(want.clone(), 2));
    wait("the first buffers", || dev.counts().rx_used == 2);
    let mut got = Vec::new();
    for _ in 0..5 {
        assert_eq!(nic.rx_batch(&mut got, 32), 0, "not whole yet");
    }
    dev.inject(Inject::Rest);
    let got = receive(&mut nic, 1);
    assert!(got[0].to_vec() == want, "whole, byte-exact");
    drop(got);
    // At close with a frame half gathered.
    dev.inject(Inject::Partial(frame(2, 9000), 3));
    wait("the first buffers", || dev.counts().rx_used == 8);
    assert_eq!(nic.rx_batch(&mut Vec::new(), 32), 0);
    assert_eq!(nic.stats().rx_errors, 0);
    drop(nic);
    assert_eq!(
        pool.free_count(),
        pool.capacity(),
        "the half frame is back too"
    );
}

#[test]
fn rx_split_frame_completed_across_calls() {
    rx_piecemeal::<Split>();
}
#[test]
fn rx_packed_frame_completed_across_calls() {
    rx_piecemeal::<Packed>();
}

/// num_buffers of 0, beyond the ring, and beyond what the MTU needs (a frame longer than
/// the port takes): each counted, the buffers recycled, the next frame exact.
fn rx_bad_num_buffers<Q: QueueKind>() {
    let dev = device::<Q>(false);
    let mut nic = open::<Q>(&dev, &config(9000)).expect("opens");
    let pool = nic.pool().clone();
    let mut errors = 0;
    for (k, bad) in [
        Inject::NumBuffers(frame(0, 100), 0),
        Inject::NumBuffers(frame(0, 100), 1000),
        Inject::NumBuffers(frame(0, 100), u16::MAX),
        // 6 buffers at MTU 9000, which needs at most 5.
        Inject::Frame(frame(0, 12000)),
    ]
    .into_iter()
    .enumerate()
    {
        dev.inject(bad);
        let good = frame(k as u32 + 1, 9000);
        dev.inject(Inject::Frame(good.clone()));
        let got = receive(&mut nic, 1);
        assert_eq!(got.len(), 1, "case {k}");
        assert!(got[0].to_vec() == good, "case {k}: the next frame exact");
        errors += 1;
        assert_eq!(nic.stats().rx_errors, errors, "case {k}: counted once");
    }
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
}

#[test]
fn rx_split_bad_num_buffers_counted_and_harmless() {
    rx_bad_num_buffers::<Split>();
}
#[test]
fn rx_packed_bad_num_buffers_counted_and_harmless() {
    rx_bad_num_buffers::<Packed>();
}

/// Chained frames of up to 9018 bytes go out byte-exact as one descriptor chain each; a
/// frame beyond the MTU is refused and counted, never cut.
fn tx_exact<Q: QueueKind>(legacy: bool) {
    let dev = device::<Q>(legacy);
    let mut nic = open::<Q>(&dev, &config(9000)).expect("opens");
    let pool = nic.pool().clone();
    let lens = [9000, 60, DATA_ROOM + 1, 9018, 4096, 1514, 9000, 6000];
    let want: Vec<Vec<u8>> = (0..24u32)
        .map(|s| frame(s, lens[s as usize % lens.len()]))
        .collect();
    for (i, f) in want.iter().enumerate() {
        let mut batch = vec![pool.alloc_copy(f).expect("buffers")];
        wait("room", || {
            nic.tx_batch(&mut batch);
            batch.is_empty()
        });
        wait("the device", || dev.sent_count() == i as u64 + 1);
    }
    assert!(nic.flush());
    let got = dev.sent();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w, "frame {i} of {} byte-exact", w.len());
    }
    let mut long = vec![pool.alloc_copy(&frame(99, 9019)).unwrap()];
    assert_eq!(nic.tx_batch(&mut long), 1, "taken");
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_errors), (want.len() as u64, 1));
    assert_eq!(s.tx_bytes, want.iter().map(Vec::len).sum::<usize>() as u64);
    assert!(nic.flush());
    assert_eq!(
        dev.sent_count(),
        want.len() as u64,
        "the long frame not sent"
    );
    assert_eq!(dev.counts().bad_headers, 0);
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
}

#[test]
fn tx_split_chained_frames_byte_exact() {
    tx_exact::<Split>(false);
}
#[test]
fn tx_packed_chained_frames_byte_exact() {
    tx_exact::<Packed>(false);
}
#[test]
fn tx_split_legacy_header_apart_byte_exact() {
    tx_exact::<Split>(true);
}
#[test]
fn tx_packed_header_apart_byte_exact() {
    tx_exact::<Packed>(true);
}

/// A burst of chained frames fills the ring by descriptors, not by frames: what does not
/// fit stays with the caller, in order, and goes out later.
#[test]
fn tx_burst_of_chains_respects_ring_capacity() {
    let dev = device::<Split>(false);
    let mut nic = open::<Split>(&dev, &config(9000)).expect("opens");
    let pool = nic.pool().clone();
    dev.pause_tx(true);
    let want: Vec<Vec<u8>> = (0..8).map(|s| frame(s, 9000)).collect();
    let mut batch: Vec<Packet> = want.iter().map(|f| pool.alloc_copy(f).unwrap()).collect();
    // 16 descriptors, 5 a frame: 3 fit.
    assert_eq!(nic.tx_batch(&mut batch), 3);
    assert_eq!(batch.len(), 5);
    dev.pause_tx(false);
    wait("all sent", || {
        nic.tx_batch(&mut batch);
        batch.is_empty() && dev.sent_count() == 8
    });
    assert!(dev.sent() == want);
    assert_eq!(nic.stats().tx_errors, 0);
}

/// VIRTIO_NET_F_MTU caps Config::mtu; without mergeable buffers a frame must fit one.
#[test]
fn mtu_beyond_the_device_is_refused_at_open() {
    let dev = FakeVirtio::start(Behaviour {
        mrg_rxbuf: true,
        mtu: Some(4000),
        ..Behaviour::default()
    });
    match open::<Split>(&dev, &config(9000)) {
        Err(Error::Mtu {
            mtu: 9000,
            max: 4000,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let nic = open::<Split>(&dev, &config(4000)).expect("within the device's MTU");
    assert_eq!(nic.mtu(), 4000);
    drop(nic);
    let plain = FakeVirtio::start(Behaviour::default());
    match open::<Split>(&plain, &config(9000)) {
        Err(Error::Mtu { mtu: 9000, max, .. }) => assert_eq!(max, DATA_ROOM - 18),
        other => panic!("{other:?}"),
    }
    let nic = open::<Split>(&plain, &config(1500)).expect("the default MTU");
    assert_eq!(nic.features() & feature::MRG_RXBUF, 0);
}

/// At the default MTU mergeable buffers are not taken, even when offered: the one-buffer
/// receive path reads no num_buffers.
#[test]
fn mergeable_buffers_only_when_a_frame_outgrows_one() {
    let dev = device::<Split>(false);
    let nic = open::<Split>(&dev, &config(1500)).expect("opens");
    assert_eq!(nic.features() & feature::MRG_RXBUF, 0);
    assert_eq!(nic.mtu(), 1500);
}
