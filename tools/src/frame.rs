//! The frames `zcnic pktgen` sends and the payload every zcnic tool can read back.
//!
//! Ethernet II / IPv4 / UDP, then a payload of
//! - bytes 0..8: sequence number (u64, little-endian), counting from 0 per stream;
//! - bytes 8..16: transmit timestamp in ns (u64 LE, the sender's clock);
//! - bytes 16..18: stream id (u16 LE);
//! - bytes 18..: filler, byte `k` of the payload = `k as u8`, so corruption is visible.
//!
//! The smallest frame (60 bytes, the Ethernet minimum without FCS) leaves exactly those 18
//! bytes of payload. The base frame is built and checked with etherparse; per frame only
//! lengths, the flow's address and port, and the stamp change, and both checksums are
//! computed in constant time: the IPv4 header is 20 bytes, and the UDP sum over the filler
//! comes from a prefix-sum table, so a 1514-byte frame costs what a 60-byte one does. The
//! filler beyond a buffer's worth (a jumbo frame's later buffers) is the same in every
//! frame: [`FrameGen::tail`] hands it out to copy.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

/// Ethernet + IPv4 + UDP header bytes.
pub const HEADERS: usize = 14 + 20 + 8;
/// Bytes of payload that carry sequence, timestamp and stream.
pub const META: usize = 18;
/// Smallest frame zcnic sends: the Ethernet minimum without FCS.
pub const MIN_FRAME: usize = 60;
/// Largest frame of the standard 1500-byte MTU: the MTU + the 14-byte header.
pub const STANDARD_FRAME: usize = 1514;
/// Largest frame zcnic generates: the e1000's largest MTU (16110) + the 14-byte header.
/// A port sends frames up to its own MTU + 14 (`--mtu`).
pub const MAX_FRAME: usize = 16124;
/// UDP destination port that marks pktgen frames ("ZC").
pub const PKTGEN_PORT: u16 = 0x5a43;

const IP: usize = 14;
const UDP: usize = 34;

/// Addresses and ports of generated frames.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Source MAC (the sending NIC's).
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source IPv4 address of flow 0; flow `i` adds `i` to it.
    pub src_ip: [u8; 4],
    /// Destination IPv4 address.
    pub dst_ip: [u8; 4],
    /// UDP source port of flow 0; flow `i` adds `i` to it.
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

/// Ones'-complement sum of big-endian 16-bit words (RFC 1071), not yet folded.
#[inline(always)]
fn sum_words(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(2);
    let mut sum: u64 = words
        .by_ref()
        .map(|c| u64::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    if let [odd] = words.remainder() {
        sum += u64::from(*odd) << 8;
    }
    sum
}

/// The stamp's share of the UDP checksum, unfolded, as little-endian words: the sequence
/// number, timestamp and stream are written little-endian at even offsets, and a
/// ones'-complement sum of byte-swapped words is the byte-swapped sum (RFC 1071 §2(B)),
/// so the values' 32-bit halves are added as they are; the header sum is kept swapped too.
#[inline(always)]
fn stamp_sum(seq: u64, tx_ns: u64, stream: u16) -> u64 {
    (seq & 0xffff_ffff) + (seq >> 32) + (tx_ns & 0xffff_ffff) + (tx_ns >> 32) + u64::from(stream)
}

/// Folds a ones'-complement sum to 16 bits, branch-free. Adding a value to itself rotated
/// by half its width puts the sum of its halves in the top half, with the carry out of the
/// bottom half added back in (the end-around carry): 64 bits to 32, then 32 to 16.
#[inline(always)]
fn fold(s: u64) -> u16 {
    let s = (s.wrapping_add(s.rotate_left(32)) >> 32) as u32;
    (s.wrapping_add(s.rotate_left(16)) >> 16) as u16
}

/// A UDP checksum field from the folded sum: its complement, except that a complement of
/// 0, which would mean "no checksum", is sent as all ones (RFC 768). Branch-free.
#[inline(always)]
fn udp_checksum(folded: u16) -> u16 {
    let c = !folded;
    c | (u32::from(c).wrapping_sub(1) >> 16) as u16
}

/// Re-stamps a burst of frames ([`FrameGen::restamp`]) with consecutive sequence numbers.
/// Each frame's checksum follows from the one before: adding 1 to the sequence number adds
/// exactly 1 to the ones'-complement sum (a carry out of its low 32 bits loses 2^32 - 1,
/// which is 0 modulo 0xffff; only the wrap of all 64 bits adds nothing), so no frame needs
/// the full sum and fold.
#[derive(Debug)]
pub struct Restamp<'a> {
    gen: &'a FrameGen,
    seq: u64,
    tx_ns: u64,
    /// The folded sum (1..=0xffff) for `seq`.
    sum: u16,
}

