//! Frames for the offload tests of every fake device: IPv4 and IPv6 frames with right
//! checksums built by `etherparse` (a third implementation, neither the driver's software
//! fallback nor a fake's engine), the same frames with their checksums blanked as an
//! application hands them to a NIC, tagged copies, and requests that ask for all of it.

use zcnic::{L4Csum, TxOffload};

/// An Ethernet/IPv4 frame with right checksums: UDP or TCP, `payload` bytes.
pub fn frame(l4: L4Csum, payload: usize, seq: u8) -> Vec<u8> {
    let b =
        etherparse::PacketBuilder::ethernet2([0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64);
    let mut out = Vec::new();
    match l4 {
        L4Csum::Udp => b
            .udp(4000 + u16::from(seq), 9)
            .write(&mut out, &data(payload, seq)),
        L4Csum::Tcp => b
            .tcp(4000 + u16::from(seq), 80, 1000, 64)
            .write(&mut out, &data(payload, seq)),
    }
    .unwrap();
    out
}

/// An Ethernet/IPv6 frame with a right checksum: UDP or TCP, `payload` bytes.
pub fn frame_v6(l4: L4Csum, payload: usize, seq: u8) -> Vec<u8> {
    let (src, dst) = ([0xfd; 16], [0xfe; 16]);
    let b =
        etherparse::PacketBuilder::ethernet2([0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2])
            .ipv6(src, dst, 64);
    let mut out = Vec::new();
    match l4 {
        L4Csum::Udp => b
            .udp(5000 + u16::from(seq), 9)
            .write(&mut out, &data(payload, seq)),
        L4Csum::Tcp => b
            .tcp(5000 + u16::from(seq), 80, 7, 64)
            .write(&mut out, &data(payload, seq)),
    }
    .unwrap();
    out
}

fn data(payload: usize, seq: u8) -> Vec<u8> {
    (0..payload)
        .map(|i| (i as u8).wrapping_mul(7) ^ seq)
        .collect()
}

/// Where the transport checksum lies in [`frame`]'s output (IPv4 without options).
pub fn l4_field(l4: L4Csum) -> usize {
    14 + 20 + l4.field_offset()
}

/// [`frame`]'s output with both checksums zeroed: what an application hands a NIC to
/// fill in.
pub fn blank(f: &[u8], l4: L4Csum) -> Vec<u8> {
    let mut f = f.to_vec();
    f[24..26].fill(0);
    f[l4_field(l4)..l4_field(l4) + 2].fill(0);
    f
}

/// [`frame_v6`]'s output with the transport checksum zeroed.
pub fn blank_v6(f: &[u8], l4: L4Csum) -> Vec<u8> {
    let mut f = f.to_vec();
    let at = 14 + 40 + l4.field_offset();
    f[at..at + 2].fill(0);
    f
}

/// `f` with an 802.1Q tag of `tci` after the MAC addresses.
pub fn tagged(f: &[u8], tci: u16) -> Vec<u8> {
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00]);
    t.extend_from_slice(&tci.to_be_bytes());
    t.extend_from_slice(&f[12..]);
    t
}

/// Both checksums of an IPv4 frame, and the tag `vlan` when given.
pub fn request(l4: L4Csum, vlan: Option<u16>) -> TxOffload {
    TxOffload {
        ip_csum: true,
        l4: Some(l4),
        vlan,
        ..TxOffload::ipv4(14, 20)
    }
}

/// The transport checksum of an IPv6 frame.
pub fn request_v6(l4: L4Csum) -> TxOffload {
    TxOffload {
        l2_len: 14,
        l3_len: 40,
        ipv4: false,
        l4: Some(l4),
        ..TxOffload::default()
    }
}
