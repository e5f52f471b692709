use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Proposal;
use crate::id::{Membership, NodeId, ProposalId, Term, Version};

/// A ballot for one slot's decision, Paxos style. Round 0 is the *fast round*, shared by every
/// proposer (a member votes at most once in it, whoever proposes); higher rounds are recoveries led
/// by `node`. `incarnation` counts the node's restarts, so a restarted node never reuses a ballot
/// it may already have used with another value. Ordered by round, then node, then incarnation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// 0 for the fast round; recoveries use higher rounds.
    pub round: Term,
    /// The node that proposes (round 0) or leads the recovery (higher rounds).
    pub node: NodeId,
    /// The leading node's restart count.
    pub incarnation: u64,
}

/// What is being decided: the next step of `key` from position `(version, attempt)`. `version`
/// is the key's version the proposal is based on; `attempt` counts the decisions at that version
/// that left it unchanged (an aborted slot, or a command the state machine refused), so that a key
/// never gets stuck behind one. With `key == MEMBERSHIP_KEY` the slot decides the next membership.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Slot {
    /// The key.
    pub key: String,
    /// The version the proposal is based on.
    pub version: Version,
    /// Decisions at this version that did not change it.
    pub attempt: u64,
}

/// The value decided for a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// A client proposal, with the proposer's clock reading (ms) that every node applies it with.
    Proposal {
        /// The proposal (shared: a decision is copied into every voter's message, the vote
        /// record, the history and the log; it encodes as the proposal itself).
        #[serde(deserialize_with = "super::deserialize_shared")]
        proposal: std::sync::Arc<Proposal>,
        /// Milliseconds by the proposer's clock, passed to the state machine as the entry time.
        timestamp_ms: u64,
    },
    /// A membership change: the whole next membership.
    Membership {
        /// The change's proposal id.
        id: ProposalId,
        /// The next membership.
        membership: Membership,
        /// Digest of the proposer's applied positions: members vote for the change only if theirs
        /// is the same (see the `concord-majority` crate docs on membership changes).
        state_digest: u64,
    },
    /// Recovery aborted the slot: nothing is written; the key moves to the next attempt.
    Abort,
}

impl Decision {
    /// The proposal id the decision carries, if any.
    pub fn proposal_id(&self) -> Option<&ProposalId> {
        match self {
            Decision::Proposal { proposal, .. } => Some(&proposal.id),
            Decision::Membership { id, .. } => Some(id),
            Decision::Abort => None,
        }
    }

    /// Approximate encoded size, for message byte limits.
    pub fn size_bytes(&self) -> usize {
        match self {
            Decision::Proposal { proposal, .. } => 48 + proposal.command.size_bytes(),
            Decision::Membership { membership, .. } => 48 + 96 * membership.members.len(),
            Decision::Abort => 1,
        }
    }
}

/// A member's latest vote in a slot, as reported in a [`MajorityMessage::Promise`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CastVote {
    /// The ballot voted in.
    pub ballot: Ballot,
    /// The membership epoch the vote was cast in (its quorum is that epoch's).
    pub epoch: u64,
    /// The value voted for.
    pub decision: Decision,
}

/// A member's answer to a [`MajorityMessage::Prepare`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromiseOutcome {
    /// Promised: no vote below the ballot from now on. Carries the member's latest vote, if any.
    Promised {
        /// The member's latest vote in the slot.
        voted: Option<CastVote>,
    },
    /// Not promised: a ballot at least as high was promised already.
    Refused {
        /// The highest ballot promised.
        promised: Ballot,
    },
    /// The member has already applied the slot; the decision, if it still remembers it.
    Decided {
        /// The decided value, if remembered.
        decision: Option<Decision>,
    },
    /// The member is in another membership epoch and takes no part in this round.
    WrongEpoch {
        /// The member's epoch.
        epoch: u64,
    },
}

/// Simple majority's messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MajorityMessage {
    /// "Vote on this value for this slot" (Paxos phase 2a; in round 0 without a phase 1).
    Propose {
        /// The slot.
        slot: Slot,
        /// The ballot.
        ballot: Ballot,
        /// The proposer's membership epoch: members of another epoch do not vote.
        epoch: u64,
        /// The value (boxed: it is much larger than every other message, which all move by value).
        decision: Box<Decision>,
    },
    /// A member's vote (Paxos phase 2b). A vote for is sent only after it is durable.
    Vote {
        /// The slot.
        slot: Slot,
        /// The ballot voted on.
        ballot: Ballot,
        /// For or against.
        granted: bool,
        /// Why against, if against.
        reason: Option<String>,
    },
    /// The slot is decided; apply it.
    Decided {
        /// The slot.
        slot: Slot,
        /// The value (boxed, as in `Propose`).
        decision: Box<Decision>,
    },
    /// Recovery (Paxos phase 1a): promise not to vote below `ballot` and report your vote.
    Prepare {
        /// The slot.
        slot: Slot,
        /// The recovery ballot (round > 0).
        ballot: Ballot,
        /// The recovering node's membership epoch.
        epoch: u64,
    },
    /// Recovery answer (Paxos phase 1b); a granted promise is sent only after it is durable.
    Promise {
        /// The slot.
        slot: Slot,
        /// The ballot asked for.
        ballot: Ballot,
        /// The answer (boxed: it may carry a whole decision, and recovery is rare).
        outcome: Box<PromiseOutcome>,
    },
    /// Periodic liveness and catch-up: how many decisions the sender has applied.
    Heartbeat {
        /// The sender's restart count (a catch-up cursor into its log is reset when it changes).
        incarnation: u64,
        /// Decisions the sender has applied (its local decision log's last index).
        applied: u64,
        /// The sender's membership epoch.
        membership_epoch: u64,
        /// Digest of the sender's applied positions: equal digests mean nothing to fetch.
        state_digest: u64,
    },
    /// Ask for the decisions the responder applied after its local position `after`.
    CatchUpRequest {
        /// Last position of the responder's log the requester has already seen.
        after: u64,
    },
    /// Decisions the requester missed, in the responder's apply order, bounded in count and bytes.
    CatchUpResponse {
        /// The responder's restart count (its log positions are read with it).
        incarnation: u64,
        /// Responder's local position of the first decision.
        from: u64,
        /// Decisions.
        decisions: Vec<(Slot, Decision)>,
        /// The responder's applied count when it answered.
        applied: u64,
    },
    /// The responder no longer holds the requested decisions: its whole state instead.
    CatchUpSnapshot {
        /// The responder's restart count.
        incarnation: u64,
        /// The responder's local position the snapshot reflects.
        through: u64,
        /// The snapshot (`concord-majority`'s state format).
        data: Bytes,
    },
}

impl MajorityMessage {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            MajorityMessage::Propose { .. } => "majority.propose",
            MajorityMessage::Vote { .. } => "majority.vote",
            MajorityMessage::Decided { .. } => "majority.decided",
            MajorityMessage::Prepare { .. } => "majority.prepare",
            MajorityMessage::Promise { .. } => "majority.promise",
            MajorityMessage::Heartbeat { .. } => "majority.heartbeat",
            MajorityMessage::CatchUpRequest { .. } => "majority.catch_up_request",
            MajorityMessage::CatchUpResponse { .. } => "majority.catch_up_response",
            MajorityMessage::CatchUpSnapshot { .. } => "majority.catch_up_snapshot",
        }
    }
}

/// The reserved key under which membership changes are decided.
pub const MEMBERSHIP_KEY: &str = "\u{0}membership";
