//! Drives one datapath operation of the e1000, igb or virtio-net driver on a fake device, for instruction
//! counting under `valgrind --tool=callgrind` (`cargo xtask bench --host` runs it).
//!
//! ```text
//! datapath <tx|tx-recycle|rx|rx-recycle|fwd|fwd-recycle|virtio-tx|virtio-rx|igb-tx|igb-rx|igb-fwd|pktgen> <BATCH> <PACKETS>
//! ```
//!
//! `pktgen` runs `zcnic pktgen`'s loop on a port that drops every frame at once, so what
//! it counts is the generator's own work per frame.
//!
//! ```text
//! ```

use zcnic_tests::datapath::{
    drive, igb_drive, igb_manual_port, manual_port, virtio_port, virtio_rx, virtio_tx, SinkNic,
};
use zcnic_tools::pktgen;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, op, batch, packets] = args.as_slice() else {
        eprintln!("usage: datapath <tx|tx-recycle|rx|rx-recycle|fwd|fwd-recycle|virtio-tx|virtio-rx|igb-tx|igb-rx|igb-fwd|pktgen> <BATCH> <PACKETS>");
        std::process::exit(2);
    };
    let batch: usize = batch.parse().unwrap_or(32).clamp(1, 256);
    let packets: u64 = packets.parse().unwrap_or(100_000);
    // What was processed, which the caller divides by: never just the count asked for.
    let done = if op == "pktgen" {
        let args = pktgen::Args {
            sizes: pktgen::Sizes::Fixed(60),
            count: Some(packets),
            duration: None,
            batch,
            rate: None,
            flow: Default::default(),
            flows: 1,
            rx_wait: std::time::Duration::ZERO,
            zero_copy: false,
            ceiling: false,
            quiet: false,
            offload: None,
            bad_csum: false,
            template: None,
            pacing: zcnic_tools::pace::Pacing::Burst,
            gap: None,
        };
        let mut sink = SinkNic::new();
        match pktgen::run(&mut sink, pktgen::Rx::None, &args) {
            Ok(summary) => summary.sent,
            Err(e) => {
                eprintln!("datapath pktgen: {e}");
                std::process::exit(1);
            }
        }
    } else if op.starts_with("igb-") {
        let (dev, mut nic) = igb_manual_port();
        igb_drive(op, &dev, &mut nic, batch, packets)
    } else if op == "virtio-tx" {
        let (dev, mut nic) = virtio_port();
        virtio_tx(&dev, &mut nic, batch, packets)
    } else if op == "virtio-rx" {
        let (dev, mut nic) = virtio_port();
        virtio_rx(&dev, &mut nic, batch, packets)
    } else {
        let (dev, mut nic) = manual_port();
        drive(op, &dev, &mut nic, batch, packets)
    };
    println!("datapath {op}: {done} packets at batch {batch}");
}
