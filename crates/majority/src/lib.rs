//! # concord-majority
//!
//! Simple-majority voting for concord: quick, leaderless, per-key decisions with a precise
//! promise. It implements [`concord_core::mechanism::Mechanism`], sans-io like Raft: time is a
//! parameter, randomness comes from `Setup::seed`, every output leaves through a `Ready` batch.
//!
//! ## How a decision is taken
//!
//! Every `(key, version, attempt)` is a **slot** decided by its own Paxos instance. A proposal
//! for `key` is based on the proposer's current position of the key. The proposer sends
//! `Propose` in round 0, the *fast round*, to every voter (itself included). A voter votes **for**
//! if the slot is its own current position of the key, it has not voted for another value in the
//! slot, and (optionally) the application's validator or manual vote agrees; the vote is written
//! as a durable record and sent only after it is durable. With `required` votes for
//! (`config.quorum` of the current voters) the value is **chosen**: one round trip when
//! uncontended. `Decided` is then broadcast and every node applies it.
//!
//! When the quorum can no longer be reached (too many against), or a slot stays open for
//! `config.timeout` on any node that voted in it or saw it proposed (a crashed proposer), a node
//! **recovers** the slot like single-decree Paxos: `Prepare` at a higher ballot, and from a quorum
//! of promises it picks the only value that may already have been chosen. Because round 0 is
//! shared by all proposers it behaves like Fast Paxos' fast round: with `P` the promises, a value
//! `v` voted in round 0 *may have been chosen* iff `votes(v in P) + (voters − |P|) ≥ required`
//! ([`quorum::may_have_been_chosen`]). If exactly one value passes, recovery proposes it; if none,
//! it proposes `Abort`; if two pass, it waits for more promises rather than guess. A value that
//! only *may* have been chosen waits briefly (two heartbeat intervals) for the remaining promises,
//! which may show that it was not — so a value most voters explicitly refused is aborted rather
//! than completed whenever they answer. Votes from
//! recovery rounds follow the classic rule (the value of the highest ballot). An aborted slot, or a
//! decided command the state machine refuses (a failed compare-and-swap), leaves the version as it
//! is and moves the key to the next *attempt*, so no key stays blocked.
//!
//! A proposal's result is **accepted** once its value is chosen and applied here, with the votes
//! for / against / total of its fast round and `quorum_required`; **rejected** once its slot is
//! decided otherwise — immediately after the fast round failed, the proposer recovers its own
//! slot, so "rejected" is final, never a guess; **timeout** (outcome unknown) if neither happens
//! within `config.timeout`.
//!
//! ## The guarantee
//!
//! **For any key and version, at most one value is ever accepted, by any node**, under message
//! loss, duplication, reordering, partitions and crash-restart of any node, provided the quorum is
//! a strict majority of the voters (any two quorums intersect). Votes and promises are persisted
//! before they are sent, so a restart forgets none. Every node applies the decisions of one key
//! in slot order, so all nodes that have applied a key's slot `s` hold the same value at `s`.
//!
//! The quorum is checked at run time against the current voters (membership changes): a quorum
//! that is not a strict majority is refused unless `config.advisory` is set, and then every result
//! says `advisory: true` — two values may both be accepted.
//!
//! ## What it does not promise
//!
//! - **No linearizable reads**: [`Mechanism::read`](concord_core::mechanism::Mechanism::read) returns `Unsupported`. Read the local replica
//!   (possibly stale) or use Raft.
//! - **No cross-key order and no multi-key atomicity**: keys are independent, so a batch must
//!   touch one key (a batch over several keys is refused as invalid — applying it at its first
//!   key's slot would change other keys outside their own slots, and nodes would diverge).
//! - **No leader**: [`Mechanism::leader`](concord_core::mechanism::Mechanism::leader) is `None`, `transfer_leadership` is `Unsupported`.
//! - **Liveness** needs a quorum of voters that can talk to each other; a recovery that sees two
//!   possible values waits for more promises.
//! - **Exactly-once sessions** hold while fewer than `maxClientSessions` results are retained.
//!   Session acknowledgements (`ClientSession::answered_below`) are ignored: decisions are ordered
//!   per key only, so a write could reach another replica after a later write that acknowledges it.
//!   Client records neither expire nor are limited in number (`clientSessionExpiry` and
//!   `maxClientRecords` are Raft's): replicas order decisions differently, so they would expire a
//!   client, or find the table full, at different points and then hold different data. One record
//!   stays per client id ever seen (each `Consensus` start takes a new one).
//!
//! ## Convergence
//!
//! Each node logs the decisions it applies, in its own order, at local positions. Heartbeats
//! carry the sender's applied count; a node that has not yet seen a peer's decisions up to that
//! count asks for them (`CatchUpRequest` from its cursor into that peer's log) and applies the
//! answer in order (bounded by `maxEntriesPerMessage` and half of `maxMessageBytes`). A node keeps
//! its last `snapshotInterval` decisions for this; a requester further behind gets the whole
//! state instead, which it installs only if it is at least as advanced on every key (otherwise the
//! responder will first catch up from it). Decisions that arrive ahead of a key's position wait
//! (at most `maxEntriesPerMessage` of them).
//!
//! ## Membership changes
//!
//! Membership is decided in the reserved slot key [`MEMBERSHIP_KEY`], one voter added or removed
//! at a time, so every node agrees on the quorum. Every `Propose` and `Prepare` carries the
//! proposer's membership epoch and members take part only in their own epoch, so each decision is
//! taken by one membership. A member votes for a change only when it holds no undecided vote and
//! its applied state's digest equals the proposer's (carried in the change): then a quorum of the
//! old membership has applied every value the old membership may have chosen, and with one voter
//! changed at a time the quorums of consecutive memberships intersect, so no later membership can
//! choose a second value for an old slot. Recovery judges fast-round votes with the quorum of the
//! epoch they were cast in. Under load, a change may be rejected (voters have open votes): retry.
//! The digest is 64 bits (a sum of mixed per-key hashes), so this one check is exact up to a
//! hash collision (about 2⁻⁶⁴ per comparison). A removed member hears no more decisions; a member
//! that joins starts from the membership it is given and catches up before its position matches.
//! `DebugState::current_term` reports the membership epoch.
//!
//! ## Voting modes
//!
//! `config.voting` is `automatic` (the rule above) or `manual`: a member hands each fast-round
//! proposal to the application as [`Event::ProposalReceived`](concord_core::event::Event) and
//! votes when the application calls `vote(proposal_id, in_favor)`; a vote after `config.timeout`
//! is refused with `ProposalError::Timeout` and changes nothing. The proposer always votes for its
//! own proposal. [`Majority::set_validator`] adds an application rule (game rules, say) that every
//! fast-round proposal must pass before this member votes for it, in either mode.
//!
//! ## Bounds
//!
//! Every queue has a limit from the config ([`Limits`]): own undecided proposals, open slots with
//! a vote or promise, and proposals awaiting a manual vote (`maxPendingProposals`; beyond it
//! `Busy`, or a vote against); decisions waiting for an earlier one (`maxEntriesPerMessage`);
//! decisions kept for catch-up (`snapshotInterval`); a catch-up message (`maxEntriesPerMessage`
//! decisions, half of `maxMessageBytes`). A whole-state catch-up larger than `maxMessageBytes` is
//! not sent (no chunking yet). Timers follow the open work: a proposal's deadline and a slot's
//! watch leave with the proposal or the slot (a recovery's own timers stay until they fire, once
//! each), so the timer set does not grow with the write rate.
//! Between nodes of one process, each node's queue of messages for its own task is bounded by
//! `maxHandedOverMessages` (the runtime handles the excess in the sender's task).
//!
//! ## Durability
//!
//! Each applied decision is appended to the local log (`Ready::persist.entries`, local positions),
//! the state is snapshotted every `snapshotInterval` decisions, and votes and promises are durable
//! records; [`Majority::new`] rebuilds everything from `Setup::recovered`. The restart count is a
//! record too: ballots carry it, so a restarted node never reuses a ballot with another value.
//!
//! ## Testing
//!
//! The feature `simulation` exposes the `simulation` module: the randomized runs on `concord-sim`
//! (`simulation::run_seeds(0..n)` is what `cargo xtask sim --mechanism majority --seeds n` calls),
//! a crash-storm scenario and a membership-churn scenario, with the `simulation::OneValuePerSlot`
//! invariant. The feature `broken-variants` adds `Majority::with_bug` for tests that prove the
//! simulator catches a broken vote rule.
//!
//! ## Example
//!
//! ```
//! use concord_core::prelude::*;
//! use concord_majority::Majority;
//!
//! // A one-node cluster decides alone: the driver loop of `concord_core::mechanism`.
//! let mut config = Config::for_mechanism(MechanismKind::SimpleMajority);
//! config.timeout = std::time::Duration::from_millis(500);
//! let setup = Setup {
//!     node_id: NodeId::new("agent-001"),
//!     config,
//!     initial_members: vec![NodeInfo::new("agent-001", "localhost:5001")],
//!     recovered: Recovered::default(),
//!     seed: 1,
//!     replica: Replica::key_value(1024),
//! };
//! let mut node = Majority::new(setup).unwrap();
//! let mut storage = MemoryStorage::new();
//! let now = Instant::from_millis(1);
//! let id = ProposalId { origin: NodeId::new("agent-001"), sequence: 1 };
//! let command = Command::Put { key: "player_score".into(), value: "100".into() };
//! node.propose(now, Proposal { id, session: None, command }).unwrap();
//! let mut results = Vec::new();
//! while node.has_ready() {
//!     let ready = node.ready();
//!     storage.persist(&ready.persist).unwrap();
//!     node.advance(now, ready.number);
//!     results.extend(ready.results);
//! }
//! assert!(results[0].accepted);
//! assert_eq!(results[0].votes.in_favor, 1);
//! assert_eq!(node.replica().machine().get("player_score").as_deref(), Some(&b"100"[..]));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod durable;
mod node;
pub mod quorum;
#[cfg(feature = "simulation")]
pub mod simulation;

pub use concord_core::message::MEMBERSHIP_KEY;
pub use node::{Limits, Majority, ValidationRequest, Validator};

#[cfg(feature = "broken-variants")]
pub use node::Bug;
