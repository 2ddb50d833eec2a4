//! Frames of every shape `zcnic pktgen` sends besides its fast IPv4/UDP one: TCP (with the
//! flags asked) or ICMP echo, over IPv4 or IPv6, with [`ranges`](crate::ranges) walking
//! addresses and ports. Each carries the same payload as the fast frames (sequence number,
//! timestamp, stream, then the filler; `frame.rs`), so a receiver counts them alike: UDP and
//! TCP to port [`PKTGEN_PORT`], ICMP echo requests with that identifier.
//!
//! Frames are built whole with etherparse, every checksum computed: slower per frame than
//! the fast generator's patched prefix, and exact for any shape.

use crate::frame::{Flow, MAX_FRAME, META, PKTGEN_PORT};
use crate::ranges::Walk;
use crate::{msg, ToolError};
use etherparse::PacketBuilder;

/// The transport of a templated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    /// TCP with these flags (SYN, ACK, FIN, RST, PSH, URG, ECE, CWR: bit 0 to 7).
    Tcp(u8),
    /// An echo request (ICMPv6's with `--ipv6`).
    Icmp,
}

/// TCP flag names in bit order.
const TCP_FLAGS: [&str; 8] = ["SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR"];

impl Proto {
    /// Parses `--proto` with `--tcp-flags` (a comma list, e.g. `SYN,ACK`; TCP only).
    pub fn parse(proto: &str, flags: Option<&str>) -> Result<Self, String> {
        let p = match proto.to_ascii_lowercase().as_str() {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp(0),
            "icmp" => Proto::Icmp,
            _ => return Err(format!("--proto {proto}: give udp, tcp or icmp")),
        };
        let Some(flags) = flags else {
            // A bare TCP segment: ACK, as most of a connection's are.
            return Ok(if p == Proto::Tcp(0) { Proto::Tcp(2) } else { p });
        };
        if p != Proto::Tcp(0) {
            return Err("--tcp-flags goes with --proto tcp".into());
        }
        let mut bits = 0u8;
        for name in flags.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let k = TCP_FLAGS
                .iter()
                .position(|f| f.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    format!(
                        "--tcp-flags: `{name}` is not one of {}",
                        TCP_FLAGS.join(",")
                    )
                })?;
            bits |= 1 << k;
        }
        Ok(Proto::Tcp(bits))
    }
}

/// Builds templated frames.
#[derive(Debug, Clone)]
pub struct Template {
    pub proto: Proto,
    pub ipv6: bool,
    /// Addresses and ports where no range varies them (IPv4 addresses from here).
    pub flow: Flow,
    /// IPv6 addresses where no range varies them.
    pub src_ip6: [u8; 16],
    pub dst_ip6: [u8; 16],
    pub walk: Walk,
    /// The payload of the largest frame: stamp room, then the filler.
    payload: Vec<u8>,
    frame: Vec<u8>,
}

impl Template {
    /// A template; `walk` gives the ranged fields.
    pub fn new(proto: Proto, ipv6: bool, flow: Flow, walk: Walk) -> Self {
        Self {
            proto,
            ipv6,
            flow,
            src_ip6: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst_ip6: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            walk,
            payload: (0..MAX_FRAME).map(|k| k as u8).collect(),
            frame: Vec::with_capacity(MAX_FRAME),
        }
    }

    /// Header bytes before the payload.
    pub fn headers(&self) -> usize {
        let ip = if self.ipv6 { 40 } else { 20 };
        let l4 = match self.proto {
            Proto::Tcp(_) => 20,
            Proto::Udp | Proto::Icmp => 8,
        };
        14 + ip + l4
    }

    /// The smallest frame: headers and the stamp.
    pub fn min_frame(&self) -> usize {
        (self.headers() + META).max(crate::frame::MIN_FRAME)
    }

    /// Where the transport checksum lies in a frame (for `--bad-csum`).
    pub fn l4_checksum_at(&self) -> usize {
        let l4 = 14 + if self.ipv6 { 40 } else { 20 };
        l4 + match self.proto {
            Proto::Udp => 6,
            Proto::Tcp(_) => 16,
            Proto::Icmp => 2,
        }
    }

