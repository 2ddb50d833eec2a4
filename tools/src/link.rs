//! Link events in the tools' packet loops: `pktgen`, `fwd` and `dump` look for one every
//! [`TICK_NS`] (never each burst) and print a line when the link went down or came up; a
//! run goes on either way (frames sent while the link is down are the device's to drop).
//!
//! The line is `TOOL ADDR: link down` or `TOOL ADDR: link up SPEED` (`link up 1000 Mbit/s
//! full duplex` on the e1000, `link up` on virtio-net, which reports no speed).

use std::io::Write;
use zcnic::{Link, Nic, PciAddr, Port};

/// How often a loop looks for link events: 20 ms, so a change shows within a few tens of
/// milliseconds while the look costs one register read per port per tick.
pub const TICK_NS: u64 = 20_000_000;

/// When a loop next looks for link events, on the loop's own clock (nanoseconds).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tick {
    next: u64,
}

impl Tick {
    /// A tick due at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when `now_ns` has reached the next look, which then moves [`TICK_NS`] past
    /// `now_ns` (a stalled loop skips looks rather than bunching them).
    #[inline(always)]
    pub fn due(&mut self, now_ns: u64) -> bool {
        if now_ns < self.next {
            return false;
        }
        self.next = now_ns.saturating_add(TICK_NS);
        true
    }
}

/// The line for a link event of port `addr` in `tool`.
pub fn line(tool: &str, addr: PciAddr, link: Link) -> String {
    format!("{tool} {addr}: link {link}")
}

/// Looks for a link event on `nic` and prints its line on stdout; returns the event.
pub fn report(tool: &str, nic: &mut dyn Nic) -> Option<Link> {
    let link = nic.link_event()?;
    print_line(&line(tool, nic.addr(), link));
    Some(link)
}

/// [`report`] for a multi-queue port.
pub fn report_port(tool: &str, port: &mut dyn Port) -> Option<Link> {
    let link = port.link_event()?;
    print_line(&line(tool, port.addr(), link));
    Some(link)
}

/// One whole line, flushed at once: other threads print too, and a reader (a test
/// watching the console) should see the event when it happens.
fn print_line(l: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{l}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_down_or_up_with_the_speed() {
        let a: PciAddr = "0000:00:02.0".parse().unwrap();
        assert_eq!(
            line("pktgen", a, Link::DOWN),
            "pktgen 0000:00:02.0: link down"
        );
        let up = Link {
            up: true,
            speed_mbps: 1000,
            full_duplex: true,
        };
        assert_eq!(
            line("fwd", a, up),
            "fwd 0000:00:02.0: link up 1000 Mbit/s full duplex"
        );
        let virtio = Link {
            speed_mbps: 0,
            ..up
        };
        assert_eq!(line("pktgen", a, virtio), "pktgen 0000:00:02.0: link up");
    }

    #[test]
    fn the_tick_comes_every_20_ms_of_the_loops_clock() {
        let mut t = Tick::new();
        assert!(t.due(5), "due at once");
        assert!(!t.due(5 + TICK_NS - 1));
        assert!(t.due(5 + TICK_NS));
        // A loop stalled for a second looks once, then waits a whole tick again.
        assert!(t.due(1_000_000_000));
        assert!(!t.due(1_000_000_001));
        assert!(t.due(1_000_000_000 + TICK_NS));
    }
}
