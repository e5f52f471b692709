//! Garbage, truncated, zero-filled and bit-flipped files give typed errors naming the file, never
//! a panic and never wrong data.

use concord_core::prelude::*;
use concord_storage::{FileStorage, FileStorageOptions};

use crate::support::{entry, small_segments, TemporaryDirectory};

/// A store with 300 entries over several segments and a snapshot at 100 (so the oldest segments
/// are gone): returns the directory and the recovered state.
fn written_store(label: &str) -> (TemporaryDirectory, Recovered) {
    let directory = TemporaryDirectory::new(label);
    let mut storage = FileStorage::open(directory.path(), small_segments()).unwrap();
    for batch in 0..30 {
        let entries = (batch * 10 + 1..=batch * 10 + 10).map(|index| entry(index, 1)).collect();
        let hard_state =
            HardState { term: Term(1), voted_for: Some(NodeId::new("a")), commit: LogIndex(batch * 10) };
        storage.persist(&Persist { entries, hard_state: Some(hard_state), ..Persist::default() }).unwrap();
    }
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            last_index: LogIndex(100),
            last_term: Term(1),
            membership: Membership::default(),
        },
        data: bytes::Bytes::from_static(b"state machine at 100"),
    };
    storage.persist(&Persist { snapshot: Some(snapshot), ..Persist::default() }).unwrap();
    let recovered = storage.recover().unwrap();
    assert!(storage.segment_count() >= 3, "{} segments", storage.segment_count());
    (directory, recovered)
}

/// Where the log in a segment ends: the last segment has preallocated zeros after it.
fn log_end(segment: &[u8]) -> u64 {
    segment.iter().rposition(|byte| *byte != 0).map_or(0, |last| last as u64 + 1)
}

fn segments(directory: &TemporaryDirectory) -> Vec<String> {
    directory.files().into_iter().filter(|name| name.ends_with(".seg")).collect()
}

fn snapshot_file(directory: &TemporaryDirectory) -> String {
    directory.files().into_iter().find(|name| name.ends_with(".snap")).unwrap()
}

/// Opens and recovers; the error, if any.
fn open_and_recover(directory: &TemporaryDirectory) -> Result<Recovered, StorageError> {
    FileStorage::open(directory.path(), small_segments())?.recover()
}

fn assert_corrupt(result: Result<Recovered, StorageError>, name: &str) -> u64 {
    match result {
        Err(StorageError::Corrupt { file, offset, reason }) => {
            assert!(file.ends_with(name), "error names {file}, not {name}: {reason}");
            offset
        }
        other => panic!("expected corruption in {name}, got {:?}", other.map(|r| r.entries.len())),
    }
}

#[test]
fn an_untouched_store_reopens_to_the_same_state() {
    let (directory, recovered) = written_store("untouched");
    assert_eq!(open_and_recover(&directory).unwrap(), recovered);
    assert_eq!(recovered.entries.first().map(|e| e.index), Some(LogIndex(101)));
}

#[test]
fn garbage_segments_are_corrupt() {
    for which in [0, 1, usize::MAX] {
        let (directory, _) = written_store("garbage");
        let names = segments(&directory);
        let name = &names[which.min(names.len() - 1)];
        let path = directory.path().join(name);
        let length = std::fs::metadata(&path).unwrap().len() as usize;
        // Deterministic garbage with no zero bytes.
        let garbage: Vec<u8> = (0..length).map(|i| (i * 31 % 255 + 1) as u8).collect();
        std::fs::write(&path, garbage).unwrap();
        assert_eq!(assert_corrupt(open_and_recover(&directory), name), 0);
    }
}

#[test]
fn zero_filled_segments_and_empty_segments_are_corrupt() {
    for which in [0, usize::MAX] {
        for length in [None, Some(0), Some(10)] {
            let (directory, _) = written_store("zeros");
            let names = segments(&directory);
            let name = &names[which.min(names.len() - 1)];
            let path = directory.path().join(name);
            let length = length.unwrap_or(std::fs::metadata(&path).unwrap().len() as usize);
            std::fs::write(&path, vec![0u8; length]).unwrap();
            assert_corrupt(open_and_recover(&directory), name);
        }
    }
}

#[test]
fn a_truncated_sealed_segment_is_corrupt() {
    let (directory, _) = written_store("truncated");
    let name = &segments(&directory)[0];
    let path = directory.path().join(name);
    let length = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(length / 2 + 7).unwrap();
    let offset = assert_corrupt(open_and_recover(&directory), name);
    assert!(offset <= length / 2 + 7);
}

