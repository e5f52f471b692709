//! The simulator itself: determinism, network faults, crashes and persistence order, invariants.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_core::prelude::*;
use concord_sim::invariants::ElectionSafety;
use concord_sim::{ClientOp, NetworkConfig, Outcome, Response, SimConfig, Simulation};

use crate::doubles::{gossip, GossipOptions, Journal};

fn n(index: usize) -> NodeId {
    NodeId::new(format!("n{index}"))
}

fn gossip_simulation(seed: u64, network: NetworkConfig) -> (Simulation, Journal) {
    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut config = SimConfig::new(seed, 3, Config::default());
    config.network = network;
    let simulation = Simulation::new(config, gossip(journal.clone(), GossipOptions::default()));
    (simulation, journal)
}

/// The counter at `key` on node `id` (0 if absent).
fn counter(simulation: &Simulation, id: &NodeId, key: &str) -> i64 {
    let value = simulation.mechanism(id).expect("node is up").replica().machine().get(key);
    KvStateMachine::decode_counter(value.as_ref()).expect("a counter")
}

/// Runs a lossy, duplicating, partitioned scenario with clients and returns the trace hash.
fn noisy_run(seed: u64) -> (u64, Vec<String>) {
    let network = NetworkConfig {
        loss: 0.2,
        duplicate: 0.2,
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(30),
    };
    let (mut simulation, _) = gossip_simulation(seed, network);
    for round in 0..20u64 {
        let node = n(1 + (round as usize % 3));
        simulation.submit(round % 4, &node, ClientOp::Add { key: "c".into(), delta: 1 });
        simulation.submit(round % 4, &node, ClientOp::Get { key: "c".into() });
        if round == 7 {
            simulation.partition(&[vec![n(1)], vec![n(2), n(3)]]);
        }
        if round == 9 {
            simulation.crash(&n(2));
        }
        if round == 12 {
            simulation.heal();
            simulation.restart(&n(2));
        }
        simulation.run_for(Duration::from_millis(7)).unwrap();
    }
    simulation.run_for(Duration::from_secs(1)).unwrap();
    (simulation.trace_hash(), simulation.trace().map(str::to_owned).collect())
}

#[test]
fn the_same_seed_gives_the_same_trace_and_different_seeds_differ() {
    let (first_hash, first_trace) = noisy_run(11);
    let (second_hash, second_trace) = noisy_run(11);
    assert_eq!(first_hash, second_hash);
    assert_eq!(first_trace, second_trace);
    let (other_hash, _) = noisy_run(12);
    assert_ne!(first_hash, other_hash, "a different seed should give a different run");
}

#[test]
fn loss_of_one_delivers_nothing() {
    let network = NetworkConfig { loss: 1.0, ..NetworkConfig::default() };
    let (mut simulation, _) = gossip_simulation(1, network);
    let op = simulation.submit(1, &n(1), ClientOp::Add { key: "c".into(), delta: 1 });
    simulation.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(simulation.operation(op).unwrap().outcome, Outcome::Ok(Response::Added { value: 1 }));
    assert_eq!(counter(&simulation, &n(1), "c"), 1);
    assert_eq!(counter(&simulation, &n(2), "c"), 0);
    assert_eq!(counter(&simulation, &n(3), "c"), 0);
    assert_eq!(simulation.stats().messages_delivered, 0);
    assert_eq!(simulation.stats().messages_dropped, 2);
}

