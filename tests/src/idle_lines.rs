//! What the interrupt tests (`qemu_idle`, `qemu_idle_igb`, `qemu_idle_virtio`) read back
//! from a guest: a result file, the idle line `dump` and `fwd` print, its counts, and the
//! open/close cycles' descriptor counts with the kernel's log.

use crate::qemu_suite::figure;
use zcnic_qemu::GuestRun;

/// The text of the guest's result file `file`.
pub fn result(run: &GuestRun, file: &str) -> String {
    std::fs::read_to_string(run.results.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// dump's or fwd's idle line (`… idle hybrid=1ms: 3 wakes, 0 ready, 49 naps, 0 early, quiet 1ms; cpu 0.04 s
/// of 5.00 s (0.8% of a core)`, or `… queue 0 idle …; queue 1 idle …` from `dump --queues`)
/// in `file`: the line, and its share of a core in percent
/// (NaN when it has none, as a queue's line of `dump --queues` has not; a test that
/// compares it then fails).
pub fn idle_line(run: &GuestRun, file: &str) -> (String, f64) {
    let out = result(run, file);
    let line = out
        .lines()
        .find(|l| l.contains(": idle ") || l.contains(": queue 0 idle "))
        .unwrap_or_else(|| panic!("no idle line in {file}:\n{out}"))
        .to_string();
    let pct = line
        .split(" (")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    (line, pct)
}

/// The number before `word` in `text` (`… 3 wakes, …` for `" wakes"`).
pub fn count_before(text: &str, word: &str) -> u64 {
    text.split(word)
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{word}` count in {text}"))
}

/// The `irq_cycles` example's line in `cycles.txt` said `cycles` cycles ran, the open
/// port held at least `held` more descriptors than before (its device and eventfds), none
/// was left after; and the kernel's log (`dmesg.txt`) holds no complaint about an
/// interrupt (`bad` adds device-specific ones). Returns the line.
pub fn assert_cycles_quiet(run: &GuestRun, cycles: u32, held: u64, bad: &[&str]) -> String {
    assert_cycles_quiet_in(run, "cycles.txt", cycles, held, bad)
}

/// [`assert_cycles_quiet`] for the `irq_cycles` output in result file `file`.
pub fn assert_cycles_quiet_in(
    run: &GuestRun,
    file: &str,
    cycles: u32,
    held: u64,
    bad: &[&str],
) -> String {
    let out = result(run, file);
    let line = out
        .lines()
        .find(|l| l.starts_with("irq_cycles:"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains(&format!("{cycles} cycles")), "{out}");
    let before = figure(&line, "before").expect("fds before");
    let open = figure(&line, "open").expect("fds while open");
    let after = figure(&line, "after").expect("fds after");
    assert_eq!(before, after, "a descriptor leaked over the cycles: {line}");
    assert!(
        open >= before + held,
        "an open port holds its device's and vectors' descriptors: {line}"
    );
    let dmesg = result(run, "dmesg.txt");
    for bad in ["nobody cared", "spurious", "Disabling IRQ"]
        .iter()
        .chain(bad)
    {
        assert!(
            !dmesg.lines().any(|l| l.contains(bad)),
            "the kernel logged `{bad}`:\n{dmesg}"
        );
    }
    line
}
