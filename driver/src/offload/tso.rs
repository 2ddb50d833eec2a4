//! TCP segmentation (TSO): a TCP/IPv4 frame longer than one segment, cut into segments
//! of at most its MSS ([`TxOffload::tso`]) by the NIC where the port can
//! ([`Offloads::tx_tso4`]), or here, in software, into new buffers ([`segment`]).
//!
//! Each segment is the super-frame's headers with its own IPv4 total length,
//! identification (the first segment's plus its number), header checksum, TCP sequence
//! number (the first's plus the payload before it) and TCP checksum; FIN and PSH stay on
//! the last segment only and CWR on the first only, as Linux's `tcp_gso_segment` leaves
//! them. A NIC that cannot be told that about CWR (the 8254x copies the flags into every
//! segment but FIN and PSH) is not asked: a frame with CWR is segmented in software,
//! as Linux does for a device without `NETIF_F_TSO_ECN`.
//!
//! For the NIC, [`Offloads::request`] leaves the super-frame as Intel's NICs want it (8254x SDM
//! §3.5; the 82576 the same): the IPv4 total length of the whole frame, the header
//! checksum field zero, and the TCP checksum field holding the pseudo-header sum
//! *without* the length, which the NIC adds for each segment. (virtio-net adds the length
//! of the whole frame itself, and the header checksum: `virtio/offload.rs`.)
//!
//! ```
//! use std::num::NonZeroU16;
//! use zcnic::offload::{self, Offloads};
//! use zcnic::{Checksum, FakeDma, Mempool, TxOffload};
//! # let frame = {
//! #     let payload = 3000;
//! #     let mut f = vec![0u8; 54 + payload];
//! #     f[12..14].copy_from_slice(&[0x08, 0x00]);
//! #     f[14] = 0x45; f[22] = 64; f[23] = 6;
//! #     f[26..30].copy_from_slice(&[10, 0, 0, 1]); f[30..34].copy_from_slice(&[10, 0, 0, 2]);
//! #     f[46] = 0x50; f[47] = 0x18;
//! #     f
//! # };
//! let pool = Mempool::new(&FakeDma::new(), 16).unwrap();
//! let pkt = pool.alloc_copy(&frame).unwrap(); // IPv4/TCP, 3000 bytes of payload
//! let req = TxOffload::tcp_segments(14, 20, NonZeroU16::new(1448).unwrap());
//! let mut out = Vec::new();
//! // A port that cannot segment: three segments made in software, checksums and all.
//! Offloads::NONE.prepare(pkt, req, &pool, &mut out).unwrap();
//! assert_eq!(out.iter().map(|p| p.total_len()).collect::<Vec<_>>(), [1502, 1502, 158]);
//! assert!(out.iter().all(|p| offload::verify_checksums(p) == Checksum::Good));
//! ```

use super::{fold, sum, OffloadError, Offloads};
use std::num::NonZeroU16;
use std::sync::Arc;
use zcnic_hugepages::{L4Csum, Mempool, Packet, TxOffload, DATA_ROOM};

/// TCP flags byte (13 bytes into the TCP header): the bits segmentation treats apart.
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const CWR: u8 = 0x80;

/// Where a segmentation request's headers lie in the frame, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tcp4 {
    /// Offset of the IPv4 header.
    pub ip: usize,
    /// Offset of the TCP header.
    pub tcp: usize,
    /// Bytes of all headers: where the payload starts.
    pub hdr: usize,
    /// Payload bytes (the frame after the headers, over every buffer).
    pub payload: usize,
}

