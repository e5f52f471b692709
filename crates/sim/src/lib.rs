//! # concord-sim
//!
//! A deterministic simulator for concord's consensus mechanisms. It runs N nodes, each a real
//! [`Mechanism`](concord_core::mechanism::Mechanism), in virtual time: a seeded network loses,
//! duplicates, delays and reorders messages and can be partitioned (one-way cuts too); nodes crash
//! (losing everything not yet durable) and restart from their durable store, or pause and resume;
//! disks take a random time to make each write durable; each node's clock has its own offset and
//! rate. Clients submit operations and leave a [`History`] that the
//! [`linearizability`] checker judges, and [`Invariant`]s are checked after every step. The same
//! seed always gives the same run, so a failure prints its seed and rerunning it reproduces it.
//!
//! **What it is not:** it does no I/O, spawns no threads, reads no clock and contains no consensus
//! logic of its own; it drives mechanisms exactly as `concord_core::mechanism` documents, so a
//! driver bug here would be a bug in every driver. It is a test tool: use `concord-runtime` to run
//! a real cluster.
//!
//! Mechanism crates use it as a dev-dependency, mostly through [`randomized::run`], which injects
//! faults, then heals everything and demands progress, then checks linearizability.
//!
//! ```
//! use std::time::Duration;
//! use concord_core::prelude::*;
//! use concord_sim::{NetworkConfig, SimConfig, Simulation};
//!
//! // A do-nothing mechanism stands in for Raft here; real tests pass `factory(Raft::new)`.
//! # struct Idle { id: NodeId, members: Membership, replica: Replica }
//! # impl Mechanism for Idle {
//! #     fn node_id(&self) -> &NodeId { &self.id }
//! #     fn handle_message(&mut self, _: Instant, _: NodeId, _: Message) -> Result<(), PeerError> { Ok(()) }
//! #     fn propose(&mut self, _: Instant, _: Proposal) -> Result<(), ProposalError> { Err(ProposalError::Stopped) }
//! #     fn read(&mut self, _: Instant, _: ReadId) -> Result<(), ProposalError> { Err(ProposalError::Stopped) }
//! #     fn change_membership(&mut self, _: Instant, _: ProposalId, _: MembershipChange) -> Result<(), ProposalError> { Err(ProposalError::Stopped) }
//! #     fn vote(&mut self, _: Instant, _: &ProposalId, _: bool) -> Result<(), ProposalError> { Err(ProposalError::Stopped) }
//! #     fn transfer_leadership(&mut self, _: Instant, _: &NodeId) -> Result<(), ProposalError> { Err(ProposalError::Stopped) }
//! #     fn handle_peer_status(&mut self, _: Instant, _: &NodeId, _: bool) {}
//! #     fn handle_timeout(&mut self, _: Instant) {}
//! #     fn poll_timeout(&self) -> Option<Instant> { None }
//! #     fn has_ready(&self) -> bool { false }
//! #     fn ready(&mut self) -> Ready { Ready::default() }
//! #     fn advance(&mut self, _: Instant, _: u64) {}
//! #     fn replica(&self) -> &Replica { &self.replica }
//! #     fn membership(&self) -> &Membership { &self.members }
//! #     fn leader(&self) -> Option<NodeId> { None }
//! #     fn connected_peers(&self) -> Vec<NodeId> { Vec::new() }
//! #     fn debug_state(&self) -> DebugState { DebugState { node_id: self.id.clone(), mechanism: "idle".into(),
//! #         current_term: Term(0), role: Role::Peer, leader_id: None, commit_index: LogIndex(0), last_applied: LogIndex(0),
//! #         log_length: 0, last_log_index: LogIndex(0), snapshot_index: LogIndex(0), followers: Default::default(),
//! #         pending_proposals: 0, session_results: 0, session_clients: 0,
//! #         session_clients_expired: 0 } }
//! # }
//! let factory = concord_sim::factory(|setup: Setup| {
//!     Ok(Idle { id: setup.node_id, members: Membership::with_voters(setup.initial_members), replica: setup.replica })
//! });
//! let mut config = SimConfig::new(7, 3, Config::default());
//! config.network = NetworkConfig { loss: 0.1, duplicate: 0.05, ..NetworkConfig::default() };
//! let mut simulation = Simulation::new(config, factory);
//! simulation.add_invariant(Box::new(concord_sim::invariants::ElectionSafety::default()));
//! simulation.partition(&[vec![NodeId::new("n1")], vec![NodeId::new("n2"), NodeId::new("n3")]]);
//! simulation.run_for(Duration::from_secs(1)).unwrap();
//! assert_eq!(simulation.now(), Instant::from_millis(1000));
//! assert!(concord_sim::linearizability::check(simulation.history()).is_ok());
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod history;
pub mod invariants;
pub mod linearizability;
pub mod randomized;
mod simulation;

pub use history::{ClientOp, History, Operation, OperationId, OperationKind, Outcome, Response};
pub use invariants::{raft_invariants, Invariant};
pub use simulation::{
    factory, MechanismFactory, NetworkConfig, SimConfig, SimStats, SimView, Simulation, Violation,
};
