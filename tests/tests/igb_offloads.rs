//! igb transmit offloads against the fake 82576, which decodes context and data
//! descriptors from their raw bits and computes checksums with the tests' own sum
//! (`fake_csum`): every request shape (IPv4 header alone, UDP, TCP, over IPv6, with a tag,
//! a tag alone; one buffer or a chain) puts on the wire exactly the frame the software
//! fallback makes, which is the frame `etherparse` builds; and what the datasheet forbids
//! (RS on a context descriptor, a checksum with MACLEN out of range, …) never happens
//! (`FakeIgb::misuse`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::igb::{Config, Igb};
use zcnic::offload::Offloads;
use zcnic::{FakeBar, L4Csum, Mempool, Nic, Packet, PciAddr, TxOffload};
use zcnic_tests::fake_igb::FakeIgb;
use zcnic_tests::offload_frames::{blank, blank_v6, frame, frame_v6, request, request_v6, tagged};

fn open(dev: &FakeIgb, vlan_strip: bool, tx_ring: u32) -> Igb<FakeBar> {
    let cfg = Config {
        rx_ring: 64,
        tx_ring,
        pool: 1024,
        vlan_strip,
        link_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let addr: PciAddr = "0000:00:02.0".parse().unwrap();
    Igb::new(dev.bar.clone(), &dev.dma, addr, &cfg).expect("driver comes up")
}

fn send_all(dev: &FakeIgb, nic: &mut Igb<FakeBar>, pkts: Vec<Packet>) -> Vec<Vec<u8>> {
    let n = pkts.len();
    let mut pkts = pkts;
    let end = Instant::now() + Duration::from_secs(20);
    while !pkts.is_empty() {
        nic.tx_batch(&mut pkts);
        assert!(
            Instant::now() < end,
            "{} frames left, {} sent",
            pkts.len(),
            dev.sent.lock().unwrap().len()
        );
    }
    assert!(nic.flush());
    let end = Instant::now() + Duration::from_secs(20);
    while dev.sent.lock().unwrap().len() < n {
        assert!(Instant::now() < end, "frames on the wire");
        std::thread::yield_now();
    }
    std::mem::take(&mut *dev.sent.lock().unwrap())
}

/// What the software fallback makes of `bytes` with `req`: the frame a port without
/// offloads sends.
fn software(pool: &Arc<Mempool>, bytes: &[u8], req: TxOffload) -> Vec<u8> {
    let mut p = pool.alloc_copy(bytes).unwrap();
    Offloads::NONE.request(&mut p, req).unwrap();
    assert_eq!(p.tx_offload(), None);
    p.to_vec()
}

/// One request shape: the frame as handed to the NIC, the request, and the frame that
/// belongs on the wire (built by `etherparse`).
struct Shape {
    given: Vec<u8>,
    req: TxOffload,
    wire: Vec<u8>,
}

/// Every shape at payload length `len`, `seq` telling frames apart.
fn shapes(len: usize, seq: u8) -> Vec<Shape> {
    let tci = 0x2000 | 100;
    let (udp, tcp) = (frame(L4Csum::Udp, len, seq), frame(L4Csum::Tcp, len, seq));
    let mut ip_only = udp.clone();
    ip_only[24..26].fill(0);
    let (v6u, v6t) = (
        frame_v6(L4Csum::Udp, len, seq),
        frame_v6(L4Csum::Tcp, len, seq),
    );
    let shape = |given: Vec<u8>, req, wire| Shape { given, req, wire };
    vec![
        shape(
            ip_only,
            TxOffload {
                ip_csum: true,
                ..TxOffload::ipv4(14, 20)
            },
            udp.clone(),
        ),
        shape(
            blank(&udp, L4Csum::Udp),
            request(L4Csum::Udp, None),
            udp.clone(),
        ),
        shape(
            blank(&tcp, L4Csum::Tcp),
            request(L4Csum::Tcp, None),
            tcp.clone(),
        ),
        shape(
            blank(&udp, L4Csum::Udp),
            request(L4Csum::Udp, Some(tci)),
            tagged(&udp, tci),
        ),
        shape(
            blank(&tcp, L4Csum::Tcp),
            request(L4Csum::Tcp, Some(tci)),
            tagged(&tcp, tci),
        ),
        shape(
            tcp.clone(),
            TxOffload {
                vlan: Some(100),
                ..TxOffload::ipv4(14, 20)
            },
            tagged(&tcp, 100),
        ),
        shape(
            blank_v6(&v6u, L4Csum::Udp),
            request_v6(L4Csum::Udp),
            v6u.clone(),
        ),
        shape(
            blank_v6(&v6t, L4Csum::Tcp),
            request_v6(L4Csum::Tcp),
            v6t.clone(),
        ),
    ]
}

#[test]
fn igb_capabilities_follow_the_config() {
    let dev = FakeIgb::start();
    let caps = open(&dev, false, 64).offloads();
    assert!(caps.tx_ipv4_csum && caps.tx_tcp_csum && caps.tx_udp_csum);
    // Tags are inserted only in VLAN mode (CTRL.VME), which strip sets.
    assert!(!caps.tx_vlan_insert && !caps.rx_vlan_strip);
    drop(dev);
    let dev = FakeIgb::start();
    let caps = open(&dev, true, 64).offloads();
    assert!(caps.tx_vlan_insert && caps.rx_vlan_strip && caps.tx_ipv4_csum);
}

/// Every shape, one buffer and chains of two to five, mixed with plain frames in bursts
/// that lap a 64-slot ring: what the NIC makes is what software makes is what etherparse
/// makes. With VLAN mode off the port inserts no tag, and `request` does it in software.
#[test]
fn every_request_shape_leaves_as_the_software_fallback_makes_it() {
    for vlan_mode in [true, false] {
        let dev = FakeIgb::start();
        let mut nic = open(&dev, vlan_mode, 64);
        let pool = nic.pool().clone();
        let caps = nic.offloads();
        let (mut pkts, mut want) = (Vec::new(), Vec::new());
        for (i, len) in (0u8..).zip([0, 1, 18, 511, 1400, 2100, 4095, 9000]) {
            for (j, s) in (0u8..).zip(shapes(len, i)) {
                let mut p = pool.alloc_copy(&s.given).unwrap();
                caps.request(&mut p, s.req).unwrap();
                // Asked of the NIC: all but a tag without VLAN mode.
                let hw = p.tx_offload();
                assert_eq!(hw.is_some(), s.req.wants_checksum() || vlan_mode);
                assert_eq!(hw.and_then(|r| r.vlan), s.req.vlan.filter(|_| vlan_mode));
                let soft = software(&pool, &s.given, s.req);
                assert_eq!(soft, s.wire, "software, payload {len}, shape {j}");
                want.push(soft);
                pkts.push(p);
                // A plain frame in between now and then shifts where contexts fall.
                if (i + j) % 3 == 0 {
                    let plain = frame(L4Csum::Udp, 30, 100 + j);
                    want.push(plain.clone());
                    pkts.push(pool.alloc_copy(&plain).unwrap());
                }
            }
        }
        let sent = send_all(&dev, &mut nic, pkts);
        assert_eq!(sent.len(), want.len());
        for (k, (got, want)) in sent.iter().zip(&want).enumerate() {
            assert_eq!(got, want, "frame {k}, VLAN mode {vlan_mode}");
        }
        assert_eq!(dev.misuse.load(Ordering::Relaxed), 0, "datasheet rules");
        assert_eq!(nic.stats().tx_errors, 0);
    }
}

/// A context descriptor has no RS, and the device writes nothing back into it: where one
/// ends a clean-up group (counter 31, 63, …: one plain frame, then two-descriptor
/// frames), the driver must not wait for its DD. Many laps of a 64-slot ring.
#[test]
fn a_context_ending_a_clean_up_group_never_stalls_the_ring() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev, true, 64);
    let pool = nic.pool().clone();
    let caps = nic.offloads();
    let f = frame(L4Csum::Tcp, 40, 1);
    let mut want = vec![f.clone()];
    let mut first = vec![pool.alloc_copy(&f).unwrap()];
    for i in 0..600u32 {
        let mut p = pool.alloc_copy(&blank(&f, L4Csum::Tcp)).unwrap();
        caps.request(&mut p, request(L4Csum::Tcp, Some(i as u16 & 0xfff)))
            .unwrap();
        want.push(tagged(&f, i as u16 & 0xfff));
        first.push(p);
    }
    // Bursts of whatever fits: the ring fills and must drain through its groups.
    let sent = send_all(&dev, &mut nic, first);
    assert!(
        sent == want,
        "{} of {} frames as expected",
        sent.iter().zip(&want).filter(|(a, b)| a == b).count(),
        want.len()
    );
    assert_eq!(
        dev.misuse.load(Ordering::Relaxed),
        0,
        "RS on a context descriptor"
    );
}

