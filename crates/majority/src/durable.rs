//! What simple majority keeps on disk, and its encoding.
//!
//! - **The decision log** (`Persist::entries`): every decision this node applied, in its local
//!   apply order, at local positions 1, 2, 3… A client proposal is an `EntryPayload::Command`, a
//!   membership change an `EntryPayload::Membership`, and an aborted slot a `Command::Delete` of
//!   the slot's key inside a proposal whose origin is [`ABORT_ORIGIN`] (a node id no real node can
//!   have: `NodeId::parse` refuses the NUL character), so the key survives without a core change.
//!   Replaying the log in order gives back every key's position, because each decision is logged
//!   at the position it was applied at.
//! - **Snapshots** (`Persist::snapshot`): [`StateSnapshot`] in postcard, every `snapshotInterval`
//!   decisions; `meta.last_index` is the local position it covers.
//! - **Records** (`Persist::records`): one per open slot this node has promised or voted in
//!   (`vote/` + slot), deleted when the slot is applied; and `incarnation`, the restart count.

use std::collections::BTreeMap;

use bytes::Bytes;
use concord_core::command::Command;
use concord_core::id::{Membership, NodeId, ProposalId};
use concord_core::message::{Ballot, CastVote, EntryPayload, Proposal, Slot};
use serde::{Deserialize, Serialize};

/// The proposal origin that marks an aborted slot in the decision log.
pub(crate) const ABORT_ORIGIN: &str = "\u{0}abort";
/// Record key of the restart count.
pub(crate) const INCARNATION_RECORD: &[u8] = b"incarnation";
/// Prefix of the records holding a slot's promise and vote.
pub(crate) const VOTE_RECORD_PREFIX: &[u8] = b"vote/";

/// A key's position: its version and the decisions at that version that did not change it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Position {
    pub(crate) version: u64,
    pub(crate) attempt: u64,
}

impl Position {
    pub(crate) fn of(slot: &Slot) -> Position {
        Position { version: slot.version, attempt: slot.attempt }
    }

    pub(crate) fn slot(self, key: &str) -> Slot {
        Slot { key: key.to_owned(), version: self.version, attempt: self.attempt }
    }
}

/// A member's durable promise and vote in one open slot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Acceptance {
    /// Highest recovery ballot promised (none: only the fast round so far).
    pub(crate) promised: Option<Ballot>,
    /// Latest vote.
    pub(crate) voted: Option<CastVote>,
}

/// The snapshot of one node's whole state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateSnapshot {
    /// Every key ever decided, with its position (the membership key too).
    pub(crate) positions: BTreeMap<String, Position>,
    /// Current membership epoch.
    pub(crate) epoch: u64,
    /// Recent memberships by epoch, the current one last.
    pub(crate) memberships: BTreeMap<u64, Membership>,
    /// `Replica::snapshot` bytes.
    pub(crate) replica: Bytes,
}

impl StateSnapshot {
    pub(crate) fn encode(&self) -> Bytes {
        // Encoding plain maps and byte strings into a Vec cannot fail.
        Bytes::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<StateSnapshot, String> {
        match postcard::take_from_bytes::<StateSnapshot>(bytes) {
            Ok((snapshot, [])) => Ok(snapshot),
            Ok((_, rest)) => Err(format!("{} trailing bytes after the snapshot", rest.len())),
            Err(error) => Err(error.to_string()),
        }
    }
}

pub(crate) fn vote_record_key(slot: &Slot) -> Bytes {
    // Encoded straight after the prefix, into one buffer sized for a short key.
    let mut key = Vec::with_capacity(VOTE_RECORD_PREFIX.len() + slot.key.len() + 24);
    key.extend_from_slice(VOTE_RECORD_PREFIX);
    // Encoding a string and integers into a Vec cannot fail.
    let key = postcard::to_extend(slot, key).unwrap_or_else(|_| VOTE_RECORD_PREFIX.to_vec());
    Bytes::from(key)
}

pub(crate) fn decode_vote_record(key: &[u8], value: &[u8]) -> Option<(Slot, Acceptance)> {
    let slot_bytes = key.strip_prefix(VOTE_RECORD_PREFIX)?;
    let slot = postcard::from_bytes::<Slot>(slot_bytes).ok()?;
    let acceptance = postcard::from_bytes::<Acceptance>(value).ok()?;
    Some((slot, acceptance))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(postcard::to_allocvec(value).unwrap_or_default())
}

impl Acceptance {
    /// The record's value, encoded into one buffer sized for the vote's decision (written for
    /// every vote: growing from empty would copy it several times).
    pub(crate) fn encode(&self) -> Bytes {
        let decision_bytes = self.voted.as_ref().map_or(0, |voted| voted.decision.size_bytes());
        let buffer = Vec::with_capacity(64 + decision_bytes);
        // Encoding ballots, ids and byte strings into a Vec cannot fail.
        Bytes::from(postcard::to_extend(self, buffer).unwrap_or_default())
    }
}

/// The log payload of an aborted slot of `key`.
pub(crate) fn abort_payload(key: &str) -> EntryPayload {
    EntryPayload::Command(std::sync::Arc::new(Proposal {
        id: ProposalId { origin: NodeId::new(ABORT_ORIGIN), sequence: 0 },
        session: None,
        command: Command::Delete { key: key.to_owned() },
    }))
}
