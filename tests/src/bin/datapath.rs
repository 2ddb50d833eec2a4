//! Drives one datapath operation of the e1000 driver on the fake device, for instruction
//! counting under `valgrind --tool=callgrind` (`cargo xtask bench --host` runs it).
//!
//! ```text
//! datapath <tx|rx|fwd|virtio-tx> <BATCH> <PACKETS>
//! ```

use zcnic_tests::datapath::{drive, manual_port, virtio_port, virtio_tx};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, op, batch, packets] = args.as_slice() else {
        eprintln!("usage: datapath <tx|rx|fwd|virtio-tx> <BATCH> <PACKETS>");
        std::process::exit(2);
    };
    let batch: usize = batch.parse().unwrap_or(32).clamp(1, 256);
    let packets: u64 = packets.parse().unwrap_or(100_000);
    if op == "virtio-tx" {
        let (dev, mut nic) = virtio_port();
        virtio_tx(&dev, &mut nic, batch, packets);
    } else {
        let (dev, mut nic) = manual_port();
        drive(op, &dev, &mut nic, batch, packets);
    }
    println!("datapath {op}: {packets} packets at batch {batch}");
}
