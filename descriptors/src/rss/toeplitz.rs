//! The Toeplitz hash of receive-side scaling, in software.
//!
//! A NIC with RSS hashes each received frame's addresses (and ports) with a 40-byte secret
//! key and places the frame on the queue its redirection table ([`Reta`](super::Reta))
//! names for that hash. Computing the same hash here lets a port predict where a flow lands
//! (a sender that spreads flows over queues, a test that checks the device's placement) and
//! hash frames for a NIC that reports none.
//!
//! The input is the fields in network byte order, source before destination: source
//! address, destination address, then for TCP/UDP source port and destination port (the
//! Microsoft RSS specification, "RSS Hashing Functions"; virtio 1.2 §5.1.6.4.3.1; the
//! 8254x/82576 datasheets' "RSS Hash Function"). For each set bit of the input, from the
//! most significant bit of its first byte, the 32 key bits starting at that bit position
//! are XORed into the result.
//!
//! ```
//! use zcnic_descriptors::rss::Toeplitz;
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! // The first row of Microsoft's "Verifying the RSS Hash Calculation" table.
//! let src = SocketAddrV4::new(Ipv4Addr::new(66, 9, 149, 187), 2794);
//! let dst = SocketAddrV4::new(Ipv4Addr::new(161, 142, 100, 80), 1766);
//! let rss = Toeplitz::default();
//! assert_eq!(rss.ipv4(*src.ip(), *dst.ip()), 0x323e_8fc2);
//! assert_eq!(rss.ipv4_l4(src, dst), 0x51cc_c178);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// Bytes in an RSS key (Microsoft RSS, DPDK's `rss_key_len` for most NICs, virtio-net's
/// `rss_max_key_size` in QEMU).
pub const KEY_LEN: usize = 40;

/// Longest input the key covers: each input bit uses the 32 key bits from its position on,
/// so 40 key bytes cover 36 input bytes (an IPv6 4-tuple, exactly).
pub const MAX_INPUT: usize = KEY_LEN - 4;

/// Microsoft's verification key, which many NICs and DPDK's drivers use by default: what
/// the published test vectors are computed with.
pub const DEFAULT_KEY: [u8; KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

bitflags::bitflags! {
    /// Which fields a port hashes, per protocol (DPDK's `rss_hf`). The bits are virtio's
    /// `VIRTIO_NET_RSS_HASH_TYPE_*` (virtio 1.2 §5.1.6.4.3.1), so a virtio-net port hands
    /// them to the device as they are.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct HashTypes: u32 {
        /// IPv4 source and destination address.
        const IPV4 = 1 << 0;
        /// IPv4 addresses and TCP ports.
        const TCP_V4 = 1 << 1;
        /// IPv4 addresses and UDP ports.
        const UDP_V4 = 1 << 2;
        /// IPv6 source and destination address.
        const IPV6 = 1 << 3;
        /// IPv6 addresses and TCP ports.
        const TCP_V6 = 1 << 4;
        /// IPv6 addresses and UDP ports.
        const UDP_V6 = 1 << 5;
    }
}

/// What a hash covered, as a device reports it with a frame (virtio's `hash_report`
/// values, §5.1.6.4.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum HashType {
    /// IPv4 addresses.
    Ipv4 = 1,
    /// IPv4 addresses and TCP ports.
    TcpV4 = 2,
    /// IPv4 addresses and UDP ports.
    UdpV4 = 3,
    /// IPv6 addresses.
    Ipv6 = 4,
    /// IPv6 addresses and TCP ports.
    TcpV6 = 5,
    /// IPv6 addresses and UDP ports.
    UdpV6 = 6,
}

impl HashType {
    /// The type of a virtio `hash_report` value (the enum's numbers); `None` for 0 (no
    /// hash) and for values it does not know.
    #[inline(always)]
    pub const fn from_report(report: u8) -> Option<Self> {
        Some(match report {
            1 => Self::Ipv4,
            2 => Self::TcpV4,
            3 => Self::UdpV4,
            4 => Self::Ipv6,
            5 => Self::TcpV6,
            6 => Self::UdpV6,
            _ => return None,
        })
    }
}

/// The transport protocol of a [`Flow`], for the hashes that cover ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// The fields of a frame that RSS may hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Protocol, source port and destination port, for TCP and UDP (not for a fragment
    /// after the first, which carries no ports).
    pub ports: Option<(L4, u16, u16)>,
}

/// The Toeplitz hash with one key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Toeplitz {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Toeplitz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        f.debug_struct("Toeplitz").field("key", &hex).finish()
    }
}

impl Default for Toeplitz {
    /// The hash with [`DEFAULT_KEY`].
    fn default() -> Self {
        Self::new(DEFAULT_KEY)
    }
}

impl Toeplitz {
    /// The hash with `key`.
    pub const fn new(key: [u8; KEY_LEN]) -> Self {
        Self { key }
    }

