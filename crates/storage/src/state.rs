//! The in-memory index of what is durable, and how each group of log records changes it.
//!
//! The same [`LogState::apply_group`] runs when a segment is replayed on open and right after a
//! group was written and synced, so the live index and the replayed one cannot drift apart.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use concord_core::storage::{HardState, StorageError};
use serde::{Deserialize, Serialize};

use crate::record::{RecordKind, RecordView, RECORD_HEADER_BYTES};

/// The segment of an entry written in a segment that was deleted (known to exist, not where).
/// Such entries must all be gone by the end of replay; one that is still live means a segment
/// that was needed has disappeared.
pub(crate) const SEGMENT_MISSING: u64 = u64::MAX;

/// Which snapshot file is current, as the log records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRef {
    /// Number in the snapshot's file name.
    pub(crate) sequence: u64,
    /// The snapshot's last index.
    pub(crate) last_index: u64,
    /// The snapshot's last term.
    pub(crate) last_term: u64,
}

/// Payload of a [`RecordKind::Snapshot`] record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotMarker {
    /// Number in the snapshot's file name.
    pub(crate) sequence: u64,
    /// Whether the log after the snapshot was kept (the entry at the snapshot's index had the
    /// snapshot's term) or dropped. Recorded rather than recomputed on replay because the entry
    /// it depends on may be in a segment that was deleted since.
    pub(crate) keep_entries: bool,
}

/// Payload of a [`RecordKind::Checkpoint`] record; the group that follows holds one
/// [`RecordKind::RecordPut`] per durable record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The current snapshot.
    pub(crate) snapshot: Option<SnapshotRef>,
    /// The current hard state.
    pub(crate) hard_state: HardState,
}

/// Where one live entry's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryLocation {
    /// The entry's term (needed to decide whether a snapshot keeps the log after it).
    pub(crate) term: u64,
    /// The segment's sequence, or [`SEGMENT_MISSING`].
    pub(crate) segment: u64,
    /// Byte offset of the record's header in the segment.
    pub(crate) offset: u64,
}

/// What is durable: hard state, records, current snapshot, and where each live entry is.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogState {
    pub(crate) snapshot: Option<SnapshotRef>,
    /// `entries[i]` is the entry at index `snapshot_index() + 1 + i`: the log always starts right
    /// after the snapshot (the storage contract keeps it contiguous).
    pub(crate) entries: VecDeque<EntryLocation>,
    pub(crate) hard_state: HardState,
    pub(crate) records: BTreeMap<Bytes, Bytes>,
    /// Sum of key and value lengths of `records`.
    pub(crate) records_bytes: u64,
}

/// Where a group came from, for applying it and for naming it in errors.
pub(crate) struct GroupSource<'a> {
    /// The segment's bytes (the group's record views point into them).
    pub(crate) bytes: &'a [u8],
    /// The segment's sequence.
    pub(crate) segment: u64,
    /// The segment's path, for errors.
    pub(crate) file: &'a str,
    /// File offset of `bytes[0]` (a group just written is applied from the write buffer).
    pub(crate) base_offset: u64,
}

