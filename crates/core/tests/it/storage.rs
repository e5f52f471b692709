//! `MemoryStorage` / `apply_persist`: append, truncate, overwrite, compaction, and refused writes
//! that leave the state exactly as it was.

use bytes::Bytes;
use concord_core::prelude::*;
use concord_core::storage::{apply_persist, RecordWrite};

fn entry(index: u64, term: u64) -> Entry {
    Entry { index: LogIndex(index), term: Term(term), timestamp_ms: index, payload: EntryPayload::Noop }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn snapshot(last_index: u64, last_term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: LogIndex(last_index),
            last_term: Term(last_term),
            membership: Membership::default(),
        },
        data: Bytes::from_static(b"state"),
    }
}

fn append(new: Vec<Entry>) -> Persist {
    Persist { entries: new, ..Persist::default() }
}

/// (index, term) of every stored entry.
fn log(storage: &MemoryStorage) -> Vec<(u64, u64)> {
    storage.state().entries.iter().map(|e| (e.index.0, e.term.0)).collect()
}

fn storage_with(new: Vec<Entry>) -> MemoryStorage {
    let mut storage = MemoryStorage::new();
    storage.persist(&append(new)).unwrap();
    storage
}

/// A write that must be refused, leaving the state as it was.
fn assert_refused(storage: &mut MemoryStorage, persist: Persist) {
    let before = storage.state().clone();
    match storage.persist(&persist) {
        Err(StorageError::InvalidWrite(_)) => {}
        other => panic!("expected InvalidWrite for {persist:?}, got {other:?}"),
    }
    assert_eq!(storage.state(), &before, "a refused write changed the state");
}

#[test]
fn appends_must_continue_the_log() {
    let mut storage = MemoryStorage::new();
    assert!(!storage.is_blocking());
    assert!(Persist::default().is_empty());
    assert_refused(&mut storage, append(vec![entry(2, 1)]));
    storage.persist(&append(entries(1..=3, 1))).unwrap();
    storage.persist(&append(entries(4..=5, 1))).unwrap();
    assert_eq!(storage.last_index(), LogIndex(5));
    assert_eq!(log(&storage), [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]);
    // A gap after the end, or inside the entries, is refused.
    assert_refused(&mut storage, append(vec![entry(7, 1)]));
    assert_refused(&mut storage, append(vec![entry(6, 1), entry(8, 1)]));
    // An append with nothing in it is fine.
    storage.persist(&append(Vec::new())).unwrap();
    assert_eq!(storage.recover().unwrap(), storage.state().clone());
}

#[test]
fn truncation_and_suffix_overwrite() {
    let mut storage = storage_with(entries(1..=5, 1));
    storage.persist(&Persist { truncate_from: Some(LogIndex(4)), ..Persist::default() }).unwrap();
    assert_eq!(storage.last_index(), LogIndex(3));
    // Truncate and append in one write: the append continues the truncated log.
    storage
        .persist(&Persist {
            truncate_from: Some(LogIndex(3)),
            entries: entries(3..=4, 2),
            ..Persist::default()
        })
        .unwrap();
    assert_eq!(log(&storage), [(1, 1), (2, 1), (3, 2), (4, 2)]);
    // An append that starts inside the log replaces the suffix from there, without a truncate.
    storage.persist(&append(vec![entry(2, 3)])).unwrap();
    assert_eq!(log(&storage), [(1, 1), (2, 3)]);
    // Truncating beyond the end changes nothing.
    storage.persist(&Persist { truncate_from: Some(LogIndex(9)), ..Persist::default() }).unwrap();
    assert_eq!(storage.last_index(), LogIndex(2));
}

#[test]
fn a_refused_overwrite_keeps_the_suffix() {
    // Entries that would overwrite from index 3 but have a gap: nothing may be dropped.
    let mut storage = storage_with(entries(1..=5, 1));
    assert_refused(&mut storage, append(vec![entry(3, 2), entry(5, 2)]));
    assert_eq!(storage.last_index(), LogIndex(5));
    // A truncate with a bad append is refused whole, truncate included.
    assert_refused(
        &mut storage,
        Persist { truncate_from: Some(LogIndex(2)), entries: vec![entry(4, 2)], ..Persist::default() },
    );
}

#[test]
fn snapshots_compact_the_log() {
    let mut storage = storage_with(entries(1..=5, 1));
    // A snapshot whose last entry is in the log keeps what follows it.
    storage.persist(&Persist { snapshot: Some(snapshot(3, 1)), ..Persist::default() }).unwrap();
    assert_eq!(log(&storage), [(4, 1), (5, 1)]);
    assert_eq!(storage.last_index(), LogIndex(5));
    // The same snapshot again keeps the log too.
    storage.persist(&Persist { snapshot: Some(snapshot(3, 1)), ..Persist::default() }).unwrap();
    assert_eq!(log(&storage), [(4, 1), (5, 1)]);
    // Nothing at or before the snapshot can be overwritten.
    assert_refused(&mut storage, append(vec![entry(3, 2)]));
    // An older snapshot is refused.
    assert_refused(&mut storage, Persist { snapshot: Some(snapshot(2, 1)), ..Persist::default() });
    // A snapshot from a leader whose log differs replaces the whole log.
    storage.persist(&Persist { snapshot: Some(snapshot(5, 2)), ..Persist::default() }).unwrap();
    assert!(storage.state().entries.is_empty());
    assert_eq!(storage.last_index(), LogIndex(5));
    storage.persist(&append(vec![entry(6, 2)])).unwrap();
    // A snapshot beyond the log, with the entries that follow it in the same write.
    storage
        .persist(&Persist {
            snapshot: Some(snapshot(10, 3)),
            entries: entries(11..=12, 3),
            ..Persist::default()
        })
        .unwrap();
    assert_eq!(log(&storage), [(11, 3), (12, 3)]);
    assert_eq!(storage.state().snapshot.as_ref().map(|s| s.meta.last_index), Some(LogIndex(10)));
    // A snapshot with a misplaced append is refused whole: the snapshot is not installed either.
    assert_refused(
        &mut storage,
        Persist { snapshot: Some(snapshot(20, 3)), entries: vec![entry(22, 3)], ..Persist::default() },
    );
    assert_eq!(storage.state().snapshot.as_ref().map(|s| s.meta.last_index), Some(LogIndex(10)));
}

