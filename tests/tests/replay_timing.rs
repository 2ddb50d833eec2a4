//! `zcnic replay`'s original timing on the host, through a port that takes its time: a
//! `tx_batch` call held up for milliseconds delays the frames after it instead of letting
//! the next one catch up (each gap counts from the doorbell, plus at most 50 µs of the
//! call). Lower bounds only: a loaded host can always send later. That a quick call's own
//! time does not stretch the gap after it is `qemu_replay`'s median.

use std::sync::Arc;
use std::time::{Duration, Instant};
use zcnic::{Link, Mempool, Nic, Packet, PciAddr, Stats};
use zcnic_tests::datapath::SinkNic;
use zcnic_tools::replay::{self, Args, Capture, Timing};

/// A sink whose `tx_batch` calls last as long as `delays` says, in turn, and are timed.
struct SlowNic {
    sink: SinkNic,
    delays: Vec<Duration>,
    calls: Vec<(Instant, Instant)>,
}

impl Nic for SlowNic {
    fn addr(&self) -> PciAddr {
        self.sink.addr()
    }
    fn driver(&self) -> &'static str {
        "slow sink"
    }
    fn pool(&self) -> &Arc<Mempool> {
        self.sink.pool()
    }
    fn rx_batch(&mut self, out: &mut Vec<Packet>, max: usize) -> usize {
        self.sink.rx_batch(out, max)
    }
    fn tx_batch(&mut self, pkts: &mut Vec<Packet>) -> usize {
        let start = Instant::now();
        let delay = self.delays.get(self.calls.len()).copied();
        let n = self.sink.tx_batch(pkts);
        while start.elapsed() < delay.unwrap_or_default() {}
        self.calls.push((start, Instant::now()));
        n
    }
    fn flush(&mut self) -> bool {
        true
    }
    fn stats(&mut self) -> Stats {
        self.sink.stats()
    }
    fn link(&self) -> Link {
        self.sink.link()
    }
    fn mac(&self) -> [u8; 6] {
        self.sink.mac()
    }
    fn set_promisc(&mut self, _on: bool) {}
}

/// Replays three 60-byte frames 2 ms apart through calls lasting `delays`; the calls.
fn replay_through(delays: &[Duration]) -> Vec<(Instant, Instant)> {
    let mut cap = Capture::default();
    for k in 0..3u64 {
        cap.push(k * 2_000_000, &[0x5a; 60], 60, 1514);
    }
    let mut nic = SlowNic {
        sink: SinkNic::new(),
        delays: delays.to_vec(),
        calls: Vec::new(),
    };
    let args = Args {
        timing: Timing::Original { speed: 1.0 },
        loops: 1,
        copy: true,
    };
    let s = replay::run(&mut nic, &cap, &args, &mut std::io::sink()).expect("replay runs");
    assert_eq!(s.sent, 3);
    assert_eq!(nic.calls.len(), 3, "one call a frame");
    nic.calls
}

#[test]
fn a_call_held_up_delays_the_next_frame_instead_of_letting_it_catch_up() {
    // The first call is held up 3 ms (under TCG the first one's work took that long): the
    // second frame goes its 2 ms after that call, less the 50 µs a call may take as its
    // own transmission, not 2 ms after the first call began (at once after it). 10% off
    // for the loop clock's first window, whose rate is measured over 1 ms.
    let calls = replay_through(&[Duration::from_millis(3)]);
    let after_first = calls[1].0 - calls[0].1;
    assert!(
        after_first >= Duration::from_micros(1_700),
        "the second frame went {after_first:?} after the held-up call ended"
    );
    let gap = calls[2].0 - calls[1].0;
    assert!(gap >= Duration::from_micros(1_750), "{gap:?}");
}
