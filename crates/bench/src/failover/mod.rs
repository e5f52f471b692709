//! Failover time after Figure 16 of the Raft paper (Ongaro & Ousterhout, "In Search of an
//! Understandable Consensus Algorithm", §9.3): how long a 5-node cluster is without a leader after
//! its leader crashes, for a range of election timeouts.
//!
//! Each trial is one run of the deterministic simulator (`concord-sim`) driving the real
//! `concord-raft` code: the nodes boot at staggered times, elect a leader and settle (every node
//! follows the leader for [`FailoverSetup::settle`]), the leader is crashed at a
//! uniformly random point of its heartbeat interval, and the virtual time from the crash until some
//! live node leads in a higher term is the trial's result. As in the paper, the heartbeat interval
//! is half the minimum election timeout, and the network's one-way delay (7–8 ms, no loss) makes
//! the broadcast time — one round of RPCs to all four peers in parallel, answers included — about
//! 15 ms. Pre-vote and check-quorum are off by default, since the paper's Raft had neither;
//! [`TimeoutRange::with_pre_vote_and_check_quorum`] measures concord's default configuration.
//!
//! What it is not: a measurement of a real network or of real processes; nothing here reads a
//! clock, so the same seed always gives the same number.

pub mod plot;

use std::time::Duration;

use concord_core::config::{Config, ConfigError, ElectionTimeout};
use concord_core::id::{NodeId, Term};
use concord_core::time::Instant;
use concord_sim::{NetworkConfig, SimConfig, Simulation, Violation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// An election timeout range, and whether pre-vote and check-quorum are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutRange {
    /// Shortest election timeout.
    pub min: Duration,
    /// Longest election timeout (inclusive).
    pub max: Duration,
    /// Whether pre-vote and check-quorum are on (the paper's Raft had neither).
    pub pre_vote_and_check_quorum: bool,
}

impl TimeoutRange {
    /// A range in milliseconds, with pre-vote and check-quorum off, as in the paper.
    pub const fn from_millis(min_ms: u64, max_ms: u64) -> Self {
        TimeoutRange {
            min: Duration::from_millis(min_ms),
            max: Duration::from_millis(max_ms),
            pre_vote_and_check_quorum: false,
        }
    }

    /// The same range with pre-vote and check-quorum on (concord's defaults).
    pub const fn with_pre_vote_and_check_quorum(self) -> Self {
        TimeoutRange { pre_vote_and_check_quorum: true, ..self }
    }

    /// The paper's choice: the leader sends heartbeats every half minimum election timeout.
    pub fn heartbeat_interval(&self) -> Duration {
        self.min / 2
    }

    /// `150–300 ms`, with ` + pre-vote, check-quorum` when those are on.
    pub fn label(&self) -> String {
        let base = format!("{}–{} ms", self.min.as_millis(), self.max.as_millis());
        if self.pre_vote_and_check_quorum {
            format!("{base} + pre-vote, check-quorum")
        } else {
            base
        }
    }

    /// The Raft config of every node, validated.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.election_timeout = ElectionTimeout { min: self.min, max: self.max };
        config.heartbeat_interval = self.heartbeat_interval();
        config.pre_vote = self.pre_vote_and_check_quorum;
        config.check_quorum = self.pre_vote_and_check_quorum;
        // Lease reads need check-quorum, and no client reads here anyway.
        config.lease_reads = false;
        config.validate()?;
        Ok(config)
    }
}

/// The ranges of the paper's Figure 16 — the top graph (150–150 … 150–300 ms) then the bottom one
/// (12–24 … 100–200 ms) — plus 150–300 ms with pre-vote and check-quorum on.
pub const PAPER_RANGES: [TimeoutRange; 11] = [
    TimeoutRange::from_millis(150, 150),
    TimeoutRange::from_millis(150, 151),
    TimeoutRange::from_millis(150, 155),
    TimeoutRange::from_millis(150, 175),
    TimeoutRange::from_millis(150, 200),
    TimeoutRange::from_millis(150, 300),
    TimeoutRange::from_millis(12, 24),
    TimeoutRange::from_millis(25, 50),
    TimeoutRange::from_millis(50, 100),
    TimeoutRange::from_millis(100, 200),
    TimeoutRange::from_millis(150, 300).with_pre_vote_and_check_quorum(),
];

