//! virtio-net TCP segmentation (VIRTIO_NET_F_HOST_TSO4) against the fake device, which
//! cuts a GSO_TCPV4 frame as the host's Linux does (`fake_virtio/csum.rs`,
//! `fake_tso.rs`: the checksum field must hold the pseudo-header sum with the whole
//! frame's TCP length, `hdr_len` the headers' length): a port says it segments only where
//! the device offered HOST_TSO4 with CSUM; what reaches the wire is byte for byte the
//! segments `etherparse` builds, on split and packed rings and a legacy device with the
//! header apart; without HOST_TSO4 the same segments are made in software.

use std::time::Duration;
use zcnic::offload::Offloads;
use zcnic::virtio::{negotiate, DmaMem, QueueKind, VirtioNet};
use zcnic::{Config, Nic, PciAddr, TxOffload};
use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
use zcnic_tests::fake_virtio::{Behaviour, FakeVirtio};
use zcnic_tests::offload_frames::tagged;
use zcnic_tests::tso_frames::{segments, super_frame, tso, Flags};

type Split = SplitQueue<DmaMem>;
type Packed = PackedQueue<DmaMem>;

const MSS: usize = 1448;
const FLAGS: Flags = Flags {
    psh: true,
    fin: true,
    cwr: false,
};
const MAX_PAYLOAD: usize = 65535 - 40;

fn open<Q: QueueKind>(tso: bool, legacy: bool) -> (FakeVirtio, VirtioNet<Q>) {
    let dev = FakeVirtio::start(Behaviour {
        packed: Q::PACKED,
        csum: true,
        tso,
        legacy,
        ..Behaviour::default()
    });
    let cfg = Config {
        rx_ring: 64,
        tx_ring: 256,
        pool: 1024,
        reset_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let addr: PciAddr = "0000:00:03.0".parse().unwrap();
    let t = dev.any_transport();
    let features = negotiate(t.as_ref(), &addr, &cfg, Q::PACKED).expect("negotiates");
    let nic = VirtioNet::<Q>::new(t, features, &dev.dma, addr, &cfg).expect("opens");
    (dev, nic)
}

/// Sends each super-frame of `payloads` through `prepare` and checks the wire against
/// `etherparse`'s segments; returns the frames handed to the port.
fn segments_on_the_wire<Q: QueueKind>(tso_offered: bool, legacy: bool, req: TxOffload) -> usize {
    let (dev, mut nic) = open::<Q>(tso_offered, legacy);
    let caps = nic.offloads();
    assert_eq!(caps.tx_tso4, tso_offered);
    let pool = nic.pool().clone();
    let (mut want, mut handed) = (Vec::new(), 0);
    for payload in [
        0,
        1,
        MSS - 1,
        MSS,
        MSS + 1,
        3 * MSS - 1,
        45_000,
        MAX_PAYLOAD,
    ] {
        let p = pool.alloc_copy(&super_frame(payload, FLAGS)).unwrap();
        let mut out = Vec::new();
        handed += caps.prepare(p, req, &pool, &mut out).unwrap();
        let segs = segments(payload, MSS, FLAGS);
        want.extend(match req.vlan {
            Some(tci) => segs.iter().map(|s| tagged(s, tci)).collect(),
            None => segs,
        });
        while !out.is_empty() {
            nic.tx_batch(&mut out);
        }
        assert!(nic.flush());
    }
    let sent = dev.sent();
    assert_eq!(sent.len(), want.len());
    for (i, (s, w)) in sent.iter().zip(&want).enumerate() {
        assert!(s == w, "segment {i} ({} bytes)", w.len());
    }
    assert_eq!(dev.counts().bad_headers, 0);
    assert_eq!(nic.stats().tx_errors, 0);
    drop(nic);
    assert_eq!(pool.free_count(), pool.capacity());
    handed
}

#[test]
fn split_ring_the_device_segments() {
    let handed = segments_on_the_wire::<Split>(true, false, tso(MSS as u16));
    assert_eq!(handed, 8, "one frame each: the device cut them");
}

#[test]
fn packed_ring_the_device_segments() {
    assert_eq!(
        segments_on_the_wire::<Packed>(true, false, tso(MSS as u16)),
        8
    );
}

#[test]
fn legacy_header_apart_the_device_segments_tagged_frames() {
    let req = TxOffload {
        vlan: Some(0x2064),
        ..tso(MSS as u16)
    };
    assert_eq!(segments_on_the_wire::<Split>(true, true, req), 8);
}

#[test]
fn without_host_tso4_software_cuts_the_same_segments() {
    let handed = segments_on_the_wire::<Split>(false, false, tso(MSS as u16));
    assert_eq!(
        handed,
        1 + 1 + 1 + 1 + 2 + 3 + 32 + 46,
        "every segment handed over"
    );
}

#[test]
fn cwr_and_requests_the_device_cannot_carry_are_not_asked_of_it() {
    let (dev, mut nic) = open::<Split>(true, false);
    let pool = nic.pool().clone();
    let f = Flags { cwr: true, ..FLAGS };
    let mut out = Vec::new();
    let caps = nic.offloads();
    let n = caps.prepare(
        pool.alloc_copy(&super_frame(5000, f)).unwrap(),
        tso(1000),
        &pool,
        &mut out,
    );
    assert_eq!(n, Ok(5), "CWR: cut in software");
    // A segmentation request set by hand on a frame that is not TCP: refused, not sent
    // whole.
    let mut udp = pool
        .alloc_copy(&zcnic_tests::offload_frames::frame(
            zcnic::L4Csum::Udp,
            3000,
            1,
        ))
        .unwrap();
    udp.set_tx_offload(tso(1000));
    out.push(udp);
    while !out.is_empty() {
        nic.tx_batch(&mut out);
    }
    assert!(nic.flush());
    assert_eq!(dev.sent(), segments(5000, 1000, f));
    assert_eq!(nic.stats().tx_errors, 1);
    // A port of a device without CSUM never segments.
    assert!(
        !Offloads {
            tx_tso4: false,
            ..caps
        }
        .tx_tso4
    );
}
