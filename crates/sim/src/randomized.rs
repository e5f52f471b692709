//! A reusable randomized scenario for mechanism crates: faults and clients, then healing and a
//! demand for progress, then a linearizability check.
//!
//! ```text
//! fault phase     a seeded nemesis crashes, restarts and pauses nodes, slows disks down,
//!                 partitions the network (both ways, one way, around the leader, flapping), and
//!                 varies loss and duplication, while clients issue reads, writes,
//!                 compare-and-swaps and adds on a few keys (retrying unknown outcomes with the
//!                 same client session)
//! liveness phase  heal everything, resume and restart every node, stop loss; a fresh write must commit
//!                 and every node must converge to the same key-value state within a bound
//! check           the history must be linearizable
//! ```
//!
//! A mechanism crate's test is a loop over seeds:
//!
//! ```no_run
//! # use concord_core::config::Config;
//! # use concord_sim::{randomized, MechanismFactory};
//! # // In a mechanism crate: `concord_sim::factory(concord_raft::Raft::new)`.
//! # fn raft_factory() -> MechanismFactory { unimplemented!() }
//! let options = randomized::Options::new(Config::default());
//! let summary = randomized::run_seeds(0..2000, |seed| randomized::run(seed, raft_factory, &options));
//! assert!(summary.failures.is_empty(), "{summary}");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use concord_core::config::Config;
use concord_core::id::NodeId;
use concord_core::time::Instant;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::history::{ClientOp, OperationId, OperationKind, Outcome, Response};
use crate::invariants::{raft_invariants, Invariant};
use crate::linearizability;
use crate::simulation::{MechanismFactory, NetworkConfig, SimConfig, SimStats, Simulation, Violation};

/// What a randomized run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Cluster size.
    pub nodes: usize,
    /// Virtual time of the fault phase.
    pub duration_faults: Duration,
    /// Virtual time the liveness phase may take before "no progress" is a failure.
    pub duration_liveness: Duration,
    /// Concurrent clients, each with one operation outstanding at a time.
    pub clients: usize,
    /// Operations each client issues during the fault phase.
    pub ops_per_client: usize,
    /// Keys the clients share (few keys, many conflicts).
    pub keys: usize,
    /// Highest message loss the nemesis sets (capped at 0.3).
    pub max_loss: f64,
    /// Highest duplication probability the nemesis sets.
    pub max_duplicate: f64,
    /// Whether the nemesis crashes and restarts nodes (at most a minority down at once), and
    /// slows disks down at times (so that crashes catch more writes in flight).
    pub allow_crashes: bool,
    /// Whether the nemesis partitions the network: symmetric, one-way, leader-isolated, flapping.
    pub allow_partitions: bool,
    /// Whether the nemesis freezes nodes for a while (`SIGSTOP`-like; the leader half the time):
    /// a paused leader that resumes must not act on what it believed before the pause.
    pub allow_pauses: bool,
    /// Each node's clock rate is in `[1 - spread, 1 + spread]`, so two clocks may differ in rate by
    /// up to `(1 + spread) / (1 - spread) - 1` (10.5% for 0.05). Keep that within
    /// `config.lease_clock_drift_max_per_mille` when lease reads are on, or the run tests the
    /// lease outside its stated assumption.
    pub clock_rate_spread: f64,
    /// Each node's clock starts at a random offset up to this (see `SimConfig::clock_offset_max`):
    /// the leaders' timestamps differ by as much.
    pub clock_offset_max: Duration,
    /// Retries (same client session) of a write whose outcome is unknown.
    pub retries_max: u32,
    /// Whether to check the history for linearizability at the end.
    pub check_linearizability: bool,
    /// The invariants to check throughout (a fresh set per run).
    pub invariants: fn() -> Vec<Box<dyn Invariant>>,
    /// The mechanism config.
    pub config: Config,
    /// Shortest and longest message delay when the network is healthy.
    pub delay: (Duration, Duration),
    /// Shortest and longest time a write takes to become durable (slow disks widen the window in
    /// which a crash loses acknowledged-but-not-durable work).
    pub persist_delay: (Duration, Duration),
}