/// The cluster and network every trial runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverSetup {
    /// Nodes in the cluster (the paper: 5).
    pub node_count: usize,
    /// Shortest one-way network delay.
    pub one_way_delay_min: Duration,
    /// Longest one-way network delay; the jitter keeps identical timeouts from staying in lockstep
    /// forever, as a real network does.
    pub one_way_delay_max: Duration,
    /// Shortest time a write (a vote, a term) takes to become durable.
    pub persist_delay_min: Duration,
    /// Longest time a write takes to become durable.
    pub persist_delay_max: Duration,
    /// Clock-rate spread between nodes (1e-4 = 100 ppm, a common quartz tolerance). Kept tiny on
    /// purpose: a 1% spread would desynchronize equal timeouts and flatter the narrow ranges.
    pub clock_rate_spread: f64,
    /// How long the cluster may take to settle before the trial is counted as a setup failure.
    pub initial_election_max: Duration,
    /// How long a leader that every node follows must stay so before the crash: every follower
    /// has seen its heartbeats and the cluster is in the steady state the paper measures from.
    pub settle: Duration,
    /// A trial that has no new leader this long after the crash counts as "not elected".
    pub election_bound: Duration,
}

impl Default for FailoverSetup {
    fn default() -> Self {
        FailoverSetup {
            node_count: 5,
            one_way_delay_min: Duration::from_millis(7),
            one_way_delay_max: Duration::from_millis(8),
            persist_delay_min: Duration::from_micros(100),
            persist_delay_max: Duration::from_micros(500),
            clock_rate_spread: 1e-4,
            initial_election_max: Duration::from_secs(60),
            settle: Duration::from_secs(1),
            election_bound: Duration::from_secs(10),
        }
    }
}

impl FailoverSetup {
    /// A lower bound on any trial's time, from the protocol alone: the leader's last message left
    /// at most one heartbeat interval before the crash and reached followers no sooner than the
    /// shortest delay; a follower then waits at least the minimum election timeout (by its own
    /// clock, which may run fast by the clock spread), and its vote request and the answer each
    /// take at least the shortest delay.
    ///
    /// Intervals are measured by each node's own clock: the follower's may run fast and the
    /// leader's slow, each by up to the clock-rate spread.
    pub fn election_time_lower_bound(&self, range: &TimeoutRange) -> Duration {
        let waited = range.min.div_f64(1.0 + self.clock_rate_spread);
        let since_last_heartbeat = range.heartbeat_interval().div_f64(1.0 - self.clock_rate_spread);
        (waited + self.one_way_delay_min * 3).saturating_sub(since_last_heartbeat)
    }

    fn sim_config(&self, range: &TimeoutRange, seed: u64) -> Result<SimConfig, ConfigError> {
        let mut config = SimConfig::new(seed, self.node_count, range.config()?);
        config.network = NetworkConfig {
            loss: 0.0,
            duplicate: 0.0,
            delay_min: self.one_way_delay_min,
            delay_max: self.one_way_delay_max,
        };
        config.persist_delay_min = self.persist_delay_min;
        config.persist_delay_max = self.persist_delay_max;
        config.clock_rate_spread = self.clock_rate_spread;
        Ok(config)
    }
}

/// Why a trial could not measure a failover (not a slow election: that is
/// [`TrialOutcome::NotElected`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FailoverError {
    /// The range makes an invalid config (the caller's fault).
    #[error("timeout range {range}: {source}")]
    Config {
        /// The range.
        range: String,
        /// What is wrong with it.
        source: ConfigError,
    },
    /// No leader was followed by every node through a whole settle period within
    /// `initial_election_max` (a range too short for the network can keep deposing leaders).
    #[error("seed {seed}: no leader followed by every node through the settle period within {within:?}")]
    NotSettled {
        /// The trial's seed.
        seed: u64,
        /// The bound.
        within: Duration,
    },
    /// The simulator found a violation (a bug in Raft or the simulator).
    #[error("simulation failed: {0}")]
    Simulation(#[from] Box<Violation>),
}

/// What one trial measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialOutcome {
    /// A new leader (a live node leading in a higher term) appeared `time` after the crash.
    Elected {
        /// Crash to new leader, in virtual time.
        time: Duration,
        /// The new leader's term minus the crashed leader's (1 = no split vote).
        terms: u64,
    },
    /// No new leader within [`FailoverSetup::election_bound`].
    NotElected,
}

fn leader_term(simulation: &Simulation, leader: &NodeId) -> Option<Term> {
    simulation.mechanism(leader).map(|mechanism| mechanism.debug_state().current_term)
}

