//! What each run cost QEMU on the host: which thread was at one host CPU says what set the
//! rate (the vCPU for guest work and the e1000 model, I/O for virtio-net's transmit work);
//! a vCPU well under 100% was waiting for QEMU's global lock. And the host's core-to-core
//! round trip, which moves virtio-net's rate under TCG.

use super::plan::{Run, Target};
use zcnic_qemu::threads::describe;
use zcnic_qemu::GuestRun;

/// Round trips this many times apart mean the host's CPUs moved between runs.
const FAR_APART: u128 = 2;
/// A run whose I/O thread is this busy has its frames cross between host threads.
const IO_SHARE: f64 = 0.4;
/// An I/O thread this busy is the bottleneck of a run.
const IO_BOUND: f64 = 0.9;

fn marks(run: &Run) -> (String, String) {
    (format!("begin {}", run.id()), format!("end {}", run.id()))
}

fn io_busy(guest: &GuestRun, run: &Run) -> Option<f64> {
    let (b, e) = marks(run);
    guest
        .load(&b, &e)?
        .into_iter()
        .find(|t| t.name == "I/O")
        .map(|t| t.busy)
}

/// The host's core round trip during each run that has one, in nanoseconds.
pub fn trips(guest: &GuestRun, runs: &[Run]) -> Vec<(Run, u128)> {
    runs.iter()
        .filter_map(|r| {
            let (b, e) = marks(r);
            Some((*r, guest.trip(&b, &e)?.as_nanos()))
        })
        .collect()
}

/// One line per run: QEMU's threads over the run's window and the core round trip; then
/// what they mean for the ratios.
pub fn print(guest: &GuestRun, runs: &[Run]) {
    println!("  QEMU host threads over each run's window (share of one host CPU; I/O runs virtio-net's transmit work),");
    println!("  and the host's core-to-core cache-line round trip then (high when the cloud put this machine's CPUs far apart):");
    let trips = trips(guest, runs);
    for run in runs {
        let (b, e) = marks(run);
        if let Some(l) = guest.load(&b, &e) {
            let trip = trips
                .iter()
                .find(|t| t.0 == *run)
                .map_or(String::new(), |t| format!("; core round trip {} ns", t.1));
            println!("    {:<28}{}{trip}", run.id(), describe(&l));
        }
    }
    for target in Target::ALL {
        let of: Vec<&Run> = runs.iter().filter(|r| r.target == target).collect();
        let bound: Vec<String> = of
            .iter()
            .filter(|r| io_busy(guest, r).unwrap_or(0.0) >= IO_BOUND)
            .map(|r| r.id())
            .collect();
        if !bound.is_empty() {
            println!(
                "  {}: QEMU's I/O thread was at least {:.0}% busy in {}: the device model, not the driver, set those rates",
                target.label(),
                IO_BOUND * 100.0,
                bound.join(", ")
            );
        }
        // Runs whose frames cross between the vCPU and the I/O thread depend on how far
        // apart the host put its CPUs; the e1000 model runs on the vCPU and hardly cares.
        let crossing: Vec<&(Run, u128)> = trips
            .iter()
            .filter(|(r, _)| r.target == target && io_busy(guest, r).unwrap_or(0.0) >= IO_SHARE)
            .collect();
        let (Some(near), Some(far)) = (
            crossing.iter().min_by_key(|t| t.1),
            crossing.iter().max_by_key(|t| t.1),
        ) else {
            continue;
        };
        if far.1 >= FAR_APART * near.1.max(1) {
            println!(
                "  {}: the host's core round trip was {} ns in {} but {} ns in {}: frames cross between QEMU's threads, so a ratio between those runs compares host states as much as tools",
                target.label(),
                near.1,
                near.0.id(),
                far.1,
                far.0.id()
            );
        }
    }
}
