//! The simulation: nodes running real mechanisms, a seeded faulty network, virtual time, durable
//! stores, clients and invariant checks.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

use concord_core::command::{Command, CommandFailure, Expectation};
use concord_core::config::{Config, MechanismKind};
use concord_core::error::ProposalError;
use concord_core::event::{DebugState, Event, ProposalResult, Role};
use concord_core::id::{ClientSession, NodeId, NodeInfo, ProposalId, Term};
use concord_core::mechanism::{Mechanism, Outbound, ReadId, ReadResult, Ready, Setup, SetupError};
use concord_core::message::{Message, Proposal};
use concord_core::state_machine::Replica;
use concord_core::storage::{apply_persist, Persist, Recovered};
use concord_core::time::Instant;
use concord_core::typed::{decode_value, encode_value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::history::{ClientOp, History, Operation, OperationId, OperationKind, Outcome, Response};
use crate::invariants::Invariant;

/// Builds one node's mechanism from its [`Setup`]; called at start and at every restart.
pub type MechanismFactory = Box<dyn Fn(Setup) -> Result<Box<dyn Mechanism>, SetupError>>;

/// Wraps a mechanism constructor such as `concord_raft::Raft::new` into a [`MechanismFactory`].
pub fn factory<M, F>(new: F) -> MechanismFactory
where
    M: Mechanism,
    F: Fn(Setup) -> Result<M, SetupError> + 'static,
{
    Box::new(move |setup| new(setup).map(|mechanism| Box::new(mechanism) as Box<dyn Mechanism>))
}

/// How the simulated network misbehaves. Reordering comes from the random per-message delay.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Probability that a message is lost, in `[0, 1]`.
    pub loss: f64,
    /// Probability that a message is delivered twice, in `[0, 1]`.
    pub duplicate: f64,
    /// Shortest delivery delay.
    pub delay_min: Duration,
    /// Longest delivery delay.
    pub delay_max: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            loss: 0.0,
            duplicate: 0.0,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(10),
        }
    }
}

impl NetworkConfig {
    /// A perfect network: nothing lost or duplicated, a fixed delay.
    pub fn reliable(delay: Duration) -> Self {
        NetworkConfig { loss: 0.0, duplicate: 0.0, delay_min: delay, delay_max: delay }
    }
}

/// Everything that defines a run. Same config and same mechanism code: same run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice the simulator makes (and of each node's mechanism seed).
    pub seed: u64,
    /// Nodes `n1..=nN`.
    pub node_count: usize,
    /// The mechanism config every node gets.
    pub config: Config,
    /// The network's faults.
    pub network: NetworkConfig,
    /// Shortest time a non-empty persist takes to become durable.
    pub persist_delay_min: Duration,
    /// Longest time a non-empty persist takes to become durable.
    pub persist_delay_max: Duration,
    /// Clock-rate spread: 0.05 gives each node a clock rate in `[0.95, 1.05]` of virtual time.
    pub clock_rate_spread: f64,
    /// Each node's clock starts at a random offset in `[0, clock_offset_max]`, so no code can assume a
    /// shared epoch.
    pub clock_offset_max: Duration,
    /// Trace lines kept (the oldest are dropped; the trace hash still covers all of them).
    pub trace_capacity: usize,
    /// Events kept per node until [`Simulation::take_events`] drains them, and proposal results
    /// kept until [`Simulation::take_results`] does (the oldest are dropped).
    pub event_capacity: usize,
    /// Messages in flight at once; more are dropped (and traced) instead of growing without bound.
    pub in_flight_messages_max: usize,
    /// Steps allowed at one virtual instant before the run is declared a livelock (a timer that
    /// never moves forward, a message storm with zero delay).
    pub steps_per_instant_max: u64,
    /// `Ready` batches drained in a row from one node before it is declared a livelock.
    pub ready_batches_per_input_max: u64,
}

impl SimConfig {
    /// Sane defaults: a reliable network with 1–10 ms delays, 0.1–2 ms persists, 1% clock spread.
    pub fn new(seed: u64, node_count: usize, config: Config) -> Self {
        SimConfig {
            seed,
            node_count,
            config,
            network: NetworkConfig::default(),
            persist_delay_min: Duration::from_micros(100),
            persist_delay_max: Duration::from_millis(2),
            clock_rate_spread: 0.01,
            clock_offset_max: Duration::from_secs(10),
            trace_capacity: 256,
            event_capacity: 1024,
            in_flight_messages_max: 100_000,
            steps_per_instant_max: 100_000,
            ready_batches_per_input_max: 10_000,
        }
    }
}

/// A failed run: the seed, when, what, and the last trace lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The seed that reproduces it.
    pub seed: u64,
    /// Virtual time of the failure.
    pub time: Instant,
    /// What went wrong.
    pub message: String,
    /// The last trace lines, oldest first.
    pub trace: Vec<String>,
    /// The command that reruns this seed (`cargo xtask sim --mechanism raft --seed S`).
    pub rerun: String,
}

impl Violation {
    /// Lines of trace printed by `Display`.
    pub const DISPLAY_TRACE_LINES_MAX: usize = 40;
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}: {}", self.seed, self.message)?;
        writeln!(f, "at virtual time {:?}", self.time)?;
        let skip = self.trace.len().saturating_sub(Self::DISPLAY_TRACE_LINES_MAX);
        writeln!(f, "last {} trace lines:", self.trace.len() - skip)?;
        for line in &self.trace[skip..] {
            writeln!(f, "  {line}")?;
        }
        write!(f, "rerun: {}", self.rerun)
    }
}

impl std::error::Error for Violation {}

/// Counters of what happened in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Steps taken.
    pub steps: u64,
    /// Messages handed to the network.
    pub messages_sent: u64,
    /// Messages delivered to a live node.
    pub messages_delivered: u64,
    /// Messages dropped (loss, cuts, crashed receiver, in-flight limit).
    pub messages_dropped: u64,
    /// Extra copies the network delivered.
    pub messages_duplicated: u64,
    /// Messages a mechanism refused with a peer error.
    pub peer_errors: u64,
    /// Persist batches made durable.
    pub persists: u64,
    /// Timer firings.
    pub timeouts: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restarts.
    pub restarts: u64,
}

/// One batch whose persistence is under way.
struct PendingPersist {
    number: u64,
    persist: Persist,
    persisted_messages: Vec<Outbound>,
    done_at: Instant,
}

struct Node {
    id: NodeId,
    mechanism: Option<Box<dyn Mechanism>>,
    /// Bumped at every crash, so that work scheduled for a dead process is recognized as stale.
    incarnation: u64,
    durable: Recovered,
    /// The node's local clock reading at virtual time zero.
    clock_origin: Instant,
    /// Local clock nanoseconds per million virtual nanoseconds.
    clock_rate_ppm: u64,
    pending_persists: VecDeque<PendingPersist>,
    /// Virtual time at which `handle_timeout` is due.
    timer: Option<Instant>,
    events: VecDeque<Event>,
    proposal_sequence: u64,
    /// The last `Ready::number` this incarnation handed out: numbers must increase.
    last_ready_number: u64,
    /// Frozen (SIGSTOP): nothing reaches the mechanism until it resumes.
    paused: bool,
    /// What arrived while paused, in order, replayed on resume.
    held: Vec<Scheduled>,
}

