//! A port is `Send`: opened on one thread, moved into a worker and driven there (issue 17's
//! first step to one queue per core), for both drivers on their fake devices. The worker
//! sends and receives through `Box<dyn Nic>`, as an application does, then closes the port;
//! the pool is full afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::e1000::{Config, E1000};
use zcnic::virtio::{negotiate, DmaMem, VirtioNet};
use zcnic::{Mempool, Nic, Packet};
use zcnic_descriptors::virtio::{PackedQueue, SplitQueue};
use zcnic_tests::{fake_e1000, fake_virtio};

/// Frames each way.
const FRAMES: u32 = 1500;

fn frame(seq: u32) -> Vec<u8> {
    let mut f: Vec<u8> = (0..60 + seq as usize % 200).map(|i| i as u8).collect();
    f[..4].copy_from_slice(&seq.to_le_bytes());
    f
}

/// Sends frames `0..FRAMES` and receives `FRAMES` frames on `nic`, on the calling thread;
/// returns the sequence numbers received, in order.
fn drive(nic: &mut dyn Nic, inject: &(dyn Fn(u32) + Sync)) -> Vec<u32> {
    let pool = nic.pool().clone();
    let (mut batch, mut got) = (Vec::with_capacity(32), Vec::with_capacity(64));
    let (mut sent, mut received) = (0u32, Vec::new());
    let end = Instant::now() + Duration::from_secs(20);
    while sent < FRAMES || !batch.is_empty() || received.len() < FRAMES as usize {
        assert!(
            Instant::now() < end,
            "stuck: {sent} sent, {} received",
            received.len()
        );
        while batch.len() < 32 && sent < FRAMES {
            batch.push(pool.alloc_copy(&frame(sent)).expect("a free buffer"));
            inject(sent);
            sent += 1;
        }
        nic.tx_batch(&mut batch);
        nic.rx_batch(&mut got, 32);
        for p in got.drain(..) {
            let p: Packet = p;
            let seq = u32::from_le_bytes(p.data()[..4].try_into().expect("4 bytes"));
            assert_eq!(p.data(), &frame(seq)[..], "frame {seq}");
            received.push(seq);
        }
    }
    assert!(nic.flush(), "the device finished sending");
    received
}

/// Moves `nic` into a new thread, drives it there and closes it there; checks what it
/// received and that every buffer is back in its pool.
fn move_and_drive(nic: Box<dyn Nic>, inject: Arc<dyn Fn(u32) + Send + Sync>) {
    let pool: Arc<Mempool> = nic.pool().clone();
    let opened_on = std::thread::current().id();
    let worker = std::thread::spawn(move || {
        assert_ne!(std::thread::current().id(), opened_on);
        let mut nic = nic;
        let received = drive(nic.as_mut(), inject.as_ref());
        let stats = nic.stats();
        drop(nic); // closed on the worker: the device quiesced, the buffers returned
        (received, stats)
    });
    let (received, stats) = worker.join().expect("the worker drove the port");
    assert_eq!(
        received,
        (0..FRAMES).collect::<Vec<_>>(),
        "in order, none lost"
    );
    assert_eq!(
        (stats.tx_packets, stats.rx_packets),
        (FRAMES.into(), FRAMES.into())
    );
    assert_eq!(
        pool.free_count(),
        pool.capacity(),
        "pool full once the port closed"
    );
}

#[test]
fn an_e1000_port_is_driven_on_the_thread_it_moved_to() {
    let dev = fake_e1000::FakeE1000::start(fake_e1000::Behaviour::default());
    let cfg = Config {
        link_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let nic = E1000::new(
        dev.bar.clone(),
        &dev.dma,
        "0000:00:02.0".parse().unwrap(),
        &cfg,
    )
    .expect("driver comes up");
    let dev = Arc::new(dev);
    let device = dev.clone();
    let inject = move |seq| device.inject(fake_e1000::Inject::Frame(frame(seq)));
    move_and_drive(Box::new(nic), Arc::new(inject));
    assert_eq!(dev.sent_count(), FRAMES as usize);
}

fn virtio<Q: zcnic::virtio::QueueKind + 'static>() {
    let dev = fake_virtio::FakeVirtio::start(fake_virtio::Behaviour {
        packed: Q::PACKED,
        ..fake_virtio::Behaviour::default()
    });
    let (addr, cfg) = ("0000:00:03.0".parse().unwrap(), Config::default());
    let t = dev.transport();
    let features = negotiate(&t, &addr, &cfg, Q::PACKED).expect("features negotiated");
    let nic =
        VirtioNet::<Q>::new(Box::new(t), features, &dev.dma, addr, &cfg).expect("driver comes up");
    let dev = Arc::new(dev);
    let device = dev.clone();
    let inject = move |seq| device.inject(fake_virtio::Inject::Frame(frame(seq)));
    move_and_drive(Box::new(nic), Arc::new(inject));
    assert_eq!(dev.sent_count(), u64::from(FRAMES));
}

#[test]
fn a_virtio_split_port_is_driven_on_the_thread_it_moved_to() {
    virtio::<SplitQueue<DmaMem>>();
}

#[test]
fn a_virtio_packed_port_is_driven_on_the_thread_it_moved_to() {
    virtio::<PackedQueue<DmaMem>>();
}

/// What applications hold is `Send`: checked at compile time, for the real register type.
#[test]
fn ports_over_real_registers_are_send() {
    fn send<T: Send>() {}
    send::<Box<dyn Nic>>();
    send::<E1000<zcnic::MmioBar>>();
    send::<VirtioNet<SplitQueue<DmaMem>>>();
    send::<VirtioNet<PackedQueue<DmaMem>>>();
}
