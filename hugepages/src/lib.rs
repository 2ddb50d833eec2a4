//! DMA memory for zcnic.
//!
//! - [`DmaRegion`]: memory a device reaches by DMA, with the IOVA the device uses for it.
//! - [`DmaAllocator`]: where regions come from — [`HugepageAllocator`] (hugetlbfs 2 MiB pages,
//!   mapped for the device through an [`IovaMapper`] such as a VFIO container) or [`FakeDma`]
//!   (heap memory with IOVA = virtual address, for host tests).
//! - [`DmaRing`]: a ring of 16-byte descriptors in a region, accessed only as atomic words.
//! - [`Mempool`] and [`Packet`]: fixed-size packet buffers; dropping a `Packet` returns its
//!   buffer to the pool.
//! - [`PoolCache`]: a queue's (a thread's) cache of free buffers, which touches the pool's
//!   shared stack only in batches.
//!
//! ```
//! use zcnic_hugepages::{FakeDma, Mempool};
//! let pool = Mempool::new(&FakeDma::new(), 64).unwrap();
//! let mut pkt = pool.alloc().unwrap();
//! pkt.set_len(60).unwrap();
//! pkt.data_mut()[..6].copy_from_slice(&[0xff; 6]);
//! assert_eq!(pool.free_count(), 63);
//! drop(pkt);
//! assert_eq!(pool.free_count(), 64);
//! ```

mod cache;
mod chain;
mod fake;
mod freestack;
mod hugetlbfs;
mod offload;
mod pagemap;
mod pool;
mod region;
mod ring;
mod user;

pub use cache::{PoolCache, CACHE_SIZE};
pub use chain::Segments;
pub use fake::FakeDma;
pub use freestack::{FreeStack, MAX_BUFFERS};
pub use hugetlbfs::{
    hugetlbfs_mount, mount_hugetlbfs, HugepageAllocator, HugepageStatus, HUGEPAGE,
};
pub use offload::{Checksum, L4Csum, RxOffload, TxOffload};
pub use pagemap::physical_address;
pub use pool::{Mempool, Packet, TooLong, DATA_ROOM, HEADROOM};
pub use region::{
    new_space_id, Access, AddressSpace, DmaAllocator, DmaRegion, Domain, IovaMapper, Iovas,
};
pub use ring::{DmaRing, Words};
pub use user::{Segment, UserRegion};

use std::path::PathBuf;

/// Errors of the DMA memory layer. Each says what to run to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    /// Not enough free 2 MiB hugepages.
    #[error(
        "need {needed} free 2 MiB hugepages but only {free} are free: run `zcnic hugepages --reserve {suggest}`"
    )]
    TooFewHugepages {
        /// Pages this allocation needs.
        needed: usize,
        /// Pages free now.
        free: usize,
        /// A reservation that would satisfy it.
        suggest: usize,
    },
    /// No hugetlbfs is mounted.
    #[error("no hugetlbfs is mounted: run `zcnic hugepages --mount` (mounts /dev/hugepages)")]
    NotMounted,
    /// A file or system call failed.
    #[error("{what} {path}: {source}{}", if source.kind() == std::io::ErrorKind::PermissionDenied { ": run as root" } else { "" })]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The IOMMU refused to map memory for the device.
    #[error("mapping {len} bytes for DMA failed: {reason}")]
    Map {
        /// Bytes to map.
        len: usize,
        /// Why, with the fix.
        reason: String,
    },
    /// A request that can never succeed (zero size, too large).
    #[error("invalid DMA request: {0}")]
    Invalid(String),
}
