//! Checksum offloads on virtio-net (virtio 1.1 §5.1.6.2, §5.1.6.4): the `virtio_net_hdr`
//! in front of each frame carries them both ways.
//!
//! - **Transmit** (VIRTIO_NET_F_CSUM): a frame that asks for its TCP or UDP checksum
//!   ([`Packet::tx_offload`]) goes with `flags` NEEDS_CSUM, `csum_start` where the
//!   transport header begins and `csum_offset` where its checksum field lies in it; the
//!   field holds the pseudo-header sum, and the device sums from `csum_start` to the end
//!   and stores the result there. What the device cannot do (the IPv4 header checksum, a
//!   VLAN tag: virtio-net has neither) is done in software first
//!   ([`Offloads::request`]).
//! - **Receive** (VIRTIO_NET_F_GUEST_CSUM): DATA_VALID says the device (or the host's
//!   stack behind it) checked the frame: [`Checksum::Good`]. NEEDS_CSUM says the frame
//!   comes from a stack that left the transport checksum partial, as a local sender may:
//!   the sum from `csum_start` is completed here, in software, so the frame is right on
//!   any wire it is sent on next, and reported good (a partial checksum is not a wire
//!   error). Anything else is [`Checksum::Unknown`]. Offsets the device gives are
//!   checked: one outside the frame is a receive error, never a write out of it.
//!
//! - **Segmentation on transmit** (VIRTIO_NET_F_HOST_TSO4): a frame that asks for TSO
//!   ([`TxOffload::tso`]) goes with `gso_type` GSO_TCPV4, `gso_size` its MSS and
//!   `hdr_len` its headers' length, with NEEDS_CSUM at the TCP checksum, as Linux's
//!   virtio_net sends one: the field holds the pseudo-header sum *with* the whole frame's
//!   TCP length (the host takes it out for each segment, `tcp_gso_segment`), where
//!   [`Offloads::request`] leaves it without (as Intel's NICs want it), so it is added
//!   here. The super-frame's IPv4 header checksum is computed here (a host bridge with
//!   br_netfilter drops a super-frame without it); the host computes each segment's.
//!   A frame with CWR is not
//!   asked (no HOST_ECN): `Offloads::prepare` segments it in software.
//! - **No merged segments on receive**: GUEST_TSO4 (and GUEST_TSO6, GUEST_UFO) are never
//!   negotiated. A frame larger than the port's MTU would reach an application that
//!   forwards it to a port whose MTU it exceeds (and smoltcp, whose MTU is the port's),
//!   and the receive ring would need a buffer chain of up to 64 KiB per frame; the host
//!   segments for us instead, which is what a packet processor wants.
//!
//! Frames without either flag pay one test of a per-queue bool in the receive loop; the
//! transmit fast path never comes here (an offload request makes `Packet::is_single`
//! false, so the frame goes the chain way, `txchain.rs`).

use crate::offload::{self, Offloads};
use zcnic_hugepages::{Checksum, Packet, RxOffload, TxOffload};

/// `flags`: the checksum from `csum_start` is to be completed (virtio 1.1 §5.1.6).
pub(crate) const NEEDS_CSUM: u8 = 1;
/// `flags`: the frame's checksums were checked.
pub(crate) const DATA_VALID: u8 = 2;
/// `gso_type`: TCP over IPv4 (virtio 1.1 §5.1.6).
const GSO_TCPV4: u8 = 1;
/// Where `gso_type` (u8), `hdr_len`, `gso_size`, `csum_start` and `csum_offset` (le16
/// each) sit in the header.
const GSO_TYPE: usize = 1;
const HDR_LEN: usize = 2;
const GSO_SIZE: usize = 4;
const CSUM_START: usize = 6;
const CSUM_OFFSET: usize = 8;

/// What a transmitted frame's header asks of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TxHeader {
    /// `csum_start`, `csum_offset` of NEEDS_CSUM.
    pub csum: (u16, u16),
    /// `gso_size` and `hdr_len` of GSO_TCPV4.
    pub gso: Option<(u16, u16)>,
}

/// What a port of `features` offloads: the transport checksums both ways, where the
/// device offered them (QEMU does with a tap backend only).
pub(crate) fn offloads(features: u64) -> Offloads {
    use super::feature::{CSUM, GUEST_CSUM, HOST_TSO4};
    Offloads {
        tx_tso4: features & (CSUM | HOST_TSO4) == CSUM | HOST_TSO4,
        tx_tcp_csum: features & CSUM != 0,
        tx_udp_csum: features & CSUM != 0,
        rx_checksum: features & GUEST_CSUM != 0,
        ..Offloads::NONE
    }
}

