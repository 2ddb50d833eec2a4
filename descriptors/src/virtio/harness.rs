//! Test-only state machine shared by both ring formats: random operations on a
//! [`Virtqueue`] and a [`Device`] model, checked step by step against a plain model of
//! which chains exist and where each one is.

use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::model::Device;
use super::{Buf, Full, Used, Virtqueue};

/// One step of a run.
#[derive(Clone, Debug)]
pub(super) enum Op {
    /// Driver adds a chain.
    Add(Vec<Buf>),
    /// Driver publishes.
    Publish,
    /// Device reads what was made available.
    Fetch,
    /// Device completes up to `count` fetched chains, oldest first or picked by `pick`.
    Complete {
        count: usize,
        in_order: bool,
        pick: usize,
        len_pct: u32,
    },
    /// Driver pops up to this many used entries.
    Pop(usize),
    /// Device asks for or suppresses kicks.
    Notify(bool),
}

fn chain() -> impl Strategy<Value = Vec<Buf>> {
    let len = prop_oneof![
        8 => 1u32..=65536,
        1 => Just(0u32),
        1 => Just(u32::MAX),
    ];
    (
        prop::collection::vec((any::<u64>(), len), 1..=4),
        0usize..=4,
    )
        .prop_map(|(parts, writable)| {
            let readable = parts.len().saturating_sub(writable);
            parts
                .into_iter()
                .enumerate()
                .map(|(i, (addr, len))| Buf {
                    addr,
                    len,
                    device_writes: i >= readable,
                })
                .collect()
        })
}

/// Random operations; `in_order` forces in-order completion.
pub(super) fn ops(max: usize, in_order: bool) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => chain().prop_map(Op::Add),
        2 => Just(Op::Publish),
        2 => Just(Op::Fetch),
        2 => (1usize..=4, any::<bool>(), any::<usize>(), 0u32..=100).prop_map(
            move |(count, o, pick, len_pct)| Op::Complete { count, in_order: o || in_order, pick, len_pct }
        ),
        2 => (1usize..=4).prop_map(Op::Pop),
        1 => any::<bool>().prop_map(Op::Notify),
    ];
    prop::collection::vec(op, 1..max)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Added,
    Published,
    Fetched,
    Completed,
}

struct Expect {
    bufs: Vec<Buf>,
    stage: Stage,
}

/// The plain model: every chain the driver holds, and the queues between stages.
#[derive(Default)]
struct Model {
    chains: HashMap<u16, Expect>,
    unpublished: VecDeque<u16>,
    unfetched: VecDeque<u16>,
    fetched: Vec<u16>,
    completed: VecDeque<Used>,
    published_chains: u64,
    fetched_chains: u64,
    popped: u64,
}

impl Model {
    fn descs(&self) -> usize {
        self.chains.values().map(|e| e.bufs.len()).sum()
    }
    fn in_flight(&self) -> usize {
        self.chains
            .values()
            .filter(|e| e.stage != Stage::Added)
            .count()
    }
}

fn writable(bufs: &[Buf]) -> u32 {
    bufs.iter()
        .filter(|b| b.device_writes)
        .fold(0u32, |a, b| a.saturating_add(b.len))
}

/// Runs `ops`, then drains everything, checking each step. Returns the number of chains
/// that went all the way round.
pub(super) fn run<Q: Virtqueue, D: Device>(
    q: &mut Q,
    dev: &mut D,
    ops: &[Op],
) -> Result<u64, TestCaseError> {
    let size = usize::from(q.size());
    let mut m = Model::default();
    let drain = [
        Op::Notify(true),
        Op::Publish,
        Op::Fetch,
        Op::Complete {
            count: size,
            in_order: true,
            pick: 0,
            len_pct: 50,
        },
        Op::Pop(size + 1),
    ];
    for op in ops.iter().chain(&drain) {
        step(q, dev, &mut m, op)?;
        prop_assert_eq!(
            usize::from(q.free()),
            size - m.descs(),
            "free after {:?}",
            op
        );
        prop_assert_eq!(
            usize::from(q.in_flight()),
            m.in_flight(),
            "in_flight after {:?}",
            op
        );
        prop_assert_eq!(usize::from(q.size()), size);
    }
    prop_assert!(m.chains.is_empty(), "chains left: {:?}", m.chains.keys());
    prop_assert_eq!(usize::from(q.free()), size);
    prop_assert_eq!(dev.interrupts(), 0, "device would have interrupted");
    prop_assert_eq!(m.popped, m.published_chains);
    Ok(m.popped)
}

fn step<Q: Virtqueue, D: Device>(
    q: &mut Q,
    dev: &mut D,
    m: &mut Model,
    op: &Op,
) -> Result<(), TestCaseError> {
    match op {
        Op::Add(bufs) => {
            let fits = bufs.len() <= usize::from(q.size()) - m.descs();
            match q.add(bufs) {
                Ok(id) => {
                    prop_assert!(fits, "add succeeded without room");
                    prop_assert!(id < q.size());
                    prop_assert!(!m.chains.contains_key(&id), "id {} reused while held", id);
                    m.chains.insert(
                        id,
                        Expect {
                            bufs: bufs.clone(),
                            stage: Stage::Added,
                        },
                    );
                    m.unpublished.push_back(id);
                }
                Err(Full) => prop_assert!(!fits, "add refused with room"),
            }
        }
        Op::Publish => {
            let caught_up = m.fetched_chains == m.published_chains;
            let any = !m.unpublished.is_empty();
            let kick = q.publish();
            prop_assert_eq!(kick, any && dev.expect_kick(caught_up));
            for id in m.unpublished.drain(..) {
                m.chains.get_mut(&id).unwrap().stage = Stage::Published;
                m.unfetched.push_back(id);
                m.published_chains += 1;
            }
        }
        Op::Fetch => {
            // The device sees exactly the published chains, in order, with their buffers.
            for chain in dev.fetch() {
                let want = m.unfetched.pop_front();
                prop_assert_eq!(Some(chain.id), want, "device read an unexpected chain");
                let e = m.chains.get_mut(&chain.id).unwrap();
                prop_assert_eq!(&chain.bufs, &e.bufs);
                e.stage = Stage::Fetched;
                m.fetched.push(chain.id);
                m.fetched_chains += 1;
            }
            prop_assert!(
                m.unfetched.is_empty(),
                "published chains invisible to device"
            );
        }
        &Op::Complete {
            count,
            in_order,
            pick,
            len_pct,
        } => {
            for k in 0..count.min(m.fetched.len()) {
                let at = if in_order {
                    0
                } else {
                    pick.wrapping_add(k) % m.fetched.len()
                };
                let id = m.fetched.remove(at);
                let e = m.chains.get_mut(&id).unwrap();
                let len = (u64::from(writable(&e.bufs)) * u64::from(len_pct) / 100) as u32;
                e.stage = Stage::Completed;
                dev.complete(id, len);
                m.completed.push_back(Used { id, len });
            }
        }
        &Op::Pop(count) => {
            for _ in 0..count {
                let got = q.pop_used();
                match m.completed.pop_front() {
                    None => prop_assert_eq!(got, None),
                    Some(want) => {
                        prop_assert_eq!(got, Some(Ok(want)));
                        m.chains.remove(&want.id);
                        m.popped += 1;
                    }
                }
            }
        }
        &Op::Notify(on) => dev.set_notify(on),
    }
    Ok(())
}
