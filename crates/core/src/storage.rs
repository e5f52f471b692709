//! What a mechanism persists, the storage trait that persists it, and an in-memory implementation.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::{LogIndex, NodeId, Term};
use crate::message::{Entry, Snapshot};

/// The state a node must never forget: its term and its vote in that term.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Current term.
    pub term: Term,
    /// Who this node voted for in `term`.
    pub voted_for: Option<NodeId>,
    /// Last known commit index. Raft saves it with the entries it covers, and a restart applies up
    /// to it before hearing from a leader (an optimization: recomputed from the leader if lost).
    pub commit: LogIndex,
}

/// One write of a mechanism-specific durable record (simple majority's votes); `None` deletes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordWrite {
    /// The record's key.
    pub key: Bytes,
    /// The new value, or `None` to delete.
    pub value: Option<Bytes>,
}

/// Writes a mechanism asks for, applied by storage in this order: `snapshot` (which drops the log
/// it covers), `truncate_from`, `entries`, `hard_state`, `records`. Durable when `persist` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persist {
    /// A new snapshot; the log up to its `last_index` may be discarded.
    pub snapshot: Option<Snapshot>,
    /// Drop log entries at and after this index (a Raft conflict).
    pub truncate_from: Option<LogIndex>,
    /// Entries to append, contiguous, starting right after the (truncated) log's last index, or
    /// right after the snapshot.
    pub entries: Vec<Entry>,
    /// A new hard state.
    pub hard_state: Option<HardState>,
    /// Record writes.
    pub records: Vec<RecordWrite>,
}

impl Persist {
    /// Takes the whole write, leaving an empty one whose entry and record buffers keep the
    /// capacity this one needed (a mechanism's next batch is usually about as large).
    pub fn take_with_capacity(&mut self) -> Persist {
        let taken = std::mem::take(self);
        self.entries = Vec::with_capacity(taken.entries.len());
        self.records = Vec::with_capacity(taken.records.len());
        taken
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.truncate_from.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.records.is_empty()
    }
}

/// Everything storage recovered on open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// The latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The log entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// Durable records.
    pub records: BTreeMap<Bytes, Bytes>,
}

/// Why storage failed. After an error the node must stop acknowledging writes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The disk is full.
    #[error("storage full: {0}")]
    Full(String),
    /// An I/O error.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Data on disk is corrupt (a bad checksum, an impossible record).
    #[error("corrupt storage: {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        file: String,
        /// Byte offset of the bad record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The mechanism asked for something impossible (e.g. non-contiguous entries): a bug.
    #[error("invalid write: {0}")]
    InvalidWrite(String),
    /// An earlier error made this storage refuse further writes.
    #[error("storage has failed earlier and refuses writes: {0}")]
    Failed(String),
}

/// Durable storage for one node. Writes come from the mechanism (through [`Persist`]); the
/// mechanism reads back only at start, through [`Storage::recover`].
pub trait Storage: Send + 'static {
    /// Reads back everything durable.
    fn recover(&mut self) -> Result<Recovered, StorageError>;
    /// Makes `persist` durable (one sync for the whole batch) before returning.
    fn persist(&mut self, persist: &Persist) -> Result<(), StorageError>;

    /// Whether `persist` may block the thread for long (file I/O): async drivers then run it on a
    /// blocking thread; in-memory stores answer `false` and are called inline.
    fn is_blocking(&self) -> bool {
        true
    }
}

/// Storage in memory: fast, and forgets everything when the process ends. It checks every write
/// the way a durable store would, so a mechanism bug shows up here too.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    state: Recovered,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// What is stored now.
    pub fn state(&self) -> &Recovered {
        &self.state
    }

    /// Index of the last entry (or of the snapshot, if the log after it is empty).
    pub fn last_index(&self) -> LogIndex {
        self.state
            .entries
            .last()
            .map(|e| e.index)
            .or_else(|| self.state.snapshot.as_ref().map(|s| s.meta.last_index))
            .unwrap_or(LogIndex::ZERO)
    }
}

impl Storage for MemoryStorage {
    fn recover(&mut self) -> Result<Recovered, StorageError> {
        Ok(self.state.clone())
    }

    fn persist(&mut self, persist: &Persist) -> Result<(), StorageError> {
        apply_persist(&mut self.state, persist)
    }

    fn is_blocking(&self) -> bool {
        false
    }
}

/// Applies a [`Persist`] to an in-memory [`Recovered`], checking contiguity. Durable stores use it
/// for their in-memory index too.
pub fn apply_persist(state: &mut Recovered, persist: &Persist) -> Result<(), StorageError> {
    // Every check comes before the first change, so a refused write leaves the state as it was
    // (a durable store built on this must not half-apply a batch either).
    let stored_snapshot_last = state.snapshot.as_ref().map_or(LogIndex::ZERO, |s| s.meta.last_index);
    let mut snapshot_last = stored_snapshot_last;
    let mut log_last = state.entries.last().map_or(stored_snapshot_last, |e| e.index);
    // Keep the entries a new snapshot does not cover only if they continue it (same term at the
    // snapshot's index, in the log or as the stored snapshot); otherwise it replaces the whole log.
    let mut keep_log_after_snapshot = true;
    if let Some(snapshot) = &persist.snapshot {
        let last = snapshot.meta.last_index;
        if last < stored_snapshot_last {
            return Err(StorageError::InvalidWrite(format!(
                "snapshot at {last} is older than the stored one at {stored_snapshot_last}"
            )));
        }
        let continued_by_stored = state
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.last_index == last && s.meta.last_term == snapshot.meta.last_term);
        keep_log_after_snapshot = continued_by_stored
            || state.entries.iter().any(|e| e.index == last && e.term == snapshot.meta.last_term);
        snapshot_last = last;
        log_last = if keep_log_after_snapshot { log_last.max(last) } else { last };
    }
    if let Some(from) = persist.truncate_from {
        log_last = log_last.min(from.prev()).max(snapshot_last);
    }
    for pair in persist.entries.windows(2) {
        if pair[1].index != pair[0].index.next() {
            return Err(StorageError::InvalidWrite(format!(
                "entries are not contiguous: {} follows {}",
                pair[1].index, pair[0].index
            )));
        }
    }
    // An append may also overwrite a suffix without an explicit truncate, but never what a snapshot
    // covers.
    let overwrite_from = match persist.entries.first() {
        Some(first) if first.index == log_last.next() => None,
        Some(first) if first.index <= log_last && first.index > snapshot_last => Some(first.index),
        Some(first) => {
            return Err(StorageError::InvalidWrite(format!(
                "entries start at {} but the log ends at {log_last} (snapshot at {snapshot_last})",
                first.index
            )));
        }
        None => None,
    };

    if let Some(snapshot) = &persist.snapshot {
        let last = snapshot.meta.last_index;
        if keep_log_after_snapshot {
            state.entries.retain(|e| e.index > last);
        } else {
            state.entries.clear();
        }
        state.snapshot = Some(snapshot.clone());
    }
    if let Some(from) = persist.truncate_from {
        state.entries.retain(|e| e.index < from);
    }
    if let Some(from) = overwrite_from {
        state.entries.retain(|e| e.index < from);
    }
    state.entries.extend(persist.entries.iter().cloned());
    if let Some(hard_state) = &persist.hard_state {
        state.hard_state = hard_state.clone();
    }
    for record in &persist.records {
        match &record.value {
            Some(value) => {
                state.records.insert(record.key.clone(), value.clone());
            }
            None => {
                state.records.remove(&record.key);
            }
        }
    }
    Ok(())
}
