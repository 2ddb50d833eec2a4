//! TCP segmentation (TSO) against the fake e1000, which cuts a TSE frame as the 8254x SDM
//! §3.5 says (`fake_e1000/offload.rs`, `fake_tso.rs`) and refuses one whose descriptors
//! break its rules; and the software segmentation (`offload::segment`) on a port without
//! it. Every segment is compared byte for byte with what `etherparse` builds for it
//! (`tso_frames.rs`): lengths, IDs, sequence numbers, flags and both checksums.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::e1000::{Config, E1000};
use zcnic::offload::{self, OffloadError, Offloads};
use zcnic::{Checksum, FakeBar, L4Csum, Mempool, Nic, Packet, PciAddr, Segment, UserRegion};
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000};
use zcnic_tests::offload_frames::frame;
use zcnic_tests::tso_frames::{segments, super_frame, tso, Flags};

fn open(dev: &FakeE1000, vlan_strip: bool, mtu: usize) -> E1000<FakeBar> {
    let cfg = Config {
        rx_ring: 64,
        tx_ring: 256,
        pool: 1024,
        mtu,
        vlan_strip,
        link_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let addr: PciAddr = "0000:00:02.0".parse().unwrap();
    E1000::new(dev.bar.clone(), &dev.dma, addr, &cfg).expect("driver comes up")
}

/// Sends `pkts` and returns what reached the wire once the device sent `want` frames.
fn send(dev: &FakeE1000, nic: &mut E1000<FakeBar>, pkts: Vec<Packet>, want: usize) -> Vec<Vec<u8>> {
    let mut pkts = pkts;
    let end = Instant::now() + Duration::from_secs(20);
    while !pkts.is_empty() {
        nic.tx_batch(&mut pkts);
        assert!(Instant::now() < end, "{} frames left", pkts.len());
    }
    assert!(nic.flush());
    while dev.sent.lock().unwrap().len() < want {
        assert!(
            Instant::now() < end,
            "{} of {want} on the wire",
            dev.sent.lock().unwrap().len()
        );
        std::thread::yield_now();
    }
    std::mem::take(&mut *dev.sent.lock().unwrap())
}

const MSS: usize = 1448;
const FLAGS: Flags = Flags {
    psh: true,
    fin: true,
    cwr: false,
};
/// The most payload one IPv4 packet holds after 40 bytes of headers.
const MAX_PAYLOAD: usize = 65535 - 40;

#[test]
fn the_e1000_says_it_segments_and_cuts_at_every_boundary_as_linux_would() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, false, 1500);
    let caps = nic.offloads();
    assert!(caps.tx_tso4);
    let pool = nic.pool().clone();
    for payload in [
        0,
        1,
        MSS - 1,
        MSS,
        MSS + 1,
        2 * MSS,
        3 * MSS - 1,
        45_000,
        MAX_PAYLOAD,
    ] {
        let p = pool.alloc_copy(&super_frame(payload, FLAGS)).unwrap();
        let mut out = Vec::new();
        let n = caps.prepare(p, tso(MSS as u16), &pool, &mut out).unwrap();
        assert_eq!(
            n, 1,
            "{payload}: the NIC segments it, one frame handed over"
        );
        let want = segments(payload, MSS, FLAGS);
        let got = send(&dev, &mut nic, out, want.len());
        assert_eq!(got.len(), want.len(), "{payload}: segments");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{payload}: segment {i} of {}", want.len());
        }
    }
    assert_eq!(dev.violations.load(Ordering::Relaxed), 0);
    assert_eq!(nic.stats().tx_errors, 0);
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity(), "every buffer back");
}

#[test]
fn software_segments_are_the_same_on_a_port_with_checksums_or_without() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, false, 9000);
    let pool = nic.pool().clone();
    let csum_only = Offloads {
        tx_tso4: false,
        ..nic.offloads()
    };
    for caps in [csum_only, Offloads::NONE] {
        for (payload, mss) in [
            (10_000, 1448),
            (1448, 1448),
            (30_001, 8948),
            (MAX_PAYLOAD, 536),
        ] {
            let p = pool.alloc_copy(&super_frame(payload, FLAGS)).unwrap();
            let mut out = Vec::new();
            let n = caps.prepare(p, tso(mss as u16), &pool, &mut out).unwrap();
            let want = segments(payload, mss, FLAGS);
            assert_eq!(n, want.len());
            assert_eq!(out.len(), n);
            if caps == Offloads::NONE {
                // Done in software to the last checksum: nothing left to ask.
                assert!(out.iter().all(|p| p.tx_offload().is_none()));
                assert!(out
                    .iter()
                    .all(|p| offload::verify_checksums(p) == Checksum::Good));
            }
            let got = send(&dev, &mut nic, out, want.len());
            assert!(got == want, "{payload} at {mss}: {:?}", caps);
        }
    }
    assert_eq!(nic.stats().tx_errors, 0);
}

#[test]
fn cwr_goes_on_the_first_segment_only_so_the_nic_is_not_asked() {
    // The 8254x would copy CWR into every segment: Linux leaves such a frame to software
    // (a device without NETIF_F_TSO_ECN), and so does `prepare`.
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, false, 1500);
    let pool = nic.pool().clone();
    let f = Flags { cwr: true, ..FLAGS };
    let p = pool.alloc_copy(&super_frame(5000, f)).unwrap();
    let mut out = Vec::new();
    let n = nic
        .offloads()
        .prepare(p, tso(1000), &pool, &mut out)
        .unwrap();
    assert_eq!(n, 5);
    let mut q = pool.alloc_copy(&super_frame(5000, f)).unwrap();
    assert!(matches!(
        nic.offloads().request(&mut q, tso(1000)),
        Err(OffloadError::Segmentation(_))
    ));
    assert_eq!(send(&dev, &mut nic, out, 5), segments(5000, 1000, f));
}

