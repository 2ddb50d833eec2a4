//! `zcnic pktgen --ceiling`: what the device itself can take.
//!
//! The driver points every transmit descriptor at one prebuilt frame and then only hands
//! descriptors back to the device as it completes them ([`zcnic::Nic::repost`]): no
//! allocation and no frame built per send (the e1000 writes nothing per frame; virtio-net
//! the descriptor and avail entry its split or packed ring needs). Whatever rate this reaches is the
//! device model's limit on this machine; `cargo xtask bench` shows the normal generator as
//! a fraction of it, measured in the same boot.

use crate::clock::{LoopClock, BUSY_WAIT_NS};
use crate::frame::{Flow, FrameGen};
use crate::pktgen::{Args, Sizes, Summary};
use crate::{msg, stopped, ToolError};
use std::io::Write;
use zcnic::Nic;

/// Why `--ceiling` cannot go with the other options given, if it cannot.
pub fn check(args: &Args, receiving: bool) -> Result<(), ToolError> {
    let clash = if args.rate.is_some() {
        Some("--rate")
    } else if receiving {
        Some("--rx")
    } else if args.zero_copy {
        Some("--zero-copy")
    } else if !matches!(args.sizes, Sizes::Fixed(_)) {
        Some("a size range or IMIX")
    } else if args.flows > 1 {
        Some("--flows")
    } else {
        None
    };
    match clash {
        Some(what) => Err(msg(format!(
            "--ceiling sends one prebuilt frame flat out, so it cannot take {what}: drop one of the two"
        ))),
        None => Ok(()),
    }
}

/// Re-posts one frame until the count, the duration or Ctrl-C; prints a line a second.
pub fn run(tx: &mut dyn Nic, args: &Args) -> Result<Summary, ToolError> {
    let port = tx.name();
    let size = match args.sizes {
        Sizes::Fixed(n) => n,
        _ => return Err(msg("--ceiling takes one --size")),
    };
    let mut gen = FrameGen::new(Flow {
        src_mac: tx.mac(),
        ..args.flow
    });
    crate::pktgen::check_mtu(size, tx.mtu(), &port)?;
    if size > zcnic::DATA_ROOM {
        return Err(msg(format!(
            "--ceiling sends frames of one buffer, at most {} bytes; --size {size} is a jumbo frame: run it without --ceiling",
            zcnic::DATA_ROOM
        )));
    }
    let mut frame = vec![0u8; crate::frame::MAX_FRAME];
    let len = gen.write(&mut frame, size, 0, 0, 0);
    frame.truncate(len);
    let batch = args.batch.clamp(1, 256);
    let limit = args.count.unwrap_or(u64::MAX);
    let end = args.duration.map(|d| d.as_nanos() as u64);
    let mut clock = LoopClock::new();
    let epoch = clock.epoch();
    let (mut sent, mut last_t, mut last_sent, mut last_progress) = (0u64, 0u64, 0u64, 0u64);
    // Locked only to print a line: other threads (`--queues`) print too.
    let stdout = std::io::stdout();
    let mut link_tick = crate::link::Tick::new();
    loop {
        let now = clock.now_ns();
        if link_tick.due(now) {
            crate::link::report("pktgen", tx);
        }
        if sent >= limit || stopped() || end.is_some_and(|e| now >= e) {
            break;
        }
        let want = batch.min((limit - sent) as usize);
        let n = tx.repost(&frame, want).ok_or_else(|| {
            msg(format!(
                "{port}: the {} driver has no ceiling mode (e1000 and virtio-net have one); run without --ceiling",
                tx.driver()
            ))
        })?;
        sent += n as u64;
        if n > 0 {
            last_progress = now;
        } else if now.saturating_sub(last_progress) <= 1_000_000_000 {
            clock.spin_until(now + BUSY_WAIT_NS);
        } else {
            return Err(msg(format!(
                "{port}: the device took no frame for a second; check the link with `zcnic list`"
            )));
        }
        if now.saturating_sub(last_t) >= 1_000_000_000 {
            let dt = (now - last_t) as f64 / 1e9;
            let mut out = stdout.lock();
            let _ = writeln!(
                out,
                "pktgen {port}: {:6.1} s  ceiling tx {:>9.0} pps  total {sent}{}",
                now as f64 / 1e9,
                (sent - last_sent) as f64 / dt,
                crate::pktgen::device_count(tx),
            );
            let _ = out.flush();
            (last_t, last_sent) = (now, sent);
        }
    }
    let secs = epoch.elapsed().as_secs_f64();
    let flushed = tx.flush();
    let stats = tx.stats();
    Ok(Summary {
        port,
        sent,
        bytes: sent * len as u64,
        secs,
        device: ["GPTC", "TPT"]
            .iter()
            .filter_map(|n| stats.hw(n).map(|v| (*n, v)))
            .collect(),
        rx: None,
        flushed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Args {
        Args {
            sizes: Sizes::Fixed(60),
            count: None,
            duration: None,
            batch: 32,
            rate: None,
            flow: Flow::default(),
            flows: 1,
            rx_wait: std::time::Duration::ZERO,
            zero_copy: false,
            ceiling: true,
            quiet: false,
            offload: None,
            bad_csum: false,
            template: None,
            pacing: crate::pace::Pacing::Burst,
            gap: None,
        }
    }

    #[test]
    fn ceiling_refuses_what_it_cannot_honour() {
        assert!(check(&args(), false).is_ok());
        let clash = |a: Args, rx: bool, flag: &str| {
            let e = check(&a, rx).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains("drop one"), "{e}");
        };
        clash(
            Args {
                rate: Some(1e3),
                ..args()
            },
            false,
            "--rate",
        );
        clash(args(), true, "--rx");
        clash(
            Args {
                zero_copy: true,
                ..args()
            },
            false,
            "--zero-copy",
        );
        clash(
            Args {
                sizes: Sizes::Imix,
                ..args()
            },
            false,
            "IMIX",
        );
        clash(Args { flows: 4, ..args() }, false, "--flows");
    }
}