/// What the device cannot do is done by the driver in software, and the frame leaves
/// right: a tag without VLAN mode (asked directly, not through `request`), and a
/// checksum behind a MAC header longer than MACLEN can say (127 bytes).
#[test]
fn requests_the_device_cannot_carry_out_are_done_in_software() {
    let dev = FakeIgb::start();
    let mut nic = open(&dev, false, 64);
    let pool = nic.pool().clone();
    let f = frame(L4Csum::Udp, 64, 3);
    let mut tag_only = pool.alloc_copy(&f).unwrap();
    tag_only.set_tx_offload(TxOffload {
        vlan: Some(7),
        ..TxOffload::ipv4(14, 20)
    });
    // 130 bytes before the IP header: the MAC addresses, an ethertype and 116 more.
    let mut long = f[..14].to_vec();
    long[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    long.extend((0..116).map(|i| i as u8));
    long.extend_from_slice(&f[14..]);
    let blank_long = {
        let mut b = long.clone();
        b[130 + 10..130 + 12].fill(0);
        b[130 + 26..130 + 28].fill(0);
        b
    };
    let req = TxOffload {
        ip_csum: true,
        l4: Some(L4Csum::Udp),
        ..TxOffload::ipv4(130, 20)
    };
    let mut far = pool.alloc_copy(&blank_long).unwrap();
    nic.offloads().request(&mut far, req).unwrap();
    assert!(far.tx_offload().is_some(), "asked of the NIC");
    let want = vec![tagged(&f, 7), software(&pool, &blank_long, req)];
    assert_eq!(
        want[1], long,
        "the software fallback fills in both checksums"
    );
    assert_eq!(send_all(&dev, &mut nic, vec![tag_only, far]), want);
    assert_eq!(dev.misuse.load(Ordering::Relaxed), 0);
    assert_eq!(nic.stats().tx_errors, 0);
}

/// TCP segmentation: the igb cuts each super-frame (one frame handed over) at
/// every boundary into what `etherparse` builds, tagged in VLAN mode too; a segmentation
/// request set by hand on a frame that is not TCP is refused, never sent whole.
#[test]
fn segmentation_by_the_nic_matches_linux_at_every_boundary() {
    use zcnic_tests::tso_frames::{segments, super_frame, tso, Flags};
    const MSS: usize = 1448;
    let f = Flags {
        psh: true,
        fin: true,
        ..Flags::default()
    };
    for vlan_strip in [false, true] {
        let dev = FakeIgb::start();
        let mut nic = open(&dev, vlan_strip, 256);
        let caps = nic.offloads();
        assert!(caps.tx_tso4);
        let pool = nic.pool().clone();
        let vlan = vlan_strip.then_some(0x2064);
        for payload in [0, 1, MSS, MSS + 1, 3 * MSS - 1, 20_000, 65535 - 40] {
            let mut out = Vec::new();
            let req = TxOffload {
                vlan,
                ..tso(MSS as u16)
            };
            let p = pool.alloc_copy(&super_frame(payload, f)).unwrap();
            assert_eq!(caps.prepare(p, req, &pool, &mut out).unwrap(), 1);
            let want = segments(payload, MSS, f);
            let want: Vec<Vec<u8>> = match vlan {
                Some(tci) => want.iter().map(|s| tagged(s, tci)).collect(),
                None => want,
            };
            let n = want.len();
            let mut got = send_all(&dev, &mut nic, out);
            let end = Instant::now() + Duration::from_secs(20);
            while got.len() < n && Instant::now() < end {
                std::thread::yield_now();
                got.extend(std::mem::take(&mut *dev.sent.lock().unwrap()));
            }
            assert!(got == want, "{payload}: {} of {n} segments", got.len());
        }
        let mut by_hand = pool.alloc_copy(&frame(L4Csum::Udp, 3000, 1)).unwrap();
        by_hand.set_tx_offload(tso(MSS as u16));
        let mut v = vec![by_hand];
        nic.tx_batch(&mut v);
        assert!(nic.flush());
        assert_eq!(nic.stats().tx_errors, 1);
        assert!(dev.sent.lock().unwrap().is_empty());
        assert_eq!(dev.misuse.load(Ordering::Relaxed), 0, "datasheet rules");
    }
}
