//! §5.2 Leader election.

use std::collections::BTreeSet;
use std::time::Duration;

use concord_core::prelude::*;
use concord_raft::Bug;

use crate::harness::*;

fn vote_requests(packets: &[Packet]) -> Vec<(NodeId, Term, bool)> {
    packets
        .iter()
        .filter_map(|packet| match packet.message {
            RaftMessage::VoteRequest { term, pre_vote, .. } => Some((packet.to.clone(), term, pre_vote)),
            _ => None,
        })
        .collect()
}

// §5.2: "When servers start up, they begin as followers." The election timer is armed.
#[test]
fn section_5_2_servers_start_as_followers() {
    let config = paper_config();
    let cluster = Cluster::new(3, config.clone());
    for node in ["n1", "n2", "n3"] {
        let state = cluster.state(node);
        assert_eq!(state.role, Role::Follower, "{node}");
        assert_eq!(state.current_term, Term(0), "{node}");
        assert_eq!(state.leader_id, None, "{node}");
        let deadline = cluster.raft(node).poll_timeout().expect("a follower has an election timer");
        let timeout = deadline.saturating_duration_since(cluster.now);
        assert!(
            timeout >= config.election_timeout.min && timeout <= config.election_timeout.max,
            "{node}: first election timeout {timeout:?} is outside the configured range"
        );
    }
    assert!(cluster.in_flight().is_empty(), "a follower sends nothing on start");
}

// §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to all
// followers in order to maintain their authority", and "a server remains in follower state as long
// as it receives valid RPCs from a leader".
#[test]
fn section_5_2_leader_sends_heartbeats_and_keeps_followers_from_campaigning() {
    let config = paper_config();
    let mut cluster = Cluster::new(3, config.clone());
    let term = cluster.elect("n1");
    cluster.settle();
    cluster.drop_network();

    // Drive only n1's timer for ten heartbeat intervals, count what it sends, and deliver it.
    let start = cluster.now;
    let mut sent = Vec::new();
    for round in 1..=10u32 {
        cluster.set_time(start + config.heartbeat_interval * round);
        cluster.tick("n1");
        let packets = cluster.take_network();
        sent.extend(packets.iter().cloned());
        for packet in packets {
            cluster.deliver(packet);
        }
        cluster.deliver_all();
    }
    for follower in ["n2", "n3"] {
        let heartbeats: Vec<&Packet> = sent
            .iter()
            .filter(|packet| packet.to.as_str() == follower)
            .filter(|packet| {
                matches!(&packet.message, RaftMessage::Append { entries, term: sent_term, .. }
                    if entries.is_empty() && *sent_term == term)
            })
            .collect();
        assert!(
            (9..=11).contains(&heartbeats.len()),
            "{follower}: expected one heartbeat per interval over 10 intervals, got {}",
            heartbeats.len()
        );
    }

    // With heartbeats flowing, nobody starts an election, for many election timeouts.
    cluster.run_for(config.election_timeout.max * 20);
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.term(node), term, "{node}: no election while the leader is heard");
    }
    assert_eq!(cluster.leaders(), vec![id("n1")]);
}

// §5.2: "If a follower receives no communication over a period of time called the election
// timeout, then it ... begins an election ... a follower increments its current term and
// transitions to candidate state. It then votes for itself and issues RequestVote RPCs in parallel
// to each of the other servers."
#[test]
fn section_5_2_follower_starts_an_election_on_timeout() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.fire_timeout("n1");
    assert_eq!(cluster.role("n1"), Role::Candidate);
    assert_eq!(cluster.term("n1"), Term(1));
    let hard_state = cluster.hard_state("n1");
    assert_eq!(hard_state.term, Term(1), "the new term is persisted");
    assert_eq!(hard_state.voted_for, Some(id("n1")), "the candidate votes for itself, durably");
    let requests = vote_requests(&cluster.take_network());
    assert_eq!(
        requests,
        vec![(id("n2"), Term(1), false), (id("n3"), Term(1), false)],
        "one RequestVote to each other server"
    );
}

// §5.2: "[a candidate] continues in this state until ... a period of time goes by with no winner
// ... each candidate will time out and start a new election by incrementing its term and
// initiating another round of RequestVote RPCs."
#[test]
fn section_5_2_candidate_starts_a_new_election_on_timeout() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.fire_timeout("n1");
    cluster.drop_network();
    assert_eq!(cluster.role("n1"), Role::Candidate);
    cluster.fire_timeout("n1");
    assert_eq!(cluster.role("n1"), Role::Candidate);
    assert_eq!(cluster.term("n1"), Term(2));
    assert_eq!(cluster.hard_state("n1").voted_for, Some(id("n1")));
    let requests = vote_requests(&cluster.take_network());
    assert_eq!(requests, vec![(id("n2"), Term(2), false), (id("n3"), Term(2), false)]);
}

