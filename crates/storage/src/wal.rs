//! [`FileStorage`]: opening (replay and repair), persisting (group commit), and reading back.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io;
use std::path::Path;

use bytes::Bytes;
use concord_core::message::{Entry, Snapshot};
use concord_core::storage::{Persist, Recovered, Storage, StorageError};

use crate::file::{Directory, OsDirectory, WritableFile};
use crate::record::{
    decode_segment_header, decode_snapshot_file, encode_record, encode_record_bytes, encode_segment_header,
    encode_snapshot_file, parse_checked_record, parse_record, Parsed, RecordKind, RecordView, COMMIT_TRAILER,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::state::{corrupt_at, Checkpoint, GroupSource, LogState, SnapshotMarker, SnapshotRef};

/// Limits of a [`FileStorage`]. Every one has a default that suits a node with a few gigabytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStorageOptions {
    /// A new segment is started before a write would take the current one past this many bytes.
    /// One `persist` is never split across segments, so a single larger write makes a larger
    /// segment. Default 64 MiB.
    pub segment_bytes_max: u64,
    /// Largest encoded log record: one entry, or one mechanism record. Larger writes are refused
    /// with [`StorageError::InvalidWrite`]; on reading, a larger record is corruption. Default 16 MiB.
    pub record_bytes_max: u32,
    /// Largest total size (keys plus values) of the mechanism's records, which every new segment
    /// repeats. Default 4 MiB.
    pub records_bytes_max: u64,
    /// Largest encoded snapshot. Default 1 GiB.
    pub snapshot_bytes_max: u64,
    /// The current segment is extended with this many zero bytes at a time, written ahead of the
    /// log: an fdatasync of data written over existing blocks needs no file-system journal
    /// commit, while one of data that grows the file does. 0 turns it off. Default 1 MiB.
    pub preallocation_bytes: u64,
}

impl Default for FileStorageOptions {
    fn default() -> Self {
        FileStorageOptions {
            segment_bytes_max: 64 << 20,
            record_bytes_max: 16 << 20,
            records_bytes_max: 4 << 20,
            snapshot_bytes_max: 1 << 30,
            preallocation_bytes: 1 << 20,
        }
    }
}

impl FileStorageOptions {
    /// Smallest `segment_bytes_max` accepted: below it, a segment holds little more than its
    /// checkpoint.
    pub const SEGMENT_BYTES_MIN: u64 = 4096;
    /// Smallest `record_bytes_max` accepted: the checkpoint and hard state records must fit.
    pub const RECORD_BYTES_MIN: u32 = 1024;

    /// Where the file should end after writing `length` bytes at `offset`: `preallocation_bytes`
    /// further, but not past the segment size unless the write itself is.
    fn preallocated_end(&self, offset: u64, length: u64) -> u64 {
        let end = offset + length;
        (end + self.preallocation_bytes).min(self.segment_bytes_max.max(end))
    }

    fn validate(&self) -> Result<(), StorageError> {
        let problem = if self.segment_bytes_max < Self::SEGMENT_BYTES_MIN {
            format!("segment_bytes_max {} is below {}", self.segment_bytes_max, Self::SEGMENT_BYTES_MIN)
        } else if self.record_bytes_max < Self::RECORD_BYTES_MIN {
            format!("record_bytes_max {} is below {}", self.record_bytes_max, Self::RECORD_BYTES_MIN)
        } else if self.record_bytes_max > u32::MAX - RECORD_HEADER_BYTES as u32 {
            format!("record_bytes_max {} does not fit the record format", self.record_bytes_max)
        } else {
            return Ok(());
        };
        Err(StorageError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad FileStorageOptions: {problem}"),
        )))
    }
}