impl Options {
    /// Defaults: 3 nodes, 10 s of faults, 10 s for liveness, 3 clients × 15 operations on 3 keys,
    /// up to 10% loss, crashes and partitions on, 5% clock spread, Raft invariants.
    pub fn new(config: Config) -> Self {
        Options {
            nodes: 3,
            duration_faults: Duration::from_secs(10),
            duration_liveness: Duration::from_secs(10),
            clients: 3,
            ops_per_client: 15,
            keys: 3,
            max_loss: 0.1,
            max_duplicate: 0.05,
            allow_crashes: true,
            allow_partitions: true,
            allow_pauses: true,
            clock_rate_spread: 0.05,
            clock_offset_max: Duration::from_secs(10),
            retries_max: 2,
            check_linearizability: true,
            invariants: raft_invariants,
            config,
            delay: (Duration::from_millis(1), Duration::from_millis(10)),
            persist_delay: (Duration::from_micros(100), Duration::from_millis(5)),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new(Config::default())
    }
}

/// What a successful run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Operations that succeeded.
    pub ops_ok: usize,
    /// Operations definitely refused.
    pub ops_fail: usize,
    /// Operations whose outcome is unknown.
    pub ops_unknown: usize,
    /// Faults the nemesis injected.
    pub faults: usize,
    /// Simulator steps.
    pub steps: u64,
    /// Virtual time the run took.
    pub virtual_time: Duration,
    /// Simulator counters.
    pub stats: SimStats,
    /// Hash of the whole trace (equal for equal runs).
    pub trace_hash: u64,
    /// Clients the nodes' session tables forgot by expiry, summed over the nodes at the end (each
    /// node counts since its last start).
    pub session_clients_expired: u64,
}

/// Results of many seeds.
#[derive(Debug)]
pub struct SeedSummary {
    /// Seeds run.
    pub seeds: u64,
    /// The failures, in seed order.
    pub failures: Vec<Violation>,
    /// Wall-clock time taken (for reporting speed only).
    pub elapsed: std::time::Duration,
    /// Seeds per wall-clock second.
    pub seeds_per_second: f64,
    /// Totals over the successful seeds.
    pub totals: Report,
}

impl fmt::Display for SeedSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} seeds, {} failed, {:.1} s ({:.1} seeds/s); ops ok {} fail {} unknown {}, faults {}, steps {}, \
             virtual time {:.0} s, sessions expired {}",
            self.seeds,
            self.failures.len(),
            self.elapsed.as_secs_f64(),
            self.seeds_per_second,
            self.totals.ops_ok,
            self.totals.ops_fail,
            self.totals.ops_unknown,
            self.totals.faults,
            self.totals.steps,
            self.totals.virtual_time.as_secs_f64(),
            self.totals.session_clients_expired
        )?;
        if let Some(first) = self.failures.first() {
            let seeds: Vec<String> = self.failures.iter().map(|failure| failure.seed.to_string()).collect();
            writeln!(f, "failed seeds: {}", seeds.join(" "))?;
            write!(f, "first failure:\n{first}")?;
        }
        Ok(())
    }
}

/// Runs `run` for every seed and gathers the failures.
pub fn run_seeds(seeds: Range<u64>, mut run: impl FnMut(u64) -> Result<Report, Violation>) -> SeedSummary {
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut totals = Report::default();
    let count = seeds.end.saturating_sub(seeds.start);
    for seed in seeds {
        match run(seed) {
            Ok(report) => {
                totals.ops_ok += report.ops_ok;
                totals.ops_fail += report.ops_fail;
                totals.ops_unknown += report.ops_unknown;
                totals.faults += report.faults;
                totals.steps += report.steps;
                totals.virtual_time += report.virtual_time;
                totals.session_clients_expired += report.session_clients_expired;
            }
            Err(violation) => failures.push(violation),
        }
    }
    let elapsed = started.elapsed();
    let seeds_per_second = count as f64 / elapsed.as_secs_f64().max(1e-9);
    SeedSummary { seeds: count, failures, elapsed, seeds_per_second, totals }
}

/// One client: at most one operation outstanding.
struct Client {
    id: u64,
    issued: usize,
    current: Option<OperationId>,
    retries: u32,
    wake_at: Instant,
    /// Values this client last saw per key, for compare-and-swap expectations.
    seen: Vec<Option<i64>>,
}