// §5.2: "A candidate wins an election if it receives votes from a majority of the servers in the
// full cluster for the same term ... Once a candidate wins an election, it becomes leader. It then
// sends heartbeat messages to all of the other servers." Without a majority the outcome is
// undecided: it stays a candidate. It loses when another server establishes itself as leader.
#[test]
fn section_5_2_an_election_round_is_won_lost_or_undecided() {
    // (cluster size, votes granted by others, expected role)
    let cases = [
        (1, 0, Role::Leader),
        (3, 0, Role::Candidate),
        (3, 1, Role::Leader),
        (5, 1, Role::Candidate),
        (5, 2, Role::Leader),
        (5, 4, Role::Leader),
    ];
    for (size, grants, expected) in cases {
        let mut cluster = Cluster::new(size, paper_config());
        cluster.fire_timeout("n1");
        cluster.drop_network();
        let voters: Vec<String> = (2..=size).map(|number| format!("n{number}")).collect();
        let mut sent_after_votes = cluster.take_network();
        for voter in voters.iter().take(grants) {
            let answers = cluster.exchange(
                voter,
                "n1",
                RaftMessage::VoteResponse { term: Term(1), granted: true, pre_vote: false },
            );
            sent_after_votes.extend(answers);
        }
        let case = format!("{size} servers, {grants} votes besides its own");
        assert_eq!(cluster.role("n1"), expected, "{case}");
        assert_eq!(cluster.term("n1"), Term(1), "{case}");
        if expected == Role::Leader {
            assert!(
                cluster
                    .node("n1")
                    .events
                    .iter()
                    .any(|event| *event == Event::LeaderElected { leader: id("n1"), term: Term(1) }),
                "{case}: leader:elected is reported"
            );
            let told: BTreeSet<NodeId> = sent_after_votes
                .into_iter()
                .filter(|packet| matches!(packet.message, RaftMessage::Append { term: Term(1), .. }))
                .map(|packet| packet.to)
                .collect();
            let expected_told: BTreeSet<NodeId> = voters.iter().map(|voter| id(voter)).collect();
            assert_eq!(told, expected_told, "{case}: the new leader at once sends appends to every follower");
        }
    }

    // Lost: one vote short of a majority, then n2's append of term 1 says n2 won this term.
    let mut cluster = Cluster::new(5, paper_config());
    cluster.fire_timeout("n1");
    cluster.drop_network();
    cluster.exchange("n3", "n1", RaftMessage::VoteResponse { term: Term(1), granted: true, pre_vote: false });
    let heartbeat = RaftMessage::Append {
        term: Term(1),
        prev_log_index: LogIndex::ZERO,
        prev_log_term: Term(0),
        entries: Vec::new(),
        leader_commit: LogIndex::ZERO,
        read_round: 0,
    };
    cluster.exchange("n2", "n1", heartbeat);
    assert_eq!(cluster.role("n1"), Role::Follower, "lost to n2");
    assert_eq!(cluster.raft("n1").leader(), Some(id("n2")));
    cluster.exchange("n4", "n1", RaftMessage::VoteResponse { term: Term(1), granted: true, pre_vote: false });
    assert_eq!(cluster.role("n1"), Role::Follower, "a late vote after losing does not make it leader");
}

// §5.2: "Each server will vote for at most one candidate in a given term, on a first-come-
// first-served basis." Figure 2: grant "if votedFor is null or candidateId" (a retransmitted
// request from the same candidate is granted again).
#[test]
fn section_5_2_a_server_votes_at_most_once_per_term() {
    check_one_vote_per_term(None);
}

