//! §5.3 Log replication.

use concord_core::message::ConflictHint;
use concord_core::prelude::*;

use crate::harness::*;

fn append(term: u64, prev_index: u64, prev_term: u64, entries: Vec<Entry>, commit: u64) -> RaftMessage {
    RaftMessage::Append {
        term: Term(term),
        prev_log_index: LogIndex(prev_index),
        prev_log_term: Term(prev_term),
        entries,
        leader_commit: LogIndex(commit),
        read_round: 0,
    }
}

fn only_append_response(answers: &[Packet]) -> (bool, LogIndex, Option<ConflictHint>, LogIndex, Term) {
    match answers {
        [Packet {
            message: RaftMessage::AppendResponse { success, match_index, conflict, last_log_index, term, .. },
            ..
        }] => (*success, *match_index, *conflict, *last_log_index, *term),
        other => panic!("expected exactly one append response, got {other:?}"),
    }
}

// §5.3: "The leader appends the command to its log as a new entry, then issues AppendEntries RPCs
// in parallel to each of the other servers"; Figure 2: prevLogIndex is the "index of log entry
// immediately preceding new ones", prevLogTerm its term; each entry stores the leader's term.
#[test]
fn section_5_3_leader_replicates_a_proposal_with_the_right_prev_index_and_term() {
    let mut cluster = Cluster::new(3, paper_config());
    let term = cluster.elect("n1");
    cluster.settle();
    let last = cluster.last_index("n1");
    let last_term = cluster.log("n1").last().map(|entry| entry.term).expect("the leader's no-op");
    assert_eq!(last_term, term, "the new leader appended an entry of its own term (its no-op)");
    let commit = cluster.commit("n1");

    let proposal = cluster.propose_put("n1", "x", "1");
    let appended = cluster.log("n1").last().cloned().expect("appended");
    assert_eq!(appended.index, last.next());
    assert_eq!(appended.term, term);
    assert!(
        matches!(&appended.payload,
            EntryPayload::Command(made) if made.id == proposal && made.command == put("x", "1")),
        "the leader's log holds the command: {appended:?}"
    );
    for follower in ["n2", "n3"] {
        let appends: Vec<Packet> =
            cluster.in_flight().into_iter().filter(|p| p.to.as_str() == follower && is_append(p)).collect();
        assert_eq!(appends.len(), 1, "{follower}: one append for one proposal: {appends:?}");
        match &appends[0].message {
            RaftMessage::Append {
                term: sent_term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => {
                assert_eq!(*sent_term, term);
                assert_eq!(*prev_log_index, last, "prevLogIndex is the entry before the new one");
                assert_eq!(*prev_log_term, last_term, "prevLogTerm is that entry's term");
                assert_eq!(entries, &vec![appended.clone()]);
                assert_eq!(*leader_commit, commit);
            }
            _ => unreachable!(),
        }
    }
    cluster.deliver_all();
    for follower in ["n2", "n3"] {
        assert_eq!(cluster.log(follower), cluster.log("n1"), "{follower} stores the same entries");
    }
}

// §5.3: "A log entry is committed once the leader that created the entry has replicated it on a
// majority of the servers ... The leader keeps track of the highest index it knows to be
// committed, and it includes that index in future AppendEntries RPCs (including heartbeats) so
// that the other servers eventually find out."
#[test]
fn section_5_3_commit_after_a_majority_acknowledges_and_propagate_the_commit_index() {
    let mut cluster = Cluster::new(5, paper_config());
    cluster.elect("n1");
    cluster.settle();
    cluster.cut_both("n1", "n4");
    cluster.cut_both("n1", "n5");
    let commit_before = cluster.commit("n1");

    let proposal = cluster.propose_put("n1", "x", "1");
    let index = cluster.last_index("n1");
    let mut held = cluster.take_network();
    let to_n2 = held.iter().position(|p| p.to.as_str() == "n2" && is_append(p)).expect("append to n2");
    let to_n2 = held.remove(to_n2);
    let to_n3 = held.iter().position(|p| p.to.as_str() == "n3" && is_append(p)).expect("append to n3");
    let to_n3 = held.remove(to_n3);

    // Leader and n2: two of five, not a majority.
    cluster.deliver(to_n2);
    cluster.deliver_all();
    assert_eq!(cluster.commit("n1"), commit_before, "two of five copies do not commit");
    assert!(cluster.results_for("n1", &proposal).is_empty(), "no result before commit");

    // And n3: three of five.
    cluster.deliver(to_n3);
    cluster.deliver_all();
    assert_eq!(cluster.commit("n1"), index, "three of five copies commit");
    let results = cluster.results_for("n1", &proposal);
    assert_eq!(results.len(), 1, "exactly one result: {results:?}");
    assert!(results[0].accepted, "{:?}", results[0]);
    assert_eq!(results[0].index, Some(index));
    assert_eq!(results[0].quorum_required, 3);
    assert_eq!(results[0].votes.in_favor, 3, "replicas holding the entry when it committed");
    assert_eq!(cluster.value("n1", "x").as_deref(), Some(&b"1"[..]), "the leader applied it");

    // The next heartbeat carries the commit index to the followers in reach.
    let heartbeat_interval = cluster.node("n1").config.heartbeat_interval;
    cluster.run_for(heartbeat_interval);
    for follower in ["n2", "n3"] {
        assert_eq!(cluster.commit(follower), index, "{follower} learned the commit index");
        assert_eq!(cluster.value(follower, "x").as_deref(), Some(&b"1"[..]), "{follower} applied it");
    }
    for follower in ["n4", "n5"] {
        assert!(cluster.commit(follower) < index, "{follower} is cut off and cannot know");
    }
}

// §5.3: "If followers crash or run slowly, or if network packets are lost, the leader retries
// AppendEntries RPCs indefinitely (even after it has responded to the client) until all followers
// eventually store all log entries."
#[test]
fn section_5_3_leader_retries_lost_appends_until_every_follower_stores_the_entries() {
    let config = paper_config();
    let mut cluster = Cluster::new(3, config.clone());
    cluster.elect("n1");
    cluster.settle();
    cluster.cut("n1", "n3");
    // The first appends to n2 are lost too, for a few heartbeats.
    let lost_to_n2 = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let counter = lost_to_n2.clone();
    cluster.drop_rule = Some(Box::new(move |packet: &Packet| {
        let drop = packet.to.as_str() == "n2" && is_append(packet) && counter.get() < 3;
        if drop {
            counter.set(counter.get() + 1);
        }
        drop
    }));
    let proposal = cluster.propose_put("n1", "x", "1");
    let index = cluster.last_index("n1");
    let answered = cluster.run_until(config.heartbeat_interval * 10, |cluster| {
        !cluster.results_for("n1", &proposal).is_empty()
    });
    assert!(answered, "the leader retried n2 until the entry committed");
    assert_eq!(lost_to_n2.get(), 3, "three appends to n2 were lost");
    assert!(cluster.results_for("n1", &proposal)[0].accepted);
    assert!(cluster.last_index("n3") < index, "n3 has not received it yet");

    // The client has its answer; the leader keeps trying n3.
    cluster.run_for(config.heartbeat_interval * 5);
    cluster.heal();
    cluster.run_for(config.heartbeat_interval * 3);
    assert_eq!(cluster.log("n3"), cluster.log("n1"), "n3 eventually stores every entry");
    assert_eq!(cluster.commit("n3"), cluster.commit("n1"));
}

// §5.3: "This also commits all preceding entries in the leader's log, including entries created by
// previous leaders." n1 leaves three entries on itself and n2 only, then crashes; n2 wins term 2
// and, once an entry of its own term commits, the three entries of term 1 commit with it.
#[test]
fn section_5_3_committing_an_entry_commits_all_preceding_ones_including_a_previous_leaders() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.elect("n1");
    cluster.settle();
    cluster.cut_both("n1", "n3");
    cluster.cut("n2", "n1"); // n2 stores the entries but n1 never hears back: nothing commits.
    let proposals: Vec<ProposalId> =
        (1..=3).map(|value| cluster.propose_put("n1", &format!("k{value}"), "old")).collect();
    cluster.deliver_all();
    let old_commit = cluster.commit("n1");
    let entries_on_n2 = cluster.last_index("n2");
    assert_eq!(entries_on_n2, cluster.last_index("n1"), "n2 holds the three entries");
    assert!(old_commit < entries_on_n2, "nothing of the three committed yet");
    for proposal in &proposals {
        assert!(cluster.results_for("n1", proposal).is_empty());
    }

    cluster.crash("n1");
    cluster.heal();
    let term = cluster.elect("n2");
    assert_eq!(term, Term(2));
    cluster.settle();
    let commit = cluster.commit("n2");
    assert!(commit > entries_on_n2, "n2 committed an entry of its own term after the three");
    for follower in ["n2", "n3"] {
        for value in 1..=3 {
            assert_eq!(
                cluster.value(follower, &format!("k{value}")).as_deref(),
                Some(&b"old"[..]),
                "{follower}: the previous leader's entry k{value} is committed and applied"
            );
        }
    }
    let terms = cluster.log_terms("n3");
    assert_eq!(&terms[terms.len() - 4..], &[1, 1, 1, 2], "n3's log ends with the three entries and n2's");
}

