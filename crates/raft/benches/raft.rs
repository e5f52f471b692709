//! The leader's hot paths: taking a proposal (append, replicate, hand out the batch) and handling
//! a follower's append acknowledgement (commit, apply, result).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

use concord_core::prelude::*;
use concord_raft::Raft;

fn node(name: &str) -> Raft {
    let members: Vec<NodeInfo> = ["n1", "n2", "n3"].iter().map(|id| NodeInfo::new(*id, "")).collect();
    let mut config = Config::default();
    // No timers fire during a measurement: the benchmark drives time itself.
    config.timeout = Duration::from_secs(3600);
    config.client_session_expiry = config.timeout * 10;
    Raft::new(Setup {
        node_id: NodeId::new(name),
        config,
        initial_members: members,
        recovered: Recovered::default(),
        seed: 1,
        replica: Replica::key_value(1024),
    })
    .expect("a valid setup")
}

/// A three-node cluster whose `n1` is the leader, with everything delivered.
fn cluster() -> (Vec<Raft>, Instant) {
    let mut nodes = vec![node("n1"), node("n2"), node("n3")];
    let mut now = Instant::from_millis(1);
    for raft in &mut nodes {
        raft.handle_timeout(now);
    }
    now = now + Duration::from_secs(1);
    nodes[0].handle_timeout(now);
    for _ in 0..20 {
        let mut queue = Vec::new();
        for raft in &mut nodes {
            while raft.has_ready() {
                let ready = raft.ready();
                let from = raft.node_id().clone();
                for outbound in ready.messages.into_iter().chain(ready.persisted_messages) {
                    queue.push((from.clone(), outbound));
                }
                raft.advance(now, ready.number);
            }
        }
        for (from, outbound) in queue {
            let index = ["n1", "n2", "n3"].iter().position(|id| *id == outbound.to.as_str()).unwrap_or(0);
            let _ = nodes[index].handle_message(now, from, outbound.message);
        }
    }
    assert_eq!(nodes[0].role(), Role::Leader, "n1 leads");
    (nodes, now)
}

fn proposal(sequence: u64) -> Proposal {
    Proposal {
        id: ProposalId { origin: NodeId::new("n1"), sequence },
        session: None,
        command: Command::Put { key: "key".into(), value: Bytes::from_static(b"value") },
    }
}

fn acknowledge(leader: &mut Raft, now: Instant, from: &str, match_index: LogIndex) {
    let response = RaftMessage::AppendResponse {
        term: leader.term(),
        success: true,
        match_index,
        conflict: None,
        last_log_index: match_index,
        read_round: 0,
    };
    let _ = leader.handle_message(now, NodeId::new(from), Message::Raft(response));
}

fn leader_proposal(c: &mut Criterion) {
    let (mut nodes, now) = cluster();
    let leader = &mut nodes[0];
    let mut sequence = 0u64;
    c.bench_function("raft/leader_handles_a_proposal", |b| {
        b.iter(|| {
            sequence += 1;
            leader.propose(now, black_box(proposal(sequence))).expect("the leader accepts");
            let ready = leader.ready();
            leader.advance(now, ready.number);
            let _ = black_box(ready);
            // Keep the uncommitted tail bounded: followers acknowledge now and then.
            if sequence % 1024 == 0 {
                let last = leader.last_log_index();
                acknowledge(leader, now, "n2", last);
                acknowledge(leader, now, "n3", last);
                let _ = black_box(leader.ready());
            }
        })
    });
}

fn leader_append_response(c: &mut Criterion) {
    let (mut nodes, now) = cluster();
    let leader = &mut nodes[0];
    let mut sequence = 1_000_000u64;
    c.bench_function("raft/leader_handles_an_append_response", |b| {
        // Each measured step needs an uncommitted entry, prepared outside the measurement.
        b.iter_custom(|iterations| {
            let mut measured = Duration::ZERO;
            for _ in 0..iterations {
                sequence += 1;
                leader.propose(now, proposal(sequence)).expect("the leader accepts");
                let ready = leader.ready();
                leader.advance(now, ready.number);
                let last = leader.last_log_index();
                let started = std::time::Instant::now();
                // The acknowledgement that makes a quorum: commit, apply, result.
                acknowledge(leader, now, "n2", last);
                let ready = leader.ready();
                measured += started.elapsed();
                assert_eq!(ready.results.len(), 1);
                let _ = black_box(ready);
            }
            measured
        })
    });
}

criterion_group!(benches, leader_proposal, leader_append_response);
criterion_main!(benches);
