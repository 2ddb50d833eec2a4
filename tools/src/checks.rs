//! The checks every subcommand makes of its arguments, before anything is opened: one
//! line that says what to give instead.

use crate::{msg, ToolError};
use std::time::Duration;
use zcnic::{Config, Nic, PciAddr};

/// A PCI address from the command line.
pub fn parse_pci(s: &str) -> Result<PciAddr, ToolError> {
    Ok(s.parse::<PciAddr>()?)
}

/// `--FLAG SECS`: a positive, finite number of seconds.
pub fn seconds(flag: &str, v: Option<f64>) -> Result<Option<Duration>, ToolError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(msg(format!(
            "--{flag} {s}: give a number of seconds above 0"
        ))),
    }
}

/// Largest `--batch` of pktgen (`pktgen::run` clamps to it).
pub const MAX_BATCH: usize = 256;
/// Largest `--burst` of fwd (`fwd::run` clamps to it).
pub const MAX_BURST: usize = 512;

/// Burst sizes outside `1..=max` are refused rather than clamped, so the run is the one asked for.
pub fn check_burst(flag: &str, n: usize, max: usize) -> Result<(), ToolError> {
    if (1..=max).contains(&n) {
        Ok(())
    } else {
        Err(msg(format!(
            "--{flag} {n}: give 1..={max} frames per burst"
        )))
    }
}

/// `--count 0` does nothing: refused.
pub fn check_count(c: Option<u64>) -> Result<(), ToolError> {
    match c {
        Some(0) => Err(msg("--count 0 would do nothing: give at least 1")),
        _ => Ok(()),
    }
}

/// Opens the port at `addr`.
pub fn open(addr: &PciAddr, cfg: &Config) -> Result<Box<dyn Nic>, ToolError> {
    Ok(zcnic::open_with(&addr.to_string(), cfg)?)
}