/// Checks `req`'s segmentation against `pkt`: TCP over unfragmented IPv4 at the offsets
/// the request gives, every header in the first buffer, and no more than an IPv4 packet
/// holds (65535 bytes from the IP header on).
pub(crate) fn headers(pkt: &Packet, req: &TxOffload) -> Result<Tcp4, OffloadError> {
    let bad = OffloadError::Segmentation;
    if !req.ipv4 || req.l4 != Some(L4Csum::Tcp) {
        return Err(bad("TSO is for TCP over IPv4"));
    }
    let d = pkt.data();
    let ip = usize::from(req.l2_len);
    let tcp = ip + usize::from(req.l3_len);
    let (Some(h), true) = (d.get(ip..tcp), req.l2_len >= 12) else {
        return Err(bad("the IP header is not in the first buffer"));
    };
    if h.len() < 20 || h[0] >> 4 != 4 || usize::from(h[0] & 0xf) * 4 != h.len() || h[9] != 6 {
        return Err(bad("not TCP over IPv4 with the header length asked"));
    }
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return Err(bad("a fragment"));
    }
    let thl = d.get(tcp + 12).map_or(0, |o| usize::from(o >> 4) * 4);
    let hdr = tcp + thl;
    if thl < 20 || hdr > d.len() {
        return Err(bad("the TCP header is not in the first buffer"));
    }
    let total = pkt.total_len();
    if total - ip > usize::from(u16::MAX) {
        return Err(bad("longer than an IPv4 packet"));
    }
    Ok(Tcp4 {
        ip,
        tcp,
        hdr,
        payload: total - hdr,
    })
}

/// [`Offloads::request`] for a segmentation request: see the module's text.
pub(super) fn request(
    caps: &Offloads,
    pkt: &mut Packet,
    req: TxOffload,
    mss: NonZeroU16,
) -> Result<(), OffloadError> {
    let h = headers(pkt, &req)?;
    set_ip_len(pkt, &h);
    let one = TxOffload { tso: None, ..req };
    if h.payload <= usize::from(mss.get()) {
        return caps.request(pkt, one);
    }
    if !caps.tx_tso4 || pkt.data()[h.tcp + 13] & CWR != 0 {
        return Err(OffloadError::Segmentation(
            "the port cannot segment this frame (Offloads::prepare does it in software)",
        ));
    }
    let mut hw = TxOffload {
        ip_csum: true,
        ..req
    };
    if req.vlan.is_some() && !caps.tx_vlan_insert {
        // The tag in software, the rest asked of the NIC: a port with TSO but no tag
        // insertion (virtio-net).
        let tag = TxOffload {
            ip_csum: false,
            l4: None,
            tso: None,
            ..req
        };
        super::software(pkt, &tag)?;
        hw.l2_len += 4;
        hw.vlan = None;
    }
    let ip = usize::from(hw.l2_len);
    let tcp = ip + usize::from(hw.l3_len);
    let d = pkt.data_mut();
    d[ip + 10..ip + 12].fill(0);
    let seed = fold(sum(&d[ip + 12..ip + 20], 6));
    d[tcp + 16..tcp + 18].copy_from_slice(&seed.to_be_bytes());
    pkt.set_tx_offload(hw);
    Ok(())
}

/// [`Offloads::prepare`] for a segmentation request: asked of the NIC where it can,
/// else cut here.
pub(super) fn prepare(
    caps: &Offloads,
    mut pkt: Packet,
    req: TxOffload,
    pool: &Arc<Mempool>,
    out: &mut Vec<Packet>,
) -> Result<usize, OffloadError> {
    let Some(mss) = req.tso else {
        caps.request(&mut pkt, req)?;
        out.push(pkt);
        return Ok(1);
    };
    match request(caps, &mut pkt, req, mss) {
        Ok(()) => {
            out.push(pkt);
            Ok(1)
        }
        Err(OffloadError::Segmentation(_)) if headers(&pkt, &req).is_ok() => {
            segment(caps, &pkt, req, pool, out)
        }
        Err(e) => Err(e),
    }
}

