//! The frames `zcnic pktgen` sends and the payload every zcnic tool can read back.
//!
//! Ethernet II / IPv4 / UDP built through etherparse, then a payload of
//! - bytes 0..8: sequence number (u64, little-endian), counting from 0 per stream;
//! - bytes 8..16: transmit timestamp in ns (u64 LE, from the sender's monotonic clock);
//! - bytes 16..18: stream id (u16 LE);
//! - bytes 18..: filler, byte `k` of the payload = `k as u8`, so corruption is visible.
//!
//! The smallest frame (60 bytes, the Ethernet minimum without FCS) leaves exactly those 18
//! bytes for the payload. The UDP checksum is 0 ("none", valid for IPv4 per RFC 768) because
//! the sequence number changes in every frame; the IPv4 header checksum is real.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

/// Ethernet + IPv4 + UDP header bytes.
pub const HEADERS: usize = 14 + 20 + 8;
/// Bytes of payload that carry sequence, timestamp and stream.
pub const META: usize = 18;
/// Smallest frame zcnic sends: the Ethernet minimum without FCS.
pub const MIN_FRAME: usize = 60;
/// Largest frame zcnic sends without jumbo support: 1500-byte MTU + 14-byte header.
pub const MAX_FRAME: usize = 1514;
/// UDP destination port that marks pktgen frames ("ZC").
pub const PKTGEN_PORT: u16 = 0x5a43;

/// Addresses and ports of generated frames.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Source MAC (the sending NIC's).
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source IPv4 address.
    pub src_ip: [u8; 4],
    /// Destination IPv4 address.
    pub dst_ip: [u8; 4],
    /// UDP source port.
    pub src_port: u16,
    /// Stream id written into each payload.
    pub stream: u16,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0xff; 6],
            src_ip: [10, 0, 0, 1],
            dst_ip: [10, 0, 0, 2],
            src_port: 9000,
            stream: 0,
        }
    }
}

/// A complete frame of `size` bytes with sequence number 0, to copy and stamp per frame.
pub fn template(flow: &Flow, size: usize) -> Vec<u8> {
    let size = size.clamp(MIN_FRAME, MAX_FRAME);
    let payload: Vec<u8> = (0..size - HEADERS).map(|k| k as u8).collect();
    let builder = PacketBuilder::ethernet2(flow.src_mac, flow.dst_mac)
        .ipv4(flow.src_ip, flow.dst_ip, 64)
        .udp(flow.src_port, PKTGEN_PORT);
    let mut out = Vec::with_capacity(size);
    // Writing into a Vec cannot fail, and the sizes are far below the IPv4 limit.
    let _ = builder.write(&mut out, &payload);
    out[HEADERS - 2..HEADERS].copy_from_slice(&[0, 0]); // UDP checksum: none
    stamp(&mut out, 0, 0, flow.stream);
    out
}

/// Writes sequence number, timestamp and stream into a frame built by [`template`].
#[inline(always)]
pub fn stamp(frame: &mut [u8], seq: u64, tx_ns: u64, stream: u16) {
    if let Some(meta) = frame.get_mut(HEADERS..HEADERS + META) {
        meta[0..8].copy_from_slice(&seq.to_le_bytes());
        meta[8..16].copy_from_slice(&tx_ns.to_le_bytes());
        meta[16..18].copy_from_slice(&stream.to_le_bytes());
    }
}

/// What a received pktgen frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Sequence number.
    pub seq: u64,
    /// Sender's timestamp, ns.
    pub tx_ns: u64,
    /// Stream id.
    pub stream: u16,
}

/// Why a frame is not an intact pktgen frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not Ethernet/IPv4/UDP.
    #[error("not an Ethernet/IPv4/UDP frame: {0}")]
    NotUdp(String),
    /// UDP, but not to the pktgen port.
    #[error("UDP to port {0}, not pktgen's {PKTGEN_PORT}")]
    OtherPort(u16),
    /// Payload shorter than the metadata.
    #[error("payload of {0} bytes is too short")]
    Short(usize),
    /// A filler byte is wrong.
    #[error("payload byte {0} is corrupt")]
    Corrupt(usize),
}

/// Parses and checks a pktgen frame: headers, port, and every filler byte.
pub fn parse(frame: &[u8]) -> Result<Meta, ParseError> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| ParseError::NotUdp(e.to_string()))?;
    let Some(TransportSlice::Udp(udp)) = p.transport else {
        return Err(ParseError::NotUdp("no UDP header".into()));
    };
    if udp.destination_port() != PKTGEN_PORT {
        return Err(ParseError::OtherPort(udp.destination_port()));
    }
    let payload = udp.payload();
    if payload.len() < META {
        return Err(ParseError::Short(payload.len()));
    }
    if let Some(k) = (META..payload.len()).find(|&k| payload[k] != k as u8) {
        return Err(ParseError::Corrupt(k));
    }
    let u64_at = |o: usize| u64::from_le_bytes(payload[o..o + 8].try_into().unwrap_or([0; 8]));
    Ok(Meta {
        seq: u64_at(0),
        tx_ns: u64_at(8),
        stream: u16::from_le_bytes([payload[16], payload[17]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket};
    use proptest::prelude::*;

    #[test]
    fn smallest_frame_is_60_bytes() {
        let t = template(&Flow::default(), 60);
        assert_eq!(t.len(), 60);
        assert_eq!(t.len() - HEADERS, META);
    }

    proptest! {
        #[test]
        fn frames_parse_back(size in MIN_FRAME..=MAX_FRAME, seq in any::<u64>(), ts in any::<u64>(), stream in any::<u16>()) {
            let flow = Flow { stream, ..Flow::default() };
            let mut f = template(&flow, size);
            stamp(&mut f, seq, ts, stream);
            prop_assert_eq!(f.len(), size);
            prop_assert_eq!(parse(&f), Ok(Meta { seq, tx_ns: ts, stream }));
            // The IPv4 header checksum is valid.
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("no IPv4") };
            let h = ip.header().to_header();
            prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
        }

        #[test]
        fn corruption_is_caught(size in 61usize..=MAX_FRAME, at in 0usize..2000) {
            let mut f = template(&Flow::default(), size);
            let at = HEADERS + META + at % (size - HEADERS - META);
            f[at] ^= 0x5a;
            prop_assert!(matches!(parse(&f), Err(ParseError::Corrupt(_))));
        }
    }
}