    /// Frame `seq` of `size` bytes (at least [`min_frame`](Self::min_frame)), the next
    /// combination of the ranges, every checksum right.
    pub fn write(&mut self, size: usize, seq: u64, tx_ns: u64) -> Result<&[u8], ToolError> {
        let size = size.clamp(self.min_frame(), MAX_FRAME);
        let i = self.walk.next_index();
        let v = self.walk.values(i);
        let mac = |v: Option<u128>, d: [u8; 6]| {
            v.map_or(d, |v| {
                let b = v.to_be_bytes();
                std::array::from_fn(|k| b[10 + k])
            })
        };
        let port = |v: Option<u128>, d: u16| v.map_or(d, |v| v as u16);
        let (src_mac, dst_mac) = (mac(v[0], self.flow.src_mac), mac(v[1], self.flow.dst_mac));
        let (src_port, dst_port) = (port(v[4], self.flow.src_port), port(v[5], PKTGEN_PORT));
        let b = PacketBuilder::ethernet2(src_mac, dst_mac);
        let ip = if self.ipv6 {
            let a = |v: Option<u128>, d: [u8; 16]| v.map_or(d, u128::to_be_bytes);
            b.ipv6(a(v[2], self.src_ip6), a(v[3], self.dst_ip6), 64)
        } else {
            let a = |v: Option<u128>, d: [u8; 4]| v.map_or(d, |v| (v as u32).to_be_bytes());
            b.ipv4(a(v[2], self.flow.src_ip), a(v[3], self.flow.dst_ip), 64)
        };
        let headers = self.headers();
        let payload = &mut self.payload[..size - headers];
        payload[0..8].copy_from_slice(&seq.to_le_bytes());
        payload[8..16].copy_from_slice(&tx_ns.to_le_bytes());
        payload[16..18].copy_from_slice(&self.flow.stream.to_le_bytes());
        let out = &mut self.frame;
        out.clear();
        let written = match self.proto {
            Proto::Udp => ip.udp(src_port, dst_port).write(out, payload),
            Proto::Tcp(flags) => {
                let mut t = ip.tcp(src_port, dst_port, seq as u32, 65535);
                let set = |k: usize| flags & (1 << k) != 0;
                if set(0) {
                    t = t.syn();
                }
                if set(1) {
                    t = t.ack(0x5a43_0000);
                }
                if set(2) {
                    t = t.fin();
                }
                if set(3) {
                    t = t.rst();
                }
                if set(4) {
                    t = t.psh();
                }
                if set(5) {
                    t = t.urg(0);
                }
                if set(6) {
                    t = t.ece();
                }
                if set(7) {
                    t = t.cwr();
                }
                t.write(out, payload)
            }
            Proto::Icmp if self.ipv6 => ip
                .icmpv6_echo_request(PKTGEN_PORT, seq as u16)
                .write(out, payload),
            Proto::Icmp => ip
                .icmpv4_echo_request(PKTGEN_PORT, seq as u16)
                .write(out, payload),
        };
        written.map_err(|e| msg(format!("building a {size}-byte frame: {e}")))?;
        Ok(&self.frame)
    }
}

/// What pktgen's shape flags ask (`--proto`, `--ipv6`, the address and port ranges):
/// `None` when the fast IPv4/UDP frames do (one value per field, the default ports), with
/// `flow` set from the single values; otherwise a template.
pub fn from_cli(c: &crate::cli::PktgenCmd, flow: &mut Flow) -> Result<Option<Template>, ToolError> {
    use crate::ranges::{kind_of, parse, Kind, Order, FIELDS};
    let proto = Proto::parse(&c.proto, c.tcp_flags.as_deref()).map_err(msg)?;
    let given = [
        c.src_mac.as_deref(),
        Some(c.dst_mac.as_str()),
        c.src_ip.as_deref(),
        c.dst_ip.as_deref(),
        c.src_port.as_deref(),
        c.dst_port.as_deref(),
    ];
    let mut ranges = [None; 6];
    let mut ipv6 = c.ipv6;
    let mut ipv4_given = None;
    for (k, text) in given.iter().enumerate() {
        let Some(text) = text else { continue };
        let (r, v6) = parse(kind_of(k), text).map_err(|e| msg(format!("--{}: {e}", FIELDS[k])))?;
        if kind_of(k) == Kind::Ip {
            ipv6 |= v6;
            if !v6 {
                ipv4_given = Some(FIELDS[k]);
            }
        }
        ranges[k] = Some(r);
    }
    if let (true, Some(f)) = (ipv6, ipv4_given) {
        return Err(msg(format!(
            "--{f} is IPv4 but the frames are IPv6 (--ipv6 or an IPv6 range): give IPv6 addresses"
        )));
    }
    let single = |k: usize| ranges[k].is_none_or(|r: crate::ranges::Range| r.count == 1);
    let fast = proto == Proto::Udp
        && !ipv6
        && (0..6).all(single)
        && ranges[0].is_none()
        && ranges[4].is_none()
        && ranges[5].is_none();
    let value = |k: usize| ranges[k].map(|r: crate::ranges::Range| r.first);
    if let Some(v) = value(1) {
        let b = v.to_be_bytes();
        flow.dst_mac = std::array::from_fn(|k| b[10 + k]);
    }
    if !ipv6 {
        if let Some(v) = value(2) {
            flow.src_ip = (v as u32).to_be_bytes();
        }
        if let Some(v) = value(3) {
            flow.dst_ip = (v as u32).to_be_bytes();
        }
    }
    if fast {
        return Ok(None);
    }
    if c.flows > 1 {
        return Err(msg(
            "--flows goes with the default UDP frames; with --proto, --ipv6 or ranges give --src-ip/--src-port ranges",
        ));
    }
    let order = match c.order.as_str() {
        "seq" | "sequential" => Order::Sequential,
        "random" => Order::Random(c.seed),
        o => return Err(msg(format!("--order {o}: give seq or random"))),
    };
    let walk = Walk::new(ranges, order).map_err(msg)?;
    Ok(Some(Template::new(proto, ipv6, *flow, walk)))
}

