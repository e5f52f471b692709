//! The sans-io interface both mechanisms implement, and the batch of work they hand to a driver.
//!
//! # The driver loop
//!
//! A driver (the tokio runtime, the simulator, or your own event loop) owns a [`Mechanism`], a
//! [`Storage`](crate::storage::Storage) and a way to send messages. It feeds inputs and drains
//! outputs, in this order:
//!
//! 1. **Inputs.** Call `handle_message`, `propose`, `read`, `change_membership`, `vote`,
//!    `transfer_leadership` and `handle_peer_status` as things arrive, and `handle_timeout(now)`
//!    once `now` reaches [`Mechanism::poll_timeout`]. Feed every input that is ready before step 2:
//!    that is what batches work.
//! 2. **Take a [`Ready`]** when [`Mechanism::has_ready`] is true, with [`Mechanism::ready`].
//! 3. **Send `ready.messages` now.** They do not depend on this batch's persistence (a leader may
//!    replicate entries to followers while it writes them itself, Raft thesis §10.2.1).
//! 4. **Persist `ready.persist`** with `Storage::persist` and wait until it is durable.
//! 5. **Only then send `ready.persisted_messages`.** They promise what step 4 wrote (a vote, an
//!    append acknowledgement, a simple-majority vote): sending them earlier breaks safety after a
//!    crash.
//! 6. **Call [`Mechanism::advance`]** with `ready.number` to acknowledge step 4. Commit and apply may
//!    move forward as a result, producing more work: loop to 2.
//! 7. **Deliver `ready.results`, `ready.reads` and `ready.events`** to the application. (They are
//!    safe to deliver in any order relative to 3–6: a result is only produced once its entry is
//!    committed, which needs a quorum's durable copies.)
//!
//! The mechanism applies committed entries to its own [`Replica`] (it owns the state machine
//! because simple majority votes on key versions and Raft snapshots the state to compact its log);
//! read local state through [`Mechanism::replica`].

use crate::config::Config;
use crate::error::{PeerError, ProposalError};
use crate::event::{DebugState, Event, ProposalResult};
use crate::id::{LogIndex, Membership, NodeId, NodeInfo, ProposalId};
use crate::message::{Message, Proposal};
use crate::state_machine::Replica;
use crate::storage::{Persist, Recovered};
use crate::time::Instant;

/// A message to send to one peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Outbound {
    /// The destination.
    pub to: NodeId,
    /// The message.
    pub message: Message,
}

/// A linearizable read request's identity, chosen by the driver.
pub type ReadId = u64;

/// The answer to [`Mechanism::read`]: once `Ok`, the local replica reflects every write that
/// completed before the read was issued, so the driver reads it now.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadResult {
    /// The request.
    pub id: ReadId,
    /// `Ok(index)`: the replica has applied at least `index`, a linearizable read point.
    pub result: Result<LogIndex, ProposalError>,
}

/// Empties `buffer` into the returned vector, leaving it the capacity its contents needed: for
/// mechanisms filling a [`Ready`] batch after batch, so a buffer is not regrown from empty each
/// time (see also [`Persist::take_with_capacity`](crate::storage::Persist::take_with_capacity)).
pub fn take_with_capacity<T>(buffer: &mut Vec<T>) -> Vec<T> {
    let capacity = buffer.len();
    std::mem::replace(buffer, Vec::with_capacity(capacity))
}

/// One batch of work for the driver; see the [module docs](self) for the order to follow.
#[derive(Debug, Default)]
#[must_use = "a Ready holds messages and writes that must be carried out"]
pub struct Ready {
    /// Pass to [`Mechanism::advance`] once `persist` is durable.
    pub number: u64,
    /// Messages that may be sent at once.
    pub messages: Vec<Outbound>,
    /// What to write to storage before anything below is sent.
    pub persist: Persist,
    /// Messages that may be sent only after `persist` is durable.
    pub persisted_messages: Vec<Outbound>,
    /// Proposals decided (accepted, rejected or failed).
    pub results: Vec<ProposalResult>,
    /// Linearizable reads that may now be served from the local replica.
    pub reads: Vec<ReadResult>,
    /// Events for the application.
    pub events: Vec<Event>,
}

impl Ready {
    /// Whether the batch holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.persist.is_empty()
            && self.persisted_messages.is_empty()
            && self.results.is_empty()
            && self.reads.is_empty()
            && self.events.is_empty()
    }
}

/// A membership change, decided through the mechanism itself so every node agrees on the quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a voter (Raft: as a learner first, promoted once caught up).
    AddVoter(NodeInfo),
    /// Add a learner (receives the log, does not vote).
    AddLearner(NodeInfo),
    /// Promote a learner to voter.
    Promote(NodeId),
    /// Remove a member (the current leader too: it steps down once the change commits).
    Remove(NodeId),
    /// Update a member's address or metadata.
    Update(NodeInfo),
}

