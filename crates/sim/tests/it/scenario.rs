//! The randomized scenario, run on the primary-backup double.

use std::time::Duration;

use concord_core::prelude::*;
use concord_sim::randomized::{self, Options};
use concord_sim::{factory, raft_invariants};

use crate::doubles::Primary;

fn options() -> Options {
    let mut options = Options::new(Config::default());
    options.duration_faults = Duration::from_secs(5);
    options.duration_liveness = Duration::from_secs(5);
    options.invariants = raft_invariants;
    // Slow disks: crashes often catch a write in flight, so outcomes become unknown and retried.
    options.persist_delay = (Duration::from_millis(1), Duration::from_millis(80));
    options
}

#[test]
fn a_correct_double_passes_many_seeds() {
    let options = options();
    let summary =
        randomized::run_seeds(0..500, |seed| randomized::run(seed, || factory(Primary::new), &options));
    println!("primary double: {summary}");
    assert!(summary.failures.is_empty(), "{summary}");
    assert!(summary.totals.ops_ok > 2500, "clients got work done: {summary}");
    assert!(summary.totals.ops_unknown > 0, "crashes left some outcomes unknown: {summary}");
    assert!(summary.totals.faults > 2500, "the nemesis was busy: {summary}");
}

#[test]
fn a_seed_reruns_identically() {
    let options = options();
    let first = randomized::run(77, || factory(Primary::new), &options).unwrap();
    let second = randomized::run(77, || factory(Primary::new), &options).unwrap();
    assert_eq!(first, second);
    let other = randomized::run(78, || factory(Primary::new), &options).unwrap();
    assert_ne!(first.trace_hash, other.trace_hash);
}

#[test]
fn stale_follower_reads_are_caught() {
    let options = options();
    let summary = randomized::run_seeds(0..40, |seed| {
        randomized::run(seed, || factory(|setup| Primary::with_follower_reads(setup, true)), &options)
    });
    let first = summary.failures.first().expect("stale reads should break linearizability on some seed");
    println!("{first}");
    assert!(first.message.contains("not linearizable"), "{first}");
    // The failing seed reproduces the same failure.
    let again =
        randomized::run(first.seed, || factory(|setup| Primary::with_follower_reads(setup, true)), &options)
            .unwrap_err();
    assert_eq!(&again, first);
}

#[test]
fn no_progress_is_a_failure() {
    // A cluster whose only decider is gone for good cannot make progress: the liveness phase
    // must say so instead of passing quietly.
    let options = options();
    let refusing = |setup: Setup| {
        let mut setup = setup;
        // Every node believes a node outside the cluster is the primary.
        setup.initial_members.insert(0, NodeInfo::new("ghost", "sim://ghost"));
        Primary::new(setup)
    };
    let violation = randomized::run(5, || factory(refusing), &options).unwrap_err();
    assert!(violation.message.starts_with("no progress"), "{violation}");
}
