//! A child process (this test binary, in a writer role chosen by an environment variable) appends
//! and prints each acknowledged index; the parent SIGKILLs it mid-write, reopens the directory and
//! checks every acknowledged entry is there, intact, in a contiguous log.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use concord_core::prelude::*;
use concord_storage::FileStorage;

use crate::support::{entry, small_segments, TemporaryDirectory};

/// Set in the child: the directory it writes to.
const WRITER_DIRECTORY: &str = "CONCORD_STORAGE_TEST_WRITER_DIRECTORY";
/// Kill rounds, each after a different number of acknowledgements.
const ROUNDS: u64 = 4;
/// Persists a child makes at most, should the parent never kill it.
const WRITER_PERSISTS_MAX: u64 = 20_000;
/// A snapshot every this many entries, so kills also land around compaction.
const SNAPSHOT_EVERY: u64 = 150;

#[test]
fn acknowledged_entries_survive_sigkill() {
    if let Ok(directory) = std::env::var(WRITER_DIRECTORY) {
        write_until_killed(Path::new(&directory));
        return;
    }
    let directory = TemporaryDirectory::new("sigkill");
    let mut acknowledged = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sigkill::acknowledged_entries_survive_sigkill",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_DIRECTORY, directory.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 40 + round * 70;
        let mut seen = 0;
        for line in lines.by_ref() {
            if let Some(index) = line.unwrap().strip_prefix("acknowledged ") {
                acknowledged = acknowledged.max(index.parse().unwrap());
                seen += 1;
                if seen == kill_after {
                    break;
                }
            }
        }
        assert_eq!(seen, kill_after, "round {round}: the writer stopped early");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acknowledgements printed before the kill count too.
        for line in lines {
            if let Some(index) = line.unwrap().strip_prefix("acknowledged ") {
                acknowledged = acknowledged.max(index.parse().unwrap());
            }
        }

        let recovered = FileStorage::open(directory.path(), small_segments()).unwrap().recover().unwrap();
        let first = recovered.snapshot.as_ref().map_or(0, |snapshot| snapshot.meta.last_index.0) + 1;
        let last = first + recovered.entries.len() as u64 - 1;
        assert!(last >= acknowledged, "round {round}: acknowledged {acknowledged}, recovered up to {last}");
        for (position, recovered_entry) in recovered.entries.iter().enumerate() {
            assert_eq!(*recovered_entry, entry(first + position as u64, 1), "round {round}: entry differs");
        }
        assert!(
            recovered.hard_state.commit.0 >= acknowledged,
            "round {round}: hard state older than acknowledged"
        );
        if let Some(snapshot) = &recovered.snapshot {
            assert_eq!(snapshot.data, snapshot_data(snapshot.meta.last_index.0));
        }
        eprintln!(
            "round {round}: acknowledged up to {acknowledged}, recovered up to {last} (log from {first})"
        );
    }
}

fn snapshot_data(index: u64) -> bytes::Bytes {
    bytes::Bytes::from(format!("state up to {index}"))
}

/// The child: appends batches of 1 to 7 entries, each with the hard state, and prints
/// `acknowledged <last index>` after each persist returns.
fn write_until_killed(directory: &Path) {
    let mut storage = FileStorage::open(directory, small_segments()).unwrap();
    let recovered = storage.recover().unwrap();
    let mut last = recovered
        .entries
        .last()
        .map(|e| e.index.0)
        .or(recovered.snapshot.as_ref().map(|s| s.meta.last_index.0))
        .unwrap_or(0);
    let mut stdout = std::io::stdout();
    for persist_number in 0..WRITER_PERSISTS_MAX {
        let count = persist_number % 7 + 1;
        let entries: Vec<Entry> = (last + 1..=last + count).map(|index| entry(index, 1)).collect();
        let new_last = last + count;
        let snapshot = (new_last / SNAPSHOT_EVERY > last / SNAPSHOT_EVERY).then(|| Snapshot {
            meta: SnapshotMeta {
                last_index: LogIndex(last),
                last_term: Term(1),
                membership: Membership::default(),
            },
            data: snapshot_data(last),
        });
        let snapshot = snapshot.filter(|_| last > 0);
        let hard_state =
            HardState { term: Term(1), voted_for: Some(NodeId::new("writer")), commit: LogIndex(new_last) };
        storage
            .persist(&Persist { snapshot, entries, hard_state: Some(hard_state), ..Persist::default() })
            .unwrap();
        last = new_last;
        writeln!(stdout, "acknowledged {last}").unwrap();
        stdout.flush().unwrap();
    }
}