/// The leader and its term, if every live node follows it in its term.
fn settled_leader(simulation: &Simulation) -> Option<(NodeId, Term)> {
    let leader = simulation.leader()?;
    let term = leader_term(simulation, &leader)?;
    let all_follow = simulation.node_ids().iter().all(|node| {
        simulation.mechanism(node).map_or(true, |mechanism| {
            let state = mechanism.debug_state();
            state.current_term == term && state.leader_id.as_ref() == Some(&leader)
        })
    });
    all_follow.then_some((leader, term))
}

/// Runs one trial with `seed`: start, elect, settle, crash the leader at a random point of its
/// heartbeat interval, and time the election that follows.
pub fn run_trial(
    setup: &FailoverSetup,
    range: &TimeoutRange,
    seed: u64,
) -> Result<TrialOutcome, FailoverError> {
    let config = setup
        .sim_config(range, seed)
        .map_err(|source| FailoverError::Config { range: range.label(), source })?;
    let mut simulation = Simulation::new(config, concord_sim::factory(concord_raft::Raft::new));
    // The trial's own random stream, so it does not disturb the simulator's.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6661_696c_6f76_6572);
    // Nodes that boot in the same instant time out in lockstep, and with a narrow range (150–150
    // ms) may take minutes to elect their first leader. That is a boot problem, not the failover
    // being measured, so all but the first node boot at random times within one minimum timeout.
    let nodes = simulation.node_ids();
    let mut boots: Vec<(Duration, NodeId)> =
        nodes.iter().skip(1).map(|node| (random_duration_below(&mut rng, range.min), node.clone())).collect();
    boots.sort();
    for (_, node) in &boots {
        simulation.crash(node);
    }
    for (at, node) in &boots {
        simulation.run_until(Instant::ZERO + *at).map_err(Box::new)?;
        simulation.restart(node);
    }
    // Settled: a leader that every node follows, still the leader after `settle`. Short ranges
    // (12–24 ms, shorter than a heartbeat's trip plus a vote round) can depose a fresh leader,
    // so this may take a few tries.
    let settle_deadline = simulation.now() + setup.initial_election_max;
    let (leader, old_term) = loop {
        let limit = settle_deadline - simulation.now();
        let found =
            simulation.run_until_condition(limit, |s| settled_leader(s).is_some()).map_err(Box::new)?;
        let first = settled_leader(&simulation);
        if !found || first.is_none() {
            return Err(FailoverError::NotSettled { seed, within: setup.initial_election_max });
        }
        simulation.run_for(setup.settle).map_err(Box::new)?;
        if settled_leader(&simulation) == first {
            // The settle period ends at an arbitrary phase of the heartbeat cycle; a further
            // uniform delay within one interval makes the crash point uniform over the interval,
            // as in the paper.
            let offset = random_duration_below(&mut rng, range.heartbeat_interval());
            simulation.run_for(offset).map_err(Box::new)?;
            if let Some(settled) = settled_leader(&simulation) {
                break (settled.0, settled.1);
            }
        }
        if simulation.now() >= settle_deadline {
            return Err(FailoverError::NotSettled { seed, within: setup.initial_election_max });
        }
    };
    simulation.note(format_args!("failover: crashing leader {leader} in term {old_term:?}"));
    let crashed_at: Instant = simulation.now();
    simulation.crash(&leader);
    let mut new_term = old_term;
    let elected = simulation
        .run_until_condition(setup.election_bound, |s| {
            let term = s.leader().and_then(|new_leader| leader_term(s, &new_leader));
            match term {
                Some(term) if term > old_term => {
                    new_term = term;
                    true
                }
                _ => false,
            }
        })
        .map_err(Box::new)?;
    if !elected {
        return Ok(TrialOutcome::NotElected);
    }
    assert!(simulation.leader().as_ref() != Some(&leader), "the crashed leader cannot lead");
    Ok(TrialOutcome::Elected { time: simulation.now() - crashed_at, terms: new_term.0 - old_term.0 })
}

/// A uniform random duration in `[0, below)` (zero if `below` is zero).
fn random_duration_below(rng: &mut ChaCha8Rng, below: Duration) -> Duration {
    let nanos = u64::try_from(below.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rng.gen_range(0..nanos))
}