impl LogState {
    pub(crate) fn snapshot_index(&self) -> u64 {
        self.snapshot.map_or(0, |snapshot| snapshot.last_index)
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// The term of the live entry at `index`, if there is one (the snapshot does not count).
    pub(crate) fn term_at(&self, index: u64) -> Option<u64> {
        let position = index.checked_sub(self.snapshot_index() + 1)?;
        self.entries.get(usize::try_from(position).ok()?).map(|location| location.term)
    }

    fn install_snapshot(&mut self, snapshot: SnapshotRef, keep_entries: bool) {
        if keep_entries {
            let covered = snapshot.last_index - self.snapshot_index();
            self.entries.drain(..covered as usize);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(snapshot);
    }

    fn truncate_from(&mut self, from: u64) {
        let keep = from.saturating_sub(self.snapshot_index() + 1);
        if (keep as usize) < self.entries.len() {
            self.entries.truncate(keep as usize);
        }
    }

    fn put_record(&mut self, key: Bytes, value: Bytes) {
        let added = (key.len() + value.len()) as u64;
        if let Some(old) = self.records.insert(key.clone(), value) {
            self.records_bytes -= (key.len() + old.len()) as u64;
        }
        self.records_bytes += added;
    }

    fn delete_record(&mut self, key: &Bytes) {
        if let Some(old) = self.records.remove(key) {
            self.records_bytes -= (key.len() + old.len()) as u64;
        }
    }

    /// Starts replay from a segment's checkpoint group: everything before it is summarized there,
    /// except where the entries it counts are (those segments may be gone).
    pub(crate) fn from_checkpoint(
        group: &[RecordView],
        source: &GroupSource<'_>,
    ) -> Result<Self, StorageError> {
        let (first, rest) = split_checkpoint(group, source)?;
        let checkpoint: Checkpoint = decode(first, source)?;
        let snapshot_index = checkpoint.snapshot.map_or(0, |snapshot| snapshot.last_index);
        if first.index < snapshot_index {
            return Err(corrupt_at(source, first, "checkpoint's log ends before its snapshot"));
        }
        let missing = EntryLocation { term: 0, segment: SEGMENT_MISSING, offset: 0 };
        let mut state = LogState {
            snapshot: checkpoint.snapshot,
            entries: VecDeque::from(vec![missing; (first.index - snapshot_index) as usize]),
            hard_state: checkpoint.hard_state,
            records: BTreeMap::new(),
            records_bytes: 0,
        };
        for record in rest {
            if record.kind != RecordKind::RecordPut {
                return Err(corrupt_at(
                    source,
                    record,
                    "checkpoint group holds a record that is not a record put",
                ));
            }
            let (key, value): (Bytes, Bytes) = decode(record, source)?;
            state.put_record(key, value);
        }
        Ok(state)
    }

    /// Checks that a later segment's checkpoint agrees with the replayed state.
    pub(crate) fn check_checkpoint(
        &self,
        group: &[RecordView],
        source: &GroupSource<'_>,
    ) -> Result<(), StorageError> {
        let (first, rest) = split_checkpoint(group, source)?;
        let checkpoint: Checkpoint = decode(first, source)?;
        if first.index != self.last_index()
            || checkpoint.snapshot != self.snapshot
            || checkpoint.hard_state != self.hard_state
            || rest.len() != self.records.len()
        {
            return Err(corrupt_at(source, first, "checkpoint disagrees with the segments before it"));
        }
        Ok(())
    }

    /// Applies one committed group (everything one `persist` wrote), in order.
    pub(crate) fn apply_group(
        &mut self,
        group: &[RecordView],
        source: &GroupSource<'_>,
    ) -> Result<(), StorageError> {
        for record in group {
            match record.kind {
                RecordKind::Entry => {
                    if record.index != self.last_index() + 1 {
                        return Err(corrupt_at(
                            source,
                            record,
                            format!(
                                "entry {} does not follow the log's last index {}",
                                record.index,
                                self.last_index()
                            ),
                        ));
                    }
                    let offset = source.base_offset + (record.payload.start - RECORD_HEADER_BYTES) as u64;
                    self.entries.push_back(EntryLocation {
                        term: record.term,
                        segment: source.segment,
                        offset,
                    });
                }
                RecordKind::Truncate => self.truncate_from(record.index),
                RecordKind::Snapshot => {
                    let marker: SnapshotMarker = decode(record, source)?;
                    if record.index < self.snapshot_index() {
                        return Err(corrupt_at(source, record, "snapshot older than the current one"));
                    }
                    let continues_stored = self.snapshot.is_some_and(|stored| {
                        stored.last_index == record.index && stored.last_term == record.term
                    });
                    if marker.keep_entries && !continues_stored {
                        // The decision was made when the entry was known; check it where it still is.
                        match self.term_at(record.index) {
                            None => {
                                return Err(corrupt_at(
                                    source,
                                    record,
                                    "snapshot keeps a log that does not reach it",
                                ))
                            }
                            Some(term) if term != record.term && !self.is_missing(record.index) => {
                                return Err(corrupt_at(
                                    source,
                                    record,
                                    "snapshot keeps a log of another term",
                                ))
                            }
                            Some(_) => {}
                        }
                    }
                    let snapshot = SnapshotRef {
                        sequence: marker.sequence,
                        last_index: record.index,
                        last_term: record.term,
                    };
                    self.install_snapshot(snapshot, marker.keep_entries);
                }
                RecordKind::HardState => self.hard_state = decode(record, source)?,
                RecordKind::RecordPut => {
                    let (key, value): (Bytes, Bytes) = decode(record, source)?;
                    self.put_record(key, value);
                }
                RecordKind::RecordDelete => {
                    let key: Bytes = decode(record, source)?;
                    self.delete_record(&key);
                }
                RecordKind::Checkpoint => {
                    return Err(corrupt_at(source, record, "checkpoint record that does not start a segment"))
                }
                RecordKind::Commit => return Err(corrupt_at(source, record, "commit record inside a group")),
            }
        }
        Ok(())
    }

    fn is_missing(&self, index: u64) -> bool {
        let position = (index - self.snapshot_index() - 1) as usize;
        self.entries.get(position).is_some_and(|location| location.segment == SEGMENT_MISSING)
    }

    /// The first live entry whose segment is gone, if any.
    pub(crate) fn first_missing_entry(&self) -> Option<u64> {
        let position = self.entries.iter().position(|location| location.segment == SEGMENT_MISSING)?;
        Some(self.snapshot_index() + 1 + position as u64)
    }
}

fn split_checkpoint<'g>(
    group: &'g [RecordView],
    source: &GroupSource<'_>,
) -> Result<(&'g RecordView, &'g [RecordView]), StorageError> {
    match group.split_first() {
        Some((first, rest)) if first.kind == RecordKind::Checkpoint => Ok((first, rest)),
        Some((first, _)) => Err(corrupt_at(source, first, "segment does not start with a checkpoint")),
        None => Err(StorageError::Corrupt {
            file: source.file.to_owned(),
            offset: 0,
            reason: "segment does not start with a checkpoint".into(),
        }),
    }
}

fn decode<'a, T: Deserialize<'a>>(record: &RecordView, source: &GroupSource<'a>) -> Result<T, StorageError> {
    postcard::from_bytes(&source.bytes[record.payload.clone()]).map_err(|error| {
        corrupt_at(source, record, format!("undecodable {:?} payload: {error}", record.kind))
    })
}

pub(crate) fn corrupt_at(
    source: &GroupSource<'_>,
    record: &RecordView,
    reason: impl Into<String>,
) -> StorageError {
    StorageError::Corrupt {
        file: source.file.to_owned(),
        offset: source.base_offset + (record.payload.start - RECORD_HEADER_BYTES) as u64,
        reason: reason.into(),
    }
}