#[test]
fn a_partition_blocks_both_ways_and_heal_restores() {
    let (mut simulation, _) = gossip_simulation(2, NetworkConfig::default());
    simulation.partition(&[vec![n(1)], vec![n(2), n(3)]]);
    simulation.submit(1, &n(1), ClientOp::Add { key: "from1".into(), delta: 1 });
    simulation.submit(2, &n(2), ClientOp::Add { key: "from2".into(), delta: 1 });
    simulation.run_for(Duration::from_millis(200)).unwrap();
    assert_eq!(counter(&simulation, &n(2), "from1"), 0);
    assert_eq!(counter(&simulation, &n(3), "from1"), 0);
    assert_eq!(counter(&simulation, &n(1), "from2"), 0);
    assert_eq!(counter(&simulation, &n(3), "from2"), 1, "inside a group messages flow");

    simulation.heal();
    simulation.submit(1, &n(1), ClientOp::Add { key: "from1".into(), delta: 1 });
    simulation.submit(2, &n(2), ClientOp::Add { key: "from2".into(), delta: 1 });
    simulation.run_for(Duration::from_millis(200)).unwrap();
    assert_eq!(counter(&simulation, &n(2), "from1"), 1);
    assert_eq!(counter(&simulation, &n(1), "from2"), 1);
}

#[test]
fn a_cut_link_is_one_way() {
    let (mut simulation, _) = gossip_simulation(3, NetworkConfig::default());
    simulation.cut_link(&n(1), &n(2));
    assert!(simulation.is_cut(&n(1), &n(2)));
    assert!(!simulation.is_cut(&n(2), &n(1)));
    simulation.submit(1, &n(1), ClientOp::Add { key: "from1".into(), delta: 1 });
    simulation.submit(2, &n(2), ClientOp::Add { key: "from2".into(), delta: 1 });
    simulation.run_for(Duration::from_millis(200)).unwrap();
    assert_eq!(counter(&simulation, &n(2), "from1"), 0, "n1 -> n2 is cut");
    assert_eq!(counter(&simulation, &n(3), "from1"), 1);
    assert_eq!(counter(&simulation, &n(1), "from2"), 1, "n2 -> n1 still flows");
}

#[test]
fn isolate_cuts_every_link_of_one_node() {
    let (mut simulation, _) = gossip_simulation(4, NetworkConfig::default());
    simulation.isolate(&n(3));
    simulation.submit(1, &n(1), ClientOp::Add { key: "from1".into(), delta: 1 });
    simulation.submit(3, &n(3), ClientOp::Add { key: "from3".into(), delta: 1 });
    simulation.run_for(Duration::from_millis(200)).unwrap();
    assert_eq!(counter(&simulation, &n(2), "from1"), 1);
    assert_eq!(counter(&simulation, &n(3), "from1"), 0);
    assert_eq!(counter(&simulation, &n(1), "from3"), 0);
    assert_eq!(counter(&simulation, &n(2), "from3"), 0);
}

#[test]
fn duplication_delivers_twice() {
    let network = NetworkConfig { duplicate: 1.0, ..NetworkConfig::default() };
    let (mut simulation, _) = gossip_simulation(5, network);
    simulation.submit(1, &n(1), ClientOp::Add { key: "c".into(), delta: 1 });
    simulation.run_for(Duration::from_millis(200)).unwrap();
    assert_eq!(counter(&simulation, &n(1), "c"), 1);
    assert_eq!(counter(&simulation, &n(2), "c"), 2, "the double applies every copy it receives");
    assert_eq!(counter(&simulation, &n(3), "c"), 2);
    assert_eq!(simulation.stats().messages_duplicated, simulation.stats().messages_sent);
}

#[test]
fn a_crash_loses_what_is_not_durable_and_keeps_what_is() {
    let mut config = SimConfig::new(6, 3, Config::default());
    config.persist_delay_min = Duration::from_millis(50);
    config.persist_delay_max = Duration::from_millis(50);
    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut simulation = Simulation::new(config, gossip(journal, GossipOptions::default()));
    simulation.isolate(&n(1));

    let durable_write = simulation.submit(1, &n(1), ClientOp::Put { key: "a".into(), value: 1 });
    simulation.run_for(Duration::from_millis(60)).unwrap();
    assert_eq!(simulation.operation(durable_write).unwrap().outcome, Outcome::Ok(Response::Written));
    assert_eq!(simulation.durable(&n(1)).entries.len(), 1);

    let lost_write = simulation.submit(1, &n(1), ClientOp::Put { key: "b".into(), value: 2 });
    simulation.run_for(Duration::from_millis(10)).unwrap();
    simulation.crash(&n(1));
    assert!(!simulation.is_up(&n(1)));
    assert!(simulation.mechanism(&n(1)).is_none());
    assert!(
        matches!(simulation.operation(lost_write).unwrap().outcome, Outcome::Unknown { .. }),
        "an operation on a crashed node has an unknown outcome"
    );
    simulation.run_for(Duration::from_millis(100)).unwrap();
    assert_eq!(simulation.durable(&n(1)).entries.len(), 1, "the in-flight persist died with the process");

    simulation.restart(&n(1));
    assert_eq!(simulation.incarnation(&n(1)), Some(1));
    let replica = simulation.mechanism(&n(1)).unwrap().replica();
    assert_eq!(replica.machine().get("a"), Some(concord_core::typed::encode_value(&1i64).unwrap()));
    assert_eq!(replica.machine().get("b"), None);
}

