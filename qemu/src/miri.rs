//! `cargo xtask miri`: the memory crates' tests under Miri, which checks every unsafe
//! access, atomic and fence they make against Rust's memory model.

use std::process::{Command, ExitCode};

use zcnic_qemu::workspace_root;

/// The crates whose unsafe code Miri checks: ring logic and DMA memory.
const CRATES: [&str; 2] = ["zcnic-descriptors", "zcnic-hugepages"];
/// Miri picks one thread interleaving and one allocation layout per seed: several seeds
/// explore several schedules of the multi-thread pool tests.
const SEEDS: u32 = 4;

fn cargo() -> Command {
    // Not $CARGO: that is the stable cargo xtask runs under, and Miri needs nightly.
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// Adds the nightly toolchain's miri and rust-src components when `cargo +nightly miri`
/// does not run (rustup fetches them).
fn ensure_miri() -> Result<(), String> {
    let works = cargo()
        .args(["+nightly", "miri", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    let fix = [
        "component",
        "add",
        "miri",
        "rust-src",
        "--toolchain",
        "nightly",
    ];
    eprintln!("xtask: installing Miri: rustup {}", fix.join(" "));
    let ok = Command::new("rustup")
        .args(fix)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err(format!(
            "Miri is not available and `rustup {}` failed: install a nightly toolchain \
             (`rustup toolchain install nightly`) and run it",
            fix.join(" ")
        ));
    }
    Ok(())
}

/// `cargo +nightly miri test -p CRATE... ARGS` once per seed; fails if any seed fails.
/// `ARGS` that pick packages (`-p`) replace the default crates.
pub fn run(args: &[String]) -> Result<ExitCode, String> {
    ensure_miri()?;
    let flags = std::env::var("MIRIFLAGS").unwrap_or_default();
    let mut failed = Vec::new();
    for seed in 0..SEEDS {
        let miriflags = format!("{flags} -Zmiri-seed={seed}").trim().to_string();
        eprintln!("xtask: MIRIFLAGS='{miriflags}' cargo +nightly miri test");
        let mut cmd = cargo();
        cmd.args(["+nightly", "miri", "test", "--no-fail-fast"]);
        let picks = args
            .iter()
            .take_while(|a| *a != "--")
            .any(|a| a.starts_with("-p") || a.starts_with("--package"));
        if !picks {
            cmd.args(CRATES.iter().flat_map(|c| ["-p", c]));
        }
        cmd.args(args).env("MIRIFLAGS", &miriflags);
        let status = cmd
            .status()
            .map_err(|e| format!("cannot start cargo +nightly miri: {e}"))?;
        if !status.success() {
            failed.push(seed);
        }
    }
    if failed.is_empty() {
        println!(
            "xtask: miri passed on {} with seeds 0..{SEEDS}",
            CRATES.join(", ")
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "xtask: miri failed with seed(s) {failed:?} (rerun one: MIRIFLAGS=-Zmiri-seed=N \
             cargo +nightly miri test -p {})",
            CRATES.join(" -p ")
        );
        Ok(ExitCode::FAILURE)
    }
}
