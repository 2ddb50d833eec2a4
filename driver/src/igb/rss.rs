//! igb receive-side scaling (82576 datasheet §7.1.2.8): the Toeplitz key in RSSRK, the
//! hashed packet types in MRQC, the 128-entry redirection table in RETA. Control path.

use super::port::IgbPort;
use super::regs;
use crate::mmio::Bar;
use crate::Error;
use zcnic_descriptors::rss::{HashTypes, Reta};

/// MRQC's hash-field enables for the packet types `types`. An IPv6 type sets both its
/// bits: QEMU's model only looks at the `_EX` one for TCP over IPv6.
pub(crate) fn mrqc_fields(types: HashTypes) -> u32 {
    [
        (HashTypes::IPV4, regs::MRQC_IPV4),
        (HashTypes::TCP_V4, regs::MRQC_TCP_IPV4),
        (HashTypes::UDP_V4, regs::MRQC_UDP_IPV4),
        (HashTypes::IPV6, regs::MRQC_IPV6 | regs::MRQC_IPV6_EX),
        (
            HashTypes::TCP_V6,
            regs::MRQC_TCP_IPV6 | regs::MRQC_TCP_IPV6_EX,
        ),
        (
            HashTypes::UDP_V6,
            regs::MRQC_UDP_IPV6 | regs::MRQC_UDP_IPV6_EX,
        ),
    ]
    .iter()
    .filter(|(t, _)| types.contains(*t))
    .fold(0, |m, (_, bit)| m | bit)
}

impl<B: Bar> IgbPort<B> {
    /// Programs RSS over `queues` queues before receive starts: key, table, hash types,
    /// and the hash in each write-back (RXCSUM.PCSD). One queue turns RSS off (MRQC 0), so
    /// every frame lands on queue 0 whatever its type.
    pub(crate) fn start_rss(&mut self, queues: u16) -> Result<(), Error> {
        if queues == 1 {
            self.bar.write32(regs::MRQC, 0);
            return Ok(());
        }
        for (i, word) in self.rss.key.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            self.bar.write32(regs::RSSRK + 4 * i as u32, word);
        }
        let reta = match self.rss.reta.clone() {
            Some(r) => r,
            None => Reta::spread(queues, regs::RETA_LEN).map_err(|e| self.bad(e))?,
        };
        self.program_reta(&reta)?;
        let rxcsum = self.bar.read32(regs::RXCSUM);
        self.bar.write32(regs::RXCSUM, rxcsum | regs::RXCSUM_PCSD);
        let mrqc = regs::MRQC_RSS | mrqc_fields(self.rss.types);
        self.bar.write32(regs::MRQC, mrqc);
        Ok(())
    }

    /// Writes `reta` into the device's table: 128 entries naming queues this port has.
    pub(crate) fn program_reta(&mut self, reta: &Reta) -> Result<(), Error> {
        let queues = self.rx_counters.len();
        if reta.len() != regs::RETA_LEN {
            return Err(self.bad(format!(
                "a redirection table of {} entries (the 82576 has {})",
                reta.len(),
                regs::RETA_LEN
            )));
        }
        if reta.queues() > queues {
            return Err(self.bad(format!(
                "a redirection table naming queue {} on a port of {queues} queues",
                reta.queues() - 1
            )));
        }
        for (i, four) in reta.entries().chunks_exact(4).enumerate() {
            let word =
                u32::from_le_bytes([four[0] as u8, four[1] as u8, four[2] as u8, four[3] as u8]);
            self.bar.write32(regs::RETA + 4 * i as u32, word);
        }
        self.rss.reta = Some(reta.clone());
        Ok(())
    }

    fn bad(&self, what: impl std::fmt::Display) -> Error {
        Error::Io(format!("{}: igb RSS: {what}", self.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hash_type_has_its_own_mrqc_bit() {
        assert_eq!(mrqc_fields(HashTypes::empty()), 0);
        assert_eq!(mrqc_fields(HashTypes::all()), 0x01FF_0000);
        assert_eq!(mrqc_fields(HashTypes::UDP_V4), 1 << 22);
    }
}