#[test]
fn an_operation_on_a_down_node_fails_at_once() {
    let (mut simulation, _) = gossip_simulation(7, NetworkConfig::default());
    simulation.crash(&n(2));
    let op = simulation.submit(1, &n(2), ClientOp::Get { key: "a".into() });
    assert!(matches!(simulation.operation(op).unwrap().outcome, Outcome::Fail { .. }));
}

#[test]
fn persisted_messages_wait_for_their_persist() {
    let network = NetworkConfig {
        loss: 0.0,
        duplicate: 0.3,
        delay_min: Duration::ZERO,
        delay_max: Duration::from_millis(3),
    };
    let (mut simulation, journal) = gossip_simulation(8, network);
    for round in 0..30u64 {
        simulation.submit(1, &n(1 + round as usize % 3), ClientOp::Add { key: "c".into(), delta: 1 });
        simulation.run_for(Duration::from_millis(1)).unwrap();
        if round == 15 {
            // A crash with acknowledgements still waiting for their persist: they must never go out.
            simulation.crash(&n(2));
        }
    }
    simulation.run_for(Duration::from_millis(500)).unwrap();
    let journal = journal.lock().unwrap();
    let mut acks = 0;
    for (position, line) in journal.iter().enumerate() {
        // "<to> got ack <sequence> from <from>" needs an earlier "<from> durable ack <sequence>".
        let Some((_, rest)) = line.split_once(" got ack ") else { continue };
        let (sequence, from) = rest.split_once(" from ").unwrap();
        let durable = format!("{from} durable ack {sequence} ");
        assert!(
            journal[..position].iter().any(|earlier| earlier.starts_with(&durable)),
            "{line} arrived before the acknowledging write was durable"
        );
        acks += 1;
    }
    assert!(acks > 20, "the test must see acknowledgements ({acks})");
}

#[test]
fn node_clocks_have_their_own_offset_and_rate() {
    let mut config = SimConfig::new(9, 3, Config::default());
    config.clock_rate_spread = 0.05;
    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    let mut simulation = Simulation::new(config, gossip(journal, GossipOptions::default()));
    let start: Vec<Instant> =
        simulation.node_ids().iter().map(|id| simulation.local_now(id).unwrap()).collect();
    simulation.run_for(Duration::from_secs(100)).unwrap();
    let mut elapsed = Vec::new();
    for (id, start) in simulation.node_ids().iter().zip(&start) {
        let local = simulation.local_now(id).unwrap().saturating_duration_since(*start).as_secs_f64();
        assert!((95.0..=105.0).contains(&local), "{id} measured {local} s for 100 s");
        elapsed.push(local);
    }
    assert!(elapsed.windows(2).any(|pair| pair[0] != pair[1]), "rates differ: {elapsed:?}");
    assert!(start.windows(2).any(|pair| pair[0] != pair[1]), "offsets differ: {start:?}");
}

fn usurper_run(seed: u64) -> Result<(), concord_sim::Violation> {
    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    let config = SimConfig::new(seed, 3, Config::default());
    let mut simulation = Simulation::new(config, gossip(journal, GossipOptions { usurp: true }));
    simulation.add_invariant(Box::new(ElectionSafety::default()));
    simulation.run_for(Duration::from_secs(30))
}