#[test]
fn hard_state_and_records() {
    let mut storage = MemoryStorage::new();
    let hard_state =
        HardState { term: Term(3), voted_for: Some(NodeId::new("agent-002")), commit: LogIndex(0) };
    let record = |key: &'static [u8], value: Option<&'static [u8]>| RecordWrite {
        key: Bytes::from_static(key),
        value: value.map(Bytes::from_static),
    };
    storage
        .persist(&Persist {
            hard_state: Some(hard_state.clone()),
            records: vec![record(b"vote:a", Some(b"1")), record(b"vote:b", Some(b"2"))],
            ..Persist::default()
        })
        .unwrap();
    storage.persist(&Persist { records: vec![record(b"vote:a", None)], ..Persist::default() }).unwrap();
    let recovered = storage.recover().unwrap();
    assert_eq!(recovered.hard_state, hard_state);
    assert_eq!(recovered.records.len(), 1);
    assert_eq!(recovered.records.get(&Bytes::from_static(b"vote:b")), Some(&Bytes::from_static(b"2")));

    // `apply_persist` is the same logic, usable on a bare `Recovered`.
    let mut state = Recovered::default();
    apply_persist(&mut state, &append(entries(1..=2, 1))).unwrap();
    assert_eq!(state.entries.len(), 2);
}

/// One random write: each field drawn near the current end of the log, so that both accepted and
/// refused writes are common.
#[derive(Clone, Debug)]
struct WritePlan {
    snapshot: Option<(u64, u64)>,
    truncate_from: Option<u64>,
    first_index: u64,
    count: u64,
    term: u64,
    gap_at: Option<usize>,
}

fn write_plan() -> impl proptest::strategy::Strategy<Value = WritePlan> {
    use proptest::prelude::*;
    (
        proptest::option::weighted(0.2, (0..12u64, 0..4u64)),
        proptest::option::weighted(0.2, 0..14u64),
        0..14u64,
        0..4u64,
        0..4u64,
        proptest::option::weighted(0.1, 0..4usize),
    )
        .prop_map(|(snapshot, truncate_from, first_index, count, term, gap_at)| WritePlan {
            snapshot,
            truncate_from,
            first_index,
            count,
            term,
            gap_at,
        })
}

impl WritePlan {
    fn persist(&self) -> Persist {
        let mut new: Vec<Entry> =
            (0..self.count).map(|offset| entry(self.first_index + offset, self.term)).collect();
        if let Some(at) = self.gap_at.filter(|&at| at < new.len()) {
            new.remove(at);
        }
        Persist {
            snapshot: self.snapshot.map(|(index, term)| snapshot(index, term)),
            truncate_from: self.truncate_from.map(LogIndex),
            entries: new,
            ..Persist::default()
        }
    }
}

#[test]
fn random_writes_keep_the_log_contiguous_and_refusals_change_nothing() {
    use proptest::collection::vec;
    use proptest::test_runner::TestRunner;

    let accepted = std::cell::Cell::new(0usize);
    let refused = std::cell::Cell::new(0usize);
    let mut runner = TestRunner::new(crate::strategies::seeded(400, 0x5EED_0005));
    runner
        .run(&vec(write_plan(), 1..40), |plans| {
            let mut storage = MemoryStorage::new();
            for plan in plans {
                let persist = plan.persist();
                let before = storage.state().clone();
                match storage.persist(&persist) {
                    Ok(()) => {
                        accepted.set(accepted.get() + 1);
                        // The written entries are the log's suffix, exactly.
                        let stored = &storage.state().entries;
                        proptest::prop_assert!(stored.ends_with(&persist.entries));
                        if let Some(snapshot) = &persist.snapshot {
                            proptest::prop_assert_eq!(storage.state().snapshot.as_ref(), Some(snapshot));
                        }
                    }
                    Err(StorageError::InvalidWrite(_)) => {
                        refused.set(refused.get() + 1);
                        proptest::prop_assert_eq!(storage.state(), &before, "refused {:?}", persist);
                    }
                    Err(other) => proptest::prop_assert!(false, "unexpected error {:?}", other),
                }
                // The log always starts right after the snapshot and has no gap.
                let snapshot_last = storage.state().snapshot.as_ref().map_or(0, |s| s.meta.last_index.0);
                for (offset, stored) in storage.state().entries.iter().enumerate() {
                    proptest::prop_assert_eq!(stored.index.0, snapshot_last + 1 + offset as u64);
                }
            }
            Ok(())
        })
        .unwrap();
    // Both kinds of write were exercised, in earnest.
    assert!(accepted.get() > 1000 && refused.get() > 1000, "accepted {accepted:?}, refused {refused:?}");
}
