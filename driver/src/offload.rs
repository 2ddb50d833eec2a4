//! Checksum and VLAN offloads: what a port can do ([`Offloads`]), asking for it per frame
//! ([`Offloads::request`]), and the same work in software ([`apply_in_software`],
//! [`verify_checksums`]), so an application writes the same code on every NIC.
//!
//! The per-frame types live with the packet: [`TxOffload`] (what a frame asks on transmit)
//! and [`Checksum`] / [`Packet::vlan`] (what the NIC found on receive).
//!
//! ```
//! use zcnic::offload::{self, Offloads};
//! use zcnic::{Checksum, FakeDma, L4Csum, Mempool, TxOffload};
//! # let frame = {
//! #     let mut f = vec![0u8; 14 + 20 + 8 + 4];
//! #     f[12..14].copy_from_slice(&[0x08, 0x00]);
//! #     f[14] = 0x45; f[16..18].copy_from_slice(&32u16.to_be_bytes()); f[22] = 64; f[23] = 17;
//! #     f[26..30].copy_from_slice(&[10, 0, 0, 1]); f[30..34].copy_from_slice(&[10, 0, 0, 2]);
//! #     f[38..40].copy_from_slice(&12u16.to_be_bytes());
//! #     f
//! # };
//! let pool = Mempool::new(&FakeDma::new(), 4).unwrap();
//! let mut pkt = pool.alloc_copy(&frame).unwrap(); // IPv4/UDP, checksums left zero
//! let req = TxOffload { ip_csum: true, l4: Some(L4Csum::Udp), ..TxOffload::ipv4(14, 20) };
//! // A port without checksum offload (this is what `port.offloads()` says for one):
//! Offloads::NONE.request(&mut pkt, req).unwrap();
//! assert_eq!(pkt.tx_offload(), None); // all done in software
//! assert_eq!(offload::verify_checksums(&pkt), Checksum::Good);
//! ```

mod tso;

pub(crate) use tso::headers as tso_headers;
pub use tso::segment;

use std::sync::Arc;
use zcnic_hugepages::{Checksum, L4Csum, Mempool, Packet, TxOffload};

/// What a port's NIC does in hardware. `Nic::offloads` / `Port::offloads` say it for a
/// port as it was opened (with its `Config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// Fills in IPv4 header checksums ([`TxOffload::ip_csum`]).
    pub tx_ipv4_csum: bool,
    /// Fills in TCP checksums.
    pub tx_tcp_csum: bool,
    /// Fills in UDP checksums.
    pub tx_udp_csum: bool,
    /// Inserts 802.1Q tags ([`TxOffload::vlan`]).
    pub tx_vlan_insert: bool,
    /// Reports checksum verdicts with received frames ([`Packet::rx_checksum`]); a frame
    /// it did not check still says [`Checksum::Unknown`] (QEMU's e1000 checks none).
    pub rx_checksum: bool,
    /// Strips 802.1Q tags from received frames and reports them ([`Packet::vlan`]): on
    /// when the port was opened with [`Config::vlan_strip`](crate::Config::vlan_strip).
    pub rx_vlan_strip: bool,
    /// Reports a receive-side-scaling hash ([`Packet::rss`]).
    pub rx_rss_hash: bool,
    /// Cuts TCP/IPv4 frames into segments ([`TxOffload::tso`]): TSO.
    pub tx_tso4: bool,
}

/// Why a frame's offload request cannot be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// The headers the request names are not all in the frame's first buffer, or are not
    /// what it says (an IPv4 checksum asked of a frame that is not IPv4 at that offset).
    #[error("frame headers do not match the offload request")]
    Headers,
    /// No headroom left for the 802.1Q tag.
    #[error("no headroom for a VLAN tag")]
    NoHeadroom,
    /// A segmentation request ([`TxOffload::tso`]) this frame does not fit: not TCP over
    /// unfragmented IPv4, its headers not all in the first buffer, longer than an IPv4
    /// packet can be, or (with [`Offloads::request`]) a port that cannot segment it.
    #[error("frame cannot be segmented as asked: {0}")]
    Segmentation(&'static str),
    /// The pool ran out of buffers for the segments made in software.
    #[error("no free buffers for the segments")]
    NoBuffers,
}

impl Offloads {
    /// A port that offloads nothing (a virtio-net device that offered no checksum offload).
    pub const NONE: Self = Self {
        tx_ipv4_csum: false,
        tx_tcp_csum: false,
        tx_udp_csum: false,
        tx_vlan_insert: false,
        rx_checksum: false,
        rx_vlan_strip: false,
        rx_rss_hash: false,
        tx_tso4: false,
    };

