//! Unit tests, the property test against `apply_persist`, and the crash-consistency runs through
//! the fault-injecting file layer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use concord_core::prelude::*;
use concord_core::storage::{apply_persist, RecordWrite};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fault::{Fault, FaultDisk};
use crate::{FileStorage, FileStorageOptions};

/// A directory under the system's temporary directory, removed when dropped.
pub(crate) struct TemporaryDirectory(PathBuf);

impl TemporaryDirectory {
    pub(crate) fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("concord-storage-{label}-{}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TemporaryDirectory(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TemporaryDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry(index: u64, term: u64, size: usize) -> Entry {
    let payload = if size == 0 {
        EntryPayload::Noop
    } else {
        EntryPayload::Command(std::sync::Arc::new(Proposal {
            id: ProposalId { origin: NodeId::new("n1"), sequence: index },
            session: None,
            command: Command::Put {
                key: format!("key-{index}"),
                value: Bytes::from(vec![(index % 251) as u8; size]),
            },
        }))
    };
    Entry { index: LogIndex(index), term: Term(term), timestamp_ms: index * 10, payload }
}

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|index| entry(index, term, 40)).collect()
}

fn snapshot(last_index: u64, last_term: u64, data: &str) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: LogIndex(last_index),
            last_term: Term(last_term),
            membership: Membership::with_voters([NodeInfo::new("n1", "localhost:1")]),
        },
        data: Bytes::from(data.to_owned()),
    }
}

fn small_options() -> FileStorageOptions {
    FileStorageOptions { segment_bytes_max: 4096, record_bytes_max: 4096, ..FileStorageOptions::default() }
}

fn last_index(state: &Recovered) -> u64 {
    state
        .entries
        .last()
        .map(|entry| entry.index.0)
        .or_else(|| state.snapshot.as_ref().map(|snapshot| snapshot.meta.last_index.0))
        .unwrap_or(0)
}

/// Persists through both the store and `apply_persist`, checks they agree, and returns the result.
fn persist_both(
    storage: &mut FileStorage,
    model: &mut Recovered,
    persist: &Persist,
) -> Result<(), StorageError> {
    let mut next = model.clone();
    let expected = apply_persist(&mut next, persist);
    let result = storage.persist(persist);
    match (&expected, &result) {
        (Ok(()), Ok(())) => *model = next,
        (Err(_), Err(StorageError::InvalidWrite(_))) => {}
        _ => panic!("apply_persist said {expected:?}, the store said {result:?} for {persist:?}"),
    }
    result
}

#[test]
fn append_read_and_reopen_on_a_real_directory() {
    let directory = TemporaryDirectory::new("append");
    let mut model = Recovered::default();
    let mut storage = FileStorage::open(directory.path(), FileStorageOptions::default()).unwrap();
    assert_eq!(storage.recover().unwrap(), model);
    for batch in 0..10 {
        let persist = Persist {
            entries: entries(batch * 5 + 1, batch * 5 + 5, 1),
            hard_state: Some(HardState {
                term: Term(1),
                voted_for: Some(NodeId::new("n2")),
                commit: LogIndex(batch),
            }),
            ..Persist::default()
        };
        persist_both(&mut storage, &mut model, &persist).unwrap();
    }
    assert_eq!(storage.recover().unwrap(), model);
    assert_eq!(storage.last_index(), LogIndex(50));
    drop(storage);
    let mut reopened = FileStorage::open(directory.path(), FileStorageOptions::default()).unwrap();
    assert_eq!(reopened.recover().unwrap(), model);
    persist_both(&mut reopened, &mut model, &Persist { entries: entries(51, 51, 2), ..Persist::default() })
        .unwrap();
    drop(reopened);
    assert_eq!(
        FileStorage::open(directory.path(), FileStorageOptions::default()).unwrap().recover().unwrap(),
        model
    );
}