// §5.3: "Once a follower learns that a log entry is committed, it applies the entry to its local
// state machine (in log order)"; Figure 2: "If leaderCommit > commitIndex, set commitIndex =
// min(leaderCommit, index of last new entry)".
#[test]
fn section_5_3_follower_applies_entries_up_to_the_leader_commit_index() {
    let mut cluster = Cluster::new(3, paper_config());
    let entries = log_of_terms(&[1, 1, 1]);
    let (success, ..) = only_append_response(&cluster.exchange("n1", "n2", append(1, 0, 0, entries, 2)));
    assert!(success);
    assert_eq!(cluster.commit("n2"), LogIndex(2));
    assert_eq!(cluster.raft("n2").replica().applied(), LogIndex(2), "applied up to the leader's commit");
    assert_eq!(cluster.value("n2", "k1").as_deref(), Some(&b"t1"[..]));
    assert_eq!(cluster.value("n2", "k2").as_deref(), Some(&b"t1"[..]));
    assert_eq!(cluster.value("n2", "k3"), None, "entry 3 is stored but not committed: not applied");

    // A heartbeat moves the commit index.
    cluster.exchange("n1", "n2", append(1, 3, 1, Vec::new(), 3));
    assert_eq!(cluster.commit("n2"), LogIndex(3));
    assert_eq!(cluster.value("n2", "k3").as_deref(), Some(&b"t1"[..]));

    // leaderCommit beyond the entries just received: commit only what is known to match.
    cluster.exchange("n1", "n2", append(1, 3, 1, vec![command_entry(4, 1)], 10));
    assert_eq!(cluster.commit("n2"), LogIndex(4), "min(leaderCommit, index of last new entry)");
    assert_eq!(cluster.raft("n2").replica().applied(), LogIndex(4));

    // The follower holds entries beyond the append that may not be the leader's (3 and 4 of term 1
    // here, where the leader of term 2 has 3 of term 2): a delayed append ending at 2 with leader
    // commit 3 commits only up to 2, the last entry known to match.
    let mut cluster = Cluster::with_recovered(
        paper_config(),
        vec![Recovered::default(), recovered_with(log_of_terms(&[1, 1, 1, 1]), 1), Recovered::default()],
    );
    let (success, ..) =
        only_append_response(&cluster.exchange("n1", "n2", append(2, 1, 1, vec![command_entry(2, 1)], 3)));
    assert!(success);
    assert_eq!(cluster.log_terms("n2"), vec![1, 1, 1, 1], "matching entries truncate nothing");
    assert_eq!(cluster.commit("n2"), LogIndex(2), "not the unverified entry 3");
    assert_eq!(cluster.value("n2", "k3"), None);
}

