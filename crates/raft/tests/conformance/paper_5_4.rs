//! §5.4 Safety: the election restriction (§5.4.1) and committing entries from previous terms
//! (§5.4.2).

use concord_core::prelude::*;
use concord_raft::Bug;

use crate::harness::*;

fn vote_request(term: u64, last_log_index: u64, last_log_term: u64) -> RaftMessage {
    RaftMessage::VoteRequest {
        term: Term(term),
        last_log_index: LogIndex(last_log_index),
        last_log_term: Term(last_log_term),
        pre_vote: false,
        transfer: false,
    }
}

// §5.4.1: "The RequestVote RPC implements this restriction: the RPC includes information about the
// candidate's log" — Figure 2: lastLogIndex and lastLogTerm. A pre-vote probe carries the same.
#[test]
fn section_5_4_1_vote_requests_carry_the_last_log_index_and_term() {
    for (config, pre_vote) in [(paper_config(), false), (default_config(), true)] {
        let mut cluster = Cluster::with_recovered(
            config,
            vec![
                recovered_with(log_of_terms(&[1, 1, 2]), 2),
                recovered_with(log_of_terms(&[1, 1, 2]), 2),
                recovered_with(log_of_terms(&[1, 1, 2]), 2),
            ],
        );
        cluster.fire_timeout("n1");
        let requests: Vec<Packet> = cluster.take_network();
        assert_eq!(requests.len(), 2, "pre-vote {pre_vote}: one request per peer: {requests:?}");
        for packet in requests {
            assert_eq!(
                packet.message,
                RaftMessage::VoteRequest {
                    term: Term(3),
                    last_log_index: LogIndex(3),
                    last_log_term: Term(2),
                    pre_vote,
                    transfer: false,
                },
                "pre-vote {pre_vote}: to {}",
                packet.to
            );
        }
    }
}

// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the candidate
// ... If the logs have last entries with different terms, then the log with the later term is more
// up-to-date. If the logs end with the same term, then whichever log is longer is more up-to-date."
#[test]
fn section_5_4_1_voter_denies_a_candidate_whose_log_is_less_up_to_date() {
    // The voter's log ends with term 2 at index 3.
    // (candidate's last log term, last log index, granted)
    let cases = [
        (1, 10, false), // older last term, however long
        (2, 2, false),  // same last term, shorter
        (2, 3, true),   // identical
        (2, 4, true),   // same last term, longer
        (3, 1, true),   // newer last term, however short
    ];
    for (last_term, last_index, expected) in cases {
        let mut cluster = Cluster::with_recovered(
            paper_config(),
            vec![Recovered::default(), recovered_with(log_of_terms(&[1, 2, 2]), 2), Recovered::default()],
        );
        let answers = cluster.exchange("n1", "n2", vote_request(3, last_index, last_term));
        let case = format!("candidate's log ends with term {last_term} at {last_index}");
        assert_eq!(
            answers.iter().map(|packet| packet.message.clone()).collect::<Vec<_>>(),
            vec![RaftMessage::VoteResponse { term: Term(3), granted: expected, pre_vote: false }],
            "{case}"
        );
        let hard_state = cluster.hard_state("n2");
        assert_eq!(hard_state.term, Term(3), "{case}: the newer term is adopted either way (§5.1)");
        assert_eq!(hard_state.voted_for, expected.then(|| id("n1")), "{case}");
    }
}

// §5.4.1 as a whole: a server missing a committed entry cannot be elected, so a leader holds every
// committed entry (Leader Completeness).
#[test]
fn section_5_4_1_a_server_missing_committed_entries_cannot_be_elected() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.elect("n1");
    cluster.settle();
    cluster.cut_both("n1", "n3");
    cluster.propose_put("n1", "x", "committed");
    cluster.deliver_all();
    let committed = cluster.commit("n1");
    assert!(committed > cluster.last_index("n3"), "x committed on n1 and n2, not on n3");

    cluster.crash("n1");
    cluster.heal();
    for _ in 0..3 {
        cluster.fire_timeout("n3");
        cluster.deliver_all();
        assert_ne!(cluster.role("n3"), Role::Leader, "n3 lacks a committed entry");
    }
    cluster.elect("n2");
    cluster.settle();
    assert_eq!(cluster.value("n3", "x").as_deref(), Some(&b"committed"[..]));
}

