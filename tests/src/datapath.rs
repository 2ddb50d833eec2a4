//! The e1000 datapath loops the benchmarks and `cargo xtask bench --host` measure, on the
//! fake device with its part played on the same thread (so only the driver is measured).

use crate::fake_e1000::{Behaviour, FakeE1000};
use crate::fake_virtio::{self, FakeVirtio};
use crate::igb_adversary::{DevBar, Device as IgbDevice, Step};
use std::sync::Arc;
use std::time::Duration;
use zcnic::e1000::E1000;
use zcnic::igb::Igb;
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

/// Moves `packets` 60-byte frames through `op` (`tx`, `rx` or `fwd`, or `tx-recycle`,
/// `rx-recycle` or `fwd-recycle` through the recycling calls) in bursts of `batch`,
/// the device completing each burst. Calls go through `&mut dyn Nic`, as applications make
/// them (and so callgrind can find them). Returns the packets processed: at least
/// `packets`, as the last burst may go past it.
pub fn drive(op: &str, dev: &FakeE1000, nic: &mut dyn Nic, batch: usize, packets: u64) -> u64 {
    let pool = nic.pool().clone();
    let mut burst: Vec<Packet> = Vec::with_capacity(batch);
    let mut recycled: Vec<Packet> = Vec::new();
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
            "tx-recycle" => {
                // Packets the driver handed back are sent again as they are.
                let have = burst.len();
                let take = (batch - have).min(recycled.len());
                burst.extend(recycled.drain(recycled.len() - take..));
                let have = burst.len();
                pool.alloc_batch(&mut burst, batch - have);
                for p in &mut burst[have..] {
                    let _ = p.set_len(60);
                }
                done += nic.tx_batch_recycle(&mut burst, &mut recycled) as u64;
                dev.complete_tx();
            }
            "rx" => {
                dev.complete_rx(batch, 60);
                done += nic.rx_batch(&mut burst, batch) as u64;
                burst.clear();
            }
            "rx-recycle" => {
                // Frames read are handed back as the next refills.
                dev.complete_rx(batch, 60);
                done += nic.rx_batch_recycle(&mut burst, batch, &mut recycled) as u64;
                recycled.append(&mut burst);
            }
            "fwd-recycle" => {
                // What is sent comes back and is received into again: no pool at all.
                dev.complete_rx(batch, 60);
                nic.rx_batch_recycle(&mut burst, batch, &mut recycled);
                done += nic.tx_batch_recycle(&mut burst, &mut recycled) as u64;
                burst.clear();
                dev.complete_tx();
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
    done
}

/// An igb on the adversary's register file, its device part played on this thread by
/// [`igb_drive`]: only the driver runs in between.
pub fn igb_manual_port() -> (IgbDevice, Igb<DevBar>) {
    let bar = DevBar::new();
    let dma = FakeDma::new();
    let cfg = Config {
        link_timeout: Duration::from_millis(50),
        ..Config::default()
    };
    let nic = Igb::new(bar.clone(), &dma, "0000:00:02.0".parse().unwrap(), &cfg)
        .expect("fake igb comes up");
    let dev = IgbDevice {
        regs: bar.regs,
        dma,
        queue: 0,
        rx_size: cfg.rx_ring,
        tx_size: cfg.tx_ring,
    };
    (dev, nic)
}

/// [`drive`] for the igb: `igb-tx`, `igb-rx` or `igb-fwd`, the device writing back each
/// burst's descriptors (DD on every transmit slot; `batch` good 60-byte receives).
pub fn igb_drive(op: &str, dev: &IgbDevice, nic: &mut dyn Nic, batch: usize, packets: u64) -> u64 {
    let pool = nic.pool().clone();
    let mut burst: Vec<Packet> = Vec::with_capacity(batch);
    let receive = Step::RxGood {
        n: batch.min(255) as u8,
        len: 60,
        csum: 0,
    };
    let mut done = 0u64;
    while done < packets {
        match op {
            "igb-tx" => {
                let have = burst.len();
                pool.alloc_batch(&mut burst, batch - have);
                for p in &mut burst[have..] {
                    let _ = p.set_len(60);
                }
                done += nic.tx_batch(&mut burst) as u64;
                dev.finish_tx();
            }
            "igb-rx" => {
                dev.act(&receive);
                done += nic.rx_batch(&mut burst, batch) as u64;
                burst.clear();
            }
            _ => {
                dev.act(&receive);
                nic.rx_batch(&mut burst, batch);
                done += nic.tx_batch(&mut burst) as u64;
                burst.clear();
                dev.finish_tx();
            }
        }
    }
    done
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
/// burst's reclaim and a burst's sends (no empty polls in the count). Returns the frames
/// sent.
pub fn virtio_tx(dev: &FakeVirtio, nic: &mut dyn Nic, batch: usize, packets: u64) -> u64 {
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
    done
}

/// Receives `packets` 60-byte frames in bursts of `batch` through virtio-net `rx_batch`:
/// the fake device writes each burst on its own thread and the driver reads it once all is
/// used, so every call reads a whole burst (no empty polls in the count) and refills its
/// ring. Returns the frames received.
pub fn virtio_rx(dev: &FakeVirtio, nic: &mut dyn Nic, batch: usize, packets: u64) -> u64 {
    let frame = vec![0x5a; 60];
    let mut burst: Vec<Packet> = Vec::with_capacity(batch);
    let (mut done, mut injected) = (0u64, 0u64);
    while done < packets {
        for _ in 0..batch {
            dev.inject(fake_virtio::Inject::Frame(frame.clone()));
        }
        injected += batch as u64;
        while dev.counts().rx_used < injected {
            std::thread::yield_now();
        }
        done += nic.rx_batch(&mut burst, batch) as u64;
        burst.clear();
    }
    done
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
    /// As a driver whose device sent everything at once.
    fn tx_batch_recycle(&mut self, pkts: &mut Vec<Packet>, done: &mut Vec<Packet>) -> usize {
        let n = pkts.len();
        self.sent += n as u64;
        done.append(pkts);
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

/// Sends frames `0..total` (`frame(seq)`, whose first four bytes are `seq`) through
/// [`Nic::tx_batch_recycle`], building each in a packet the driver handed back when there
/// is one, as pktgen does. Checks that every packet comes back exactly as it was sent, and
/// at most once. Returns how many frames went out in a recycled packet.
pub fn send_recycling(nic: &mut dyn Nic, total: u32, frame: impl Fn(u32) -> Vec<u8>) -> usize {
    let pool = nic.pool().clone();
    let (mut batch, mut done, mut spare) = (Vec::new(), Vec::new(), Vec::new());
    let mut back = std::collections::HashSet::new();
    let (mut seq, mut reused) = (0u32, 0usize);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while seq < total || !batch.is_empty() {
        for p in done.drain(..) {
            let p: Packet = p;
            let got = u32::from_le_bytes(p.data()[..4].try_into().expect("4 bytes"));
            assert!(p.data() == frame(got), "frame {got} came back changed");
            assert!(back.insert(got), "frame {got} came back twice");
            spare.push(p);
        }
        while batch.len() < 32 && seq < total {
            let f = frame(seq);
            let p = match spare.pop() {
                Some(mut p) => {
                    p.set_len(f.len()).expect("room for the frame");
                    p.data_mut().copy_from_slice(&f);
                    reused += 1;
                    p
                }
                None => pool.alloc_copy(&f).expect("a free buffer"),
            };
            batch.push(p);
            seq += 1;
        }
        if nic.tx_batch_recycle(&mut batch, &mut done) == 0 {
            assert!(
                std::time::Instant::now() < end,
                "transmit stuck before frame {seq}"
            );
            std::thread::yield_now();
        }
    }
    reused
}
