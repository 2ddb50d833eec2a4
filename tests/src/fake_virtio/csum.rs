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

/// What a transmitted frame's header asks, checked: `Ok(true)` once a NEEDS_CSUM frame's
/// checksum is completed in `frame`, `Ok(false)` for an all-zero header, `Err` for
/// anything else (a bad header: NEEDS_CSUM without CSUM negotiated, offsets outside the
/// frame, any other field set).
pub(super) fn transmit(head: &[u8], frame: &mut [u8], csum: bool) -> Result<bool, ()> {
    let rest_zero =
        |r: std::ops::Range<usize>| head.get(r).is_some_and(|b| b.iter().all(|&x| x == 0));
    let hdr_len = head.len();
    if head.iter().all(|&b| b == 0) {
        return Ok(false);
    }
    if !(csum && head[0] == NEEDS_CSUM && rest_zero(1..6) && rest_zero(10..hdr_len)) {
        return Err(());
    }
    let start = usize::from(u16::from_le_bytes([head[6], head[7]]));
    let field = start + usize::from(u16::from_le_bytes([head[8], head[9]]));
    if field + 2 > frame.len() {
        return Err(());
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
    Ok(true)
}
