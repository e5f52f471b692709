//! What the crate adds beyond §5 of the paper, and the scenarios issue 3 names: pre-vote,
//! check-quorum, ReadIndex and lease reads, leadership transfer, learners, membership changes,
//! snapshots, rejoining within a term, persistence order, restarts, proposal results, forwarding;
//! and a few checks of what issue 3 asks beyond them (events, batching, flow control).

use std::time::Duration;

use concord_core::prelude::*;
use concord_raft::Bug;

use crate::harness::*;

fn election_timeout_max(cluster: &Cluster) -> Duration {
    cluster.nodes.values().next().expect("a node").config.election_timeout.max
}

fn heartbeat_interval(cluster: &Cluster) -> Duration {
    cluster.nodes.values().next().expect("a node").config.heartbeat_interval
}

fn sent_vote_requests(cluster: &Cluster, node: &str, pre_vote: bool) -> usize {
    cluster
        .node(node)
        .sent
        .iter()
        .filter(|record| {
            matches!(record.packet.message,
                RaftMessage::VoteRequest { pre_vote: probe, .. } if probe == pre_vote)
        })
        .count()
}

fn accepted_once(cluster: &Cluster, node: &str, proposal: &ProposalId) -> ProposalResult {
    let results = cluster.results_for(node, proposal);
    assert_eq!(results.len(), 1, "{node}: exactly one result for {proposal}: {results:?}");
    assert!(results[0].accepted, "{node}: {proposal} accepted: {:?}", results[0]);
    results[0].clone()
}

/// Starts a node that is about to join: with no initial members it waits for a leader to add it.
fn start_joiner(cluster: &mut Cluster, name: &str, config: Config) -> NodeInfo {
    let info = NodeInfo::new(name, address_of(name));
    cluster.add_node(id(name), config, Vec::new(), Recovered::default(), 4242);
    info
}

fn member_role(cluster: &Cluster, on: &str, member: &str) -> Option<MemberRole> {
    cluster.raft(on).membership().members.get(member).map(|m| m.role)
}

// ---------------------------------------------------------------- pre-vote

// Pre-vote (Raft thesis §9.6): a node cut off from the cluster keeps timing out but only probes
// (pre-vote), so its term does not grow, and when it rejoins it does not depose the leader.
#[test]
fn pre_vote_a_partitioned_node_rejoining_does_not_raise_the_leaders_term() {
    let mut cluster = Cluster::new(3, default_config());
    let term = cluster.elect("n1");
    cluster.settle();
    cluster.isolate("n3");
    cluster.run_for(election_timeout_max(&cluster) * 10);
    assert!(sent_vote_requests(&cluster, "n3", true) > 0, "isolated, n3 keeps probing with pre-votes");
    assert_eq!(sent_vote_requests(&cluster, "n3", false), 0, "but never campaigns for real");
    assert_eq!(cluster.term("n3"), term, "so its term does not grow");

    cluster.heal();
    cluster.run_for(election_timeout_max(&cluster) * 5);
    assert_eq!(cluster.leaders(), vec![id("n1")], "the leader was not disrupted");
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.term(node), term, "{node}");
    }
    assert_eq!(cluster.commit("n3"), cluster.commit("n1"), "n3 caught up");
}

// The same scenario without pre-vote raises the term: the control that shows the test above can
// fail.
#[test]
fn pre_vote_control_without_pre_vote_the_rejoining_node_raises_the_term() {
    let mut cluster = Cluster::new(3, paper_config());
    let term = cluster.elect("n1");
    cluster.settle();
    cluster.isolate("n3");
    cluster.run_for(election_timeout_max(&cluster) * 10);
    assert!(cluster.term("n3") > term, "without pre-vote an isolated node's term grows");
}

// ---------------------------------------------------------------- check-quorum

// Check-quorum: "a leader that has not heard from a quorum within an election timeout steps down"
// (issue 3; Raft thesis §6.2). It keeps leading while it hears from a quorum.
#[test]
fn check_quorum_a_leader_cut_off_from_a_quorum_steps_down() {
    let mut cluster = Cluster::new(3, default_config());
    let term = cluster.elect("n1");
    cluster.settle();
    let timeout_max = election_timeout_max(&cluster);
    cluster.run_for(timeout_max * 5);
    assert_eq!(cluster.role("n1"), Role::Leader, "a leader that hears from a quorum stays");

    // One follower lost: still a quorum.
    cluster.isolate("n3");
    cluster.run_for(timeout_max * 5);
    assert_eq!(cluster.role("n1"), Role::Leader, "n1 and n2 are a quorum");

    cluster.isolate("n1");
    let cut_at = cluster.now;
    let stepped_down = cluster.run_until(timeout_max * 3, |cluster| cluster.role("n1") != Role::Leader);
    assert!(stepped_down, "n1 still leads {:?} after losing its quorum", cluster.now - cut_at);
    assert!(
        cluster.now - cut_at <= timeout_max * 2 + heartbeat_interval(&cluster),
        "stepped down after {:?}; an election timeout (at most {timeout_max:?}) plus one check period",
        cluster.now - cut_at
    );
    assert_eq!(cluster.term("n1"), term, "stepping down does not start an election by itself");
}

// ---------------------------------------------------------------- ReadIndex

// ReadIndex (Raft thesis §6.4): the leader answers a read only after a quorum confirmed it still
// leads, with a read index at least its commit index.
#[test]
fn read_index_on_the_leader_waits_for_a_quorum_round() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    let write = cluster.propose_put("n1", "x", "1");
    cluster.deliver_all();
    let written_at = accepted_once(&cluster, "n1", &write).index.expect("index");

    let read = cluster.read("n1").expect("the leader takes reads");
    assert!(cluster.reads_for("n1", read).is_empty(), "no answer before a quorum confirms leadership");
    cluster.deliver_all();
    let answers = cluster.reads_for("n1", read);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let index = answers[0].result.result.clone().expect("a read point");
    assert!(index >= written_at, "the read index covers every completed write");
    assert!(answers[0].applied >= index, "answered once the replica applied the read index");
}