#[derive(Clone, Debug)]
enum Fault {
    Crash,
    /// Disks become slow (or recover): crashes then catch more writes in flight.
    Disk,
    Restart,
    Symmetric,
    OneWay,
    IsolateLeader,
    Flap,
    Heal,
    Pause,
    Resume(NodeId),
    Network,
}

/// Runs the scenario for one seed. `factory` builds the [`MechanismFactory`] (called once).
pub fn run(
    seed: u64,
    factory: impl Fn() -> MechanismFactory,
    options: &Options,
) -> Result<Report, Violation> {
    let mut config = SimConfig::new(seed, options.nodes, options.config.clone());
    config.clock_rate_spread = options.clock_rate_spread;
    config.clock_offset_max = options.clock_offset_max;
    (config.persist_delay_min, config.persist_delay_max) = options.persist_delay;
    let healthy =
        NetworkConfig { loss: 0.0, duplicate: 0.0, delay_min: options.delay.0, delay_max: options.delay.1 };
    config.network = healthy.clone();
    let mut simulation = Simulation::new(config, factory());
    if options.nodes == 0 {
        return Err(simulation.violation_now("randomized::Options::nodes is 0: nothing to simulate".into()));
    }
    for invariant in (options.invariants)() {
        simulation.add_invariant(invariant);
    }
    // The scenario's choices use their own stream, so they do not shift the network's.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed_5eed_5eed);
    let ids = simulation.node_ids();
    let keys: Vec<String> = (0..options.keys.max(1)).map(|k| format!("k{k}")).collect();
    let mean_gap = mean_gap(options);
    let mut clients: Vec<Client> = (0..options.clients)
        .map(|index| Client {
            id: index as u64 + 1,
            issued: 0,
            current: None,
            retries: 0,
            wake_at: Instant::ZERO + random_between(&mut rng, Duration::ZERO, mean_gap),
            seen: vec![None; keys.len()],
        })
        .collect();
    let mut faults = 0usize;
    let mut planned = Planned::default();
    let mut nemesis_at =
        Instant::ZERO + random_between(&mut rng, Duration::from_millis(100), Duration::from_millis(600));
    let fault_end = simulation.now() + options.duration_faults;

    // ----- fault phase -----
    loop {
        handle_completions(&mut simulation, &mut clients, &mut rng, &ids, options, &keys, true);
        if simulation.now() >= fault_end {
            break;
        }
        let mut next_action = fault_end.min(nemesis_at);
        if let Some(time) = planned.next_time() {
            next_action = next_action.min(time);
        }
        for client in &clients {
            if client.current.is_none() && client.issued < options.ops_per_client {
                next_action = next_action.min(client.wake_at);
            }
        }
        if simulation.next_event_time().is_some_and(|time| time <= next_action) {
            simulation.step()?;
            continue;
        }
        simulation.run_until(next_action)?;
        let now = simulation.now();
        while let Some(fault) = planned.take_due(now) {
            inject(&mut simulation, &mut rng, fault, &ids, options, &mut planned, &healthy);
        }
        if nemesis_at <= now {
            if let Some(fault) = choose_fault(&simulation, &mut rng, &ids, options) {
                inject(&mut simulation, &mut rng, fault, &ids, options, &mut planned, &healthy);
                faults += 1;
            }
            nemesis_at =
                now + random_between(&mut rng, Duration::from_millis(100), Duration::from_millis(800));
        }
        for client in &mut clients {
            if client.current.is_none() && client.issued < options.ops_per_client && client.wake_at <= now {
                issue(&mut simulation, client, &mut rng, &ids, &keys);
            }
        }
    }

    // ----- liveness phase -----
    simulation.note("LIVENESS PHASE: heal, restart all, no loss");
    simulation.heal();
    simulation.set_network(healthy.clone());
    simulation.set_persist_delay(options.persist_delay.0, options.persist_delay.1);
    for id in &ids {
        simulation.resume(id);
        simulation.restart(id);
    }
    let liveness_end = simulation.now() + options.duration_liveness;
    let mut attempt = 0usize;
    let mut progress = None;
    while simulation.now() < liveness_end {
        let node = &ids[attempt % ids.len()];
        attempt += 1;
        let value = -(attempt as i64);
        let operation = simulation.submit(0, node, ClientOp::Put { key: "liveness".into(), value });
        let remaining = liveness_end.saturating_duration_since(simulation.now());
        simulation.run_until_condition(remaining, |simulation| {
            simulation.operation(operation).is_some_and(|op| op.outcome != Outcome::Pending)
        })?;
        handle_completions(&mut simulation, &mut clients, &mut rng, &ids, options, &keys, false);
        if simulation.operation(operation).is_some_and(|op| matches!(op.outcome, Outcome::Ok(_))) {
            progress = Some(operation);
            break;
        }
        simulation.run_for(Duration::from_millis(50).min(remaining))?;
    }
    if progress.is_none() {
        return Err(simulation.violation_now(format!(
            "no progress: no write committed within {:?} after healing the network and restarting every node{}",
            options.duration_liveness,
            describe_nodes(&simulation)
        )));
    }
    let check_interval = Duration::from_millis(10);
    let converged = loop {
        if converged(&simulation) {
            break true;
        }
        if simulation.now() >= liveness_end {
            break false;
        }
        let step = check_interval.min(liveness_end.saturating_duration_since(simulation.now()));
        simulation.run_for(step)?;
        handle_completions(&mut simulation, &mut clients, &mut rng, &ids, options, &keys, false);
    };
    if !converged {
        return Err(simulation.violation_now(format!(
            "no convergence: nodes still hold different key-value states {:?} after healing{}",
            options.duration_liveness,
            describe_nodes(&simulation)
        )));
    }

    // ----- check -----
    if options.check_linearizability {
        if let Err(error) = linearizability::check(simulation.history()) {
            return Err(simulation.violation_now(format!("linearizability check failed: {error}")));
        }
    }
    let (ops_ok, ops_fail, ops_unknown) = simulation.history().outcome_counts();
    let stats = simulation.stats();
    let session_clients_expired = simulation
        .node_ids()
        .iter()
        .filter_map(|id| simulation.mechanism(id))
        .map(|mechanism| mechanism.debug_state().session_clients_expired)
        .sum();
    Ok(Report {
        seed,
        ops_ok,
        ops_fail,
        ops_unknown,
        faults,
        steps: stats.steps,
        virtual_time: simulation.now().saturating_duration_since(Instant::ZERO),
        stats,
        trace_hash: simulation.trace_hash(),
        session_clients_expired,
    })
}

