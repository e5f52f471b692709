//! The seeded nemesis: which fault comes next, and what it does to the network and the processes.
//!
//! Pure and deterministic: [`Nemesis::next_fault`] draws from a ChaCha RNG seeded by the run's seed,
//! and a [`Fault`] only *describes* its effect ([`Fault::cuts`], [`Fault::killed`],
//! [`Fault::paused`]); the orchestrator applies it with nftables and signals. The same seed and
//! the same leader observations give the same schedule.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One fault, on node indexes `0..nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The nodes split in two: `minority` (fewer than half) against the rest, both directions cut.
    PartitionMajority {
        /// The smaller side.
        minority: Vec<usize>,
    },
    /// The current leader cut off from everyone, both directions.
    IsolateLeader {
        /// The leader at the time the fault starts.
        leader: usize,
    },
    /// Two sides that share one node: `left` and `right` cannot talk, `bridge` talks to both
    /// (Jepsen's "bridge" partition; no side but the bridge's view holds a majority on its own).
    Bridge {
        /// One side (without the bridge node).
        left: Vec<usize>,
        /// The node in both sides.
        bridge: usize,
        /// The other side (without the bridge node).
        right: Vec<usize>,
    },
    /// `from`'s packets to every other node are dropped; packets to it still arrive.
    OneWay {
        /// The node that can no longer send.
        from: usize,
    },
    /// `kill -9` of a node (restarted when the fault ends, from its data directory).
    Kill {
        /// The node killed.
        node: usize,
    },
    /// SIGSTOP of a node (SIGCONT when the fault ends).
    Pause {
        /// The node paused.
        node: usize,
    },
    /// Several faults at once.
    Combined(Vec<Fault>),
}

impl Fault {
    /// A short name for logs and `nemesis.jsonl`.
    pub fn name(&self) -> String {
        match self {
            Fault::PartitionMajority { .. } => "partition-majority".into(),
            Fault::IsolateLeader { .. } => "isolate-leader".into(),
            Fault::Bridge { .. } => "partition-bridge".into(),
            Fault::OneWay { .. } => "one-way-cut".into(),
            Fault::Kill { .. } => "kill".into(),
            Fault::Pause { .. } => "pause".into(),
            Fault::Combined(faults) => faults.iter().map(Fault::name).collect::<Vec<_>>().join("+"),
        }
    }

    /// The nodes it affects (sorted, without duplicates).
    pub fn targets(&self) -> Vec<usize> {
        let mut targets = BTreeSet::new();
        match self {
            Fault::PartitionMajority { minority } => targets.extend(minority.iter().copied()),
            Fault::IsolateLeader { leader } => {
                targets.insert(*leader);
            }
            Fault::Bridge { bridge, .. } => {
                targets.insert(*bridge);
            }
            Fault::OneWay { from } => {
                targets.insert(*from);
            }
            Fault::Kill { node } | Fault::Pause { node } => {
                targets.insert(*node);
            }
            Fault::Combined(faults) => {
                for fault in faults {
                    targets.extend(fault.targets());
                }
            }
        }
        targets.into_iter().collect()
    }

    /// The directed links `(from, to)` whose packets are dropped while the fault lasts, for a
    /// cluster of `nodes` (sorted, without duplicates).
    pub fn cuts(&self, nodes: usize) -> Vec<(usize, usize)> {
        let mut cuts = BTreeSet::new();
        let mut cut_both = |a: &[usize], b: &[usize]| {
            for &x in a {
                for &y in b {
                    if x != y {
                        cuts.insert((x, y));
                        cuts.insert((y, x));
                    }
                }
            }
        };
        match self {
            Fault::PartitionMajority { minority } => {
                let majority: Vec<usize> = (0..nodes).filter(|node| !minority.contains(node)).collect();
                cut_both(minority, &majority);
            }
            Fault::IsolateLeader { leader } => {
                let rest: Vec<usize> = (0..nodes).filter(|node| node != leader).collect();
                cut_both(&[*leader], &rest);
            }
            Fault::Bridge { left, right, .. } => cut_both(left, right),
            Fault::OneWay { from } => {
                for to in (0..nodes).filter(|to| to != from) {
                    cuts.insert((*from, to));
                }
            }
            Fault::Kill { .. } | Fault::Pause { .. } => {}
            Fault::Combined(faults) => {
                for fault in faults {
                    cuts.extend(fault.cuts(nodes));
                }
            }
        }
        cuts.into_iter().collect()
    }