// `open` reads and verifies every segment; the `recover` that follows decodes the entries from
// those bytes instead of reading (and checksumming) every segment again. After a `persist` the
// files have changed, and `recover` reads them again.
#[test]
fn recover_right_after_open_reads_no_segment_again() {
    let disk = FaultDisk::new();
    let mut model = Recovered::default();
    let mut storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    for batch in 0..40 {
        let persist = Persist { entries: entries(batch * 5 + 1, batch * 5 + 5, 1), ..Persist::default() };
        persist_both(&mut storage, &mut model, &persist).unwrap();
    }
    let segments = storage.segment_count() as u64;
    assert!(segments > 1, "the log spans several segments");
    drop(storage);

    let reads_before_open = disk.reads();
    let mut reopened = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    assert_eq!(disk.reads() - reads_before_open, segments, "open reads each segment once");
    assert_eq!(reopened.recover().unwrap(), model);
    assert_eq!(disk.reads() - reads_before_open, segments, "recover read nothing again");

    persist_both(&mut reopened, &mut model, &Persist { entries: entries(201, 201, 2), ..Persist::default() })
        .unwrap();
    let reads_before_recover = disk.reads();
    assert_eq!(reopened.recover().unwrap(), model, "after a write, recover reads the files as they are");
    assert!(disk.reads() > reads_before_recover);
}

#[test]
fn truncation_and_overwrite_replace_the_suffix() {
    let disk = FaultDisk::new();
    let mut storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    let mut model = Recovered::default();
    persist_both(&mut storage, &mut model, &Persist { entries: entries(1, 10, 1), ..Persist::default() })
        .unwrap();
    // An explicit truncation with a new suffix.
    let persist =
        Persist { truncate_from: Some(LogIndex(6)), entries: entries(6, 7, 2), ..Persist::default() };
    persist_both(&mut storage, &mut model, &persist).unwrap();
    assert_eq!(storage.last_index(), LogIndex(7));
    // An append over the suffix without a truncation.
    persist_both(&mut storage, &mut model, &Persist { entries: entries(4, 4, 3), ..Persist::default() })
        .unwrap();
    assert_eq!(storage.last_index(), LogIndex(4));
    // A truncation alone, and one past the end (a no-op).
    persist_both(
        &mut storage,
        &mut model,
        &Persist { truncate_from: Some(LogIndex(3)), ..Persist::default() },
    )
    .unwrap();
    persist_both(
        &mut storage,
        &mut model,
        &Persist { truncate_from: Some(LogIndex(30)), ..Persist::default() },
    )
    .unwrap();
    assert_eq!(storage.recover().unwrap(), model);
    assert_eq!(model.entries.len(), 2);
    drop(storage);
    assert_eq!(FileStorage::open_in(disk.directory(), small_options()).unwrap().recover().unwrap(), model);
}

#[test]
fn one_fdatasync_per_persist_and_directory_syncs_only_for_segment_changes() {
    let disk = FaultDisk::new();
    let mut storage = FileStorage::open_in(disk.directory(), FileStorageOptions::default()).unwrap();
    let (files_before, directories_before) = disk.syncs();
    for batch in 0..50 {
        let persist = Persist {
            entries: entries(batch * 20 + 1, batch * 20 + 20, 1),
            hard_state: Some(HardState { term: Term(1), voted_for: None, commit: LogIndex(batch * 20) }),
            records: vec![RecordWrite {
                key: Bytes::from_static(b"vote"),
                value: Some(Bytes::from_static(b"x")),
            }],
            ..Persist::default()
        };
        storage.persist(&persist).unwrap();
    }
    // Group commit: every entry, hard state and record of a persist under one sync.
    assert_eq!(disk.syncs(), (files_before + 50, directories_before));

    // With small segments, a rotation adds the new segment's own sync and one directory sync
    // (its rename); nothing else.
    let disk = FaultDisk::new();
    let mut storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    let (files_before, directories_before) = disk.syncs();
    let persists = 40;
    for batch in 0..persists {
        storage
            .persist(&Persist { entries: entries(batch * 3 + 1, batch * 3 + 3, 1), ..Persist::default() })
            .unwrap();
    }
    let rotations = storage.segment_count() as u64 - 1;
    assert!(rotations >= 2);
    let (files, directories) = disk.syncs();
    // Each rotation: seal the old segment (one sync) and write the new one (one sync, which
    // carries that persist's group) instead of the usual one.
    assert_eq!(files - files_before, persists + rotations);
    assert_eq!(directories - directories_before, rotations);
}

