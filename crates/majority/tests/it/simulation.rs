//! The randomized simulation: the guarantee under loss, duplication, reordering, partitions,
//! crash-restart and clock drift, and a proof that the simulator catches a broken variant.

use concord_majority::simulation;
use concord_majority::Bug;
use std::time::Duration;

use concord_sim::randomized;

/// Seeds in the default test path (CI needs at least 2,000). `CONCORD_MAJORITY_SEEDS` overrides.
const DEFAULT_SEEDS: u64 = 2000;

fn seed_count() -> u64 {
    std::env::var("CONCORD_MAJORITY_SEEDS").ok().and_then(|text| text.parse().ok()).unwrap_or(DEFAULT_SEEDS)
}

#[test]
fn at_most_one_value_per_slot_under_faults() {
    let summary = simulation::run_seeds(0..seed_count());
    eprintln!("simple majority simulation: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
    assert!(summary.totals.ops_ok > 0, "no operation ever succeeded: {summary}");
}

#[test]
fn five_nodes_two_down_at_once() {
    let mut options = simulation::options();
    options.nodes = 5;
    options.clients = 5;
    let seeds = seed_count() / 4;
    let summary =
        randomized::run_seeds(0..seeds, |seed| randomized::run(seed, simulation::factory, &options));
    eprintln!("five nodes: {summary}");
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
    let seeds = std::env::var("CONCORD_MAJORITY_CHURN_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100u64);
    for seed in 0..seeds {
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