// §5.4.2, Figure 8: "Raft never commits log entries from previous terms by counting replicas. Only
// log entries from the leader's current term are committed by counting replicas."
//
// The state of Figure 8 (c): S1 leads term 4 and replicates the entry of term 2 at index 2 to S3,
// so that it is stored on a majority (S1, S2, S3), and S1 knows it (S2 and S3 acknowledged index
// 2 in term 4). It must still not commit it: in (d) S5 (whose log ends with term 3) could be
// elected by S2, S3, S4 and overwrite it. One entry per append makes S3 acknowledge index 2
// separately from S1's no-op of term 4 at index 3.
#[test]
fn section_5_4_2_an_old_term_entry_is_never_committed_by_counting_replicas() {
    check_figure_8(None);
}

/// The body of the test above; `bug` switches a broken behaviour on (see `mutants.rs`).
pub(crate) fn check_figure_8(bug: Option<Bug>) {
    let mut config = paper_config();
    config.max_entries_per_message = 1;
    let mut cluster = Cluster::with_recovered(
        config,
        vec![
            recovered_with(log_of_terms(&[1, 2]), 3), // S1
            recovered_with(log_of_terms(&[1, 2]), 3), // S2
            recovered_with(log_of_terms(&[1]), 3),    // S3
            recovered_with(log_of_terms(&[1]), 3),    // S4
            recovered_with(log_of_terms(&[1, 3]), 3), // S5
        ],
    );
    if let Some(bug) = bug {
        cluster.set_bug(bug);
    }
    // S1 campaigns in term 4; only S2 and S3 hear it. Only the election is delivered: the first
    // appends are lost, so replication starts below, one message at a time.
    cluster.isolate("n4");
    cluster.isolate("n5");
    cluster.fire_timeout("n1");
    cluster.deliver_all_where(is_vote);
    assert_eq!(cluster.role("n1"), Role::Leader);
    assert_eq!(cluster.term("n1"), Term(4));
    // From now on S2 receives S1's appends without their entries (as heartbeats): it acknowledges
    // index 2 (term 2) in term 4, as in Figure 8, but never gets the term-4 entry. Only S1's timer
    // runs here.
    let without_entries_to_s2 = |mut packet: Packet| {
        if let (true, RaftMessage::Append { entries, .. }) = (packet.to.as_str() == "n2", &mut packet.message)
        {
            entries.clear();
        }
        packet
    };
    let heartbeat_interval = cluster.node("n1").config.heartbeat_interval;
    let mut majority_held_old_entry_alone = false;
    for _ in 0..20 {
        cluster.set_time(cluster.now + heartbeat_interval);
        cluster.tick("n1");
        while let Some(packet) = cluster.network.pop_front() {
            cluster.deliver(without_entries_to_s2(packet));
            let holders_of = |index: u64, term: u64| {
                ["n1", "n2", "n3", "n4", "n5"]
                    .iter()
                    .filter(|node| {
                        cluster
                            .log(node)
                            .iter()
                            .any(|entry| entry.index == LogIndex(index) && entry.term == Term(term))
                    })
                    .count()
            };
            // Servers S1 knows to hold index 2: itself and the followers whose match reached it.
            let known_holders_of_2 = 1 + cluster
                .state("n1")
                .followers
                .values()
                .filter(|progress| progress.match_index >= LogIndex(2))
                .count();
            if holders_of(2, 2) >= 3 && holders_of(3, 4) < 3 && known_holders_of_2 >= 3 {
                majority_held_old_entry_alone = true;
                assert!(
                    cluster.commit("n1") < LogIndex(2),
                    "S1 committed index 2 (term 2) by counting replicas, while its term-4 entry is on {} \
                     servers only",
                    holders_of(3, 4)
                );
            }
        }
    }
    assert!(
        majority_held_old_entry_alone,
        "the scenario reached Figure 8 (c): S1 knew index 2 was on a majority, its term-4 entry was not"
    );
    assert_eq!(cluster.log_terms("n3"), vec![1, 2, 4], "S3 got the term-2 entry, then S1's no-op");
    assert!(cluster.commit("n1") < LogIndex(2), "still only two copies of the term-4 entry");

    // Once S2 also stores the term-4 entry, that entry commits, and index 2 with it.
    for _ in 0..3 {
        cluster.set_time(cluster.now + heartbeat_interval);
        cluster.tick("n1");
        cluster.deliver_all();
    }
    assert_eq!(cluster.commit("n1"), LogIndex(3));
    assert_eq!(cluster.value("n1", "k2").as_deref(), Some(&b"t2"[..]));
}