impl Node {
    fn local_time(&self, now: Instant) -> Instant {
        let elapsed = u128::from(now.as_nanos()) * u128::from(self.clock_rate_ppm) / 1_000_000;
        Instant::from_nanos(
            self.clock_origin.as_nanos().saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX)),
        )
    }

    /// The first virtual time at which the local clock reads at least `local`.
    fn virtual_time(&self, local: Instant) -> Instant {
        let elapsed_local = u128::from(local.as_nanos().saturating_sub(self.clock_origin.as_nanos()));
        let rate = u128::from(self.clock_rate_ppm.max(1));
        let nanos = (elapsed_local * 1_000_000).div_ceil(rate);
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

enum Scheduled {
    // Boxed: messages are large and most queued events are small.
    Deliver {
        from: usize,
        to: usize,
        message: Box<Message>,
    },
    PersistDone {
        node: usize,
        incarnation: u64,
    },
    ClientDeadline {
        operation: OperationId,
        attempt: u64,
    },
    /// A client request that reached a paused node, handed over when it resumes.
    Dispatch {
        operation: OperationId,
        attempt: u64,
    },
}

/// Where a submitted operation is waiting.
struct InFlight {
    node: usize,
    attempt: u64,
    command: Option<Command>,
    session: Option<ClientSession>,
    proposal: Option<ProposalId>,
    read: Option<ReadId>,
}

/// A deterministic simulation of a cluster. See the [crate docs](crate) for an example.
///
/// # How a node is driven
///
/// Exactly as `concord_core::mechanism` prescribes, after every input (a delivered message, a
/// timer, a client request, a completed persist): while the mechanism `has_ready`, take the
/// `Ready`, show it to the invariants, send `messages` at once, hand `results`, `reads` and
/// `events` to the clients and the test, and queue `persist` on the node's simulated disk. A
/// persist becomes durable after a random delay in `[persist_delay_min, persist_delay_max]` of
/// virtual time, never before the batch queued ahead of it; only then is it applied to the
/// node's durable store (with `concord_core::storage::apply_persist`), its `persisted_messages`
/// sent and `advance(number)` called. A batch with nothing to persist and nothing ahead of it is
/// acknowledged at once. A crash drops every batch not yet durable, with its messages.
///
/// Each node sees only its own clock: `local = offset + elapsed * rate`, with a random offset and
/// rate per node; `handle_timeout` is called when the node's clock reaches `poll_timeout`.
pub struct Simulation {
    config: SimConfig,
    factory: MechanismFactory,
    rng: ChaCha8Rng,
    now: Instant,
    nodes: Vec<Node>,
    queue: BTreeMap<(Instant, u64), Scheduled>,
    queue_sequence: u64,
    in_flight_messages: usize,
    cuts: BTreeSet<(usize, usize)>,
    trace: VecDeque<String>,
    trace_hash: u64,
    invariants: Vec<Box<dyn Invariant>>,
    violation: Option<Violation>,
    stats: SimStats,
    same_instant_steps: u64,
    history: History,
    in_flight: BTreeMap<OperationId, InFlight>,
    proposals: BTreeMap<ProposalId, OperationId>,
    reads: BTreeMap<(usize, ReadId), OperationId>,
    next_read_id: ReadId,
    client_sequences: BTreeMap<u64, u64>,
    /// Per client, the sequences of writes not definitely answered yet (pending, or unknown and so
    /// retryable): the lowest is the session's acknowledgement, as a real client sends it.
    client_unanswered: BTreeMap<u64, BTreeSet<u64>>,
    /// Writes whose outcome became unknown, kept so that [`Simulation::retry`] can resend them.
    retired: BTreeMap<OperationId, InFlight>,
    completed: Vec<OperationId>,
    results: Vec<(NodeId, ProposalResult)>,
    /// Every (node, proposal) and (node, read) answered, to catch a second answer.
    answered_proposals: BTreeSet<(usize, ProposalId)>,
    answered_reads: BTreeSet<(usize, ReadId)>,
    /// Requests of operations that ended unknown, in case their answer still comes.
    late_proposals: BTreeMap<ProposalId, (OperationId, u64)>,
    late_reads: BTreeMap<(usize, ReadId), OperationId>,
    touched: Option<usize>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Mixes the run seed with a node and its incarnation into the mechanism's own seed (SplitMix64).
fn derive_seed(seed: u64, node: usize, incarnation: u64) -> u64 {
    let mut z = seed
        ^ (node as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ incarnation.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_duration(rng: &mut ChaCha8Rng, min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    let min_nanos = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
    let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.gen_range(min_nanos..=max_nanos))
}

/// Whether a random event of probability `probability` happens (no panic for values out of range).
fn chance(rng: &mut ChaCha8Rng, probability: f64) -> bool {
    probability > 0.0 && rng.gen::<f64>() < probability
}

impl Simulation {
    /// Starts `config.node_count` nodes `n1..nN`, each with a mechanism from `factory`.
    ///
    /// A setup failure is reported by the first [`Simulation::step`].
    pub fn new(config: SimConfig, factory: MechanismFactory) -> Simulation {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let spread = config.clock_rate_spread.clamp(0.0, 0.5);
        let nodes = (0..config.node_count)
            .map(|index| {
                let rate = 1.0 + if spread > 0.0 { rng.gen_range(-spread..=spread) } else { 0.0 };
                let offset = random_duration(&mut rng, Duration::ZERO, config.clock_offset_max);
                Node {
                    id: NodeId::new(format!("n{}", index + 1)),
                    mechanism: None,
                    incarnation: 0,
                    durable: Recovered::default(),
                    clock_origin: Instant::ZERO + offset,
                    clock_rate_ppm: (rate * 1_000_000.0).round() as u64,
                    pending_persists: VecDeque::new(),
                    timer: None,
                    events: VecDeque::new(),
                    proposal_sequence: 0,
                    last_ready_number: 0,
                    paused: false,
                    held: Vec::new(),
                }
            })
            .collect();
        let mut simulation = Simulation {
            config,
            factory,
            rng,
            now: Instant::ZERO,
            nodes,
            queue: BTreeMap::new(),
            queue_sequence: 0,
            in_flight_messages: 0,
            cuts: BTreeSet::new(),
            trace: VecDeque::new(),
            trace_hash: FNV_OFFSET,
            invariants: Vec::new(),
            violation: None,
            stats: SimStats::default(),
            same_instant_steps: 0,
            history: History::new(),
            in_flight: BTreeMap::new(),
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read_id: 1,
            client_sequences: BTreeMap::new(),
            client_unanswered: BTreeMap::new(),
            retired: BTreeMap::new(),
            completed: Vec::new(),
            results: Vec::new(),
            answered_proposals: BTreeSet::new(),
            answered_reads: BTreeSet::new(),
            late_proposals: BTreeMap::new(),
            late_reads: BTreeMap::new(),
            touched: None,
        };
        for index in 0..simulation.nodes.len() {
            simulation.start(index);
        }
        simulation
    }

    // ----- observation -----

    /// The run's config.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// Virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// What `id`'s own clock reads now (its offset and rate differ from virtual time).
    pub fn local_now(&self, id: &NodeId) -> Option<Instant> {
        self.index(id).map(|index| self.nodes[index].local_time(self.now))
    }

    /// Every node, in order `n1..nN`.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|node| node.id.clone()).collect()
    }

    /// The node's mechanism, `None` while it is crashed (or unknown).
    pub fn mechanism(&self, id: &NodeId) -> Option<&dyn Mechanism> {
        self.index(id).and_then(|index| self.nodes[index].mechanism.as_deref())
    }

    /// The node's mechanism, mutably. Inputs fed through it bypass the driver loop: prefer
    /// [`Simulation::with_mechanism`], which drains the resulting `Ready` batches.
    pub fn mechanism_mut(&mut self, id: &NodeId) -> Option<&mut (dyn Mechanism + 'static)> {
        let index = self.index(id)?;
        self.nodes[index].mechanism.as_deref_mut()
    }

    /// Feeds an input to a live node's mechanism with its local time, then runs the driver loop on
    /// it. `None` if the node is down or unknown.
    pub fn with_mechanism<R>(
        &mut self,
        id: &NodeId,
        input: impl FnOnce(&mut dyn Mechanism, Instant) -> R,
    ) -> Option<R> {
        let index = self.index(id)?;
        let local = self.nodes[index].local_time(self.now);
        let mechanism = self.nodes[index].mechanism.as_deref_mut()?;
        let result = input(mechanism, local);
        self.touched = Some(index);
        self.drain(index);
        self.after_external_input();
        Some(result)
    }

    /// What the node's storage holds durably (it survives crashes).
    ///
    /// # Panics
    /// If `id` is not a node of this simulation (a bug in the test).
    pub fn durable(&self, id: &NodeId) -> &Recovered {
        let index = self.index(id).unwrap_or_else(|| panic!("no node {id} in the simulation"));
        &self.nodes[index].durable
    }

    /// Whether the node is running.
    pub fn is_up(&self, id: &NodeId) -> bool {
        self.mechanism(id).is_some()
    }

    /// The node's incarnation: 0 at start, +1 at every crash.
    pub fn incarnation(&self, id: &NodeId) -> Option<u64> {
        self.index(id).map(|index| self.nodes[index].incarnation)
    }

    /// The live node in the highest term whose debug state says it leads.
    pub fn leader(&self) -> Option<NodeId> {
        let mut best: Option<(Term, NodeId)> = None;
        for node in &self.nodes {
            let Some(mechanism) = &node.mechanism else { continue };
            let state = mechanism.debug_state();
            if state.role == Role::Leader
                && best.as_ref().map_or(true, |(term, _)| state.current_term > *term)
            {
                best = Some((state.current_term, node.id.clone()));
            }
        }
        best.map(|(_, id)| id)
    }

    /// The last trace lines, oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &str> {
        self.trace.iter().map(String::as_str)
    }

    /// A hash of every trace line written so far (not only those still kept): equal hashes mean
    /// (almost surely) identical runs.
    pub fn trace_hash(&self) -> u64 {
        self.trace_hash
    }

    /// Counters of what happened.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// The events node `id` emitted and [`Simulation::take_events`] has not taken yet.
    pub fn events(&self, id: &NodeId) -> impl Iterator<Item = &Event> {
        self.index(id).into_iter().flat_map(|index| self.nodes[index].events.iter())
    }

    /// Takes the events node `id` emitted since the last call.
    pub fn take_events(&mut self, id: &NodeId) -> Vec<Event> {
        match self.index(id) {
            Some(index) => self.nodes[index].events.drain(..).collect(),
            None => Vec::new(),
        }
    }

    /// Takes every proposal result delivered since the last call, with the node that reported it.
    /// Results of operations submitted through [`Simulation::submit`] are here too.
    pub fn take_results(&mut self) -> Vec<(NodeId, ProposalResult)> {
        std::mem::take(&mut self.results)
    }

    /// Takes the ids of operations that reached a final outcome since the last call.
    pub fn take_completed(&mut self) -> Vec<OperationId> {
        std::mem::take(&mut self.completed)
    }

    /// The client history so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// One operation of the history.
    pub fn operation(&self, id: OperationId) -> Option<&Operation> {
        self.history.get(id)
    }

    /// A read-only view, as invariants get it.
    pub fn view(&self) -> SimView<'_> {
        SimView::new(self, self.touched)
    }

    /// Virtual time of the next scheduled event or timer, if any.
    pub fn next_event_time(&self) -> Option<Instant> {
        let queued = self.queue.keys().next().map(|(time, _)| *time);
        let timer = self.nodes.iter().filter(|node| !node.paused).filter_map(|node| node.timer).min();
        match (queued, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- invariants -----

    /// Adds an invariant checked after every `Ready`, persist and step.
    pub fn add_invariant(&mut self, invariant: Box<dyn Invariant>) {
        self.invariants.push(invariant);
    }

    /// Records a failure found outside the simulator (e.g. by a scenario); the next step returns it.
    pub fn fail(&mut self, message: impl Into<String>) {
        if self.violation.is_none() {
            self.violation = Some(self.violation_now(message.into()));
        }
    }

    /// Builds a violation at the current time with the current trace, without recording it.
    pub fn violation_now(&self, message: String) -> Violation {
        Violation {
            seed: self.config.seed,
            time: self.now,
            message,
            trace: self.trace.iter().cloned().collect(),
            rerun: format!(
                "cargo xtask sim --mechanism {} --seed {}",
                match self.config.config.mechanism {
                    MechanismKind::Raft => "raft",
                    MechanismKind::SimpleMajority => "majority",
                },
                self.config.seed
            ),
        }
    }

    /// Checks invariants after an input that came from outside a step (a client, a crash, a
    /// restart); a violation is returned by the next step.
    fn after_external_input(&mut self) {
        self.check_after_step();
        self.touched = None;
    }

    fn check_after_step(&mut self) {
        let touched = self.touched;
        self.run_invariants(touched, |invariant, _, view| invariant.after_step(view));
    }

    fn check_after_ready(&mut self, index: usize, ready: &Ready) {
        self.run_invariants(Some(index), |invariant, id, view| match id {
            Some(id) => invariant.after_ready(id, ready, view),
            None => Ok(()),
        });
    }

    fn check_after_persist(&mut self, index: usize, persist: &Persist) {
        self.run_invariants(Some(index), |invariant, id, view| match id {
            Some(id) => invariant.after_persist(id, persist, view),
            None => Ok(()),
        });
    }

    /// Runs every invariant with a view touched at `touched` (and that node's id), stopping at the
    /// first violation, which ends the run.
    fn run_invariants(
        &mut self,
        touched: Option<usize>,
        mut check: impl FnMut(&mut Box<dyn Invariant>, Option<&NodeId>, &SimView<'_>) -> Result<(), String>,
    ) {
        if self.invariants.is_empty() || self.violation.is_some() {
            return;
        }
        let mut invariants = std::mem::take(&mut self.invariants);
        let mut failure = None;
        {
            let view = SimView::new(self, touched);
            let id = touched.map(|index| &self.nodes[index].id);
            for invariant in &mut invariants {
                if let Err(message) = check(invariant, id, &view) {
                    failure = Some(message);
                    break;
                }
            }
        }
        self.invariants = invariants;
        if let Some(message) = failure {
            self.fail(format!("invariant violated: {message}"));
        }
    }

    // ----- stepping -----

    /// Processes the next event in virtual time: a delivery, a completed persist, a timer or a
    /// client deadline. `Ok(false)` when nothing is left to do. Invariants are checked after it.
    pub fn step(&mut self) -> Result<bool, Violation> {
        if let Some(violation) = self.violation.take() {
            return Err(violation);
        }
        let queued = self.queue.keys().next().copied();
        let timer = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| !node.paused)
            .filter_map(|(index, node)| node.timer.map(|time| (time, index)))
            .min();
        // The queue wins ties with timers: a message that arrives exactly at a deadline is seen first.
        let take_timer = match (queued, timer) {
            (None, None) => return Ok(false),
            (Some((queued_time, _)), Some((timer_time, _))) => timer_time < queued_time,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        let time = if take_timer { timer.map(|(time, _)| time) } else { queued.map(|(time, _)| time) }
            .unwrap_or(self.now);
        self.advance_clock(time)?;
        self.stats.steps += 1;
        if take_timer {
            if let Some((_, index)) = timer {
                self.fire_timer(index);
            }
        } else if let Some(key) = queued {
            if let Some(scheduled) = self.queue.remove(&key) {
                self.process(scheduled);
            }
        }
        self.check_after_step();
        self.touched = None;
        match self.violation.take() {
            Some(violation) => Err(violation),
            None => Ok(true),
        }
    }

    fn advance_clock(&mut self, time: Instant) -> Result<(), Violation> {
        assert!(time >= self.now, "virtual time moves forward: {time:?} after {:?}", self.now);
        if time == self.now {
            self.same_instant_steps += 1;
            if self.same_instant_steps > self.config.steps_per_instant_max {
                return Err(self.violation_now(format!(
                    "livelock: more than {} steps at virtual time {time:?} (a timer that does not move \
                     forward, or a zero-delay message storm)",
                    self.config.steps_per_instant_max
                )));
            }
        } else {
            self.same_instant_steps = 0;
            self.now = time;
        }
        Ok(())
    }

    /// Steps until virtual time `deadline`, then sets the clock to it.
    pub fn run_until(&mut self, deadline: Instant) -> Result<(), Violation> {
        while self.next_event_time().is_some_and(|time| time <= deadline) {
            self.step()?;
        }
        if let Some(violation) = self.violation.take() {
            return Err(violation);
        }
        if deadline > self.now {
            self.now = deadline;
            self.same_instant_steps = 0;
        }
        Ok(())
    }

    /// Steps for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) -> Result<(), Violation> {
        self.run_until(self.now + duration)
    }

    /// Steps until `condition` holds (checked before each step), for at most `limit` of virtual
    /// time. `Ok(true)` if it held, `Ok(false)` if the limit passed first.
    pub fn run_until_condition(
        &mut self,
        limit: Duration,
        mut condition: impl FnMut(&Simulation) -> bool,
    ) -> Result<bool, Violation> {
        if let Some(violation) = self.violation.take() {
            return Err(violation);
        }
        let deadline = self.now + limit;
        loop {
            if condition(self) {
                return Ok(true);
            }
            match self.next_event_time() {
                Some(time) if time <= deadline => {
                    self.step()?;
                }
                _ => {
                    self.run_until(deadline)?;
                    return Ok(condition(self));
                }
            }
        }
    }

    fn process(&mut self, scheduled: Scheduled) {
        let addressee = match &scheduled {
            Scheduled::Deliver { to, .. } => Some(*to),
            Scheduled::PersistDone { node, .. } => Some(*node),
            Scheduled::ClientDeadline { .. } | Scheduled::Dispatch { .. } => None,
        };
        if let Some(index) = addressee.filter(|index| self.nodes[*index].paused) {
            self.nodes[index].held.push(scheduled);
            return;
        }
        match scheduled {
            Scheduled::Dispatch { operation, attempt } => {
                if self.in_flight.get(&operation).is_some_and(|flight| flight.attempt == attempt) {
                    self.dispatch(operation);
                }
            }
            Scheduled::Deliver { from, to, message } => self.deliver(from, to, *message),
            Scheduled::PersistDone { node, incarnation } => self.persist_done(node, incarnation),
            Scheduled::ClientDeadline { operation, attempt } => self.client_deadline(operation, attempt),
        }
    }

    fn schedule(&mut self, time: Instant, scheduled: Scheduled) {
        self.queue_sequence += 1;
        self.queue.insert((time, self.queue_sequence), scheduled);
    }

    fn fire_timer(&mut self, index: usize) {
        self.touched = Some(index);
        self.stats.timeouts += 1;
        let node = &mut self.nodes[index];
        node.timer = None;
        let local = node.local_time(self.now);
        if let Some(mechanism) = node.mechanism.as_deref_mut() {
            mechanism.handle_timeout(local);
        }
        self.drain(index);
    }

    // ----- trace -----

    fn record(&mut self, line: String) {
        let mut hash = self.trace_hash;
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
        self.trace_hash = hash;
        if self.config.trace_capacity == 0 {
            return;
        }
        while self.trace.len() >= self.config.trace_capacity {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn stamp(&self) -> String {
        let nanos = self.now.as_nanos();
        format!("[{:>6}.{:06}ms]", nanos / 1_000_000, nanos % 1_000_000)
    }

    /// Adds a line to the trace (scenarios use it to note what they do).
    pub fn note(&mut self, text: impl fmt::Display) {
        let line = format!("{} {text}", self.stamp());
        self.record(line);
    }

    // ----- nodes -----

    fn index(&self, id: &NodeId) -> Option<usize> {
        // Ids are n1..nN, so parse first and fall back to a search for robustness.
        let position = id.as_str().strip_prefix('n').and_then(|n| n.parse::<usize>().ok());
        match position {
            Some(n) if n >= 1 && n <= self.nodes.len() && self.nodes[n - 1].id == *id => Some(n - 1),
            _ => self.nodes.iter().position(|node| node.id == *id),
        }
    }

    fn start(&mut self, index: usize) {
        let node = &self.nodes[index];
        let setup = Setup {
            node_id: node.id.clone(),
            config: self.config.config.clone(),
            initial_members: self
                .nodes
                .iter()
                .map(|member| NodeInfo::new(member.id.clone(), format!("sim://{}", member.id)))
                .collect(),
            recovered: node.durable.clone(),
            seed: derive_seed(self.config.seed, index, node.incarnation),
            replica: Replica::with_config(
                Box::new(concord_core::state_machine::KvStateMachine::new()),
                &self.config.config,
            ),
        };
        let id = node.id.clone();
        match (self.factory)(setup) {
            Ok(mechanism) => {
                if mechanism.node_id() != &id {
                    self.fail(format!("mechanism for {id} says it is {}", mechanism.node_id()));
                    return;
                }
                self.nodes[index].mechanism = Some(mechanism);
                self.nodes[index].last_ready_number = 0;
                let line =
                    format!("{} {id} start (incarnation {})", self.stamp(), self.nodes[index].incarnation);
                self.record(line);
                self.touched = Some(index);
                self.drain(index);
            }
            Err(error) => self.fail(format!("{id} failed to start from its durable state: {error}")),
        }
    }

    /// Crashes a node: its mechanism, its not-yet-durable persists and its timers are gone;
    /// messages arriving while it is down are dropped; operations submitted to it become unknown.
    /// Its durable store survives.
    pub fn crash(&mut self, id: &NodeId) {
        let Some(index) = self.index(id) else { return };
        let node = &mut self.nodes[index];
        if node.mechanism.take().is_none() {
            return;
        }
        node.incarnation += 1;
        let lost = node.pending_persists.len();
        node.pending_persists.clear();
        node.timer = None;
        node.paused = false;
        let held_messages = node.held.iter().filter(|held| matches!(held, Scheduled::Deliver { .. })).count();
        node.held.clear();
        self.in_flight_messages = self.in_flight_messages.saturating_sub(held_messages);
        self.stats.messages_dropped += held_messages as u64;
        self.stats.crashes += 1;
        let line = format!("{} {id} CRASH ({lost} persists not yet durable are lost)", self.stamp());
        self.record(line);
        let orphaned: Vec<OperationId> =
            self.in_flight.iter().filter(|(_, flight)| flight.node == index).map(|(op, _)| *op).collect();
        for operation in orphaned {
            self.finish(operation, Outcome::Unknown { reason: format!("{id} crashed") });
        }
        self.after_external_input();
    }

    /// Restarts a crashed node from its durable store (a new incarnation with a new seed).
    /// Does nothing if the node is up.
    pub fn restart(&mut self, id: &NodeId) {
        let Some(index) = self.index(id) else { return };
        if self.nodes[index].mechanism.is_some() {
            return;
        }
        self.stats.restarts += 1;
        self.start(index);
        self.after_external_input();
    }

    /// Freezes a running node, like `SIGSTOP` or a long garbage-collection pause: its clock keeps
    /// running, but messages, completed writes and client requests wait until
    /// [`Simulation::resume`], and its timers do not fire. Clients still time out meanwhile.
    pub fn pause(&mut self, id: &NodeId) {
        let Some(index) = self.index(id) else { return };
        let node = &mut self.nodes[index];
        if node.mechanism.is_none() || node.paused {
            return;
        }
        node.paused = true;
        let line = format!("{} {id} PAUSE", self.stamp());
        self.record(line);
    }

    /// Resumes a paused node: what arrived meanwhile is handed to it now, in order, and overdue
    /// timers fire.
    pub fn resume(&mut self, id: &NodeId) {
        let Some(index) = self.index(id) else { return };
        let node = &mut self.nodes[index];
        if !node.paused {
            return;
        }
        node.paused = false;
        node.timer = node.timer.map(|time| time.max(self.now));
        let held = std::mem::take(&mut node.held);
        let line = format!("{} {id} RESUME ({} events held)", self.stamp(), held.len());
        self.record(line);
        for scheduled in held {
            self.schedule(self.now, scheduled);
        }
    }

    /// Whether the node is paused.
    pub fn is_paused(&self, id: &NodeId) -> bool {
        self.index(id).is_some_and(|index| self.nodes[index].paused)
    }

    // ----- network -----

    /// Replaces the network's fault settings.
    pub fn set_network(&mut self, network: NetworkConfig) {
        let line = format!(
            "{} network: loss {:.3}, duplicate {:.3}, delay {:?}..{:?}",
            self.stamp(),
            network.loss,
            network.duplicate,
            network.delay_min,
            network.delay_max
        );
        self.record(line);
        self.config.network = network;
    }

    /// Changes how long persists take from now on (a disk that slows down or recovers); batches
    /// already under way keep their completion time.
    pub fn set_persist_delay(&mut self, min: Duration, max: Duration) {
        let line = format!("{} disk: persist delay {min:?}..{max:?}", self.stamp());
        self.record(line);
        self.config.persist_delay_min = min;
        self.config.persist_delay_max = max.max(min);
    }

    /// The network's fault settings.
    pub fn network(&self) -> &NetworkConfig {
        &self.config.network
    }

    /// Splits the cluster: links between different groups are cut both ways (replacing earlier
    /// cuts). Nodes named in no group form one more group together.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let mut group_of = vec![usize::MAX; self.nodes.len()];
        for (group, members) in groups.iter().enumerate() {
            for member in members {
                if let Some(index) = self.index(member) {
                    group_of[index] = group;
                }
            }
        }
        self.cuts.clear();
        for from in 0..self.nodes.len() {
            for to in 0..self.nodes.len() {
                if group_of[from] != group_of[to] {
                    self.cuts.insert((from, to));
                }
            }
        }
        let described: Vec<String> = groups
            .iter()
            .map(|group| group.iter().map(NodeId::as_str).collect::<Vec<_>>().join(","))
            .collect();
        let line = format!("{} PARTITION {{{}}}", self.stamp(), described.join("} {"));
        self.record(line);
    }

    /// Cuts the link from `from` to `to` only (messages the other way still flow).
    pub fn cut_link(&mut self, from: &NodeId, to: &NodeId) {
        if let (Some(a), Some(b)) = (self.index(from), self.index(to)) {
            self.cuts.insert((a, b));
            let line = format!("{} CUT {from} -> {to}", self.stamp());
            self.record(line);
        }
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: &NodeId) {
        let Some(index) = self.index(id) else { return };
        for other in 0..self.nodes.len() {
            if other != index {
                self.cuts.insert((index, other));
                self.cuts.insert((other, index));
            }
        }
        let line = format!("{} ISOLATE {id}", self.stamp());
        self.record(line);
    }

    /// Restores every link (loss and delay settings stay as they are).
    pub fn heal(&mut self) {
        self.cuts.clear();
        let line = format!("{} HEAL", self.stamp());
        self.record(line);
    }

    /// Whether messages from `from` to `to` are currently cut.
    pub fn is_cut(&self, from: &NodeId, to: &NodeId) -> bool {
        match (self.index(from), self.index(to)) {
            (Some(a), Some(b)) => self.cuts.contains(&(a, b)),
            _ => true,
        }
    }

    fn send(&mut self, from: usize, outbound: Outbound) {
        self.stats.messages_sent += 1;
        let Some(to) = self.index(&outbound.to) else {
            self.stats.messages_dropped += 1;
            let line = format!(
                "{} {} -> {} {} DROPPED (no such node)",
                self.stamp(),
                self.nodes[from].id,
                outbound.to,
                outbound.message.kind()
            );
            self.record(line);
            return;
        };
        let kind = outbound.message.kind();
        let reason = if self.cuts.contains(&(from, to)) {
            Some("link cut")
        } else if chance(&mut self.rng, self.config.network.loss) {
            Some("lost")
        } else if self.in_flight_messages >= self.config.in_flight_messages_max {
            Some("in-flight limit")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.stats.messages_dropped += 1;
            let line = format!(
                "{} {} -> {} {kind} DROPPED ({reason})",
                self.stamp(),
                self.nodes[from].id,
                self.nodes[to].id
            );
            self.record(line);
            return;
        }
        let duplicated = chance(&mut self.rng, self.config.network.duplicate);
        let network = &self.config.network;
        let (delay_min, delay_max) = (network.delay_min, network.delay_max);
        let delay = random_duration(&mut self.rng, delay_min, delay_max);
        let line = format!(
            "{} {} -> {} {kind} (+{:.3}ms{})",
            self.stamp(),
            self.nodes[from].id,
            self.nodes[to].id,
            delay.as_secs_f64() * 1e3,
            if duplicated { ", duplicated" } else { "" }
        );
        self.record(line);
        if duplicated {
            self.stats.messages_duplicated += 1;
            let second = random_duration(&mut self.rng, delay_min, delay_max);
            self.in_flight_messages += 1;
            self.schedule(
                self.now + second,
                Scheduled::Deliver { from, to, message: Box::new(outbound.message.clone()) },
            );
        }
        self.in_flight_messages += 1;
        self.schedule(self.now + delay, Scheduled::Deliver { from, to, message: Box::new(outbound.message) });
    }

    fn deliver(&mut self, from: usize, to: usize, message: Message) {
        self.in_flight_messages = self.in_flight_messages.saturating_sub(1);
        let reason = if self.nodes[to].mechanism.is_none() {
            Some("receiver down")
        } else if self.cuts.contains(&(from, to)) {
            // A cut made while the message was in flight stops it too.
            Some("link cut")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.stats.messages_dropped += 1;
            let line = format!(
                "{} {} => {} {} DROPPED on arrival ({reason})",
                self.stamp(),
                self.nodes[from].id,
                self.nodes[to].id,
                message.kind()
            );
            self.record(line);
            return;
        }
        self.touched = Some(to);
        self.stats.messages_delivered += 1;
        let sender = self.nodes[from].id.clone();
        let node = &mut self.nodes[to];
        let local = node.local_time(self.now);
        let kind = message.kind();
        let outcome = match node.mechanism.as_deref_mut() {
            Some(mechanism) => mechanism.handle_message(local, sender.clone(), message),
            None => Ok(()),
        };
        if let Err(error) = outcome {
            self.stats.peer_errors += 1;
            let line =
                format!("{} {} refused {kind} from {sender}: {error}", self.stamp(), self.nodes[to].id);
            self.record(line);
        }
        self.drain(to);
    }

    // ----- the driver loop -----

    /// Runs the driver loop of `concord_core::mechanism` on node `index` until it has no more work.
    fn drain(&mut self, index: usize) {
        let mut batches = 0u64;
        loop {
            let node = &mut self.nodes[index];
            let Some(mechanism) = node.mechanism.as_deref_mut() else { break };
            if !mechanism.has_ready() {
                break;
            }
            batches += 1;
            if batches > self.config.ready_batches_per_input_max {
                let id = node.id.clone();
                self.fail(format!(
                    "livelock: {id} produced more than {} Ready batches for one input",
                    self.config.ready_batches_per_input_max
                ));
                break;
            }
            let ready = mechanism.ready();
            if ready.number <= node.last_ready_number {
                let (id, last) = (node.id.clone(), node.last_ready_number);
                self.fail(format!(
                    "{id} handed out Ready number {} after {last}: numbers must increase",
                    ready.number
                ));
                break;
            }
            node.last_ready_number = ready.number;
            self.check_after_ready(index, &ready);
            let Ready { number, messages, persist, persisted_messages, results, reads, events } = ready;
            // Step 3: messages that do not wait for persistence go out now.
            for outbound in messages {
                self.send(index, outbound);
            }
            // Step 7 (any order relative to 3–6).
            self.collect(index, results, reads, events);
            // Steps 4–6: persist, then send what depends on it, then advance.
            let node = &mut self.nodes[index];
            if persist.is_empty() && node.pending_persists.is_empty() {
                for outbound in persisted_messages {
                    self.send(index, outbound);
                }
                let node = &mut self.nodes[index];
                let local = node.local_time(self.now);
                if let Some(mechanism) = node.mechanism.as_deref_mut() {
                    mechanism.advance(local, number);
                }
            } else {
                let delay = if persist.is_empty() {
                    Duration::ZERO
                } else {
                    random_duration(
                        &mut self.rng,
                        self.config.persist_delay_min,
                        self.config.persist_delay_max,
                    )
                };
                let node = &mut self.nodes[index];
                // Batches become durable in order: never before the one ahead of them.
                let after = node.pending_persists.back().map_or(Instant::ZERO, |pending| pending.done_at);
                let done_at = (self.now + delay).max(after);
                let incarnation = node.incarnation;
                node.pending_persists.push_back(PendingPersist {
                    number,
                    persist,
                    persisted_messages,
                    done_at,
                });
                self.schedule(done_at, Scheduled::PersistDone { node: index, incarnation });
            }
        }
        let node = &mut self.nodes[index];
        node.timer = node.mechanism.as_deref().and_then(|mechanism| mechanism.poll_timeout()).map(|local| {
            let time = node.virtual_time(local);
            time.max(self.now)
        });
    }

    fn persist_done(&mut self, index: usize, incarnation: u64) {
        let node = &mut self.nodes[index];
        if node.incarnation != incarnation || node.mechanism.is_none() {
            return; // The process that asked for it crashed: the write never happened.
        }
        let Some(pending) = node.pending_persists.pop_front() else { return };
        debug_assert!(pending.done_at <= self.now, "persists complete in order");
        self.touched = Some(index);
        if !pending.persist.is_empty() {
            self.stats.persists += 1;
            if let Err(error) = apply_persist(&mut node.durable, &pending.persist) {
                let id = node.id.clone();
                self.fail(format!(
                    "{id} asked storage for an impossible write (batch {}): {error}",
                    pending.number
                ));
                return;
            }
            let line = format!(
                "{} {} durable #{}{}{}",
                self.stamp(),
                self.nodes[index].id,
                pending.number,
                if pending.persist.entries.is_empty() {
                    String::new()
                } else {
                    format!(" +{} entries", pending.persist.entries.len())
                },
                match &pending.persist.hard_state {
                    Some(hard) => format!(" term {} vote {:?}", hard.term, hard.voted_for),
                    None => String::new(),
                }
            );
            self.record(line);
            self.check_after_persist(index, &pending.persist);
        }
        for outbound in pending.persisted_messages {
            self.send(index, outbound);
        }
        let node = &mut self.nodes[index];
        let local = node.local_time(self.now);
        if let Some(mechanism) = node.mechanism.as_deref_mut() {
            mechanism.advance(local, pending.number);
        }
        self.drain(index);
    }

    fn collect(
        &mut self,
        index: usize,
        results: Vec<ProposalResult>,
        reads: Vec<ReadResult>,
        events: Vec<Event>,
    ) {
        for result in results {
            self.proposal_result(index, &result);
            if self.results.len() >= self.config.event_capacity {
                // Nobody is taking them: keep the newest, as with events.
                let excess = self.results.len() + 1 - self.config.event_capacity.max(1);
                self.results.drain(..excess);
            }
            self.results.push((self.nodes[index].id.clone(), result));
        }
        for read in reads {
            self.read_result(index, read);
        }
        for event in &events {
            // Role and leadership changes explain most failures; per-entry events would drown them.
            let line = match event {
                Event::LeaderElected { leader, term } => format!("leader:elected {leader} term {term}"),
                Event::RoleChanged { role, term } => format!("role:changed {role:?} term {term}"),
                Event::PartitionDetected { side, .. } => format!("partition:detected {side:?}"),
                Event::PartitionHealed => "partition:healed".to_owned(),
                _ => continue,
            };
            let line = format!("{} {} {line}", self.stamp(), self.nodes[index].id);
            self.record(line);
        }
        let capacity = self.config.event_capacity;
        let node = &mut self.nodes[index];
        for event in events {
            if capacity == 0 {
                break;
            }
            if node.events.len() >= capacity {
                node.events.pop_front();
            }
            node.events.push_back(event);
        }
    }

    // ----- clients -----

    /// Submits a client operation to `node` and records its invocation in the history.
    ///
    /// Writes become proposals with `ProposalId { origin: node, sequence }` and a fresh
    /// `ClientSession { client, sequence, answered_below }`; reads call `Mechanism::read` and, once the read point
    /// is reached, read the node's replica. A node that is down refuses at once (`Fail`).
    pub fn submit(&mut self, client: u64, node: &NodeId, op: ClientOp) -> OperationId {
        let id = OperationId(self.history.operations.len() as u64);
        self.history.operations.push(Operation {
            id,
            client,
            node: node.to_string(),
            key: op.key().to_owned(),
            kind: op.kind(),
            invoked_at_nanos: self.now.as_nanos(),
            completed_at_nanos: None,
            outcome: Outcome::Pending,
        });
        let line = format!("{} client {client} invokes {id} on {node}: {op:?}", self.stamp());
        self.record(line);
        let command = match &op {
            ClientOp::Get { .. } => None,
            ClientOp::Put { key, value } => match encode_value(value) {
                Ok(value) => Some(Command::Put { key: key.clone(), value }),
                Err(error) => {
                    self.finish(id, Outcome::Fail { reason: error.to_string() });
                    return id;
                }
            },
            ClientOp::Cas { key, expected, new } => {
                let expected = match expected.map(|value| encode_value(&value)).transpose() {
                    Ok(expected) => expected,
                    Err(error) => {
                        self.finish(id, Outcome::Fail { reason: error.to_string() });
                        return id;
                    }
                };
                match encode_value(new) {
                    Ok(new) => Some(Command::CompareAndSwap {
                        key: key.clone(),
                        expected: Expectation::Value(expected),
                        new: Some(new),
                    }),
                    Err(error) => {
                        self.finish(id, Outcome::Fail { reason: error.to_string() });
                        return id;
                    }
                }
            }
            ClientOp::Add { key, delta } => Some(Command::Add { key: key.clone(), delta: *delta }),
        };
        let Some(index) = self.index(node) else {
            self.finish(id, Outcome::Fail { reason: format!("no node {node}") });
            return id;
        };
        let session = command.as_ref().map(|_| {
            let sequence = self.client_sequences.entry(client).or_insert(0);
            *sequence += 1;
            let unanswered = self.client_unanswered.entry(client).or_default();
            unanswered.insert(*sequence);
            let answered_below = unanswered.first().copied().unwrap_or(*sequence);
            ClientSession { client, sequence: *sequence, answered_below }
        });
        self.in_flight
            .insert(id, InFlight { node: index, attempt: 0, command, session, proposal: None, read: None });
        self.dispatch(id);
        self.after_external_input();
        id
    }

    /// Retries an operation whose outcome is unknown on `node`, with the same client session, so it
    /// takes effect at most once. Returns `false` (and does nothing) unless the operation is a write
    /// whose outcome is currently unknown.
    pub fn retry(&mut self, operation: OperationId, node: &NodeId) -> bool {
        let Some(index) = self.index(node) else { return false };
        let Some(recorded) = self.history.operations.get_mut(operation.0 as usize) else { return false };
        if recorded.id != operation || !matches!(recorded.outcome, Outcome::Unknown { .. }) {
            return false;
        }
        let Some(flight) = self.retired.remove(&operation) else { return false };
        recorded.outcome = Outcome::Pending;
        recorded.node = node.to_string();
        let line = format!("{} retry {operation} on {node}", self.stamp());
        self.record(line);
        self.in_flight.insert(
            operation,
            InFlight {
                node: index,
                attempt: flight.attempt + 1,
                command: flight.command,
                session: flight.session,
                proposal: None,
                read: None,
            },
        );
        self.dispatch(operation);
        self.after_external_input();
        true
    }

    fn dispatch(&mut self, operation: OperationId) {
        let Some(flight) = self.in_flight.get_mut(&operation) else { return };
        let index = flight.node;
        let attempt = flight.attempt;
        if self.nodes[index].paused {
            // The request waits in the frozen process; the client's patience does not.
            self.nodes[index].held.push(Scheduled::Dispatch { operation, attempt });
            let deadline = self.now + self.config.config.timeout;
            self.schedule(deadline, Scheduled::ClientDeadline { operation, attempt });
            return;
        }
        let node = &mut self.nodes[index];
        let local = node.local_time(self.now);
        let Some(mechanism) = node.mechanism.as_deref_mut() else {
            let id = node.id.clone();
            let outcome = if attempt == 0 {
                Outcome::Fail { reason: format!("{id} is down") }
            } else {
                Outcome::Unknown { reason: format!("retry: {id} is down") }
            };
            self.finish(operation, outcome);
            return;
        };
        let submitted = match flight.command.clone() {
            Some(command) => {
                node.proposal_sequence += 1;
                let proposal_id = ProposalId { origin: node.id.clone(), sequence: node.proposal_sequence };
                flight.proposal = Some(proposal_id.clone());
                let proposal = Proposal { id: proposal_id.clone(), session: flight.session, command };
                let submitted = mechanism.propose(local, proposal);
                if submitted.is_ok() {
                    self.proposals.insert(proposal_id, operation);
                }
                submitted
            }
            None => {
                let read_id = self.next_read_id;
                self.next_read_id += 1;
                flight.read = Some(read_id);
                let submitted = mechanism.read(local, read_id);
                if submitted.is_ok() {
                    self.reads.insert((index, read_id), operation);
                }
                submitted
            }
        };
        match submitted {
            Ok(()) => {
                let deadline = self.now + self.config.config.timeout;
                self.schedule(deadline, Scheduled::ClientDeadline { operation, attempt });
            }
            Err(error) => {
                let outcome = if error.outcome_unknown() || attempt > 0 {
                    Outcome::Unknown { reason: error.to_string() }
                } else {
                    Outcome::Fail { reason: error.to_string() }
                };
                self.finish(operation, outcome);
            }
        }
        self.touched = Some(index);
        self.drain(index);
    }

    fn client_deadline(&mut self, operation: OperationId, attempt: u64) {
        if self.in_flight.get(&operation).is_some_and(|flight| flight.attempt == attempt) {
            let timeout = self.config.config.timeout;
            self.finish(operation, Outcome::Unknown { reason: format!("no answer within {timeout:?}") });
        }
    }

    fn proposal_result(&mut self, index: usize, result: &ProposalResult) {
        if !self.answered_proposals.insert((index, result.proposal_id.clone())) {
            let id = self.nodes[index].id.clone();
            self.fail(format!(
                "{id} reported a second result for proposal {} (exactly one is allowed)",
                result.proposal_id
            ));
            return;
        }
        // A result that arrives after the client gave up (its deadline passed) still says what
        // happened: `late` is the attempt it answers.
        let (operation, late) = match self.proposals.remove(&result.proposal_id) {
            Some(operation) => (operation, None),
            None => match self.late_proposals.remove(&result.proposal_id) {
                Some((operation, attempt)) => (operation, Some(attempt)),
                None => return,
            },
        };
        let Some(kind) = self.history.get(operation).map(|recorded| recorded.kind) else { return };
        let outcome = if result.accepted {
            match kind {
                OperationKind::Read => Outcome::Ok(Response::Written),
                OperationKind::Write { .. } => Outcome::Ok(Response::Written),
                OperationKind::Cas { .. } => Outcome::Ok(Response::Cas { swapped: true }),
                OperationKind::Add { .. } => match result.output.as_ref().and_then(|output| output.counter) {
                    Some(value) => Outcome::Ok(Response::Added { value }),
                    None => {
                        let id = self.nodes[index].id.clone();
                        self.fail(format!(
                            "{id}: accepted Add {} ({operation}) without the counter's value",
                            result.proposal_id
                        ));
                        Outcome::Unknown { reason: "accepted without a counter value".into() }
                    }
                },
            }
        } else {
            match &result.error {
                Some(ProposalError::Command(CommandFailure::CompareFailed { .. }))
                    if matches!(kind, OperationKind::Cas { .. }) =>
                {
                    Outcome::Ok(Response::Cas { swapped: false })
                }
                // The first attempt's outcome was forgotten: it may have been applied.
                Some(error @ ProposalError::Command(CommandFailure::SessionExpired)) => {
                    Outcome::Unknown { reason: error.to_string() }
                }
                Some(error) if error.outcome_unknown() => Outcome::Unknown { reason: error.to_string() },
                Some(error) => Outcome::Fail { reason: error.to_string() },
                None => Outcome::Fail { reason: "not accepted".into() },
            }
        };
        if let Some(attempt) = late {
            self.late_outcome(operation, attempt, outcome);
            return;
        }
        // A retry's refusal cannot undo an earlier attempt that may have taken effect.
        let outcome = match outcome {
            Outcome::Fail { reason }
                if self.in_flight.get(&operation).is_some_and(|flight| flight.attempt > 0) =>
            {
                Outcome::Unknown { reason: format!("retry refused: {reason}") }
            }
            other => other,
        };
        self.finish(operation, outcome);
    }

    fn read_result(&mut self, index: usize, read: ReadResult) {
        if !self.answered_reads.insert((index, read.id)) {
            let id = self.nodes[index].id.clone();
            self.fail(format!("{id} answered read {} twice (exactly one answer is allowed)", read.id));
            return;
        }
        let (operation, late) = match self.reads.remove(&(index, read.id)) {
            Some(operation) => (operation, false),
            None => match self.late_reads.remove(&(index, read.id)) {
                Some(operation) => (operation, true),
                None => return,
            },
        };
        let outcome = match read.result {
            Ok(read_point) => {
                let Some(mechanism) = self.nodes[index].mechanism.as_deref() else { return };
                let replica = mechanism.replica();
                if replica.applied() < read_point {
                    let id = self.nodes[index].id.clone();
                    let applied = replica.applied();
                    self.fail(format!(
                        "{id} answered read {} at index {read_point} but its replica has applied only {applied}",
                        read.id
                    ));
                    return;
                }
                let key =
                    self.history.get(operation).map(|recorded| recorded.key.clone()).unwrap_or_default();
                match replica.machine().get(&key).map(|bytes| decode_value::<i64>(&bytes)).transpose() {
                    Ok(value) => Outcome::Ok(Response::Read { value }),
                    Err(error) => {
                        let id = self.nodes[index].id.clone();
                        self.fail(format!("{id}: key {key:?} holds a value that is not an i64: {error}"));
                        return;
                    }
                }
            }
            // A read has no effect, so a failed read and an unknown one are the same to the checker.
            Err(error) => Outcome::Fail { reason: error.to_string() },
        };
        if late {
            self.late_outcome(operation, 0, outcome);
        } else {
            self.finish(operation, outcome);
        }
    }

    /// Records what a late answer (to `attempt`) says about an operation the client gave up on.
    /// A success always settles it: with client sessions a write takes effect once, whichever
    /// attempt's answer reports it. A refusal settles it only if no other attempt was made.
    fn late_outcome(&mut self, operation: OperationId, attempt: u64, outcome: Outcome) {
        let Some(recorded) = self.history.operations.get(operation.0 as usize) else { return };
        let retried = attempt > 0 || self.retired.get(&operation).is_some_and(|flight| flight.attempt > 0);
        match (&recorded.outcome, &outcome) {
            (Outcome::Unknown { .. }, Outcome::Ok(_)) => {}
            (Outcome::Unknown { .. }, Outcome::Fail { .. }) if !retried => {}
            (Outcome::Pending, Outcome::Ok(_)) => {
                // A retry is under way; the earlier attempt's success answers the operation.
                self.finish(operation, outcome);
                return;
            }
            _ => return,
        }
        // Settled: `retry` refuses it from now on, so its client may acknowledge it.
        if let Some(session) = self.retired.remove(&operation).and_then(|flight| flight.session) {
            if let Some(unanswered) = self.client_unanswered.get_mut(&session.client) {
                unanswered.remove(&session.sequence);
            }
        }
        let now = self.now.as_nanos();
        let stamp = self.stamp();
        let Some(recorded) = self.history.operations.get_mut(operation.0 as usize) else { return };
        recorded.outcome = outcome;
        recorded.completed_at_nanos = Some(now);
        let line = format!("{stamp} late answer: {recorded}");
        self.record(line);
    }

    fn finish(&mut self, operation: OperationId, outcome: Outcome) {
        let Some(flight) = self.in_flight.remove(&operation) else { return };
        if let Some(proposal) = &flight.proposal {
            self.proposals.remove(proposal);
        }
        if let (Some(session), Outcome::Ok(_) | Outcome::Fail { .. }) = (&flight.session, &outcome) {
            if let Some(unanswered) = self.client_unanswered.get_mut(&session.client) {
                unanswered.remove(&session.sequence);
            }
        }
        if let Some(read) = flight.read {
            self.reads.remove(&(flight.node, read));
        }
        let now = self.now.as_nanos();
        let stamp = self.stamp();
        let Some(recorded) = self.history.operations.get_mut(operation.0 as usize) else { return };
        match &outcome {
            Outcome::Ok(_) | Outcome::Fail { .. } => recorded.completed_at_nanos = Some(now),
            Outcome::Unknown { .. } | Outcome::Pending => recorded.completed_at_nanos = None,
        }
        let unknown = matches!(outcome, Outcome::Unknown { .. });
        recorded.outcome = outcome;
        let line = format!("{stamp} {recorded}");
        if unknown {
            // The mechanism may still answer (e.g. after the client's deadline).
            if let Some(proposal) = &flight.proposal {
                self.late_proposals.insert(proposal.clone(), (operation, flight.attempt));
            }
            if let Some(read) = flight.read {
                self.late_reads.insert((flight.node, read), operation);
            }
        }
        if unknown && flight.command.is_some() {
            self.retired.insert(operation, flight);
        }
        self.completed.push(operation);
        self.record(line);
    }
}

/// Read access to the simulation for invariants.
pub struct SimView<'a> {
    simulation: &'a Simulation,
    touched: Option<usize>,
    /// The touched node's debug state, computed once however many invariants ask for it.
    touched_state: OnceCell<Option<DebugState>>,
}

impl<'a> SimView<'a> {
    fn new(simulation: &'a Simulation, touched: Option<usize>) -> Self {
        SimView { simulation, touched, touched_state: OnceCell::new() }
    }

    /// The node the current step may have changed and its debug state, if it is up. Computed once
    /// per view: prefer it to [`SimView::debug_state`] in invariants that run after every step.
    pub fn touched_state(&self) -> Option<(&'a NodeId, &DebugState)> {
        let index = self.touched?;
        let state = self
            .touched_state
            .get_or_init(|| self.simulation.nodes[index].mechanism.as_deref().map(|m| m.debug_state()));
        state.as_ref().map(|state| (&self.simulation.nodes[index].id, state))
    }

    /// Virtual time.
    pub fn now(&self) -> Instant {
        self.simulation.now
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.simulation.config.seed
    }

    /// Every node.
    pub fn node_ids(&self) -> impl Iterator<Item = &'a NodeId> {
        self.simulation.nodes.iter().map(|node| &node.id)
    }

    /// The node whose state the current step may have changed (`None`: no node's did). State only
    /// changes on this node, so invariants can check it alone and stay cheap.
    pub fn touched(&self) -> Option<&'a NodeId> {
        self.touched.map(|index| &self.simulation.nodes[index].id)
    }

    /// A node's mechanism, `None` while it is down.
    pub fn mechanism(&self, id: &NodeId) -> Option<&'a dyn Mechanism> {
        self.simulation.mechanism(id)
    }

    /// A live node's debug state.
    pub fn debug_state(&self, id: &NodeId) -> Option<DebugState> {
        self.mechanism(id).map(|mechanism| mechanism.debug_state())
    }

    /// A node's durable store, `None` for an unknown node.
    pub fn durable(&self, id: &NodeId) -> Option<&'a Recovered> {
        self.simulation.index(id).map(|index| &self.simulation.nodes[index].durable)
    }

    /// A node's incarnation (bumped at every crash).
    pub fn incarnation(&self, id: &NodeId) -> Option<u64> {
        self.simulation.incarnation(id)
    }

    /// The client history.
    pub fn history(&self) -> &'a History {
        &self.simulation.history
    }

    /// A node's writes handed to storage but not yet durable, oldest first (empty while it is down).
    pub fn pending_persists(&self, id: &NodeId) -> impl Iterator<Item = &'a Persist> {
        let node = self.simulation.index(id).map(|index| &self.simulation.nodes[index]);
        node.into_iter().flat_map(|node| node.pending_persists.iter().map(|pending| &pending.persist))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_is_the_first_instant_a_local_deadline_is_reached() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..10_000 {
            let node = Node {
                id: NodeId::new("n1"),
                mechanism: None,
                incarnation: 0,
                durable: Recovered::default(),
                clock_origin: Instant::from_nanos(rng.gen_range(0..10_000_000_000)),
                clock_rate_ppm: rng.gen_range(500_000..1_500_000),
                pending_persists: VecDeque::new(),
                timer: None,
                events: VecDeque::new(),
                proposal_sequence: 0,
                last_ready_number: 0,
                paused: false,
                held: Vec::new(),
            };
            let deadline = node.clock_origin + Duration::from_nanos(rng.gen_range(1..100_000_000_000));
            let time = node.virtual_time(deadline);
            assert!(node.local_time(time) >= deadline, "reached at {time:?}");
            let before = Instant::from_nanos(time.as_nanos() - 1);
            assert!(node.local_time(before) < deadline, "not reached one nanosecond earlier");
        }
    }

    #[test]
    fn derived_seeds_differ_per_node_and_incarnation() {
        let seeds: BTreeSet<u64> = (0..10)
            .flat_map(|node| (0..10).map(move |incarnation| derive_seed(42, node, incarnation)))
            .collect();
        assert_eq!(seeds.len(), 100);
    }
}
