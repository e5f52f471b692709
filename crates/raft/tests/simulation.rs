//! Randomized simulation of concord-raft in concord-sim: faults (loss up to 30%, duplication,
//! reordering, partitions symmetric, one-way, around the leader and flapping, crashes and restarts
//! that lose unsynced writes, clocks at different rates), then a liveness phase, then a
//! linearizability check of the clients' history. Raft's invariants (election safety, committed
//! prefix agreement, terms and commit indexes never decreasing) are checked after every step.
//!
//! `cargo xtask sim --mechanism raft --seeds N` runs this file with `CONCORD_SIM_SEEDS=N`
//! (`--seed S` replays one seed through `CONCORD_SIM_SEED=S`).
//!
//! The broken variants (`Bug`) prove the simulator can fail: each must be caught within a bounded
//! number of seeds.

use std::ops::Range;
use std::time::Duration;

use concord_core::config::Config;
use concord_core::id::{NodeId, NodeInfo, ProposalId};
use concord_core::mechanism::MembershipChange;
use concord_raft::{Bug, Raft};
use concord_sim::{
    invariants::raft_invariants, randomized, ClientOp, MechanismFactory, NetworkConfig, SimConfig,
    Simulation, Violation,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeds `cargo test` runs by default, split over the two cluster sizes (3 and 5 nodes).
const DEFAULT_SEEDS_THREE_NODES: u64 = 5000;
const DEFAULT_SEEDS_FIVE_NODES: u64 = 2000;
/// A broken variant must be caught within this many seeds.
const SEEDS_TO_CATCH_A_BUG_MAX: u64 = 500;

fn raft() -> MechanismFactory {
    concord_sim::factory(Raft::new)
}

fn broken(bug: Bug) -> impl Fn() -> MechanismFactory {
    move || {
        concord_sim::factory(move |setup| {
            let mut raft = Raft::new(setup)?;
            raft.set_bug(bug);
            Ok(raft)
        })
    }
}

/// The config varies with the seed so that the features are all exercised: snapshots in small
/// chunks, lease reads, batching windows, tiny messages and windows, forwarding on and off.
fn config_for(seed: u64) -> Config {
    let mut config = Config::default();
    config.timeout = Duration::from_millis(2000);
    config.snapshot_interval = [0, 8, 25, 100][(seed % 4) as usize];
    config.snapshot_chunk_bytes = [64, 256, 4096][(seed % 3) as usize];
    config.lease_reads = seed % 5 == 1;
    config.batch_window = Duration::from_millis([0, 0, 5][(seed % 3) as usize]);
    config.max_entries_per_message = [1, 3, 4096][(seed % 3) as usize];
    config.max_inflight_messages = [1, 4, 256][(seed % 3) as usize];
    config.max_apply_entries = [1, 2, 8192][(seed % 5 % 3) as usize];
    config.forward_to_leader = seed % 7 != 3;
    config
}

fn options_for(seed: u64, nodes: usize) -> randomized::Options {
    let mut options = randomized::Options::new(config_for(seed));
    options.nodes = nodes;
    options.max_loss = 0.3;
    options.max_duplicate = 0.1;
    options.clock_rate_spread = 0.05;
    options
}

/// `CONCORD_SIM_SEED` replays one seed, `CONCORD_SIM_SEEDS` sets how many to run.
fn seeds(default: u64) -> Range<u64> {
    if let Some(seed) = std::env::var("CONCORD_SIM_SEED").ok().and_then(|text| text.parse::<u64>().ok()) {
        return seed..seed + 1;
    }
    let count =
        std::env::var("CONCORD_SIM_SEEDS").ok().and_then(|text| text.parse::<u64>().ok()).unwrap_or(default);
    0..count
}

fn run_cluster(nodes: usize, default_seeds: u64) {
    let summary = randomized::run_seeds(seeds(default_seeds), |seed| {
        randomized::run(seed, raft, &options_for(seed, nodes))
    });
    println!("raft, {nodes} nodes: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
}

#[test]
fn randomized_three_nodes() {
    run_cluster(3, DEFAULT_SEEDS_THREE_NODES);
}

#[test]
fn randomized_five_nodes() {
    run_cluster(5, DEFAULT_SEEDS_FIVE_NODES);
}

/// A dense fault schedule aimed at election and commit bugs: a fault every few tens of
/// milliseconds (the randomized nemesis waits hundreds), slow and often duplicated messages (so a
/// request can arrive after its receiver crashed and restarted), and writes throughout.
///
/// With `churn`, the leader is also asked to remove voters, add them back (as learners promoted once
/// caught up) and hand over leadership, all while the faults go on.
fn storm(
    seed: u64,
    nodes: usize,
    config: Config,
    factory: MechanismFactory,
    churn: bool,
) -> Result<usize, Violation> {
    let mut sim_config = SimConfig::new(seed, nodes, config);
    sim_config.network = NetworkConfig {
        loss: 0.05,
        duplicate: 0.3,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(120),
    };
    let mut simulation = Simulation::new(sim_config, factory);
    for invariant in raft_invariants() {
        simulation.add_invariant(invariant);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0005_7073);
    let ids = simulation.node_ids();
    let end = simulation.now() + Duration::from_secs(20);
    let mut client = 0u64;
    let mut changes_committed = 0usize;
    while simulation.now() < end {
        simulation.run_for(Duration::from_millis(rng.gen_range(5..60)))?;
        client += 1;
        let node = &ids[rng.gen_range(0..ids.len())];
        simulation.submit(client, node, ClientOp::Put { key: "k".into(), value: client as i64 });
        let down: Vec<NodeId> = ids.iter().filter(|id| !simulation.is_up(id)).cloned().collect();
        match rng.gen_range(0..5) {
            0 | 1 => match down.first() {
                Some(node) => simulation.restart(node),
                None => simulation.crash(&ids[rng.gen_range(0..ids.len())]),
            },
            2 => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut rng);
                let cut = rng.gen_range(1..shuffled.len());
                let second = shuffled.split_off(cut);
                simulation.partition(&[shuffled, second]);
            }
            3 => simulation.heal(),
            _ => {}
        }
        if churn && rng.gen_bool(0.3) {
            administer(&mut simulation, &mut rng, &ids, client);
        }
        changes_committed += simulation
            .take_results()
            .iter()
            .filter(|(_, result)| {
                result.accepted && result.proposal_id.sequence >= ADMINISTRATIVE_SEQUENCE_FIRST
            })
            .count();
    }
    Ok(changes_committed)
}

