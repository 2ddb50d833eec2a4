//! The fake e1000's transmit offloads: checksums from the context descriptor (8254x SDM
//! §3.3.6, as QEMU's `putsum`) and TCP segmentation (TSE, §3.5), played as the SDM says,
//! not only as QEMU lets a driver: a TSE frame's headers must lie in its first data
//! descriptor, every data descriptor of it must say TSE, and no context descriptor may
//! come between them (the context must not change while a segmentation is under way).
//! A frame that breaks one of those is counted ([`FakeE1000::violations`]) and not sent.
//!
//! [`FakeE1000::violations`]: super::FakeE1000::violations

use crate::fake_tso::{self, Cut, Seed};
use zcnic_descriptors::e1000::{TxContext, TxDesc, DCMD_TSE, POPTS_IXSM, POPTS_TXSM, TUCMD_TSE};

/// What the transmit checksum engine does to a frame (8254x SDM §3.3.6, as QEMU's
/// `putsum`): the ones'-complement sum from the start to the end (inclusive; 0: the frame's
/// end) of a range, complemented, at its offset, whatever the field held (the driver seeds
/// it with the pseudo-header's sum).
pub fn offload_tx(frame: &mut [u8], ctx: &TxContext, popts: u8) {
    let put = |frame: &mut [u8], start: u8, off: u8, end: u16| {
        let (start, off) = (usize::from(start), usize::from(off));
        let end = if end == 0 || usize::from(end) >= frame.len() {
            frame.len()
        } else {
            usize::from(end) + 1
        };
        if off + 2 > end || start >= end {
            return;
        }
        let sum = !crate::fake_csum(&frame[start..end]);
        frame[off..off + 2].copy_from_slice(&sum.to_be_bytes());
    };
    if popts & POPTS_IXSM != 0 {
        put(frame, ctx.ipcss, ctx.ipcso, ctx.ipcse);
    }
    if popts & POPTS_TXSM != 0 {
        put(frame, ctx.tucss, ctx.tucso, ctx.tucse);
    }
}

/// The TSE frame under way: what its descriptors so far said.
#[derive(Debug, Default)]
pub(super) struct Tse {
    /// Data descriptors seen of the frame under way, and how many said TSE.
    descs: usize,
    tse: usize,
    /// Bytes of its first data descriptor.
    first: usize,
    /// A context descriptor came in the middle of it.
    context_moved: bool,
}

impl Tse {
    /// A context descriptor, with `under_way` bytes of a frame gathered before it.
    pub(super) fn context(&mut self, under_way: usize) {
        if under_way > 0 && self.tse > 0 {
            self.context_moved = true;
        }
    }

    /// A data descriptor of `len` bytes.
    pub(super) fn data(&mut self, d: &TxDesc, len: usize, extended: bool) {
        if self.descs == 0 {
            self.first = len;
        }
        self.descs += 1;
        if extended && d.cmd & DCMD_TSE != 0 {
            self.tse += 1;
        }
    }

    /// The EOP of a frame of legacy descriptors: sent as it is.
    pub(super) fn plain(self, frame: Vec<u8>) -> Vec<u8> {
        frame
    }

    /// The frame's EOP: the frames it puts on the wire (the frame as checksummed, or its
    /// segments), or `Err` for a frame that breaks the SDM's rules (nothing sent).
    pub(super) fn finish(
        &mut self,
        mut frame: Vec<u8>,
        ctx: &TxContext,
        popts: u8,
    ) -> Result<Vec<Vec<u8>>, ()> {
        let t = std::mem::take(self);
        if t.tse == 0 {
            offload_tx(&mut frame, ctx, popts);
            return Ok(vec![frame]);
        }
        let hdr = usize::from(ctx.hdrlen);
        let ok = t.tse == t.descs
            && !t.context_moved
            && ctx.tucmd & TUCMD_TSE != 0
            && t.first >= hdr
            && frame.len().checked_sub(hdr) == Some(ctx.paylen as usize);
        if !ok {
            return Err(());
        }
        let cut = Cut {
            ip: usize::from(ctx.ipcss),
            tcp: usize::from(ctx.tucss),
            hdr,
            mss: usize::from(ctx.mss),
            seed: Seed::NoLength,
            cwr_first_only: false,
            ip_csum: popts & POPTS_IXSM != 0,
            tcp_csum: popts & POPTS_TXSM != 0,
        };
        fake_tso::segment(&frame, &cut).ok_or(())
    }
}
