//! The randomized simulation: the guarantee under loss, duplication, reordering, partitions,
//! crash-restart and clock drift, and a proof that the simulator catches a broken variant.

use concord_majority::simulation;
use concord_majority::Bug;
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
fn the_same_seed_gives_the_same_run() {
    let first = simulation::run_seed(11).expect("seed 11 passes");
    let second = simulation::run_seed(11).expect("seed 11 passes");
    assert_eq!(first.trace_hash, second.trace_hash);
}

/// The seeds within which the simulator must catch a broken variant.
const BROKEN_SEEDS_MAX: u64 = 300;

/// The broken-variant hunt: more nodes (two may be down at once), one hot key, more clients.
fn adversarial_options() -> randomized::Options {
    let mut options = simulation::options();
    options.nodes = 5;
    options.keys = 1;
    options.clients = 6;
    options.ops_per_client = 40;
    options
}

fn caught_within(bug: Bug) -> Option<u64> {
    let options = adversarial_options();
    (0..BROKEN_SEEDS_MAX).find(|seed| {
        randomized::run(*seed, || simulation::broken_factory(bug), &options).is_err_and(|violation| {
            // Only a safety violation counts, not a stall the bug may also cause.
            violation.message.contains("accepted") || violation.message.contains("applied")
        })
    })
}

#[test]
fn forgetting_votes_on_restart_is_caught() {
    let seed = caught_within(Bug::ForgetVotesOnRestart);
    assert!(seed.is_some(), "no seed below {BROKEN_SEEDS_MAX} exposed Bug::ForgetVotesOnRestart");
    eprintln!("Bug::ForgetVotesOnRestart caught by seed {seed:?}");
}

#[test]
fn releasing_votes_on_timeout_is_caught() {
    let seed = caught_within(Bug::ReleaseVoteOnTimeout);
    assert!(seed.is_some(), "no seed below {BROKEN_SEEDS_MAX} exposed Bug::ReleaseVoteOnTimeout");
    eprintln!("Bug::ReleaseVoteOnTimeout caught by seed {seed:?}");
}

#[test]
fn adversarial_options_pass_with_the_correct_mechanism() {
    let options = adversarial_options();
    let summary = randomized::run_seeds(0..100, |seed| randomized::run(seed, simulation::factory, &options));
    assert!(summary.failures.is_empty(), "{summary}");
}