/// The body of the test above; `bug` switches a broken behaviour on (see `mutants.rs`).
pub(crate) fn check_one_vote_per_term(bug: Option<Bug>) {
    let mut cluster = Cluster::new(3, paper_config());
    if let Some(bug) = bug {
        cluster.set_bug(bug);
    }
    let request = |term: u64| RaftMessage::VoteRequest {
        term: Term(term),
        last_log_index: LogIndex::ZERO,
        last_log_term: Term(0),
        pre_vote: false,
        transfer: false,
    };
    let granted = |answers: &[Packet]| -> bool {
        match answers {
            [Packet { message: RaftMessage::VoteResponse { granted, pre_vote: false, .. }, .. }] => *granted,
            other => panic!("expected exactly one vote response, got {other:?}"),
        }
    };
    assert!(granted(&cluster.exchange("n1", "n3", request(1))), "first come, first served");
    assert_eq!(cluster.hard_state("n3").voted_for, Some(id("n1")));
    assert!(!granted(&cluster.exchange("n2", "n3", request(1))), "a second candidate of the same term");
    assert!(granted(&cluster.exchange("n1", "n3", request(1))), "the same candidate asking again");
    assert_eq!(cluster.hard_state("n3").voted_for, Some(id("n1")));
    assert_eq!(cluster.hard_state("n3").term, Term(1));
    // A new term brings a new vote.
    assert!(granted(&cluster.exchange("n2", "n3", request(2))), "one vote per term, not per life");
    assert_eq!(cluster.hard_state("n3").voted_for, Some(id("n2")));
}

// §5.2 and Figure 2 (Followers): "If election timeout elapses without receiving AppendEntries RPC
// from current leader or granting vote to candidate: convert to candidate." Granting a vote and
// hearing from the leader restart the timer; refusing a vote does not.
#[test]
fn section_5_2_granting_a_vote_or_hearing_the_leader_restarts_the_election_timer() {
    let config = paper_config();
    let min = config.election_timeout.min;
    let vote_request = |term: u64, last_log_term: u64| RaftMessage::VoteRequest {
        term: Term(term),
        last_log_index: LogIndex(1),
        last_log_term: Term(last_log_term),
        pre_vote: false,
        transfer: false,
    };

    // Every node is in term 1 already, so no message below changes a term (which would restart
    // the timer by itself).
    let in_term_1 = || {
        Cluster::with_recovered(
            config.clone(),
            vec![recovered_with(Vec::new(), 1), recovered_with(Vec::new(), 1), recovered_with(Vec::new(), 1)],
        )
    };

    // Granting a vote.
    let mut cluster = in_term_1();
    let deadline = cluster.raft("n3").poll_timeout().expect("timer");
    cluster.set_time(deadline - std::time::Duration::from_millis(1));
    cluster.exchange("n1", "n3", vote_request(1, 1));
    assert_eq!(cluster.hard_state("n3").voted_for, Some(id("n1")));
    let restarted = cluster.raft("n3").poll_timeout().expect("timer");
    assert!(
        restarted >= cluster.now + min,
        "granting restarts the timer: {restarted:?} at {:?}",
        cluster.now
    );

    // Refusing a vote (same term, n3 already voted): the timer keeps running.
    cluster.set_time(restarted - std::time::Duration::from_millis(1));
    let answers = cluster.exchange("n2", "n3", vote_request(1, 1));
    assert!(answers.iter().all(|p| matches!(p.message, RaftMessage::VoteResponse { granted: false, .. })));
    assert_eq!(cluster.raft("n3").poll_timeout(), Some(restarted), "a refusal does not restart the timer");

    // Hearing from the leader.
    let mut cluster = in_term_1();
    let deadline = cluster.raft("n3").poll_timeout().expect("timer");
    cluster.set_time(deadline - std::time::Duration::from_millis(1));
    cluster.exchange(
        "n1",
        "n3",
        RaftMessage::Append {
            term: Term(1),
            prev_log_index: LogIndex::ZERO,
            prev_log_term: Term(0),
            entries: Vec::new(),
            leader_commit: LogIndex::ZERO,
            read_round: 0,
        },
    );
    let restarted = cluster.raft("n3").poll_timeout().expect("timer");
    assert!(restarted >= cluster.now + min, "an append restarts the timer");
}

