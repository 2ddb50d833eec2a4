//! Intel 82576 (igb) driver: the server NIC family of 82575/82576/I350, whose advanced
//! descriptors and register layout the 82599 (ixgbe) inherited. QEMU 8.0+ emulates the
//! 82576 (`-device igb`, 8086:10c9). Up to 8 queue pairs with RSS ([`IgbPort`]), or one
//! behind the [`Nic`](crate::Nic) trait ([`Igb`]).
//!
//! - `regs.rs`: register offsets and bits (data only)
//! - `init.rs`: reset, MAC, PHY and link, queue and RSS setup (control path)
//! - `port.rs`: the port's control plane, and the one-queue [`Nic`](crate::Nic) over it
//! - `rx.rs`: the receive queue handle's `rx_batch` (datapath)
//! - `tx.rs`: the transmit queue handle's `tx_batch` and clean-up (datapath)
//! - `irq.rs`: an MSI-X vector per receive queue (and one for link changes), armed only to
//!   sleep; without MSI-X, MSI or INTx in legacy mode for a one-queue port
//!
//! Shared with the e1000 and no more: the statistics registers' offsets and the code that
//! learns whether each clears on read, the link decode of STATUS, and the clean-up batch.

mod init;
mod irq;
mod port;
pub mod regs;
mod rss;
mod rx;
mod tx;

pub use crate::Config;
pub use port::{Igb, IgbPort};
pub use rx::IgbRxQueue;
pub use tx::IgbTxQueue;

/// Queue pairs zcnic drives on an 82576 (it has 16 of each; RSS spreads over at most 8).
pub const MAX_QUEUES: u16 = 8;