// §5.3: "When sending an AppendEntries RPC, the leader includes the index and term of the entry in
// its log that immediately precedes the new entries. If the follower does not find an entry in its
// log with the same index and term, then it refuses the new entries." With the fast back-off hint
// ("the term of the conflicting entry and the first index it stores for that term").
#[test]
fn section_5_3_follower_rejects_an_append_whose_previous_entry_does_not_match() {
    let mut cluster = Cluster::with_recovered(
        paper_config(),
        vec![Recovered::default(), recovered_with(log_of_terms(&[1, 1]), 1), Recovered::default()],
    );
    let log_before = cluster.log("n2");

    // prevLogIndex beyond the follower's log.
    let (success, _, conflict, last, term) =
        only_append_response(&cluster.exchange("n1", "n2", append(2, 3, 1, vec![command_entry(4, 2)], 0)));
    assert!(!success, "no entry at prevLogIndex 3");
    assert_eq!(term, Term(2));
    assert_eq!(last, LogIndex(2));
    assert_eq!(
        conflict,
        Some(ConflictHint { rejected_index: LogIndex(3), term: None, index: LogIndex(3) }),
        "hint: my log ends at 2"
    );
    assert_eq!(cluster.log("n2"), log_before, "the entries are refused");

    // An entry at prevLogIndex, of another term.
    let (success, _, conflict, ..) =
        only_append_response(&cluster.exchange("n1", "n2", append(2, 2, 2, vec![command_entry(3, 2)], 0)));
    assert!(!success, "term 1 at index 2, not term 2");
    assert_eq!(
        conflict,
        Some(ConflictHint { rejected_index: LogIndex(2), term: Some(Term(1)), index: LogIndex(1) }),
        "hint: the conflicting term and the first index I store for it"
    );
    assert_eq!(cluster.log("n2"), log_before, "the entries are refused");
    assert_eq!(cluster.commit("n2"), LogIndex::ZERO);
}