/// Durable storage in one directory: a segmented write-ahead log holding entries, hard state and
/// records, plus snapshot files. See the crate documentation for the layout and the guarantees.
pub struct FileStorage {
    directory: Box<dyn Directory>,
    options: FileStorageOptions,
    state: LogState,
    /// Sequences of the segments on disk, oldest first; the last one is `current`.
    segments: Vec<u64>,
    current: Box<dyn WritableFile>,
    /// Where the current segment's log ends (the next group goes here).
    current_length: u64,
    /// The current segment's file length: beyond `current_length` it is preallocated zeros.
    allocated_length: u64,
    /// Where the current segment's checkpoint group ends: a segment that holds nothing more is
    /// not worth rotating away from.
    current_checkpoint_end: u64,
    /// Sequence of the next group's commit record.
    next_group: u64,
    next_snapshot_sequence: u64,
    /// Why writes are refused, after an I/O error.
    failure: Option<String>,
    /// Reused for every group, so appends do not allocate once it has grown.
    buffer: Vec<u8>,
    /// The segments `open` read and verified, as read (`(sequence, bytes)`), kept for the first
    /// `recover`: it then decodes entries from them instead of reading and checksumming every
    /// segment a second time. At most the log's size on disk, which `recover` turns into entries
    /// anyway; emptied by `recover` and by the first `persist` (which changes the files).
    verified_segments: Vec<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("directory", &self.directory.describe(""))
            .field("last_index", &self.state.last_index())
            .field("segments", &self.segments.len())
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

fn segment_name(sequence: u64) -> String {
    format!("wal-{sequence:020}.seg")
}

fn snapshot_name(sequence: u64) -> String {
    format!("snapshot-{sequence:020}.snap")
}

const TEMPORARY_SUFFIX: &str = ".tmp";

fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Maps an I/O error to the storage error, with what was being done; ENOSPC and EDQUOT become
/// [`StorageError::Full`].
fn io_failure(context: impl Display) -> impl FnOnce(io::Error) -> StorageError {
    move |error| {
        let message = format!("{context}: {error}");
        // 28 is ENOSPC on Linux and the BSDs; 122 is EDQUOT on Linux.
        if matches!(error.raw_os_error(), Some(28) | Some(122)) {
            StorageError::Full(message)
        } else {
            StorageError::Io(io::Error::new(error.kind(), message))
        }
    }
}

fn corrupt(file: String, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt { file, offset, reason: reason.into() }
}

/// The outcome of replaying one segment.
struct SegmentScan {
    /// End of the last committed group: the segment's valid length.
    committed_end: u64,
    /// The file's length as found.
    length: u64,
    /// Committed groups, the checkpoint's included.
    groups: u64,
    /// End of the checkpoint group.
    checkpoint_end: u64,
    /// Whether every byte after `committed_end` is zero (preallocated space).
    tail_is_zero: bool,
}

/// What a `persist` will write, built before any I/O so a refused write changes nothing.
struct Plan {
    /// `(sequence, file bytes)` of a new snapshot file.
    snapshot_file: Option<(u64, Vec<u8>)>,
}

impl FileStorage {
    /// Opens (or creates) the store in `directory` and repairs what a crash left: a torn tail of
    /// the last segment is cut off, leftover temporary files and segments of an interrupted
    /// compaction are removed. Damage anywhere else is [`StorageError::Corrupt`].
    ///
    /// Only one `FileStorage` may use a directory at a time; nothing here enforces it.
    pub fn open(directory: &Path, options: FileStorageOptions) -> Result<FileStorage, StorageError> {
        let os = OsDirectory::open(directory.to_path_buf())
            .map_err(io_failure(format_args!("creating {}", directory.display())))?;
        Self::open_in(Box::new(os), options)
    }

