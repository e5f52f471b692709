//! Protocol scenarios, one behaviour each.

use std::time::Duration;

use concord_core::command::LockCommand;
use concord_core::mechanism::SetupError;
use concord_core::prelude::*;
use concord_majority::{Majority, MEMBERSHIP_KEY};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::harness::{id, majority_config, Cluster};

fn kinds(cluster: &Cluster, from: usize) -> Vec<&'static str> {
    cluster.sent[from..]
        .iter()
        .map(|(_, _, kind)| *kind)
        .filter(|kind| *kind != "majority.heartbeat")
        .collect()
}

#[test]
fn fast_path_accepts_in_one_round_trip() {
    let mut cluster = Cluster::new(3, majority_config());
    let sent_before = cluster.sent.len();
    let proposal = cluster.put("n1", "player_score", "100");
    cluster.settle();

    let result = cluster.result("n1", &proposal).expect("a result").clone();
    assert!(result.accepted, "{result:?}");
    assert_eq!(result.votes, Votes { in_favor: 2, against: 0, total: 3 }.max_with(&result.votes));
    assert_eq!(result.quorum_required, 2);
    assert!(!result.advisory);
    assert_eq!(result.value.as_deref(), Some(&b"100"[..]));
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.value(node, "player_score").as_deref(), Some("100"), "{node}");
    }
    // Propose out, votes back, decision out: no recovery round.
    let kinds = kinds(&cluster, sent_before);
    assert!(
        kinds.iter().all(|kind| matches!(*kind, "majority.propose" | "majority.vote" | "majority.decided")),
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|kind| **kind == "majority.propose").count(), 2);

    let names: Vec<&str> = cluster.events("n1").iter().map(Event::name).collect();
    for expected in ["vote:requested", "vote:granted", "consensus:accepted", "state:changed"] {
        assert!(names.contains(&expected), "n1 events {names:?} lack {expected}");
    }
    assert!(cluster
        .events("n2")
        .iter()
        .any(|event| matches!(event, Event::VoteGranted { to, .. } if *to == id("n1"))));
}

trait MaxWith {
    fn max_with(self, other: &Votes) -> Votes;
}

impl MaxWith for Votes {
    // Votes past the quorum may or may not be counted before the decision: accept 2 or 3 for.
    fn max_with(self, other: &Votes) -> Votes {
        Votes { in_favor: other.in_favor.clamp(self.in_favor, self.total), ..self }
    }
}

