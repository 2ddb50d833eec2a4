//! virtio-net feature negotiation (virtio 1.1 §3.1.1, §5.1.3) and the bring-up helpers the
//! port uses; the port is in `port.rs`, the datapath in `rxtx.rs`.

use super::queue::QueueKind;
use super::transport::{status, Transport};
use crate::config::FRAME_OVERHEAD;
use crate::pci::PciAddr;
use crate::{Config, Error};
use std::time::Duration;
use zcnic_hugepages::DATA_ROOM;

/// `mtu` in the net device configuration (le16, virtio 1.1 §5.1.4).
const CONFIG_MTU: u32 = 10;

/// Checks `cfg.mtu` against what the device takes with `features`: with VIRTIO_NET_F_MTU
/// no more than its configuration's `mtu` field (virtio 1.1 §5.1.4.2: the driver must not
/// send longer); without VIRTIO_NET_F_MRG_RXBUF no more than one receive buffer holds, as
/// zcnic posts no chained ("big packet") receive buffers and QEMU offers mergeable ones.
/// Returns the MTU the port uses.
pub(crate) fn check_mtu(
    t: &dyn Transport,
    features: u64,
    addr: PciAddr,
    cfg: &Config,
) -> Result<usize, Error> {
    if features & feature::MTU != 0 {
        let max = usize::from(t.config16(CONFIG_MTU));
        Error::check_mtu(addr, cfg.mtu, max, "virtio-net device (its mtu field)")?;
    }
    if features & feature::MRG_RXBUF == 0 {
        let what = "virtio-net without VIRTIO_NET_F_MRG_RXBUF (a frame in one receive buffer)";
        Error::check_mtu(addr, cfg.mtu, DATA_ROOM - FRAME_OVERHEAD, what)?;
    }
    // A frame's length goes in 16-bit fields on its way (pool buffers, QEMU's).
    let what = "virtio-net (a frame of at most 65535 bytes)";
    Error::check_mtu(addr, cfg.mtu, usize::from(u16::MAX) - FRAME_OVERHEAD, what)?;
    Ok(cfg.mtu)
}

/// Feature bits (virtio 1.1 §5.1.3 and §6; 1.2 for RSS and the hash report).
pub mod feature {
    /// VIRTIO_NET_F_CSUM — the device completes a transmitted frame's partial transport
    /// checksum (`flags` NEEDS_CSUM, virtio 1.1 §5.1.6.2).
    pub const CSUM: u64 = 1 << 0;
    /// VIRTIO_NET_F_GUEST_CSUM — received frames may come with a partial checksum
    /// (NEEDS_CSUM) or one the device checked (DATA_VALID) (virtio 1.1 §5.1.6.4).
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// VIRTIO_NET_F_MTU — the configuration's `mtu` field is the largest MTU the device
    /// takes (virtio 1.1 §5.1.3, §5.1.4).
    pub const MTU: u64 = 1 << 3;
    /// Device has a MAC address in its configuration.
    pub const MAC: u64 = 1 << 5;
    /// VIRTIO_NET_F_GUEST_TSO4 — the device may deliver TCP/IPv4 frames longer than the
    /// MTU, segments merged (virtio 1.1 §5.1.6.4). Never asked: see `offload.rs`.
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// VIRTIO_NET_F_HOST_TSO4 — the device segments a TCP/IPv4 frame whose header says
    /// GSO_TCPV4 (virtio 1.1 §5.1.6.2); needs CSUM.
    pub const HOST_TSO4: u64 = 1 << 11;
    /// VIRTIO_NET_F_MRG_RXBUF — a received frame may span several receive buffers, its
    /// header saying how many (`num_buffers`, virtio 1.1 §5.1.6.3.1); the header is then
    /// 12 bytes on a legacy device too.
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// Configuration has a link status field.
    pub const STATUS: u64 = 1 << 16;
    /// A control virtqueue.
    pub const CTRL_VQ: u64 = 1 << 17;
    /// Receive filters (promiscuous, all-multicast) over the control queue.
    pub const CTRL_RX: u64 = 1 << 18;
    /// Several queue pairs, chosen over the control queue.
    pub const MQ: u64 = 1 << 22;
    /// VIRTIO_F_ANY_LAYOUT — the device takes a frame's header and data in any split over
    /// descriptors (virtio 1.1 §6.3; implied by VERSION_1). Without it a legacy device
    /// needs the header in a descriptor of its own (§2.6.4.3, §5.1.6.6).
    pub const ANY_LAYOUT: u64 = 1 << 27;
    /// used_event / avail_event notification suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// virtio 1.0 or later.
    pub const VERSION_1: u64 = 1 << 32;
    /// The device goes through the platform's IOMMU.
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    /// Packed virtqueues.
    pub const RING_PACKED: u64 = 1 << 34;
    /// The device reports each received frame's RSS hash in its header.
    pub const HASH_REPORT: u64 = 1 << 57;
    /// Receive-side scaling: a Toeplitz key and redirection table over the queue pairs.
    pub const RSS: u64 = 1 << 60;
}

