//! Transmit of a frame in several parts: a [`Packet`] chain (a jumbo frame) or a buffer
//! with an attached payload (zero copy). The frame goes out as one descriptor chain, the
//! `virtio_net_hdr` in the first buffer's headroom and then each part in order, every one
//! device-readable (virtio 1.1 §2.6.4, §5.1.6.2): the device reads them as one stream, as
//! it does any chain with ANY_LAYOUT or VERSION_1. With the header apart (a legacy device
//! without ANY_LAYOUT, §2.6.4.3) the header is a descriptor of its own and the frame's
//! parts follow. Nothing is copied unless the device cannot reach a part, or the frame
//! has more parts than one chain here takes ([`MAX_PARTS`]); then it is copied into full
//! buffers of the port's pool first.
//!
//! A frame with an offload request comes here too, one buffer or several: its header
//! asks the device for the transport checksum (`offload.rs`).
//!
//! The one-buffer frame without one never comes here: `tx.rs` tests `Packet::is_single`
//! once and sends it as it always did.

use super::queue::QueueKind;
use crate::Offloads;
use std::sync::Arc;
use zcnic_descriptors::virtio::Buf;
use zcnic_hugepages::{AddressSpace, Mempool, Packet};

/// The most descriptors one frame takes here, the header's own included. A 65535-byte
/// frame in full pool buffers takes 33; a chain of more parts is copied into those.
pub(super) const MAX_PARTS: usize = 64;
/// The longest frame the device is asked to segment: an IPv4 packet of 65535 bytes after
/// an Ethernet header with a tag.
const TSO_MAX_FRAME: usize = 65535 + 18;

/// What a multi-part send needs of its queue.
pub(super) struct Sender<'a> {
    pub hdr_len: usize,
    /// The header goes in a descriptor of its own.
    pub apart: bool,
    /// The longest frame the port sends (`Config::max_frame`).
    pub max_frame: usize,
    /// What the device does of an offload request (the rest is done in software).
    pub caps: Offloads,
    pub space: &'a AddressSpace,
    pub pool: &'a Arc<Mempool>,
}

impl Sender<'_> {
    /// Adds `pkt` to `vq` as one chain: returns its id, the packet to keep until the device
    /// is done with it (the frame as given, or its copy), and the frame's length. `None`
    /// when the frame is refused (its first buffer empty, as the one-buffer path refuses
    /// one; longer than the port's MTU allows; not copyable into the pool; an offload
    /// request whose headers do not hold up; no room in the ring); it is dropped, never
    /// cut.
    #[cold]
    #[inline(never)]
    pub(super) fn add<Q: QueueKind>(
        &self,
        vq: &mut Q,
        pkt: Packet,
    ) -> Option<(u16, Packet, usize)> {
        let total = pkt.total_len();
        // A frame the device segments may be as long as an IPv4 packet after its
        // Ethernet header; any other no longer than the MTU allows.
        let tso = pkt.tx_offload().is_some_and(|r| r.tso.is_some()) && self.caps.tx_tso4;
        let max = if tso { TSO_MAX_FRAME } else { self.max_frame };
        if pkt.is_empty() || total > max {
            return None;
        }
        let mut pkt = self.reachable(pkt)?;
        let ask = super::offload::prepare_tx(&mut pkt, self.caps).ok()?;
        // A tag inserted in software makes the frame 4 bytes longer.
        let total = pkt.total_len();
        let max = if ask.is_some_and(|a| a.gso.is_some()) {
            TSO_MAX_FRAME
        } else {
            self.max_frame
        };
        if total > max || pkt.prepend(self.hdr_len).is_err() {
            return None;
        }
        let hdr = &mut pkt.data_mut()[..self.hdr_len];
        hdr.fill(0);
        if let Some(a) = ask {
            super::offload::write_tx_header(hdr, a);
        }
        let mut descs = [Buf {
            addr: 0,
            len: 0,
            device_writes: false,
        }; MAX_PARTS];
        let n = self.describe(&pkt, &mut descs)?;
        let id = vq.add(&descs[..n]).ok()?;
        Some((id, pkt, total))
    }

    /// `pkt` as this device can send it in one chain of at most [`MAX_PARTS`]: itself, or
    /// a copy into full buffers of the pool.
    fn reachable(&self, pkt: Packet) -> Option<Packet> {
        let space = *self.space;
        let parts = usize::from(self.apart)
            + pkt
                .segments()
                .map(|s| 1 + usize::from(s.payload().is_some()))
                .sum::<usize>();
        let ok = parts <= MAX_PARTS
            && pkt.segments().all(|s| {
                s.reachable_in(space) && s.payload().is_none_or(|p| p.reachable_in(space))
            });
        if ok {
            return Some(pkt);
        }
        pkt.copy_into(self.pool)
    }

    /// Writes the chain's descriptors for `pkt` (its header prepended) into `out`; returns
    /// how many, or `None` when they do not fit (never a cut frame). Empty parts get none;
    /// the head always holds the header.
    fn describe(&self, pkt: &Packet, out: &mut [Buf; MAX_PARTS]) -> Option<usize> {
        let part = |addr: u64, len: usize| Buf {
            addr,
            len: len as u32,
            device_writes: false,
        };
        let (mut n, mut fits) = (0, true);
        let mut put = |b: Buf| {
            if b.len == 0 {
                return;
            }
            match out.get_mut(n) {
                Some(d) => *d = b,
                None => fits = false,
            }
            n += 1;
        };
        for (i, seg) in pkt.segments().enumerate() {
            if i == 0 && self.apart {
                put(part(seg.iova(), self.hdr_len));
                put(part(
                    seg.iova() + self.hdr_len as u64,
                    seg.len() - self.hdr_len,
                ));
            } else {
                put(part(seg.iova(), seg.len()));
            }
            if let Some(p) = seg.payload() {
                put(part(p.iova(), p.len()));
            }
        }
        fits.then_some(n)
    }
}
