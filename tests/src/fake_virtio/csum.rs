//! Checksum offloads as a device plays them (virtio 1.1 §5.1.6.2, §5.1.6.4): with
//! VIRTIO_NET_F_CSUM negotiated a transmitted frame's header may say NEEDS_CSUM, and the
//! device completes the checksum from `csum_start` into the field at `csum_offset` before
//! the frame goes on the wire (and is recorded); a received frame's header can carry
//! NEEDS_CSUM (with offsets) or DATA_VALID ([`Inject::Csum`](super::Inject::Csum)).
//!
//! The sum here is written from RFC 1071 on its own, not shared with the driver's, so the
//! tests compare two implementations.

/// `flags`: complete the checksum from `csum_start`.
pub const NEEDS_CSUM: u8 = 1;
/// `flags`: the checksums were checked.
pub const DATA_VALID: u8 = 2;

/// A header of `hdr_len` bytes with `flags` and the two offsets.
pub(super) fn header(hdr_len: usize, flags: u8, start: u16, offset: u16) -> Vec<u8> {
    let mut h = vec![0; hdr_len];
    h[0] = flags;
    h[6..8].copy_from_slice(&start.to_le_bytes());
    h[8..10].copy_from_slice(&offset.to_le_bytes());
    h
}

/// `gso_type` GSO_TCPV4.
const GSO_TCPV4: u8 = 1;

/// What a transmitted frame's header asks, checked: `Ok(Some(frames))` for a NEEDS_CSUM
/// frame, its checksum completed in place, or the segments of a GSO_TCPV4 frame (cut as
/// the host's Linux cuts it: `fake_tso.rs`), `Ok(None)` for an all-zero header, `Err`
/// for anything else (a bad header: NEEDS_CSUM without CSUM negotiated, GSO without
/// HOST_TSO4 or NEEDS_CSUM, a `hdr_len` that is not the headers' length, offsets outside
/// the frame, any other field set).
pub(super) fn transmit(
    head: &[u8],
    frame: &mut [u8],
    csum: bool,
    tso: bool,
) -> Result<Option<Vec<Vec<u8>>>, ()> {
    let rest_zero =
        |r: std::ops::Range<usize>| head.get(r).is_some_and(|b| b.iter().all(|&x| x == 0));
    let hdr_len = head.len();
    if head.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let le = |at: usize| usize::from(u16::from_le_bytes([head[at], head[at + 1]]));
    let gso = head[1] == GSO_TCPV4 && tso;
    let plain = rest_zero(1..6);
    if !(csum && head[0] == NEEDS_CSUM && (plain || gso) && rest_zero(10..hdr_len)) {
        return Err(());
    }
    let start = le(6);
    let field = start + le(8);
    if field + 2 > frame.len() {
        return Err(());
    }
    if gso {
        let tcp_hdr = frame.get(start + 12).map_or(0, |o| usize::from(o >> 4) * 4);
        let cut = crate::fake_tso::Cut {
            // After a tag when the frame has one.
            ip: if frame.get(12..14) == Some(&[0x81, 0]) {
                18
            } else {
                14
            },
            tcp: start,
            hdr: le(2),
            mss: le(4),
            seed: crate::fake_tso::Seed::WholeLength,
            cwr_first_only: true,
            ip_csum: true,
            tcp_csum: true,
        };
        // The host checks the super-frame's IPv4 header as it takes it (br_netfilter
        // drops one whose checksum is wrong).
        let ip_ok = frame
            .get(cut.ip..start)
            .is_some_and(|h| crate::fake_csum(h) == 0xffff);
        if le(8) != 16 || cut.hdr != start + tcp_hdr || !ip_ok {
            return Err(());
        }
        return crate::fake_tso::segment(frame, &cut).map(Some).ok_or(());
    }
    let mut acc: u64 = 0;
    for (i, &b) in frame[start..].iter().enumerate() {
        acc += if i % 2 == 0 {
            u64::from(b) << 8
        } else {
            u64::from(b)
        };
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    let c = match !(acc as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(Some(vec![frame.to_vec()]))
}
