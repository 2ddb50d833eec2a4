//! virtio-net checksum offloads against the fake device: a port reports them only where
//! the device offered VIRTIO_NET_F_CSUM / GUEST_CSUM; frames that ask for their TCP or UDP
//! checksum go with NEEDS_CSUM and the offsets, the device completes them, and what it
//! sends is byte for byte what software would have sent (one buffer or a jumbo chain,
//! split and packed rings, legacy with the header apart, with a VLAN tag and the IPv4
//! header checksum done in software). On receive, DATA_VALID is reported good, a partial
//! checksum (NEEDS_CSUM) is completed and reported good, no flag is unknown, and offsets
//! outside the frame are receive errors that lose no buffer.

use std::time::{Duration, Instant};
use zcnic::offload::{self, Offloads};
use zcnic::virtio::{feature, negotiate, DmaMem, QueueKind, VirtioNet};
use zcnic::{Checksum, Config, L4Csum, Nic, Packet, PciAddr, TxOffload};
use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
use zcnic_tests::fake_virtio::{Behaviour, FakeVirtio, Inject, DATA_VALID, NEEDS_CSUM};

type Split = SplitQueue<DmaMem>;
type Packed = PackedQueue<DmaMem>;

const TIMEOUT: Duration = Duration::from_secs(20);

fn addr() -> PciAddr {
    "0000:00:03.0".parse().unwrap()
}

fn config(mtu: usize) -> Config {
    Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 512,
        mtu,
        reset_timeout: Duration::from_millis(200),
        ..Config::default()
    }
}

fn device<Q: QueueKind>(csum: bool, legacy: bool, mrg_rxbuf: bool) -> FakeVirtio {
    FakeVirtio::start(Behaviour {
        packed: Q::PACKED,
        csum,
        legacy,
        mrg_rxbuf,
        ..Behaviour::default()
    })
}

fn open<Q: QueueKind>(dev: &FakeVirtio, cfg: &Config) -> VirtioNet<Q> {
    let t = dev.any_transport();
    let features = negotiate(t.as_ref(), &addr(), cfg, Q::PACKED).expect("negotiates");
    VirtioNet::<Q>::new(t, features, &dev.dma, addr(), cfg).expect("opens")
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// An IPv4 frame to a broadcast MAC with `payload` bytes of TCP (`tcp`) or UDP, every
/// checksum field zero: what a stack that leaves them to the NIC builds.
fn ipv4(tcp: bool, payload: usize, seq: u8) -> Vec<u8> {
    let l4 = if tcp { 20 } else { 8 };
    let mut f = vec![0u8; 14 + 20 + l4 + payload];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, seq]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + l4 + payload) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = if tcp { 6 } else { 17 };
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, seq]);
    f[34..36].copy_from_slice(&1234u16.to_be_bytes());
    f[36..38].copy_from_slice(&7u16.to_be_bytes());
    if tcp {
        f[46] = 0x50; // data offset 5
        f[47] = 0x18; // PSH, ACK
    } else {
        f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    }
    for (i, b) in f[34 + l4..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7) ^ seq;
    }
    f
}

fn request(tcp: bool) -> TxOffload {
    TxOffload {
        ip_csum: true,
        l4: Some(if tcp { L4Csum::Tcp } else { L4Csum::Udp }),
        ..TxOffload::ipv4(14, 20)
    }
}

/// `frame` with `req` done in software: what must reach the wire.
fn in_software(nic: &impl Nic, frame: &[u8], req: TxOffload) -> Vec<u8> {
    let mut p = nic.pool().alloc_copy(frame).unwrap();
    Offloads::NONE.request(&mut p, req).unwrap();
    assert_eq!(offload::verify_checksums(&p), Checksum::Good);
    p.to_vec()
}