// ReadIndex: a leader deposed while cut off must not answer a read with its stale state. The write
// `x = new` completes on the new leader before the read is issued on the old one, so a
// linearizable read on n1 either fails or sees `new`.
#[test]
fn read_index_on_a_deposed_leader_never_returns_stale_data() {
    let mut cluster = Cluster::new(3, paper_config()); // no check-quorum: n1 keeps believing it leads
    cluster.elect("n1");
    cluster.settle();
    let old = cluster.propose_put("n1", "x", "old");
    cluster.settle();
    accepted_once(&cluster, "n1", &old);

    cluster.isolate("n1");
    cluster.elect("n2");
    let new = cluster.propose_put("n2", "x", "new");
    cluster.settle();
    let new_index = accepted_once(&cluster, "n2", &new).index.expect("index");
    assert_eq!(cluster.role("n1"), Role::Leader, "n1 does not know it was deposed");

    let read = cluster.read("n1").expect("n1 believes it leads and takes the read");
    cluster.run_for(Duration::from_secs(1));
    for answer in cluster.reads_for("n1", read) {
        assert!(answer.result.result.is_err(), "a cut-off leader answered a read: {answer:?}");
    }
    cluster.heal();
    let timeout = cluster.node("n1").config.timeout;
    cluster.run_for(timeout + Duration::from_secs(1));
    let answers = cluster.reads_for("n1", read);
    assert_eq!(answers.len(), 1, "a read is answered exactly once: {answers:?}");
    if let Ok(index) = &answers[0].result.result {
        assert!(*index >= new_index, "stale read index {index} < {new_index}");
        assert!(answers[0].applied >= new_index, "answered before applying x = new");
    }
}

// ReadIndex on a follower: it asks the leader for the read index, then waits until it has applied
// that index before answering.
#[test]
fn read_index_on_a_follower_is_answered_after_it_applies_the_leaders_index() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    cluster.cut_both("n1", "n2");
    let write = cluster.propose_put("n1", "x", "1");
    cluster.deliver_all();
    let written_at = accepted_once(&cluster, "n1", &write).index.expect("index");
    assert_eq!(cluster.value("n2", "x"), None, "n2 missed the write");

    cluster.heal();
    let read = cluster.read("n2").expect("a follower takes reads (forwarding on)");
    cluster.settle();
    let answers = cluster.reads_for("n2", read);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let index = answers[0].result.result.clone().expect("a read point");
    assert!(index >= written_at);
    assert!(answers[0].applied >= index, "the follower applied the read index before answering");
    assert_eq!(cluster.value("n2", "x").as_deref(), Some(&b"1"[..]));
}

// ---------------------------------------------------------------- lease reads

// Lease reads (opt-in, Raft thesis §6.4.1): within its lease the leader answers at once, without a
// round trip; a leader cut off stops answering before anyone else can be elected, so no read is
// ever answered by a leader after a newer one exists.
#[test]
fn lease_reads_are_served_locally_and_stop_before_a_new_leader_exists() {
    let mut config = default_config();
    config.lease_reads = true;
    let mut cluster = Cluster::new(3, config);
    cluster.elect("n1");
    cluster.settle();
    let write = cluster.propose_put("n1", "x", "old");
    cluster.settle();
    accepted_once(&cluster, "n1", &write);

    let in_flight_before = cluster.in_flight().len();
    let read = cluster.read("n1").expect("read");
    let answers = cluster.reads_for("n1", read);
    assert_eq!(answers.len(), 1, "answered from the lease, with no round trip");
    assert!(answers[0].result.result.is_ok());
    assert_eq!(cluster.in_flight().len(), in_flight_before, "a lease read sends nothing");

    cluster.isolate("n1");
    let step = Duration::from_millis(10);
    let mut new_leader_at = None;
    for _ in 0..500 {
        cluster.run_for(step);
        let _ = cluster.read("n1");
        if new_leader_at.is_none() && cluster.leaders().iter().any(|leader| leader.as_str() != "n1") {
            new_leader_at = Some(cluster.now);
        }
        if new_leader_at.is_some_and(|at| cluster.now > at + step * 10) {
            break;
        }
    }
    let new_leader_at = new_leader_at.expect("n2 or n3 was elected");
    for answer in &cluster.node("n1").reads {
        if answer.result.result.is_ok() {
            assert!(
                answer.at < new_leader_at,
                "n1 answered a lease read at {:?}, after a new leader was elected at {new_leader_at:?}",
                answer.at
            );
        }
    }
}

// Lease reads with slow links: the lease must start when the confirming heartbeat was *sent*
// (followers refuse votes for an election timeout after *receiving* it), not when the
// acknowledgements came back. Here acknowledgements take 200 ms to reach the leader while
// everything else takes 1 ms, and then the leader's outgoing links fail (acknowledgements already
// on their way still arrive): a lease counted from their arrival would outlive the followers'
// promise and let the cut-off leader answer reads after a new leader was elected.
#[test]
fn lease_reads_stay_safe_when_acknowledgements_are_slow() {
    let mut config = default_config();
    config.lease_reads = true;
    let mut cluster = Cluster::new(3, config);
    cluster.elect("n1");
    cluster.settle();
    let slow_acknowledgements = |packet: &Packet| {
        if packet.to.as_str() == "n1" {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(1)
        }
    };
    let step = Duration::from_millis(1);
    cluster.run_with_latency(Duration::from_secs(2), step, slow_acknowledgements, |_| false);
    assert_eq!(cluster.leaders(), vec![id("n1")], "slow links alone do not depose the leader");
    // Cut n1's outgoing links right after a heartbeat reached the followers: they refuse votes for
    // an election timeout from now, while acknowledgements of this and the previous heartbeat are
    // still on their way to n1.
    let heartbeat_delivered = |cluster: &mut Cluster| {
        let last_append = cluster.node("n1").sent.iter().rev().find(|record| is_append(&record.packet));
        last_append.is_some_and(|record| cluster.now == record.at + Duration::from_millis(1))
    };
    let cut = cluster.run_with_latency(Duration::from_secs(1), step, slow_acknowledgements, |cluster| {
        let now = cluster.now;
        heartbeat_delivered(cluster) && cluster.raft("n1").lease_valid(now)
    });
    assert!(cut, "precondition: a heartbeat reached the followers while n1 held a lease");

    cluster.cut("n1", "n2");
    cluster.cut("n1", "n3");
    let isolated_at = cluster.now;
    let mut new_leader_at: Option<Instant> = None;
    cluster.run_with_latency(Duration::from_secs(3), step, slow_acknowledgements, |cluster| {
        if cluster.now.as_millis() % 5 == 0 {
            let _ = cluster.read("n1");
        }
        if new_leader_at.is_none() && cluster.leaders().iter().any(|leader| leader.as_str() != "n1") {
            new_leader_at = Some(cluster.now);
        }
        false
    });
    let new_leader_at = new_leader_at.expect("n2 or n3 was elected");
    let answered: Vec<&ReadRecord> =
        cluster.node("n1").reads.iter().filter(|record| record.result.result.is_ok()).collect();
    assert!(
        answered.iter().any(|record| record.at > isolated_at),
        "precondition: the cut-off leader still served lease reads for a while"
    );
    for record in answered {
        assert!(
            record.at < new_leader_at,
            "n1 answered a lease read at {:?}, after a new leader was elected at {new_leader_at:?}",
            record.at
        );
    }
}

// ---------------------------------------------------------------- leadership transfer

