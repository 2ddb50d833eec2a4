//! `cargo xtask miri`: the memory crates' tests under Miri, which checks every unsafe
//! access, atomic and fence they make against Rust's memory model.

use std::process::{Command, ExitCode};

use zcnic_qemu::workspace_root;

/// The crates Miri checks and over how many seeds. Miri picks one thread interleaving and
/// one allocation layout per seed: several seeds explore several schedules of the DMA
/// memory crate's multi-thread pool tests (about 10 s a seed). The ring logic has no
/// `unsafe` and no threads, and its property tests take Miri a quarter of an hour: one
/// seed checks its memory accesses.
const CRATES: [(&str, u32); 2] = [("zcnic-hugepages", 4), ("zcnic-descriptors", 1)];
/// Seeds for crates named with `-p`.
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
    let picks = args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a.starts_with("-p") || a.starts_with("--package"));
    // (packages to pass, seeds): the default crates each with their own seed count, or
    // what `-p` in ARGS names, over SEEDS.
    let runs: Vec<(Vec<&str>, u32)> = if picks {
        vec![(vec![], SEEDS)]
    } else {
        CRATES.iter().map(|&(c, n)| (vec!["-p", c], n)).collect()
    };
    let mut failed = Vec::new();
    for (packages, seeds) in runs {
        for seed in 0..seeds {
            let miriflags = format!("{flags} -Zmiri-seed={seed}").trim().to_string();
            eprintln!(
                "xtask: MIRIFLAGS='{miriflags}' cargo +nightly miri test {}",
                packages.join(" ")
            );
            let mut cmd = cargo();
            cmd.args(["+nightly", "miri", "test", "--no-fail-fast"])
                .args(&packages)
                .args(args)
                .env("MIRIFLAGS", &miriflags);
            let status = cmd
                .status()
                .map_err(|e| format!("cannot start cargo +nightly miri: {e}"))?;
            if !status.success() {
                failed.push(format!("{} seed {seed}", packages.join(" ")));
            }
        }
    }
    if failed.is_empty() {
        let what: Vec<String> = CRATES
            .iter()
            .map(|(c, n)| format!("{c} ({n} seed{})", if *n == 1 { "" } else { "s" }))
            .collect();
        println!("xtask: miri passed: {}", what.join(", "));
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "xtask: miri failed: {} (rerun one: MIRIFLAGS=-Zmiri-seed=N cargo +nightly miri \
             test -p CRATE)",
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}