#[test]
fn rejected_as_soon_as_the_quorum_cannot_be_reached_and_the_key_moves_on() {
    let mut cluster = Cluster::new(3, majority_config());
    for node in ["n2", "n3"] {
        cluster.node_mut(node).set_validator(Box::new(|request| match &request.proposal.command {
            Command::Put { value, .. } if value.as_ref() == b"cheat" => Err("against the game rules".into()),
            _ => Ok(()),
        }));
    }
    let proposal = cluster.put("n1", "score", "cheat");
    cluster.settle();
    let result = cluster.result("n1", &proposal).expect("decided without waiting for the timeout").clone();
    assert!(!result.accepted);
    assert_eq!(result.votes.against, 2);
    assert_eq!(result.votes.in_favor, 1);
    match &result.error {
        Some(ProposalError::Rejected { reason }) => {
            assert!(reason.contains("against the game rules"), "{reason}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.value(node, "score"), None);
        // The aborted slot moved the key to its next attempt at the same version.
        let slot = cluster.node(node).current_slot("score");
        assert_eq!((slot.version, slot.attempt), (0, 1), "{node}");
    }
    // The validator agrees with a fair value, and the key is not blocked.
    let fair = cluster.put("n1", "score", "10");
    cluster.settle();
    assert!(cluster.result("n1", &fair).is_some_and(|result| result.accepted));
    cluster.assert_converged();
}

#[test]
fn no_decision_within_the_timeout_is_a_timeout() {
    let mut cluster = Cluster::new(3, majority_config());
    cluster.isolate("n1");
    let proposal = cluster.put("n1", "k", "v");
    cluster.run_for(Duration::from_millis(999));
    assert!(cluster.result("n1", &proposal).is_none());
    cluster.run_for(Duration::from_millis(2));
    let result = cluster.result("n1", &proposal).expect("timed out").clone();
    assert_eq!(result.error, Some(ProposalError::Timeout));
    assert!(result.error.as_ref().is_some_and(ProposalError::outcome_unknown));
    assert_eq!(result.votes.in_favor, 1);
    // Connectivity is reported once the silence lasts an election timeout.
    assert!(cluster.events("n1").iter().any(|event| matches!(event, Event::NodeUnreachable { .. })));
    cluster.heal();
    cluster.run_for(Duration::from_secs(5));
    assert!(cluster.events("n1").iter().any(|event| matches!(event, Event::NodeReconnected { .. })));
    // The open slot was recovered: n1's value (it had one vote of three, n2 and n3 none: nothing may
    // have been chosen) is aborted or completed, and everyone agrees.
    cluster.assert_converged();
}

#[test]
fn conflicting_concurrent_proposals_at_most_one_wins() {
    for seed in 0..200u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cluster = Cluster::new(3, majority_config());
        let first = cluster.put("n1", "lock", "n1");
        let second = cluster.put("n2", "lock", "n2");
        let third = cluster.put("n3", "lock", "n3");
        // Deliver in a random order.
        let mut steps = 0;
        while !cluster.queue.is_empty() && steps < 10_000 {
            let mut pending: Vec<_> = cluster.queue.drain(..).collect();
            pending.shuffle(&mut rng);
            cluster.queue.extend(pending);
            cluster.deliver_one();
            steps += 1;
        }
        cluster.run_for(Duration::from_secs(10));
        let accepted: Vec<&ProposalId> = [&first, &second, &third]
            .into_iter()
            .filter(|proposal| {
                let origin = proposal.origin.as_str().to_owned();
                cluster.result(&origin, proposal).is_some_and(|result| result.accepted)
            })
            .collect();
        assert!(accepted.len() <= 1, "seed {seed}: {accepted:?} all accepted");
        for proposal in [&first, &second, &third] {
            let origin = proposal.origin.as_str().to_owned();
            let result = cluster.result(&origin, proposal).expect("every proposal ends");
            if result.accepted {
                assert_eq!(cluster.value("n1", "lock").as_deref(), Some(origin.as_str()), "seed {seed}");
            }
        }
        cluster.assert_converged();
    }
}

#[test]
fn a_crashed_proposers_slot_is_recovered_with_the_value_that_may_have_won() {
    let mut cluster = Cluster::new(3, majority_config());
    let proposal = cluster.put("n1", "k", "first");
    // Deliver the Propose messages (n2 and n3 vote), then n1 crashes before counting the votes.
    for _ in 0..2 {
        cluster.deliver_one();
    }
    assert!(cluster
        .queue
        .iter()
        .any(|(_, to, message)| to.as_str() == "n1" && message.kind() == "majority.vote"));
    cluster.crash("n1");
    cluster.run_for(Duration::from_secs(5));
    // n2 and n3 found the slot stuck and recovered it: two of three voted "first", so it may have
    // been accepted and recovery must complete it.
    assert_eq!(cluster.value("n2", "k").as_deref(), Some("first"));
    assert_eq!(cluster.value("n3", "k").as_deref(), Some("first"));
    cluster.restart("n1");
    cluster.run_for(Duration::from_secs(2));
    assert_eq!(cluster.value("n1", "k").as_deref(), Some("first"));
    assert!(cluster.result("n1", &proposal).is_none(), "the proposal died with its process");
    cluster.assert_converged();
    // And the key is not blocked.
    let next = cluster.put("n2", "k", "second");
    cluster.settle();
    assert!(cluster.result("n2", &next).is_some_and(|result| result.accepted));
}

#[test]
fn votes_survive_a_restart() {
    let mut cluster = Cluster::new(3, majority_config());
    cluster.isolate("n3");
    let _ = cluster.put("n1", "k", "a");
    // Deliver n1's Propose to n2 only (n2 votes "a" durably), then crash and restart n2.
    cluster.deliver_one();
    cluster.deliver_one();
    cluster.queue.clear();
    cluster.crash("n2");
    cluster.restart("n2");
    cluster.heal();
    // n3 proposes another value at the same slot: n2 must remember its vote and refuse.
    let other = cluster.put("n3", "k", "b");
    cluster.settle();
    let refused = cluster.result("n3", &other).map(|result| result.accepted);
    assert_ne!(refused, Some(true), "n2 forgot its vote and let a second value win");
    cluster.run_for(Duration::from_secs(5));
    cluster.assert_converged();
}

#[test]
fn manual_voting_and_a_vote_after_the_timeout() {
    let mut config = majority_config();
    config.voting = VotingMode::Manual;
    let mut cluster = Cluster::new(3, config);
    let proposal = cluster.put("n1", "door", "open");
    cluster.settle();
    // The proposer votes for its own proposal; the others hand it to the application.
    let received = cluster
        .events("n2")
        .iter()
        .find_map(|event| match event {
            Event::ProposalReceived { proposal_id, key, .. } => Some((proposal_id.clone(), key.clone())),
            _ => None,
        })
        .expect("n2 is asked");
    assert_eq!(received, (proposal.clone(), "door".to_owned()));
    assert_eq!(cluster.node("n3").awaiting_vote(), vec![proposal.clone()]);
    assert!(cluster.result("n1", &proposal).is_none(), "no decision before a manual vote");

    let now = cluster.now;
    cluster.node_mut("n2").vote(now, &proposal, true).expect("vote accepted");
    cluster.drain(&id("n2"));
    cluster.settle();
    assert!(cluster.result("n1", &proposal).is_some_and(|result| result.accepted));

    // A second proposal: n2 votes against, n3 waits too long.
    let second = cluster.put("n1", "door", "closed");
    cluster.settle();
    let now = cluster.now;
    cluster.node_mut("n2").vote(now, &second, false).expect("vote against accepted");
    cluster.drain(&id("n2"));
    cluster.settle();
    cluster.now = cluster.now + Duration::from_millis(1001);
    let late = cluster.now;
    let error = cluster.node_mut("n3").vote(late, &second, true).expect_err("too late");
    assert_eq!(error, ProposalError::Timeout);
    assert!(!cluster.node("n3").has_ready(), "a late vote changes nothing");
    let unknown = ProposalId { origin: id("n1"), sequence: 999 };
    assert!(matches!(cluster.node_mut("n3").vote(late, &unknown, true), Err(ProposalError::Invalid(_))));
    cluster.run_for(Duration::from_secs(5));
    let result = cluster.result("n1", &second).expect("a result");
    assert!(!result.accepted);
    assert_eq!(cluster.value("n3", "door").as_deref(), Some("open"));
    cluster.assert_converged();
}

#[test]
fn validator_sees_the_proposal_and_the_replica() {
    let mut cluster = Cluster::new(3, majority_config());
    // Game rule: a score may only grow.
    for node in ["n1", "n2", "n3"] {
        cluster.node_mut(node).set_validator(Box::new(|request| {
            let Command::Add { delta, .. } = &request.proposal.command else { return Ok(()) };
            if *delta < 0 {
                return Err(format!("score may not shrink (at version {})", request.slot.version));
            }
            Ok(())
        }));
    }
    let up = cluster.propose("n1", Command::Add { key: "score".into(), delta: 5 }).unwrap();
    cluster.settle();
    assert_eq!(
        cluster.result("n1", &up).and_then(|result| result.output.as_ref()).and_then(|o| o.counter),
        Some(5)
    );
    let down = cluster.propose("n2", Command::Add { key: "score".into(), delta: -3 }).unwrap();
    cluster.settle();
    let result = cluster.result("n2", &down).expect("rejected");
    assert!(
        matches!(&result.error, Some(ProposalError::Rejected { reason }) if reason.contains("may not shrink"))
    );
    assert_eq!(result.votes.against, 3);
}

#[test]
fn a_node_that_missed_decisions_catches_up() {
    let mut config = majority_config();
    config.snapshot_interval = 4; // History of 4: the far-behind node gets a snapshot.
    let mut cluster = Cluster::new(3, config);
    cluster.isolate("n3");
    for round in 0..3 {
        let _ = cluster.put("n1", "near", &round.to_string());
        cluster.settle();
    }
    cluster.heal();
    cluster.run_for(Duration::from_millis(500));
    assert_eq!(cluster.value("n3", "near").as_deref(), Some("2"), "caught up from the decision history");
    cluster.assert_converged();

    cluster.isolate("n3");
    for round in 0..12 {
        let _ = cluster.put("n2", &format!("far{}", round % 5), &round.to_string());
        cluster.settle();
    }
    cluster.heal();
    cluster.run_for(Duration::from_millis(500));
    assert_eq!(cluster.value("n3", "far1").as_deref(), Some("11"), "caught up from a snapshot");
    cluster.assert_converged();
    // The caught-up node takes part in decisions again, restarts included.
    cluster.crash("n3");
    cluster.restart("n3");
    let next = cluster.put("n3", "far1", "12");
    cluster.settle();
    assert!(cluster.result("n3", &next).is_some_and(|result| result.accepted));
    cluster.assert_converged();
}

#[test]
fn a_restarted_node_rebuilds_its_state_from_snapshot_and_log() {
    let mut config = majority_config();
    config.snapshot_interval = 3;
    let mut cluster = Cluster::new(3, config);
    for round in 0..7 {
        let _ = cluster.put("n1", &format!("k{}", round % 2), &round.to_string());
        cluster.settle();
    }
    let before = cluster.node("n2").replica().machine().snapshot();
    let applied = cluster.node("n2").applied();
    assert!(cluster.nodes[&id("n2")].storage.state().snapshot.is_some());
    cluster.crash("n2");
    cluster.restart("n2");
    assert_eq!(cluster.node("n2").replica().machine().snapshot(), before);
    assert_eq!(cluster.node("n2").applied(), applied);
    assert_eq!(cluster.node("n2").current_slot("k0").version, 4);
}

#[test]
fn membership_changes_are_decided_by_a_vote() {
    let mut cluster = Cluster::new(3, majority_config());
    let _ = cluster.put("n1", "k", "v");
    cluster.settle();
    let change_id = cluster.next_id("n1");
    let now = cluster.now;
    cluster
        .node_mut("n1")
        .change_membership(now, change_id.clone(), MembershipChange::AddVoter(NodeInfo::new("n4", "addr-4")))
        .unwrap();
    cluster.drain(&id("n1"));
    cluster.settle();
    let result = cluster.result("n1", &change_id).expect("decided").clone();
    assert!(result.accepted, "{result:?}");
    assert_eq!(result.key, MEMBERSHIP_KEY);
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.node(node).membership().voter_count(), 4, "{node}");
        assert_eq!(cluster.node(node).membership_epoch(), 1);
    }
    // Four voters: 0.51 of 4 is 3. With n4 not running, a proposal needs all three others.
    cluster.isolate("n3");
    let proposal = cluster.put("n1", "k", "w");
    cluster.settle();
    assert!(cluster.result("n1", &proposal).is_none(), "two of four votes are not a quorum");
    cluster.heal();
    cluster.run_for(Duration::from_secs(5));
    let result = cluster.result("n1", &proposal).expect("a result");
    assert_eq!(result.quorum_required, 3);

    // Remove n4 again; a member with an open vote or a different state refuses a change.
    let remove = cluster.next_id("n2");
    let now = cluster.now;
    cluster
        .node_mut("n2")
        .change_membership(now, remove.clone(), MembershipChange::Remove(id("n4")))
        .unwrap();
    cluster.drain(&id("n2"));
    cluster.settle();
    assert!(cluster.result("n2", &remove).is_some_and(|result| result.accepted));
    assert_eq!(cluster.node("n3").membership().voter_count(), 3);
    let invalid = cluster.next_id("n1");
    let now = cluster.now;
    let error = cluster.node_mut("n1").change_membership(now, invalid, MembershipChange::Remove(id("n9")));
    assert!(matches!(error, Err(ProposalError::Invalid(_))));
    cluster.assert_converged();
}

