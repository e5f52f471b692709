//! # concord-storage
//!
//! Crash-safe durable storage for concord: [`FileStorage`] implements the core's
//! [`Storage`] trait on files in one directory, so a restarted
//! node resumes with its term, vote, log, snapshot and the majority mechanism's records.
//!
//! **What it is:** a segmented write-ahead log plus snapshot files.
//! - Each `persist` call appends one *group* of records (snapshot marker, truncation, entries,
//!   hard state, record writes) ended by a commit record, with **one** `write` and **one**
//!   `fdatasync` (group commit). It returns only after that sync: nothing is acknowledged that is
//!   not on disk. On reopen a group counts only if its commit record is intact, so every `persist`
//!   is all-or-nothing across a crash.
//! - Records carry their length, CRC32C checksums (of header and payload), index and term.
//! - Hard state and records live in the log, not in a side file: they change with almost every
//!   `persist` (the commit index is part of the hard state), and a side file written atomically
//!   would cost two more fsyncs (file and directory) per call. Each new segment starts with a
//!   checkpoint (current hard state, records, snapshot), so old segments can be deleted.
//! - Segments rotate at [`FileStorageOptions::segment_bytes_max`]. A new segment is written
//!   complete (header, checkpoint, first group) under a temporary name, synced, renamed and the
//!   directory synced; segments are removed oldest first, then the directory is synced. Suffix
//!   truncation is a record; prefix compaction after a snapshot deletes whole segments that no
//!   live entry needs.
//! - The current segment is extended with zeros ahead of the log
//!   ([`FileStorageOptions::preallocation_bytes`]), so most fdatasyncs cover data written over
//!   existing blocks and need no file-system journal commit (about 1.45× more syncs per second on
//!   ext4 here). A sealed segment is cut back to its log's end.
//! - Snapshots are separate files written atomically (temporary file, fsync, rename, directory
//!   fsync) before the log record that makes them current.
//! - Recovery cuts off a torn or uncommitted tail of the last segment (an interrupted write, never
//!   acknowledged): records after the last intact commit record, where the damage, if any, runs
//!   into zeros or the end of the file. A bad checksum anywhere else (or one followed by more
//!   data) is [`StorageError::Corrupt`] naming the file and offset; so are missing segments or
//!   snapshot files that the log still needs. Garbage, truncated and zero-filled files give typed
//!   errors, never a panic. A last segment damaged exactly at its end cannot be told from a torn
//!   write, and loses that end.
//! - After an I/O error (a full disk is [`StorageError::Full`]) every later write is refused with
//!   [`StorageError::Failed`]; reopen to continue.
//! - Open keeps an index (term, segment and offset of each live entry) so `persist` never reads;
//!   [`Storage::recover`] decodes the entries back: right after open from the segment bytes open
//!   read and verified (the log is read and checksummed once), later from disk, verifying their
//!   checksums again.
//!
//! **What it is not:** a general key-value store, or safe for two processes on one directory
//! (nothing locks it). It trusts the file system's `fsync`.
//!
//! ```
//! use concord_core::prelude::*;
//! use concord_storage::{FileStorage, FileStorageOptions};
//!
//! let directory = std::env::temp_dir().join(format!("concord-storage-doc-{}", std::process::id()));
//! let _ = std::fs::remove_dir_all(&directory);
//! let mut storage = FileStorage::open(&directory, FileStorageOptions::default())?;
//! let entry = Entry { index: LogIndex(1), term: Term(2), timestamp_ms: 0, payload: EntryPayload::Noop };
//! let hard_state = HardState { term: Term(2), voted_for: Some(NodeId::new("a")), commit: LogIndex(0) };
//! storage.persist(&Persist { entries: vec![entry.clone()], hard_state: Some(hard_state.clone()), ..Persist::default() })?;
//! drop(storage);
//!
//! let mut reopened = FileStorage::open(&directory, FileStorageOptions::default())?;
//! let recovered = reopened.recover()?;
//! assert_eq!(recovered.entries, vec![entry]);
//! assert_eq!(recovered.hard_state, hard_state);
//! std::fs::remove_dir_all(&directory)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod file;
mod record;
mod state;
mod wal;

#[cfg(test)]
mod fault;
#[cfg(test)]
mod tests;

pub use concord_core::storage::{Storage, StorageError};
pub use wal::{FileStorage, FileStorageOptions};