/// Cuts `pkt`, a TCP/IPv4 frame with a segmentation request `req` ([`TxOffload::tso`]),
/// into segments in new buffers of `pool` (a chain each where one is longer than a
/// buffer), appended to `out`; each asks `caps` for its checksums and tag through
/// [`Offloads::request`], so a port that checksums does, and the rest is done here.
/// Returns how many. The frame itself is left as it was. On an error nothing is added
/// to `out`.
pub fn segment(
    caps: &Offloads,
    pkt: &Packet,
    req: TxOffload,
    pool: &Arc<Mempool>,
    out: &mut Vec<Packet>,
) -> Result<usize, OffloadError> {
    let h = headers(pkt, &req)?;
    let mss = usize::from(req.tso.map_or(u16::MAX, NonZeroU16::get));
    let n = h.payload.div_ceil(mss).max(1);
    let d = pkt.data();
    let id = u16::from_be_bytes([d[h.ip + 4], d[h.ip + 5]]);
    let seq = u32::from_be_bytes([d[h.tcp + 4], d[h.tcp + 5], d[h.tcp + 6], d[h.tcp + 7]]);
    let each = TxOffload {
        ip_csum: true,
        tso: None,
        ..req
    };
    let first = out.len();
    for i in 0..n {
        let off = i * mss;
        let len = mss.min(h.payload - off);
        let Some(mut seg) = build(pool, h.hdr + len, |at, dst| {
            copy_at(pkt, &h, off, at, dst);
        }) else {
            out.truncate(first);
            return Err(OffloadError::NoBuffers);
        };
        let s = seg.data_mut();
        let ip_len = (h.hdr + len - h.ip) as u16;
        s[h.ip + 2..h.ip + 4].copy_from_slice(&ip_len.to_be_bytes());
        s[h.ip + 4..h.ip + 6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        let seq_i = seq.wrapping_add(off as u32);
        s[h.tcp + 4..h.tcp + 8].copy_from_slice(&seq_i.to_be_bytes());
        if i + 1 < n {
            s[h.tcp + 13] &= !(FIN | PSH);
        }
        if i > 0 {
            s[h.tcp + 13] &= !CWR;
        }
        if let Err(e) = caps.request(&mut seg, each) {
            out.truncate(first);
            return Err(e);
        }
        out.push(seg);
    }
    Ok(n)
}

/// Writes the IPv4 total length of the whole frame, so the super-frame is one a host
/// stack would take (virtio-net's host checks it) and its pseudo-header sum is right.
fn set_ip_len(pkt: &mut Packet, h: &Tcp4) {
    let len = (h.hdr + h.payload - h.ip) as u16;
    pkt.data_mut()[h.ip + 2..h.ip + 4].copy_from_slice(&len.to_be_bytes());
}

/// A frame of `len` bytes in buffers of `pool`, a chain when longer than one, its bytes
/// written by `fill(offset, bytes)`; `None` (every buffer given back) when the pool has
/// too few free. Built from the end, so each buffer is linked before the one in front.
fn build(pool: &Arc<Mempool>, len: usize, fill: impl Fn(usize, &mut [u8])) -> Option<Packet> {
    let mut tail: Option<Packet> = None;
    for j in (0..len.div_ceil(DATA_ROOM).max(1)).rev() {
        let mut b = pool.alloc()?;
        let lo = j * DATA_ROOM;
        b.set_len(len.min(lo + DATA_ROOM) - lo).ok()?;
        fill(lo, b.data_mut());
        if let Some(t) = tail.take() {
            b.link(t);
        }
        tail = Some(b);
    }
    tail
}

/// Fills `dst` with a segment's bytes from offset `at`: the super-frame's headers, then
/// its payload from `off` on (over every buffer and attached payload of the chain).
fn copy_at(pkt: &Packet, h: &Tcp4, off: usize, at: usize, dst: &mut [u8]) {
    let mut dst = dst;
    if at < h.hdr {
        let n = (h.hdr - at).min(dst.len());
        dst[..n].copy_from_slice(&pkt.data()[at..at + n]);
        dst = &mut dst[n..];
    }
    // Frame offset of the next byte wanted.
    let mut want = h.hdr + off + at.saturating_sub(h.hdr);
    let mut base = 0;
    let parts = pkt.segments().flat_map(|s| {
        std::iter::once(s.data()).chain(s.payload().map(zcnic_hugepages::Segment::data))
    });
    for part in parts {
        if dst.is_empty() {
            break;
        }
        let end = base + part.len();
        if want < end {
            let n = (end - want).min(dst.len());
            dst[..n].copy_from_slice(&part[want - base..want - base + n]);
            dst = &mut dst[n..];
            want += n;
        }
        base = end;
    }
}