impl Restamp<'_> {
    /// Stamps `frame` with the next sequence number; false, writing nothing, when it is
    /// not of the size the generator last wrote.
    #[inline(always)]
    pub fn next(&mut self, frame: &mut [u8]) -> bool {
        let last = &self.gen.last;
        if last.size == 0 || frame.len() != last.size {
            return false;
        }
        // The flow cannot be told from the length: the caller's contract, checked in debug
        // builds on everything up to the UDP checksum, and on the stream, which was written
        // with the frame and is not written again.
        debug_assert_eq!(&frame[..UDP + 6], &last.bytes[..UDP + 6], "another flow");
        debug_assert_eq!(
            frame[HEADERS + 16..HEADERS + 18],
            self.gen.flow.stream.to_le_bytes(),
            "another stream"
        );
        let meta = &mut frame[HEADERS..HEADERS + 16];
        meta[0..8].copy_from_slice(&self.seq.to_le_bytes());
        meta[8..16].copy_from_slice(&self.tx_ns.to_le_bytes());
        frame[UDP + 6..UDP + 8].copy_from_slice(&udp_checksum(self.sum).to_le_bytes());
        if self.seq == u64::MAX {
            // Wrapping to 0 drops 2^64, which is 1 modulo 0xffff: the sum starts afresh.
            *self = self.gen.restamper(0, self.tx_ns);
            return true;
        }
        self.seq += 1;
        let s = u32::from(self.sum) + 1;
        self.sum = (s + (s >> 16)) as u16;
        true
    }
}

/// Builds pktgen frames of any size and flow.
#[derive(Debug, Clone)]
pub struct FrameGen {
    flow: Flow,
    /// A complete `largest`-byte frame for flow 0 with a zero stamp: every frame is a
    /// prefix of it, patched.
    base: Vec<u8>,
    /// `filler_sum[k]`: sum of the payload's 16-bit words from META up to byte `k`.
    filler_sum: Vec<u64>,
    /// The headers last built (size 0: none yet).
    last: Head,
}

impl FrameGen {
    /// A generator for `flow`, of frames up to [`MAX_FRAME`] bytes.
    pub fn new(flow: Flow) -> Self {
        Self::sized(flow, MAX_FRAME)
    }

    /// A generator for `flow` of frames up to `largest` bytes (clamped to
    /// MIN_FRAME..=MAX_FRAME): its tables are only as long as they need to be.
    pub fn sized(flow: Flow, largest: usize) -> Self {
        let largest = largest.clamp(MIN_FRAME, MAX_FRAME);
        let payload: Vec<u8> = (0..largest - HEADERS).map(|k| k as u8).collect();
        let builder = PacketBuilder::ethernet2(flow.src_mac, flow.dst_mac)
            .ipv4(flow.src_ip, flow.dst_ip, 64)
            .udp(flow.src_port, PKTGEN_PORT);
        let mut base = Vec::with_capacity(largest);
        // Writing into a Vec cannot fail, and the size is far below the IPv4 limit.
        let _ = builder.write(&mut base, &payload);
        let mut filler_sum = vec![0u64; payload.len() + 1];
        for k in META..payload.len() {
            // Word-aligned: META and the payload start (offset 42) are even.
            let word = if (k - META).is_multiple_of(2) {
                u64::from(payload[k]) << 8
            } else {
                u64::from(payload[k])
            };
            filler_sum[k + 1] = filler_sum[k] + word;
        }
        Self {
            flow,
            base,
            filler_sum,
            last: Head {
                size: 0,
                flow: 0,
                bytes: [0; HEADERS],
                sum: 0,
            },
        }
    }