#[test]
fn unsafe_quorums_are_refused_unless_advisory() {
    let mut config = majority_config();
    config.quorum = Quorum::Count(2);
    let mut cluster = Cluster::new(4, config.clone());
    let error = cluster.propose("n1", Command::Put { key: "k".into(), value: "v".into() }).unwrap_err();
    assert!(
        matches!(&error, ProposalError::Invalid(reason) if reason.contains("not a strict majority")),
        "{error:?}"
    );

    config.advisory = true;
    let mut cluster = Cluster::new(4, config);
    let proposal = cluster.put("n1", "k", "v");
    cluster.settle();
    let result = cluster.result("n1", &proposal).expect("decided");
    assert!(result.accepted && result.advisory, "{result:?}");
    assert_eq!(result.quorum_required, 2);
}

#[test]
fn one_and_two_node_clusters() {
    let mut single = Cluster::new(1, majority_config());
    let proposal = single.put("n1", "k", "v");
    single.settle();
    assert!(single.result("n1", &proposal).is_some_and(|result| result.accepted && result.votes.total == 1));

    let mut pair = Cluster::new(2, majority_config());
    pair.isolate("n2");
    let proposal = pair.put("n1", "k", "v");
    pair.run_for(Duration::from_millis(1500));
    assert_eq!(
        pair.result("n1", &proposal).and_then(|result| result.error.clone()),
        Some(ProposalError::Timeout)
    );
    pair.heal();
    pair.run_for(Duration::from_secs(5));
    let proposal = pair.put("n2", "k", "w");
    pair.settle();
    assert!(pair
        .result("n2", &proposal)
        .is_some_and(|result| result.accepted && result.quorum_required == 2));
    pair.assert_converged();
}