    pub(crate) fn open_in(
        directory: Box<dyn Directory>,
        options: FileStorageOptions,
    ) -> Result<Self, StorageError> {
        options.validate()?;
        let names =
            directory.list().map_err(io_failure(format_args!("listing {}", directory.describe(""))))?;
        let mut segments = Vec::new();
        let mut snapshots = Vec::new();
        let mut temporaries = Vec::new();
        for name in names {
            if let Some(sequence) = parse_numbered(&name, "wal-", ".seg") {
                segments.push(sequence);
            } else if let Some(sequence) = parse_numbered(&name, "snapshot-", ".snap") {
                snapshots.push(sequence);
            } else if name.ends_with(TEMPORARY_SUFFIX)
                && (name.starts_with("wal-") || name.starts_with("snapshot-"))
            {
                temporaries.push(name);
            }
        }
        segments.sort_unstable();
        snapshots.sort_unstable();
        let mut removals: Vec<String> = temporaries;

        // Compaction deletes a prefix of segments; if a crash kept some deletions and lost others,
        // segments older than a gap remain. Everything they held is summarized by the checkpoint of
        // the first segment after the last gap (and any entry still needed is caught below).
        let live_from = segments.windows(2).rposition(|pair| pair[1] != pair[0] + 1).map_or(0, |gap| gap + 1);
        let stale: Vec<u64> = segments.drain(..live_from).collect();

        let mut state: Option<LogState> = None;
        let mut last_group: Option<u64> = None;
        let mut scans: Vec<SegmentScan> = Vec::with_capacity(segments.len());
        let mut verified: Vec<(u64, Vec<u8>)> = Vec::with_capacity(segments.len());
        for (position, &sequence) in segments.iter().enumerate() {
            let is_last = position + 1 == segments.len();
            let name = segment_name(sequence);
            let file = directory.describe(&name);
            let bytes = directory.read(&name).map_err(io_failure(format_args!("reading {file}")))?;
            let scan = replay_segment(
                &bytes,
                sequence,
                &file,
                is_last,
                options.record_bytes_max,
                &mut state,
                &mut last_group,
            )?;
            if scan.groups == 0 {
                // Segments are created complete (checkpoint included) under a temporary name and
                // renamed, so one without a committed group has lost data.
                return Err(corrupt(file, SEGMENT_HEADER_BYTES as u64, "segment holds no committed group"));
            }
            scans.push(scan);
            verified.push((sequence, bytes));
        }
        for sequence in &stale {
            removals.push(segment_name(*sequence));
        }

        let Some(state) = state else {
            // No segment at all: a new store, unless snapshots are there, which means the log
            // (with the term and the vote) is missing, not that there never was one.
            if let Some(first) = snapshots.first() {
                return Err(corrupt(
                    directory.describe(&snapshot_name(*first)),
                    0,
                    "a snapshot but no write-ahead log segment: the log (with the term and vote) is missing",
                ));
            }
            remove_all(directory.as_ref(), &removals)?;
            return Self::create_fresh(directory, options);
        };

        if let Some(missing) = state.first_missing_entry() {
            return Err(corrupt(
                directory.describe(&segment_name(segments[0])),
                0,
                format!("log entry {missing} was in a segment that no longer exists"),
            ));
        }
        let next_snapshot_sequence =
            snapshots.last().copied().max(state.snapshot.map(|s| s.sequence)).unwrap_or(0) + 1;
        if let Some(snapshot) = state.snapshot {
            if snapshots.binary_search(&snapshot.sequence).is_err() {
                return Err(corrupt(
                    directory.describe(&snapshot_name(snapshot.sequence)),
                    0,
                    "the log names this snapshot but the file is missing",
                ));
            }
        }
        for sequence in snapshots {
            if Some(sequence) != state.snapshot.map(|s| s.sequence) {
                // Older snapshots whose removal was interrupted, or a newer one whose log record
                // never committed.
                removals.push(snapshot_name(sequence));
            }
        }

        let (Some(&current_sequence), Some(scan)) = (segments.last(), scans.pop()) else {
            unreachable!("a committed state implies a committed last segment");
        };
        let current_name = segment_name(current_sequence);
        let mut current = directory
            .open_write(&current_name)
            .map_err(io_failure(format_args!("opening {}", directory.describe(&current_name))))?;
        let allocated_length = if scan.tail_is_zero {
            // Preallocated space (or nothing) after the last commit: the next group goes there.
            scan.length
        } else {
            // The torn or uncommitted tail of an interrupted write: it was never acknowledged.
            current
                .set_length(scan.committed_end)
                .and_then(|()| current.sync_data())
                .map_err(io_failure(format_args!("truncating {}", directory.describe(&current_name))))?;
            scan.committed_end
        };
        remove_all(directory.as_ref(), &removals)?;
        let next_group = last_group.map_or(0, |group| group + 1);
        Ok(FileStorage {
            directory,
            options,
            state,
            segments,
            current,
            current_length: scan.committed_end,
            allocated_length,
            current_checkpoint_end: scan.checkpoint_end,
            next_group,
            next_snapshot_sequence,
            failure: None,
            buffer: Vec::new(),
            verified_segments: verified,
        })
    }

    fn create_fresh(
        directory: Box<dyn Directory>,
        options: FileStorageOptions,
    ) -> Result<Self, StorageError> {
        let state = LogState::default();
        let sequence = 1;
        let mut buffer = Vec::new();
        encode_segment_header(&mut buffer, sequence);
        encode_checkpoint_group(&mut buffer, &state, 0);
        let log_end = buffer.len() as u64;
        let allocated_length = options.preallocated_end(0, log_end);
        buffer.resize(allocated_length as usize, 0);
        let current = create_segment(directory.as_ref(), sequence, &buffer)?;
        Ok(FileStorage {
            directory,
            options,
            state,
            segments: vec![sequence],
            current,
            current_length: log_end,
            allocated_length,
            current_checkpoint_end: log_end,
            next_group: 1,
            next_snapshot_sequence: 1,
            failure: None,
            buffer: Vec::new(),
            verified_segments: Vec::new(),
        })
    }

    /// Index of the last log entry, or of the snapshot when the log after it is empty (0 when
    /// there is neither).
    pub fn last_index(&self) -> concord_core::id::LogIndex {
        concord_core::id::LogIndex(self.state.last_index())
    }

