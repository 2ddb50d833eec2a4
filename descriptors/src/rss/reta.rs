//! The RSS redirection table (DPDK's `reta`, virtio-net's `indirection_table`).

/// Why a redirection table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetaError {
    /// No entries, or more than [`Reta::MAX_LEN`].
    Len(usize),
    /// No queues to spread over.
    NoQueues,
}

impl std::fmt::Display for RetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetaError::Len(n) => write!(
                f,
                "a redirection table of {n} entries (1 to {})",
                Reta::MAX_LEN
            ),
            RetaError::NoQueues => write!(f, "a redirection table over no queues"),
        }
    }
}

impl std::error::Error for RetaError {}

/// Which queue each hash goes to: `entries[hash % len]`, DPDK's reta semantics.
///
/// Devices index the table with the hash's low bits (`hash & (len - 1)`, virtio 1.2
/// §5.1.6.4.3.2 with its `indirection_table_mask`; DPDK's drivers alike), which is the same
/// when the length is a power of two, as device tables are; [`Reta::spread`] makes one.
///
/// ```
/// use zcnic_descriptors::rss::Reta;
/// let mut reta = Reta::spread(2, 8).unwrap();
/// assert_eq!(reta.entries(), &[0, 1, 0, 1, 0, 1, 0, 1]);
/// assert_eq!(reta.queue(0x323e_8fc2), 0);
/// reta.set(2, 1);
/// assert_eq!(reta.queue(10), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reta {
    entries: Vec<u16>,
}

impl Reta {
    /// Most entries in a table (virtio-net's indirection table holds up to 2^15; DPDK's
    /// NICs up to 512).
    pub const MAX_LEN: usize = 1 << 15;

    /// A table of these entries (queue numbers).
    pub fn new(entries: Vec<u16>) -> Result<Self, RetaError> {
        if entries.is_empty() || entries.len() > Self::MAX_LEN {
            return Err(RetaError::Len(entries.len()));
        }
        Ok(Self { entries })
    }

    /// `len` entries naming queues `0..queues` round-robin (entry `i` is `i % queues`), the
    /// default table of DPDK's drivers and Linux's `ethtool_rxfh_indir_default`.
    pub fn spread(queues: u16, len: usize) -> Result<Self, RetaError> {
        if queues == 0 {
            return Err(RetaError::NoQueues);
        }
        Self::new((0..len).map(|i| (i % usize::from(queues)) as u16).collect())
    }

    /// The queue for `hash`.
    #[inline]
    pub fn queue(&self, hash: u32) -> u16 {
        // `new` refuses an empty table, so the modulus is never zero.
        self.entries[hash as usize % self.entries.len()]
    }

    /// Points entry `index` at `queue`; false (nothing changed) when there is no such entry.
    pub fn set(&mut self, index: usize, queue: u16) -> bool {
        match self.entries.get_mut(index) {
            Some(e) => {
                *e = queue;
                true
            }
            None => false,
        }
    }

    /// The entries.
    pub fn entries(&self) -> &[u16] {
        &self.entries
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a table has at least one entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One more than the highest queue named: how many queues the port needs for it.
    pub fn queues(&self) -> usize {
        self.entries.iter().max().map_or(0, |&q| usize::from(q) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert_eq!(Reta::new(Vec::new()), Err(RetaError::Len(0)));
        assert_eq!(
            Reta::new(vec![0; Reta::MAX_LEN + 1]),
            Err(RetaError::Len(Reta::MAX_LEN + 1))
        );
        assert_eq!(Reta::spread(0, 128), Err(RetaError::NoQueues));
        assert!(Reta::spread(3, 0).is_err());
        let e = Reta::new(Vec::new()).unwrap_err().to_string();
        assert!(e.contains("0 entries"), "{e}");
    }

    /// `queue` is `entries[hash % len]`, also for a length that is not a power of two and
    /// for hashes with the top bit set; on a power-of-two table it equals the device's mask.
    #[test]
    fn queue_is_the_entry_at_hash_mod_len() {
        let reta = Reta::new(vec![3, 1, 4, 1, 5]).unwrap();
        for (hash, queue) in [(0, 3), (2, 4), (5, 3), (9, 5), (u32::MAX, 3)] {
            assert_eq!(reta.queue(hash), queue, "hash {hash:#x}");
        }
        assert_eq!(reta.queues(), 6);
        let spread = Reta::spread(4, 128).unwrap();
        for hash in [0u32, 0x7f, 0x80, 0xdead_beef, u32::MAX] {
            let masked = spread.entries()[(hash & 127) as usize];
            assert_eq!(spread.queue(hash), masked);
        }
        assert_eq!((spread.len(), spread.queues()), (128, 4));
    }

    #[test]
    fn set_changes_one_entry() {
        let mut reta = Reta::spread(2, 4).unwrap();
        assert!(reta.set(3, 7));
        assert!(!reta.set(4, 7), "no entry 4");
        assert_eq!(reta.entries(), &[0, 1, 0, 7]);
    }
}