#[test]
fn a_payload_from_application_memory_and_a_tag_are_segmented_too() {
    // With VLAN mode the NIC inserts the tag in every segment; without, the tag goes into
    // the super-frame in software and the NIC cuts after it.
    for vlan_strip in [true, false] {
        let dev = FakeE1000::start(Behaviour::default());
        let mut nic = open(&dev, vlan_strip, 1500);
        let caps = nic.offloads();
        assert_eq!(caps.tx_vlan_insert, vlan_strip);
        let pool = nic.pool().clone();
        let whole = super_frame(40_000, FLAGS);
        let region = Arc::new(UserRegion::with_data(&whole[54..], dev.dma.mapper()).unwrap());
        let mut p = pool.alloc_copy(&whole[..54]).unwrap();
        p.attach(Segment::new(&region, 0, 40_000).unwrap());
        let mut out = Vec::new();
        let req = zcnic::TxOffload {
            vlan: Some(100),
            ..tso(MSS as u16)
        };
        assert_eq!(caps.prepare(p, req, &pool, &mut out).unwrap(), 1);
        let want: Vec<Vec<u8>> = segments(40_000, MSS, FLAGS)
            .iter()
            .map(|s| zcnic_tests::offload_frames::tagged(s, 100))
            .collect();
        assert_eq!(
            send(&dev, &mut nic, out, want.len()),
            want,
            "strip {vlan_strip}"
        );
        assert_eq!(dev.violations.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn bad_requests_are_refused_and_nothing_reaches_the_wire() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, false, 1500);
    let caps = nic.offloads();
    let pool = nic.pool().clone();
    let good = super_frame(5000, FLAGS);
    let refuse = |bytes: &[u8], first: usize, req: zcnic::TxOffload, caps: Offloads| {
        let mut p = pool.alloc_copy(&bytes[..first]).unwrap();
        p.append(pool.alloc_copy(&bytes[first..]).unwrap());
        let mut out = Vec::new();
        let e = caps.prepare(p, req, &pool, &mut out).unwrap_err();
        assert!(out.is_empty());
        e
    };
    for caps in [caps, Offloads::NONE] {
        // The TCP header reaches past the first buffer.
        let e = refuse(&good, 40, tso(1000), caps);
        assert!(matches!(e, OffloadError::Segmentation(_)), "{e}");
        // UDP is not TCP; IPv6 is not IPv4; the IP header is not 24 bytes long.
        let udp = frame(L4Csum::Udp, 3000, 1);
        assert!(refuse(&udp, 100, tso(1000), caps)
            .to_string()
            .contains("TCP"));
        let v6 = zcnic::TxOffload {
            ipv4: false,
            ..tso(1000)
        };
        assert!(matches!(
            refuse(&good, 100, v6, caps),
            OffloadError::Segmentation(_)
        ));
        let long_ip = zcnic::TxOffload {
            l3_len: 24,
            ..tso(1000)
        };
        assert!(matches!(
            refuse(&good, 100, long_ip, caps),
            OffloadError::Segmentation(_)
        ));
        // A fragment.
        let mut frag = good.clone();
        frag[20] |= 0x20;
        assert!(refuse(&frag, 100, tso(1000), caps)
            .to_string()
            .contains("fragment"));
        // Longer than an IPv4 packet holds.
        let huge = super_frame(MAX_PAYLOAD, FLAGS);
        let mut p = pool.alloc_copy(&huge).unwrap();
        p.append(pool.alloc_copy(&[0]).unwrap());
        let e = caps
            .prepare(p, tso(1000), &pool, &mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("longer"), "{e}");
    }
    // An MSS of 0 cannot be asked.
    assert!(std::num::NonZeroU16::new(0).is_none());
    // A request set on the packet without `request`, its headers wrong: the driver drops
    // the frame and counts it, the device sees nothing.
    let mut p = pool.alloc_copy(&frame(L4Csum::Udp, 3000, 1)).unwrap();
    p.set_tx_offload(tso(1000));
    let errors = nic.stats().tx_errors;
    let mut pkts = vec![p];
    nic.tx_batch(&mut pkts);
    assert!(nic.flush());
    assert_eq!(nic.stats().tx_errors, errors + 1);
    assert!(dev.sent.lock().unwrap().is_empty());
    assert_eq!(dev.violations.load(Ordering::Relaxed), 0);
}

#[test]
fn an_empty_pool_gives_every_buffer_back_and_says_so() {
    let pool = Mempool::new(&zcnic::FakeDma::new(), 8).unwrap();
    let p = pool.alloc_copy(&super_frame(12_000, FLAGS)).unwrap();
    let mut out = Vec::new();
    let held = pool.capacity() - pool.free_count();
    let e = Offloads::NONE
        .prepare(p, tso(1000), &pool, &mut out)
        .unwrap_err();
    assert_eq!(e, OffloadError::NoBuffers);
    assert!(out.is_empty());
    assert_eq!(
        pool.free_count(),
        pool.capacity(),
        "{held} buffers of the frame back too"
    );
}