// Leadership transfer (Raft thesis §3.10): the leader sends TimeoutNow to an up-to-date target,
// which campaigns at once (past the other voters' leader lease) and wins the next term.
#[test]
fn leadership_transfer_hands_leadership_to_the_target() {
    let mut cluster = Cluster::new(3, default_config());
    let term = cluster.elect("n1");
    cluster.settle();
    cluster.transfer_leadership("n1", "n2").expect("transfer accepted");
    cluster.deliver_all();
    assert!(
        cluster.node("n1").sent.iter().any(|record| record.packet.to.as_str() == "n2"
            && matches!(record.packet.message, RaftMessage::TimeoutNow { .. })),
        "the leader told the target to campaign"
    );
    assert_eq!(cluster.role("n2"), Role::Leader);
    assert_eq!(cluster.term("n2"), Term(term.0 + 1));
    assert_eq!(cluster.role("n1"), Role::Follower);
    assert_eq!(cluster.raft("n1").leader(), Some(id("n2")));
    let write = cluster.propose_put("n2", "x", "after transfer");
    cluster.settle();
    accepted_once(&cluster, "n2", &write);
}

// Leadership transfer to a follower that lags: the leader first brings its log up to date, and
// only then sends TimeoutNow (or the target could not win, or would lose committed entries).
#[test]
fn leadership_transfer_catches_the_target_up_before_handing_over() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    cluster.cut_both("n1", "n3");
    let writes: Vec<ProposalId> = (0..3).map(|i| cluster.propose_put("n1", &format!("k{i}"), "v")).collect();
    cluster.deliver_all();
    assert!(cluster.last_index("n3") < cluster.last_index("n1"), "n3 lags");

    cluster.transfer_leadership("n1", "n3").expect("transfer accepted");
    cluster.heal();
    let interval = heartbeat_interval(&cluster);
    let mut timeout_now_sent = false;
    for _ in 0..20 {
        cluster.set_time(cluster.now + interval);
        for node in ["n1", "n2", "n3"] {
            cluster.tick(node);
        }
        while let Some(packet) = cluster.network.pop_front() {
            if matches!(packet.message, RaftMessage::TimeoutNow { .. }) {
                assert_eq!(packet.to.as_str(), "n3");
                assert_eq!(
                    cluster.log("n3"),
                    cluster.log("n1"),
                    "TimeoutNow sent before the target's log caught up"
                );
                timeout_now_sent = true;
            }
            cluster.deliver(packet);
        }
        if cluster.role("n3") == Role::Leader {
            break;
        }
    }
    assert!(timeout_now_sent);
    assert_eq!(cluster.role("n3"), Role::Leader);
    cluster.settle();
    for write in &writes {
        accepted_once(&cluster, "n1", write);
    }
    for i in 0..3 {
        assert_eq!(cluster.value("n3", &format!("k{i}")).as_deref(), Some(&b"v"[..]));
    }
}

// ---------------------------------------------------------------- learners and membership

// Learners receive the log but do not vote or count towards a quorum; once caught up they can be
// promoted to voters.
#[test]
fn learners_catch_up_do_not_vote_or_count_and_can_be_promoted() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    for i in 0..5 {
        cluster.propose_put("n1", &format!("k{i}"), "v");
    }
    cluster.settle();

    let info = start_joiner(&mut cluster, "n4", default_config());
    let add = cluster.change_membership("n1", MembershipChange::AddLearner(info)).expect("change accepted");
    cluster.settle();
    cluster.settle();
    accepted_once(&cluster, "n1", &add);
    for node in ["n1", "n2", "n3", "n4"] {
        assert_eq!(member_role(&cluster, node, "n4"), Some(MemberRole::Learner), "{node}'s view of n4");
    }
    assert_eq!(cluster.role("n4"), Role::Learner);
    assert_eq!(cluster.log("n4").last(), cluster.log("n1").last(), "the learner caught up");
    for i in 0..5 {
        assert_eq!(cluster.value("n4", &format!("k{i}")).as_deref(), Some(&b"v"[..]), "n4 applied k{i}");
    }

    // A learner's copy does not count: n1 and n4 are not a quorum of the voters n1, n2, n3.
    let commit = cluster.commit("n1");
    cluster.cut_both("n1", "n2");
    cluster.cut_both("n1", "n3");
    let write = cluster.propose_put("n1", "only-learner", "v");
    cluster.deliver_all();
    assert_eq!(cluster.last_index("n4"), cluster.last_index("n1"), "the learner stored the entry");
    assert_eq!(cluster.commit("n1"), commit, "a learner's acknowledgement does not commit");
    cluster.heal();
    cluster.settle();
    accepted_once(&cluster, "n1", &write);

    // A learner never campaigns and never votes, even when the leader is gone.
    cluster.crash("n1");
    let elected = cluster.run_until(election_timeout_max(&cluster) * 10, |cluster| {
        cluster.leaders().iter().any(|leader| leader.as_str() != "n1")
    });
    assert!(elected, "n2 or n3 took over");
    assert_eq!(sent_vote_requests(&cluster, "n4", true) + sent_vote_requests(&cluster, "n4", false), 0);
    assert!(
        !cluster
            .node("n4")
            .sent
            .iter()
            .any(|record| matches!(record.packet.message, RaftMessage::VoteResponse { granted: true, .. })),
        "a learner granted a vote"
    );
    assert_ne!(cluster.role("n4"), Role::Leader);
    cluster.restart("n1");
    cluster.settle();

    // Promotion.
    let leader = cluster.leaders()[0].clone();
    let promote =
        cluster.change_membership(leader.as_str(), MembershipChange::Promote(id("n4"))).expect("promote");
    cluster.settle();
    cluster.settle();
    accepted_once(&cluster, leader.as_str(), &promote);
    for node in ["n1", "n2", "n3", "n4"] {
        assert_eq!(member_role(&cluster, node, "n4"), Some(MemberRole::Voter), "{node}'s view of n4");
    }
    assert_ne!(cluster.role("n4"), Role::Learner);
    let write = cluster.propose_put(leader.as_str(), "four-voters", "v");
    cluster.settle();
    assert_eq!(accepted_once(&cluster, leader.as_str(), &write).quorum_required, 3, "3 of 4 voters");
}

