//! The randomized simulation of simple majority, callable from tests and from
//! `cargo xtask sim --mechanism majority --seeds N` (feature `simulation`).
//!
//! Each seed runs [`concord_sim::randomized::run`] with simple majority's config on three nodes:
//! message loss up to 30%, duplication, reordering (random delays), symmetric, one-way and
//! flapping partitions, crashes and restarts, and a 5% clock-rate spread, with clients writing,
//! compare-and-swapping and adding on three shared keys. Then everything heals: a fresh write must
//! be accepted and every node must converge to the same state, and the write history must be
//! linearizable per key. Throughout, [`OneValuePerSlot`] checks the guarantee.
//!
//! ```no_run
//! let summary = concord_majority::simulation::run_seeds(0..2000);
//! assert!(summary.failures.is_empty(), "{summary}");
//! println!("{summary}");
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use concord_core::config::{Config, MechanismKind};
use concord_core::event::Event;
use concord_core::id::NodeId;
use concord_core::id::NodeId as Node;
use concord_core::mechanism::Ready;
use concord_sim::randomized::{self, Options, Report, SeedSummary};
use concord_sim::{
    ClientOp, Invariant, MechanismFactory, NetworkConfig, SimConfig, SimView, Simulation, Violation,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Majority;

/// The config every simulated node runs: simple majority, `quorum: 0.51`, a one-second timeout,
/// small snapshot intervals so that snapshots and snapshot catch-up happen within a run.
pub fn config() -> Config {
    let mut config = Config::for_mechanism(MechanismKind::SimpleMajority);
    config.timeout = Duration::from_millis(1000);
    config.heartbeat_interval = Duration::from_millis(100);
    config.snapshot_interval = 16;
    config
}

/// The scenario's options: simple majority's config and invariant, the Raft fault model.
pub fn options() -> Options {
    let mut options = Options::new(config());
    options.max_loss = 0.3;
    options.max_duplicate = 0.1;
    options.invariants = invariants;
    // The liveness phase may first have to wait out recoveries of slots left open by the faults.
    options.duration_liveness = Duration::from_secs(20);
    options
}

/// The invariants of a simple-majority run.
pub fn invariants() -> Vec<Box<dyn Invariant>> {
    vec![Box::new(OneValuePerSlot::default())]
}

/// Builds correct simple-majority nodes.
pub fn factory() -> MechanismFactory {
    concord_sim::factory(Majority::new)
}

/// Builds nodes with a deliberately broken behaviour.
#[cfg(feature = "broken-variants")]
pub fn broken_factory(bug: crate::Bug) -> MechanismFactory {
    concord_sim::factory(move |setup| Majority::with_bug(setup, bug))
}

/// Runs one seed.
pub fn run_seed(seed: u64) -> Result<Report, Violation> {
    randomized::run(seed, factory, &options())
}

/// Runs every seed in `seeds` and summarizes (failures carry the seed that reproduces them).
pub fn run_seeds(seeds: Range<u64>) -> SeedSummary {
    let options = options();
    randomized::run_seeds(seeds, |seed| randomized::run(seed, factory, &options))
}

/// A scenario aimed at the votes themselves: one hot key written by every client from every node,
/// 30% loss, and a storm of short crash-restarts (a node is down for 1–30 ms every few tens of
/// ms) and single-node isolations of up to 2.5 s — the windows between a vote and its decision,
/// where a forgotten or released vote lets a second value win. Checks [`OneValuePerSlot`] only
/// (no liveness phase); `duration` of virtual time.
pub fn crash_storm(seed: u64, factory: MechanismFactory, duration: Duration) -> Result<Report, Violation> {
    let mut sim_config = SimConfig::new(seed, 3, config());
    sim_config.network = NetworkConfig { loss: 0.3, duplicate: 0.05, ..NetworkConfig::default() };
    sim_config.clock_rate_spread = 0.05;
    let mut simulation = Simulation::new(sim_config, factory);
    for invariant in invariants() {
        simulation.add_invariant(invariant);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x570a_570a);
    let ids: Vec<Node> = simulation.node_ids();
    let clients = 4u64;
    let mut outstanding: Vec<Option<concord_sim::OperationId>> = vec![None; clients as usize];
    let mut value = 0i64;
    let mut restart_at: Option<(concord_core::time::Instant, Node)> = None;
    let mut heal_at: Option<concord_core::time::Instant> = None;
    let end = simulation.now() + duration;
    while simulation.now() < end {
        let now = simulation.now();
        let completed = simulation.take_completed();
        for slot in outstanding.iter_mut() {
            if slot.is_some_and(|operation| completed.contains(&operation)) {
                *slot = None;
            }
        }
        for (client, slot) in outstanding.iter_mut().enumerate() {
            if slot.is_none() {
                let up: Vec<Node> = ids.iter().filter(|id| simulation.is_up(id)).cloned().collect();
                if let Some(node) = up.choose(&mut rng) {
                    value += 1;
                    *slot = Some(simulation.submit(
                        client as u64 + 1,
                        node,
                        ClientOp::Put { key: "hot".into(), value },
                    ));
                }
            }
        }
        if let Some((at, node)) = restart_at.clone() {
            if at <= now {
                simulation.restart(&node);
                restart_at = None;
            }
        } else if rng.gen_bool(0.3) {
            if let Some(node) = ids.choose(&mut rng) {
                simulation.crash(node);
                restart_at = Some((now + Duration::from_millis(rng.gen_range(1..=30)), node.clone()));
            }
        }
        match heal_at {
            Some(at) if at <= now => {
                simulation.heal();
                heal_at = None;
            }
            None if rng.gen_bool(0.02) => {
                if let Some(node) = ids.choose(&mut rng) {
                    simulation.isolate(node);
                    heal_at = Some(now + Duration::from_millis(rng.gen_range(100..=2500)));
                }
            }
            _ => {}
        }
        simulation.run_for(Duration::from_millis(rng.gen_range(5..=40)))?;
    }
    let (ops_ok, ops_fail, ops_unknown) = simulation.history().outcome_counts();
    let stats = simulation.stats();
    Ok(Report {
        seed,
        ops_ok,
        ops_fail,
        ops_unknown,
        faults: 0,
        steps: stats.steps,
        virtual_time: duration,
        stats,
        trace_hash: simulation.trace_hash(),
        // Simple majority's session table does not expire clients.
        session_clients_expired: 0,
    })
}

/// What a membership-churn run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChurnReport {
    /// Membership changes accepted.
    pub changes_accepted: usize,
    /// Membership changes refused or failed (open votes, different states, faults).
    pub changes_failed: usize,
    /// Writes accepted.
    pub writes_accepted: usize,
}

