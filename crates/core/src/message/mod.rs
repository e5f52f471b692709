//! Messages nodes exchange, and the log entries and snapshots they carry.
//!
//! These are plain Rust types; the wire format (postcard in a versioned envelope) lives in
//! [`crate::codec`]. Each mechanism has its own message family; a node that receives the other
//! family's messages reports a peer error (two mechanisms in one cluster is a misconfiguration).

mod majority;
mod raft;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use majority::*;
pub use raft::*;

use crate::command::Command;
use crate::id::{ClientSession, LogIndex, Membership, ProposalId, Term};

/// Every message of every mechanism.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Raft's messages.
    Raft(RaftMessage),
    /// Simple majority's messages.
    Majority(MajorityMessage),
}

impl Message {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Raft(message) => message.kind(),
            Message::Majority(message) => message.kind(),
        }
    }
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log.
    pub index: LogIndex,
    /// Term of the leader that created it.
    pub term: Term,
    /// Wall-clock milliseconds since the Unix epoch by the leader that created it, never less than
    /// the previous entry's (leases and locks expire by these stamps, not by each node's clock).
    /// Raft caps a leader's stamps at the newest stamp it saw from earlier leaders plus the time it
    /// measured since and one second, so a node whose clock is far ahead cannot move leader time
    /// forward by its error; after a whole-cluster outage leader time stays behind the wall clock
    /// by about the outage.
    pub timestamp_ms: u64,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// Approximate encoded size, for in-flight and batch byte limits.
    pub fn size_bytes(&self) -> usize {
        24 + match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(proposal) => 32 + proposal.command.size_bytes(),
            EntryPayload::Membership(membership) => 64 * membership.members.len().max(1),
        }
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by a new leader to commit entries of earlier terms (Raft §5.4.2, §8).
    Noop,
    /// A client command. Shared, not copied: the same entry sits in the log, in the pending persist
    /// and in every follower's append message, so a clone is a reference-count increment.
    Command(#[serde(deserialize_with = "deserialize_shared")] Arc<Proposal>),
    /// A new membership (takes effect when appended, as in one-server-at-a-time changes). Boxed:
    /// membership entries are rare, and inline it would make every entry of every log 16 bytes
    /// larger (56 instead of 40), memory a log of a million entries touches on every node.
    Membership(Box<Membership>),
}

/// Decodes a shared value in one allocation. Serde's own `Arc<T>` decodes into a `Box<T>` first and
/// then copies it into a new allocation (two allocations, a copy and a free for every decoded
/// entry: a tenth of a log's replay at start). The encoding is the value's own either way.
pub(crate) fn deserialize_shared<'de, D, T>(deserializer: D) -> Result<Arc<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Arc::new)
}

/// A client command with its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Identifies the proposal so that the node that made it can match the result.
    pub id: ProposalId,
    /// Exactly-once session, if the client retries.
    pub session: Option<ClientSession>,
    /// The command.
    pub command: Command,
}

/// What a snapshot covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Last log index the snapshot includes.
    pub last_index: LogIndex,
    /// Term of that entry.
    pub last_term: Term,
    /// The membership as of `last_index`.
    pub membership: Membership,
}

/// A snapshot of the replicated state machine (sessions included) and its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// [`crate::state_machine::Replica::snapshot`] bytes.
    pub data: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every log holds one of these per entry on every node (and memory storage another): a
    /// variant that grows it grows every log.
    #[test]
    fn a_log_entry_takes_forty_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }
}