#[test]
fn segments_rotate_and_reopen_reads_across_them() {
    let disk = FaultDisk::new();
    let mut storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    let mut model = Recovered::default();
    for batch in 0..40 {
        let persist = Persist { entries: entries(batch * 3 + 1, batch * 3 + 3, 1), ..Persist::default() };
        persist_both(&mut storage, &mut model, &persist).unwrap();
    }
    assert!(storage.segment_count() >= 3, "{} segments", storage.segment_count());
    for (name, bytes) in disk.files() {
        if name.ends_with(".seg") {
            // One persist may overrun the limit by its own size, never more.
            assert!(bytes.len() <= 4096 + 1024, "{name} holds {} bytes", bytes.len());
        }
    }
    assert_eq!(storage.recover().unwrap(), model);
    drop(storage);
    let mut reopened = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    assert_eq!(reopened.recover().unwrap(), model);
    // Truncating into an older segment and appending again works across segments.
    let persist =
        Persist { truncate_from: Some(LogIndex(10)), entries: entries(10, 12, 2), ..Persist::default() };
    persist_both(&mut reopened, &mut model, &persist).unwrap();
    drop(reopened);
    assert_eq!(FileStorage::open_in(disk.directory(), small_options()).unwrap().recover().unwrap(), model);
}

#[test]
fn snapshots_compact_whole_segments_and_replace_each_other() {
    let disk = FaultDisk::new();
    let mut storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    let mut model = Recovered::default();
    for batch in 0..30 {
        let persist = Persist { entries: entries(batch * 4 + 1, batch * 4 + 4, 1), ..Persist::default() };
        persist_both(&mut storage, &mut model, &persist).unwrap();
    }
    let before = storage.segment_count();
    persist_both(
        &mut storage,
        &mut model,
        &Persist { snapshot: Some(snapshot(100, 1, "first")), ..Persist::default() },
    )
    .unwrap();
    assert!(storage.segment_count() < before, "{} segments before and after", before);
    assert_eq!(model.entries.len(), 20, "the snapshot keeps the log after it");
    let snapshot_files =
        |disk: &FaultDisk| disk.files().keys().filter(|name| name.ends_with(".snap")).count();
    assert_eq!(snapshot_files(&disk), 1);
    // A second snapshot replaces the first, whose file goes.
    persist_both(
        &mut storage,
        &mut model,
        &Persist { snapshot: Some(snapshot(110, 1, "second")), ..Persist::default() },
    )
    .unwrap();
    assert_eq!(snapshot_files(&disk), 1);
    assert_eq!(storage.snapshot_position(), Some((LogIndex(110), Term(1))));
    assert_eq!(storage.recover().unwrap(), model);
    drop(storage);
    let mut reopened = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    assert_eq!(reopened.recover().unwrap(), model);
    // A snapshot of another term at the same point replaces the whole log (as after an install).
    persist_both(
        &mut reopened,
        &mut model,
        &Persist { snapshot: Some(snapshot(115, 7, "third")), ..Persist::default() },
    )
    .unwrap();
    assert!(model.entries.is_empty());
    assert_eq!(reopened.segment_count(), 1, "no entry needs the old segments");
    persist_both(&mut reopened, &mut model, &Persist { entries: entries(116, 118, 7), ..Persist::default() })
        .unwrap();
    drop(reopened);
    assert_eq!(FileStorage::open_in(disk.directory(), small_options()).unwrap().recover().unwrap(), model);
}

#[test]
fn refused_writes_change_nothing() {
    let disk = FaultDisk::new();
    let mut storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    let mut model = Recovered::default();
    persist_both(&mut storage, &mut model, &Persist { entries: entries(1, 5, 1), ..Persist::default() })
        .unwrap();
    persist_both(
        &mut storage,
        &mut model,
        &Persist { snapshot: Some(snapshot(3, 1, "s")), ..Persist::default() },
    )
    .unwrap();
    let operations = disk.operations();
    let refused = [
        Persist { entries: entries(7, 8, 1), ..Persist::default() },
        Persist { entries: vec![entry(6, 1, 10), entry(8, 1, 10)], ..Persist::default() },
        Persist { entries: entries(2, 3, 1), ..Persist::default() },
        Persist { snapshot: Some(snapshot(2, 1, "old")), entries: entries(6, 6, 1), ..Persist::default() },
        Persist { entries: vec![entry(6, 1, 8000)], ..Persist::default() },
        Persist {
            hard_state: Some(HardState { term: Term(9), ..HardState::default() }),
            truncate_from: Some(LogIndex(4)),
            entries: entries(9, 9, 1),
            ..Persist::default()
        },
    ];
    for persist in &refused {
        if persist.entries.first().is_some_and(|entry| entry.size_bytes() > 4096) {
            // apply_persist has no size limit: only the store refuses this one.
            assert!(matches!(storage.persist(persist), Err(StorageError::InvalidWrite(_))));
        } else {
            assert!(persist_both(&mut storage, &mut model, persist).is_err());
        }
    }
    assert_eq!(disk.operations(), operations, "a refused write touches no file");
    assert_eq!(storage.recover().unwrap(), model);
    persist_both(&mut storage, &mut model, &Persist { entries: entries(6, 6, 1), ..Persist::default() })
        .unwrap();
}

