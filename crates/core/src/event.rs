//! Events (the lesson's `on("leader:elected", …)` names) and proposal results.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandOutput};
use crate::error::ProposalError;
use crate::id::{LogIndex, NodeId, ProposalId, Term, Version};

/// Which side of a partition this node is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionSide {
    /// This node reaches fewer than a quorum: it is read-only.
    Minority,
    /// This node reaches a quorum but not every member.
    Majority,
}

/// Something that happened, named as in the lesson.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// `leader:elected`: a node became leader.
    LeaderElected {
        /// The new leader.
        leader: NodeId,
        /// Its term.
        term: Term,
    },
    /// `state:changed`: a key's value changed when a command was applied.
    StateChanged {
        /// The key.
        key: String,
        /// The new value (`None`: deleted).
        new_value: Option<Bytes>,
        /// The old value (`None`: absent).
        old_value: Option<Bytes>,
        /// The key's version after the change.
        version: Version,
    },
    /// `consensus:accepted`: a proposal was accepted (the result carries key and value).
    ConsensusAccepted(ProposalResult),
    /// `node:unreachable`: no traffic from a peer for an election timeout, or its link went down.
    NodeUnreachable {
        /// The peer.
        node: NodeId,
    },
    /// `node:reconnected`: a peer that was unreachable is heard from again.
    NodeReconnected {
        /// The peer.
        node: NodeId,
    },
    /// `partition:detected`: this node lost contact with part of the cluster.
    PartitionDetected {
        /// Minority (read-only) or majority side.
        side: PartitionSide,
        /// Nodes this node can reach (itself included).
        reachable: Vec<NodeId>,
    },
    /// `partition:healed`: every member is reachable again.
    PartitionHealed,
    /// `vote:requested`: a node asked this one for its vote.
    VoteRequested {
        /// The candidate or proposer.
        from: NodeId,
        /// The term (Raft) or version (majority) of the request.
        term: Term,
    },
    /// `vote:granted`: this node granted its vote.
    VoteGranted {
        /// The candidate or proposer.
        to: NodeId,
        /// The term (Raft) or version (majority).
        term: Term,
    },
    /// `log:appended`: an entry was appended to this node's log.
    LogAppended {
        /// Its index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// The key its command touches, if any.
        key: Option<String>,
    },
    /// A proposal awaits this node's manual vote (`VotingMode::Manual`): call `vote(proposal_id, …)`.
    ProposalReceived {
        /// The proposal to vote on.
        proposal_id: ProposalId,
        /// Its key.
        key: String,
        /// The version it is based on.
        version: Version,
        /// Its command.
        command: Command,
    },
    /// This node's role changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The term.
        term: Term,
    },
}

impl Event {
    /// The lesson's name for the event, e.g. `"leader:elected"`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::LeaderElected { .. } => "leader:elected",
            Event::StateChanged { .. } => "state:changed",
            Event::ConsensusAccepted(_) => "consensus:accepted",
            Event::NodeUnreachable { .. } => "node:unreachable",
            Event::NodeReconnected { .. } => "node:reconnected",
            Event::PartitionDetected { .. } => "partition:detected",
            Event::PartitionHealed => "partition:healed",
            Event::VoteRequested { .. } => "vote:requested",
            Event::VoteGranted { .. } => "vote:granted",
            Event::LogAppended { .. } => "log:appended",
            Event::ProposalReceived { .. } => "proposal:received",
            Event::RoleChanged { .. } => "role:changed",
        }
    }
}

/// Votes counted for a proposal (`result.votes.for`, `.against`, `.total` in the lesson).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Votes {
    /// Votes for.
    #[serde(rename = "for")]
    pub in_favor: usize,
    /// Votes against.
    pub against: usize,
    /// Voting members asked.
    pub total: usize,
}

/// The detailed outcome of a proposal (the lesson's `proposeWithResult`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProposalResult {
    /// The proposal.
    pub proposal_id: ProposalId,
    /// Whether it was accepted (and applied).
    pub accepted: bool,
    /// The key it targeted.
    pub key: String,
    /// The value it wrote, if it wrote one.
    pub value: Option<Bytes>,
    /// Votes counted. For Raft: replicas that stored the entry when it committed.
    pub votes: Votes,
    /// Votes a decision needed.
    pub quorum_required: usize,
    /// Why it was not accepted.
    pub error: Option<ProposalError>,
    /// What applying it did (key changes, a counter's value); `None` if not applied.
    pub output: Option<CommandOutput>,
    /// Where it was applied in the log (Raft) or decision sequence (majority).
    pub index: Option<LogIndex>,
    /// The decision was taken with a quorum that is not a strict majority: advisory only.
    pub advisory: bool,
}

impl ProposalResult {
    /// A failed result.
    pub fn failed(proposal_id: ProposalId, key: impl Into<String>, error: ProposalError) -> Self {
        ProposalResult {
            proposal_id,
            accepted: false,
            key: key.into(),
            value: None,
            votes: Votes::default(),
            quorum_required: 0,
            error: Some(error),
            output: None,
            index: None,
            advisory: false,
        }
    }
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Raft follower.
    Follower,
    /// Raft pre-candidate (pre-vote round).
    PreCandidate,
    /// Raft candidate.
    Candidate,
    /// Raft leader.
    Leader,
    /// Raft learner (non-voting).
    Learner,
    /// A simple-majority member (no leader).
    Peer,
}

/// Replication progress of one follower, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerProgress {
    /// Highest index known replicated on the follower.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// `probe`, `replicate` or `snapshot`.
    pub state: String,
    /// Replication messages in flight.
    pub inflight_messages: usize,
}

/// The lesson's `getDebugState()`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugState {
    /// This node.
    pub node_id: NodeId,
    /// `raft` or `simple_majority`.
    pub mechanism: String,
    /// Current term.
    pub current_term: Term,
    /// Role.
    pub role: Role,
    /// Known leader.
    pub leader_id: Option<NodeId>,
    /// Commit index.
    pub commit_index: LogIndex,
    /// Last applied index.
    pub last_applied: LogIndex,
    /// Entries in the log (after the snapshot) — the lesson's `logLength`.
    pub log_length: u64,
    /// Last index in the log.
    pub last_log_index: LogIndex,
    /// Index covered by the latest snapshot.
    pub snapshot_index: LogIndex,
    /// Per-follower progress (leader only).
    pub followers: BTreeMap<NodeId, FollowerProgress>,
    /// Proposals waiting for a decision on this node.
    pub pending_proposals: usize,
    /// Results kept in the replica's session table for exactly-once retries (at most
    /// `maxClientSessions`). With Raft, clients' acknowledgements keep it near the proposals in
    /// flight.
    pub session_results: usize,
    /// Clients the session table remembers (at most `maxClientRecords`; idle ones expire after
    /// `clientSessionExpiry`).
    pub session_clients: usize,
    /// Clients the session table forgot by expiry since this node started (a restarted node counts
    /// again those of the entries it replays).
    pub session_clients_expired: u64,
}