    /// Whether this port fills in the transport checksum `l4`.
    pub const fn tx_l4(&self, l4: L4Csum) -> bool {
        match l4 {
            L4Csum::Tcp => self.tx_tcp_csum,
            L4Csum::Udp => self.tx_udp_csum,
        }
    }

    /// Asks for `req` on `pkt`, in hardware what this port does ([`Packet::set_tx_offload`],
    /// with the checksum fields prepared as the hardware wants them) and the rest now, in
    /// software: the frame leaves the port right either way.
    ///
    /// A segmentation request ([`TxOffload::tso`]) is asked of a port that segments
    /// ([`tx_tso4`](Self::tx_tso4)) with the headers prepared as the NIC wants them (see
    /// `tso.rs`); a frame whose payload fits one segment is sent as it is, with its
    /// checksums. Any other is refused with [`OffloadError::Segmentation`]:
    /// [`prepare`](Self::prepare) segments it in software.
    pub fn request(&self, pkt: &mut Packet, req: TxOffload) -> Result<(), OffloadError> {
        if let Some(mss) = req.tso {
            return tso::request(self, pkt, req, mss);
        }
        check_headers(pkt, &req)?;
        let hw_ip = req.ip_csum && self.tx_ipv4_csum;
        let hw_l4 = req.l4.filter(|&l4| self.tx_l4(l4));
        // Software checksums first, at the offsets the request gives.
        let soft = TxOffload {
            ip_csum: req.ip_csum && !hw_ip,
            l4: req.l4.filter(|_| hw_l4.is_none()),
            vlan: req.vlan.filter(|_| !self.tx_vlan_insert),
            ..req
        };
        let mut hw = TxOffload {
            ip_csum: hw_ip,
            l4: hw_l4,
            vlan: req.vlan.filter(|_| self.tx_vlan_insert),
            ..req
        };
        software(pkt, &soft)?;
        if soft.vlan.is_some() {
            hw.l2_len += 4;
        }
        if hw.ip_csum {
            let ip = usize::from(hw.l2_len);
            pkt.data_mut()[ip + 10..ip + 12].fill(0);
        }
        if let Some(l4) = hw.l4 {
            let seed = pseudo_header(pkt.data(), &hw).ok_or(OffloadError::Headers)?;
            let at = usize::from(hw.l2_len) + usize::from(hw.l3_len) + l4.field_offset();
            pkt.data_mut()[at..at + 2].copy_from_slice(&fold(seed).to_be_bytes());
        }
        if hw.wants_checksum() || hw.vlan.is_some() {
            pkt.set_tx_offload(hw);
        } else {
            pkt.clear_tx_offload();
        }
        Ok(())
    }
}

impl Offloads {
    /// Asks for `req` on `pkt` as [`request`](Self::request) does, and pushes the frame
    /// ready to send onto `out`; a segmentation request ([`TxOffload::tso`]) the port
    /// cannot carry out is done in software instead ([`segment`]), its segments pushed in
    /// order from buffers of `pool`. The one call for any request on any port. Returns
    /// the frames pushed; on an error the frame is dropped and nothing is pushed.
    pub fn prepare(
        &self,
        pkt: Packet,
        req: TxOffload,
        pool: &Arc<Mempool>,
        out: &mut Vec<Packet>,
    ) -> Result<usize, OffloadError> {
        tso::prepare(self, pkt, req, pool, out)
    }
}

/// Carries out `pkt`'s transmit request ([`Packet::tx_offload`]) in software and withdraws
/// it: checksums computed, tag inserted. For a frame on its way to a port that lacks what
/// it asks (see [`Offloads::request`], which does this for just that part). A
/// segmentation request is refused: [`segment`] makes the segments.
pub fn apply_in_software(pkt: &mut Packet) -> Result<(), OffloadError> {
    let Some(req) = pkt.tx_offload() else {
        return Ok(());
    };
    if req.tso.is_some() {
        return Err(OffloadError::Segmentation(
            "one frame cannot hold segments: use offload::segment",
        ));
    }
    check_headers(pkt, &req)?;
    software(pkt, &req)?;
    pkt.clear_tx_offload();
    Ok(())
}

