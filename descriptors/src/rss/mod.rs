//! Receive-side scaling: the Toeplitz hash a NIC spreads flows with ([`Toeplitz`]) and the
//! redirection table that maps a hash to a queue ([`Reta`]).
//!
//! Both are pure computation, here beside the ring logic so that the drivers (programming
//! a device's key and table), the tools (spreading flows over queues) and the tests
//! (predicting the queue each frame must arrive on) share one implementation, checked
//! against the published vectors, and the drivers' crate needs no code of its own for it.
//!
//! ```
//! use zcnic_descriptors::rss::{Reta, Toeplitz};
//! use std::net::Ipv4Addr;
//! let reta = Reta::spread(4, 128).unwrap();
//! let hash = Toeplitz::default().ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
//! assert!(reta.queue(hash) < 4);
//! ```

mod reta;
mod toeplitz;

pub use reta::{Reta, RetaError};
pub use toeplitz::{Flow, HashType, HashTypes, Toeplitz, DEFAULT_KEY, KEY_LEN, L4, MAX_INPUT};
