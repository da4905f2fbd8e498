//! Ranking the nodes that passed the filters (swarm.md §2.2).
//!
//! Per node, with totals from the engine's `/info` (`MemTotal`, `NCPU`) raised by
//! [`OVERCOMMIT_PERCENT`] as Swarm did, and reservations counted as
//! *pending creates on the node + any `HostConfig.Memory`/`NanoCpus` found in its container list
//! entries* (the engine's list has neither, so today only pending creates count; a caller that
//! merges inspect data into the entries gets Swarm's "every container, stopped ones included"):
//!
//! - a node whose totals are below the request is skipped;
//! - `cpuScore = (usedCPU + requestedCPU) × 100 / totalCPU`, or 100 when no CPU is requested
//!   (CPU in NanoCpus: Docker's semantics, not Swarm's "CpuShares are cores");
//! - `memScore` likewise;
//! - the node is kept only if both are ≤ 100;
//! - `weight = cpuScore + memScore + healthFactor × 100` (only healthy nodes get here, so the
//!   health term is the same for all; it is kept for parity with Swarm's numbers).
//!
//! `spread` sorts by weight ascending, then fewer containers (stopped and pending included),
//! then in an order drawn from the seed (see [`tie_break`]); `binpack` by weight descending, then more containers, then node name;
//! `random` shuffles the nodes that fit with a seeded xorshift, so tests can pin the result.
//! No node left: [`ScheduleError::NoResources`].

use std::cmp::Reverse;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::filters::NodeView;
use super::placement::Placement;
use super::ScheduleError;

/// Totals are raised by this much, as Swarm's default `--cluster-opt swarm.overcommit=0.05`.
pub const OVERCOMMIT_PERCENT: i128 = 5;

/// `--strategy`: how the nodes that pass the filters are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Least loaded first: with no reservations, the node with the fewest containers.
    #[default]
    Spread,
    /// Most loaded node that still fits first: fill nodes one at a time.
    Binpack,
    /// Any node that fits (for debugging, as in Swarm).
    Random,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Spread => "spread",
            Strategy::Binpack => "binpack",
            Strategy::Random => "random",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = ScheduleError;

    /// `--strategy`; anything else is [`ScheduleError::UnknownStrategy`].
    fn from_str(s: &str) -> Result<Strategy, ScheduleError> {
        match s {
            "spread" => Ok(Strategy::Spread),
            "binpack" => Ok(Strategy::Binpack),
            "random" => Ok(Strategy::Random),
            other => Err(ScheduleError::UnknownStrategy(other.to_owned())),
        }
    }
}

/// A node's load as the strategies see it.
struct Weighed<'v, 'a> {
    node: &'v NodeView<'a>,
    weight: i128,
    containers: usize,
}

/// Orders `nodes` best first, dropping those the request does not fit.
pub(crate) fn rank<'v, 'a>(
    strategy: Strategy,
    nodes: Vec<&'v NodeView<'a>>,
    p: &Placement,
    seed: u64,
) -> Result<Vec<&'v NodeView<'a>>, ScheduleError> {
    let health_factor = match strategy {
        Strategy::Spread => -10,
        Strategy::Binpack => 10,
        Strategy::Random => 0,
    };
    let mut weighed: Vec<Weighed> = nodes
        .into_iter()
        .filter_map(|n| weigh(n, p, health_factor))
        .collect();
    if weighed.is_empty() {
        return Err(ScheduleError::NoResources);
    }
    match strategy {
        Strategy::Spread => weighed.sort_by_cached_key(|w| {
            (
                w.weight,
                w.containers,
                tie_break(seed, w.node.name()),
                w.node.name().to_owned(),
            )
        }),
        Strategy::Binpack => weighed.sort_by(|a, b| {
            (Reverse(a.weight), Reverse(a.containers), a.node.name()).cmp(&(
                Reverse(b.weight),
                Reverse(b.containers),
                b.node.name(),
            ))
        }),
        Strategy::Random => {
            weighed.sort_by(|a, b| a.node.name().cmp(b.node.name()));
            let mut rng = XorShift::new(seed);
            for i in (1..weighed.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                weighed.swap(i, j);
            }
        }
    }
    Ok(weighed.into_iter().map(|w| w.node).collect())
}

fn weigh<'v, 'a>(
    node: &'v NodeView<'a>,
    p: &Placement,
    health_factor: i128,
) -> Option<Weighed<'v, 'a>> {
    let info = &node.cand.node.info;
    let overcommit = |total: i128| total + total * OVERCOMMIT_PERCENT / 100;
    let total_memory = overcommit(
        info.get("MemTotal")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .into(),
    );
    let total_cpu = overcommit(
        i128::from(info.get("NCPU").and_then(Value::as_i64).unwrap_or(0)) * 1_000_000_000,
    );
    let (want_memory, want_cpu) = (i128::from(p.memory.max(0)), i128::from(p.nano_cpus.max(0)));
    if total_memory < want_memory || total_cpu < want_cpu {
        return None;
    }
    let listed = |field: &str| -> i128 {
        node.cand
            .containers
            .iter()
            .filter_map(|c| c.get("HostConfig")?.get(field)?.as_i64())
            .map(|v| i128::from(v.max(0)))
            .sum()
    };
    // What the node's agent reported its containers reserve, or what the list says if it says
    // more (entries a caller enriched with `HostConfig`): the same containers, not counted twice.
    let reported = node.cand.node.reserved;
    let used_memory = listed("Memory").max(i128::from(reported.memory))
        + node
            .pending
            .iter()
            .map(|x| i128::from(x.memory.max(0)))
            .sum::<i128>();
    let used_cpu = listed("NanoCpus").max((reported.cpus * 1e9).round() as i128)
        + node
            .pending
            .iter()
            .map(|x| i128::from(x.nano_cpus.max(0)))
            .sum::<i128>();
    let score = |used: i128, want: i128, total: i128| {
        if want > 0 {
            (used + want) * 100 / total
        } else {
            100
        }
    };
    let (cpu_score, memory_score) = (
        score(used_cpu, want_cpu, total_cpu),
        score(used_memory, want_memory, total_memory),
    );
    if cpu_score > 100 || memory_score > 100 {
        return None;
    }
    let weight = cpu_score + memory_score + health_factor * 100;
    Some(Weighed {
        node,
        weight,
        containers: node.container_count(),
    })
}

/// Spread's order among equally loaded nodes: a shuffle drawn from the caller's seed, as
/// Swarm's (whose sort over a map's nodes left ties in no set order). By name, an idle
/// cluster whose containers come and go one at a time (a test suite, a CI job) put nearly
/// every container on the first node.
fn tie_break(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, mixed with the seed.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    XorShift::new(seed ^ hash).next()
}

/// xorshift64*: enough to shuffle a node list, and reproducible from the caller's seed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // The state must not be zero; mix the seed so that nearby seeds diverge at once.
        let s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        XorShift(if s == 0 { 0x2545_F491_4F6C_DD1D } else { s })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