/// Checks the IPv4 header and TCP/UDP checksums of a received frame (tagged or not, IPv4
/// or IPv6, over every buffer of a chain): `Good` when the transport checksum is right
/// (and the IPv4 header's too), `Bad` when one is wrong, `Unknown` for a frame that is not
/// unfragmented TCP or UDP over IP (an IPv4 header alone still says `Bad` when wrong).
pub fn verify_checksums(pkt: &Packet) -> Checksum {
    let d = pkt.data();
    let Some(mut l2) = d.get(12..14).map(|e| u16::from_be_bytes([e[0], e[1]])) else {
        return Checksum::Unknown;
    };
    let mut at = 14;
    if l2 == 0x8100 {
        let Some(e) = d.get(16..18) else {
            return Checksum::Unknown;
        };
        l2 = u16::from_be_bytes([e[0], e[1]]);
        at = 18;
    }
    let (req, l4_len) = match l2 {
        0x0800 => {
            let Some(&vihl) = d.get(at) else {
                return Checksum::Unknown;
            };
            let ihl = usize::from(vihl & 0xf) * 4;
            let Some(h) = d.get(at..at + ihl).filter(|_| vihl >> 4 == 4 && ihl >= 20) else {
                return Checksum::Unknown;
            };
            if fold(sum(h, 0)) != 0xffff {
                return Checksum::Bad;
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
            let l4 = match h[9] {
                6 => L4Csum::Tcp,
                17 => L4Csum::Udp,
                _ => return Checksum::Unknown,
            };
            if fragment || total < ihl {
                return Checksum::Unknown;
            }
            (
                TxOffload {
                    l4: Some(l4),
                    ..TxOffload::ipv4(at as u8, ihl as u8)
                },
                total - ihl,
            )
        }
        0x86dd => {
            let Some(h) = d.get(at..at + 40) else {
                return Checksum::Unknown;
            };
            let l4 = match h[6] {
                6 => L4Csum::Tcp,
                17 => L4Csum::Udp,
                _ => return Checksum::Unknown,
            };
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let req = TxOffload {
                l2_len: at as u8,
                l3_len: 40,
                ipv4: false,
                l4: Some(l4),
                ..TxOffload::default()
            };
            (req, len)
        }
        _ => return Checksum::Unknown,
    };
    let start = usize::from(req.l2_len) + usize::from(req.l3_len);
    if start + l4_len > pkt.total_len() {
        return Checksum::Bad;
    }
    // UDP over IPv4 may leave the checksum out (zero).
    if req.ipv4 && req.l4 == Some(L4Csum::Udp) && d.get(start + 6..start + 8) == Some(&[0, 0]) {
        return Checksum::Unknown;
    }
    let Some(seed) = pseudo_header_len(d, &req, l4_len) else {
        return Checksum::Unknown;
    };
    if fold(sum_frame(pkt, start, l4_len, seed)) == 0xffff {
        Checksum::Good
    } else {
        Checksum::Bad
    }
}

/// Completes a partial transport checksum as a NIC does for a frame that asks it (a
/// virtio-net NEEDS_CSUM frame, Linux's CHECKSUM_PARTIAL): the frame's bytes from `start`
/// to its end (over every buffer of a chain), whose 16-bit field at `field` holds the
/// pseudo-header sum, are summed and the complement stored in that field (a computed zero
/// as all ones, as Linux does). False, with nothing written, when `start` is past the
/// frame or the field does not lie in the first buffer.
pub(crate) fn complete_partial(pkt: &mut Packet, start: usize, field: usize) -> bool {
    let total = pkt.total_len();
    if start > total || field < start || field.saturating_add(2) > pkt.len() {
        return false;
    }
    let c = match !fold(sum_frame(pkt, start, total - start, 0)) {
        0 => 0xffff,
        c => c,
    };
    pkt.data_mut()[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The request's headers lie in the first buffer, and are what it says.
fn check_headers(pkt: &Packet, req: &TxOffload) -> Result<(), OffloadError> {
    let d = pkt.data();
    let ip = usize::from(req.l2_len);
    let l4 = ip + usize::from(req.l3_len);
    let end = l4 + req.l4.map_or(0, |k| k.field_offset() + 2);
    let version = d.get(ip).map(|v| v >> 4);
    let fits = req.l2_len >= 12 && end <= d.len();
    let ip_ok = !req.wants_checksum() || version == Some(if req.ipv4 { 4 } else { 6 });
    if fits && ip_ok && (req.ipv4 || !req.ip_csum) {
        Ok(())
    } else {
        Err(OffloadError::Headers)
    }
}

/// Does `req` to `pkt` (headers checked): checksums, then the tag.
fn software(pkt: &mut Packet, req: &TxOffload) -> Result<(), OffloadError> {
    let ip = usize::from(req.l2_len);
    let l4_at = ip + usize::from(req.l3_len);
    if req.ip_csum {
        fill_ipv4_checksum(&mut pkt.data_mut()[ip..l4_at]);
    }
    if let Some(l4) = req.l4 {
        let seed = pseudo_header(pkt.data(), req).ok_or(OffloadError::Headers)?;
        let len = l4_len(pkt.data(), req).ok_or(OffloadError::Headers)?;
        let field = l4_at + l4.field_offset();
        pkt.data_mut()[field..field + 2].fill(0);
        let mut c = !fold(sum_frame(pkt, l4_at, len, seed));
        if l4 == L4Csum::Udp && c == 0 {
            // UDP sends a computed zero as all ones (RFC 768).
            c = 0xffff;
        }
        pkt.data_mut()[field..field + 2].copy_from_slice(&c.to_be_bytes());
    }
    if let Some(tci) = req.vlan {
        pkt.prepend(4).map_err(|_| OffloadError::NoHeadroom)?;
        let d = pkt.data_mut();
        d.copy_within(4..16, 0);
        d[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        d[14..16].copy_from_slice(&tci.to_be_bytes());
    }
    Ok(())
}

/// Computes the checksum of the IPv4 header `h` (all of it, options included) into its
/// field.
pub(crate) fn fill_ipv4_checksum(h: &mut [u8]) {
    h[10..12].fill(0);
    let c = !fold(sum(h, 0));
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Transport bytes the IP header says follow it.
fn l4_len(d: &[u8], req: &TxOffload) -> Option<usize> {
    let ip = usize::from(req.l2_len);
    let h = d.get(ip..ip + 6)?;
    if req.ipv4 {
        usize::from(u16::from_be_bytes([h[2], h[3]])).checked_sub(usize::from(req.l3_len))
    } else {
        // Extension headers count in the payload length but not in the transport's.
        (usize::from(u16::from_be_bytes([h[4], h[5]])) + 40).checked_sub(usize::from(req.l3_len))
    }
}

/// The pseudo-header's sum (RFC 793, RFC 8200 §8.1), unfolded.
fn pseudo_header(d: &[u8], req: &TxOffload) -> Option<u32> {
    pseudo_header_len(d, req, l4_len(d, req)?)
}

fn pseudo_header_len(d: &[u8], req: &TxOffload, len: usize) -> Option<u32> {
    let ip = usize::from(req.l2_len);
    let proto = match req.l4? {
        L4Csum::Tcp => 6,
        L4Csum::Udp => 17,
    };
    let addrs = if req.ipv4 {
        d.get(ip + 12..ip + 20)?
    } else {
        d.get(ip + 8..ip + 40)?
    };
    Some(sum(addrs, proto + len as u32))
}

/// Adds `d` as big-endian 16-bit words (a last odd byte padded with zero) to `acc`.
fn sum(d: &[u8], mut acc: u32) -> u32 {
    let mut words = d.chunks_exact(2);
    for w in &mut words {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([w[0], w[1]])));
        // Fold as it goes: never overflows whatever the length.
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [b] = words.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

/// `sum` over `len` bytes of the whole frame (every buffer of a chain) from `start`.
fn sum_frame(pkt: &Packet, start: usize, len: usize, seed: u32) -> u32 {
    if pkt.is_single() || start + len <= pkt.len() {
        return pkt
            .data()
            .get(start..start + len)
            .map_or(seed, |d| sum(d, seed));
    }
    let mut acc = seed;
    let (mut at, end) = (0usize, start + len);
    // A part may end on an odd byte: carry it to the next part's first.
    let mut odd: Option<u8> = None;
    let parts = pkt.segments().flat_map(|s| {
        std::iter::once(s.data()).chain(s.payload().map(zcnic_hugepages::Segment::data))
    });
    for part in parts {
        let (lo, hi) = (start.max(at), end.min(at + part.len()));
        if lo < hi {
            let mut bytes = &part[lo - at..hi - at];
            if let Some(b) = odd.take() {
                acc = sum(&[b, bytes[0]], acc);
                bytes = &bytes[1..];
            }
            let even = bytes.len() & !1;
            acc = sum(&bytes[..even], acc);
            if even < bytes.len() {
                odd = Some(bytes[even]);
            }
        }
        at += part.len();
    }
    if let Some(b) = odd {
        acc = sum(&[b], acc);
    }
    acc
}

/// Folds a sum to 16 bits.
fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}