    /// Writes frame `seq` of `size` bytes (clamped to MIN_FRAME..=the generator's largest)
    /// for flow `flow` into `out[..size]`; returns the size. `out` must hold that many.
    #[inline]
    pub fn write(&mut self, out: &mut [u8], size: usize, flow: u16, seq: u64, tx_ns: u64) -> usize {
        self.write_first(out, size, size, flow, seq, tx_ns)
    }

    /// Writes only the first [`MIN_FRAME`] bytes (headers and stamp) of frame `seq` of
    /// `size` bytes, lengths and checksums included: the rest is the filler, which a
    /// zero-copy sender attaches from [`filler`] instead of writing it. Returns MIN_FRAME.
    #[inline]
    pub fn write_head(
        &mut self,
        out: &mut [u8],
        size: usize,
        flow: u16,
        seq: u64,
        tx_ns: u64,
    ) -> usize {
        self.write_first(out, MIN_FRAME, size, flow, seq, tx_ns)
    }

    /// Writes the first `prefix` bytes of frame `seq` of `size` bytes (at most `size`),
    /// lengths and checksums for the whole frame included: the first buffer of a jumbo
    /// frame, whose later buffers get [`tail`](Self::tail). Returns the bytes written.
    #[inline]
    pub fn write_first(
        &mut self,
        out: &mut [u8],
        prefix: usize,
        size: usize,
        flow: u16,
        seq: u64,
        tx_ns: u64,
    ) -> usize {
        let size = size.clamp(MIN_FRAME, self.base.len());
        self.write_prefix(out, prefix.clamp(MIN_FRAME, size), size, flow, seq, tx_ns)
    }

    /// Bytes `from..to` of every frame past its head ([`HEADERS`] + [`META`] bytes): the
    /// filler, the same whatever the size, flow and stamp, for the later buffers of a
    /// jumbo frame. Empty beyond [`MAX_FRAME`].
    pub fn tail(&self, from: usize, to: usize) -> &[u8] {
        let to = to.min(self.base.len());
        self.base
            .get(from.max(HEADERS + META)..to)
            .unwrap_or_default()
    }

    #[inline(always)]
    fn write_prefix(
        &mut self,
        out: &mut [u8],
        prefix: usize,
        size: usize,
        flow: u16,
        seq: u64,
        tx_ns: u64,
    ) -> usize {
        let Some(out) = out.get_mut(..prefix) else {
            return 0;
        };
        self.refresh(size, flow);
        out[..HEADERS].copy_from_slice(&self.last.bytes);
        if prefix > HEADERS + META {
            out[HEADERS + META..].copy_from_slice(&self.base[HEADERS + META..prefix]);
        }
        self.stamp(out, seq, tx_ns);
        prefix
    }

    /// Re-stamps a frame this generator wrote last with the same size and flow (its
    /// headers, stream and filler are still right): writes sequence number and timestamp,
    /// and the UDP checksum. For senders that get their frames back after sending
    /// (`Nic::tx_batch_recycle`). Returns false, writing nothing, when `frame` is not of the
    /// size last written.
    #[inline]
    pub fn restamp(&self, frame: &mut [u8], seq: u64, tx_ns: u64) -> bool {
        self.restamper(seq, tx_ns).next(frame)
    }