// Adding a voter: the node joins (as a learner first), is promoted once caught up, and its address
// and metadata are replicated with the membership.
#[test]
fn membership_add_a_voter_with_its_metadata() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    cluster.propose_put("n1", "before", "v");
    cluster.settle();
    let info = start_joiner(&mut cluster, "n4", default_config()).with_metadata("region", "us-west");
    let add = cluster.change_membership("n1", MembershipChange::AddVoter(info)).expect("change accepted");
    let added = cluster.run_until(Duration::from_secs(10), |cluster| {
        ["n1", "n2", "n3", "n4"]
            .iter()
            .all(|node| member_role(cluster, node, "n4") == Some(MemberRole::Voter))
    });
    assert!(added, "n4 became a voter everywhere");
    cluster.settle();
    accepted_once(&cluster, "n1", &add);
    for node in ["n1", "n2", "n3", "n4"] {
        let member = cluster.raft(node).membership().members.get("n4").cloned().expect("n4 is a member");
        assert_eq!(member.info.address, address_of("n4"), "{node}");
        assert_eq!(member.info.metadata.get("region").map(String::as_str), Some("us-west"), "{node}");
    }
    assert_eq!(cluster.value("n4", "before").as_deref(), Some(&b"v"[..]));
    // It joined as a learner first and was promoted once caught up.
    let roles_of_n4: Vec<MemberRole> = cluster
        .log("n1")
        .iter()
        .filter_map(|entry| match &entry.payload {
            EntryPayload::Membership(membership) => membership.members.get("n4").map(|member| member.role),
            _ => None,
        })
        .collect();
    assert_eq!(roles_of_n4, vec![MemberRole::Learner, MemberRole::Voter], "n4's roles along the log");
    // Four voters: two are no longer a quorum.
    cluster.cut_both("n1", "n3");
    cluster.cut_both("n1", "n4");
    let commit = cluster.commit("n1");
    cluster.propose_put("n1", "two-of-four", "v");
    cluster.deliver_all();
    assert_eq!(cluster.commit("n1"), commit, "n1 and n2 are not a quorum of four");
}

// Removing a follower: once the change commits the cluster's quorum is counted without it.
#[test]
fn membership_remove_a_follower() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    let remove =
        cluster.change_membership("n1", MembershipChange::Remove(id("n3"))).expect("change accepted");
    cluster.settle();
    accepted_once(&cluster, "n1", &remove);
    for node in ["n1", "n2"] {
        assert!(!cluster.raft(node).membership().contains(&id("n3")), "{node} still lists n3");
    }
    // The removed node keeps running and stops hearing heartbeats: it must not disrupt the
    // cluster (Raft thesis §4.2.3).
    let term = cluster.term("n1");
    cluster.run_for(election_timeout_max(&cluster) * 10);
    assert_eq!(cluster.leaders(), vec![id("n1")], "the removed node did not depose the leader");
    assert_eq!(cluster.term("n1"), term);
    assert_eq!(cluster.term("n2"), term);
    cluster.crash("n3");
    let write = cluster.propose_put("n1", "x", "1");
    cluster.settle();
    let result = accepted_once(&cluster, "n1", &write);
    assert_eq!(result.quorum_required, 2, "two voters left, both needed");
    cluster.run_for(election_timeout_max(&cluster) * 5);
    assert_eq!(cluster.leaders(), vec![id("n1")], "the removed node is not missed");
}

// Removing the leader: it commits the change, then steps down; the remaining voters elect a
// leader among themselves and the removed node never leads again.
#[test]
fn membership_remove_the_leader() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    let remove =
        cluster.change_membership("n1", MembershipChange::Remove(id("n1"))).expect("change accepted");
    let replaced = cluster.run_until(election_timeout_max(&cluster) * 10, |cluster| {
        cluster.leaders().iter().any(|leader| leader.as_str() != "n1")
    });
    assert!(replaced, "n2 or n3 took over");
    accepted_once(&cluster, "n1", &remove);
    assert_ne!(cluster.role("n1"), Role::Leader, "the removed leader stepped down");
    let leader = cluster.leaders().into_iter().find(|leader| leader.as_str() != "n1").expect("new leader");
    for node in ["n2", "n3"] {
        assert!(!cluster.raft(node).membership().contains(&id("n1")), "{node} still lists n1");
    }
    let write = cluster.propose_put(leader.as_str(), "x", "1");
    cluster.settle();
    assert_eq!(accepted_once(&cluster, leader.as_str(), &write).quorum_required, 2);
    cluster.run_for(election_timeout_max(&cluster) * 10);
    assert_ne!(cluster.role("n1"), Role::Leader, "the removed node never leads again");
    assert_eq!(cluster.leaders(), vec![leader]);
}

// One-server-at-a-time changes need a fix (Ongaro, raft-dev 2015): a new leader must commit an
// entry of its own term before it appends a membership change.
#[test]
fn membership_a_new_leader_commits_an_entry_of_its_term_before_changing_membership() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.fire_timeout("n1");
    cluster.deliver_all_where(is_vote);
    assert_eq!(cluster.role("n1"), Role::Leader);
    let noop_index = cluster.last_index("n1");
    assert!(cluster.commit("n1") < noop_index, "the no-op is not committed yet");

    let info = start_joiner(&mut cluster, "n4", default_config());
    let change = cluster.change_membership("n1", MembershipChange::AddLearner(info.clone()));
    let has_membership_entry = |cluster: &Cluster| {
        cluster.log("n1").iter().any(|entry| matches!(entry.payload, EntryPayload::Membership(_)))
    };
    assert!(!has_membership_entry(&cluster), "a membership entry was appended before the no-op committed");
    cluster.settle();
    cluster.settle();
    let change = match change {
        Ok(change) => change,
        // Refused while the no-op was pending: it must succeed now.
        Err(_) => {
            let change = cluster.change_membership("n1", MembershipChange::AddLearner(info)).expect("retry");
            cluster.settle();
            change
        }
    };
    accepted_once(&cluster, "n1", &change);
    let membership_index = cluster
        .log("n1")
        .iter()
        .find(|entry| matches!(entry.payload, EntryPayload::Membership(_)))
        .map(|entry| entry.index)
        .expect("the membership entry");
    assert!(membership_index > noop_index);
}

// ---------------------------------------------------------------- snapshots

