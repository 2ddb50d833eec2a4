//! The e1000 datapath loops the benchmarks and `cargo xtask bench --host` measure, on the
//! fake device with its part played on the same thread (so only the driver is measured).

use crate::fake_e1000::{Behaviour, FakeE1000};
use std::time::Duration;
use zcnic::e1000::E1000;
use zcnic::{Config, FakeBar, Nic, Packet};

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