#[test]
fn offloads_are_reported_where_offered() {
    let dev = device::<Split>(true, false, false);
    let nic = open::<Split>(&dev, &config(1500));
    assert_eq!(
        nic.features() & (feature::CSUM | feature::GUEST_CSUM),
        feature::CSUM | feature::GUEST_CSUM
    );
    let o = nic.offloads();
    assert!(o.tx_tcp_csum && o.tx_udp_csum && o.rx_checksum);
    assert!(!o.tx_ipv4_csum && !o.tx_vlan_insert && !o.rx_vlan_strip);
    let dev = device::<Split>(false, false, false);
    let nic = open::<Split>(&dev, &config(1500));
    assert_eq!(nic.offloads(), Offloads::NONE);
}

/// Frames of every size class asking for their checksums leave the device exactly as the
/// software fallback builds them; with CSUM the device completed each one.
fn tx_matches_software<Q: QueueKind>(csum: bool, legacy: bool) {
    let mrg = !legacy;
    let dev = device::<Q>(csum, legacy, mrg);
    let mtu = if mrg { 9000 } else { 1500 };
    let mut nic = open::<Q>(&dev, &config(mtu));
    let pool = nic.pool().clone();
    let mut want = Vec::new();
    let sizes: &[usize] = if mrg {
        &[0, 1, 18, 1000, 1458, 3000, 8900]
    } else {
        &[0, 1, 18, 1000, 1458]
    };
    let mut seq = 0u8;
    for &tcp in &[false, true] {
        for &payload in sizes {
            seq += 1;
            let f = ipv4(tcp, payload.min(mtu - 40), seq);
            let mut req = request(tcp);
            // Every third frame also asks for a tag, which virtio-net inserts in software.
            if seq.is_multiple_of(3) {
                req.vlan = Some(0x2064);
            }
            want.push(in_software(&nic, &f, req));
            let mut pkt = pool.alloc_copy(&f).unwrap();
            nic.offloads().request(&mut pkt, req).unwrap();
            assert_eq!(pkt.tx_offload().is_some(), csum, "frame {seq}");
            let mut v = vec![pkt];
            while !v.is_empty() {
                nic.tx_batch(&mut v);
            }
        }
    }
    assert!(nic.flush());
    let sent = dev.sent();
    assert_eq!(sent.len(), want.len());
    for (i, (s, w)) in sent.iter().zip(&want).enumerate() {
        assert!(s == w, "frame {i} ({} bytes) as software makes it", w.len());
    }
    let c = dev.counts();
    assert_eq!(c.bad_headers, 0);
    assert_eq!(c.csum_completed, if csum { want.len() as u64 } else { 0 });
    let s = nic.stats();
    assert_eq!((s.tx_packets, s.tx_errors), (want.len() as u64, 0));
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
}

#[test]
fn tx_split_checksums_by_the_device() {
    tx_matches_software::<Split>(true, false);
}
#[test]
fn tx_packed_checksums_by_the_device() {
    tx_matches_software::<Packed>(true, false);
}
#[test]
fn tx_legacy_header_apart_checksums_by_the_device() {
    tx_matches_software::<Split>(true, true);
}
#[test]
fn tx_without_csum_all_in_software() {
    tx_matches_software::<Split>(false, false);
}

/// A request set on the packet by hand (not through `request`) that asks for what the
/// device lacks still goes out right, and one whose headers do not hold up is refused.
#[test]
fn tx_requests_set_by_hand() {
    let dev = device::<Split>(true, false, false);
    let mut nic = open::<Split>(&dev, &config(1500));
    let f = ipv4(false, 100, 9);
    let want = in_software(&nic, &f, request(false));
    // The UDP field holds zero, not the pseudo-header sum `request` would put there:
    // the device's part must still come out right.
    let mut pkt = nic.pool().alloc_copy(&f).unwrap();
    pkt.set_tx_offload(request(false));
    // Headers that are not what the request says: an IPv4 checksum at an IPv6 offset.
    let mut bad = nic.pool().alloc_copy(&f).unwrap();
    bad.set_tx_offload(TxOffload {
        l2_len: 100,
        ..request(false)
    });
    let mut v = vec![pkt, bad];
    assert_eq!(nic.tx_batch(&mut v), 2);
    assert!(nic.flush());
    assert_eq!(dev.sent(), vec![want]);
    assert_eq!(nic.stats().tx_errors, 1);
    assert_eq!(dev.counts().bad_headers, 0);
}

