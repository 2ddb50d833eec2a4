//! The RSS of an AF_XDP port is the kernel driver's: its key, its table and the fields it
//! hashes, read through SIOCETHTOOL as `ethtool -x` does, and a new table written as
//! `ethtool -X` does. A driver without RSS (veth, the e1000) is an error that says so,
//! never the defaults standing in for what the NIC does.

use super::sys::{self, Rxfh};
use crate::port::Rss;
use crate::rss::{HashTypes, Reta, KEY_LEN};
use crate::Error;
use std::io;

fn err(iface: &str, msg: String) -> Error {
    Error::Xdp {
        iface: iface.to_string(),
        msg,
    }
}

/// What a failed SIOCETHTOOL request means for `what`.
fn ioctl_err(iface: &str, what: &str, e: &io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => format!(
            "the kernel's driver of {iface} has no RSS to {what} (veth and the e1000 have none; `ethtool -x {iface}` says the same)"
        ),
        Some(libc::EPERM) => format!("{what}: run as root (CAP_NET_ADMIN)"),
        _ => format!("{what} through SIOCETHTOOL: {e}"),
    };
    err(iface, hint)
}

/// The interface's RSS settings, as its driver holds them.
pub fn read(iface: &str) -> Result<Rss, Error> {
    let r = sys::rxfh(iface).map_err(|e| ioctl_err(iface, "read", &e))?;
    let types = HashTypes::from_bits_retain(
        FLOW_TYPES
            .iter()
            .filter(|(flow, _, want)| {
                sys::rx_flow_hash(iface, *flow).is_ok_and(|got| got & want == *want)
            })
            .fold(0, |t, (_, ty, _)| t | ty.bits()),
    );
    from_rxfh(&r, types).map_err(|m| err(iface, m))
}

/// Each flow type `ethtool` names, the hash type it is, and the fields it must hash.
const FLOW_TYPES: [(u32, HashTypes, u64); 6] = [
    (sys::IPV4_FLOW, HashTypes::IPV4, sys::RXH_IP),
    (
        sys::TCP_V4_FLOW,
        HashTypes::TCP_V4,
        sys::RXH_IP | sys::RXH_L4,
    ),
    (
        sys::UDP_V4_FLOW,
        HashTypes::UDP_V4,
        sys::RXH_IP | sys::RXH_L4,
    ),
    (sys::IPV6_FLOW, HashTypes::IPV6, sys::RXH_IP),
    (
        sys::TCP_V6_FLOW,
        HashTypes::TCP_V6,
        sys::RXH_IP | sys::RXH_L4,
    ),
    (
        sys::UDP_V6_FLOW,
        HashTypes::UDP_V6,
        sys::RXH_IP | sys::RXH_L4,
    ),
];

/// The driver's answer as zcnic's [`Rss`]. A key longer than 40 bytes (i40e and ice
/// have 52) keeps its first 40: the Toeplitz hash of an input of n bytes uses key bytes
/// 0..n+4, and the longest input, IPv6 addresses and ports, is 36 bytes, so the hash of
/// every frame is the same. A shorter key, another hash function or an empty table is
/// not a Toeplitz RSS zcnic can describe: an error saying which.
pub fn from_rxfh(r: &Rxfh, types: HashTypes) -> Result<Rss, String> {
    if r.hfunc != 0 && r.hfunc & sys::ETH_RSS_HASH_TOP == 0 {
        return Err(format!(
            "the driver hashes with function bits {:#x}, not Toeplitz (`ethtool -X IFACE hfunc toeplitz` where it allows)",
            r.hfunc
        ));
    }
    let key: [u8; KEY_LEN] = r
        .key
        .get(..KEY_LEN)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| {
            format!(
                "the driver's RSS key is {} bytes; a Toeplitz key of at least {KEY_LEN} is needed",
                r.key.len()
            )
        })?;
    let entries = r
        .indir
        .iter()
        .map(|&q| u16::try_from(q).map_err(|_| format!("table entry names queue {q}")))
        .collect::<Result<Vec<_>, _>>()?;
    let reta = Reta::new(entries).map_err(|e| format!("the driver reports {e}"))?;
    Ok(Rss {
        key,
        types,
        reta: Some(reta),
    })
}

