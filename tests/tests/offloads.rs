//! Checksum and VLAN offloads against the fake e1000 (which applies them as the hardware
//! does: checksums at the context descriptor's offsets, tags inserted in VLAN mode only,
//! stripped on receive into the descriptor, IXSM on every frame as QEMU's model sets it),
//! and the software fallback that makes the same frames on a port without them. The igb's
//! are in `igb_offloads.rs`.

use std::time::{Duration, Instant};
use zcnic::e1000::{Config, E1000};
use zcnic::offload::{self, Offloads};
use zcnic::{Bar, Checksum, FakeBar, L4Csum, Nic, Packet, PciAddr, TxOffload};
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000, Inject};
use zcnic_tests::offload_frames::{blank, frame, l4_field, request, tagged};

fn addr() -> PciAddr {
    "0000:00:02.0".parse().unwrap()
}

fn open(dev: &FakeE1000, vlan_strip: bool, mtu: usize) -> E1000<FakeBar> {
    let cfg = Config {
        rx_ring: 64,
        tx_ring: 64,
        pool: 512,
        mtu,
        vlan_strip,
        link_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    E1000::new(dev.bar.clone(), &dev.dma, addr(), &cfg).expect("driver comes up")
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn send_all(dev: &FakeE1000, nic: &mut E1000<FakeBar>, pkts: Vec<Packet>) -> Vec<Vec<u8>> {
    let n = pkts.len();
    let mut pkts = pkts;
    let end = Instant::now() + Duration::from_secs(20);
    while !pkts.is_empty() {
        nic.tx_batch(&mut pkts);
        assert!(
            Instant::now() < end,
            "{} frames left, {} sent, head {} tail {}",
            pkts.len(),
            dev.sent_count(),
            dev.bar.read32(zcnic::e1000::regs::TDH),
            dev.bar.read32(zcnic::e1000::regs::TDT)
        );
    }
    assert!(nic.flush());
    wait("frames on the wire", || dev.sent_count() >= n);
    std::mem::take(&mut *dev.sent.lock().unwrap())
}

#[test]
fn e1000_capabilities_follow_the_config() {
    let dev = FakeE1000::start(Behaviour::default());
    let nic = open(&dev, false, 1500);
    let caps = nic.offloads();
    assert!(caps.tx_ipv4_csum && caps.tx_tcp_csum && caps.tx_udp_csum && caps.rx_checksum);
    // VLE is honoured only with CTRL.VME, which strip sets.
    assert!(!caps.tx_vlan_insert && !caps.rx_vlan_strip);
    drop(nic);
    let dev = FakeE1000::start(Behaviour::default());
    let caps = open(&dev, true, 1500).offloads();
    assert!(caps.tx_vlan_insert && caps.rx_vlan_strip);
}

#[test]
fn tx_checksum_offload_fills_in_what_software_would() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, false, 1500);
    let pool = nic.pool().clone();
    let caps = nic.offloads();
    let mut want = Vec::new();
    let mut pkts = Vec::new();
    for i in 0..40u8 {
        let l4 = if i % 2 == 0 { L4Csum::Udp } else { L4Csum::Tcp };
        let f = frame(l4, 18 + usize::from(i) * 13, i);
        let mut p = pool.alloc_copy(&blank(&f, l4)).unwrap();
        caps.request(&mut p, request(l4, None)).unwrap();
        // Asked of the NIC, not done here: the fields hold the seeds, not the sums.
        assert!(p.tx_offload().is_some());
        assert_ne!(p.data(), &f[..]);
        want.push(f);
        pkts.push(p);
        // Plain frames in between stay on the fast path and unchanged.
        let plain = frame(L4Csum::Udp, 30, 200 + i);
        want.push(plain.clone());
        pkts.push(pool.alloc_copy(&plain).unwrap());
    }
    let sent = send_all(&dev, &mut nic, pkts);
    assert_eq!(sent, want);
    assert_eq!(nic.stats().tx_errors, 0);
}

#[test]
fn tx_offload_on_a_chain() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, false, 9000);
    let pool = nic.pool().clone();
    let f = frame(L4Csum::Udp, 5000, 3);
    let mut p = pool.alloc_copy(&blank(&f, L4Csum::Udp)).unwrap();
    assert!(p.next().is_some());
    nic.offloads()
        .request(&mut p, request(L4Csum::Udp, None))
        .unwrap();
    assert_eq!(send_all(&dev, &mut nic, vec![p]), vec![f.clone()]);
    // The software fallback over a chain computes the same.
    let mut p = pool.alloc_copy(&blank(&f, L4Csum::Udp)).unwrap();
    Offloads::NONE
        .request(&mut p, request(L4Csum::Udp, None))
        .unwrap();
    assert_eq!(p.to_vec(), f);
    assert_eq!(offload::verify_checksums(&p), Checksum::Good);
}

