//! Settings of a port, shared by every driver.

use std::time::Duration;

/// virtio ring format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingChoice {
    /// Packed when the device offers it, split otherwise.
    #[default]
    Auto,
    /// Split virtqueues (virtio 1.1 §2.6).
    Split,
    /// Packed virtqueues (virtio 1.1 §2.7); an error if the device lacks them.
    Packed,
}

/// Ring and pool sizes, timeouts and options for one port, whatever the NIC.
#[derive(Debug, Clone)]
pub struct Config {
    /// Receive descriptors (power of two; e1000: 8..=4096, virtio: up to the device's maximum).
    pub rx_ring: u32,
    /// Transmit descriptors (power of two; e1000: 32..=4096, virtio: up to the device's maximum).
    pub tx_ring: u32,
    /// Packet buffers in the port's pool: enough for a full RX ring, a full TX ring and what
    /// the application holds.
    pub pool: usize,
    /// How long to wait for the device to finish a reset.
    pub reset_timeout: Duration,
    /// How long to wait for link up before carrying on with the link down.
    pub link_timeout: Duration,
    /// Receive every frame, not only those for our MAC and broadcast.
    pub promisc: bool,
    /// virtio: which ring format to use.
    pub ring: RingChoice,
    /// Queue pairs for [`crate::open_port`] (1 by default; the one-queue [`crate::Nic`]
    /// always uses one).
    pub queues: u16,
    /// How received frames spread over the queues when there are several.
    pub rss: crate::port::Rss,
    /// Largest IP packet the port sends and receives (1500 by default): frames of up to
    /// `mtu + 18` bytes (Ethernet header and a VLAN tag) without the FCS. Above
    /// [`DATA_ROOM`](zcnic_hugepages::DATA_ROOM) − 18 a frame spans several buffers, a
    /// [`Packet`](zcnic_hugepages::Packet) chain (see `Packet::next`). A NIC that cannot
    /// take it refuses to open ([`Error::Mtu`](crate::Error::Mtu)).
    pub mtu: usize,
    /// Strip 802.1Q tags from received frames and report them with each frame
    /// ([`Packet::vlan`](zcnic_hugepages::Packet::vlan)), where the NIC can (e1000, igb:
    /// CTRL.VME). Off by default: frames arrive as they were on the wire.
    pub vlan_strip: bool,
    /// AF_XDP (`xdp:IFACE`): bind in copy mode even where zero copy would work (DPDK's
    /// af_xdp `force_copy`), with the pool in ordinary memory rather than hugepages.
    pub xdp_copy: bool,
}

/// Bytes a frame adds to the IP packet: the Ethernet header and one VLAN tag (the FCS is
/// the NIC's).
pub const FRAME_OVERHEAD: usize = 18;

impl Config {
    /// The longest frame the MTU allows, without the FCS.
    pub fn max_frame(&self) -> usize {
        self.mtu + FRAME_OVERHEAD
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rx_ring: 512,
            tx_ring: 512,
            pool: 4096,
            reset_timeout: Duration::from_millis(500),
            link_timeout: Duration::from_secs(5),
            promisc: false,
            ring: RingChoice::Auto,
            queues: 1,
            rss: crate::port::Rss::default(),
            mtu: 1500,
            vlan_strip: false,
            xdp_copy: false,
        }
    }
}