    /// Nodes killed by the fault (restarted when it ends).
    pub fn killed(&self) -> Vec<usize> {
        match self {
            Fault::Kill { node } => vec![*node],
            Fault::Combined(faults) => faults.iter().flat_map(Fault::killed).collect(),
            _ => Vec::new(),
        }
    }

    /// Nodes paused by the fault (resumed when it ends).
    pub fn paused(&self) -> Vec<usize> {
        match self {
            Fault::Pause { node } => vec![*node],
            Fault::Combined(faults) => faults.iter().flat_map(Fault::paused).collect(),
            _ => Vec::new(),
        }
    }
}

/// Timing of the nemesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NemesisTiming {
    /// Shortest time a fault lasts.
    pub fault_min: Duration,
    /// Longest time a fault lasts.
    pub fault_max: Duration,
    /// Shortest healthy time between two faults.
    pub quiet_min: Duration,
    /// Longest healthy time between two faults.
    pub quiet_max: Duration,
}

impl Default for NemesisTiming {
    fn default() -> Self {
        NemesisTiming {
            fault_min: Duration::from_secs(2),
            fault_max: Duration::from_secs(6),
            quiet_min: Duration::from_secs(1),
            quiet_max: Duration::from_secs(3),
        }
    }
}

/// The seeded fault generator for a cluster of `nodes`.
#[derive(Debug)]
pub struct Nemesis {
    nodes: usize,
    rng: ChaCha8Rng,
    timing: NemesisTiming,
    faults_drawn: u64,
}