#[test]
fn an_invariant_violation_reports_its_seed_and_reproduces() {
    let violation = usurper_run(21).expect_err("two usurpers eventually claim one term");
    assert_eq!(violation.seed, 21);
    assert!(violation.message.contains("two leaders in term"), "{}", violation.message);
    let shown = violation.to_string();
    assert!(shown.starts_with("seed 21: invariant violated: two leaders in term"), "{shown}");
    assert!(shown.contains("rerun: cargo xtask sim --mechanism raft --seed 21"), "{shown}");
    assert!(!violation.trace.is_empty());
    let again = usurper_run(21).expect_err("the same seed fails the same way");
    assert_eq!(violation, again);
}

#[test]
fn a_livelocked_timer_is_reported_not_spun_forever() {
    struct Spinner(concord_core::prelude::Membership, Replica, NodeId);
    impl Mechanism for Spinner {
        fn node_id(&self) -> &NodeId {
            &self.2
        }
        fn handle_message(&mut self, _: Instant, _: NodeId, _: Message) -> Result<(), PeerError> {
            Ok(())
        }
        fn propose(&mut self, _: Instant, _: Proposal) -> Result<(), ProposalError> {
            Err(ProposalError::Stopped)
        }
        fn read(&mut self, _: Instant, _: ReadId) -> Result<(), ProposalError> {
            Err(ProposalError::Stopped)
        }
        fn change_membership(
            &mut self,
            _: Instant,
            _: ProposalId,
            _: MembershipChange,
        ) -> Result<(), ProposalError> {
            Err(ProposalError::Stopped)
        }
        fn vote(&mut self, _: Instant, _: &ProposalId, _: bool) -> Result<(), ProposalError> {
            Err(ProposalError::Stopped)
        }
        fn transfer_leadership(&mut self, _: Instant, _: &NodeId) -> Result<(), ProposalError> {
            Err(ProposalError::Stopped)
        }
        fn handle_peer_status(&mut self, _: Instant, _: &NodeId, _: bool) {}
        fn handle_timeout(&mut self, _: Instant) {}
        // Always due: a driver that trusts it spins forever at one instant.
        fn poll_timeout(&self) -> Option<Instant> {
            Some(Instant::ZERO)
        }
        fn has_ready(&self) -> bool {
            false
        }
        fn ready(&mut self) -> Ready {
            Ready::default()
        }
        fn advance(&mut self, _: Instant, _: u64) {}
        fn replica(&self) -> &Replica {
            &self.1
        }
        fn membership(&self) -> &Membership {
            &self.0
        }
        fn leader(&self) -> Option<NodeId> {
            None
        }
        fn connected_peers(&self) -> Vec<NodeId> {
            Vec::new()
        }
        fn debug_state(&self) -> DebugState {
            unimplemented!("not called without invariants")
        }
    }
    let mut config = SimConfig::new(1, 1, Config::default());
    config.steps_per_instant_max = 1000;
    let mut simulation = Simulation::new(
        config,
        concord_sim::factory(|setup: Setup| {
            Ok(Spinner(Membership::with_voters(setup.initial_members), setup.replica, setup.node_id))
        }),
    );
    let violation = simulation.run_for(Duration::from_secs(1)).unwrap_err();
    assert!(violation.message.contains("livelock"), "{violation}");
}

fn slow_disk_primary(seed: u64) -> Simulation {
    let mut mechanism_config = Config::default();
    mechanism_config.timeout = Duration::from_millis(50);
    let mut config = SimConfig::new(seed, 3, mechanism_config);
    config.persist_delay_min = Duration::from_millis(100);
    config.persist_delay_max = Duration::from_millis(100);
    Simulation::new(config, concord_sim::factory(crate::doubles::Primary::new))
}

