//! TCP segmentation as the device models play it, written apart from the driver's
//! software segmentation (`zcnic::offload::segment`) so the tests compare two
//! implementations: the fake e1000 cuts a TSE frame as the 8254x SDM §3.5 says, the fake
//! virtio-net cuts a GSO_TCPV4 frame as the host's Linux (`tcp_gso_segment`) does.
//!
//! Each segment: the headers, then at most `mss` payload bytes; IPv4 total length, ID
//! (+1 per segment) and header checksum; TCP sequence number; PSH and FIN on the last
//! segment only; the TCP checksum from the seed the super-frame's field holds.

/// What the super-frame's TCP checksum field holds before segmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// The pseudo-header sum without the length (Intel NICs; the device adds each
    /// segment's length).
    NoLength,
    /// The pseudo-header sum with the whole frame's TCP length (Linux's CHECKSUM_PARTIAL
    /// super-frame; the host takes that length out and each segment's in).
    WholeLength,
}

/// How to cut one frame.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Offset of the IPv4 header.
    pub ip: usize,
    /// Offset of the TCP header.
    pub tcp: usize,
    /// Bytes of headers copied in front of each segment.
    pub hdr: usize,
    /// Payload bytes of each segment but the last.
    pub mss: usize,
    /// What the checksum field holds.
    pub seed: Seed,
    /// Clear CWR on every segment but the first (Linux); the 8254x leaves it on all.
    pub cwr_first_only: bool,
    /// Compute the IPv4 header checksum (8254x: POPTS.IXSM; Linux always).
    pub ip_csum: bool,
    /// Compute the TCP checksum (8254x: POPTS.TXSM; Linux always).
    pub tcp_csum: bool,
}

fn add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The segments of `frame`; `None` when the cut does not fit it (headers past the frame,
/// MSS 0, offsets out of order): a device would refuse it.
pub fn segment(frame: &[u8], c: &Cut) -> Option<Vec<Vec<u8>>> {
    if c.mss == 0 || !(c.ip + 20 <= c.tcp && c.tcp + 20 <= c.hdr && c.hdr <= frame.len()) {
        return None;
    }
    let (head, payload) = frame.split_at(c.hdr);
    let whole_tcp = (frame.len() - c.tcp) as u16;
    let id = u16::from_be_bytes([head[c.ip + 4], head[c.ip + 5]]);
    let seq = u32::from_be_bytes(head[c.tcp + 4..c.tcp + 8].try_into().unwrap());
    let seed = u16::from_be_bytes([head[c.tcp + 16], head[c.tcp + 17]]);
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(c.mss).collect()
    };
    let n = chunks.len();
    let mut out = Vec::with_capacity(n);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut s = head.to_vec();
        s.extend_from_slice(chunk);
        let ip_len = (s.len() - c.ip) as u16;
        s[c.ip + 2..c.ip + 4].copy_from_slice(&ip_len.to_be_bytes());
        s[c.ip + 4..c.ip + 6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        let seq_i = seq.wrapping_add((i * c.mss) as u32);
        s[c.tcp + 4..c.tcp + 8].copy_from_slice(&seq_i.to_be_bytes());
        if i + 1 < n {
            s[c.tcp + 13] &= !0x09;
        }
        if i > 0 && c.cwr_first_only {
            s[c.tcp + 13] &= !0x80;
        }
        if c.ip_csum {
            s[c.ip + 10..c.ip + 12].fill(0);
            let sum = !crate::fake_csum(&s[c.ip..c.tcp]);
            s[c.ip + 10..c.ip + 12].copy_from_slice(&sum.to_be_bytes());
        }
        if c.tcp_csum {
            let tcp_len = (s.len() - c.tcp) as u16;
            let seg_seed = match c.seed {
                Seed::NoLength => add(seed, tcp_len),
                Seed::WholeLength => add(add(seed, !whole_tcp), tcp_len),
            };
            s[c.tcp + 16..c.tcp + 18].copy_from_slice(&seg_seed.to_be_bytes());
            let sum = !crate::fake_csum(&s[c.tcp..]);
            s[c.tcp + 16..c.tcp + 18].copy_from_slice(&sum.to_be_bytes());
        }
        out.push(s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_agree_when_the_whole_length_is_taken_out() {
        let mut f = vec![0u8; 54 + 100];
        f[14] = 0x45;
        f[46] = 0x50;
        let base = Cut {
            ip: 14,
            tcp: 34,
            hdr: 54,
            mss: 40,
            seed: Seed::NoLength,
            cwr_first_only: false,
            ip_csum: true,
            tcp_csum: true,
        };
        let a = segment(&f, &base).unwrap();
        f[50..52].copy_from_slice(&120u16.to_be_bytes()); // 0 + the whole TCP length
        let b = segment(
            &f,
            &Cut {
                seed: Seed::WholeLength,
                ..base
            },
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            [94, 94, 74],
            "40 + 40 + 20"
        );
        assert!(segment(&f, &Cut { mss: 0, ..base }).is_none());
    }
}
