//! # concord-patterns
//!
//! Correct versions of the lesson's consensus patterns, built only on the public API of
//! [`concord_runtime::Consensus`]: optimistic updates, atomic compare-and-swap, leases and locks
//! with fencing tokens, and the distributed counter of the lesson's exercise.
//!
//! **What it is:** thin async helpers whose every decision is taken by the replicated state machine
//! when a command is applied — never check-then-propose, never a node's own clock. **What it is
//! not:** a new mechanism or a private hook into one; anything here could be written by a user of
//! the runtime (the lock commands it relies on are part of `concord-core`'s state machine).
//!
//! ```
//! use std::time::Duration;
//! use concord_core::prelude::*;
//! use concord_patterns::{cas, Counter, LockClient};
//! use concord_runtime::{Consensus, MemoryNetwork};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let network = MemoryNetwork::new();
//! let node = Consensus::builder("agent-001")
//!     .config(Config::for_mechanism(MechanismKind::Raft))
//!     .transport(network.transport("agent-001"))
//!     .start()
//!     .await
//!     .unwrap();
//! while !node.is_leader() {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! }
//! // Compare-and-swap, decided at apply time.
//! let swap = cas::compare_and_swap(&node, "config", None, Some(&10u32)).await.unwrap();
//! assert!(swap.swapped && swap.value == Some(10));
//! // A lease with a fencing token; writes under it are fenced by the state machine.
//! let locks = LockClient::new(node.clone());
//! let lease = locks.try_acquire("printer", Duration::from_secs(5)).await.unwrap();
//! lease.fenced_put("printer/job", "report.pdf").await.unwrap();
//! lease.release().await.unwrap();
//! // The counter: exactly once, from any node.
//! let counter = Counter::new(node.clone(), "client-1");
//! assert_eq!(counter.increment("visits").await.unwrap(), 1);
//! node.stop().await;
//! # }
//! ```
//!
//! ## Compare-and-swap ([`cas`])
//!
//! **Guarantee:** the comparison happens when the command is applied — in the Raft log, or for
//! simple majority in the key's own slot — so a swap happens only if the expectation held at that
//! point of the key's history; a stale expectation never swaps. The result says whether it swapped
//! and the key's value and version then. [`cas::compare_and_swap_version`] compares versions,
//! which never repeat; [`cas::update`] is a read-modify-write loop on top.
//! **Both mechanisms.** Assumes nothing about clocks.
//!
//! ## Optimistic update ([`Optimistic`])
//!
//! The view shows a pending value at once; the value is proposed as a compare-and-swap on the
//! version the view was built on; on refusal (another writer came first, no quorum, timeout) it is
//! withdrawn, the view shows this node's consensus value again, and a [`optimistic::Rollback`] is
//! sent. **Guarantee:** pending updates on one key resolve in the order they were made, each built
//! on the previous one's outcome (a rolled-back update takes its successors with it), so the
//! outcome does not depend on timing; when nothing is pending the view *is* the local consensus
//! value. An update with an unknown outcome (timeout) is withdrawn from the view; if consensus
//! applies it later, the view shows it then — as the consensus value. **Both mechanisms.**
//!
//! ## Leases and locks ([`LockClient`], [`Lease`], [`Fence`])
//!
//! A lock on `resource` is state at key `lock:<resource>`, changed only by
//! [`LockCommand`](concord_core::command::LockCommand)s (plain writes to `lock:` keys are
//! refused). The state machine grants a lease if none is valid at the entry's timestamp, with a
//! **fencing token** one larger than the last (stored with the lock, so it survives snapshots and
//! restarts); renew and release succeed only for the holder with the current token.
//! [`Lease::fenced_put`] writes a key only if the lease is still the valid one when the write is
//! applied, so a holder that paused past its lease cannot overwrite its successor's work; [`Fence`]
//! is the same check for resources outside concord (refuse a token older than the highest seen).
//! [`LockClient::acquire`] waits (with a timeout) for a release or an expiry; [`Lease::keep_alive`]
//! renews in the background.
//!
//! **Guarantees:** in the log's time, no two leases of one resource are ever valid at once; tokens
//! strictly increase per resource; a fenced write with a token other than the current valid lease's
//! is refused. These hold on every replica because expiry is decided from the leader's timestamp in
//! the entry (`ApplyContext::timestamp_ms`), and each lock's time only moves forward.
//!
//! **The clock assumption that remains.** Log time is the stamping leader's wall clock. A holder
//! converts its lease into its own time: it may act until `submit time + ttl − margin`
//! ([`Lease::remaining`]), because the grant was stamped no earlier than it was submitted. That is
//! safe if (1) clocks of the nodes that stamp (successive Raft leaders; with simple majority, every
//! proposer) and of the holder differ by less than the margin ([`CLOCK_SKEW_MARGIN_DEFAULT`],
//! [`LockClient::with_clock_skew_margin`]), and (2) clock rates drift negligibly over one TTL. A
//! leader whose clock runs ahead ends leases early; one whose clock is behind only delays later
//! grants (stamps never decrease). Fenced writes do not depend on this assumption at all: they are
//! the defence when it fails (a paused process, a jumped clock).
//!
//! **Mechanisms:** acquire, renew and release touch one key, so simple majority decides them in the
//! lock key's own slots and they are safe there too — with stamps from each proposer's clock, so
//! assumption (1) covers every node. Fenced writes read the lock's key while writing another, which
//! simple majority cannot order: [`fenced_put`] returns [`PatternError::Unsupported`] there (use
//! [`Fence`] at the resource instead).
//!
//! ## Distributed counter ([`Counter`]) — the lesson's exercise
//!
//! 1. *Increment and decrement from any node:* a [`Counter`] on any node; followers forward to the
//!    leader.
//! 2. *Every node shows the same value:* the counter is a replicated key; [`Counter::read`] is
//!    linearizable, [`Counter::value`] is the local (possibly lagging) view.
//! 3. *Survives the loss of a node:* a majority keeps deciding; operations cut off by a leader
//!    change are retried under the same client session and applied **exactly once**.
//! 4. *A minority partition refuses writes:* they fail with `NoQuorum` instead of diverging.
//! 5. *Atomic batch operations across several keys:* [`Counter::add_all`] (Raft).
//!
//! **Guarantee (Raft):** every operation that returns `Ok` was applied exactly once; one whose
//! error has an unknown outcome was applied at most once; so the final value is the sum of the
//! acknowledged deltas plus some of the unknown ones. **Simple majority:** single-key operations
//! only, exactly once only within the runtime's own retries.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod cas;
pub mod counter;
pub mod error;
pub mod lock;
pub mod optimistic;

pub use counter::Counter;
pub use error::PatternError;
pub use lock::{
    fenced_put, Fence, FenceError, FencingToken, KeepAlive, Lease, LockClient, CLOCK_SKEW_MARGIN_DEFAULT,
};
pub use optimistic::{Optimistic, Rollback, RollbackReason, UpdateOutcome};

/// How long to wait before retrying after a definite refusal caused by contention (simple
/// majority aborts a slot in which several proposers collided): one to four heartbeat intervals,
/// different on each node and attempt so that colliding proposers spread out. Derived from the
/// node id, not an RNG, so runs stay reproducible.
pub(crate) fn contention_backoff(
    consensus: &concord_runtime::Consensus,
    attempt: u32,
) -> std::time::Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in consensus.node_id().as_str().bytes().chain(attempt.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    let heartbeat = consensus.config().heartbeat_interval;
    heartbeat + heartbeat.mul_f64((hash % 1000) as f64 / 333.0)
}
