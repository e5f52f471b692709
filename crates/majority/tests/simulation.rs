//! The randomized simulation: the guarantee under loss, duplication, reordering, partitions,
//! crash-restart and clock drift, and a proof that the simulator catches a broken variant.
//!
//! `cargo xtask sim --mechanism majority [--seeds N] [--seed S]` runs this binary in release mode
//! with `CONCORD_SIM_SEEDS=N` (seed count of the main scenario; the five-node and churn scenarios
//! run a quarter and a twentieth of it) or `CONCORD_SIM_SEED=S` (that one seed, to reproduce a
//! failure).

use concord_majority::{simulation, Bug};
use std::time::Duration;

use concord_sim::randomized;

/// Seeds in the default test path (CI needs at least 2,000). `CONCORD_SIM_SEEDS` overrides.
const DEFAULT_SEEDS: u64 = 2000;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|text| text.parse().ok())
}

/// The main scenario's seeds: `CONCORD_SIM_SEED` alone, or `0..CONCORD_SIM_SEEDS`.
fn seeds() -> std::ops::Range<u64> {
    match env_number("CONCORD_SIM_SEED") {
        Some(seed) => seed..seed + 1,
        None => 0..env_number("CONCORD_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS),
    }
}

fn scaled(range: std::ops::Range<u64>, divisor: u64) -> std::ops::Range<u64> {
    if range.end - range.start == 1 {
        return range; // One seed to reproduce: run it in every scenario.
    }
    range.start..range.start + ((range.end - range.start) / divisor).max(1)
}

#[test]
fn at_most_one_value_per_slot_under_faults() {
    let summary = simulation::run_seeds(seeds());
    eprintln!("simple majority simulation: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
    assert!(summary.totals.ops_ok > 0, "no operation ever succeeded: {summary}");
}

#[test]
fn five_nodes_two_down_at_once() {
    let mut options = simulation::options();
    options.nodes = 5;
    options.clients = 5;
    let summary = randomized::run_seeds(scaled(seeds(), 4), |seed| {
        randomized::run(seed, simulation::factory, &options)
    });
    eprintln!("five nodes: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
}

#[test]
fn slow_disks_and_slow_links() {
    // Votes leave only once durable: slow persists widen every window a crash can hit.
    let mut options = simulation::options();
    options.persist_delay = (Duration::from_millis(1), Duration::from_millis(40));
    options.delay = (Duration::from_millis(1), Duration::from_millis(60));
    let summary = randomized::run_seeds(scaled(seeds(), 10), |seed| {
        randomized::run(seed, simulation::factory, &options)
    });
    eprintln!("slow disks and links: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let first = simulation::run_seed(11).expect("seed 11 passes");
    let second = simulation::run_seed(11).expect("seed 11 passes");
    assert_eq!(first.trace_hash, second.trace_hash);
}

/// The seeds within which the simulator must catch a broken variant.
const BROKEN_SEEDS_MAX: u64 = 200;
/// Virtual time of one crash-storm run.
const STORM: Duration = Duration::from_secs(5);

fn caught_within(bug: Bug) -> Option<(u64, String)> {
    (0..BROKEN_SEEDS_MAX).find_map(|seed| {
        match simulation::crash_storm(seed, simulation::broken_factory(bug), STORM) {
            Err(violation) => Some((seed, violation.message)),
            Ok(_) => None,
        }
    })
}

#[test]
fn crash_storms_pass_with_the_correct_mechanism() {
    let summary = randomized::run_seeds(0..BROKEN_SEEDS_MAX, |seed| {
        simulation::crash_storm(seed, simulation::factory(), STORM)
    });
    eprintln!("crash storms: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
    assert!(summary.totals.ops_ok > 0, "{summary}");
}

#[test]
fn forgetting_votes_on_restart_is_caught() {
    let caught = caught_within(Bug::ForgetVotesOnRestart);
    let (seed, message) = caught.expect("no crash storm exposed Bug::ForgetVotesOnRestart");
    eprintln!("Bug::ForgetVotesOnRestart caught by seed {seed}: {message}");
    assert!(message.contains("applied") || message.contains("accepted"), "{message}");
}

#[test]
fn releasing_votes_on_timeout_is_caught() {
    let caught = caught_within(Bug::ReleaseVoteOnTimeout);
    let (seed, message) = caught.expect("no crash storm exposed Bug::ReleaseVoteOnTimeout");
    eprintln!("Bug::ReleaseVoteOnTimeout caught by seed {seed}: {message}");
    assert!(message.contains("applied") || message.contains("accepted"), "{message}");
}

#[test]
fn membership_churn_keeps_the_guarantee() {
    let mut totals = simulation::ChurnReport::default();
    for seed in scaled(seeds(), 20) {
        match simulation::membership_churn(seed, Duration::from_secs(8)) {
            Ok(report) => {
                totals.changes_accepted += report.changes_accepted;
                totals.changes_failed += report.changes_failed;
                totals.writes_accepted += report.writes_accepted;
            }
            Err(violation) => panic!("{violation}"),
        }
    }
    eprintln!("membership churn: {totals:?}");
    assert!(totals.changes_accepted > 0, "no membership change was ever accepted: {totals:?}");
    assert!(totals.writes_accepted > 0, "{totals:?}");
}
