//! The pieces behind the `zcnic` command, usable from tests and other tools.

pub mod bind;
pub mod ceiling;
pub mod checks;
pub mod cli;
pub mod clock;
pub mod doctor;
pub mod dump;
pub mod frame;
pub mod fwd;
pub mod groups;
pub mod idle;
pub mod inuse;
pub mod link;
pub mod multiqueue;
pub mod pace;
pub mod pktgen;
pub mod pktgen_cli;
pub mod plot;
pub mod ranges;
pub mod replay;
pub mod seq;
pub mod sizes;
pub mod stats;
pub mod streams;
pub mod template;
pub mod units;

/// An error a subcommand reports: one line that says what to do. The command exits 2.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// From the driver.
    #[error(transparent)]
    Nic(#[from] zcnic::Error),
    /// From DMA memory.
    #[error(transparent)]
    Dma(#[from] zcnic::DmaError),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Msg(String),
}

/// Shorthand for a message error.
pub fn msg(s: impl Into<String>) -> ToolError {
    ToolError::Msg(s.into())
}

/// Set by the Ctrl-C handler; long-running subcommands stop and print their summary.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether Ctrl-C was pressed.
pub fn stopped() -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}