    /// A [`Restamp`] for a burst: frames of consecutive sequence numbers from `seq`, all
    /// with timestamp `tx_ns`.
    #[inline]
    pub fn restamper(&self, seq: u64, tx_ns: u64) -> Restamp<'_> {
        Restamp {
            sum: fold(self.last.sum + stamp_sum(seq, tx_ns, self.flow.stream)),
            gen: self,
            seq,
            tx_ns,
        }
    }

    #[inline(always)]
    fn stamp(&self, out: &mut [u8], seq: u64, tx_ns: u64) {
        let meta = &mut out[HEADERS..HEADERS + META];
        meta[0..8].copy_from_slice(&seq.to_le_bytes());
        meta[8..16].copy_from_slice(&tx_ns.to_le_bytes());
        meta[16..18].copy_from_slice(&self.flow.stream.to_le_bytes());
        // Everything as little-endian words: the folded sum, stored little-endian,
        // is the big-endian checksum.
        let udp_sum = udp_checksum(fold(
            self.last.sum + stamp_sum(seq, tx_ns, self.flow.stream),
        ));
        out[UDP + 6..UDP + 8].copy_from_slice(&udp_sum.to_le_bytes());
    }

    /// Makes `last` the headers of a `size`-byte frame of `flow`, with the UDP checksum's
    /// sum over all but the stamp; kept, since consecutive frames usually share both.
    #[inline(always)]
    fn refresh(&mut self, size: usize, flow: u16) {
        if self.last.size == size && self.last.flow == flow {
            return;
        }
        let mut bytes = [0u8; HEADERS];
        bytes.copy_from_slice(&self.base[..HEADERS]);
        let f = &self.flow;
        let src_ip = u32::from_be_bytes(f.src_ip)
            .wrapping_add(u32::from(flow))
            .to_be_bytes();
        let ip_len = (size - IP) as u16;
        let udp_len = (size - UDP) as u16;
        bytes[IP + 2..IP + 4].copy_from_slice(&ip_len.to_be_bytes());
        bytes[IP + 12..IP + 16].copy_from_slice(&src_ip);
        bytes[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
        let ip_sum = !fold(sum_words(&bytes[IP..UDP]));
        bytes[IP + 10..IP + 12].copy_from_slice(&ip_sum.to_be_bytes());
        bytes[UDP..UDP + 2].copy_from_slice(&f.src_port.wrapping_add(flow).to_be_bytes());
        bytes[UDP + 4..UDP + 6].copy_from_slice(&udp_len.to_be_bytes());
        bytes[UDP + 6..UDP + 8].copy_from_slice(&[0, 0]);
        // RFC 768: pseudo-header (addresses, protocol, length), UDP header with a zero
        // checksum, payload. The filler's share comes from the prefix table; the stamp's
        // is added per frame.
        let sum = sum_words(&bytes[IP + 12..IP + 20])
            + 17
            + u64::from(udp_len)
            + sum_words(&bytes[UDP..UDP + 6])
            + self.filler_sum[size - HEADERS];
        // Byte-swapped once here, so the per-frame stamp adds as little-endian words.
        let sum = u64::from(fold(sum).swap_bytes());
        self.last = Head {
            size,
            flow,
            bytes,
            sum,
        };
    }
}

/// A frame's headers for one size and flow, with the UDP checksum's sum over everything
/// but the stamp, folded and byte-swapped (a sum of little-endian words).
#[derive(Debug, Clone, Copy)]
struct Head {
    size: usize,
    flow: u16,
    bytes: [u8; HEADERS],
    sum: u64,
}

/// The filler that follows the stamp in every frame: byte `i` is `(META + i) as u8`.
/// A frame of `size` bytes carries its first `size - MIN_FRAME` bytes.
pub fn filler() -> Vec<u8> {
    (0..MAX_FRAME - MIN_FRAME)
        .map(|i| (META + i) as u8)
        .collect()
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
    /// Not a UDP, TCP or ICMP echo frame of pktgen's.
    #[error("not a pktgen frame: {0}")]
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
    let payload = payload(frame)?;
    if let Some(k) = (META..payload.len()).find(|&k| payload[k] != k as u8) {
        return Err(ParseError::Corrupt(k));
    }
    Ok(meta_of(payload))
}

/// Parses a pktgen frame's metadata without checking the filler (the receive hot path).
pub fn parse_meta(frame: &[u8]) -> Result<Meta, ParseError> {
    payload(frame).map(meta_of)
}

fn meta_of(payload: &[u8]) -> Meta {
    let u64_at = |o: usize| u64::from_le_bytes(payload[o..o + 8].try_into().unwrap_or([0; 8]));
    Meta {
        seq: u64_at(0),
        tx_ns: u64_at(8),
        stream: u16::from_le_bytes([payload[16], payload[17]]),
    }
}