#[test]
fn records_survive_rotation_and_compaction() {
    let disk = FaultDisk::new();
    let mut storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
    let mut model = Recovered::default();
    let put = |key: &str, value: &str| RecordWrite {
        key: Bytes::from(key.to_owned()),
        value: Some(Bytes::from(value.to_owned())),
    };
    let delete = |key: &str| RecordWrite { key: Bytes::from(key.to_owned()), value: None };
    let persist = Persist {
        records: vec![put("vote/1", "a"), put("vote/2", "b"), put("vote/1", "c")],
        ..Persist::default()
    };
    persist_both(&mut storage, &mut model, &persist).unwrap();
    for batch in 0..30 {
        let persist = Persist {
            entries: entries(batch * 4 + 1, batch * 4 + 4, 1),
            records: vec![put(&format!("slot/{batch}"), "yes")],
            ..Persist::default()
        };
        persist_both(&mut storage, &mut model, &persist).unwrap();
    }
    persist_both(
        &mut storage,
        &mut model,
        &Persist { records: vec![delete("vote/2")], ..Persist::default() },
    )
    .unwrap();
    persist_both(
        &mut storage,
        &mut model,
        &Persist { snapshot: Some(snapshot(120, 1, "s")), ..Persist::default() },
    )
    .unwrap();
    assert_eq!(model.records.len(), 31);
    drop(storage);
    assert_eq!(FileStorage::open_in(disk.directory(), small_options()).unwrap().recover().unwrap(), model);
    // The records limit is a refused write.
    let mut limited = FileStorage::open_in(
        disk.directory(),
        FileStorageOptions { records_bytes_max: 400, ..small_options() },
    )
    .unwrap();
    let big = Persist { records: vec![put("big", &"x".repeat(300))], ..Persist::default() };
    assert!(matches!(limited.persist(&big), Err(StorageError::InvalidWrite(_))));
}

#[test]
fn a_full_disk_stops_all_writes_and_a_reopen_resumes() {
    for at in 1..=3 {
        let disk = FaultDisk::new();
        let mut storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
        let mut model = Recovered::default();
        persist_both(&mut storage, &mut model, &Persist { entries: entries(1, 3, 1), ..Persist::default() })
            .unwrap();
        disk.arm(at, Fault::NoSpace);
        let persist =
            Persist { snapshot: Some(snapshot(2, 1, "s")), entries: entries(4, 4, 1), ..Persist::default() };
        assert!(matches!(storage.persist(&persist), Err(StorageError::Full(_))), "fault at operation {at}");
        assert!(storage.failure().is_some());
        let later = Persist { entries: entries(4, 4, 1), ..Persist::default() };
        assert!(matches!(storage.persist(&later), Err(StorageError::Failed(_))));
        assert!(matches!(storage.recover(), Err(StorageError::Failed(_))));
        drop(storage);
        // The same disk without the fault (space was freed): the failed write is not there, or
        // all of it is (it was never acknowledged either way).
        let image = disk.crash(&mut ChaCha8Rng::seed_from_u64(at));
        let recovered = FileStorage::open_in(image.directory(), small_options()).unwrap().recover().unwrap();
        let mut attempted = model.clone();
        apply_persist(&mut attempted, &persist).unwrap();
        assert!(recovered == model || recovered == attempted, "fault at operation {at}: {recovered:?}");
    }
}

/// Bytes up to the last non-zero one: a segment without its preallocated zeros.
fn without_zero_tail(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.iter().rposition(|byte| *byte != 0).map_or(0, |last| last + 1)]
}