/// Proposal sequences of membership changes start here, far from the simulator's own.
const ADMINISTRATIVE_SEQUENCE_FIRST: u64 = 1_000_000_000;

/// One membership change or leadership transfer on the current leader, if there is one.
fn administer(simulation: &mut Simulation, rng: &mut ChaCha8Rng, ids: &[NodeId], sequence: u64) {
    let Some(leader) = simulation.leader() else { return };
    let Some(membership) = simulation.mechanism(&leader).map(|raft| raft.membership().clone()) else {
        return;
    };
    let voters: Vec<NodeId> = membership.voters().cloned().collect();
    let absent: Vec<NodeId> = ids.iter().filter(|id| !membership.contains(id)).cloned().collect();
    let id = ProposalId { origin: leader.clone(), sequence: ADMINISTRATIVE_SEQUENCE_FIRST + sequence };
    let action = rng.gen_range(0..3);
    let _ = simulation.with_mechanism(&leader, |raft, now| match action {
        0 if !absent.is_empty() => {
            let node = absent[rng.gen_range(0..absent.len())].clone();
            raft.change_membership(now, id, MembershipChange::AddVoter(NodeInfo::new(node, "")))
        }
        1 if voters.len() > 3 => {
            let node = voters[rng.gen_range(0..voters.len())].clone();
            raft.change_membership(now, id, MembershipChange::Remove(node))
        }
        _ => {
            let node = voters[rng.gen_range(0..voters.len())].clone();
            raft.transfer_leadership(now, &node)
        }
    });
}

/// Storms must not trouble the correct implementation (no false alarms in the bug tests below).
#[test]
fn storms_hold_for_the_correct_implementation() {
    for seed in seeds(100) {
        for nodes in [3, 5] {
            let mut config = config_for(seed);
            adversarial_config(&mut config);
            if let Err(violation) = storm(seed, nodes, config, raft(), false) {
                panic!("{nodes} nodes: {violation}");
            }
        }
    }
}