/// The payload of a pktgen frame of any shape (`template.rs`): UDP or TCP to
/// [`PKTGEN_PORT`], or an ICMP echo request with that identifier, over IPv4 or IPv6,
/// tagged or not; at least [`META`] bytes.
fn payload(frame: &[u8]) -> Result<&[u8], ParseError> {
    use etherparse::{Icmpv4Type, Icmpv6Type};
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| ParseError::NotUdp(e.to_string()))?;
    let payload = match p.transport {
        Some(TransportSlice::Udp(udp)) if udp.destination_port() == PKTGEN_PORT => udp.payload(),
        Some(TransportSlice::Tcp(tcp)) if tcp.destination_port() == PKTGEN_PORT => tcp.payload(),
        Some(TransportSlice::Udp(udp)) => {
            return Err(ParseError::OtherPort(udp.destination_port()))
        }
        Some(TransportSlice::Tcp(tcp)) => {
            return Err(ParseError::OtherPort(tcp.destination_port()))
        }
        Some(TransportSlice::Icmpv4(icmp)) => match icmp.icmp_type() {
            Icmpv4Type::EchoRequest(e) if e.id == PKTGEN_PORT => icmp.payload(),
            _ => return Err(ParseError::NotUdp("an ICMP message not pktgen's".into())),
        },
        Some(TransportSlice::Icmpv6(icmp)) => match icmp.icmp_type() {
            Icmpv6Type::EchoRequest(e) if e.id == PKTGEN_PORT => icmp.payload(),
            _ => return Err(ParseError::NotUdp("an ICMPv6 message not pktgen's".into())),
        },
        _ => return Err(ParseError::NotUdp("no UDP, TCP or ICMP header".into())),
    };
    if payload.len() < META {
        return Err(ParseError::Short(payload.len()));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket};
    use proptest::prelude::*;

    fn frame(g: &mut FrameGen, size: usize, flow: u16, seq: u64, ts: u64) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_FRAME];
        let n = g.write(&mut buf, size, flow, seq, ts);
        buf.truncate(n);
        buf
    }

    #[test]
    fn smallest_frame_is_60_bytes() {
        let mut g = FrameGen::new(Flow::default());
        let f = frame(&mut g, 60, 0, 0, 0);
        assert_eq!(f.len(), 60);
        assert_eq!(f.len() - HEADERS, META);
        assert_eq!(frame(&mut g, 10, 0, 0, 0).len(), 60, "clamped");
    }

    proptest! {
        #[test]
        fn stamp_sum_is_the_word_sum(seq in any::<u64>(), ts in any::<u64>(), stream in any::<u16>()) {
            let mut bytes = seq.to_le_bytes().to_vec();
            bytes.extend(ts.to_le_bytes());
            bytes.extend(stream.to_le_bytes());
            // Equal as ones'-complement numbers: the same value modulo 0xffff, and zero
            // only for a zero stamp.
            let ours = u64::from(fold(stamp_sum(seq, ts, stream)).swap_bytes());
            let words = sum_words(&bytes);
            prop_assert_eq!(ours % 0xffff, words % 0xffff);
            prop_assert_eq!(ours == 0, words == 0);
        }

        #[test]
        fn a_restamped_frame_is_the_frame_written_fresh(size in MIN_FRAME..=MAX_FRAME, flow in any::<u16>(), seq in any::<u64>(), ts in any::<u64>(), seq2 in any::<u64>(), ts2 in any::<u64>()) {
            let mut g = FrameGen::new(Flow::default());
            let mut f = frame(&mut g, size, flow, seq, ts);
            prop_assert!(g.restamp(&mut f, seq2, ts2));
            prop_assert_eq!(&f, &frame(&mut g, size, flow, seq2, ts2));
            // Not a frame of the size last written: left alone.
            let mut short = f[..size - 1].to_vec();
            let before = short.clone();
            prop_assert!(!g.restamp(&mut short, 1, 1));
            prop_assert_eq!(short, before);
        }

        /// A burst re-stamped frame by frame equals each frame written fresh, across the
        /// 32-bit and 64-bit wraps of the sequence number too.
        #[test]
        fn a_restamped_burst_is_each_frame_written_fresh(size in MIN_FRAME..=MAX_FRAME, near in prop_oneof![Just(0u64), Just(u64::from(u32::MAX) - 3), Just(u64::MAX - 3), any::<u64>()], ts in any::<u64>()) {
            let mut g = FrameGen::new(Flow { stream: 0x1234, ..Flow::default() });
            let mut f = frame(&mut g, size, 0, 1, 1);
            let mut fresh = g.clone();
            let mut burst = g.restamper(near, ts);
            for k in 0..8 {
                prop_assert!(burst.next(&mut f));
                prop_assert_eq!(&f, &frame(&mut fresh, size, 0, near.wrapping_add(k), ts));
            }
        }

        #[test]
        fn udp_checksum_is_the_complement_but_never_zero(folded in any::<u16>()) {
            let want = if folded == 0xffff { 0xffff } else { !folded };
            prop_assert_eq!(udp_checksum(folded), want);
        }

        #[test]
        fn fold_matches_the_carry_loop(s in any::<u64>()) {
            let mut r = s;
            while r > 0xffff {
                r = (r & 0xffff) + (r >> 16);
            }
            prop_assert_eq!(u64::from(fold(s)), r);
        }

        /// Every frame parses back, and etherparse agrees with both checksums.
        #[test]
        fn frames_are_valid(size in MIN_FRAME..=MAX_FRAME, flow in any::<u16>(), seq in any::<u64>(), ts in any::<u64>(), stream in any::<u16>()) {
            let mut g = FrameGen::new(Flow { stream, ..Flow::default() });
            let f = frame(&mut g, size, flow, seq, ts);
            prop_assert_eq!(f.len(), size);
            prop_assert_eq!(parse(&f), Ok(Meta { seq, tx_ns: ts, stream }));
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("no IPv4") };
            let h = ip.header().to_header();
            prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
            prop_assert_eq!(u32::from_be_bytes(h.source), u32::from_be_bytes([10, 0, 0, 1]).wrapping_add(flow.into()));
            let Some(TransportSlice::Udp(udp)) = &p.transport else { panic!("no UDP") };
            let uh = udp.to_header();
            prop_assert_eq!(uh.source_port, 9000u16.wrapping_add(flow));
            let want = uh.calc_checksum_ipv4(&h, udp.payload()).unwrap();
            prop_assert_eq!(uh.checksum, want);
        }

        /// The head plus the filler is the whole frame, byte for byte.
        #[test]
        fn a_first_buffer_and_the_tail_make_the_frame(size in MIN_FRAME..=MAX_FRAME, prefix in MIN_FRAME..4000usize, seq in any::<u64>()) {
            let mut gen = FrameGen::new(Flow::default());
            let mut whole = vec![0u8; MAX_FRAME];
            let n = gen.write(&mut whole, size, 3, seq, 7);
            let mut first = vec![0u8; 4000];
            let k = gen.write_first(&mut first, prefix, size, 3, seq, 7);
            prop_assert_eq!(k, prefix.min(size));
            let mut built = first[..k].to_vec();
            built.extend_from_slice(gen.tail(k, size));
            prop_assert_eq!(&built[..], &whole[..n]);
        }

        #[test]
        fn head_and_filler_make_the_frame(size in MIN_FRAME..=MAX_FRAME, seq in any::<u64>()) {
            let mut g = FrameGen::new(Flow::default());
            let whole = frame(&mut g, size, 3, seq, 9);
            let mut head = vec![0u8; MAX_FRAME];
            let n = g.write_head(&mut head, size, 3, seq, 9);
            head.truncate(n);
            head.extend_from_slice(&filler()[..size - MIN_FRAME]);
            prop_assert_eq!(head, whole);
        }

        #[test]
        fn corruption_is_caught(size in 61usize..=MAX_FRAME, at in 0usize..2000) {
            let mut g = FrameGen::new(Flow::default());
            let mut f = frame(&mut g, size, 0, 1, 2);
            let at = HEADERS + META + at % (size - HEADERS - META);
            f[at] ^= 0x5a;
            prop_assert!(matches!(parse(&f), Err(ParseError::Corrupt(_))));
        }
    }
}