/// Membership churn: four nodes; every few hundred ms a random node proposes removing `n4` (if it
/// is a voter) or adding it back, while clients write two keys, the network loses 10% and nodes
/// crash and restart. Checks [`OneValuePerSlot`] throughout; at the end (healed, all restarted) every
/// node must agree on the membership and the members on the key-value state.
pub fn membership_churn(seed: u64, duration: Duration) -> Result<ChurnReport, Violation> {
    let mut sim_config = SimConfig::new(seed, 4, config());
    let lossy = NetworkConfig { loss: 0.1, duplicate: 0.05, ..NetworkConfig::default() };
    sim_config.network = lossy.clone();
    sim_config.clock_rate_spread = 0.05;
    let mut simulation = Simulation::new(sim_config, factory());
    for invariant in invariants() {
        simulation.add_invariant(invariant);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a2_6e00);
    let ids: Vec<Node> = simulation.node_ids();
    let churned = Node::new("n4");
    let mut report = ChurnReport::default();
    let mut outstanding: Vec<Option<concord_sim::OperationId>> = vec![None; 3];
    let mut value = 0i64;
    let mut sequence = 1u64 << 40; // Far from the simulator's own proposal numbers.
    let mut change_at = simulation.now() + Duration::from_millis(300);
    let mut down: Option<(concord_core::time::Instant, Node)> = None;
    let end = simulation.now() + duration;
    while simulation.now() < end {
        let now = simulation.now();
        let completed = simulation.take_completed();
        for slot in outstanding.iter_mut() {
            if slot.is_some_and(|operation| completed.contains(&operation)) {
                *slot = None;
            }
        }
        for (client, slot) in outstanding.iter_mut().enumerate() {
            if slot.is_none() && rng.gen_bool(0.3) {
                let node = &ids[rng.gen_range(0..ids.len())];
                value += 1;
                let key = format!("k{}", rng.gen_range(0..2));
                *slot = Some(simulation.submit(client as u64 + 1, node, ClientOp::Put { key, value }));
            }
        }
        for (_, result) in simulation.take_results() {
            if result.key == crate::MEMBERSHIP_KEY {
                if result.accepted {
                    report.changes_accepted += 1;
                } else {
                    report.changes_failed += 1;
                }
            } else if result.accepted {
                report.writes_accepted += 1;
            }
        }
        if change_at <= now {
            let proposer = &ids[rng.gen_range(0..3)];
            sequence += 1;
            let id = concord_core::id::ProposalId { origin: proposer.clone(), sequence };
            let churned = churned.clone();
            let refused = simulation.with_mechanism(proposer, |mechanism, local| {
                let change = if mechanism.membership().is_voter(&churned) {
                    concord_core::mechanism::MembershipChange::Remove(churned)
                } else {
                    concord_core::mechanism::MembershipChange::AddVoter(concord_core::id::NodeInfo::new(
                        churned.as_str(),
                        "",
                    ))
                };
                mechanism.change_membership(local, id, change).is_err()
            });
            if refused == Some(true) {
                report.changes_failed += 1;
            }
            change_at = now + Duration::from_millis(rng.gen_range(200..=800));
        }
        match down.clone() {
            Some((at, node)) if at <= now => {
                simulation.restart(&node);
                down = None;
            }
            None if rng.gen_bool(0.01) => {
                let node = ids[rng.gen_range(0..ids.len())].clone();
                simulation.crash(&node);
                down = Some((now + Duration::from_millis(rng.gen_range(50..=1500)), node));
            }
            _ => {}
        }
        simulation.run_for(Duration::from_millis(rng.gen_range(5..=40)))?;
    }
    simulation.heal();
    simulation.set_network(NetworkConfig { loss: 0.0, duplicate: 0.0, ..lossy });
    for id in &ids {
        simulation.restart(id);
    }
    simulation.run_for(Duration::from_secs(15))?;
    // n1 is never removed: the members of its membership must share it and the state. (A removed
    // n4 hears no more decisions, so its own view may stay stale.)
    let reference =
        simulation.mechanism(&ids[0]).map(|m| (m.membership().clone(), m.replica().machine().snapshot()));
    let Some((membership, state)) = reference else {
        return Err(simulation.violation_now("n1 is down after the liveness phase".into()));
    };
    for member in membership.voters() {
        let view =
            simulation.mechanism(member).map(|m| (m.membership().clone(), m.replica().machine().snapshot()));
        if view.as_ref() != Some(&(membership.clone(), state.clone())) {
            return Err(simulation.violation_now(format!(
                "no convergence after membership churn: {member} holds another membership or state \
                 than n1 (n1's voters: {:?})",
                membership.voters().collect::<Vec<_>>()
            )));
        }
    }
    Ok(report)
}