    /// Last index and term of the current snapshot, if there is one.
    pub fn snapshot_position(&self) -> Option<(concord_core::id::LogIndex, concord_core::id::Term)> {
        self.state
            .snapshot
            .map(|s| (concord_core::id::LogIndex(s.last_index), concord_core::id::Term(s.last_term)))
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> &concord_core::storage::HardState {
        &self.state.hard_state
    }

    /// How many segment files the log has now.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Why this store refuses writes, if an I/O error made it stop. Reopen it to go on.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Checks `persist` against the stored state and encodes its group into `self.buffer`
    /// (without the commit record). Refuses exactly what [`concord_core::storage::apply_persist`]
    /// refuses, but changes nothing when it does.
    fn plan(&mut self, persist: &Persist) -> Result<Plan, StorageError> {
        let state = &self.state;
        let limit = self.options.record_bytes_max as usize;
        let buffer = &mut self.buffer;
        buffer.clear();
        let mut snapshot_index = state.snapshot_index();
        let mut last_index = state.last_index();
        let mut snapshot_file = None;
        if let Some(snapshot) = &persist.snapshot {
            let last = snapshot.meta.last_index.0;
            if last < snapshot_index {
                return Err(StorageError::InvalidWrite(format!(
                    "snapshot at {last} is older than the stored one at {snapshot_index}"
                )));
            }
            // The log after the snapshot stays only if it continues it: the same term at the
            // snapshot's index, in the log or as the stored snapshot.
            let continued_by_stored = state.snapshot.is_some_and(|stored| {
                stored.last_index == last && stored.last_term == snapshot.meta.last_term.0
            });
            let keep_entries = continued_by_stored || state.term_at(last) == Some(snapshot.meta.last_term.0);
            let payload = postcard::to_allocvec(snapshot)
                .map_err(|error| StorageError::InvalidWrite(format!("snapshot does not encode: {error}")))?;
            if payload.len() as u64 > self.options.snapshot_bytes_max {
                return Err(StorageError::InvalidWrite(format!(
                    "snapshot of {} bytes exceeds snapshot_bytes_max {}",
                    payload.len(),
                    self.options.snapshot_bytes_max
                )));
            }
            let sequence = self.next_snapshot_sequence;
            let marker =
                postcard::to_allocvec(&SnapshotMarker { sequence, keep_entries }).map_err(|error| {
                    StorageError::InvalidWrite(format!("snapshot marker does not encode: {error}"))
                })?;
            encode_record_bytes(buffer, RecordKind::Snapshot, last, snapshot.meta.last_term.0, &marker);
            if !keep_entries {
                last_index = last;
            }
            snapshot_index = last;
            snapshot_file = Some((sequence, encode_snapshot_file(&payload)));
        }
        if let Some(from) = persist.truncate_from {
            let kept_last = last_index.min(from.0.saturating_sub(1)).max(snapshot_index);
            if kept_last < last_index {
                encode_record_bytes(buffer, RecordKind::Truncate, from.0.max(snapshot_index + 1), 0, &[]);
                last_index = kept_last;
            }
        }
        if let Some(first) = persist.entries.first() {
            let first_index = first.index.0;
            if first_index != last_index + 1 {
                if first_index <= last_index && first_index > snapshot_index {
                    // Appending over a suffix replaces it, as if truncated first.
                    encode_record_bytes(buffer, RecordKind::Truncate, first_index, 0, &[]);
                } else {
                    return Err(StorageError::InvalidWrite(format!(
                        "entries start at {first_index} but the log ends at {last_index}"
                    )));
                }
            }
            for pair in persist.entries.windows(2) {
                if pair[1].index != pair[0].index.next() {
                    return Err(StorageError::InvalidWrite("entries are not contiguous".into()));
                }
            }
            for entry in &persist.entries {
                let range =
                    encode_record(buffer, RecordKind::Entry, entry.index.0, entry.term.0, |buffer| {
                        let grown = postcard::to_extend(entry, std::mem::take(buffer)).map_err(|error| {
                            StorageError::InvalidWrite(format!("entry does not encode: {error}"))
                        })?;
                        *buffer = grown;
                        Ok::<(), StorageError>(())
                    })?;
                if range.len() - RECORD_HEADER_BYTES > limit {
                    return Err(StorageError::InvalidWrite(format!(
                        "entry {} encodes to {} bytes, over record_bytes_max {limit}",
                        entry.index,
                        range.len() - RECORD_HEADER_BYTES
                    )));
                }
            }
        }
        if let Some(hard_state) = &persist.hard_state {
            let range = encode_record(buffer, RecordKind::HardState, 0, 0, |buffer| {
                *buffer = postcard::to_extend(hard_state, std::mem::take(buffer)).map_err(|error| {
                    StorageError::InvalidWrite(format!("hard state does not encode: {error}"))
                })?;
                Ok::<(), StorageError>(())
            })?;
            if range.len() - RECORD_HEADER_BYTES > limit {
                return Err(StorageError::InvalidWrite("hard state over record_bytes_max".into()));
            }
        }
        if !persist.records.is_empty() {
            // The records' total size after this write, tracking keys this write touches twice.
            let mut touched: BTreeMap<&Bytes, Option<usize>> = BTreeMap::new();
            let mut records_bytes = state.records_bytes as i128;
            for write in &persist.records {
                let before = match touched.get(&write.key) {
                    Some(size) => *size,
                    None => state.records.get(&write.key).map(Bytes::len),
                };
                let after = write.value.as_ref().map(Bytes::len);
                records_bytes -= before.map_or(0, |value| (write.key.len() + value) as i128);
                records_bytes += after.map_or(0, |value| (write.key.len() + value) as i128);
                touched.insert(&write.key, after);
                let range = match &write.value {
                    Some(value) => encode_record(buffer, RecordKind::RecordPut, 0, 0, |buffer| {
                        *buffer = postcard::to_extend(&(&write.key, value), std::mem::take(buffer)).map_err(
                            |error| StorageError::InvalidWrite(format!("record does not encode: {error}")),
                        )?;
                        Ok::<(), StorageError>(())
                    })?,
                    None => encode_record(buffer, RecordKind::RecordDelete, 0, 0, |buffer| {
                        *buffer =
                            postcard::to_extend(&write.key, std::mem::take(buffer)).map_err(|error| {
                                StorageError::InvalidWrite(format!("record does not encode: {error}"))
                            })?;
                        Ok::<(), StorageError>(())
                    })?,
                };
                if range.len() - RECORD_HEADER_BYTES > limit {
                    return Err(StorageError::InvalidWrite(format!(
                        "record of {} bytes exceeds record_bytes_max {limit}",
                        range.len() - RECORD_HEADER_BYTES
                    )));
                }
            }
            if records_bytes > self.options.records_bytes_max as i128 {
                return Err(StorageError::InvalidWrite(format!(
                    "records would total {records_bytes} bytes, over records_bytes_max {}",
                    self.options.records_bytes_max
                )));
            }
        }
        Ok(Plan { snapshot_file })
    }

    /// Writes the planned group (in `self.buffer`), syncs it, and applies it to the index.
    fn write(&mut self, plan: Plan) -> Result<(), StorageError> {
        let previous_snapshot = self.state.snapshot;
        if let Some((sequence, bytes)) = &plan.snapshot_file {
            let name = snapshot_name(*sequence);
            let temporary = format!("{name}{TEMPORARY_SUFFIX}");
            let file = self.directory.describe(&name);
            let mut handle = self
                .directory
                .create(&temporary)
                .map_err(io_failure(format_args!("creating {file}{TEMPORARY_SUFFIX}")))?;
            handle
                .write_at(0, bytes)
                .and_then(|()| handle.sync_data())
                .map_err(io_failure(format_args!("writing {file}{TEMPORARY_SUFFIX}")))?;
            drop(handle);
            self.directory
                .rename(&temporary, &name)
                .and_then(|()| self.directory.sync())
                .map_err(io_failure(format_args!("renaming to {file}")))?;
            self.next_snapshot_sequence = sequence + 1;
        }

        // The group's records, parsed back from the encoding: counted for the commit record, and
        // applied to the index below through the same code that replays segments on open.
        let mut views = group_views(&self.buffer, self.options.record_bytes_max);
        let group_bytes = (self.buffer.len() + RECORD_HEADER_BYTES + 1) as u64;
        let rotate = self.current_length + group_bytes > self.options.segment_bytes_max
            && self.current_length > self.current_checkpoint_end;
        let mut output;
        let group_start;
        let segment;
        if rotate {
            segment = self.segments.last().map_or(1, |last| last + 1);
            output = Vec::with_capacity(SEGMENT_HEADER_BYTES + self.buffer.len() + 4096);
            encode_segment_header(&mut output, segment);
            encode_checkpoint_group(&mut output, &self.state, self.next_group);
            self.next_group += 1;
            group_start = output.len();
            output.extend_from_slice(&self.buffer);
        } else {
            segment = *self.segments.last().unwrap_or(&0);
            output = std::mem::take(&mut self.buffer);
            group_start = 0;
        }
        encode_record_bytes(
            &mut output,
            RecordKind::Commit,
            self.next_group,
            views.len() as u64,
            &[COMMIT_TRAILER],
        );
        let name = segment_name(segment);
        let file = self.directory.describe(&name);
        let group_end = output.len();
        let base_offset = if rotate {
            if self.allocated_length > self.current_length {
                // Seal the old segment at its log end: sealed segments keep no preallocated
                // space, so any byte after their last commit is damage.
                let sealed = self.directory.describe(&segment_name(*self.segments.last().unwrap_or(&0)));
                self.current
                    .set_length(self.current_length)
                    .and_then(|()| self.current.sync_data())
                    .map_err(io_failure(format_args!("sealing {sealed}")))?;
            }
            let allocated = self.options.preallocated_end(0, output.len() as u64);
            output.resize(allocated as usize, 0);
            self.current = create_segment(self.directory.as_ref(), segment, &output)?;
            self.segments.push(segment);
            self.current_checkpoint_end = group_start as u64;
            self.allocated_length = allocated;
            0
        } else {
            let base = self.current_length;
            if base + output.len() as u64 > self.allocated_length {
                // Extend the preallocation in the same write, covered by the same fdatasync.
                let allocated = self.options.preallocated_end(base, output.len() as u64);
                output.resize((allocated - base) as usize, 0);
                self.allocated_length = allocated;
            }
            // Group commit: one write and one fdatasync for everything this persist holds.
            self.current
                .write_at(base, &output)
                .and_then(|()| self.current.sync_data())
                .map_err(io_failure(format_args!("appending to {file}")))?;
            base
        };
        output.truncate(group_end);
        self.next_group += 1;
        self.current_length = base_offset + group_end as u64;

        // Durable now: apply exactly what was written.
        for view in &mut views {
            view.payload = view.payload.start + group_start..view.payload.end + group_start;
            view.end += group_start;
        }
        let source = GroupSource { bytes: &output, segment, file: &file, base_offset };
        let applied = self.state.apply_group(&views, &source);
        if !rotate {
            self.buffer = output;
        }
        applied?;
        self.remove_obsolete(previous_snapshot)
    }

    /// Deletes the previous snapshot file and the segments no live entry needs.
    fn remove_obsolete(&mut self, previous_snapshot: Option<SnapshotRef>) -> Result<(), StorageError> {
        let mut removed = Vec::new();
        if let Some(previous) = previous_snapshot {
            if self.state.snapshot.map(|s| s.sequence) != Some(previous.sequence) {
                removed.push(snapshot_name(previous.sequence));
            }
        }
        let current = *self.segments.last().unwrap_or(&0);
        // Live entries' segments never decrease with their index, so the first live entry's
        // segment is the oldest one needed; the current segment's checkpoint covers the rest.
        let oldest_needed =
            self.state.entries.front().map_or(current, |location| location.segment).min(current);
        let obsolete = self.segments.iter().take_while(|sequence| **sequence < oldest_needed).count();
        // Oldest first: a crash part-way leaves a gap that open() understands.
        removed.extend(self.segments.drain(..obsolete).map(segment_name));
        remove_all(self.directory.as_ref(), &removed)
    }
}

/// Creates a segment with its first bytes, atomically: written and synced under a temporary
/// name, then renamed and the directory synced. A segment file therefore always starts with a
/// complete header and checkpoint; only its later appends can be torn.
fn create_segment(
    directory: &dyn Directory,
    sequence: u64,
    bytes: &[u8],
) -> Result<Box<dyn WritableFile>, StorageError> {
    let name = segment_name(sequence);
    let temporary = format!("{name}{TEMPORARY_SUFFIX}");
    let file = directory.describe(&name);
    let mut handle = directory
        .create(&temporary)
        .map_err(io_failure(format_args!("creating {file}{TEMPORARY_SUFFIX}")))?;
    handle
        .write_at(0, bytes)
        .and_then(|()| handle.sync_data())
        .and_then(|()| directory.rename(&temporary, &name))
        .and_then(|()| directory.sync())
        .map_err(io_failure(format_args!("creating {file}")))?;
    Ok(handle)
}

fn remove_all(directory: &dyn Directory, names: &[String]) -> Result<(), StorageError> {
    if names.is_empty() {
        return Ok(());
    }
    for name in names {
        directory.remove(name).map_err(io_failure(format_args!("removing {}", directory.describe(name))))?;
    }
    directory.sync().map_err(io_failure(format_args!("syncing {}", directory.describe(""))))
}

/// The records of a group just encoded (without its commit).
fn group_views(bytes: &[u8], record_bytes_max: u32) -> Vec<RecordView> {
    let mut views = Vec::new();
    let mut offset = 0;
    while let Parsed::Record(view) = parse_record(bytes, offset, record_bytes_max) {
        offset = view.end;
        if view.kind == RecordKind::Commit {
            break;
        }
        views.push(view);
    }
    views
}

/// Appends the checkpoint group that starts a segment: the state the older segments hold.
fn encode_checkpoint_group(buffer: &mut Vec<u8>, state: &LogState, group: u64) {
    let checkpoint = Checkpoint { snapshot: state.snapshot, hard_state: state.hard_state.clone() };
    // Plain data with no maps of non-string keys: encoding cannot fail.
    let payload = postcard::to_allocvec(&checkpoint).unwrap_or_default();
    encode_record_bytes(buffer, RecordKind::Checkpoint, state.last_index(), 0, &payload);
    for (key, value) in &state.records {
        let payload = postcard::to_allocvec(&(key, value)).unwrap_or_default();
        encode_record_bytes(buffer, RecordKind::RecordPut, 0, 0, &payload);
    }
    encode_record_bytes(buffer, RecordKind::Commit, group, state.records.len() as u64 + 1, &[COMMIT_TRAILER]);
}

/// Replays one segment into `state` (creating it from the segment's checkpoint if this is the
/// first segment). Torn tails are tolerated only in the last segment.
fn replay_segment(
    bytes: &[u8],
    sequence: u64,
    file: &str,
    is_last: bool,
    record_bytes_max: u32,
    state: &mut Option<LogState>,
    last_group: &mut Option<u64>,
) -> Result<SegmentScan, StorageError> {
    let length = bytes.len() as u64;
    match decode_segment_header(bytes) {
        Ok(found) if found == sequence => {}
        Ok(found) => {
            return Err(corrupt(
                file.to_owned(),
                0,
                format!("segment header names segment {found}, the file name {sequence}"),
            ))
        }
        // Segments are renamed into place complete, so a bad header is damage, never a crash.
        Err(reason) => return Err(corrupt(file.to_owned(), 0, reason)),
    }
    let source = GroupSource { bytes, segment: sequence, file, base_offset: 0 };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut committed_end = offset;
    let mut groups = 0;
    let mut checkpoint_end = 0;
    let mut group: Vec<RecordView> = Vec::new();
    loop {
        match parse_record(bytes, offset, record_bytes_max) {
            Parsed::Record(view) => {
                offset = view.end;
                if view.kind != RecordKind::Commit {
                    group.push(view);
                    continue;
                }
                if bytes[view.payload.clone()] != [COMMIT_TRAILER] || view.term != group.len() as u64 {
                    return Err(corrupt_at(&source, &view, "commit record does not match its group"));
                }
                if let Some(previous) = *last_group {
                    if view.index != previous + 1 {
                        return Err(corrupt_at(
                            &source,
                            &view,
                            format!("group sequence jumps from {previous} to {}", view.index),
                        ));
                    }
                }
                *last_group = Some(view.index);
                match (groups, state.as_mut()) {
                    (0, None) => {
                        *state = Some(LogState::from_checkpoint(&group, &source)?);
                        checkpoint_end = offset as u64;
                    }
                    (0, Some(state)) => {
                        state.check_checkpoint(&group, &source)?;
                        checkpoint_end = offset as u64;
                    }
                    (_, Some(state)) => state.apply_group(&group, &source)?,
                    (_, None) => unreachable!("the first group of a segment creates the state"),
                }
                groups += 1;
                group.clear();
                committed_end = offset;
            }
            Parsed::End => break,
            // A write cut short by a crash: it was never synced, so never acknowledged.
            Parsed::CutOff { .. } if is_last => break,
            Parsed::CutOff { .. } => {
                return Err(corrupt(
                    file.to_owned(),
                    offset as u64,
                    "record cut off by the end of a sealed segment",
                ))
            }
            Parsed::Invalid { claimed_end, reason } => {
                // Torn, not corrupt, only if the damage runs into zeros that reach the end of the
                // last segment: the unsynced part of the last write did not reach the disk. A bad
                // record followed by anything else is damage to data that was synced. (Commit
                // records never end in a zero byte, so a zero tail cannot hide a complete group.)
                let zero_tail_start = bytes.iter().rposition(|byte| *byte != 0).map_or(0, |last| last + 1);
                if is_last && zero_tail_start < claimed_end.min(bytes.len()) {
                    break;
                }
                return Err(corrupt(file.to_owned(), offset as u64, reason));
            }
        }
    }
    if !is_last && committed_end != bytes.len() {
        return Err(corrupt(
            file.to_owned(),
            committed_end as u64,
            "records after the last commit of a sealed segment",
        ));
    }
    let tail_is_zero = bytes[committed_end..].iter().all(|byte| *byte == 0);
    Ok(SegmentScan { committed_end: committed_end as u64, length, groups, checkpoint_end, tail_is_zero })
}

impl FileStorage {
    fn read_snapshot(&self, reference: SnapshotRef) -> Result<Snapshot, StorageError> {
        let name = snapshot_name(reference.sequence);
        let file = self.directory.describe(&name);
        let bytes = self.directory.read(&name).map_err(io_failure(format_args!("reading {file}")))?;
        let payload = decode_snapshot_file(&bytes, self.options.snapshot_bytes_max)
            .map_err(|(offset, reason)| corrupt(file.clone(), offset, reason))?;
        let snapshot: Snapshot = postcard::from_bytes(payload)
            .map_err(|error| corrupt(file.clone(), 0, format!("undecodable snapshot: {error}")))?;
        if snapshot.meta.last_index.0 != reference.last_index
            || snapshot.meta.last_term.0 != reference.last_term
        {
            return Err(corrupt(
                file,
                0,
                format!(
                    "snapshot file covers {}/{} but the log names {}/{}",
                    snapshot.meta.last_index,
                    snapshot.meta.last_term,
                    reference.last_index,
                    reference.last_term
                ),
            ));
        }
        Ok(snapshot)
    }
}

impl Storage for FileStorage {
    /// Reads the snapshot and every live entry back. The first call after `open` decodes the
    /// entries from the segment bytes `open` read and verified; later calls (and any after a
    /// `persist`) read the segments from disk and check every checksum again.
    fn recover(&mut self) -> Result<Recovered, StorageError> {
        if let Some(failure) = &self.failure {
            return Err(StorageError::Failed(failure.clone()));
        }
        let snapshot = match self.state.snapshot {
            Some(reference) => Some(self.read_snapshot(reference)?),
            None => None,
        };
        let mut entries = Vec::with_capacity(self.state.entries.len());
        let first_index = self.state.snapshot_index() + 1;
        // Segments `open` verified are decoded as they were read then; others (a `persist` came
        // in between) are read again, and their checksums checked again.
        let mut verified = std::mem::take(&mut self.verified_segments);
        let mut loaded: Option<(u64, Vec<u8>, String, bool)> = None;
        for (position, location) in self.state.entries.iter().enumerate() {
            let index = first_index + position as u64;
            if loaded.as_ref().map(|(segment, ..)| *segment) != Some(location.segment) {
                let name = segment_name(location.segment);
                let file = self.directory.describe(&name);
                let cached = verified.iter().position(|(segment, _)| *segment == location.segment);
                let (bytes, checked) = match cached {
                    Some(position) => (verified.swap_remove(position).1, true),
                    None => (
                        self.directory.read(&name).map_err(io_failure(format_args!("reading {file}")))?,
                        false,
                    ),
                };
                loaded = Some((location.segment, bytes, file, checked));
            }
            let Some((_, bytes, file, checked)) = &loaded else { unreachable!("loaded just above") };
            let parsed = if *checked {
                parse_checked_record(bytes, location.offset as usize)
            } else {
                parse_record(bytes, location.offset as usize, self.options.record_bytes_max)
            };
            let view = match parsed {
                Parsed::Record(view)
                    if view.kind == RecordKind::Entry
                        && view.index == index
                        && view.term == location.term =>
                {
                    view
                }
                Parsed::Invalid { reason, .. } => return Err(corrupt(file.clone(), location.offset, reason)),
                _ => {
                    return Err(corrupt(
                        file.clone(),
                        location.offset,
                        format!("log entry {index} is no longer where it was written"),
                    ))
                }
            };
            let entry: Entry = postcard::from_bytes(&bytes[view.payload]).map_err(|error| {
                corrupt(file.clone(), location.offset, format!("undecodable entry {index}: {error}"))
            })?;
            if entry.index.0 != index || entry.term.0 != location.term {
                return Err(corrupt(
                    file.clone(),
                    location.offset,
                    format!("record of entry {index} holds another entry"),
                ));
            }
            entries.push(entry);
        }
        Ok(Recovered {
            hard_state: self.state.hard_state.clone(),
            snapshot,
            entries,
            records: self.state.records.clone(),
        })
    }

    /// Writes the snapshot file (if any), then one group of records with one fdatasync, then
    /// removes what the snapshot made obsolete. A refused write ([`StorageError::InvalidWrite`])
    /// changes nothing; any I/O error makes every later call fail with [`StorageError::Failed`].
    fn persist(&mut self, persist: &Persist) -> Result<(), StorageError> {
        if let Some(failure) = &self.failure {
            return Err(StorageError::Failed(failure.clone()));
        }
        // The files change: what `open` read is no longer what they hold.
        self.verified_segments = Vec::new();
        if persist.is_empty() {
            return Ok(());
        }
        let plan = self.plan(persist)?;
        if self.buffer.is_empty() {
            // Nothing changes (a truncation past the end of the log).
            return Ok(());
        }
        self.write(plan).inspect_err(|error| self.failure = Some(error.to_string()))
    }
}
