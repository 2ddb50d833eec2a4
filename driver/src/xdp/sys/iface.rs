//! The interface's own ioctls, on an `ifreq` that names it: its flags (SIOCGIFFLAGS,
//! SIOCSIFFLAGS: up, promiscuous), and SIOCETHTOOL for the RSS state the kernel's driver
//! holds: its Toeplitz key and indirection table (`ethtool -x`), the fields it hashes per
//! flow type (`ethtool -n IFACE rx-flow-hash`), and a new table (`ethtool -X`). Layouts
//! follow `linux/ethtool.h`. Every ethtool answer is a buffer of `u32` words this module
//! owns; the kernel never writes past the sizes the request names, which are checked here
//! first.

use super::{last_error, own};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// An `ifreq` naming `name`, and a socket to ask about it.
fn ifreq(name: &str) -> io::Result<(OwnedFd, libc::ifreq)> {
    // SAFETY: plain system call, no pointers.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(last_error());
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = b as libc::c_char;
    }
    Ok((own(s.into()), req))
}

/// The interface flags of `name` (IFF_UP, IFF_PROMISC, …).
pub fn if_flags(name: &str) -> io::Result<libc::c_int> {
    let (s, mut req) = ifreq(name)?;
    // SAFETY: `req` is a live ifreq the kernel reads and writes for SIOCGIFFLAGS.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(last_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff)
}

/// Sets or clears IFF_PROMISC on the interface `name`.
pub fn set_promisc(name: &str, on: bool) -> io::Result<()> {
    let flags = if_flags(name)?;
    let (s, mut req) = ifreq(name)?;
    let p = libc::IFF_PROMISC;
    req.ifr_ifru.ifru_flags = (if on { flags | p } else { flags & !p }) as libc::c_short;
    // SAFETY: `req` is a live ifreq, which SIOCSIFFLAGS only reads.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(last_error());
    }
    Ok(())
}

/// `ETHTOOL_GRXFH`: the fields hashed for one flow type.
const ETHTOOL_GRXFH: u32 = 0x29;
/// `ETHTOOL_SRXFHINDIR`: sets the indirection table, key and function unchanged.
const ETHTOOL_SRXFHINDIR: u32 = 0x39;
/// `ETHTOOL_GRSSH`: the indirection table, the key and the hash function.
const ETHTOOL_GRSSH: u32 = 0x46;
/// `ETH_RSS_HASH_TOP`: the hash function bit for Toeplitz.
pub const ETH_RSS_HASH_TOP: u8 = 1 << 0;
/// Flow types of `ETHTOOL_GRXFH` (`TCP_V4_FLOW` …).
pub const TCP_V4_FLOW: u32 = 0x01;
/// UDP over IPv4.
pub const UDP_V4_FLOW: u32 = 0x02;
/// TCP over IPv6.
pub const TCP_V6_FLOW: u32 = 0x05;
/// UDP over IPv6.
pub const UDP_V6_FLOW: u32 = 0x06;
/// Other IPv4.
pub const IPV4_FLOW: u32 = 0x10;
/// Other IPv6.
pub const IPV6_FLOW: u32 = 0x11;
/// `RXH_IP_SRC | RXH_IP_DST`: both addresses are hashed.
pub const RXH_IP: u64 = (1 << 4) | (1 << 5);
/// `RXH_L4_B_0_1 | RXH_L4_B_2_3`: both ports are hashed.
pub const RXH_L4: u64 = (1 << 6) | (1 << 7);
/// Words of `struct ethtool_rxfh` before its `rss_config` (24 bytes).
const RXFH_HEAD: usize = 6;
/// Largest table and key believed from a driver: `Reta::MAX_LEN`, and a key far longer
/// than any NIC's (40 to 52 bytes).
const MAX_INDIR: u32 = 1 << 15;
const MAX_KEY: u32 = 256;
/// Words given to `ETHTOOL_GRXFH`: more than `struct ethtool_rxnfc` in any kernel, though
/// the kernel writes only its first 16 bytes for this command.
const RXNFC_WORDS: usize = 64;

/// The RSS state as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rxfh {
    /// The indirection table (queue numbers).
    pub indir: Vec<u32>,
    /// The hash key, as long as the driver's.
    pub key: Vec<u8>,
    /// The hash function bits (`ETH_RSS_HASH_TOP`, …); 0 when the driver does not say.
    pub hfunc: u8,
}

/// One SIOCETHTOOL request on `name` with `data` as its command block.
fn ethtool(name: &str, data: &mut [u32]) -> io::Result<()> {
    let (s, mut req) = ifreq(name)?;
    req.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: `req` is a live ifreq whose data pointer is `data`, a live buffer this call
    // borrows mutably; the callers size it for everything the command writes back.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
        return Err(last_error());
    }
    Ok(())
}

/// `ETHTOOL_GRSSH`: asks the sizes first (a request with both at 0), then the table and
/// key in a buffer of exactly those sizes. A driver without RSS answers EOPNOTSUPP.
pub fn rxfh(name: &str) -> io::Result<Rxfh> {
    let mut head = [0u32; RXFH_HEAD];
    head[0] = ETHTOOL_GRSSH;
    ethtool(name, &mut head)?;
    let (indir, key) = (head[2], head[3]);
    if indir > MAX_INDIR || key > MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the driver reports a table of {indir} entries and a key of {key} bytes"),
        ));
    }
    let key_words = (key as usize).div_ceil(4);
    let mut buf = vec![0u32; RXFH_HEAD + indir as usize + key_words];
    buf[0] = ETHTOOL_GRSSH;
    buf[2] = indir;
    buf[3] = key;
    ethtool(name, &mut buf)?;
    let table = buf[RXFH_HEAD..RXFH_HEAD + indir as usize].to_vec();
    let key_bytes: Vec<u8> = buf[RXFH_HEAD + indir as usize..]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(key as usize)
        .collect();
    Ok(Rxfh {
        indir: table,
        key: key_bytes,
        hfunc: buf[4].to_ne_bytes()[0],
    })
}

/// `ETHTOOL_GRXFH`: the `RXH_*` bits of the fields hashed for `flow_type`.
pub fn rx_flow_hash(name: &str, flow_type: u32) -> io::Result<u64> {
    let mut buf = [0u32; RXNFC_WORDS];
    buf[0] = ETHTOOL_GRXFH;
    buf[1] = flow_type;
    ethtool(name, &mut buf)?;
    Ok(u64::from(buf[2]) | (u64::from(buf[3]) << 32))
}

/// `ETHTOOL_SRXFHINDIR`: replaces the indirection table (its length must be the
/// driver's, each entry one of its receive queues; the kernel checks both).
pub fn set_indir(name: &str, table: &[u32]) -> io::Result<()> {
    let len = u32::try_from(table.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut buf = Vec::with_capacity(2 + table.len());
    buf.extend([ETHTOOL_SRXFHINDIR, len]);
    buf.extend_from_slice(table);
    ethtool(name, &mut buf)
}