/// The mean pause between a client's operations: spreads them over the fault phase.
fn mean_gap(options: &Options) -> Duration {
    options.duration_faults / u32::try_from(options.ops_per_client.max(1)).unwrap_or(u32::MAX)
}

/// Faults planned for later (the steps of a flapping partition, the end of a pause), in time order.
#[derive(Default)]
struct Planned {
    faults: BTreeMap<(Instant, u64), Fault>,
    sequence: u64,
}

impl Planned {
    fn add(&mut self, at: Instant, fault: Fault) {
        self.sequence += 1;
        self.faults.insert((at, self.sequence), fault);
    }

    fn next_time(&self) -> Option<Instant> {
        self.faults.keys().next().map(|(time, _)| *time)
    }

    fn take_due(&mut self, now: Instant) -> Option<Fault> {
        if self.next_time()? > now {
            return None;
        }
        self.faults.pop_first().map(|(_, fault)| fault)
    }
}

fn random_between(rng: &mut ChaCha8Rng, min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    min + Duration::from_nanos(rng.gen_range(0..=u64::try_from((max - min).as_nanos()).unwrap_or(u64::MAX)))
}

fn up_nodes(simulation: &Simulation, ids: &[NodeId]) -> Vec<NodeId> {
    ids.iter().filter(|id| simulation.is_up(id)).cloned().collect()
}

