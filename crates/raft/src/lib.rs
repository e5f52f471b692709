//! # concord-raft
//!
//! Raft for concord: leader election with pre-vote and check-quorum, log replication with fast
//! back-tracking and pipelining, commit by counting only entries of the leader's term (§5.4.2),
//! ReadIndex and lease reads, forwarding from followers, leadership transfer, one-server-at-a-time
//! membership changes with learners, snapshots sent in resumable chunks, and batching.
//!
//! **What it is:** a deterministic state machine implementing
//! [`Mechanism`](concord_core::mechanism::Mechanism). It reads no clock (every input takes `now`),
//! owns a ChaCha RNG seeded from `Setup::seed` (election timeouts), and does no I/O: messages and
//! writes leave through [`Ready`](concord_core::mechanism::Ready) batches, in the order the core's
//! [`mechanism`](concord_core::mechanism) docs describe. The persistence order is in the types:
//! a leader's appends go in `Ready::messages` (sent while it writes its own copy, thesis §10.2.1)
//! and it counts itself toward a commit only after `advance` acknowledges its write; votes and
//! append acknowledgements go in `Ready::persisted_messages`. Once an entry commits, the leader
//! tells its followers at once (an append without entries); they apply it without answering, as
//! the answer would tell the leader nothing new (heartbeats, which start a new read round, and
//! rejections are always answered).
//!
//! **What it is not:** a storage engine, a transport or a runtime: storage is write-only from
//! here (the node reads it back only at start, through `Setup::recovered`), and the tokio driver
//! lives in `concord-runtime`.
//!
//! **Lease reads and clocks.** With `lease_reads` on, a leader answers reads without a round trip
//! while its lease holds: the lease starts when the last heartbeat round a quorum acknowledged was
//! *sent*, and lasts `election_timeout.min` shortened by `lease_clock_drift_max_per_mille`. It is
//! safe if no node's clock runs slower than the leader's by more than that fraction (followers
//! refuse to vote for `election_timeout.min` after hearing from the leader, measured by their own
//! clocks, and for `election_timeout.min` after a restart, since a node may have acknowledged a
//! lease just before crashing). Clock *offsets* do not matter; only rates do. Off by default:
//! ReadIndex needs no clock assumption at all.
//!
//! ```
//! use concord_core::prelude::*;
//! use concord_raft::Raft;
//!
//! // A one-node cluster elects itself once its election timer fires.
//! let setup = Setup {
//!     node_id: NodeId::new("n1"),
//!     config: Config::default(),
//!     initial_members: vec![NodeInfo::new("n1", "localhost:7001")],
//!     recovered: Recovered::default(),
//!     seed: 7,
//!     replica: Replica::key_value(1024),
//! };
//! let mut raft = Raft::new(setup).unwrap();
//! let mut storage = MemoryStorage::new();
//! let mut now = Instant::ZERO;
//! for _ in 0..20 {
//!     if let Some(deadline) = raft.poll_timeout() {
//!         now = now.max(deadline);
//!         raft.handle_timeout(now);
//!     }
//!     while raft.has_ready() {
//!         let ready = raft.ready();
//!         storage.persist(&ready.persist).unwrap();
//!         raft.advance(now, ready.number);
//!     }
//! }
//! assert_eq!(raft.role(), Role::Leader);
//! // The no-op of its term is committed.
//! assert_eq!(raft.commit_index(), raft.last_log_index());
//! ```

//! **Limits.** Every queue has a named bound in [`Config`](concord_core::config::Config):
//! `max_pending_proposals` (also bounds the leader's uncommitted tail), `max_pending_reads`,
//! `max_batch_entries`, `max_entries_per_message`, `max_inflight_messages`, `max_inflight_bytes`,
//! `max_message_bytes`, `snapshot_chunk_bytes`. Hitting one is a `ProposalError::Busy`. Applying is
//! bounded too: at most `max_apply_entries` committed entries per step, the rest in the next
//! `Ready` batches (`has_ready` stays true until the node has applied its commit index).
//!
//! **Testing.** Unit tests drive small clusters in-process; `tests/conformance` ties scenarios to
//! the paper's sections; `tests/simulation.rs` runs thousands of seeded fault schedules in
//! `concord-sim` (`cargo xtask sim --mechanism raft --seeds N`). The `broken-variants` feature
//! adds `Raft::set_bug` with deliberately broken behaviours, to prove the simulator catches them;
//! it is for tests only.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod deadlines;
mod log;
mod node;
mod progress;
mod proposal_index;
mod quorum;

#[cfg(test)]
mod tests;

#[cfg(feature = "broken-variants")]
pub use node::Bug;
pub use node::Raft;

pub use concord_core::event::Role;
pub use concord_core::mechanism::SetupError;
