//! Cost per frame of zero-copy transmit against payload size, on the fake e1000. The
//! device's part runs on the same thread after each burst and only walks descriptors
//! (`FakeE1000::complete_tx`), so it costs the same per frame whatever the size: if nothing
//! is copied, 64 B, 1500 B and 9000 B payloads cost the same. The `copy` group writes the
//! payload into the pool buffer instead, for contrast.
//!
//! `cargo bench -p zcnic-tests --bench zero_copy`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;
use zcnic::e1000::E1000;
use zcnic::{FakeBar, Nic, Packet, Segment, UserRegion};
use zcnic_tests::datapath::manual_port;
use zcnic_tests::fake_e1000::FakeE1000;

const BURST: usize = 32;

/// Sends `frames` frames, each built by `fill`, in bursts; the fake device completes
/// each burst.
fn send(dev: &FakeE1000, nic: &mut E1000<FakeBar>, frames: u64, mut fill: impl FnMut(&mut Packet)) {
    let pool = nic.pool().clone();
    let mut batch: Vec<Packet> = Vec::with_capacity(BURST);
    let mut sent = 0;
    while sent < frames {
        let have = batch.len();
        pool.alloc_batch(&mut batch, BURST - have);
        batch[have..].iter_mut().for_each(&mut fill);
        sent += nic.tx_batch(&mut batch) as u64;
        dev.complete_tx();
    }
}

fn zero_copy(c: &mut Criterion) {
    let (dev, mut nic) = manual_port();
    let region = Arc::new(UserRegion::with_data(&vec![0x5a; 9000], dev.dma.mapper()).unwrap());
    let mut g = c.benchmark_group("zero_copy");
    g.throughput(Throughput::Elements(10_000));
    for payload in [64usize, 1500, 9000] {
        g.bench_with_input(
            BenchmarkId::from_parameter(payload),
            &payload,
            |b, &payload| {
                b.iter(|| {
                    send(&dev, &mut nic, 10_000, |p| {
                        let _ = p.set_len(42);
                        p.attach(Segment::new(&region, 0, payload).unwrap());
                    })
                })
            },
        );
    }
    g.finish();
}

fn copy(c: &mut Criterion) {
    let (dev, mut nic) = manual_port();
    let source = vec![0x5a; 1542];
    let mut g = c.benchmark_group("copy");
    g.throughput(Throughput::Elements(10_000));
    for payload in [64usize, 1500] {
        g.bench_with_input(
            BenchmarkId::from_parameter(payload),
            &payload,
            |b, &payload| {
                b.iter(|| {
                    send(&dev, &mut nic, 10_000, |p| {
                        let _ = p.set_len(42 + payload);
                        p.data_mut().copy_from_slice(&source[..42 + payload]);
                    })
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = zero_copy, copy
}
criterion_main!(benches);
