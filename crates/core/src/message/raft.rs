use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Entry, Proposal, SnapshotMeta};
use crate::error::ProposalError;
use crate::id::{LogIndex, Term};

/// Raft's messages (the paper's RPCs plus pre-vote, ReadIndex, transfer and forwarding).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RaftMessage {
    /// RequestVote (§5.2), or a pre-vote probe that changes no state on the receiver.
    VoteRequest {
        /// Candidate's term (for a pre-vote: the term it would campaign in).
        term: Term,
        /// Index of the candidate's last log entry (§5.4.1).
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry (§5.4.1).
        last_log_term: Term,
        /// A pre-vote probe.
        pre_vote: bool,
        /// Campaign started by a leadership transfer: voters ignore their leader lease.
        transfer: bool,
    },
    /// Answer to a vote request.
    VoteResponse {
        /// Responder's term (for a pre-vote: the term from the request when granted).
        term: Term,
        /// Whether the vote is granted.
        granted: bool,
        /// Answer to a pre-vote probe.
        pre_vote: bool,
    },
    /// AppendEntries (§5.3); empty `entries` is a heartbeat.
    Append {
        /// Leader's term.
        term: Term,
        /// Index of the entry before `entries`.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// Entries to store (may be empty).
        entries: Vec<Entry>,
        /// Leader's commit index.
        leader_commit: LogIndex,
        /// ReadIndex round this message confirms leadership for (0: none).
        read_round: u64,
    },
    /// Answer to an append.
    AppendResponse {
        /// Responder's term.
        term: Term,
        /// Whether the consistency check passed.
        success: bool,
        /// On success, the last index known to match the leader's log.
        match_index: LogIndex,
        /// On failure, where the leader should back up to (conflict hint).
        conflict: Option<ConflictHint>,
        /// The responder's last log index.
        last_log_index: LogIndex,
        /// Echo of the append's read round.
        read_round: u64,
    },
    /// InstallSnapshot, one bounded chunk at a time.
    InstallSnapshot {
        /// Leader's term.
        term: Term,
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// Byte offset of this chunk in the snapshot.
        offset: u64,
        /// Total snapshot size.
        total_bytes: u64,
        /// The chunk.
        data: Bytes,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// Answer to a snapshot chunk: where the follower wants the next chunk to start.
    InstallSnapshotResponse {
        /// Responder's term.
        term: Term,
        /// The snapshot's last index (identifies the transfer).
        last_index: LogIndex,
        /// The next byte offset wanted (the total when done).
        next_offset: u64,
        /// Whether the snapshot was installed.
        done: bool,
    },
    /// Leadership transfer: the target starts an election at once.
    TimeoutNow {
        /// Leader's term.
        term: Term,
    },
    /// A follower forwards a proposal to the leader.
    ForwardProposal {
        /// Sender's term.
        term: Term,
        /// The proposal (shared: the leader appends it as is).
        #[serde(deserialize_with = "super::deserialize_shared")]
        proposal: Arc<Proposal>,
    },
    /// The leader could not take a forwarded proposal.
    ForwardRejected {
        /// Leader's term.
        term: Term,
        /// The proposal's id (its origin waits for it).
        proposal: crate::id::ProposalId,
        /// Why.
        error: ProposalError,
    },
    /// A follower asks the leader for a read index.
    ReadIndexRequest {
        /// Sender's term.
        term: Term,
        /// Follower's request number.
        request: u64,
    },
    /// The leader's answer: read at or after `index` (or an error).
    ReadIndexResponse {
        /// Leader's term.
        term: Term,
        /// Echo of the request number.
        request: u64,
        /// The read index, or why there is none.
        result: Result<LogIndex, ProposalError>,
    },
}

/// Fast log back-tracking hint (Raft §5.3, "the follower can include the term of the conflicting
/// entry and the first index it stores for that term").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The `prev_log_index` of the append being rejected (lets the leader drop stale rejections).
    pub rejected_index: LogIndex,
    /// Term of the follower's entry at `prev_log_index`, if it has one.
    pub term: Option<Term>,
    /// First index the follower stores for that term, or its last index + 1 if its log is shorter.
    pub index: LogIndex,
}

impl RaftMessage {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            RaftMessage::VoteRequest { pre_vote: true, .. } => "raft.pre_vote_request",
            RaftMessage::VoteRequest { .. } => "raft.vote_request",
            RaftMessage::VoteResponse { pre_vote: true, .. } => "raft.pre_vote_response",
            RaftMessage::VoteResponse { .. } => "raft.vote_response",
            RaftMessage::Append { .. } => "raft.append",
            RaftMessage::AppendResponse { .. } => "raft.append_response",
            RaftMessage::InstallSnapshot { .. } => "raft.install_snapshot",
            RaftMessage::InstallSnapshotResponse { .. } => "raft.install_snapshot_response",
            RaftMessage::TimeoutNow { .. } => "raft.timeout_now",
            RaftMessage::ForwardProposal { .. } => "raft.forward_proposal",
            RaftMessage::ForwardRejected { .. } => "raft.forward_rejected",
            RaftMessage::ReadIndexRequest { .. } => "raft.read_index_request",
            RaftMessage::ReadIndexResponse { .. } => "raft.read_index_response",
        }
    }

    /// The sender's term.
    pub fn term(&self) -> Term {
        match self {
            RaftMessage::VoteRequest { term, .. }
            | RaftMessage::VoteResponse { term, .. }
            | RaftMessage::Append { term, .. }
            | RaftMessage::AppendResponse { term, .. }
            | RaftMessage::InstallSnapshot { term, .. }
            | RaftMessage::InstallSnapshotResponse { term, .. }
            | RaftMessage::TimeoutNow { term }
            | RaftMessage::ForwardProposal { term, .. }
            | RaftMessage::ForwardRejected { term, .. }
            | RaftMessage::ReadIndexRequest { term, .. }
            | RaftMessage::ReadIndexResponse { term, .. } => *term,
        }
    }
}
