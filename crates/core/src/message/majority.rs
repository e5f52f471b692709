use serde::{Deserialize, Serialize};

use super::Proposal;
use crate::id::{Membership, NodeId, Term, Version};

/// A ballot for one (key, version) decision, Paxos style: round 0 is the proposer's fast round,
/// higher rounds are recoveries. Ballots are ordered by round, then by node id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// 0 for the fast round; recoveries use higher rounds.
    pub round: Term,
    /// The node that leads this round.
    pub node: NodeId,
}

/// What is being decided: the command that will produce `version + 1` of `key` (or, with
/// `key == MEMBERSHIP_KEY`, the next membership).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Slot {
    /// The key.
    pub key: String,
    /// The version the proposal is based on.
    pub version: Version,
}

/// The value decided for a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// A client proposal.
    Proposal(Proposal),
    /// A membership change.
    Membership(Membership),
    /// Recovery aborted the slot: nothing is written, the version does not move.
    Abort,
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
        /// The value.
        decision: Decision,
    },
    /// A member's vote (Paxos phase 2b), sent only after the vote is durable.
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
        /// The value.
        decision: Decision,
    },
    /// Recovery (Paxos phase 1a): promise not to vote below `ballot` and report your vote.
    Prepare {
        /// The slot.
        slot: Slot,
        /// The recovery ballot.
        ballot: Ballot,
    },
    /// Recovery answer (Paxos phase 1b).
    Promise {
        /// The slot.
        slot: Slot,
        /// The ballot promised.
        ballot: Ballot,
        /// Whether the promise is made (false: a higher ballot was already promised).
        granted: bool,
        /// The member's latest vote in the slot, if any.
        voted: Option<(Ballot, Decision)>,
        /// If the member already knows the slot's outcome, it.
        decided: Option<Decision>,
    },
    /// Periodic liveness and catch-up: the sender's applied-decision count and membership epoch.
    Heartbeat {
        /// Number of decisions the sender has applied.
        applied: u64,
        /// The sender's membership epoch.
        membership_epoch: u64,
    },
    /// Ask for decisions after `applied`.
    CatchUpRequest {
        /// The requester's applied count.
        applied: u64,
    },
    /// Decisions the requester missed, in apply order, bounded in count and bytes.
    CatchUpResponse {
        /// Position of the first decision.
        from: u64,
        /// Decisions.
        decisions: Vec<(Slot, Decision)>,
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
        }
    }
}

/// The reserved key under which membership changes are decided.
pub const MEMBERSHIP_KEY: &str = "\u{0}membership";
