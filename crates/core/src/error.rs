//! Errors a proposal, read or membership change can end with, saying whose fault it is.

use serde::{Deserialize, Serialize};

use crate::command::CommandFailure;
use crate::id::NodeInfo;

/// Why a proposal, a read or a membership change did not succeed.
///
/// It travels between nodes (a leader answers a forwarded proposal with it), so it is serializable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalError {
    /// Neither accepted nor rejected within the configured `timeout`. The outcome is unknown: the
    /// command may still be applied later (retry with the same session to apply it at most once).
    #[error("timed out: no decision within the configured timeout (the outcome is unknown)")]
    Timeout,
    /// This node is not the leader and forwarding is off (or impossible): ask `leader`.
    #[error("not the leader{}", leader.as_ref().map(|l| format!("; the leader is {} at {}", l.id, l.address)).unwrap_or_default())]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeInfo>,
    },
    /// This node cannot reach a quorum: it is read-only until the partition heals.
    #[error("no quorum: {reachable} of {members} nodes reachable, {required} needed")]
    NoQuorum {
        /// Nodes reachable (this one included).
        reachable: usize,
        /// Voting members.
        members: usize,
        /// Votes needed.
        required: usize,
    },
    /// A bounded queue is full; retry later (backpressure).
    #[error("busy: {what} is full ({limit}); retry later")]
    Busy {
        /// Which queue.
        what: String,
        /// Its limit.
        limit: u64,
    },
    /// The voters decided against it (simple majority), or a conflicting value won the slot.
    #[error("rejected: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// The command was committed but the state machine refused it (e.g. a failed compare-and-swap).
    #[error("command failed: {0}")]
    Command(CommandFailure),
    /// The caller asked for something invalid (e.g. a key over the size limit, an unknown node).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Leadership changed before the proposal could be decided; its outcome is unknown.
    #[error("leadership changed before the proposal was decided (the outcome is unknown)")]
    LeadershipLost,
    /// The mechanism does not support this operation.
    #[error("not supported by the {mechanism} mechanism: {operation}")]
    Unsupported {
        /// The mechanism.
        mechanism: String,
        /// The operation.
        operation: String,
    },
    /// The node is stopping or stopped.
    #[error("the node is stopped")]
    Stopped,
    /// Storage failed: the node stops acknowledging writes.
    #[error("storage failed: {0}")]
    Storage(String),
}

impl ProposalError {
    /// Whether the operation may have taken effect despite the error (retry with a session).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ProposalError::Timeout | ProposalError::LeadershipLost | ProposalError::Stopped)
    }

    /// A stable short code (`not_leader`, `no_quorum`, `timeout`, `busy`, `bad_request`, `conflict`…).
    pub fn code(&self) -> &'static str {
        match self {
            ProposalError::Timeout => "timeout",
            ProposalError::NotLeader { .. } => "not_leader",
            ProposalError::NoQuorum { .. } => "no_quorum",
            ProposalError::Busy { .. } => "busy",
            ProposalError::Rejected { .. } => "rejected",
            ProposalError::Command(_) => "conflict",
            ProposalError::Invalid(_) => "bad_request",
            ProposalError::LeadershipLost => "leadership_lost",
            ProposalError::Unsupported { .. } => "unsupported",
            ProposalError::Stopped => "stopped",
            ProposalError::Storage(_) => "storage",
        }
    }
}

/// A message from a peer that breaks the protocol. The message is dropped; nothing else changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The sender is not a member this node knows.
    #[error("message from unknown node {0:?}")]
    UnknownNode(String),
    /// A message of the other mechanism: the cluster is misconfigured.
    #[error("message of mechanism {got} but this node runs {expected}")]
    WrongMechanism {
        /// What this node runs.
        expected: &'static str,
        /// What the message belongs to.
        got: &'static str,
    },
    /// A message that violates the protocol (e.g. a chunk out of range).
    #[error("protocol violation by {from}: {reason}")]
    Protocol {
        /// The sender.
        from: String,
        /// What was wrong.
        reason: String,
    },
}