#[test]
fn a_retry_with_the_same_session_takes_effect_once() {
    let mut simulation = slow_disk_primary(10);
    let op = simulation.submit(1, &n(1), ClientOp::Add { key: "c".into(), delta: 5 });
    simulation.run_for(Duration::from_millis(60)).unwrap();
    assert!(matches!(simulation.operation(op).unwrap().outcome, Outcome::Unknown { .. }), "timed out");
    // The retry goes out while the first attempt is still being written: both get applied, and
    // the session makes the second a no-op that answers with the first result.
    assert!(simulation.retry(op, &n(1)));
    assert_eq!(simulation.operation(op).unwrap().outcome, Outcome::Pending);
    simulation.run_for(Duration::from_millis(300)).unwrap();
    let recorded = simulation.operation(op).unwrap();
    assert_eq!(recorded.outcome, Outcome::Ok(Response::Added { value: 5 }));
    assert_eq!(recorded.completed_at_nanos, Some(100_000_000), "answered by the first attempt");
    assert_eq!(counter(&simulation, &n(1), "c"), 5, "applied once");
    assert!(!simulation.retry(op, &n(1)), "only an operation with an unknown outcome is retried");
    assert_eq!(concord_sim::linearizability::check(simulation.history()), Ok(()));
}

#[test]
fn a_late_answer_settles_an_unknown_outcome() {
    let mut simulation = slow_disk_primary(14);
    let op = simulation.submit(1, &n(1), ClientOp::Put { key: "a".into(), value: 7 });
    simulation.run_for(Duration::from_millis(60)).unwrap();
    assert!(matches!(simulation.operation(op).unwrap().outcome, Outcome::Unknown { .. }));
    simulation.run_for(Duration::from_millis(60)).unwrap();
    let recorded = simulation.operation(op).unwrap();
    assert_eq!(recorded.outcome, Outcome::Ok(Response::Written));
    assert_eq!(recorded.completed_at_nanos, Some(100_000_000));
    assert!(simulation.trace().any(|line| line.contains("late answer")));
}

#[test]
fn divergent_committed_entries_are_caught() {
    // Gossip nodes each append their own writes to their own log: index 1 differs between them.
    let journal: Journal = Arc::new(Mutex::new(Vec::new()));
    let config = SimConfig::new(11, 2, Config::default());
    let mut simulation = Simulation::new(config, gossip(journal, GossipOptions::default()));
    simulation.add_invariant(Box::new(concord_sim::invariants::CommittedPrefixAgreement::default()));
    simulation.submit(1, &n(1), ClientOp::Put { key: "a".into(), value: 1 });
    simulation.submit(2, &n(2), ClientOp::Put { key: "a".into(), value: 2 });
    let violation = simulation.run_for(Duration::from_millis(100)).unwrap_err();
    assert!(violation.message.contains("committed entry 1 differs"), "{violation}");
}

#[test]
fn results_and_events_are_handed_to_the_test() {
    let (mut simulation, _) = gossip_simulation(12, NetworkConfig::default());
    let op = simulation.submit(1, &n(1), ClientOp::Put { key: "a".into(), value: 1 });
    simulation.run_for(Duration::from_millis(100)).unwrap();
    let results = simulation.take_results();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, n(1));
    assert!(results[0].1.accepted);
    assert_eq!(simulation.take_completed(), vec![op]);
    assert!(simulation.take_results().is_empty(), "taken once");
    assert!(simulation.trace().any(|line| line.contains("n1 -> n2 raft.forward_proposal")));
}

/// One node's script: (term, role, commit index) per 10 ms tick.
type Script = Vec<(u64, Role, u64)>;

fn scripted(scripts: Vec<Script>) -> Simulation {
    let nodes = scripts.len();
    let mut simulation = Simulation::new(
        SimConfig::new(13, nodes, Config::default()),
        crate::doubles::Scripted::factory(scripts),
    );
    for invariant in concord_sim::raft_invariants() {
        simulation.add_invariant(invariant);
    }
    simulation
}