#[test]
fn a_truncated_last_segment_loses_only_its_tail() {
    // Indistinguishable from a torn write: the tail is cut off, and what remains is a prefix.
    let (directory, _) = written_store("truncated-last");
    let mut storage = FileStorage::open(directory.path(), small_segments()).unwrap();
    for index in 301..=305 {
        storage.persist(&Persist { entries: vec![entry(index, 1)], ..Persist::default() }).unwrap();
    }
    let recovered = storage.recover().unwrap();
    drop(storage);
    let names = segments(&directory);
    let path = directory.path().join(names.last().unwrap());
    let end = log_end(&std::fs::read(&path).unwrap());
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(end - 50).unwrap();
    let reopened = open_and_recover(&directory).unwrap();
    assert!(reopened.entries.len() < recovered.entries.len());
    assert_eq!(reopened.entries[..], recovered.entries[..reopened.entries.len()]);
}

#[test]
fn a_bit_flip_in_the_middle_is_corrupt_at_its_record() {
    let (directory, _) = written_store("flip");
    for name in segments(&directory) {
        let path = directory.path().join(&name);
        let clean = std::fs::read(&path).unwrap();
        let end = log_end(&clean) as usize;
        for position in [30, end / 3, end / 2, end - 40] {
            let mut damaged = clean.clone();
            damaged[position] ^= 0x20;
            std::fs::write(&path, &damaged).unwrap();
            let offset = assert_corrupt(open_and_recover(&directory), &name);
            assert!(
                offset <= position as u64 && position as u64 - offset < 300,
                "{name}: flip at {position}, error at {offset}"
            );
        }
        std::fs::write(&path, &clean).unwrap();
    }
    assert!(open_and_recover(&directory).is_ok());
}

#[test]
fn damaged_snapshot_files_are_corrupt() {
    type Damage = fn(Vec<u8>) -> Vec<u8>;
    let damage: [(&str, Damage); 4] = [
        ("garbage", |file| file.iter().map(|byte| byte.wrapping_add(1)).collect()),
        ("truncated", |file| file[..file.len() / 2].to_vec()),
        ("zero-filled", |file| vec![0; file.len()]),
        ("flipped", |mut file| {
            let middle = file.len() - 5;
            file[middle] ^= 4;
            file
        }),
    ];
    for (what, damage) in damage {
        let (directory, _) = written_store("snapshot");
        let name = snapshot_file(&directory);
        let path = directory.path().join(&name);
        std::fs::write(&path, damage(std::fs::read(&path).unwrap())).unwrap();
        let result = open_and_recover(&directory);
        assert!(matches!(result, Err(StorageError::Corrupt { .. })), "{what}: {:?}", result.map(|_| ()));
        assert_corrupt(result, &name);
    }
}

#[test]
fn missing_files_are_corrupt_not_a_fresh_start() {
    // The snapshot the log names.
    let (directory, _) = written_store("missing-snapshot");
    let name = snapshot_file(&directory);
    std::fs::remove_file(directory.path().join(&name)).unwrap();
    assert_corrupt(open_and_recover(&directory), &name);

    // Every segment: the term and vote are gone, which must not look like a new node.
    let (directory, _) = written_store("missing-log");
    for name in segments(&directory) {
        std::fs::remove_file(directory.path().join(name)).unwrap();
    }
    assert_corrupt(open_and_recover(&directory), ".snap");

    // A middle segment that holds live entries.
    let (directory, _) = written_store("missing-middle");
    let names = segments(&directory);
    assert!(names.len() >= 3);
    std::fs::remove_file(directory.path().join(&names[1])).unwrap();
    let error = open_and_recover(&directory).unwrap_err();
    assert!(error.to_string().contains("no longer exists"), "{error}");
}

#[test]
fn unknown_files_are_left_alone_and_leftovers_are_removed() {
    let (directory, recovered) = written_store("leftovers");
    std::fs::write(directory.path().join("notes.txt"), b"operator's file").unwrap();
    std::fs::write(directory.path().join("wal-00000000000000000099.seg.tmp"), b"half a segment").unwrap();
    std::fs::write(directory.path().join("snapshot-00000000000000000042.snap"), b"an orphan").unwrap();
    assert_eq!(open_and_recover(&directory).unwrap(), recovered);
    let files = directory.files();
    assert!(files.contains(&"notes.txt".to_owned()));
    assert!(!files.iter().any(|name| name.ends_with(".tmp") || name.contains("42")), "{files:?}");
}

#[test]
fn bad_options_are_refused() {
    let directory = TemporaryDirectory::new("options");
    let mut options = FileStorageOptions::default();
    options.segment_bytes_max = 10;
    assert!(matches!(FileStorage::open(directory.path(), options), Err(StorageError::Io(_))));
}