#[test]
fn torn_and_zero_filled_tails_of_the_last_segment_are_cut_off() {
    for preallocation_bytes in [0, 8192] {
        let options = FileStorageOptions { preallocation_bytes, ..FileStorageOptions::default() };
        let disk = FaultDisk::new();
        let mut storage = FileStorage::open_in(disk.directory(), options.clone()).unwrap();
        let mut model = Recovered::default();
        persist_both(&mut storage, &mut model, &Persist { entries: entries(1, 3, 1), ..Persist::default() })
            .unwrap();
        drop(storage);
        let (name, clean) = disk.files().into_iter().find(|(name, _)| name.ends_with(".seg")).unwrap();
        let clean = without_zero_tail(&clean).to_vec();
        let mut appended = FaultDisk::new();
        let mut storage = FileStorage::open_in(appended.directory(), options.clone()).unwrap();
        storage.persist(&Persist { entries: entries(1, 3, 1), ..Persist::default() }).unwrap();
        storage.persist(&Persist { entries: entries(4, 6, 1), ..Persist::default() }).unwrap();
        drop(storage);
        let full = appended.files().remove(&name).unwrap();
        let full_end = without_zero_tail(&full).len();
        assert!(full_end > clean.len() && full.starts_with(&clean));
        for cut in clean.len()..full_end {
            for zero_fill in [false, true] {
                let mut torn = full[..cut].to_vec();
                if zero_fill {
                    torn.resize(full.len(), 0);
                }
                appended = FaultDisk::new();
                appended.directory().create(&name).unwrap().write_at(0, &torn).unwrap();
                let mut reopened = FileStorage::open_in(appended.directory(), options.clone())
                    .unwrap_or_else(|error| panic!("cut at {cut}, zero fill {zero_fill}: {error}"));
                assert_eq!(reopened.recover().unwrap(), model, "cut at {cut}");
                assert_eq!(without_zero_tail(&appended.files()[&name]), clean, "the torn tail is cut off");
                // Appending after the repair gives a log that reopens with everything.
                let mut next = model.clone();
                persist_both(
                    &mut reopened,
                    &mut next,
                    &Persist { entries: entries(4, 4, 2), ..Persist::default() },
                )
                .unwrap();
                drop(reopened);
                let again =
                    FileStorage::open_in(appended.directory(), options.clone()).unwrap().recover().unwrap();
                assert_eq!(again, next, "cut at {cut}, zero fill {zero_fill}");
            }
        }
    }
}