#[test]
fn refusals_and_unsupported_operations() {
    let mut cluster = Cluster::new(3, majority_config());
    let batch = Command::Batch(vec![
        Command::Put { key: "a".into(), value: "1".into() },
        Command::Put { key: "b".into(), value: "2".into() },
    ]);
    assert!(matches!(cluster.propose("n1", batch), Err(ProposalError::Invalid(_))));
    let same_key = Command::Batch(vec![
        Command::Put { key: "a".into(), value: "1".into() },
        Command::Add { key: "c".into(), delta: 1 },
    ]);
    assert!(matches!(cluster.propose("n1", same_key), Err(ProposalError::Invalid(_))));
    let reserved = Command::Put { key: MEMBERSHIP_KEY.into(), value: "x".into() };
    assert!(matches!(cluster.propose("n1", reserved), Err(ProposalError::Invalid(_))));
    let now = cluster.now;
    let node = cluster.node_mut("n1");
    assert!(matches!(node.read(now, 1), Err(ProposalError::Unsupported { .. })));
    assert!(matches!(node.transfer_leadership(now, &id("n2")), Err(ProposalError::Unsupported { .. })));
    assert_eq!(node.leader(), None);
    assert_eq!(node.debug_state().role, Role::Peer);
    let raft = Message::Raft(RaftMessage::TimeoutNow { term: Term(1) });
    assert!(matches!(node.handle_message(now, id("n2"), raft), Err(PeerError::WrongMechanism { .. })));
    let stranger = Message::Majority(MajorityMessage::CatchUpRequest { after: 0 });
    assert!(matches!(node.handle_message(now, id("x9"), stranger), Err(PeerError::UnknownNode(_))));
}