impl Template {
    /// `req` (written for the fast IPv4/UDP frame) for this template's headers: the IPv4
    /// checksum only over IPv4, the transport checksum only for UDP and TCP.
    pub fn offload(&self, req: zcnic::TxOffload) -> zcnic::TxOffload {
        let l4 = match self.proto {
            Proto::Udp => Some(zcnic::L4Csum::Udp),
            Proto::Tcp(_) => Some(zcnic::L4Csum::Tcp),
            Proto::Icmp => None,
        };
        zcnic::TxOffload {
            l3_len: if self.ipv6 { 40 } else { 20 },
            ipv4: !self.ipv6,
            ip_csum: req.ip_csum && !self.ipv6,
            l4: req.l4.and(l4),
            ..req
        }
    }

    /// Whether a range gives the source MAC (else it is the port's).
    pub fn ranges_src_mac(&self) -> bool {
        self.walk.ranges[0].is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranges::{parse, Kind, Order};

    fn template(proto: Proto, ipv6: bool) -> Template {
        let mut ranges = [None; 6];
        let ips = if ipv6 {
            "fd00::10-fd00::12"
        } else {
            "10.0.1.1-10.0.1.3"
        };
        ranges[3] = Some(parse(Kind::Ip, ips).unwrap().0);
        ranges[4] = Some(parse(Kind::Port, "1000-1001").unwrap().0);
        Template::new(
            proto,
            ipv6,
            Flow::default(),
            Walk::new(ranges, Order::Sequential).unwrap(),
        )
    }

    #[test]
    fn every_shape_parses_back_with_its_stamp_and_filler() {
        for proto in [Proto::Udp, Proto::Tcp(0b1_0011), Proto::Icmp] {
            for ipv6 in [false, true] {
                let mut t = template(proto, ipv6);
                for (seq, size) in [(0u64, 60usize), (1, 1514), (2, 9014)] {
                    let f = t.write(size, seq, 77).unwrap().to_vec();
                    assert_eq!(f.len(), size.max(t.min_frame()), "{proto:?} v6 {ipv6}");
                    let m =
                        crate::frame::parse(&f).unwrap_or_else(|e| panic!("{proto:?} {ipv6}: {e}"));
                    assert_eq!((m.seq, m.tx_ns, m.stream), (seq, 77, 0));
                }
            }
        }
    }

    #[test]
    fn ranges_walk_and_tcp_flags_land() {
        let mut t = template(
            Proto::Tcp(
                Proto::parse("tcp", Some("syn,psh"))
                    .map(|p| match p {
                        Proto::Tcp(f) => f,
                        _ => 0,
                    })
                    .unwrap(),
            ),
            false,
        );
        let mut seen = Vec::new();
        for seq in 0..6 {
            let f = t.write(100, seq, 0).unwrap().to_vec();
            seen.push((f[33], u16::from_be_bytes([f[34], f[35]])));
            // SYN and PSH: 0x02 | 0x08.
            assert_eq!(f[47], 0x0a);
        }
        assert_eq!(
            seen,
            [
                (1, 1000),
                (1, 1001),
                (2, 1000),
                (2, 1001),
                (3, 1000),
                (3, 1001)
            ]
        );
        assert!(Proto::parse("udp", Some("SYN")).is_err());
        assert!(Proto::parse("tcp", Some("SYN,BOGUS")).is_err());
        assert!(Proto::parse("sctp", None).is_err());
        assert_eq!(Proto::parse("TCP", None), Ok(Proto::Tcp(2)));
    }
}