#[test]
fn the_built_in_invariants_accept_a_sane_script() {
    use Role::{Candidate, Follower, Leader};
    let mut simulation = scripted(vec![
        vec![(0, Follower, 0), (1, Candidate, 0), (1, Leader, 0), (1, Leader, 2), (2, Follower, 2)],
        vec![(0, Follower, 0), (1, Follower, 0), (1, Follower, 1), (2, Candidate, 2), (2, Leader, 2)],
    ]);
    simulation.run_for(Duration::from_secs(1)).unwrap();
}

#[test]
fn the_built_in_invariants_catch_what_they_promise() {
    use Role::{Follower, Leader};
    let cases: Vec<(&str, Vec<Script>)> = vec![
        ("term went down from 2 to 1", vec![vec![(1, Follower, 0), (2, Follower, 0), (1, Follower, 0)]]),
        (
            "commit index went down from 3 to 2",
            vec![vec![(1, Follower, 0), (1, Follower, 3), (1, Follower, 2)]],
        ),
        (
            "two leaders in term 3",
            vec![
                vec![(1, Follower, 0), (3, Leader, 0)],
                vec![(1, Follower, 0), (1, Follower, 0), (3, Leader, 0)],
            ],
        ),
    ];
    for (expected, scripts) in cases {
        let violation = scripted(scripts).run_for(Duration::from_secs(1)).unwrap_err();
        assert!(violation.message.contains(expected), "expected {expected:?}, got {violation}");
    }
}

#[test]
fn commit_may_restart_lower_after_a_crash() {
    use Role::Follower;
    let mut simulation = scripted(vec![vec![(1, Follower, 0), (1, Follower, 5), (1, Follower, 5)]]);
    simulation.run_for(Duration::from_millis(50)).unwrap();
    simulation.crash(&n(1));
    simulation.restart(&n(1));
    // The new incarnation starts its script over at commit 0: volatile state, not a violation.
    simulation.run_for(Duration::from_millis(50)).unwrap();
}

#[test]
fn a_paused_node_is_frozen_until_it_resumes() {
    let (mut simulation, _) = gossip_simulation(15, NetworkConfig::default());
    simulation.pause(&n(2));
    assert!(simulation.is_paused(&n(2)) && simulation.is_up(&n(2)));
    simulation.submit(1, &n(1), ClientOp::Add { key: "c".into(), delta: 1 });
    let waiting = simulation.submit(2, &n(2), ClientOp::Put { key: "p".into(), value: 9 });
    simulation.run_for(Duration::from_millis(500)).unwrap();
    assert_eq!(counter(&simulation, &n(3), "c"), 1);
    assert_eq!(counter(&simulation, &n(2), "c"), 0, "nothing reaches a paused node");
    assert_eq!(simulation.operation(waiting).unwrap().outcome, Outcome::Pending, "its client waits");
    simulation.resume(&n(2));
    simulation.run_for(Duration::from_millis(100)).unwrap();
    assert_eq!(counter(&simulation, &n(2), "c"), 1, "held messages arrive on resume");
    assert_eq!(simulation.operation(waiting).unwrap().outcome, Outcome::Ok(Response::Written));
}

#[test]
fn a_paused_nodes_timers_wait_and_its_clients_time_out() {
    use Role::Follower;
    let mut simulation =
        scripted(vec![vec![(1, Follower, 0), (1, Follower, 1), (1, Follower, 2), (1, Follower, 3)]]);
    simulation.run_for(Duration::from_millis(5)).unwrap();
    simulation.pause(&n(1));
    let op = simulation.submit(1, &n(1), ClientOp::Get { key: "a".into() });
    simulation.run_for(Duration::from_secs(6)).unwrap();
    let commit = simulation.mechanism(&n(1)).unwrap().debug_state().commit_index;
    assert_eq!(commit, LogIndex(0), "no timer fired while paused");
    assert!(
        matches!(simulation.operation(op).unwrap().outcome, Outcome::Unknown { .. }),
        "the client gave up"
    );
    simulation.resume(&n(1));
    simulation.run_for(Duration::from_millis(100)).unwrap();
    assert_eq!(simulation.mechanism(&n(1)).unwrap().debug_state().commit_index, LogIndex(3));
}
