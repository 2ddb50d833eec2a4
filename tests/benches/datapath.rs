//! Time per packet of the e1000 driver's tx, rx and fwd paths on the fake device at burst
//! sizes 1, 4, 16, 32 and 64. The device's part runs on the same thread and writes no
//! frame bytes. Instruction counts of the same loops: `cargo xtask bench --host`.
//!
//! `cargo bench -p zcnic-tests --bench datapath`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use zcnic_tests::datapath::{drive, manual_port};

const PACKETS: u64 = 10_000;

fn datapath(c: &mut Criterion) {
    for op in ["tx", "rx", "fwd"] {
        let (dev, mut nic) = manual_port();
        let mut g = c.benchmark_group(op);
        g.throughput(Throughput::Elements(PACKETS));
        for batch in [1usize, 4, 16, 32, 64] {
            g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
                b.iter(|| drive(op, &dev, &mut nic, batch, PACKETS))
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