// InstallSnapshot: a follower behind the leader's compacted log gets the snapshot in bounded
// chunks; when a chunk is lost the transfer resumes from it, not from the start.
#[test]
fn snapshot_install_in_chunks_resumes_after_a_lost_chunk() {
    let mut config = default_config();
    config.snapshot_interval = 5;
    config.snapshot_chunk_bytes = 64;
    let chunk_max = config.snapshot_chunk_bytes as usize;
    let mut cluster = Cluster::new(3, config);
    cluster.elect("n1");
    cluster.settle();
    cluster.isolate("n3");
    for i in 0..30 {
        cluster.propose_put("n1", &format!("key-{i:02}"), &format!("value-{i:02}-padding-padding"));
        cluster.deliver_all();
    }
    cluster.settle();
    let leader_snapshot = cluster.state("n1").snapshot_index;
    assert!(
        leader_snapshot > cluster.last_index("n3").next(),
        "precondition: the leader compacted past n3's log (snapshot at {leader_snapshot})"
    );

    // Lose the second chunk of the transfer, once.
    let lost_offset = std::rc::Rc::new(std::cell::Cell::new(None));
    let lost_record = lost_offset.clone();
    cluster.drop_rule = Some(Box::new(move |packet: &Packet| {
        if let RaftMessage::InstallSnapshot { offset, .. } = packet.message {
            if offset > 0 && lost_record.get().is_none() {
                lost_record.set(Some(offset));
                return true;
            }
        }
        false
    }));
    cluster.heal();
    let installed = cluster.run_until(Duration::from_secs(20), |cluster| {
        cluster.node("n3").storage.state().snapshot.is_some() && cluster.commit("n3") == cluster.commit("n1")
    });
    assert!(installed, "n3 installed the snapshot and caught up");
    let lost = lost_offset.get().expect("a chunk was lost");

    let chunks: Vec<(u64, usize, LogIndex)> = cluster
        .node("n1")
        .sent
        .iter()
        .filter(|record| record.packet.to.as_str() == "n3")
        .filter_map(|record| match &record.packet.message {
            RaftMessage::InstallSnapshot { offset, data, meta, .. } => {
                Some((*offset, data.len(), meta.last_index))
            }
            _ => None,
        })
        .collect();
    assert!(chunks.len() >= 3, "the snapshot went in several chunks: {chunks:?}");
    assert!(chunks.iter().all(|(_, length, _)| *length <= chunk_max), "chunks are bounded: {chunks:?}");
    let lost_at = chunks.iter().position(|(offset, ..)| *offset == lost).expect("the lost chunk was sent");
    let snapshot_index = chunks[lost_at].2;
    assert!(
        !chunks[lost_at + 1..].iter().any(|(offset, _, index)| *offset == 0 && *index == snapshot_index),
        "the transfer restarted from offset 0 after losing the chunk at {lost}: {chunks:?}"
    );
    assert!(
        chunks[lost_at + 1..].iter().any(|(offset, _, index)| *offset == lost && *index == snapshot_index),
        "the lost chunk at {lost} was sent again: {chunks:?}"
    );
    for i in 0..30 {
        let key = format!("key-{i:02}");
        assert_eq!(cluster.value("n3", &key), cluster.value("n1", &key), "{key}");
        assert!(cluster.value("n3", &key).is_some(), "{key}");
    }
}

// A restarted node restores its state machine from its snapshot plus the log tail.
#[test]
fn snapshot_a_restarted_node_restores_from_its_snapshot_and_log_tail() {
    let mut config = default_config();
    config.snapshot_interval = 5;
    let mut cluster = Cluster::new(3, config);
    cluster.elect("n1");
    cluster.settle();
    for i in 0..12 {
        cluster.propose_put("n1", &format!("k{i}"), "v");
        cluster.deliver_all();
    }
    cluster.settle();
    let stored = cluster.node("n2").storage.state().clone();
    let snapshot = stored.snapshot.clone().expect("n2 took a snapshot");
    assert!(snapshot.meta.last_index >= LogIndex(10));
    assert!(!stored.entries.is_empty(), "a log tail follows the snapshot");
    let last_index = cluster.last_index("n2");

    cluster.crash("n2");
    cluster.restart("n2");
    assert!(cluster.raft("n2").replica().applied() >= snapshot.meta.last_index, "restored from the snapshot");
    assert_eq!(cluster.last_index("n2"), last_index, "the log tail survived");
    assert_eq!(cluster.state("n2").snapshot_index, snapshot.meta.last_index);
    cluster.settle();
    for i in 0..12 {
        assert_eq!(cluster.value("n2", &format!("k{i}")).as_deref(), Some(&b"v"[..]), "k{i}");
    }
}

// A restarted node applies what it had saved as committed before it hears from any leader (with
// no snapshot, a long log is replayed while the election is still under way, not after it).
#[test]
fn a_restarted_node_applies_its_saved_commit_index_before_hearing_from_a_leader() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    for i in 0..10 {
        cluster.propose_put("n1", &format!("k{i}"), "v");
        cluster.deliver_all();
    }
    cluster.settle();
    let saved = cluster.node("n2").storage.state().hard_state.commit;
    // The last commit update travels without entries and is not saved; everything before it is.
    assert!(saved >= LogIndex(10), "n2 saved its commit index with its entries: {saved}");
    assert!(saved <= cluster.commit("n2"));

    cluster.crash("n2");
    cluster.isolate("n2");
    cluster.restart("n2");
    assert_eq!(cluster.commit("n2"), saved, "the saved commit index is where the restart starts");
    assert_eq!(cluster.raft("n2").replica().applied(), saved, "applied on the first round, with no leader");
    assert_eq!(cluster.raft("n2").leader(), None);
    let applied_values = (0..10).filter(|i| cluster.value("n2", &format!("k{i}")).is_some()).count() as u64;
    // Index 1 is the leader's no-op; each later index one write.
    assert_eq!(applied_values, saved.0 - 1, "every write up to the saved index is in the state machine");
}

// ---------------------------------------------------------------- rejoining within a term

// A follower that lost contact and comes back while the leader and the term are unchanged (with
// pre-vote it never bumped its term): the leader's replication to it must resume, even though
// messages of a full in-flight window were lost.
#[test]
fn a_node_rejoining_within_the_same_term_catches_up() {
    let mut config = default_config();
    config.max_inflight_messages = 2;
    config.max_entries_per_message = 1;
    let mut cluster = Cluster::new(3, config);
    let term = cluster.elect("n1");
    cluster.settle();
    cluster.isolate("n3");
    for i in 0..10 {
        cluster.propose_put("n1", &format!("k{i}"), "v");
        cluster.deliver_all();
    }
    cluster.run_for(heartbeat_interval(&cluster) * 2); // shorter than an election timeout
    cluster.heal();
    cluster.settle();
    cluster.settle();
    assert_eq!(cluster.log("n3"), cluster.log("n1"), "n3 caught up");
    assert_eq!(cluster.commit("n3"), cluster.commit("n1"));
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.term(node), term, "{node}: still the same term");
    }

    // Crashed and restarted within the same term.
    cluster.crash("n3");
    for i in 10..15 {
        cluster.propose_put("n1", &format!("k{i}"), "v");
        cluster.deliver_all();
    }
    cluster.restart("n3");
    cluster.settle();
    cluster.settle();
    assert_eq!(cluster.log("n3"), cluster.log("n1"), "n3 caught up after its restart");
    assert_eq!(cluster.value("n3", "k14").as_deref(), Some(&b"v"[..]));
    assert_eq!(cluster.leaders(), vec![id("n1")]);
    assert_eq!(cluster.term("n1"), term);
}

// ---------------------------------------------------------------- persistence and restarts

