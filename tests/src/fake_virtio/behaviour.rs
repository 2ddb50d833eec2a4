//! What a test asks of the fake virtio-net: its [`Behaviour`] (features, rings, queue
//! pairs, notifications, faults it plays) and what its receive side does next
//! ([`Inject`]).

use super::*;

/// Which notifications the device asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// Every one: `used.flags` 0 / packed ENABLE; with EVENT_IDX, split `avail_event` and the
    /// packed DESC event follow what the device consumed ("kick me once you add past that").
    Wanted,
    /// None, the device polls: split VIRTQ_USED_F_NO_NOTIFY (with EVENT_IDX, an
    /// `avail_event` already passed), packed RING_EVENT_FLAGS_DISABLE.
    Suppressed,
}

/// Options for the fake.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Maximum size of each queue.
    pub queue_max: u16,
    /// Offer VIRTIO_F_EVENT_IDX (bit 29).
    pub event_idx: bool,
    /// Offer VIRTIO_F_RING_PACKED (bit 34).
    pub packed: bool,
    /// Report VIRTIO_NET_S_LINK_UP.
    pub link_up: bool,
    /// Notification policy on both queues.
    pub notify: Notify,
    /// Offer a control queue with receive filters (VIRTIO_NET_F_CTRL_VQ, CTRL_RX).
    pub ctrl: bool,
    /// Queue pairs (1 to [`MAX_PAIRS`]); more than one offers VIRTIO_NET_F_MQ (with
    /// `ctrl`).
    pub pairs: u16,
    /// Offer RSS and the hash report (VIRTIO_NET_F_RSS, HASH_REPORT).
    pub rss: bool,
    /// Clear FEATURES_OK whatever the driver accepts.
    pub refuse_features: bool,
    /// A legacy device: no VERSION_1 (nor ACCESS_PLATFORM) offered, DRIVER_OK without
    /// FEATURES_OK, the 10-byte header; the driver reaches it through
    /// [`FakeVirtio::any_transport`] (a [`LegacyView`]).
    pub legacy: bool,
    /// Offer VIRTIO_F_ANY_LAYOUT (bit 27). A legacy device that did not negotiate it
    /// counts every chain whose header shares a descriptor with frame bytes as
    /// `misframed` (`layout.rs`).
    pub any_layout: bool,
    /// Act on a queue only once the driver has notified it, as a device that sleeps until
    /// kicked does, instead of polling the rings. Woken, the device takes chains until the
    /// ring is empty; then it asks for the next kick where it stopped (`used.flags` 0, and
    /// with EVENT_IDX `avail_event` / the packed DESC event at its position: the driver
    /// kicks only when it makes that entry available, so the device must keep it current),
    /// looks once more, since the driver may have published before it could see the
    /// request (virtio 1.1 §2.6.7.1, §2.7.10), and sleeps. A driver that publishes without
    /// the kick the device asked for stalls here. Use with [`Notify::Wanted`].
    pub only_when_notified: bool,
    /// Offer VIRTIO_NET_F_MRG_RXBUF (bit 15): accepted, a frame spreads over as many
    /// receive buffers as it needs (`fake_virtio/mergeable.rs`).
    pub mrg_rxbuf: bool,
    /// Offer VIRTIO_NET_F_MTU (bit 3) with this `mtu` in the configuration.
    pub mtu: Option<u16>,
    /// Offer the checksum offloads (VIRTIO_NET_F_CSUM, GUEST_CSUM): with CSUM negotiated
    /// a transmitted NEEDS_CSUM frame has its checksum completed before it is recorded
    /// (`fake_virtio/csum.rs`).
    pub csum: bool,
    /// Offer VIRTIO_NET_F_HOST_TSO4 (with `csum`): a GSO_TCPV4 frame is cut into the
    /// segments that are recorded, as the host's Linux cuts it (`fake_virtio/csum.rs`).
    pub tso: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            queue_max: 64,
            event_idx: true,
            packed: false,
            link_up: true,
            notify: Notify::Wanted,
            ctrl: false,
            pairs: 1,
            rss: false,
            refuse_features: false,
            legacy: false,
            any_layout: false,
            only_when_notified: false,
            mrg_rxbuf: false,
            mtu: None,
            csum: false,
            tso: false,
        }
    }
}

impl Behaviour {
    /// The features the device offers.
    pub fn offered(&self) -> u64 {
        let mut f = feature::VERSION_1 | feature::ACCESS_PLATFORM | feature::MAC | feature::STATUS;
        if self.event_idx {
            f |= feature::EVENT_IDX;
        }
        if self.packed {
            f |= feature::RING_PACKED;
        }
        if self.ctrl {
            f |= feature::CTRL_VQ | feature::CTRL_RX;
        }
        if self.ctrl && self.pairs > 1 {
            f |= feature::MQ;
        }
        if self.rss {
            f |= feature::RSS | feature::HASH_REPORT;
        }
        if self.any_layout {
            f |= feature::ANY_LAYOUT;
        }
        if self.mrg_rxbuf {
            f |= feature::MRG_RXBUF;
        }
        if self.mtu.is_some() {
            f |= feature::MTU;
        }
        if self.csum {
            f |= feature::CSUM | feature::GUEST_CSUM;
        }
        if self.tso {
            f |= feature::HOST_TSO4;
        }
        if self.legacy {
            f &= !(feature::VERSION_1 | feature::ACCESS_PLATFORM);
        }
        f
    }

    /// The device's queues: its pairs, and the control queue after them.
    pub fn queues(&self) -> usize {
        2 * usize::from(self.pairs.clamp(1, MAX_PAIRS)) + usize::from(self.ctrl)
    }
}

/// What the device does next on its receive queue, in order.
#[derive(Debug, Clone)]
pub enum Inject {
    /// Receive this frame: 12 zero header bytes and the frame, used len = 12 + frame.
    Frame(Vec<u8>),
    /// Take the next buffer and report it under this id (packed ids are 16 bits: the low
    /// half is written). The buffer is lost to the driver.
    BadId(u32),
    /// Receive this frame, and report the same buffer again in place of the next one (which
    /// is lost), both made visible by one index or flag store.
    Duplicate(Vec<u8>),
    /// Take the next buffer and report this used length, writing no data.
    Length(u32),
    /// Split only: move `used.idx` a queue size plus one past what was used, until the next
    /// injection is written (which puts it back).
    IndexJump,
    /// Receive this frame with this RSS hash and report type in its header (with
    /// HASH_REPORT negotiated; otherwise as [`Inject::Frame`]).
    Hashed(Vec<u8>, u32, u16),
    /// With MRG_RXBUF: receive this frame over the buffers it needs, but write this
    /// `num_buffers` in its header.
    NumBuffers(Vec<u8>, u16),
    /// With MRG_RXBUF: receive this frame, but publish only the used entries of its first
    /// this many buffers; the rest wait for [`Inject::Rest`].
    Partial(Vec<u8>, usize),
    /// Publish the used entries a [`Inject::Partial`] held back.
    Rest,
    /// Receive this frame with this header `flags` ([`NEEDS_CSUM`], [`DATA_VALID`]) and
    /// `csum_start` and `csum_offset`.
    Csum(Vec<u8>, u8, u16, u16),
}
