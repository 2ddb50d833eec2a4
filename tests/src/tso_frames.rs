//! Frames for the TCP segmentation tests of every fake device: a TCP/IPv4 super-frame
//! and the segments it must become, both built by `etherparse` (a third implementation,
//! neither the driver's software segmentation nor a fake device's), with the IPv4 ID of
//! each segment one more than the one before, as NICs and Linux number them.

use std::num::NonZeroU16;
use zcnic::TxOffload;

/// TCP flags the tests vary (ACK is always set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// PSH: the last segment only keeps it.
    pub psh: bool,
    /// FIN: the last segment only keeps it.
    pub fin: bool,
    /// CWR: the first segment only keeps it.
    pub cwr: bool,
}

/// Where the TCP sequence numbers of [`super_frame`] start.
pub const SEQ: u32 = 0x7fff_fff0;
/// The IPv4 ID of [`super_frame`]: segments count up from it (and wrap).
pub const ID: u16 = 0xfffe;

fn payload_byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(13) ^ (i >> 8) as u8
}

fn build(payload: &[u8], seq: u32, f: Flags, id: u16) -> Vec<u8> {
    let mut b =
        etherparse::PacketBuilder::ethernet2([0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(4000, 80, seq, 502)
            .ack(77);
    if f.psh {
        b = b.psh();
    }
    if f.fin {
        b = b.fin();
    }
    if f.cwr {
        b = b.cwr();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out[18..20].copy_from_slice(&id.to_be_bytes());
    out[24..26].fill(0);
    let c = !crate::fake_csum(&out[14..34]);
    out[24..26].copy_from_slice(&c.to_be_bytes());
    out
}

/// An Ethernet/IPv4/TCP frame of `payload` bytes, every checksum right.
pub fn super_frame(payload: usize, f: Flags) -> Vec<u8> {
    let data: Vec<u8> = (0..payload).map(payload_byte).collect();
    build(&data, SEQ, f, ID)
}

/// The segments of [`super_frame`]`(payload, f)` at `mss`, as Linux cuts them.
pub fn segments(payload: usize, mss: usize, f: Flags) -> Vec<Vec<u8>> {
    let data: Vec<u8> = (0..payload).map(payload_byte).collect();
    if data.is_empty() {
        return vec![build(&[], SEQ, f, ID)];
    }
    let n = payload.div_ceil(mss);
    data.chunks(mss)
        .enumerate()
        .map(|(i, chunk)| {
            let last = i + 1 == n;
            let g = Flags {
                psh: f.psh && last,
                fin: f.fin && last,
                cwr: f.cwr && i == 0,
            };
            build(
                chunk,
                SEQ.wrapping_add((i * mss) as u32),
                g,
                ID.wrapping_add(i as u16),
            )
        })
        .collect()
}

/// The segmentation request for [`super_frame`]'s output at `mss`.
pub fn tso(mss: u16) -> TxOffload {
    TxOffload::tcp_segments(14, 20, NonZeroU16::new(mss).expect("an MSS above 0"))
}