    /// The key.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The hash of `input` (fields in network byte order). Input past [`MAX_INPUT`] bytes
    /// meets key bits past the key's end, which count as zero: it changes nothing.
    pub fn hash(&self, input: &[u8]) -> u32 {
        // `window` holds key bits 8i .. 8i+64 for input byte i, most significant first, so
        // the 32 key bits from bit 8i+b are `window >> (32 - b)`.
        let key = &self.key;
        let mut window = u64::from_be_bytes([
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
        ]);
        let mut hash = 0u32;
        for (i, &byte) in input.iter().take(MAX_INPUT).enumerate() {
            for b in 0..8 {
                if byte & (0x80 >> b) != 0 {
                    hash ^= (window >> (32 - b)) as u32;
                }
            }
            window = window << 8 | u64::from(key.get(i + 8).copied().unwrap_or(0));
        }
        hash
    }

    /// The hash of an IPv4 source and destination address ([`HashTypes::IPV4`]).
    pub fn ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let mut input = [0u8; 8];
        input[..4].copy_from_slice(&src.octets());
        input[4..].copy_from_slice(&dst.octets());
        self.hash(&input)
    }

    /// The hash of IPv4 addresses and TCP or UDP ports ([`HashTypes::TCP_V4`],
    /// [`HashTypes::UDP_V4`]: the protocol is not part of the input).
    pub fn ipv4_l4(&self, src: SocketAddrV4, dst: SocketAddrV4) -> u32 {
        let mut input = [0u8; 12];
        input[..4].copy_from_slice(&src.ip().octets());
        input[4..8].copy_from_slice(&dst.ip().octets());
        input[8..10].copy_from_slice(&src.port().to_be_bytes());
        input[10..].copy_from_slice(&dst.port().to_be_bytes());
        self.hash(&input)
    }

    /// The hash of an IPv6 source and destination address ([`HashTypes::IPV6`]).
    pub fn ipv6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> u32 {
        let mut input = [0u8; 32];
        input[..16].copy_from_slice(&src.octets());
        input[16..].copy_from_slice(&dst.octets());
        self.hash(&input)
    }

    /// The hash of IPv6 addresses and TCP or UDP ports ([`HashTypes::TCP_V6`],
    /// [`HashTypes::UDP_V6`]).
    pub fn ipv6_l4(&self, src: SocketAddrV6, dst: SocketAddrV6) -> u32 {
        let mut input = [0u8; MAX_INPUT];
        input[..16].copy_from_slice(&src.ip().octets());
        input[16..32].copy_from_slice(&dst.ip().octets());
        input[32..34].copy_from_slice(&src.port().to_be_bytes());
        input[34..].copy_from_slice(&dst.port().to_be_bytes());
        self.hash(&input)
    }

    /// The hash a device hashing `types` computes for `flow`, and what it covered: the
    /// ports when the flow has them and their type is on, else the addresses when theirs is
    /// on (virtio 1.2 §5.1.6.4.3.1); `None` when nothing applies, or the two addresses are
    /// of different families.
    pub fn flow(&self, flow: &Flow, types: HashTypes) -> Option<(u32, HashType)> {
        match (flow.src, flow.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                if let Some((l4, sp, dp)) = flow.ports {
                    let (ty, t) = match l4 {
                        L4::Tcp => (HashTypes::TCP_V4, HashType::TcpV4),
                        L4::Udp => (HashTypes::UDP_V4, HashType::UdpV4),
                    };
                    if types.contains(ty) {
                        let (s, d) = (SocketAddrV4::new(s, sp), SocketAddrV4::new(d, dp));
                        return Some((self.ipv4_l4(s, d), t));
                    }
                }
                types
                    .contains(HashTypes::IPV4)
                    .then(|| (self.ipv4(s, d), HashType::Ipv4))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                if let Some((l4, sp, dp)) = flow.ports {
                    let (ty, t) = match l4 {
                        L4::Tcp => (HashTypes::TCP_V6, HashType::TcpV6),
                        L4::Udp => (HashTypes::UDP_V6, HashType::UdpV6),
                    };
                    if types.contains(ty) {
                        let s = SocketAddrV6::new(s, sp, 0, 0);
                        let d = SocketAddrV6::new(d, dp, 0, 0);
                        return Some((self.ipv6_l4(s, d), t));
                    }
                }
                types
                    .contains(HashTypes::IPV6)
                    .then(|| (self.ipv6(s, d), HashType::Ipv6))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// Microsoft's "Verifying the RSS Hash Calculation" table, with the default key:
    /// (source, destination, addresses-only hash, hash with TCP ports). The same rows are
    /// in DPDK's `app/test/test_thash.c` and Linux's `toeplitz.sh` selftest.
    const VECTORS: [(&str, &str, u32, u32); 8] = [
        (
            "66.9.149.187:2794",
            "161.142.100.80:1766",
            0x323e8fc2,
            0x51ccc178,
        ),
        (
            "199.92.111.2:14230",
            "65.69.140.83:4739",
            0xd718262a,
            0xc626b0ea,
        ),
        (
            "24.19.198.95:12898",
            "12.22.207.184:38024",
            0xd2d0a5de,
            0x5c2b394a,
        ),
        (
            "38.27.205.30:48228",
            "209.142.163.6:2217",
            0x82989176,
            0xafc7327f,
        ),
        (
            "153.39.163.191:44251",
            "202.188.127.2:1303",
            0x5d1809c5,
            0x10e828a2,
        ),
        (
            "[3ffe:2501:200:1fff::7]:2794",
            "[3ffe:2501:200:3::1]:1766",
            0x2cc18cd5,
            0x40207d3d,
        ),
        (
            "[3ffe:501:8::260:97ff:fe40:efab]:14230",
            "[ff02::1]:4739",
            0x0f0c461c,
            0xdde51bbf,
        ),
        (
            "[3ffe:1900:4545:3:200:f8ff:fe21:67cf]:44251",
            "[fe80::200:f8ff:fe21:67cf]:38024",
            0x4b61e985,
            0x02d1feef,
        ),
    ];

    fn rows() -> impl Iterator<Item = (SocketAddr, SocketAddr, u32, u32)> {
        VECTORS
            .iter()
            .map(|&(s, d, ip, tcp)| (s.parse().unwrap(), d.parse().unwrap(), ip, tcp))
    }

    #[test]
    fn the_published_vectors_hash_as_published() {
        let rss = Toeplitz::default();
        for (src, dst, ip, tcp) in rows() {
            let (got_ip, got_tcp) = match (src, dst) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    (rss.ipv4(*s.ip(), *d.ip()), rss.ipv4_l4(s, d))
                }
                (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                    (rss.ipv6(*s.ip(), *d.ip()), rss.ipv6_l4(s, d))
                }
                _ => unreachable!("one family per row"),
            };
            assert_eq!(got_ip, ip, "{src} -> {dst}, addresses: {got_ip:#010x}");
            assert_eq!(got_tcp, tcp, "{src} -> {dst}, with ports: {got_tcp:#010x}");
        }
    }

    /// `flow` picks the 4-tuple when its type is on, falls back to the addresses when only
    /// theirs is, and hashes nothing otherwise; UDP hashes as TCP does.
    #[test]
    fn flow_picks_what_the_enabled_types_cover() {
        let rss = Toeplitz::default();
        for (src, dst, ip, tcp) in rows() {
            let v4 = src.is_ipv4();
            let (ty_ip, ty_tcp, ty_udp) = if v4 {
                (HashTypes::IPV4, HashTypes::TCP_V4, HashTypes::UDP_V4)
            } else {
                (HashTypes::IPV6, HashTypes::TCP_V6, HashTypes::UDP_V6)
            };
            let (t_ip, t_tcp, t_udp) = if v4 {
                (HashType::Ipv4, HashType::TcpV4, HashType::UdpV4)
            } else {
                (HashType::Ipv6, HashType::TcpV6, HashType::UdpV6)
            };
            let tcp_flow = Flow {
                src: src.ip(),
                dst: dst.ip(),
                ports: Some((L4::Tcp, src.port(), dst.port())),
            };
            let udp_flow = Flow {
                ports: Some((L4::Udp, src.port(), dst.port())),
                ..tcp_flow
            };
            assert_eq!(rss.flow(&tcp_flow, HashTypes::all()), Some((tcp, t_tcp)));
            assert_eq!(rss.flow(&udp_flow, ty_udp), Some((tcp, t_udp)));
            assert_eq!(rss.flow(&tcp_flow, ty_ip | ty_udp), Some((ip, t_ip)));
            assert_eq!(rss.flow(&udp_flow, ty_tcp), None);
            assert_eq!(rss.flow(&tcp_flow, HashTypes::all() - ty_ip - ty_tcp), None);
        }
        let mixed = Flow {
            src: "10.0.0.1".parse().unwrap(),
            dst: "::1".parse().unwrap(),
            ports: None,
        };
        assert_eq!(rss.flow(&mixed, HashTypes::all()), None);
    }

    /// The hash is linear: XOR of inputs hashes to XOR of hashes, each input bit adds the key
    /// window at its position, and a zero input or past-the-key input adds nothing.
    #[test]
    fn each_input_bit_adds_its_key_window() {
        let rss = Toeplitz::new(std::array::from_fn(|i| (i * 37 + 11) as u8));
        assert_eq!(rss.hash(&[0; MAX_INPUT]), 0);
        let key = rss.key();
        for bit in [0usize, 1, 7, 8, 100, 287] {
            let mut input = [0u8; MAX_INPUT];
            input[bit / 8] = 0x80 >> (bit % 8);
            let window = (0..32).fold(0u32, |w, j| {
                let k = bit + j;
                w << 1 | u32::from(key[k / 8] >> (7 - k % 8) & 1)
            });
            assert_eq!(rss.hash(&input), window, "bit {bit}");
        }
        let (a, b) = ([0x5au8; 12], [0xc3u8; 12]);
        let x: Vec<u8> = a.iter().zip(&b).map(|(p, q)| p ^ q).collect();
        assert_eq!(rss.hash(&x), rss.hash(&a) ^ rss.hash(&b));
        let mut long = [0xffu8; MAX_INPUT + 4];
        let h = rss.hash(&long);
        long[MAX_INPUT..].fill(0);
        assert_eq!(rss.hash(&long), h, "bytes past the key change nothing");
    }
}