/// Carries out `pkt`'s offload request (the frame before its header is prepended) and
/// returns what the header asks the device for, if anything. A request the device can
/// carry out as it stands (a TCP/UDP checksum, the field holding the pseudo-header sum as
/// [`Offloads::request`] leaves it) is taken as it is, as the e1000 takes its context;
/// one that asks more (the IPv4 header checksum, a tag: virtio-net has neither) goes
/// through `request`, which does that part in software; so does a segmentation request
/// (`request` prepares its headers again, which changes nothing the second time).
/// `Err` when the headers do not hold up (the checksum field would lie outside the first
/// buffer) or the frame asks a segmentation the device cannot do: the frame is refused,
/// not checksummed at a wrong offset nor sent whole.
pub(super) fn prepare_tx(pkt: &mut Packet, caps: Offloads) -> Result<Option<TxHeader>, ()> {
    let Some(mut req) = pkt.tx_offload() else {
        return Ok(None);
    };
    let more = req.ip_csum || req.vlan.is_some() || req.tso.is_some();
    if more || req.l4.is_some_and(|l4| !caps.tx_l4(l4)) {
        caps.request(pkt, req).map_err(|_| ())?;
        match pkt.tx_offload() {
            Some(r) => req = r,
            None => return Ok(None),
        }
    }
    if req.tso.is_some() {
        return segmentation(pkt, &req).map(Some);
    }
    let Some(l4) = req.l4 else {
        return Ok(None);
    };
    let start = u16::from(req.l2_len) + u16::from(req.l3_len);
    let offset = l4.field_offset() as u16;
    if usize::from(start + offset) + 2 > pkt.len() {
        return Err(());
    }
    Ok(Some(TxHeader {
        csum: (start, offset),
        gso: None,
    }))
}

/// The header of a frame `request` prepared for segmentation, its IPv4 header checksum
/// computed and its TCP checksum field made to hold the pseudo-header sum with the whole
/// frame's TCP length.
#[cold]
fn segmentation(pkt: &mut Packet, req: &TxOffload) -> Result<TxHeader, ()> {
    let h = offload::tso_headers(pkt, req).map_err(|_| ())?;
    let mss = req.tso.ok_or(())?.get();
    let field = h.tcp + 16;
    let d = pkt.data_mut();
    // The host takes the super-frame as an IPv4 packet before it cuts it: a bridge with
    // br_netfilter drops one whose header checksum is wrong. (It computes each segment's.)
    offload::fill_ipv4_checksum(&mut d[h.ip..h.tcp]);
    let seed = u32::from(u16::from_be_bytes([d[field], d[field + 1]]));
    let s = seed + (h.hdr + h.payload - h.tcp) as u32;
    let s = ((s & 0xffff) + (s >> 16)) as u16;
    d[field..field + 2].copy_from_slice(&s.to_be_bytes());
    Ok(TxHeader {
        csum: (h.tcp as u16, 16),
        gso: Some((mss, h.hdr as u16)),
    })
}

/// Writes NEEDS_CSUM and its offsets, and GSO_TCPV4 with its sizes, into the (zeroed)
/// header `hdr`.
pub(super) fn write_tx_header(hdr: &mut [u8], t: TxHeader) {
    let (start, offset) = t.csum;
    hdr[0] = NEEDS_CSUM;
    hdr[CSUM_START..CSUM_START + 2].copy_from_slice(&start.to_le_bytes());
    hdr[CSUM_OFFSET..CSUM_OFFSET + 2].copy_from_slice(&offset.to_le_bytes());
    if let Some((mss, hdr_len)) = t.gso {
        hdr[GSO_TYPE] = GSO_TCPV4;
        hdr[HDR_LEN..HDR_LEN + 2].copy_from_slice(&hdr_len.to_le_bytes());
        hdr[GSO_SIZE..GSO_SIZE + 2].copy_from_slice(&mss.to_le_bytes());
    }
}

