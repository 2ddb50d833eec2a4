//! What the kernel's driver says it can do with XDP: the `netdev` generic netlink family's
//! `dev-get` (Linux ≥ 6.3; `ynl --family netdev --do dev-get` prints the same), whose
//! `xdp-features` carry NETDEV_XDP_ACT_XSK_ZEROCOPY for a driver with AF_XDP zero copy.
//! Layouts follow `linux/netlink.h`, `linux/genetlink.h` and `linux/netdev.h`. Messages
//! are built and parsed here as bytes; the one request and its answer each fit a buffer
//! this module owns, and the kernel answers a request before `send` returns, so the
//! receive never waits.

use super::{last_error, own};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// `netdev_xdp_act` (netdev.h): the driver has AF_XDP zero copy.
pub const NETDEV_XDP_ACT_XSK_ZEROCOPY: u64 = 1 << 3;

/// `NETLINK_GENERIC` (netlink.h).
const NETLINK_GENERIC: i32 = 16;
/// `nlmsghdr.nlmsg_type` of an error or acknowledgement.
const NLMSG_ERROR: u16 = 2;
/// `nlmsghdr.nlmsg_flags`: a request.
const NLM_F_REQUEST: u16 = 1;
/// The generic netlink controller (genetlink.h: GENL_ID_CTRL).
const GENL_ID_CTRL: u16 = 0x10;
/// CTRL_CMD_GETFAMILY, and its name and id attributes.
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// NETDEV_CMD_DEV_GET, and the attributes of its answer (netdev.h).
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// `nlmsghdr` and `genlmsghdr` together.
const HEADERS: usize = 16 + 4;

/// One generic netlink request: `family`'s `cmd` with `attrs` (type, payload).
pub(super) fn request(family: u16, seq: u32, cmd: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; HEADERS];
    for (ty, payload) in attrs {
        m.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&family.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[16] = cmd;
    m[17] = 1; // version
    m
}

/// The attributes (type, payload) of the answer to request `seq` in `reply`; the errno
/// of an NLMSG_ERROR answer as an error. Lengths are checked against the buffer.
pub(super) fn attributes(reply: &[u8], seq: u32) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a malformed netlink answer");
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(reply.get(at..at + 4)?.try_into().ok()?))
    };
    if reply.len() < 16 {
        return Err(bad());
    }
    let len = word(0).ok_or_else(bad)? as usize;
    let ty = u16::from_ne_bytes([reply[4], reply[5]]);
    if len > reply.len() || len < 16 || word(8) != Some(seq) {
        return Err(bad());
    }
    if ty == NLMSG_ERROR {
        let code = word(16).ok_or_else(bad)? as i32;
        // A negated errno; 0 (an acknowledgement, never asked for) and i32::MIN (no
        // errno negates to it) are malformed.
        return Err(match code.checked_neg() {
            Some(errno @ 1..) => io::Error::from_raw_os_error(errno),
            _ => bad(),
        });
    }
    let mut out = Vec::new();
    let mut at = HEADERS;
    while at + 4 <= len {
        let alen = usize::from(u16::from_ne_bytes([reply[at], reply[at + 1]]));
        let aty = u16::from_ne_bytes([reply[at + 2], reply[at + 3]]) & 0x3fff;
        if alen < 4 || at + alen > len {
            return Err(bad());
        }
        out.push((aty, reply[at + 4..at + alen].to_vec()));
        at += alen.next_multiple_of(4);
    }
    Ok(out)
}

/// The payload of attribute `ty` as a native-endian integer of its own width (2, 4, 8).
fn integer(attrs: &[(u16, Vec<u8>)], ty: u16) -> Option<u64> {
    let (_, p) = attrs.iter().find(|(t, _)| *t == ty)?;
    Some(match p.len() {
        2 => u64::from(u16::from_ne_bytes(p[..].try_into().ok()?)),
        4 => u64::from(u32::from_ne_bytes(p[..].try_into().ok()?)),
        8 => u64::from_ne_bytes(p[..].try_into().ok()?),
        _ => return None,
    })
}

/// Sends `msg` on `sock` and reads the kernel's answer.
fn transact(sock: &OwnedFd, msg: &[u8]) -> io::Result<Vec<u8>> {
    // SAFETY: `msg` is a live buffer of the length passed; the kernel only reads it.
    let sent = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(last_error());
    }
    let mut buf = vec![0u8; 8192];
    // SAFETY: `buf` is a live, writable buffer of the length passed. MSG_DONTWAIT: the
    // answer was queued before `send` returned.
    let got = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if got < 0 {
        return Err(last_error());
    }
    buf.truncate(got as usize);
    Ok(buf)
}