/// The seed of trial `trial` of range number `range_index`: distinct for every (range, trial) pair
/// below a million trials per range.
pub fn trial_seed(base_seed: u64, range_index: usize, trial: usize) -> u64 {
    base_seed.wrapping_add((range_index as u64) * 1_000_000).wrapping_add(trial as u64)
}

/// All trials of one range.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeResult {
    /// The range.
    pub range: TimeoutRange,
    /// Each elected trial's time, sorted.
    pub times: Vec<Duration>,
    /// Trials with no new leader within the bound.
    pub not_elected: usize,
    /// Trials whose cluster never settled before the crash, with their errors.
    pub setup_failures: Vec<String>,
    /// Elections that needed more than one term (a split vote or a lost race).
    pub multi_term_elections: usize,
}

impl RangeResult {
    /// Trials that measured something (elected or not).
    pub fn trials(&self) -> usize {
        self.times.len() + self.not_elected
    }

    /// Median, p99, max and mean, or `None` without measured trials.
    pub fn summary(&self) -> Option<Summary> {
        let trials = self.trials();
        if trials == 0 {
            return None;
        }
        // Not-elected trials count as slower than every elected one: a percentile that lands on
        // them is "over the bound", not silently dropped.
        let rank = |fraction: f64| -> Option<Duration> {
            let index = ((fraction * trials as f64).ceil() as usize).clamp(1, trials) - 1;
            self.times.get(index).copied()
        };
        let total: Duration = self.times.iter().sum();
        let mean = (!self.times.is_empty()).then(|| total / self.times.len() as u32);
        Some(Summary {
            median: rank(0.5),
            p99: rank(0.99),
            max: if self.not_elected > 0 { None } else { self.times.last().copied() },
            mean_of_elected: mean,
        })
    }
}

/// A range's statistics; `None` means "over the election bound".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// 50th percentile (nearest rank).
    pub median: Option<Duration>,
    /// 99th percentile (nearest rank).
    pub p99: Option<Duration>,
    /// Slowest trial.
    pub max: Option<Duration>,
    /// Mean over the trials that elected a leader within the bound.
    pub mean_of_elected: Option<Duration>,
}

/// Runs `trials` trials of `range`, calling `progress(done)` after each.
pub fn run_range(
    setup: &FailoverSetup,
    range: &TimeoutRange,
    range_index: usize,
    trials: usize,
    base_seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<RangeResult, FailoverError> {
    let mut result = RangeResult {
        range: *range,
        times: Vec::with_capacity(trials),
        not_elected: 0,
        setup_failures: Vec::new(),
        multi_term_elections: 0,
    };
    for trial in 0..trials {
        match run_trial(setup, range, trial_seed(base_seed, range_index, trial)) {
            Ok(TrialOutcome::Elected { time, terms, .. }) => {
                result.times.push(time);
                if terms > 1 {
                    result.multi_term_elections += 1;
                }
            }
            Ok(TrialOutcome::NotElected) => result.not_elected += 1,
            Err(error @ FailoverError::NotSettled { .. }) => {
                result.setup_failures.push(error.to_string());
            }
            Err(error) => return Err(error),
        }
        progress(trial + 1);
    }
    result.times.sort_unstable();
    Ok(result)
}

fn milliseconds(duration: Option<Duration>, bound: Duration) -> String {
    match duration {
        Some(duration) => format!("{:.1}", duration.as_secs_f64() * 1000.0),
        None => format!("> {:.0}", bound.as_secs_f64() * 1000.0),
    }
}

/// The paper's figure for a range, where it states one.
pub fn paper_figure(range: &TimeoutRange) -> &'static str {
    if range.pre_vote_and_check_quorum {
        return "";
    }
    match (range.min.as_millis(), range.max.as_millis()) {
        (150, 150) => "worst > 10 s",
        (150, 155) => "median 287 ms",
        (150, 200) => "worst 513 ms (1,000 trials)",
        (12, 24) => "mean 35 ms, worst 152 ms",
        (150, 300) => "goal: median ≤ 200, worst ≤ 400",
        _ => "",
    }
}

/// The goal at 150–300 ms: median ≤ 200 ms and worst ≤ 400 ms. `None` for other ranges.
pub fn goal_met(result: &RangeResult) -> Option<bool> {
    let range = &result.range;
    if range.min != Duration::from_millis(150) || range.max != Duration::from_millis(300) {
        return None;
    }
    let summary = result.summary()?;
    Some(
        summary.median.is_some_and(|median| median <= Duration::from_millis(200))
            && summary.max.is_some_and(|max| max <= Duration::from_millis(400)),
    )
}

