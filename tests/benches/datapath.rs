//! Time per packet of the e1000 driver's tx, rx and fwd paths on the fake device at burst
//! sizes 1, 4, 16, 32 and 64. The device's part runs on the same thread and writes no
//! frame bytes. Instruction counts of the same loops: `cargo xtask bench --host`.
//!
//! `cargo bench -p zcnic-tests --bench datapath`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use zcnic::e1000::E1000;
use zcnic::{Config, FakeBar, Nic, Packet};
use zcnic_tests::fake_e1000::{Behaviour, FakeE1000};

const PACKETS: u64 = 10_000;

fn port() -> (FakeE1000, E1000<FakeBar>) {
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

fn run(op: &str, dev: &FakeE1000, nic: &mut E1000<FakeBar>, batch: usize, burst: &mut Vec<Packet>) {
    let pool = nic.pool().clone();
    let mut done = 0u64;
    while done < PACKETS {
        match op {
            "tx" => {
                let have = burst.len();
                pool.alloc_batch(burst, batch - have);
                for p in &mut burst[have..] {
                    let _ = p.set_len(60);
                }
                done += nic.tx_batch(burst) as u64;
                dev.complete_tx();
            }
            "rx" => {
                dev.complete_rx(batch, 60);
                done += nic.rx_batch(burst, batch) as u64;
                burst.clear();
            }
            _ => {
                dev.complete_rx(batch, 60);
                nic.rx_batch(burst, batch);
                done += nic.tx_batch(burst) as u64;
                burst.clear();
                dev.complete_tx();
            }
        }
    }
}

fn datapath(c: &mut Criterion) {
    for op in ["tx", "rx", "fwd"] {
        let (dev, mut nic) = port();
        let mut burst = Vec::with_capacity(64);
        let mut g = c.benchmark_group(op);
        g.throughput(Throughput::Elements(PACKETS));
        for batch in [1usize, 4, 16, 32, 64] {
            g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
                b.iter(|| run(op, &dev, &mut nic, batch, &mut burst))
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(1));
    targets = datapath
}
criterion_main!(benches);
