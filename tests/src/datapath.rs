//! The e1000 datapath loops the benchmarks and `cargo xtask bench --host` measure, on the
//! fake device with its part played on the same thread (so only the driver is measured).

use crate::fake_e1000::{Behaviour, FakeE1000};
use crate::fake_virtio::{self, FakeVirtio};
use std::sync::Arc;
use std::time::Duration;
use zcnic::e1000::E1000;
use zcnic::virtio::{negotiate, DmaMem, VirtioNet};
use zcnic::{Config, FakeBar, FakeDma, Link, Mempool, Nic, Packet, PciAddr, Stats};
use zcnic_descriptors::virtio::SplitQueue;

/// A fake e1000 whose transmit side waits for [`FakeE1000::complete_tx`] and that never
/// reads frame bytes, and the driver on it.
pub fn manual_port() -> (FakeE1000, E1000<FakeBar>) {
    let dev = FakeE1000::start(Behaviour {
        read_frames: false,
        manual_tx: true,
        ..Behaviour::default()
    });
    let cfg = Config {
        link_timeout: Duration::from_millis(50),
        ..Config::default()
    };
    let nic = E1000::new(
        dev.bar.clone(),
        &dev.dma,
        "0000:00:02.0".parse().unwrap(),
        &cfg,
    )
    .expect("fake e1000 comes up");
    (dev, nic)
}

/// Moves `packets` 60-byte frames through `op` (`tx`, `rx` or `fwd`) in bursts of `batch`,
/// the device completing each burst. Calls go through `&mut dyn Nic`, as applications make
/// them (and so callgrind can find them).
pub fn drive(op: &str, dev: &FakeE1000, nic: &mut dyn Nic, batch: usize, packets: u64) {
    let pool = nic.pool().clone();
    let mut burst: Vec<Packet> = Vec::with_capacity(batch);
    let mut done = 0u64;
    while done < packets {
        match op {
            "tx" => {
                let have = burst.len();
                pool.alloc_batch(&mut burst, batch - have);
                for p in &mut burst[have..] {
                    let _ = p.set_len(60);
                }
                done += nic.tx_batch(&mut burst) as u64;
                dev.complete_tx();
            }
            "rx" => {
                dev.complete_rx(batch, 60);
                done += nic.rx_batch(&mut burst, batch) as u64;
                burst.clear();
            }
            _ => {
                dev.complete_rx(batch, 60);
                nic.rx_batch(&mut burst, batch);
                done += nic.tx_batch(&mut burst) as u64;
                burst.clear();
                dev.complete_tx();
            }
        }
    }
}

/// A fake modern virtio-net (split ring, EVENT_IDX) whose device thread drains transmit,
/// and the driver on it.
pub fn virtio_port() -> (FakeVirtio, VirtioNet<SplitQueue<DmaMem>>) {
    let dev = FakeVirtio::start(fake_virtio::Behaviour {
        queue_max: 256,
        ..fake_virtio::Behaviour::default()
    });
    let addr = "0000:00:03.0".parse().unwrap();
    let cfg = Config::default();
    let t = dev.transport();
    let features = negotiate(&t, &addr, &cfg, false).expect("features negotiated");
    let nic = VirtioNet::new(Box::new(t), features, &dev.dma, addr, &cfg)
        .expect("fake virtio-net comes up");
    (dev, nic)
}

/// Sends `packets` 60-byte frames in bursts of `batch` through virtio-net `tx_batch`; the
/// fake device drains each burst on its own thread before the next, so every call does a
/// burst's reclaim and a burst's sends (no empty polls in the count).
pub fn virtio_tx(dev: &FakeVirtio, nic: &mut dyn Nic, batch: usize, packets: u64) {
    let pool = nic.pool().clone();
    let mut burst: Vec<Packet> = Vec::with_capacity(batch);
    let mut done = 0u64;
    while done < packets {
        let have = burst.len();
        pool.alloc_batch(&mut burst, batch - have);
        for p in &mut burst[have..] {
            let _ = p.set_len(60);
        }
        done += nic.tx_batch(&mut burst) as u64;
        while dev.sent_count() < done {
            std::thread::yield_now();
        }
    }
}

/// A port that takes every frame at once and drops it: what is left of a `zcnic pktgen`
/// run on it is the generator's own work (frames, pool, pacing), without any driver.
#[derive(Debug)]
pub struct SinkNic {
    pool: Arc<Mempool>,
    sent: u64,
}

impl SinkNic {
    /// A sink with a pool of 4096 buffers in fake DMA memory.
    pub fn new() -> Self {
        Self {
            pool: Mempool::new(&FakeDma::new(), 4096).expect("a fake pool"),
            sent: 0,
        }
    }
}

impl Default for SinkNic {
    fn default() -> Self {
        Self::new()
    }
}

impl Nic for SinkNic {
    fn addr(&self) -> PciAddr {
        "0000:00:09.0".parse().unwrap()
    }
    fn driver(&self) -> &'static str {
        "sink"
    }
    fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }
    fn rx_batch(&mut self, _out: &mut Vec<Packet>, _max: usize) -> usize {
        0
    }
    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        let n = pkts.len();
        self.sent += n as u64;
        Packet::drop_all(pkts.drain(..));
        n
    }
    fn flush(&mut self) -> bool {
        true
    }
    fn stats(&mut self) -> Stats {
        Stats {
            tx_packets: self.sent,
            ..Stats::default()
        }
    }
    fn link(&self) -> Link {
        Link {
            up: true,
            speed_mbps: 0,
            full_duplex: true,
        }
    }
    fn mac(&self) -> [u8; 6] {
        [2, 0, 0, 0, 0, 9]
    }
    fn set_promisc(&mut self, _on: bool) {}
}
