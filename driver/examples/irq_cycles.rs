//! Opens and closes a port over and over, sleeping on its receive interrupt once each time,
//! and counts this process's file descriptors before, while open, and after: a port must
//! give back its eventfd and VFIO descriptors when it closes. Used by the QEMU suite.
//!
//! ```text
//! irq_cycles <PCI> [CYCLES]   prints "irq_cycles: N cycles, fds before B, open O, after A, W woke"
//! ```

use std::process::ExitCode;
use std::time::Duration;
use zcnic::Config;

/// Open descriptors of this process.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(pci) = args.get(1) else {
        eprintln!("usage: irq_cycles <PCI> [CYCLES]");
        return ExitCode::from(2);
    };
    let cycles: u32 = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(100);
    // A small port: bring-up, not the pool, is what is exercised; nor the link: a cycle
    // does not wait for auto-negotiation (the igb's takes most of a second under TCG).
    let cfg = Config {
        rx_ring: 256,
        tx_ring: 256,
        pool: 1024,
        link_timeout: Duration::ZERO,
        ..Config::default()
    };
    let before = fds();
    let (mut open, mut woke) = (0, 0);
    for i in 0..cycles {
        let run = zcnic::open_with(pci, &cfg).and_then(|mut nic| {
            open = fds();
            nic.rx_interrupt_fd()?;
            nic.rx_wait(Duration::from_millis(1))
        });
        match run {
            Ok(w) => {
                woke += u32::from(w);
                if (i + 1) % 100 == 0 {
                    eprintln!("irq_cycles: {} cycles done, fds {}", i + 1, fds());
                }
            }
            Err(e) => {
                eprintln!("irq_cycles: cycle {i}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let after = fds();
    println!(
        "irq_cycles: {cycles} cycles, fds before {before}, open {open}, after {after}, {woke} woke"
    );
    if after == before {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
