//! The arm/re-check/sleep race every receive interrupt must win, played on any port: a
//! device thread completes a frame at a random moment around the waiter's arm, round after
//! round, and the waiter must never sleep through it. Shared by the interrupt suites of
//! each fake device (e1000, igb vectors and line, virtio vectors and INTx).

use std::time::{Duration, Instant};
use zcnic::irq::wait_readable;
use zcnic::Nic;

/// A wait that would mean the waiter slept through its frame.
pub const NEVER: Duration = Duration::from_secs(20);

/// Receives what waits (up to 64 frames), dropping it; how many came.
pub fn receive(nic: &mut dyn Nic) -> usize {
    let mut got = Vec::with_capacity(64);
    nic.rx_batch(&mut got, 64)
}

/// Whether the port's receive interrupt fd becomes readable within `timeout`.
pub fn readable(nic: &dyn Nic, timeout: Duration) -> bool {
    wait_readable(nic.rx_interrupt_fd().expect("an fd"), timeout).expect("poll")
}

/// 300 rounds: `inject(round)` runs on a device thread after a random spin (from `seed`)
/// while the waiter arms and sleeps in `rx_wait`; every wait must end at once (the
/// re-check or the interrupt), never at [`NEVER`], and the frame must then be received.
pub fn waiter_never_sleeps_through_a_frame(
    nic: &mut dyn Nic,
    mut seed: u32,
    inject: &(dyn Fn(u8) + Sync),
) {
    for round in 0..300u32 {
        assert_eq!(
            receive(nic),
            0,
            "round {round}: nothing waits before the frame"
        );
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let spin = seed % 2000;
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                inject(round as u8);
            });
            let start = Instant::now();
            let woke = nic.rx_wait(NEVER).unwrap();
            assert!(
                woke && start.elapsed() < NEVER / 2,
                "{}: round {round} (spin {spin}) slept through its frame",
                nic.driver()
            );
        });
        let start = Instant::now();
        while receive(nic) == 0 {
            assert!(
                start.elapsed() < NEVER,
                "round {round}: the frame never came"
            );
        }
    }
}
