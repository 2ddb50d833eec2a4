//! Shared pieces of zcnic's integration tests: a thread that plays an e1000 against
//! [`zcnic::FakeBar`] + [`zcnic::FakeDma`], and helpers for the QEMU suite.

pub mod adversary;
pub mod conformance;
pub mod datapath;
pub mod fake_e1000;
pub mod fake_filter;
pub mod fake_igb;
pub mod fake_igb_irq;
pub mod fake_irq;
pub mod fake_tso;
pub mod fake_virtio;
pub mod idle_lines;
pub mod igb_adversary;
pub mod offload_frames;
pub mod qemu_suite;
pub mod tso_frames;
pub mod veth;
pub mod wake_race;

/// The Internet checksum's ones'-complement sum of `data` (RFC 1071), folded, not
/// complemented: what a device model's checksum engine adds up.
pub fn fake_csum(data: &[u8]) -> u16 {
    let mut acc: u64 = data
        .chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The zero-copy transmit tests of both fake devices: three frames, each a 42-byte header
/// from the pool filled with its index and a payload segment of application memory.
pub mod chains {
    use std::sync::Arc;
    use zcnic::{Mempool, Packet, Segment, UserRegion};

    /// Payload lengths: one short, one full-MTU, one jumbo.
    pub const LENS: [usize; 3] = [64, 1458, 8958];
    const HEAD: usize = 42;

    /// The three frames, payload `i` starting at byte `10 * i` of `region`.
    pub fn batch(pool: &Arc<Mempool>, region: &Arc<UserRegion>) -> Vec<Packet> {
        LENS.iter()
            .enumerate()
            .map(|(i, &len)| {
                let mut head = pool.alloc().expect("a free buffer");
                head.set_len(HEAD).unwrap();
                head.data_mut().fill(i as u8);
                head.attach(Segment::new(region, i * 10, len).unwrap());
                head
            })
            .collect()
    }

    /// The device sent those frames: each header, then its payload read in place from
    /// `payload` (the bytes the region was made from).
    pub fn assert_sent(sent: &[Vec<u8>], payload: &[u8]) {
        assert_eq!(sent.len(), LENS.len(), "frames sent");
        for (i, (f, len)) in sent.iter().zip(LENS).enumerate() {
            assert_eq!(f.len(), HEAD + len, "chain {i}");
            assert!(f[..HEAD].iter().all(|b| *b == i as u8), "header {i}");
            assert_eq!(
                &f[HEAD..],
                &payload[i * 10..i * 10 + len],
                "payload {i}, not copied"
            );
        }
    }
}
