//! Leases under the Raft fault model, in the deterministic simulator: message loss, duplication
//! and reordering, partitions, crashes and restarts, and node clocks with their own offsets and
//! rates (so successive leaders stamp entries from different clocks). A failure names its seed;
//! rerun it with `CONCORD_SIM_SEED=S cargo test -p concord-patterns -- simulation`.

use std::collections::BTreeMap;
use std::time::Duration;

use concord_core::command::{lock_key, LockCommand, LockState};
use concord_core::prelude::*;
use concord_raft::Raft;
use concord_sim::{NetworkConfig, SimConfig, Simulation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Seeds in the default test path; `CONCORD_SIM_SEEDS=N` runs `0..N` instead, `CONCORD_SIM_SEED=S`
/// replays one seed.
const DEFAULT_SEEDS: u64 = 100;
const RUN_MS: u64 = 20_000;
const STEP_MS: u64 = 25;
const HOLDERS: [&str; 3] = ["h1", "h2", "h3"];

/// The lock's history as every node applied it, by the lock key's version (one per change, in
/// log order), checked for agreement across nodes.
#[derive(Default)]
struct LockHistory {
    // version → the state applied at it; every node must apply the same one.
    states: BTreeMap<u64, LockState>,
}

impl LockHistory {
    fn record(&mut self, node: &NodeId, version: u64, state: LockState) -> Result<(), String> {
        match self.states.get(&version) {
            Some(existing) if *existing != state => {
                Err(format!("{node} applied {state:?} where another node applied {existing:?}"))
            }
            Some(_) => Ok(()),
            None => {
                self.states.insert(version, state);
                Ok(())
            }
        }
    }

    /// Leases (token, holder, granted, end) in token order; each must start no earlier than the
    /// previous one ended.
    fn check_windows(&self) -> Result<usize, String> {
        let mut windows: BTreeMap<u64, (String, u64, u64)> = BTreeMap::new();
        // In log order, so the last state of a token is its final one.
        for state in self.states.values() {
            let holder = state.holder.clone().unwrap_or_default();
            let window =
                windows.entry(state.token).or_insert((holder, state.granted_at_ms, state.expires_at_ms));
            if window.1 != state.granted_at_ms {
                return Err(format!(
                    "lease {} has two grant times: {} and {}",
                    state.token, window.1, state.granted_at_ms
                ));
            }
            window.2 = state.expires_at_ms;
        }
        let mut previous: Option<(u64, u64)> = None;
        for (token, (holder, granted_at_ms, end_ms)) in &windows {
            if let Some((previous_token, previous_end)) = previous {
                if *token != previous_token + 1 {
                    return Err(format!("token {token} follows {previous_token}"));
                }
                if *granted_at_ms < previous_end {
                    return Err(format!(
                        "lease {token} ({holder}) granted at {granted_at_ms}, before lease {previous_token} ended at {previous_end}"
                    ));
                }
            }
            previous = Some((*token, *end_ms));
        }
        Ok(windows.len())
    }
}

fn run_seed(seed: u64) -> Result<usize, String> {
    let mut config = Config::for_mechanism(MechanismKind::Raft);
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout =
        ElectionTimeout { min: Duration::from_millis(150), max: Duration::from_millis(300) };
    let mut sim_config = SimConfig::new(seed, 3, config);
    sim_config.network = NetworkConfig { loss: 0.05, duplicate: 0.02, ..NetworkConfig::default() };
    sim_config.clock_rate_spread = 0.01;
    let mut simulation = Simulation::new(sim_config, concord_sim::factory(Raft::new));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x10C4);
    let ids = simulation.node_ids();
    let key = lock_key("db");
    let mut history = LockHistory::default();
    let mut sequence = 1u64 << 40;
    let mut elapsed_ms = 0;
    while elapsed_ms < RUN_MS {
        simulation.run_for(Duration::from_millis(STEP_MS)).map_err(|violation| format!("{violation:?}"))?;
        elapsed_ms += STEP_MS;
        // Faults: now and then crash a node, restart it, or cut one off, and heal.
        let fault = rng.gen_range(0..100);
        let victim = ids[rng.gen_range(0..ids.len())].clone();
        match fault {
            0 => simulation.crash(&victim),
            1..=4 => ids.iter().for_each(|id| simulation.restart(id)),
            5 => simulation.partition(&[
                vec![victim.clone()],
                ids.iter().filter(|id| **id != victim).cloned().collect(),
            ]),
            6..=8 => simulation.heal(),
            _ => {}
        }
        // A client asks the node it thinks leads (any node, sometimes) for a lock operation.
        if let Some(node) = simulation.leader().or_else(|| Some(ids[rng.gen_range(0..ids.len())].clone())) {
            let holder = HOLDERS[rng.gen_range(0..HOLDERS.len())];
            let current = simulation
                .mechanism(&node)
                .and_then(|m| m.replica().machine().get(&key))
                .and_then(|bytes| LockState::decode(&bytes))
                .unwrap_or_default();
            let command = match rng.gen_range(0..4) {
                0 | 1 => LockCommand::acquire("db", holder, rng.gen_range(50..600)),
                2 => LockCommand::renew(
                    "db",
                    current.holder.clone().unwrap_or_default(),
                    current.token,
                    rng.gen_range(50..600),
                ),
                _ => LockCommand::release("db", current.holder.clone().unwrap_or_default(), current.token),
            };
            sequence += 1;
            let proposal = Proposal {
                id: ProposalId { origin: node.clone(), sequence },
                session: None,
                command: Command::Lock(command),
            };
            // Refusals (not the leader, busy) are normal here; the lock only sees what commits.
            let _ = simulation.with_mechanism(&node, |mechanism, now| mechanism.propose(now, proposal));
        }
        for id in &ids {
            for event in simulation.take_events(id) {
                if let Event::StateChanged { key: changed, new_value: Some(bytes), version, .. } = event {
                    if changed == key {
                        let state = LockState::decode(&bytes).ok_or("undecodable lock state")?;
                        history.record(id, version, state)?;
                    }
                }
            }
        }
    }
    history.check_windows()
}

/// Every seed: leases never overlap in log time, tokens go up by one per grant, and every node
/// applies the same lock states.
#[test]
fn leases_never_overlap_under_the_raft_fault_model() {
    let number = |name: &str| std::env::var(name).ok().and_then(|value| value.parse::<u64>().ok());
    let seeds = match number("CONCORD_SIM_SEED") {
        Some(seed) => seed..seed + 1,
        None => 0..number("CONCORD_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS),
    };
    let count = seeds.end - seeds.start;
    let started = std::time::Instant::now();
    let mut leases = 0;
    for seed in seeds {
        match run_seed(seed) {
            Ok(count) => leases += count,
            Err(failure) => panic!("seed {seed}: {failure}"),
        }
    }
    assert!(leases >= count as usize * 5, "too few leases granted: {leases}");
    eprintln!(
        "{count} seeds × {} s virtual, {leases} leases, in {:?} ({:.1} seeds/s)",
        RUN_MS / 1000,
        started.elapsed(),
        count as f64 / started.elapsed().as_secs_f64()
    );
}