// The driver contract: a granted vote and an append acknowledgement are only ever in
// `persisted_messages`, together with the write they promise in `persist`.
#[test]
fn persistence_a_vote_grant_and_an_append_ack_wait_for_their_writes() {
    let mut cluster = Cluster::new(3, paper_config());
    let deadline = cluster.raft("n1").poll_timeout().expect("timer");
    cluster.set_time(deadline);
    let now = cluster.now;
    cluster.raft_mut("n1").handle_timeout(now);
    let ready = cluster.take_ready("n1");
    assert_eq!(
        ready.persist.hard_state.as_ref().map(|hard_state| (hard_state.term, hard_state.voted_for.clone())),
        Some((Term(1), Some(id("n1")))),
        "the candidate persists its term and its vote for itself"
    );
    cluster.carry_out(&id("n1"), ready);
    let request = cluster.take_network().into_iter().find(|p| p.to.as_str() == "n2").expect("vote request");

    cluster.raft_mut("n2").handle_message(now, id("n1"), Message::Raft(request.message)).expect("valid");
    let ready = cluster.take_ready("n2");
    assert!(
        !ready.messages.iter().any(|m| matches!(m.message, Message::Raft(RaftMessage::VoteResponse { .. }))),
        "a vote answer in `messages` (sent before persisting): {:?}",
        ready.messages
    );
    assert!(ready.persisted_messages.iter().any(|m| m.to.as_str() == "n1"
        && matches!(
            m.message,
            Message::Raft(RaftMessage::VoteResponse { granted: true, term: Term(1), .. })
        )));
    assert_eq!(
        ready.persist.hard_state.as_ref().map(|hard_state| (hard_state.term, hard_state.voted_for.clone())),
        Some((Term(1), Some(id("n1")))),
        "the vote is written in the same batch"
    );
    cluster.carry_out(&id("n2"), ready);
    cluster.deliver_all();
    assert_eq!(cluster.role("n1"), Role::Leader);
    cluster.settle();

    cluster.propose_put("n1", "x", "1");
    let append = cluster
        .take_network()
        .into_iter()
        .find(|p| p.to.as_str() == "n2" && is_append(p))
        .expect("append to n2");
    let last = match &append.message {
        RaftMessage::Append { entries, .. } => entries.last().cloned().expect("one entry"),
        _ => unreachable!(),
    };
    let now = cluster.now;
    cluster.raft_mut("n2").handle_message(now, id("n1"), Message::Raft(append.message)).expect("valid");
    let ready = cluster.take_ready("n2");
    assert!(
        !ready
            .messages
            .iter()
            .any(|m| matches!(m.message, Message::Raft(RaftMessage::AppendResponse { .. }))),
        "an append answer in `messages` (sent before persisting): {:?}",
        ready.messages
    );
    assert!(ready.persisted_messages.iter().any(|m| matches!(&m.message,
        Message::Raft(RaftMessage::AppendResponse { success: true, match_index, .. })
            if *match_index == last.index)));
    assert_eq!(ready.persist.entries.last(), Some(&last), "the entry is written in the same batch");
    cluster.carry_out(&id("n2"), ready);
    cluster.settle();

    // Over the whole run, every vote grant and append acknowledgement went in `persisted_messages`.
    for (node_id, node) in &cluster.nodes {
        for record in &node.sent {
            if matches!(
                record.packet.message,
                RaftMessage::VoteResponse { granted: true, pre_vote: false, .. }
                    | RaftMessage::AppendResponse { success: true, .. }
            ) {
                assert!(record.after_persist, "{node_id} sent a grant or an ack in `messages`: {record:?}");
            }
        }
    }
}

// Restart recovery: term, vote and log come back from storage, and the recovered vote still
// binds (no second vote in the same term after a restart).
#[test]
fn restart_recovers_term_vote_and_log_from_storage() {
    check_restart_recovery(None);
}

/// The body of the test above; `bug` switches a broken behaviour on (see `mutants.rs`).
pub(crate) fn check_restart_recovery(bug: Option<Bug>) {
    let mut cluster = Cluster::new(3, paper_config());
    if let Some(bug) = bug {
        cluster.set_bug(bug);
    }
    let term = cluster.elect("n1");
    cluster.settle();
    for i in 0..3 {
        cluster.propose_put("n1", &format!("k{i}"), "v");
    }
    cluster.settle();
    let before: Vec<(Term, LogIndex, HardState)> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| (cluster.term(n), cluster.last_index(n), cluster.hard_state(n)))
        .collect();
    assert_eq!(before[1].2.voted_for, Some(id("n1")), "n2 voted for n1 in term {term}");

    for node in ["n1", "n2", "n3"] {
        cluster.crash(node);
    }
    cluster.drop_network();
    for node in ["n1", "n2", "n3"] {
        cluster.restart(node);
    }
    for (position, node) in ["n1", "n2", "n3"].iter().enumerate() {
        assert_eq!(cluster.term(node), before[position].0, "{node}: term survives");
        assert_eq!(cluster.last_index(node), before[position].1, "{node}: log survives");
        assert_eq!(cluster.role(node), Role::Follower, "{node}: restarts as a follower");
    }
    // n2's vote for n1 in `term` survived: a rival asking in the same term is refused.
    let answers = cluster.exchange(
        "n3",
        "n2",
        RaftMessage::VoteRequest {
            term,
            last_log_index: LogIndex(1000),
            last_log_term: term,
            pre_vote: false,
            transfer: false,
        },
    );
    assert!(
        answers.iter().all(|p| !matches!(p.message, RaftMessage::VoteResponse { granted: true, .. })),
        "n2 voted twice in term {term}: {answers:?}"
    );
    cluster.elect("n2");
    cluster.settle();
    for node in ["n1", "n2", "n3"] {
        for i in 0..3 {
            assert_eq!(cluster.value(node, &format!("k{i}")).as_deref(), Some(&b"v"[..]), "{node}: k{i}");
        }
    }
}

// ---------------------------------------------------------------- proposals