/// TCP segments of every size a jumbo MTU allows, odd and even, one buffer or several,
/// mixed in one burst: the NIC's checksums are the ones software computes.
#[test]
fn tcp_offload_on_chains_of_every_shape() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, false, 9000);
    let pool = nic.pool().clone();
    let sizes = [
        0, 1, 6, 1460, 1993, 1994, 1995, 2100, 4095, 4096, 8959, 8960,
    ];
    let frames: Vec<Vec<u8>> = (0u8..)
        .zip(sizes)
        .map(|(i, n)| frame(L4Csum::Tcp, n, i))
        .collect();
    let pkts: Vec<Packet> = frames
        .iter()
        .map(|f| {
            let mut p = pool.alloc_copy(&blank(f, L4Csum::Tcp)).unwrap();
            nic.offloads()
                .request(&mut p, request(L4Csum::Tcp, None))
                .unwrap();
            p
        })
        .collect();
    assert_eq!(send_all(&dev, &mut nic, pkts), frames);
}

#[test]
fn vlan_insert_in_hardware_and_in_software_make_the_same_frame() {
    for strip in [true, false] {
        let dev = FakeE1000::start(Behaviour::default());
        let mut nic = open(&dev, strip, 1500);
        assert_eq!(nic.offloads().tx_vlan_insert, strip);
        let pool = nic.pool().clone();
        let f = frame(L4Csum::Tcp, 100, 9);
        let mut p = pool.alloc_copy(&blank(&f, L4Csum::Tcp)).unwrap();
        let tci = 0x2000 | 100;
        nic.offloads()
            .request(&mut p, request(L4Csum::Tcp, Some(tci)))
            .unwrap();
        // Tag only, checksums already right: a legacy-free extended descriptor alone.
        let mut q = pool.alloc_copy(&f).unwrap();
        nic.offloads()
            .request(
                &mut q,
                TxOffload {
                    vlan: Some(100),
                    ..TxOffload::ipv4(14, 20)
                },
            )
            .unwrap();
        let sent = send_all(&dev, &mut nic, vec![p, q]);
        assert_eq!(
            sent,
            vec![tagged(&f, tci), tagged(&f, 100)],
            "strip {strip}"
        );
    }
}

#[test]
fn vlan_strip_reports_the_tag() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, true, 1500);
    let f = frame(L4Csum::Udp, 64, 1);
    dev.inject(Inject::Frame(tagged(&f, 100)));
    dev.inject(Inject::Frame(f.clone()));
    let mut got = Vec::new();
    wait("two frames", || {
        nic.rx_batch(&mut got, 8);
        got.len() >= 2
    });
    assert_eq!(got[0].vlan(), Some(100));
    assert_eq!(got[0].data(), &f[..]);
    assert_eq!(got[1].vlan(), None);
    assert_eq!(got[1].data(), &f[..]);
}

#[test]
fn without_strip_tags_stay_in_the_frame() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, false, 1500);
    let f = tagged(&frame(L4Csum::Udp, 64, 1), 100);
    dev.inject(Inject::Frame(f.clone()));
    let mut got = Vec::new();
    wait("a frame", || nic.rx_batch(&mut got, 8) > 0);
    assert_eq!(got[0].vlan(), None);
    assert_eq!(got[0].data(), &f[..]);
    // The software check reads through the tag.
    assert_eq!(offload::verify_checksums(&got[0]), Checksum::Good);
}

#[test]
fn a_corrupt_checksum_is_unknown_to_the_nic_and_bad_to_software() {
    let dev = FakeE1000::start(Behaviour::default());
    let mut nic = open(&dev, true, 9000);
    let good = frame(L4Csum::Udp, 200, 5);
    let mut bad = good.clone();
    bad[l4_field(L4Csum::Udp)] ^= 0x5a;
    let mut bad_ip = good.clone();
    bad_ip[24] ^= 1;
    let long = frame(L4Csum::Tcp, 4000, 6);
    for f in [&good, &bad, &bad_ip] {
        dev.inject(Inject::Frame(f.clone()));
    }
    dev.inject(Inject::Frame(tagged(&long, 7)));
    let mut got = Vec::new();
    wait("four frames", || {
        nic.rx_batch(&mut got, 8);
        got.len() >= 4
    });
    // QEMU's e1000 (and the fake) say "ignore checksum" (IXSM): never Good.
    for p in &got {
        assert_eq!(p.rx_checksum(), Checksum::Unknown);
    }
    let soft: Vec<_> = got.iter().map(offload::verify_checksums).collect();
    assert_eq!(
        soft,
        [Checksum::Good, Checksum::Bad, Checksum::Bad, Checksum::Good]
    );
    // The long frame's chain carries its last descriptor's tag.
    assert_eq!(got[3].vlan(), Some(7));
    assert_eq!(got[3].to_vec(), long);
}

#[test]
fn software_fallback_matches_the_request() {
    let dev = FakeE1000::start(Behaviour::default());
    let nic = open(&dev, false, 1500);
    let pool = nic.pool().clone();
    let f = frame(L4Csum::Tcp, 77, 2);
    let mut p = pool.alloc_copy(&blank(&f, L4Csum::Tcp)).unwrap();
    p.set_tx_offload(request(L4Csum::Tcp, Some(42)));
    offload::apply_in_software(&mut p).unwrap();
    assert_eq!(p.tx_offload(), None);
    assert!(p.is_single());
    assert_eq!(p.data(), &tagged(&f, 42)[..]);
    // A request whose headers are not where it says is refused, not guessed at.
    let mut q = pool.alloc_copy(&f[..20]).unwrap();
    assert!(Offloads::NONE
        .request(&mut q, request(L4Csum::Tcp, None))
        .is_err());
}