impl Nemesis {
    /// A nemesis for `nodes` nodes (at least 3), seeded with `seed`.
    pub fn new(nodes: usize, seed: u64, timing: NemesisTiming) -> Nemesis {
        assert!(nodes >= 3, "a chaos cluster has at least 3 nodes");
        assert!(timing.fault_min <= timing.fault_max && timing.quiet_min <= timing.quiet_max);
        Nemesis {
            nodes,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300),
            timing,
            faults_drawn: 0,
        }
    }

    /// How long the next fault lasts.
    pub fn fault_duration(&mut self) -> Duration {
        self.between(self.timing.fault_min, self.timing.fault_max)
    }

    /// How long the cluster stays healthy before the next fault.
    pub fn quiet_duration(&mut self) -> Duration {
        self.between(self.timing.quiet_min, self.timing.quiet_max)
    }

    fn between(&mut self, min: Duration, max: Duration) -> Duration {
        let (min, max) = (min.as_millis() as u64, max.as_millis() as u64);
        Duration::from_millis(self.rng.gen_range(min..=max))
    }

    /// The next fault. `leader` is the leader observed just before (if any); faults aimed at the
    /// leader fall back to a random node without one. The first fault of a run isolates the leader:
    /// it is the fault that catches a node acknowledging writes it has not committed.
    pub fn next_fault(&mut self, leader: Option<usize>) -> Fault {
        let first = self.faults_drawn == 0;
        self.faults_drawn += 1;
        let leader_or_random = |rng: &mut ChaCha8Rng| leader.unwrap_or_else(|| rng.gen_range(0..self.nodes));
        if first {
            return Fault::IsolateLeader { leader: leader_or_random(&mut self.rng) };
        }
        let simple = self.simple_fault(leader);
        if self.rng.gen_bool(0.2) {
            // A combination: a partition plus a kill or pause of a node (maybe on either side).
            let node = self.rng.gen_range(0..self.nodes);
            let process_fault =
                if self.rng.gen_bool(0.5) { Fault::Kill { node } } else { Fault::Pause { node } };
            if simple.killed().contains(&node) || simple.paused().contains(&node) {
                return simple;
            }
            return Fault::Combined(vec![simple, process_fault]);
        }
        simple
    }

    fn simple_fault(&mut self, leader: Option<usize>) -> Fault {
        let mut order: Vec<usize> = (0..self.nodes).collect();
        order.shuffle(&mut self.rng);
        let leader_or_first = leader.unwrap_or(order[0]);
        match self.rng.gen_range(0..7) {
            0 => {
                let minority_max = (self.nodes - 1) / 2;
                let size = self.rng.gen_range(1..=minority_max);
                let mut minority = order[..size].to_vec();
                minority.sort_unstable();
                Fault::PartitionMajority { minority }
            }
            1 => Fault::IsolateLeader { leader: leader_or_first },
            2 => {
                let bridge = order[0];
                let half = (self.nodes - 1) / 2;
                let mut left = order[1..1 + half].to_vec();
                let mut right = order[1 + half..].to_vec();
                left.sort_unstable();
                right.sort_unstable();
                Fault::Bridge { left, bridge, right }
            }
            3 => Fault::OneWay { from: if self.rng.gen_bool(0.5) { leader_or_first } else { order[1] } },
            4 => Fault::Kill { node: leader_or_first },
            5 => Fault::Kill { node: order[1] },
            _ => Fault::Pause { node: if self.rng.gen_bool(0.5) { leader_or_first } else { order[1] } },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_partition_cuts_every_link_across_and_none_within() {
        let fault = Fault::PartitionMajority { minority: vec![1, 3] };
        let cuts = fault.cuts(5);
        assert_eq!(cuts.len(), 2 * 2 * 3);
        assert!(cuts.contains(&(1, 0)) && cuts.contains(&(0, 1)) && cuts.contains(&(3, 4)));
        assert!(!cuts.contains(&(1, 3)) && !cuts.contains(&(0, 2)));
    }

    #[test]
    fn bridge_node_keeps_both_sides() {
        let fault = Fault::Bridge { left: vec![0, 1], bridge: 2, right: vec![3, 4] };
        let cuts = fault.cuts(5);
        assert!(cuts.iter().all(|&(from, to)| from != 2 && to != 2));
        assert!(cuts.contains(&(0, 3)) && cuts.contains(&(4, 1)));
        assert!(!cuts.contains(&(0, 1)));
    }

    #[test]
    fn one_way_cut_drops_only_outgoing_packets() {
        let cuts = Fault::OneWay { from: 1 }.cuts(3);
        assert_eq!(cuts, vec![(1, 0), (1, 2)]);
    }

    #[test]
    fn combined_fault_unions_effects() {
        let fault = Fault::Combined(vec![Fault::IsolateLeader { leader: 0 }, Fault::Kill { node: 2 }]);
        assert_eq!(fault.cuts(3), vec![(0, 1), (0, 2), (1, 0), (2, 0)]);
        assert_eq!(fault.killed(), vec![2]);
        assert_eq!(fault.targets(), vec![0, 2]);
        assert_eq!(fault.name(), "isolate-leader+kill");
    }

    #[test]
    fn schedule_is_a_function_of_the_seed_and_starts_by_isolating_the_leader() {
        let draw = |seed| {
            let mut nemesis = Nemesis::new(5, seed, NemesisTiming::default());
            (0..50).map(|i| (nemesis.next_fault(Some(i % 5)), nemesis.fault_duration())).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_eq!(draw(7)[0].0, Fault::IsolateLeader { leader: 0 });
        // Every kind of fault shows up in a long enough schedule, and no partition leaves a side
        // with a strict majority on the minority side.
        let faults = draw(11);
        for name in ["partition-majority", "partition-bridge", "one-way-cut", "kill", "pause"] {
            assert!(faults.iter().any(|(fault, _)| fault.name().contains(name)), "{name} never drawn");
        }
        for (fault, duration) in &faults {
            if let Fault::PartitionMajority { minority } = fault {
                assert!(!minority.is_empty() && minority.len() <= 2);
            }
            assert!(*duration >= Duration::from_secs(2) && *duration <= Duration::from_secs(6));
        }
    }
}