// Exactly one result per accepted proposal: committed ones, ones that time out on a cut-off
// leader (and are later overwritten), and ones forwarded to an unreachable leader.
#[test]
fn proposals_get_exactly_one_result_each_including_timeouts() {
    let mut config = paper_config(); // no check-quorum: the cut-off leader keeps its proposals
    config.timeout = Duration::from_millis(1000);
    let mut cluster = Cluster::new(3, config);
    cluster.elect("n1");
    cluster.settle();
    let mut made: Vec<ProposalId> = Vec::new();
    made.push(cluster.propose_put("n1", "a", "1"));
    cluster.settle();

    cluster.isolate("n1");
    let stranded = cluster.propose_put("n1", "b", "stranded");
    made.push(stranded.clone());
    // A proposal forwarded by n2 to n1, which cannot answer.
    let forwarded = cluster.propose("n2", put("c", "forwarded")).expect("forwarded");
    made.push(forwarded.clone());
    cluster.run_for(Duration::from_millis(1500));
    let stranded_results = cluster.results_for("n1", &stranded);
    assert_eq!(stranded_results.len(), 1, "the stranded proposal timed out: {stranded_results:?}");
    assert_eq!(stranded_results[0].error, Some(ProposalError::Timeout));

    // n2 or n3 leads now; n1 rejoins and its stranded entry is overwritten: no second result.
    cluster
        .run_until(Duration::from_secs(10), |cluster| cluster.leaders().iter().any(|l| l.as_str() != "n1"));
    cluster.heal();
    cluster.run_for(Duration::from_secs(2));
    let leader = cluster.leaders().into_iter().find(|l| l.as_str() != "n1").expect("a new leader");
    for i in 0..3 {
        made.push(cluster.propose_put(leader.as_str(), &format!("later{i}"), "v"));
    }
    cluster.run_for(Duration::from_secs(3));
    for proposal in &made {
        let origin = proposal.origin.as_str();
        let results = cluster.results_for(origin, proposal);
        assert_eq!(results.len(), 1, "{proposal}: {results:?}");
    }
    assert_eq!(cluster.value("n2", "b"), None, "the stranded write never committed");
    accepted_once(&cluster, "n1", &made[0]);
}

// Forwarding: a proposal made on a follower goes to the leader and its one result comes back to
// the node it was made on.
#[test]
fn forwarding_a_proposal_made_on_a_follower_is_committed_by_the_leader() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    let proposal = cluster.propose("n2", put("x", "from n2")).expect("forwarded");
    assert!(
        cluster.in_flight().iter().any(|p| p.from.as_str() == "n2"
            && p.to.as_str() == "n1"
            && matches!(&p.message,
                RaftMessage::ForwardProposal { proposal: forwarded, .. } if forwarded.id == proposal)),
        "the follower forwards the proposal to the leader"
    );
    cluster.settle();
    accepted_once(&cluster, "n2", &proposal);
    for node in ["n1", "n2", "n3"] {
        assert_eq!(cluster.value(node, "x").as_deref(), Some(&b"from n2"[..]), "{node}");
    }
}

// With forwarding off, a follower refuses with `NotLeader`, naming the leader and its address (or
// no one when it knows no leader).
#[test]
fn forwarding_off_a_follower_refuses_with_not_leader() {
    let mut config = default_config();
    config.forward_to_leader = false;
    let mut cluster = Cluster::new(3, config);
    match cluster.propose("n1", put("x", "1")) {
        Err(ProposalError::NotLeader { leader: None }) => {}
        other => panic!("no leader yet: expected NotLeader without a leader, got {other:?}"),
    }
    cluster.elect("n1");
    cluster.settle();
    for outcome in [cluster.propose("n2", put("x", "1")).map(|_| ()), cluster.read("n2").map(|_| ())] {
        match outcome {
            Err(ProposalError::NotLeader { leader: Some(leader) }) => {
                assert_eq!(leader.id, id("n1"));
                assert_eq!(leader.address, address_of("n1"));
            }
            other => panic!("expected NotLeader naming n1, got {other:?}"),
        }
    }
    assert!(cluster.in_flight().is_empty(), "nothing was forwarded");
    assert!(cluster.node("n2").results.is_empty(), "a refused proposal has no later result");
}

// ---------------------------------------------------------------- events

// Observability (issue 3): `vote:requested`, `vote:granted`, `leader:elected`, `log:appended`,
// `consensus:accepted` and `state:changed` are reported where they happen.
#[test]
fn events_report_votes_election_appends_acceptance_and_state_changes() {
    let mut cluster = Cluster::new(3, default_config());
    let term = cluster.elect("n1");
    cluster.settle();
    assert!(cluster.node("n1").events.contains(&Event::LeaderElected { leader: id("n1"), term }));
    for voter in ["n2", "n3"] {
        let events = &cluster.node(voter).events;
        assert!(events.contains(&Event::VoteRequested { from: id("n1"), term }), "{voter}: {events:?}");
        assert!(events.contains(&Event::VoteGranted { to: id("n1"), term }), "{voter}: {events:?}");
    }

    let proposal = cluster.propose_put("n1", "x", "1");
    cluster.settle();
    let result = accepted_once(&cluster, "n1", &proposal);
    let index = result.index.expect("index");
    assert!(
        cluster.node("n1").events.iter().any(|event| matches!(event,
            Event::ConsensusAccepted(accepted) if accepted.proposal_id == proposal && accepted.accepted)),
        "consensus:accepted on the node the proposal was made on"
    );
    for node in ["n1", "n2", "n3"] {
        let events = &cluster.node(node).events;
        assert!(
            events.contains(&Event::LogAppended { index, term, key: Some("x".to_string()) }),
            "{node}: log:appended for x at {index}: {events:?}"
        );
        assert!(
            events.iter().any(|event| matches!(event,
                Event::StateChanged { key, new_value: Some(value), old_value: None, version: 1 }
                    if key == "x" && value.as_ref() == b"1")),
            "{node}: state:changed for x: {events:?}"
        );
    }
}

// ---------------------------------------------------------------- throughput

// Batching (issue 3, `batch_updates`): proposals that arrive together go to a follower in one
// append.
#[test]
fn batching_proposals_made_together_travel_in_one_append() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    let now = cluster.now;
    let mut proposals = Vec::new();
    for i in 0..5 {
        let proposal_id = cluster.next_proposal_id("n1");
        let proposal =
            Proposal { id: proposal_id.clone(), session: None, command: put(&format!("k{i}"), "v") };
        cluster.raft_mut("n1").propose(now, proposal).expect("the leader takes proposals");
        proposals.push(proposal_id);
    }
    cluster.process(&id("n1"));
    for follower in ["n2", "n3"] {
        let appends: Vec<usize> = cluster
            .in_flight()
            .iter()
            .filter(|packet| packet.to.as_str() == follower)
            .filter_map(|packet| match &packet.message {
                RaftMessage::Append { entries, .. } if !entries.is_empty() => Some(entries.len()),
                _ => None,
            })
            .collect();
        assert_eq!(appends, vec![5], "{follower}: one append carrying the five entries");
    }
    cluster.settle();
    for proposal in &proposals {
        accepted_once(&cluster, "n1", proposal);
    }
}

