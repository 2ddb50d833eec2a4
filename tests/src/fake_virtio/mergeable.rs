//! Mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF, virtio 1.1 §5.1.6.3.1, §5.1.6.4) as
//! QEMU's virtio-net plays them (`virtio_net_receive_rcu`): a frame goes into as many
//! receive buffers as it needs, each filled to its end but the last, the header (with
//! `num_buffers`, le16 at byte 10) at the start of the first; the device waits until the
//! ring holds enough buffers for the whole frame, then returns them all at once, in order.
//!
//! The fake can also lie in `num_buffers` ([`Inject::NumBuffers`]) and publish a frame's
//! first buffers without the rest ([`Inject::Partial`], then [`Inject::Rest`]), as a device
//! that returns a frame piecemeal would.

use super::{deliver, Chain, Dma, Inject, Used, VIRTQ_DESC_F_WRITE};
use std::collections::VecDeque;

/// Where `num_buffers` sits in the header.
const NUM_BUFFERS: usize = 10;
/// Where the hash value and report sit in the hash-report header (virtio 1.2 §5.1.6).
const HASH_VALUE: usize = 12;
const HASH_REPORT: usize = 16;

/// Bytes the device may write into `chain`.
fn writable(chain: &Chain) -> usize {
    chain
        .descs
        .iter()
        .filter(|d| d.flags & VIRTQ_DESC_F_WRITE != 0)
        .map(|d| d.len as usize)
        .sum()
}

/// The header and frame of an injection a mergeable device spreads over buffers, the
/// `num_buffers` it writes if not the true count, and how many of its used entries it
/// publishes now (the rest wait for [`Inject::Rest`]).
type Parts<'a> = (Vec<u8>, &'a [u8], Option<u16>, Option<usize>);

/// [`Parts`] of `what`; `None` for the injections that are not frames.
fn parts(what: &Inject, hdr_len: usize) -> Option<Parts<'_>> {
    let hdr = vec![0; hdr_len];
    match what {
        Inject::Frame(f) => Some((hdr, f, None, None)),
        Inject::Hashed(f, hash, report) => {
            let mut hdr = hdr;
            if hdr_len >= HASH_REPORT + 2 {
                hdr[HASH_VALUE..HASH_VALUE + 4].copy_from_slice(&hash.to_le_bytes());
                hdr[HASH_REPORT..HASH_REPORT + 2].copy_from_slice(&report.to_le_bytes());
            }
            Some((hdr, f, None, None))
        }
        Inject::NumBuffers(f, n) => Some((hdr, f, Some(*n), None)),
        Inject::Partial(f, k) => Some((hdr, f, None, Some(*k))),
        Inject::Csum(f, flags, start, offset) => {
            let hdr = super::csum::header(hdr_len, *flags, *start, *offset);
            Some((hdr, f, None, None))
        }
        _ => None,
    }
}

/// Receives `what` on a device with mergeable buffers: `None` when it is not a frame (the
/// caller plays it as without them); `Some(false)` when the ring has too few buffers yet
/// (`held` keeps what was taken); `Some(true)` once written, its used entries in `done`
/// (and in `stalled`, the ones held back).
pub(super) fn receive(
    what: &Inject,
    hdr_len: usize,
    held: &mut VecDeque<Chain>,
    mut take: impl FnMut() -> Option<Chain>,
    m: &Dma,
    done: &mut Vec<Used>,
    stalled: &mut Vec<Used>,
) -> Option<bool> {
    if let Inject::Rest = what {
        done.append(stalled);
        return Some(true);
    }
    let (mut hdr, frame, lie, publish) = parts(what, hdr_len)?;
    let bytes = hdr_len + frame.len();
    let mut room = 0;
    let mut k = 0;
    while room < bytes {
        if k == held.len() {
            match take() {
                Some(chain) => held.push_back(chain),
                None => return Some(false),
            }
        }
        room += writable(&held[k]);
        k += 1;
    }
    let n = lie.unwrap_or(k as u16);
    if let Some(field) = hdr.get_mut(NUM_BUFFERS..NUM_BUFFERS + 2) {
        field.copy_from_slice(&n.to_le_bytes());
    }
    hdr.extend_from_slice(frame);
    let mut at = 0;
    for (i, chain) in held.drain(..k).enumerate() {
        let end = (at + writable(&chain)).min(hdr.len());
        let len = deliver(m, &chain, &[], &hdr[at..end]);
        at = end;
        let used = chain.used(chain.id.into(), len);
        if publish.is_some_and(|p| i >= p) {
            stalled.push(used);
        } else {
            done.push(used);
        }
    }
    Some(true)
}
