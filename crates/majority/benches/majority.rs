//! One uncontended vote round across three in-process nodes: propose, votes, decision, apply
//! everywhere (persistence in memory, messages delivered in order).

use std::collections::VecDeque;
use std::time::Duration;

use concord_core::prelude::*;
use concord_majority::Majority;
use criterion::{criterion_group, criterion_main, Criterion};

struct Cluster {
    nodes: Vec<(Majority, MemoryStorage)>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    now: Instant,
}

impl Cluster {
    fn new() -> Cluster {
        let mut config = Config::for_mechanism(MechanismKind::SimpleMajority);
        config.timeout = Duration::from_secs(5);
        // Snapshots stay out of the measured round (they are a separate cost).
        config.snapshot_interval = 0;
        let members: Vec<NodeInfo> = (1..=3).map(|n| NodeInfo::new(format!("n{n}"), "")).collect();
        let nodes = members
            .iter()
            .map(|member| {
                let setup = Setup {
                    node_id: member.id.clone(),
                    config: config.clone(),
                    initial_members: members.clone(),
                    recovered: Recovered::default(),
                    seed: 1,
                    replica: Replica::key_value(1024),
                };
                (Majority::new(setup).expect("starts"), MemoryStorage::new())
            })
            .collect();
        let mut cluster = Cluster { nodes, queue: VecDeque::new(), now: Instant::from_millis(1) };
        for index in 0..3 {
            cluster.drain(index);
        }
        cluster.deliver();
        cluster
    }

    fn drain(&mut self, index: usize) -> usize {
        let mut results = 0;
        let (node, storage) = &mut self.nodes[index];
        while node.has_ready() {
            let ready = node.ready();
            storage.persist(&ready.persist).expect("persist");
            node.advance(self.now, ready.number);
            results += ready.results.len();
            let from = node.node_id().clone();
            for outbound in ready.messages.into_iter().chain(ready.persisted_messages) {
                self.queue.push_back((from.clone(), outbound.to, outbound.message));
            }
        }
        results
    }

    fn deliver(&mut self) -> usize {
        let mut results = 0;
        while let Some((from, to, message)) = self.queue.pop_front() {
            let index = self.nodes.iter().position(|(node, _)| *node.node_id() == to).expect("a member");
            self.nodes[index].0.handle_message(self.now, from, message).expect("well-formed");
            results += self.drain(index);
        }
        results
    }
}

fn one_vote_round(c: &mut Criterion) {
    let mut cluster = Cluster::new();
    let origin = NodeId::new("n1");
    let mut sequence = 0u64;
    c.bench_function("majority: one uncontended vote round, 3 nodes", |b| {
        b.iter(|| {
            sequence += 1;
            let proposal = Proposal {
                id: ProposalId { origin: origin.clone(), sequence },
                session: None,
                command: Command::Add { key: "counter".into(), delta: 1 },
            };
            cluster.nodes[0].0.propose(cluster.now, proposal).expect("admitted");
            let results = cluster.drain(0) + cluster.deliver();
            assert_eq!(results, 1, "one result per round");
        })
    });
}

criterion_group!(benches, one_vote_round);
criterion_main!(benches);