// Flow control (issue 3): replication to a follower is pipelined, but at most
// `max_inflight_messages` appends are outstanding; the rest waits for acknowledgements.
#[test]
fn flow_control_in_flight_appends_to_a_follower_are_bounded() {
    let mut config = default_config();
    config.max_inflight_messages = 2;
    config.max_entries_per_message = 1;
    let mut cluster = Cluster::new(3, config);
    cluster.elect("n1");
    cluster.settle();
    for i in 0..10 {
        cluster.propose_put("n1", &format!("k{i}"), "v");
    }
    let carrying_entries = |cluster: &Cluster, follower: &str| {
        cluster
            .in_flight()
            .iter()
            .filter(|packet| packet.to.as_str() == follower)
            .filter(|packet| {
                matches!(&packet.message, RaftMessage::Append { entries, .. } if !entries.is_empty())
            })
            .count()
    };
    for follower in ["n2", "n3"] {
        assert_eq!(carrying_entries(&cluster, follower), 2, "{follower}: the window is full and no more");
    }
    cluster.settle();
    cluster.settle();
    assert_eq!(cluster.commit("n2"), cluster.last_index("n1"), "acknowledgements reopen the window");
    assert_eq!(cluster.log("n3"), cluster.log("n1"));
}

// Commit updates: once an entry commits, the leader tells the followers at once with an append
// without entries. Its answer would tell the leader nothing new (the entries' own answer carried
// the match index, and no new read round was started), so followers apply it without answering;
// heartbeats, which start a new round, are still answered.
#[test]
fn commit_updates_are_applied_by_followers_without_an_answer() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    let write = cluster.propose_put("n1", "x", "1");
    // The entries, and their answers: the leader commits and sends the commit updates.
    for _ in 0..2 {
        for packet in cluster.take_network() {
            cluster.deliver(packet);
        }
    }
    accepted_once(&cluster, "n1", &write);
    let updates = cluster.take_network();
    let commit = cluster.commit("n1");
    assert_eq!(updates.len(), 2, "one commit update per follower: {updates:?}");
    for update in &updates {
        assert!(
            matches!(&update.message, RaftMessage::Append { entries, leader_commit, .. }
                if entries.is_empty() && *leader_commit == commit),
            "{update:?}"
        );
    }
    for update in updates {
        cluster.deliver(update);
    }
    assert!(cluster.in_flight().is_empty(), "no answer to a commit update: {:?}", cluster.in_flight());
    for follower in ["n2", "n3"] {
        assert_eq!(cluster.commit(follower), commit, "{follower} learned the commit index");
        assert_eq!(cluster.value(follower, "x").as_deref(), Some(&b"1"[..]), "{follower} applied");
    }
    // A heartbeat starts a new round: both followers answer it.
    let interval = heartbeat_interval(&cluster);
    cluster.set_time(cluster.now + interval);
    cluster.tick("n1");
    let heartbeats = cluster.take_network();
    assert_eq!(heartbeats.len(), 2, "{heartbeats:?}");
    for heartbeat in heartbeats {
        cluster.deliver(heartbeat);
    }
    let answers = cluster.take_network();
    assert_eq!(answers.len(), 2, "every heartbeat is answered: {answers:?}");
    assert!(answers.iter().all(|packet| matches!(packet.message, RaftMessage::AppendResponse { .. })));
}

// A follower's answer to the entries is lost; the commit update it then gets is not answered
// (see above), so the leader learns the follower's match index from the next heartbeat, within one
// heartbeat interval, and its in-flight window reopens.
#[test]
fn a_lost_answer_to_the_entries_is_repaired_by_the_next_heartbeat() {
    let mut cluster = Cluster::new(3, default_config());
    cluster.elect("n1");
    cluster.settle();
    let write = cluster.propose_put("n1", "x", "1");
    for append in cluster.take_network() {
        cluster.deliver(append);
    }
    for answer in cluster.take_network() {
        if answer.from.as_str() == "n2" {
            cluster.deliver(answer);
        }
    }
    accepted_once(&cluster, "n1", &write);
    let commit = cluster.commit("n1");
    for update in cluster.take_network() {
        cluster.deliver(update);
    }
    assert!(cluster.in_flight().is_empty(), "{:?}", cluster.in_flight());
    assert_eq!(cluster.commit("n3"), commit, "n3 applied the commit update");
    let progress = |cluster: &Cluster| cluster.state("n1").followers[&id("n3")].clone();
    assert!(progress(&cluster).match_index < commit, "the leader has not heard n3 store the entry");
    assert_eq!(progress(&cluster).inflight_messages, 1, "the append's answer is still awaited");

    let interval = heartbeat_interval(&cluster);
    cluster.set_time(cluster.now + interval);
    cluster.tick("n1");
    cluster.deliver_all();
    assert_eq!(progress(&cluster).match_index, commit, "the heartbeat's answer carried n3's match");
    assert_eq!(progress(&cluster).inflight_messages, 0, "the window reopened");
}

// Applying is bounded per step (`max_apply_entries`): a follower that learns of a long committed
// tail at once applies it over several Ready batches, so it stays responsive (heartbeats, votes)
// in between instead of stalling for the whole tail; `has_ready` says more is to come.
#[test]
fn a_long_committed_tail_is_applied_a_bounded_number_of_entries_per_step() {
    let mut config = default_config();
    config.max_apply_entries = 2;
    let mut cluster = Cluster::new(3, config);
    cluster.elect("n1");
    cluster.settle();
    cluster.drop_rule = Some(Box::new(|packet: &Packet| packet.to.as_str() == "n3"));
    for i in 0..5 {
        cluster.propose_put("n1", &format!("k{i}"), "v");
        cluster.deliver_all();
    }
    let commit = cluster.commit("n1");
    cluster.drop_rule = None;
    let applied_before = cluster.raft("n3").replica().applied();
    assert_eq!(commit.0 - applied_before.0, 5, "n3 missed five committed entries");

    // Catch n3 up, and hold back the append that brings it the five entries.
    let interval = heartbeat_interval(&cluster);
    cluster.set_time(cluster.now + interval);
    cluster.tick("n1");
    let mut tail = None;
    for _ in 0..10 {
        for packet in cluster.take_network() {
            let carries_the_tail = packet.to.as_str() == "n3"
                && matches!(&packet.message, RaftMessage::Append { entries, .. } if entries.len() == 5);
            if carries_the_tail {
                tail = Some(packet);
            } else {
                cluster.deliver(packet);
            }
        }
        if tail.is_some() {
            break;
        }
    }
    let tail = tail.expect("the leader sent n3 the missing entries in one append");
    let now = cluster.now;
    let raft = cluster.raft_mut("n3");
    raft.handle_message(now, tail.from.clone(), concord_core::message::Message::Raft(tail.message))
        .expect("a valid append");
    assert_eq!(raft.commit_index(), commit, "n3 learned the whole commit index at once");
    let mut applied = vec![raft.replica().applied().0 - applied_before.0];
    while raft.has_ready() {
        let ready = raft.ready();
        raft.advance(now, ready.number);
        applied.push(raft.replica().applied().0 - applied_before.0);
        assert!(applied.len() < 10, "{applied:?}");
    }
    applied.dedup();
    assert_eq!(applied, vec![2, 4, 5], "two entries per step, then the last one");
}
