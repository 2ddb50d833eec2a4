//! Message framing (virtio 1.1 §2.6.4, "Message Framing"): how the fake device finds a
//! frame's `virtio_net_hdr` in a chain, and the legacy interface the fake can present.
//!
//! With VIRTIO_F_ANY_LAYOUT or VERSION_1 negotiated the device reads header and frame
//! as one byte stream over the chain's descriptors, as QEMU's virtio-net does
//! (`iov_to_buf` over the whole chain): that is [`super::gather`] and [`super::deliver`].
//! A legacy device that did not offer ANY_LAYOUT (VirtualBox's) takes the first
//! descriptor as the header and the rest as the frame (§2.6.4.3, "Legacy Interface:
//! Message Framing"); a header that shares its descriptor with frame bytes is mis-framed.
//! The fake then counts that chain in `misframed` and reads or writes it as such a device
//! would, so the frame also comes out wrong.

use super::{Chain, Dma, MAX_TX_DESC};
use zcnic::virtio::{feature, Notifier, Transport};
use zcnic_descriptors::virtio::VIRTQ_DESC_F_WRITE;

/// `virtio_net_hdr` of a legacy device without VIRTIO_NET_F_MRG_RXBUF (virtio 1.1
/// §5.1.6.1): no `num_buffers`.
pub const LEGACY_HDR_LEN: usize = 10;

/// Whether a device that accepted `accepted` needs the header in a descriptor of its own.
pub(super) fn strict(accepted: u64) -> bool {
    accepted & (feature::ANY_LAYOUT | feature::VERSION_1) == 0
}

/// A transmit chain as a strict device parses it: `(header, frame, misframed)`. The
/// header is the first descriptor, which must hold exactly `hdr` bytes; the frame is the
/// device-readable descriptors after it.
pub(super) fn split_tx(m: &Dma, chain: &Chain, hdr: usize) -> (Vec<u8>, Vec<u8>, bool) {
    let mut parts = chain
        .descs
        .iter()
        .filter(|d| d.flags & VIRTQ_DESC_F_WRITE == 0)
        .map(|d| {
            let mut b = vec![0; (d.len as usize).min(MAX_TX_DESC)];
            m.read(d.addr, &mut b);
            b
        });
    let head = parts.next().unwrap_or_default();
    let frame: Vec<u8> = parts.flatten().collect();
    let misframed = head.len() != hdr || frame.is_empty();
    (head, frame, misframed)
}

/// Writes `hdr_bytes` into the first device-writable descriptor and `frame` across the
/// ones after it, as a strict device does; returns the bytes written and whether the
/// chain was mis-framed (a first descriptor of another length than the header, or no
/// room for the frame after it).
pub(super) fn deliver_apart(m: &Dma, chain: &Chain, hdr_bytes: &[u8], frame: &[u8]) -> (u32, bool) {
    let mut writable = chain
        .descs
        .iter()
        .filter(|d| d.flags & VIRTQ_DESC_F_WRITE != 0);
    let Some(first) = writable.next() else {
        return (0, true);
    };
    let n = (first.len as usize).min(hdr_bytes.len());
    m.write(first.addr, &hdr_bytes[..n]);
    let mut at = 0;
    for d in writable {
        let k = (d.len as usize).min(frame.len() - at);
        m.write(d.addr, &frame[at..at + k]);
        at += k;
    }
    let misframed = first.len as usize != hdr_bytes.len() || at < frame.len();
    ((n + at) as u32, misframed)
}

/// The fake's legacy face: the modern registers underneath (the fake reads the three
/// ring addresses the driver programs), but the driver sees the legacy interface
/// (`legacy()`: 32 feature bits' worth of semantics, no FEATURES_OK, the 10-byte header,
/// legacy ring alignment, the queue size the device has). With [`super::Behaviour::packed`]
/// it also offers packed rings, which no legacy device has: that runs the driver's packed
/// rings with the header apart, a combination the driver keeps correct anyway.
#[derive(Debug)]
pub struct LegacyView<T>(pub T);

impl<T: Transport> Transport for LegacyView<T> {
    fn legacy(&self) -> bool {
        true
    }
    fn status(&self) -> u8 {
        self.0.status()
    }
    fn set_status(&self, s: u8) {
        self.0.set_status(s)
    }
    fn device_features(&self) -> u64 {
        self.0.device_features()
    }
    fn set_driver_features(&self, f: u64) {
        self.0.set_driver_features(f)
    }
    fn queue_max(&self, q: u16) -> u16 {
        self.0.queue_max(q)
    }
    fn queue_setup(
        &mut self,
        q: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), String> {
        self.0.queue_setup(q, size, desc, driver, device)
    }
    fn notifier(&self, q: u16) -> Notifier {
        self.0.notifier(q)
    }
    fn config8(&self, off: u32) -> u8 {
        self.0.config8(off)
    }
    fn revoke_notifiers(&self) {
        self.0.revoke_notifiers()
    }
    fn take_intx(&mut self) -> Option<zcnic::virtio::Intx> {
        self.0.take_intx()
    }
}