impl MembershipChange {
    /// The node the change is about.
    pub fn node(&self) -> &NodeId {
        match self {
            MembershipChange::AddVoter(info)
            | MembershipChange::AddLearner(info)
            | MembershipChange::Update(info) => &info.id,
            MembershipChange::Promote(id) | MembershipChange::Remove(id) => id,
        }
    }
}

/// What a mechanism needs to start: who it is, its config, the initial members (used only when
/// storage holds no membership yet), what storage recovered, an RNG seed, and the state machine.
pub struct Setup {
    /// This node.
    pub node_id: NodeId,
    /// The validated config.
    pub config: Config,
    /// The cluster to bootstrap if storage holds no membership (this node included).
    pub initial_members: Vec<NodeInfo>,
    /// What storage recovered ([`Recovered::default`] for a new node).
    pub recovered: Recovered,
    /// Seed of the mechanism's own RNG (election timeouts, ballots).
    pub seed: u64,
    /// The replicated state, usually [`Replica::key_value`].
    pub replica: Replica,
}

/// Why a mechanism could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Storage recovered state the mechanism cannot use.
    #[error("recovered state is inconsistent: {0}")]
    Recovered(String),
    /// The node is not in the initial membership and storage has none.
    #[error("node {0} is not a member of the initial cluster")]
    NotAMember(NodeId),
}

/// A consensus mechanism without I/O: time is a parameter, randomness comes from `Setup::seed`.
pub trait Mechanism: Send + 'static {
    /// This node's id.
    fn node_id(&self) -> &NodeId;

    /// A message arrived from `from`. A malformed or foreign message is dropped and reported.
    fn handle_message(&mut self, now: Instant, from: NodeId, message: Message) -> Result<(), PeerError>;

    /// Proposes a command. `Ok` means it is under way: its result comes in a later `Ready::results`
    /// (exactly one result per accepted proposal). `Err` means it was refused at once (not leader
    /// with forwarding off, no quorum, busy, invalid).
    fn propose(&mut self, now: Instant, proposal: Proposal) -> Result<(), ProposalError>;

    /// Asks for a linearizable read point; the answer comes in `Ready::reads`.
    fn read(&mut self, now: Instant, id: ReadId) -> Result<(), ProposalError>;

    /// Proposes a membership change; its result comes in `Ready::results` under `id`.
    fn change_membership(
        &mut self,
        now: Instant,
        id: ProposalId,
        change: MembershipChange,
    ) -> Result<(), ProposalError>;

    /// Casts this node's manual vote on a proposal (simple majority with `VotingMode::Manual`).
    fn vote(&mut self, now: Instant, proposal: &ProposalId, in_favor: bool) -> Result<(), ProposalError>;

    /// Hands leadership to `to` (Raft); other mechanisms return `Unsupported`.
    fn transfer_leadership(&mut self, now: Instant, to: &NodeId) -> Result<(), ProposalError>;

    /// The transport reports a peer's link up or down (feeds failure detection).
    fn handle_peer_status(&mut self, now: Instant, peer: &NodeId, connected: bool);

    /// Time has reached the deadline from [`Mechanism::poll_timeout`] (calling early is harmless).
    fn handle_timeout(&mut self, now: Instant);

    /// When `handle_timeout` must next be called.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Whether [`Mechanism::ready`] has work.
    fn has_ready(&self) -> bool;

    /// Takes the pending work; see the module docs for what to do with it.
    fn ready(&mut self) -> Ready;

    /// Acknowledges that `Ready::persist` of batch `number` (and every earlier one) is durable.
    fn advance(&mut self, now: Instant, number: u64);

    /// The local replica (possibly stale on a follower).
    fn replica(&self) -> &Replica;

    /// The current membership.
    fn membership(&self) -> &Membership;

    /// The known leader (always `None` for leaderless mechanisms).
    fn leader(&self) -> Option<NodeId>;

    /// Which peers this node currently hears from.
    fn connected_peers(&self) -> Vec<NodeId>;

    /// The debug state.
    fn debug_state(&self) -> DebugState;

    /// Whether the driver hands the per-entry events (`LogAppended`, `StateChanged`,
    /// `ConsensusAccepted`) to anyone. A driver with no listener passes `false` so the mechanism
    /// need not build them: they are a large share of the work per write. Every other event is
    /// produced either way. Mechanisms may ignore this (the default does) and always produce them.
    fn set_entry_events_wanted(&mut self, wanted: bool) {
        let _ = wanted;
    }
}