/// Replaces the driver's table with `reta`, whose entries must name the port's own
/// `queues` and whose length must be the driver's; returns the table it replaced.
pub fn set_reta(iface: &str, reta: &Reta, queues: u16) -> Result<Vec<u32>, Error> {
    if let Some(q) = reta.entries().iter().find(|&&q| q >= queues) {
        return Err(err(
            iface,
            format!("the table names queue {q}; the port has {queues}"),
        ));
    }
    let now = sys::rxfh(iface).map_err(|e| ioctl_err(iface, "set", &e))?;
    if now.indir.len() != reta.len() {
        return Err(err(
            iface,
            format!(
                "a table of {} entries; the driver's has {}",
                reta.len(),
                now.indir.len()
            ),
        ));
    }
    let table: Vec<u32> = reta.entries().iter().map(|&q| u32::from(q)).collect();
    sys::set_indir(iface, &table).map_err(|e| ioctl_err(iface, "set", &e))?;
    Ok(now.indir)
}

/// Puts back a table [`set_reta`] replaced, as the port closes; a failure is logged
/// (the interface may be gone).
pub fn restore(iface: &str, table: &[u32]) {
    if let Err(e) = sys::set_indir(iface, table) {
        log::warn!("xdp:{iface}: putting back the RSS table: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rxfh(key_len: usize, hfunc: u8) -> Rxfh {
        Rxfh {
            indir: (0..128).map(|i| i % 2).collect(),
            key: (0..key_len as u8).collect(),
            hfunc,
        }
    }

    #[test]
    fn a_toeplitz_answer_becomes_the_ports_rss() {
        let r = from_rxfh(&rxfh(40, sys::ETH_RSS_HASH_TOP), HashTypes::UDP_V4).unwrap();
        assert_eq!(r.key[..], (0..40).collect::<Vec<u8>>()[..]);
        assert_eq!(r.types, HashTypes::UDP_V4);
        assert_eq!(r.reta, Some(Reta::spread(2, 128).unwrap()));
    }

    #[test]
    fn a_longer_key_keeps_the_bytes_every_hash_uses() {
        let r = from_rxfh(&rxfh(52, sys::ETH_RSS_HASH_TOP), HashTypes::all()).unwrap();
        assert_eq!(r.key[39], 39);
    }

    #[test]
    fn an_interface_without_rss_says_so() {
        // The loopback interface has no RSS: the ioctl runs and the driver refuses.
        let e = read("lo").unwrap_err().to_string();
        assert!(
            e.starts_with("xdp:lo: ") && e.contains("has no RSS to read"),
            "{e}"
        );
        let e = read("nosuch0").unwrap_err().to_string();
        assert!(e.contains("SIOCETHTOOL"), "{e}");
    }

    #[test]
    fn what_zcnic_cannot_describe_is_an_error_not_defaults() {
        let short = from_rxfh(&rxfh(16, 0), HashTypes::all()).unwrap_err();
        assert!(short.contains("16 bytes"), "{short}");
        // ETH_RSS_HASH_XOR
        let xor = from_rxfh(&rxfh(40, 1 << 1), HashTypes::all()).unwrap_err();
        assert!(xor.contains("not Toeplitz"), "{xor}");
        let empty = Rxfh {
            indir: vec![],
            ..rxfh(40, 1)
        };
        assert!(from_rxfh(&empty, HashTypes::all()).is_err());
        let wide = Rxfh {
            indir: vec![70_000],
            ..rxfh(40, 1)
        };
        assert!(from_rxfh(&wide, HashTypes::all()).is_err());
    }
}