fn issue(
    simulation: &mut Simulation,
    client: &mut Client,
    rng: &mut ChaCha8Rng,
    ids: &[NodeId],
    keys: &[String],
) {
    let up = up_nodes(simulation, ids);
    let node = up.choose(rng).or_else(|| ids.choose(rng)).cloned();
    let Some(node) = node else { return };
    let key_index = rng.gen_range(0..keys.len());
    let key = keys[key_index].clone();
    client.issued += 1;
    // Unique values make a lost or invented write visible to the checker.
    let value = (client.id as i64) * 1_000_000 + client.issued as i64;
    let op = match rng.gen_range(0..100) {
        0..=34 => ClientOp::Get { key },
        35..=59 => ClientOp::Put { key, value },
        60..=79 => {
            let expected = if rng.gen_bool(0.7) { client.seen[key_index] } else { None };
            ClientOp::Cas { key, expected, new: value }
        }
        _ => ClientOp::Add { key, delta: rng.gen_range(1..=5) },
    };
    client.retries = 0;
    client.current = Some(simulation.submit(client.id, &node, op));
}

fn handle_completions(
    simulation: &mut Simulation,
    clients: &mut [Client],
    rng: &mut ChaCha8Rng,
    ids: &[NodeId],
    options: &Options,
    keys: &[String],
    may_retry: bool,
) {
    let mean_gap = mean_gap(options);
    for operation in simulation.take_completed() {
        let Some(client) = clients.iter_mut().find(|client| client.current == Some(operation)) else {
            continue;
        };
        let Some(recorded) = simulation.operation(operation).cloned() else { continue };
        if let Some(key_index) = keys.iter().position(|key| *key == recorded.key) {
            match (&recorded.outcome, recorded.kind) {
                (Outcome::Ok(Response::Read { value }), _) => client.seen[key_index] = *value,
                (Outcome::Ok(Response::Added { value }), _) => client.seen[key_index] = Some(*value),
                (Outcome::Ok(Response::Written), OperationKind::Write { value }) => {
                    client.seen[key_index] = Some(value)
                }
                _ => {}
            }
        }
        let unknown_write = matches!(recorded.outcome, Outcome::Unknown { .. }) && recorded.kind.is_write();
        if may_retry && unknown_write && client.retries < options.retries_max && rng.gen_bool(0.5) {
            let up = up_nodes(simulation, ids);
            if let Some(node) = up.choose(rng).cloned() {
                client.retries += 1;
                if simulation.retry(operation, &node) {
                    continue;
                }
            }
        }
        client.current = None;
        client.wake_at = simulation.now() + random_between(rng, Duration::ZERO, mean_gap * 2);
    }
}

fn choose_fault(
    simulation: &Simulation,
    rng: &mut ChaCha8Rng,
    ids: &[NodeId],
    options: &Options,
) -> Option<Fault> {
    // Paused nodes count as down: together they stay a minority, so the cluster can progress.
    let down = ids.iter().filter(|id| !simulation.is_up(id) || simulation.is_paused(id)).count();
    let mut choices = vec![Fault::Network, Fault::Heal];
    if options.allow_crashes {
        if down < (ids.len() - 1) / 2 {
            choices.push(Fault::Crash);
            choices.push(Fault::Crash);
        }
        if down > 0 {
            choices.push(Fault::Restart);
            choices.push(Fault::Restart);
        }
        choices.push(Fault::Disk);
    }
    if options.allow_pauses && down < (ids.len() - 1) / 2 {
        choices.push(Fault::Pause);
    }
    if options.allow_partitions && ids.len() > 1 {
        choices.extend([Fault::Symmetric, Fault::OneWay, Fault::IsolateLeader, Fault::Flap, Fault::Heal]);
    }
    choices.choose(rng).cloned()
}

fn random_split(rng: &mut ChaCha8Rng, ids: &[NodeId]) -> Vec<Vec<NodeId>> {
    let mut shuffled = ids.to_vec();
    shuffled.shuffle(rng);
    let cut = rng.gen_range(1..shuffled.len().max(2));
    let second = shuffled.split_off(cut.min(shuffled.len()));
    vec![shuffled, second]
}