#[test]
fn pending_proposals_are_bounded() {
    let mut config = majority_config();
    config.max_pending_proposals = 2;
    let mut cluster = Cluster::new(3, config);
    cluster.isolate("n1");
    let _ = cluster.put("n1", "a", "1");
    let _ = cluster.put("n1", "a", "2");
    let error = cluster.propose("n1", Command::Put { key: "b".into(), value: "3".into() }).unwrap_err();
    assert!(matches!(error, ProposalError::Busy { limit: 2, .. }), "{error:?}");
}

#[test]
fn proposals_on_one_key_queue_behind_each_other() {
    let mut cluster = Cluster::new(3, majority_config());
    let ids: Vec<ProposalId> = (0..5)
        .map(|n| cluster.propose("n1", Command::Add { key: "counter".into(), delta: n + 1 }).unwrap())
        .collect();
    cluster.settle();
    for proposal in &ids {
        assert!(cluster.result("n1", proposal).is_some_and(|result| result.accepted), "{proposal}");
    }
    let counter = cluster.node("n3").replica().machine().get("counter");
    assert_eq!(KvStateMachine::decode_counter(counter.as_ref()), Some(15));
}

#[test]
fn setup_refuses_a_non_member_and_a_raft_config() {
    let cluster = Cluster::new(3, majority_config());
    let mut setup = cluster.setup(&id("n1"));
    setup.node_id = id("x9");
    assert!(matches!(Majority::new(setup), Err(SetupError::NotAMember(_))));
    let mut setup = cluster.setup(&id("n1"));
    setup.config = Config::default();
    assert!(matches!(Majority::new(setup), Err(SetupError::Config(_))));
}

#[test]
fn decided_slots_and_finished_proposals_leave_no_timer_behind() {
    let mut cluster = Cluster::new(3, majority_config());
    let ids: Vec<ProposalId> = (0..50).map(|n| cluster.put("n1", &format!("key-{n}"), "v")).collect();
    cluster.settle();
    for proposal in &ids {
        assert!(cluster.result("n1", proposal).is_some_and(|result| result.accepted), "{proposal}");
    }
    // Only the heartbeat is left on each node: no deadline of a finished proposal, no watch of a
    // decided slot (they used to stay until they fired, one per write for a whole `timeout`).
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.node(node).timers_pending(), 1, "{node}");
    }
    // An open slot is still watched, and a pending proposal keeps its deadline.
    cluster.isolate("n1");
    let _ = cluster.put("n1", "open", "v");
    assert_eq!(cluster.node("n1").timers_pending(), 3, "heartbeat, deadline, watch");
}