/// `frame` with its transport checksum left partial (the pseudo-header sum in the field),
/// the IPv4 header checksum done: as Linux hands a CHECKSUM_PARTIAL frame to a NIC.
fn partial(nic: &impl Nic, frame: &[u8], tcp: bool) -> Vec<u8> {
    let mut p = nic.pool().alloc_copy(frame).unwrap();
    let caps = Offloads {
        tx_tcp_csum: true,
        tx_udp_csum: true,
        ..Offloads::NONE
    };
    caps.request(&mut p, request(tcp)).unwrap();
    p.to_vec()
}

fn receive(nic: &mut impl Nic, n: usize) -> Vec<Packet> {
    let mut got = Vec::new();
    wait("frames", || {
        nic.rx_batch(&mut got, 32);
        got.len() >= n
    });
    got
}

fn rx_verdicts<Q: QueueKind>(mrg: bool) {
    let dev = device::<Q>(true, false, mrg);
    let mtu = if mrg { 9000 } else { 1500 };
    let mut nic = open::<Q>(&dev, &config(mtu));
    let pool = nic.pool().clone();
    let payloads: &[usize] = if mrg { &[10, 1400, 8000] } else { &[10, 1400] };
    for &tcp in &[false, true] {
        for &payload in payloads {
            let good = in_software(&nic, &ipv4(tcp, payload, 3), request(tcp));
            let part = partial(&nic, &ipv4(tcp, payload, 3), tcp);
            let field = if tcp { 16 } else { 6 };
            dev.inject(Inject::Csum(part.clone(), NEEDS_CSUM, 34, field));
            dev.inject(Inject::Csum(good.clone(), DATA_VALID, 0, 0));
            dev.inject(Inject::Csum(part.clone(), 0, 0, 0));
            let got = receive(&mut nic, 3);
            assert_eq!(got.len(), 3);
            assert!(got[0].to_vec() == good, "a partial checksum completed");
            assert_eq!(got[0].rx_checksum(), Checksum::Good);
            assert!(got[1].to_vec() == good);
            assert_eq!(got[1].rx_checksum(), Checksum::Good);
            assert!(got[2].to_vec() == part, "no flag: left as it came");
            assert_eq!(got[2].rx_checksum(), Checksum::Unknown);
            assert_eq!(offload::verify_checksums(&got[2]), Checksum::Bad);
        }
    }
    // Offsets outside the frame: counted, dropped, nothing written, no buffer lost.
    let f = partial(&nic, &ipv4(false, 100, 4), false);
    let len = f.len() as u16;
    for (start, offset) in [(len, 0), (len - 1, 0), (34, len), (u16::MAX, u16::MAX)] {
        dev.inject(Inject::Csum(f.clone(), NEEDS_CSUM, start, offset));
    }
    dev.inject(Inject::Frame(f.clone()));
    let got = receive(&mut nic, 1);
    assert!(got[0].to_vec() == f);
    assert_eq!(nic.stats().rx_errors, 4);
    drop(got);
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
}

#[test]
fn rx_split_verdicts() {
    rx_verdicts::<Split>(false);
}
#[test]
fn rx_packed_verdicts() {
    rx_verdicts::<Packed>(false);
}
#[test]
fn rx_jumbo_chains_completed() {
    rx_verdicts::<Split>(true);
}

/// Without GUEST_CSUM negotiated the header's flags mean nothing: every frame unknown.
#[test]
fn rx_without_guest_csum_reports_unknown() {
    let dev = device::<Split>(false, false, false);
    let mut nic = open::<Split>(&dev, &config(1500));
    let good = in_software(&nic, &ipv4(true, 50, 5), request(true));
    dev.inject(Inject::Frame(good.clone()));
    let got = receive(&mut nic, 1);
    assert!(got[0].to_vec() == good);
    assert_eq!(got[0].rx_checksum(), Checksum::Unknown);
}