// §5.3, Figure 2 AppendEntries receiver rule 3: "If an existing entry conflicts with a new one
// (same index but different terms), delete the existing entry and all that follow it" — and only
// then: a late duplicate of an older append must not truncate entries that follow it.
#[test]
fn section_5_3_follower_truncates_a_conflicting_suffix_and_only_a_conflicting_one() {
    let mut cluster = Cluster::with_recovered(
        paper_config(),
        vec![Recovered::default(), recovered_with(log_of_terms(&[1, 1, 2, 2]), 2), Recovered::default()],
    );
    let (success, match_index, ..) =
        only_append_response(&cluster.exchange("n1", "n2", append(3, 2, 1, vec![command_entry(3, 3)], 0)));
    assert!(success);
    assert_eq!(match_index, LogIndex(3));
    assert_eq!(cluster.log_terms("n2"), vec![1, 1, 3], "the conflicting entries 3 and 4 of term 2 are gone");
    assert_eq!(cluster.log("n2")[2], command_entry(3, 3));

    // A delayed duplicate of an earlier append (entries already present) changes nothing.
    let (success, match_index, ..) =
        only_append_response(&cluster.exchange("n1", "n2", append(3, 1, 1, vec![command_entry(2, 1)], 0)));
    assert!(success);
    assert!(match_index >= LogIndex(2));
    assert_eq!(cluster.log_terms("n2"), vec![1, 1, 3], "matching entries never truncate what follows");
}