/// Records the checksum verdict of a received frame from its header, which lies in the
/// `hdr_len` bytes of headroom before it, and completes a partial checksum. False when
/// the header's offsets do not fit the frame (a receive error: the frame is dropped).
#[inline(never)]
pub(super) fn rx_verdict(pkt: &mut Packet, hdr_len: usize) -> bool {
    if pkt.prepend(hdr_len).is_err() {
        return false;
    }
    let h = pkt.data();
    let flags = h[0];
    let start = usize::from(u16::from_le_bytes([h[CSUM_START], h[CSUM_START + 1]]));
    let offset = usize::from(u16::from_le_bytes([h[CSUM_OFFSET], h[CSUM_OFFSET + 1]]));
    // Prepended just above, so this cannot fail.
    let _ = pkt.trim_front(hdr_len);
    let verdict = if flags & NEEDS_CSUM != 0 {
        if !offload::complete_partial(pkt, start, start + offset) {
            return false;
        }
        Checksum::Good
    } else if flags & DATA_VALID != 0 {
        Checksum::Good
    } else {
        Checksum::Unknown
    };
    pkt.set_rx_offload(RxOffload::new().with_l4(verdict));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use zcnic_hugepages::{FakeDma, Mempool};

    /// An IPv4/UDP frame with `payload` bytes, its UDP checksum holding the pseudo-header
    /// sum (as a stack that leaves the checksum to the NIC writes it).
    fn partial_udp(pool: &std::sync::Arc<Mempool>, payload: usize) -> Packet {
        let mut f = vec![0u8; 42 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((28 + payload) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        for (i, b) in f[42..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut pkt = pool.alloc_copy(&f).unwrap();
        let req = zcnic_hugepages::TxOffload {
            ip_csum: true,
            l4: Some(zcnic_hugepages::L4Csum::Udp),
            ..zcnic_hugepages::TxOffload::ipv4(14, 20)
        };
        // A port that offloads the UDP checksum: `request` leaves the seed in the field
        // (and computes the IPv4 header's).
        let caps = Offloads {
            tx_udp_csum: true,
            ..Offloads::NONE
        };
        caps.request(&mut pkt, req).unwrap();
        pkt.clear_tx_offload();
        pkt
    }

    fn with_header(pkt: &mut Packet, flags: u8, start: u16, offset: u16) {
        pkt.prepend(12).unwrap();
        let h = pkt.data_mut();
        h[..12].fill(0);
        h[0] = flags;
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&offset.to_le_bytes());
        pkt.trim_front(12).unwrap();
    }

    #[test]
    fn a_partial_checksum_is_completed_and_reported_good() {
        let pool = Mempool::new(&FakeDma::new(), 8).unwrap();
        let mut pkt = partial_udp(&pool, 100);
        assert_eq!(offload::verify_checksums(&pkt), Checksum::Bad);
        with_header(&mut pkt, NEEDS_CSUM, 34, 6);
        assert!(rx_verdict(&mut pkt, 12));
        assert_eq!(pkt.rx_checksum(), Checksum::Good);
        assert_eq!(offload::verify_checksums(&pkt), Checksum::Good);
        assert_eq!(
            pkt.room(),
            zcnic_hugepages::DATA_ROOM,
            "the frame starts where it did"
        );
    }

    #[test]
    fn offsets_outside_the_frame_are_refused() {
        let pool = Mempool::new(&FakeDma::new(), 8).unwrap();
        for (start, offset) in [(34, 200), (142, 0), (141, 0), (u16::MAX, u16::MAX)] {
            let mut pkt = partial_udp(&pool, 100);
            let before = pkt.to_vec();
            with_header(&mut pkt, NEEDS_CSUM, start, offset);
            assert!(!rx_verdict(&mut pkt, 12), "start {start} offset {offset}");
            assert_eq!(pkt.to_vec(), before, "nothing written");
        }
    }

    #[test]
    fn data_valid_is_good_and_no_flag_is_unknown() {
        let pool = Mempool::new(&FakeDma::new(), 8).unwrap();
        let mut pkt = partial_udp(&pool, 10);
        with_header(&mut pkt, DATA_VALID, 0, 0);
        assert!(rx_verdict(&mut pkt, 12));
        assert_eq!(pkt.rx_checksum(), Checksum::Good);
        with_header(&mut pkt, 0, 0, 0);
        assert!(rx_verdict(&mut pkt, 12));
        assert_eq!(pkt.rx_checksum(), Checksum::Unknown);
    }

    #[test]
    fn tx_request_keeps_the_transport_checksum_for_the_device() {
        let pool = Mempool::new(&FakeDma::new(), 8).unwrap();
        let mut pkt = partial_udp(&pool, 20);
        let req = zcnic_hugepages::TxOffload {
            ip_csum: true,
            l4: Some(zcnic_hugepages::L4Csum::Udp),
            ..zcnic_hugepages::TxOffload::ipv4(14, 20)
        };
        pkt.set_tx_offload(req);
        let caps = offloads(super::super::feature::CSUM);
        assert_eq!(
            prepare_tx(&mut pkt, caps),
            Ok(Some(TxHeader {
                csum: (34, 6),
                gso: None
            }))
        );
        // The IPv4 header checksum was done in software: the device has none.
        let ip = &pkt.data()[14..34];
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff);
        // Without CSUM all of it is software, and nothing asks the device.
        let mut pkt = partial_udp(&pool, 20);
        pkt.set_tx_offload(req);
        assert_eq!(prepare_tx(&mut pkt, offloads(0)), Ok(None));
        assert_eq!(offload::verify_checksums(&pkt), Checksum::Good);
    }
}