#[test]
fn a_bit_flip_before_the_tail_is_corruption_with_file_and_offset() {
    let disk = FaultDisk::new();
    let mut storage = FileStorage::open_in(disk.directory(), FileStorageOptions::default()).unwrap();
    for batch in 0..4 {
        storage
            .persist(&Persist { entries: entries(batch * 3 + 1, batch * 3 + 3, 1), ..Persist::default() })
            .unwrap();
    }
    drop(storage);
    let (name, clean) = disk.files().into_iter().find(|(name, _)| name.ends_with(".seg")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..200 {
        let position = rng.gen_range(24..without_zero_tail(&clean).len());
        let mut damaged = clean.clone();
        damaged[position] ^= 1 << rng.gen_range(0..8);
        disk.overwrite(&name, damaged);
        match FileStorage::open_in(disk.directory(), FileStorageOptions::default()) {
            Err(StorageError::Corrupt { file, offset, .. }) => {
                assert!(file.ends_with(&name));
                assert!(offset <= position as u64, "offset {offset} after the flip at {position}");
            }
            other => panic!("flip at {position}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A random workload, shared by the property test and the crash runs.

/// A persist chosen at random against the model's state; about one in twelve is refused.
fn random_persist(rng: &mut impl Rng, model: &Recovered, term: &mut u64) -> Persist {
    let snapshot_index = model.snapshot.as_ref().map_or(0, |snapshot| snapshot.meta.last_index.0);
    let last = last_index(model);
    let mut persist = Persist::default();
    let size = |rng: &mut dyn rand::RngCore| rng.gen_range(0..200usize);
    match rng.gen_range(0..100) {
        0..=54 => {
            let count = rng.gen_range(1..=6);
            persist.entries = (last + 1..=last + count).map(|index| entry(index, *term, size(rng))).collect();
        }
        55..=64 => {
            *term += 1;
            let from = rng.gen_range(snapshot_index + 1..=last + 1);
            persist.truncate_from = Some(LogIndex(from));
            let count = rng.gen_range(0..=3);
            persist.entries = (from..from + count).map(|index| entry(index, *term, size(rng))).collect();
        }
        65..=69 if last > snapshot_index => {
            *term += 1;
            let from = rng.gen_range(snapshot_index + 1..=last);
            persist.entries =
                (from..=from + rng.gen_range(0..3)).map(|index| entry(index, *term, size(rng))).collect();
        }
        70..=77 => {
            let index = rng.gen_range(snapshot_index..=last);
            let matching =
                model.entries.iter().find(|entry| entry.index.0 == index).map(|entry| entry.term.0);
            let snapshot_term = match matching {
                Some(term) if rng.gen_bool(0.7) => term,
                _ => rng.gen_range(1..=*term + 1),
            };
            let data = format!("state at {index}: {}", "s".repeat(rng.gen_range(0..300)));
            persist.snapshot = Some(snapshot(index, snapshot_term, &data));
        }
        78..=85 => {
            for _ in 0..rng.gen_range(1..=4) {
                let key = Bytes::from(format!("vote/{}", rng.gen_range(0..12)));
                let value =
                    rng.gen_bool(0.75).then(|| Bytes::from(vec![rng.gen::<u8>(); rng.gen_range(0..40)]));
                persist.records.push(RecordWrite { key, value });
            }
        }
        86..=93 => {
            // Refused: a gap, or entries inside the snapshot.
            let start = if rng.gen_bool(0.5) || snapshot_index == 0 { last + 2 } else { snapshot_index };
            persist.entries = (start..start + 2).map(|index| entry(index, *term, 10)).collect();
        }
        _ => {}
    }
    if persist.is_empty() || rng.gen_bool(0.4) {
        if rng.gen_bool(0.2) {
            *term += 1;
        }
        let voted_for = rng.gen_bool(0.5).then(|| NodeId::new(format!("n{}", rng.gen_range(1..=5))));
        persist.hard_state =
            Some(HardState { term: Term(*term), voted_for, commit: LogIndex(rng.gen_range(0..=last)) });
    }
    persist
}

#[test]
fn matches_apply_persist_on_random_workloads_with_reopens() {
    use proptest::prelude::*;
    let config = ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(seed in any::<u64>(), steps in 1usize..120, reopen_every in 2usize..30)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let disk = FaultDisk::new();
        let mut storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
        let mut model = Recovered::default();
        let mut term = 1;
        for step in 0..steps {
            let persist = random_persist(&mut rng, &model, &mut term);
            let _ = persist_both(&mut storage, &mut model, &persist);
            if step % reopen_every == 0 {
                drop(storage);
                storage = FileStorage::open_in(disk.directory(), small_options()).unwrap();
                prop_assert_eq!(&storage.recover().unwrap(), &model);
            }
        }
        prop_assert_eq!(&storage.recover().unwrap(), &model);
        prop_assert_eq!(storage.last_index().0, last_index(&model));
    });
}

// ---------------------------------------------------------------------------------------------
// Crash consistency.

/// Crash cycles per seed: each arms a fault at a random operation (opening included), runs a
/// random workload until it fires, takes the crash image and recovers from it.
const CRASH_CYCLES_PER_SEED: u64 = 4;
/// Seeds in the default test run: 1,000 seeds × 4 cycles = 4,000 crash points (about 0.2 s).
const CRASH_SEEDS_DEFAULT: u64 = 1000;

/// Runs one seed; returns the number of crash points it went through. Panics, naming the seed,
/// on any violation: an acknowledged write missing or changed, corruption reported or returned,
/// a log that is not what some prefix of the persists (plus maybe the interrupted one) makes.
pub(crate) fn crash_run(seed: u64) -> CrashStatistics {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Preallocation off, in small steps (extended by most writes), and up to the segment size.
    let preallocation_bytes = [0, 300, 1 << 20][rng.gen_range(0..3)];
    let options = FileStorageOptions { preallocation_bytes, ..small_options() };
    let mut disk = FaultDisk::new();
    let mut acknowledged = Recovered::default();
    let mut attempted: Option<Recovered> = None;
    let mut term = 1;
    let mut statistics = CrashStatistics::default();
    for cycle in 0..CRASH_CYCLES_PER_SEED {
        let fault = if rng.gen_bool(0.15) { Fault::NoSpace } else { Fault::Crash };
        disk.arm(rng.gen_range(1..=40), fault);
        match FileStorage::open_in(disk.directory(), options.clone()) {
            Err(error) => {
                assert!(disk.failed(), "seed {seed} cycle {cycle}: open failed by itself: {error}");
                statistics.during_open += 1;
            }
            Ok(mut storage) => {
                let recovered = storage
                    .recover()
                    .unwrap_or_else(|error| panic!("seed {seed} cycle {cycle}: recover failed: {error}"));
                let acceptable = recovered == acknowledged || attempted.as_ref() == Some(&recovered);
                assert!(acceptable, "seed {seed} cycle {cycle}: recovered {recovered:#?}\nacknowledged {acknowledged:#?}\nattempted {attempted:#?}");
                if recovered != acknowledged {
                    statistics.interrupted_write_landed += 1;
                }
                acknowledged = recovered;
                attempted = None;
                for _ in 0..30 {
                    let persist = random_persist(&mut rng, &acknowledged, &mut term);
                    let mut next = acknowledged.clone();
                    let valid = apply_persist(&mut next, &persist).is_ok();
                    match storage.persist(&persist) {
                        Ok(()) => {
                            assert!(valid, "seed {seed}: the store took what apply_persist refuses");
                            acknowledged = next;
                        }
                        Err(StorageError::InvalidWrite(_)) => {
                            assert!(!valid, "seed {seed}: a valid write refused")
                        }
                        Err(error) => {
                            assert!(disk.failed(), "seed {seed}: persist failed by itself: {error}");
                            if fault == Fault::NoSpace {
                                assert!(matches!(error, StorageError::Full(_)), "seed {seed}: {error}");
                            }
                            assert!(matches!(storage.persist(&persist), Err(StorageError::Failed(_))));
                            attempted = valid.then_some(next);
                            statistics.during_persist += 1;
                            break;
                        }
                    }
                }
            }
        }
        // The fault fired, or the workload ended first: power is cut either way.
        statistics.crash_points += 1;
        disk = disk.crash(&mut rng);
    }
    let mut storage = FileStorage::open_in(disk.directory(), options)
        .unwrap_or_else(|error| panic!("seed {seed}: final open failed: {error}"));
    let recovered =
        storage.recover().unwrap_or_else(|error| panic!("seed {seed}: final recover failed: {error}"));
    assert!(recovered == acknowledged || attempted.as_ref() == Some(&recovered), "seed {seed}: final state");
    statistics
}

/// What the crash runs went through.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CrashStatistics {
    /// Power cuts, each followed by a recovery.
    pub(crate) crash_points: u64,
    /// Faults that hit a `persist` (the rest hit an open's repair, or came after the workload).
    pub(crate) during_persist: u64,
    /// Faults that hit an open's repair.
    pub(crate) during_open: u64,
    /// Recoveries that found the interrupted (unacknowledged) write complete.
    pub(crate) interrupted_write_landed: u64,
}

impl std::ops::Add for CrashStatistics {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        CrashStatistics {
            crash_points: self.crash_points + other.crash_points,
            during_persist: self.during_persist + other.during_persist,
            during_open: self.during_open + other.during_open,
            interrupted_write_landed: self.interrupted_write_landed + other.interrupted_write_landed,
        }
    }
}

/// Seeds for the crash runs: `CONCORD_STORAGE_CRASH_SEEDS` overrides the default count (for long
/// runs); the first seed is `CONCORD_STORAGE_CRASH_SEED_START` (default 0).
#[test]
fn survives_random_crash_points() {
    let count = std::env::var("CONCORD_STORAGE_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CRASH_SEEDS_DEFAULT);
    let start =
        std::env::var("CONCORD_STORAGE_CRASH_SEED_START").ok().and_then(|v| v.parse().ok()).unwrap_or(0u64);
    let began = std::time::Instant::now();
    let statistics = (start..start + count).map(crash_run).fold(CrashStatistics::default(), |a, b| a + b);
    assert!(statistics.crash_points >= 1000 || count < CRASH_SEEDS_DEFAULT, "{statistics:?}");
    // The faults must actually land inside writes and repairs, not only between them.
    assert!(statistics.during_persist * 2 >= statistics.crash_points, "{statistics:?}");
    assert!(statistics.during_open > 0 && statistics.interrupted_write_landed > 0, "{statistics:?}");
    eprintln!(
        "{statistics:?} over {count} seeds in {:.2?} ({:.0} seeds/s)",
        began.elapsed(),
        count as f64 / began.elapsed().as_secs_f64()
    );
}