#[test]
fn entry_events_can_be_turned_off_without_changing_results() {
    let mut cluster = Cluster::new(3, majority_config());
    for node in ["n1", "n2", "n3"] {
        cluster.node_mut(node).set_entry_events_wanted(false);
    }
    let proposal = cluster.put("n1", "player_score", "100");
    cluster.settle();
    let result = cluster.result("n1", &proposal).expect("a result").clone();
    assert!(result.accepted && result.value.as_deref() == Some(&b"100"[..]), "{result:?}");
    assert_eq!(cluster.value("n2", "player_score").as_deref(), Some("100"));
    let names: Vec<&str> = cluster.events("n1").iter().map(Event::name).collect();
    assert!(!names.contains(&"consensus:accepted") && !names.contains(&"state:changed"), "{names:?}");
    assert!(names.contains(&"vote:granted"), "other events are still produced: {names:?}");

    cluster.node_mut("n1").set_entry_events_wanted(true);
    let _ = cluster.put("n1", "player_score", "200");
    cluster.settle();
    let names: Vec<&str> = cluster.events("n1").iter().map(Event::name).collect();
    assert!(names.contains(&"consensus:accepted") && names.contains(&"state:changed"), "{names:?}");
}

#[test]
fn the_next_ready_starts_with_the_capacity_the_last_one_needed() {
    let mut cluster = Cluster::new(3, majority_config());
    let now = cluster.now;
    for n in 0..20 {
        let id = cluster.next_id("n1");
        let command = Command::Put { key: format!("key-{n}"), value: "v".into() };
        cluster.node_mut("n1").propose(now, Proposal { id, session: None, command }).unwrap();
    }
    let first = cluster.node_mut("n1").ready();
    assert_eq!(first.persist.records.len(), 20, "its own vote in each slot");
    let id = cluster.next_id("n1");
    let command = Command::Put { key: "one".into(), value: "v".into() };
    cluster.node_mut("n1").propose(now, Proposal { id, session: None, command }).unwrap();
    let second = cluster.node_mut("n1").ready();
    assert_eq!(second.persist.records.len(), 1);
    // Under load each batch is about as large as the last: its buffers are not regrown from empty.
    assert!(second.persist.records.capacity() >= 20, "{}", second.persist.records.capacity());
    assert!(second.messages.capacity() >= first.messages.len());
}

#[test]
fn a_proposer_whose_clock_runs_a_day_ahead_cannot_hold_a_lock_past_its_ttl() {
    let mut cluster = Cluster::new(3, majority_config());
    cluster.put("n1", "a", "1");
    cluster.run_for(Duration::from_millis(100));
    // n2's process restarts with its wall clock a day ahead (the runtime anchors a node's clock at
    // the wall clock when the process starts).
    cluster.crash("n2");
    cluster.clock_ahead.insert(id("n2"), Duration::from_secs(86_400));
    cluster.restart("n2");
    cluster.run_for(Duration::from_millis(500));

    let acquire = |holder: &str| Command::Lock(LockCommand::acquire("door", holder, 1_000));
    let fast = cluster.propose("n2", acquire("fast")).unwrap();
    cluster.settle();
    assert!(cluster.result("n2", &fast).is_some_and(|result| result.accepted), "the fast node got the lock");
    let newest = cluster.node("n1").replica().last_timestamp_ms();
    let cluster_ms = cluster.now.as_millis();
    assert!(
        newest <= cluster_ms + concord_core::time::STAMP_LEAD_MAX_MS + 100,
        "the fast node stamped {newest} at cluster time {cluster_ms}"
    );

    // Once the lease's TTL has passed in real time, an honest node gets the lock.
    cluster.run_for(Duration::from_millis(2_500));
    let honest = cluster.propose("n1", acquire("honest")).unwrap();
    cluster.settle();
    let result = cluster.result("n1", &honest).expect("a result").clone();
    assert!(result.accepted, "{result:?}");
    cluster.assert_converged();
}