/// Membership changes (remove, re-add through a learner, the leader removing itself) and leadership
/// transfers under faults, with snapshots, lease reads and tiny windows varying by seed.
#[test]
fn membership_churn_under_faults() {
    let mut changes_committed = 0;
    for seed in seeds(150) {
        let pre_vote_and_check_quorum = seed % 2 == 0;
        let mut config = config_for(seed);
        if !pre_vote_and_check_quorum {
            adversarial_config(&mut config);
        }
        match storm(seed, 5, config, raft(), true) {
            Ok(changes) => changes_committed += changes,
            Err(violation) => panic!("{violation}"),
        }
    }
    println!("membership changes committed: {changes_committed}");
    assert!(changes_committed > 0, "the churn must actually change the membership");
}

/// Runs seeds until the broken variant is caught; returns the seed count it took.
fn seeds_to_catch(bug: Bug, nodes: usize, adjust: impl Fn(&mut Config)) -> u64 {
    for seed in 0..SEEDS_TO_CATCH_A_BUG_MAX {
        let mut config = config_for(seed);
        adjust(&mut config);
        if let Err(violation) = storm(seed, nodes, config, broken(bug)(), false) {
            println!("{bug:?} caught after {} seeds: {}", seed + 1, violation.message);
            return seed + 1;
        }
    }
    panic!("{bug:?} was not caught within {SEEDS_TO_CATCH_A_BUG_MAX} seeds");
}

/// Fewer safety nets: more elections, more of them overlapping.
fn adversarial_config(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
    config.lease_reads = false;
}

/// The same, with slower messages that are often duplicated (so they arrive long after they were
/// sent).
fn adversarial(options: &mut randomized::Options) {
    adversarial_config(&mut options.config);
    options.delay = (Duration::from_millis(1), Duration::from_millis(150));
    options.max_duplicate = 0.3;
}

#[test]
fn double_vote_is_caught() {
    seeds_to_catch(Bug::DoubleVote, 5, adversarial_config);
}

#[test]
fn skipped_vote_persistence_is_caught() {
    seeds_to_catch(Bug::SkipVotePersistence, 3, adversarial_config);
}

#[test]
fn committing_an_old_term_entry_by_counting_is_caught() {
    seeds_to_catch(Bug::CommitOldTermByCounting, 3, |config| {
        adversarial_config(config);
        // One entry per append lets a majority hold an old entry before the new leader's no-op.
        config.max_entries_per_message = 1;
        config.max_inflight_messages = 1;
    });
}

/// Lease reads on every seed, with crashes and clocks at different rates (within the tolerated
/// drift): the lease must never serve a stale read.
#[test]
fn randomized_lease_reads() {
    let summary = randomized::run_seeds(seeds(500), |seed| {
        let mut options = options_for(seed, 3);
        options.config.lease_reads = true;
        options.config.check_quorum = true;
        randomized::run(seed, raft, &options)
    });
    println!("raft, lease reads: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
}

/// Client sessions that expire while the faults go on (crashes and restarts replaying the log,
/// snapshots, partitions): an expiry of ten proposal timeouts, and clients idle between writes for
/// longer than that at times. Inside the expiry's assumptions: retries stay within a few timeouts
/// of the first attempt; the clocks (so the leaders' timestamps) start at most 0.5 s apart; no
/// pauses (a frozen process holding a proposal past the expiry is outside them). With the other
/// runs' clock offsets of up to 10 s, more than the 3 s expiry, this finds a write applied twice:
/// the assumption is real, and the default expiry (one hour) is what keeps it.
#[test]
fn randomized_session_expiry() {
    let summary = randomized::run_seeds(seeds(500), |seed| {
        let mut options = options_for(seed, 3);
        options.config.timeout = Duration::from_millis(300);
        options.config.client_session_expiry = Duration::from_secs(3);
        options.ops_per_client = 5;
        options.allow_pauses = false;
        options.clock_offset_max = Duration::from_millis(500);
        randomized::run(seed, raft, &options)
    });
    println!("raft, session expiry: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
    assert!(summary.totals.session_clients_expired > 0, "no session expired: {summary}");
}

/// The adversarial settings must not trouble the correct implementation.
#[test]
fn randomized_adversarial() {
    let summary = randomized::run_seeds(seeds(1000), |seed| {
        let mut options = options_for(seed, if seed % 2 == 0 { 3 } else { 5 });
        adversarial(&mut options);
        randomized::run(seed, raft, &options)
    });
    println!("raft, adversarial: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
}