// §5.3, Figure 7: a leader of term 8 meets followers (a)–(f) whose logs are missing entries, have
// extra uncommitted entries, or both. "The leader handles inconsistencies by forcing the followers'
// logs to duplicate its own": every log converges to the leader's, and all of it commits.
const FIGURE_7_LEADER: [u64; 10] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
const FIGURE_7_FOLLOWERS: [&[u64]; 6] = [
    &[1, 1, 1, 4, 4, 5, 5, 6, 6],          // (a) missing an entry
    &[1, 1, 1, 4],                         // (b) missing many
    &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],    // (c) an extra uncommitted entry
    &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d) extra entries of a later term
    &[1, 1, 1, 4, 4, 4, 4],                // (e) missing and extra
    &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],    // (f) a leader of terms 2 and 3 never replicated
];

/// Figure 7: n1 holds the leader's log, n2..n7 the logs of followers (a)..(f); all in term 7.
fn figure_7_cluster() -> Cluster {
    let mut recovered = vec![recovered_with(log_of_terms(&FIGURE_7_LEADER), 7)];
    recovered.extend(FIGURE_7_FOLLOWERS.iter().map(|terms| recovered_with(log_of_terms(terms), 7)));
    Cluster::with_recovered(paper_config(), recovered)
}

#[test]
fn section_5_3_divergent_logs_of_figure_7_converge_to_the_leaders() {
    let leader = FIGURE_7_LEADER;
    let mut cluster = figure_7_cluster();
    // (c) and (d) have more up-to-date logs and refuse their votes; n1 wins with (a), (b), (e), (f).
    let term = cluster.elect("n1");
    assert_eq!(term, Term(8));
    cluster.settle();
    cluster.settle();

    let mut expected = leader.to_vec();
    expected.push(8); // the leader's no-op
    let leader_log = cluster.log("n1");
    assert_eq!(cluster.log_terms("n1"), expected);
    for follower in ["n2", "n3", "n4", "n5", "n6", "n7"] {
        assert_eq!(cluster.log(follower), leader_log, "{follower}'s log converged to the leader's");
        assert_eq!(cluster.commit(follower), LogIndex(11), "{follower} knows everything committed");
        for index in 1..=10u64 {
            let key = format!("k{index}");
            assert_eq!(cluster.value(follower, &key), cluster.value("n1", &key), "{follower}: {key}");
        }
        assert_eq!(cluster.value(follower, "k7").as_deref(), Some(&b"t5"[..]), "{follower}");
    }
    assert_eq!(cluster.commit("n1"), LogIndex(11));
}

// §5.3, end: "the protocol can be optimized to reduce the number of rejected AppendEntries RPCs
// ... the follower can include the term of the conflicting entry and the first index it stores
// for that term. With this information, the leader can decrement nextIndex to bypass all of the
// conflicting entries in that term; one AppendEntries RPC will be required for each term with
// conflicting entries, rather than one RPC per entry." On Figure 7 that is at most two rejections
// per follower ((f) conflicts in terms 3 and 2); one entry at a time it would be up to seven.
#[test]
fn section_5_3_conflict_hints_back_up_one_term_per_rejection_on_figure_7() {
    let mut cluster = figure_7_cluster();
    cluster.elect("n1");
    cluster.settle();
    cluster.settle();
    let expected_terms = {
        let mut terms = FIGURE_7_LEADER.to_vec();
        terms.push(8);
        terms
    };
    for (follower, limit) in [("n2", 1), ("n3", 1), ("n4", 1), ("n5", 1), ("n6", 2), ("n7", 2)] {
        assert_eq!(cluster.log_terms(follower), expected_terms, "{follower} converged");
        let rejections = cluster
            .node(follower)
            .sent
            .iter()
            .filter(|record| {
                record.packet.to.as_str() == "n1"
                    && matches!(record.packet.message, RaftMessage::AppendResponse { success: false, .. })
            })
            .count();
        assert!(rejections <= limit, "{follower} rejected {rejections} appends; at most {limit} expected");
    }
}
