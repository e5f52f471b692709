//! §5.1 Raft basics: terms act as a logical clock.

use concord_core::prelude::*;

use crate::harness::*;

/// The roles a node can be put in before it sees a newer term.
#[derive(Clone, Copy, Debug)]
enum Start {
    Follower,
    Candidate,
    Leader,
}

/// A 3-node cluster (paper config) with `n1` in the given role; returns it and `n1`'s term.
fn n1_as(start: Start) -> (Cluster, Term) {
    let mut cluster = Cluster::new(3, paper_config());
    match start {
        Start::Follower => {
            cluster.elect("n2");
            cluster.settle();
            assert_eq!(cluster.role("n1"), Role::Follower);
        }
        Start::Candidate => {
            cluster.fire_timeout("n1");
            cluster.drop_network();
            assert_eq!(cluster.role("n1"), Role::Candidate);
        }
        Start::Leader => {
            cluster.elect("n1");
            cluster.settle();
        }
    }
    let term = cluster.term("n1");
    assert!(term >= Term(1));
    (cluster, term)
}

// §5.1: "If a server's current term is smaller than the other's, then it updates its current term
// to the larger value. If a candidate or leader discovers that its term is out of date, it
// immediately reverts to follower state." Any message carries the sender's term: requests and
// responses alike.
#[test]
fn section_5_1_follower_candidate_and_leader_adopt_a_newer_term_from_any_message() {
    type MakeMessage = fn(Term) -> RaftMessage;
    let messages: [(&str, MakeMessage); 4] = [
        ("append", |term| RaftMessage::Append {
            term,
            prev_log_index: LogIndex::ZERO,
            prev_log_term: Term(0),
            entries: Vec::new(),
            leader_commit: LogIndex::ZERO,
            read_round: 0,
        }),
        ("append response", |term| RaftMessage::AppendResponse {
            term,
            success: false,
            match_index: LogIndex::ZERO,
            conflict: None,
            last_log_index: LogIndex::ZERO,
            read_round: 0,
        }),
        ("vote request", |term| RaftMessage::VoteRequest {
            term,
            last_log_index: LogIndex(1000),
            last_log_term: Term(1000),
            pre_vote: false,
            transfer: false,
        }),
        ("vote response", |term| RaftMessage::VoteResponse { term, granted: false, pre_vote: false }),
    ];
    for start in [Start::Follower, Start::Candidate, Start::Leader] {
        for (name, make) in messages {
            let (mut cluster, term) = n1_as(start);
            let newer = Term(term.0 + 3);
            cluster.exchange("n3", "n1", make(newer));
            let case = format!("n1 as {start:?} receiving a {name} of term {newer}");
            assert_eq!(cluster.term("n1"), newer, "{case}: adopts the newer term");
            assert_eq!(cluster.role("n1"), Role::Follower, "{case}: reverts to follower");
            assert_eq!(cluster.hard_state("n1").term, newer, "{case}: the new term is persisted");
            if name == "append" {
                assert_eq!(cluster.raft("n1").leader(), Some(id("n3")), "{case}: learns the new leader");
            }
        }
    }
}

/// A 3-node cluster (paper config) whose members all recovered term 2; n2 wins term 3.
fn cluster_in_term_3_led_by_n2() -> Cluster {
    let mut cluster = Cluster::with_recovered(
        paper_config(),
        vec![recovered_with(Vec::new(), 2), recovered_with(Vec::new(), 2), recovered_with(Vec::new(), 2)],
    );
    assert_eq!(cluster.elect("n2"), Term(3));
    cluster.settle();
    cluster
}

// §5.1: "If a server receives a request with a stale term number, it rejects the request."
// Figure 2, AppendEntries receiver rule 1: "Reply false if term < currentTerm", and the reply
// carries currentTerm "for leader to update itself".
#[test]
fn section_5_1_an_append_with_a_stale_term_is_rejected_with_the_current_term() {
    let mut cluster = cluster_in_term_3_led_by_n2();
    let log_before = cluster.log("n1");
    // A deposed leader of term 1 tries to append.
    let answers = cluster.exchange(
        "n3",
        "n1",
        RaftMessage::Append {
            term: Term(1),
            prev_log_index: LogIndex::ZERO,
            prev_log_term: Term(0),
            entries: vec![command_entry(1, 1)],
            leader_commit: LogIndex(1),
            read_round: 0,
        },
    );
    assert_eq!(cluster.log("n1"), log_before, "a stale append changes nothing");
    assert_eq!(cluster.term("n1"), Term(3));
    assert_eq!(cluster.raft("n1").leader(), Some(id("n2")), "the stale sender is not taken for leader");
    assert!(
        matches!(
            answers.as_slice(),
            [Packet { message: RaftMessage::AppendResponse { term: Term(3), success: false, .. }, .. }]
        ),
        "a stale append is answered false with the current term; got {answers:?}"
    );
}

// §5.1 and Figure 2, RequestVote receiver rule 1: "Reply false if term < currentTerm", the reply
// carrying currentTerm "for candidate to update itself".
#[test]
fn section_5_1_a_vote_request_with_a_stale_term_is_rejected_with_the_current_term() {
    let mut cluster = cluster_in_term_3_led_by_n2();
    let answers = cluster.exchange(
        "n3",
        "n1",
        RaftMessage::VoteRequest {
            term: Term(2),
            last_log_index: LogIndex(1000),
            last_log_term: Term(1000),
            pre_vote: false,
            transfer: false,
        },
    );
    assert_eq!(cluster.term("n1"), Term(3));
    assert_ne!(cluster.hard_state("n1").voted_for, Some(id("n3")), "no vote for a stale candidate");
    assert!(
        matches!(
            answers.as_slice(),
            [Packet { message: RaftMessage::VoteResponse { term: Term(3), granted: false, .. }, .. }]
        ),
        "a stale vote request is answered false with the current term; got {answers:?}"
    );
}

// §5.1: a leader whose term is out of date learns it from a reply and "immediately reverts to
// follower state": a leader cut off while the others elected a new one steps down on rejoining.
#[test]
fn section_5_1_stale_leader_steps_down_when_a_reply_carries_a_newer_term() {
    let mut cluster = Cluster::new(3, paper_config());
    let old_term = cluster.elect("n1");
    cluster.settle();
    cluster.isolate("n1");
    let new_term = cluster.elect("n2");
    assert!(new_term > old_term);
    assert_eq!(cluster.role("n1"), Role::Leader, "cut off, n1 still believes it leads (check-quorum is off)");

    cluster.heal();
    cluster.drop_network();
    // n1's next heartbeat reaches the others, whose answers carry the newer term.
    let heartbeat_interval = cluster.node("n1").config.heartbeat_interval;
    cluster.set_time(cluster.now + heartbeat_interval);
    cluster.tick("n1");
    let heartbeats: Vec<Packet> = cluster.take_network();
    assert!(heartbeats.iter().any(is_append), "the old leader still sends heartbeats");
    for packet in heartbeats {
        cluster.deliver(packet);
    }
    cluster.deliver_all();
    assert_eq!(cluster.role("n1"), Role::Follower);
    assert_eq!(cluster.term("n1"), new_term);
    assert_eq!(cluster.role("n2"), Role::Leader, "the stale leader does not disrupt the new one");
    assert_eq!(cluster.term("n2"), new_term);
}
