//! Drives one datapath operation of the e1000 driver on the fake device, for instruction
//! counting under `valgrind --tool=callgrind` (`cargo xtask bench --host` runs it).
//!
//! ```text
//! datapath <tx|rx|fwd> <BATCH> <PACKETS>
//! ```
//! The device's part runs on this thread between bursts (`FakeE1000::complete_tx` /
//! `complete_rx`) and writes no frame bytes, so the driver's calls — made through
//! `&mut dyn Nic`, never inlined, so callgrind can isolate them — are what is measured.

use std::time::Duration;
use zcnic::e1000::E1000;
use zcnic::{Config, Nic, Packet};
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (op, batch, packets) = match args.as_slice() {
        [_, op, b, n] => (
            op.clone(),
            b.parse().unwrap_or(32),
            n.parse().unwrap_or(100_000),
        ),
        _ => {
            eprintln!("usage: datapath <tx|rx|fwd> <BATCH> <PACKETS>");
            std::process::exit(2);
        }
    };
    let batch: usize = batch;
    let packets: u64 = packets;
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
    let mut nic: Box<dyn Nic> = Box::new(nic);
    let nic = nic.as_mut();
    let pool = nic.pool().clone();
    let mut burst: Vec<Packet> = Vec::with_capacity(batch);
    let mut done = 0u64;
    while done < packets {
        match op.as_str() {
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
    println!("datapath {op}: {done} packets at batch {batch}");
}