/// The markdown table of all ranges, with the paper's figures beside ours.
pub fn markdown_table(setup: &FailoverSetup, results: &[RangeResult]) -> String {
    let bound = setup.election_bound;
    let mut table = format!(
        "| election timeout | heartbeat | trials | median ms | p99 ms | max ms | mean ms (elected) | \
         not elected in {} s | elections over >1 term | setup failures | paper (Fig. 16) | goal |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        bound.as_secs_f64()
    );
    for result in results {
        let summary = result.summary();
        let cell = |pick: fn(&Summary) -> Option<Duration>| match &summary {
            Some(summary) => milliseconds(pick(summary), bound),
            None => "–".to_string(),
        };
        let goal = match goal_met(result) {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        table.push_str(&format!(
            "| {} | {} ms | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            result.range.label(),
            result.range.heartbeat_interval().as_millis(),
            result.trials(),
            cell(|summary| summary.median),
            cell(|summary| summary.p99),
            cell(|summary| summary.max),
            cell(|summary| summary.mean_of_elected),
            result.not_elected,
            result.multi_term_elections,
            result.setup_failures.len(),
            paper_figure(&result.range),
            goal,
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(times_ms: &[u64], not_elected: usize) -> RangeResult {
        let mut times: Vec<Duration> = times_ms.iter().map(|ms| Duration::from_millis(*ms)).collect();
        times.sort_unstable();
        RangeResult {
            range: TimeoutRange::from_millis(150, 300),
            times,
            not_elected,
            setup_failures: Vec::new(),
            multi_term_elections: 0,
        }
    }

    #[test]
    fn percentiles_use_nearest_rank_and_count_unelected_trials_as_slowest() {
        let summary = result(&(1..=100).collect::<Vec<_>>(), 0).summary().unwrap();
        assert_eq!(summary.median, Some(Duration::from_millis(50)));
        assert_eq!(summary.p99, Some(Duration::from_millis(99)));
        assert_eq!(summary.max, Some(Duration::from_millis(100)));
        // Two of 100 never elected: p99 falls on one of them, so it is "over the bound".
        let summary = result(&(1..=98).collect::<Vec<_>>(), 2).summary().unwrap();
        assert_eq!(summary.median, Some(Duration::from_millis(50)));
        assert_eq!(summary.p99, None);
        assert_eq!(summary.max, None);
    }

    #[test]
    fn goal_needs_both_median_and_worst() {
        assert_eq!(goal_met(&result(&[150, 190, 390], 0)), Some(true));
        assert_eq!(goal_met(&result(&[150, 190, 401], 0)), Some(false));
        assert_eq!(goal_met(&result(&[150, 201, 210], 0)), Some(false));
        assert_eq!(goal_met(&result(&[150, 190], 1)), Some(false));
    }

    #[test]
    fn each_trial_elects_a_new_leader_no_sooner_than_the_protocol_allows() {
        let setup = FailoverSetup::default();
        let ranges = [TimeoutRange::from_millis(150, 300), TimeoutRange::from_millis(12, 24)];
        for (range_index, range) in ranges.iter().enumerate() {
            let lower_bound = setup.election_time_lower_bound(range);
            // The bound is not vacuous: most of an election timeout.
            assert!(lower_bound > range.min / 2, "{lower_bound:?}");
            for trial in 0..8 {
                let seed = trial_seed(11, range_index, trial);
                let outcome = run_trial(&setup, range, seed).unwrap();
                let TrialOutcome::Elected { time, terms } = outcome else {
                    panic!("seed {seed}, {}: no new leader within {:?}", range.label(), setup.election_bound);
                };
                assert!(
                    time >= lower_bound,
                    "seed {seed}, {}: new leader {time:?} after the crash, before the earliest possible \
                     {lower_bound:?}",
                    range.label()
                );
                assert!(time < setup.election_bound);
                assert!(terms >= 1);
                // The same seed is the same run.
                assert_eq!(run_trial(&setup, range, seed).unwrap(), outcome, "seed {seed}");
            }
        }
    }

    #[test]
    fn every_paper_range_makes_a_valid_config() {
        for range in PAPER_RANGES {
            let config = range.config().unwrap();
            assert_eq!(config.heartbeat_interval * 2, config.election_timeout.min);
        }
    }
}