fn inject(
    simulation: &mut Simulation,
    rng: &mut ChaCha8Rng,
    fault: Fault,
    ids: &[NodeId],
    options: &Options,
    planned: &mut Planned,
    healthy: &NetworkConfig,
) {
    match fault {
        Fault::Crash => {
            let up = up_nodes(simulation, ids);
            if let Some(node) = up.choose(rng) {
                simulation.crash(node);
            }
        }
        Fault::Restart => {
            let down: Vec<NodeId> = ids.iter().filter(|id| !simulation.is_up(id)).cloned().collect();
            if let Some(node) = down.choose(rng) {
                simulation.restart(node);
            }
        }
        Fault::Symmetric => {
            let groups = random_split(rng, ids);
            simulation.partition(&groups);
        }
        Fault::OneWay => {
            for _ in 0..rng.gen_range(1..=ids.len()) {
                let from = &ids[rng.gen_range(0..ids.len())];
                let to = &ids[rng.gen_range(0..ids.len())];
                if from != to {
                    simulation.cut_link(from, to);
                }
            }
        }
        Fault::IsolateLeader => {
            let target = simulation.leader().or_else(|| ids.choose(rng).cloned());
            if let Some(node) = target {
                simulation.isolate(&node);
            }
        }
        Fault::Flap => {
            // Partitions that come and go faster than an election: the classic source of churn.
            let mut at = simulation.now();
            for _ in 0..rng.gen_range(2..=5) {
                at = at + random_between(rng, Duration::from_millis(20), Duration::from_millis(150));
                planned.add(at, Fault::Symmetric);
                at = at + random_between(rng, Duration::from_millis(20), Duration::from_millis(150));
                planned.add(at, Fault::Heal);
            }
            let groups = random_split(rng, ids);
            simulation.partition(&groups);
        }
        Fault::Heal => simulation.heal(),
        Fault::Pause => {
            let running: Vec<NodeId> =
                up_nodes(simulation, ids).into_iter().filter(|id| !simulation.is_paused(id)).collect();
            let leader = simulation.leader().filter(|leader| running.contains(leader));
            let target =
                if rng.gen_bool(0.5) { leader } else { None }.or_else(|| running.choose(rng).cloned());
            if let Some(node) = target {
                simulation.pause(&node);
                let until =
                    simulation.now() + random_between(rng, Duration::from_millis(50), Duration::from_secs(2));
                planned.add(until, Fault::Resume(node));
            }
        }
        Fault::Resume(node) => simulation.resume(&node),
        Fault::Disk => {
            let (min, max) = options.persist_delay;
            let slowdown = [1, 1, 10, 50][rng.gen_range(0..4)];
            simulation.set_persist_delay(min * slowdown, max * slowdown);
        }
        Fault::Network => {
            let max_loss = options.max_loss.clamp(0.0, 0.3);
            let network = NetworkConfig {
                loss: if max_loss > 0.0 { rng.gen_range(0.0..=max_loss) } else { 0.0 },
                duplicate: if options.max_duplicate > 0.0 {
                    rng.gen_range(0.0..=options.max_duplicate.clamp(0.0, 1.0))
                } else {
                    0.0
                },
                delay_min: healthy.delay_min,
                delay_max: healthy.delay_max * rng.gen_range(1..=5),
            };
            simulation.set_network(network);
        }
    }
}

/// Whether every node is up, holds the same key-value state, and has applied a liveness write.
/// (Not necessarily the one that succeeded: an earlier attempt with an unknown outcome may land
/// after it.)
fn converged(simulation: &Simulation) -> bool {
    let mut first: Option<bytes::Bytes> = None;
    for id in simulation.node_ids() {
        let Some(mechanism) = simulation.mechanism(&id) else { return false };
        let machine = mechanism.replica().machine();
        if machine.get("liveness").is_none() {
            return false;
        }
        let snapshot = machine.snapshot();
        match &first {
            None => first = Some(snapshot),
            Some(bytes) if *bytes != snapshot => return false,
            Some(_) => {}
        }
    }
    true
}

fn describe_nodes(simulation: &Simulation) -> String {
    let mut text = String::new();
    for id in simulation.node_ids() {
        match simulation.mechanism(&id) {
            Some(mechanism) => {
                let state = mechanism.debug_state();
                text.push_str(&format!(
                    "\n  {id}: {:?} term {} leader {:?} commit {} applied {} last log {}",
                    state.role,
                    state.current_term,
                    state.leader_id,
                    state.commit_index,
                    state.last_applied,
                    state.last_log_index
                ));
            }
            None => text.push_str(&format!("\n  {id}: down")),
        }
    }
    text
}