/// At most one value is accepted per (key, version), on any node, and every node that applies
/// version `v` of a key applies the same value there — so each accepted value is the one applied
/// everywhere.
///
/// It watches every `Ready`: the changes of accepted
/// [`ProposalResult`](concord_core::event::ProposalResult)s (a retry with the same client session
/// gets the first result back, so it repeats the same changes) and the `state:changed` events every
/// node emits for each change it applies.
#[derive(Debug, Default)]
pub struct OneValuePerSlot {
    /// (key, version) → the value applied there and the node that applied it first.
    applied: BTreeMap<(String, u64), (Option<Bytes>, NodeId)>,
    /// (key, version after) → who had it accepted, and the value.
    accepted: BTreeMap<(String, u64), (String, Option<Bytes>)>,
}

impl Invariant for OneValuePerSlot {
    fn after_ready(&mut self, node: &NodeId, ready: &Ready, _view: &SimView<'_>) -> Result<(), String> {
        for event in &ready.events {
            if let Event::StateChanged { key, new_value, version, .. } = event {
                let slot = (key.clone(), *version);
                match self.applied.get(&slot) {
                    Some((value, first)) if value != new_value => {
                        return Err(format!(
                            "{node} applied {new_value:?} at {key:?} version {version}, but {first} applied {value:?}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.applied.insert(slot, (new_value.clone(), node.clone()));
                    }
                }
            }
        }
        for result in ready.results.iter().filter(|result| result.accepted) {
            let Some(output) = &result.output else {
                return Err(format!("{node}: accepted {} without an output", result.proposal_id));
            };
            let identity = result.proposal_id.to_string();
            for change in &output.changes {
                let slot = (change.key.clone(), change.version);
                // A retry with the same client session gets the first result back: same changes.
                match self.accepted.get(&slot) {
                    Some((first, value)) if *value != change.new_value => {
                        return Err(format!(
                            "two values accepted at {:?} version {}: {first} ({value:?}) and {identity} ({:?}) on {node}",
                            change.key, change.version, change.new_value
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.accepted.insert(slot.clone(), (identity.clone(), change.new_value.clone()));
                    }
                }
                if let Some((applied, first)) = self.applied.get(&slot) {
                    if *applied != change.new_value {
                        return Err(format!(
                            "{identity} accepted {:?} at {:?} version {} on {node}, but {first} applied {applied:?}",
                            change.new_value, change.key, change.version
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