/// Features zcnic asks for; none is required except VERSION_1 on a modern device (QEMU
/// withholds the checksum and offload bits on hub and socket wires, so zcnic needs none).
/// The checksum offloads both ways when offered (`offload.rs`), and TCP segmentation on
/// transmit (HOST_TSO4, with CSUM); never segments merged on receive (GUEST_TSO4 and the
/// like: frames longer than the MTU, see `offload.rs`).
/// The control queue and receive filters always; several queue pairs, RSS and the hash
/// report only for a port of several queues (`queues > 1`): the hash report makes every
/// header 8 bytes longer.
pub fn wanted_features(packed: bool, queues: u16) -> u64 {
    let mut f = feature::VERSION_1
        | feature::CSUM
        | feature::GUEST_CSUM
        | feature::HOST_TSO4
        | feature::ACCESS_PLATFORM
        | feature::MAC
        | feature::MTU
        | feature::STATUS
        | feature::EVENT_IDX
        | feature::ANY_LAYOUT
        | feature::CTRL_VQ
        | feature::CTRL_RX;
    if packed {
        f |= feature::RING_PACKED;
    }
    if queues > 1 {
        f |= feature::MQ | feature::RSS | feature::HASH_REPORT;
    }
    f
}

/// Whether each frame's `virtio_net_hdr` needs a descriptor of its own, apart from the
/// frame: a legacy device that did not negotiate VIRTIO_F_ANY_LAYOUT (virtio 1.1 §2.6.4.3,
/// "Legacy Interface: Message Framing"). VirtualBox offers no ANY_LAYOUT and mis-frames a
/// header that shares the frame's descriptor; VERSION_1 implies any layout.
///
/// ```
/// use zcnic::virtio::{feature, header_apart};
///
/// assert!(header_apart(feature::MAC)); // legacy, no ANY_LAYOUT: VirtualBox
/// assert!(!header_apart(feature::MAC | feature::ANY_LAYOUT)); // legacy QEMU
/// assert!(!header_apart(feature::VERSION_1)); // virtio 1.0+
/// ```
pub fn header_apart(features: u64) -> bool {
    features & (feature::ANY_LAYOUT | feature::VERSION_1) == 0
}

/// Resets the device and negotiates features (§3.1.1); returns what was accepted.
pub fn negotiate(
    t: &dyn Transport,
    addr: &PciAddr,
    cfg: &Config,
    packed: bool,
) -> Result<u64, Error> {
    t.set_status(0);
    if !crate::wait_until(cfg.reset_timeout, || t.status() == 0) {
        return Err(Error::Timeout {
            addr: *addr,
            what: "the virtio device to reset (status to read 0)",
            ms: cfg.reset_timeout.as_millis() as u64,
        });
    }
    t.set_status(status::ACKNOWLEDGE);
    t.set_status(status::ACKNOWLEDGE | status::DRIVER);
    let offered = t.device_features();
    let fail = |what: String| {
        t.set_status(status::FAILED);
        Err(Error::Io(format!("{addr}: {what}")))
    };
    if !t.legacy() && offered & feature::VERSION_1 == 0 {
        return fail("the device does not offer VIRTIO_F_VERSION_1 (bit 32)".into());
    }
    let mut accepted = offered & wanted_features(packed, cfg.queues);
    // Mergeable receive buffers only when a frame can outgrow one buffer: at the default
    // MTU the device never merges, and the receive path reads no `num_buffers`.
    if cfg.max_frame() > DATA_ROOM {
        accepted |= offered & feature::MRG_RXBUF;
    }
    // HOST_TSO4 depends on CSUM (virtio 1.1 §5.1.3.1).
    if accepted & feature::CSUM == 0 {
        accepted &= !feature::HOST_TSO4;
    }
    // The hash report without RSS would report nothing zcnic asked for (QEMU hashes only
    // with RSS configured), and costs 8 header bytes a frame.
    if accepted & feature::RSS == 0 {
        accepted &= !feature::HASH_REPORT;
    }
    // Receive filters, queue pairs, RSS and the hash report all need the control queue
    // (virtio 1.2 §5.1.3.1).
    if accepted & feature::CTRL_VQ == 0 {
        accepted &= !(feature::CTRL_RX | feature::MQ | feature::RSS | feature::HASH_REPORT);
    }
    t.set_driver_features(accepted);
    if !t.legacy() {
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        t.set_status(s);
        if t.status() & status::FEATURES_OK == 0 {
            return fail(format!(
                "the device refused features {accepted:#x} (FEATURES_OK cleared)"
            ));
        }
    }
    Ok(accepted)
}

/// Resets the device (status 0, which stops its DMA, virtio 1.1 §2.1); true when the
/// device confirms it by reading 0 back.
pub(crate) fn stop(t: &dyn Transport) -> bool {
    t.set_status(0);
    crate::wait_until(Duration::from_millis(100), || t.status() == 0)
}

/// Bring-up failed after the device was given `queues`: reset it, and when the reset is not
/// confirmed leak their memory, which the device may still reach.
pub(crate) fn give_up<Q: QueueKind>(t: &dyn Transport, addr: PciAddr, queues: Vec<Q>) {
    if !stop(t) {
        log::error!("{addr}: the device did not reset; leaking the queues it was given");
        for mut q in queues {
            q.leak();
        }
    }
}

pub(crate) fn prev_power_of_two(n: u16) -> u16 {
    if n == 0 {
        0
    } else {
        1 << (15 - n.leading_zeros())
    }
}
