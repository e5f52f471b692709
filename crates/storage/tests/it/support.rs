//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use concord_core::prelude::*;
use concord_storage::FileStorageOptions;

/// A directory under the system's temporary directory, removed when dropped.
pub struct TemporaryDirectory(PathBuf);

impl TemporaryDirectory {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("concord-storage-it-{label}-{}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TemporaryDirectory(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// File names in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TemporaryDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The entry at `index`: its content depends on the index only, so any reader can check it.
pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index: LogIndex(index),
        term: Term(term),
        timestamp_ms: index,
        payload: EntryPayload::Command(std::sync::Arc::new(Proposal {
            id: ProposalId { origin: NodeId::new("writer"), sequence: index },
            session: None,
            command: Command::Put {
                key: format!("key-{index}"),
                value: Bytes::from(vec![(index % 256) as u8; 100]),
            },
        })),
    }
}

/// Small segments, so a few hundred entries span several.
pub fn small_segments() -> FileStorageOptions {
    let mut options = FileStorageOptions::default();
    options.segment_bytes_max = 8192;
    options
}