// §5.2: "While waiting for votes, a candidate may receive an AppendEntries RPC from another server
// claiming to be leader. If the leader's term ... is at least as large as the candidate's current
// term, then the candidate recognizes the leader as legitimate and returns to follower state. If
// the term in the RPC is smaller than the candidate's current term, then the candidate rejects the
// RPC and continues in candidate state."
#[test]
fn section_5_2_candidate_falls_back_to_follower_on_a_current_leader() {
    let heartbeat = |term: u64| RaftMessage::Append {
        term: Term(term),
        prev_log_index: LogIndex::ZERO,
        prev_log_term: Term(0),
        entries: Vec::new(),
        leader_commit: LogIndex::ZERO,
        read_round: 0,
    };
    let candidate_in_term_2 = || {
        let mut cluster = Cluster::new(3, paper_config());
        cluster.fire_timeout("n1");
        cluster.drop_network();
        cluster.fire_timeout("n1");
        cluster.drop_network();
        assert_eq!((cluster.role("n1"), cluster.term("n1")), (Role::Candidate, Term(2)));
        cluster
    };

    // Same term: the other server won this term.
    let mut cluster = candidate_in_term_2();
    cluster.exchange("n2", "n1", heartbeat(2));
    assert_eq!(cluster.role("n1"), Role::Follower);
    assert_eq!(cluster.term("n1"), Term(2));
    assert_eq!(cluster.raft("n1").leader(), Some(id("n2")));

    // Newer term.
    let mut cluster = candidate_in_term_2();
    cluster.exchange("n2", "n1", heartbeat(5));
    assert_eq!(cluster.role("n1"), Role::Follower);
    assert_eq!(cluster.term("n1"), Term(5));
    assert_eq!(cluster.raft("n1").leader(), Some(id("n2")));

    // Older term: rejected, still campaigning.
    let mut cluster = candidate_in_term_2();
    let answers = cluster.exchange("n2", "n1", heartbeat(1));
    assert_eq!(cluster.role("n1"), Role::Candidate);
    assert_eq!(cluster.term("n1"), Term(2));
    assert!(
        answers
            .iter()
            .all(|packet| matches!(packet.message, RaftMessage::AppendResponse { success: false, .. })),
        "a stale append is rejected: {answers:?}"
    );
}

// §5.2: "Raft uses randomized election timeouts ... election timeouts are chosen randomly from a
// fixed interval (e.g., 150–300ms). This spreads out the servers so that in most cases only a
// single server will time out." Each node draws from `[min, max]` with its own seeded RNG, draws
// anew for every election, covers the range, and two servers rarely time out together.
#[test]
fn section_5_2_election_timeouts_are_randomized_over_the_range_and_rarely_conflict() {
    let config = paper_config();
    let (min, max) = (config.election_timeout.min, config.election_timeout.max);
    let range = max - min;
    let buckets = 10u32;
    let mut first_timeouts = Vec::new();
    let mut conflicts = 0usize;
    let clusters = 200u64;
    // Two timeouts closer than this count as a conflict (a few message delays on a LAN).
    let conflict_window = Duration::from_millis(5);
    for seed in 0..clusters {
        let cluster = Cluster::seeded(5, config.clone(), seed * 100);
        let mut timeouts: Vec<Duration> = ["n1", "n2", "n3", "n4", "n5"]
            .iter()
            .map(|node| {
                let deadline = cluster.raft(node).poll_timeout().expect("election timer");
                deadline.saturating_duration_since(cluster.now)
            })
            .collect();
        for timeout in &timeouts {
            assert!(
                *timeout >= min && *timeout <= max,
                "seed {seed}: timeout {timeout:?} outside [{min:?}, {max:?}]"
            );
        }
        timeouts.sort();
        if timeouts[1] - timeouts[0] < conflict_window {
            conflicts += 1;
        }
        first_timeouts.extend(timeouts);
    }
    // Covers the range: every tenth of it is drawn (1000 draws; an empty tenth has odds ~1e-44).
    let mut counts = vec![0usize; buckets as usize];
    for timeout in &first_timeouts {
        let position = ((*timeout - min).as_nanos() * u128::from(buckets) / range.as_nanos().max(1)) as usize;
        counts[position.min(buckets as usize - 1)] += 1;
    }
    assert!(counts.iter().all(|count| *count > 0), "timeouts do not cover the range: {counts:?}");
    // Uniform draws from a 300 ms range put the first two of five within 5 ms about 7% of the
    // time; allow up to 20%.
    assert!(
        conflicts * 5 <= clusters as usize,
        "{conflicts} of {clusters} clusters had their first two timeouts within {conflict_window:?}"
    );

    // A node draws a new timeout for every election (a candidate that keeps losing does not
    // keep colliding with the same rival).
    let mut cluster = Cluster::new(3, config.clone());
    let mut drawn = BTreeSet::new();
    for _ in 0..20 {
        cluster.fire_timeout("n1");
        cluster.drop_network();
        let timeout =
            cluster.raft("n1").poll_timeout().expect("timer").saturating_duration_since(cluster.now);
        assert!(timeout >= min && timeout <= max, "re-drawn timeout {timeout:?} outside the range");
        drawn.insert(timeout);
    }
    assert!(drawn.len() >= 10, "a candidate's successive timeouts should vary; drew {drawn:?}");
    assert_eq!(cluster.term("n1"), Term(20));
}