/// The `xdp-features` of the interface `ifindex` (NETDEV_XDP_ACT_* bits). ENOENT from a
/// kernel without the `netdev` family (before 6.3).
pub fn xdp_features(ifindex: u32) -> io::Result<u64> {
    let missing = || io::Error::new(io::ErrorKind::InvalidData, "no such attribute");
    // SAFETY: plain system call, no pointers.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_GENERIC,
        )
    };
    if fd < 0 {
        return Err(last_error());
    }
    let sock = own(fd.into());
    let ask = request(
        GENL_ID_CTRL,
        1,
        CTRL_CMD_GETFAMILY,
        &[(CTRL_ATTR_FAMILY_NAME, b"netdev\0")],
    );
    let family = integer(
        &attributes(&transact(&sock, &ask)?, 1)?,
        CTRL_ATTR_FAMILY_ID,
    )
    .and_then(|f| u16::try_from(f).ok())
    .ok_or_else(missing)?;
    let ask = request(
        family,
        2,
        NETDEV_CMD_DEV_GET,
        &[(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes())],
    );
    integer(
        &attributes(&transact(&sock, &ask)?, 2)?,
        NETDEV_A_DEV_XDP_FEATURES,
    )
    .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_laid_out_as_netlink_wants() {
        let m = request(0x10, 7, 3, &[(2, b"netdev\0")]);
        // 20 bytes of headers, a 4-byte attribute header and 7 bytes padded to 8.
        assert_eq!(m.len(), 32);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x10);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!((m[16], m[17]), (3, 1));
        assert_eq!(u16::from_ne_bytes([m[20], m[21]]), 11);
        assert_eq!(&m[24..31], b"netdev\0");
    }

    /// An answer to `seq` of type `ty` carrying `attrs`.
    fn answer(ty: u16, seq: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = request(ty, seq, 1, attrs);
        m[6..8].copy_from_slice(&0u16.to_ne_bytes());
        m
    }

    #[test]
    fn answers_are_parsed_and_checked() {
        let features = 0x3fu64.to_ne_bytes();
        let m = answer(
            0x20,
            2,
            &[(1, &5u32.to_ne_bytes()), (2, &[]), (3, &features)],
        );
        let a = attributes(&m, 2).unwrap();
        assert_eq!(integer(&a, NETDEV_A_DEV_IFINDEX), Some(5));
        assert_eq!(integer(&a, NETDEV_A_DEV_XDP_FEATURES), Some(0x3f));
        assert_eq!(integer(&a, 9), None);
        assert!(attributes(&m, 3).is_err(), "another request's answer");
        assert!(attributes(&m[..m.len() - 4], 2).is_err(), "cut short");
        let mut long = m.clone();
        long[20..22].copy_from_slice(&200u16.to_ne_bytes());
        assert!(attributes(&long, 2).is_err(), "an attribute past the end");
        // NLMSG_ERROR: the errno, negated, after the header.
        let mut err = answer(NLMSG_ERROR, 1, &[]);
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        let len = err.len() as u32;
        err[0..4].copy_from_slice(&len.to_ne_bytes());
        let e = attributes(&err, 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(attributes(&[1, 2, 3], 1).is_err());
        // An error code with no errno to negate into (i32::MIN): malformed, not a panic.
        err[16..20].copy_from_slice(&i32::MIN.to_ne_bytes());
        let e = attributes(&err, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(attributes(&[16, 0, 0, 0, 2, 0], 1).is_err());
    }

    #[test]
    fn no_cut_or_corrupted_answer_panics() {
        let features = 0x3fu64.to_ne_bytes();
        let m = answer(0x20, 2, &[(2, &[]), (3, &features)]);
        let mut err = answer(NLMSG_ERROR, 2, &[]);
        err.extend_from_slice(&[0; 20]);
        let len = err.len() as u32;
        err[0..4].copy_from_slice(&len.to_ne_bytes());
        for base in [m, err] {
            for cut in 0..=base.len() {
                let _ = attributes(&base[..cut], 2);
            }
            for at in 0..base.len() {
                for v in [0u8, 1, 3, 0x7f, 0x80, 0xff] {
                    let mut b = base.clone();
                    b[at] = v;
                    if let Ok(a) = attributes(&b, 2) {
                        let _ = integer(&a, NETDEV_A_DEV_XDP_FEATURES);
                    }
                }
            }
        }
    }

    #[test]
    fn the_kernel_answers_for_loopback_or_says_it_cannot() {
        // Loopback has no XDP in its driver (no bits but what the core adds), and a
        // kernel before 6.3 has no netdev family.
        match xdp_features(1) {
            Ok(f) => assert_eq!(f & NETDEV_XDP_ACT_XSK_ZEROCOPY, 0, "{f:#x}"),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}"),
        }
        let none = xdp_features(u32::MAX).unwrap_err();
        assert!(
            none.raw_os_error().is_some(),
            "no interface: an errno, {none}"
        );
    }
}
