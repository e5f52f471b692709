//! Conformance of `concord-raft` with the Raft paper (Ongaro & Ousterhout, "In Search of an
//! Understandable Consensus Algorithm", §5.1–§5.4.2), one test per scenario, each named after its
//! section, plus scenario tests for what the crate adds beyond the paper (pre-vote, check-quorum,
//! ReadIndex and lease reads, leadership transfer, learners and membership changes, snapshots,
//! persistence order, restarts, proposal results and forwarding).
//!
//! Everything runs on the deterministic harness in `harness.rs`: real `Raft` nodes, virtual time, a
//! network the test controls message by message, and the driver order of
//! `concord_core::mechanism` (persist before `persisted_messages`, then `advance`). The harness
//! also checks election safety, log matching, state machine safety, monotonic terms and commit
//! indices, the persistence order and one result per proposal after every batch, in every test.
//! `mutants.rs` shows the tests fail when the crate's deliberately broken variants are switched on.

mod harness;
mod mutants;
mod paper_5_1;
mod paper_5_2;
mod paper_5_3;
mod paper_5_4;
mod scenarios;
