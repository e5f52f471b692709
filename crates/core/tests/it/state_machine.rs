//! The replicated key-value state machine and the exactly-once session table.

use bytes::Bytes;
use concord_core::prelude::*;
use concord_core::state_machine::StateMachineError;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use crate::strategies;

fn context(index: u64) -> ApplyContext {
    ApplyContext { index: LogIndex(index), term: Term(1 + index / 10), timestamp_ms: 1_000 + index }
}

/// A key-value machine with a helper that applies at the next index.
struct Machine {
    machine: KvStateMachine,
    index: u64,
}

impl Machine {
    fn new() -> Self {
        Machine { machine: KvStateMachine::new(), index: 0 }
    }

    fn apply(&mut self, command: Command) -> CommandResult {
        self.index += 1;
        self.machine.apply(&context(self.index), &command)
    }
}

fn put(key: &str, value: &'static [u8]) -> Command {
    Command::Put { key: key.into(), value: Bytes::from_static(value) }
}

fn counter(value: i64) -> Bytes {
    KvStateMachine::encode_counter(value)
}

#[test]
fn same_commands_give_same_state_and_snapshot_bytes_on_every_replica_answered_or_not() {
    // Sessions come from a tiny pool so retries (and, with a table of 4, evictions) happen often.
    let session = (0..3u64, 0..4u64).prop_map(|(client, sequence)| ClientSession::new(client, sequence));
    let history = vec((strategies::kv_command(), option::of(session)), 0..80);
    let split = any::<prop::sample::Index>();
    let mut runner = TestRunner::new(strategies::seeded(300, 0x5EED_0003));
    runner
        .run(&(history, split), |(history, split)| {
            let mut first = Replica::key_value(4);
            let mut second = Replica::key_value(4);
            // The third replica joins halfway through from a snapshot of the first, as a lagging
            // follower does.
            let mut third = Replica::key_value(4);
            let join_at = split.index(history.len() + 1);
            for (position, (command, session)) in history.iter().enumerate() {
                if position == join_at {
                    third.restore(&first.snapshot()).expect("restore");
                }
                let context = context(position as u64 + 1);
                let result = first.apply(&context, *session, command);
                // The second replica takes every other entry without asking for its result, as a
                // follower does: its retries (which return stored results) and its snapshot must
                // still agree.
                if position % 2 == 0 {
                    second.apply_unanswered(&context, *session, command);
                } else {
                    prop_assert_eq!(&second.apply(&context, *session, command), &result);
                }
                if position >= join_at {
                    prop_assert_eq!(&third.apply(&context, *session, command), &result);
                }
            }
            if join_at == history.len() {
                third.restore(&first.snapshot()).expect("restore");
            }
            let snapshot = first.snapshot();
            prop_assert_eq!(&second.snapshot(), &snapshot);
            prop_assert_eq!(&third.snapshot(), &snapshot);
            for key in ["a", "b", "c", "d", "aa", "ab", "ba", "dd"] {
                let expected = (first.machine().get(key), first.machine().version(key));
                prop_assert_eq!((second.machine().get(key), second.machine().version(key)), expected.clone());
                prop_assert_eq!((third.machine().get(key), third.machine().version(key)), expected);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_failing_compare_and_swap_aborts_the_whole_batch() {
    let mut machine = Machine::new();
    machine.apply(put("a", b"1")).unwrap();
    machine.apply(put("b", b"2")).unwrap();
    let before = machine.machine.clone();
    let snapshot_before = machine.machine.snapshot();

    let batch = Command::Batch(vec![
        put("a", b"10"),
        Command::Delete { key: "b".into() },
        Command::Add { key: "c".into(), delta: 5 },
        Command::CompareAndSwap { key: "a".into(), expected: Expectation::Version(1), new: None },
    ]);
    // The CAS sees the batch's own earlier write (version 2), so it fails: nothing is applied.
    match machine.apply(batch) {
        Err(CommandFailure::BatchAborted { position: 3, reason }) => match *reason {
            CommandFailure::CompareFailed { key, current } => {
                assert_eq!(key, "a");
                assert_eq!(current, KeyState { value: Some(Bytes::from_static(b"10")), version: 2 });
            }
            other => panic!("unexpected reason {other:?}"),
        },
        other => panic!("batch should abort at 3, got {other:?}"),
    }
    assert_eq!(machine.machine, before);
    assert_eq!(machine.machine.snapshot(), snapshot_before);
    assert_eq!(machine.machine.version("a"), 1);
    assert_eq!(machine.machine.version("c"), 0, "the aborted Add left no tombstone");

    // Nested batches and custom commands abort it as well.
    let nested = Command::Batch(vec![put("a", b"x"), Command::Batch(vec![])]);
    assert!(matches!(
        machine.apply(nested),
        Err(CommandFailure::BatchAborted { position: 1, reason }) if *reason == CommandFailure::NestedBatch
    ));
    let custom = Command::Batch(vec![put("a", b"x"), Command::Custom(Bytes::from_static(b"?"))]);
    assert!(matches!(machine.apply(custom), Err(CommandFailure::BatchAborted { position: 1, .. })));
    assert_eq!(machine.machine, before);
}

#[test]
fn a_successful_batch_applies_every_command_in_order() {
    let mut machine = Machine::new();
    machine.apply(put("a", b"1")).unwrap();
    let output = machine
        .apply(Command::Batch(vec![
            Command::Add { key: "n".into(), delta: 2 },
            Command::Add { key: "n".into(), delta: 3 },
            Command::CompareAndSwap {
                key: "a".into(),
                expected: Expectation::Value(Some(Bytes::from_static(b"1"))),
                new: Some(Bytes::from_static(b"2")),
            },
            Command::Delete { key: "gone".into() },
        ]))
        .unwrap();
    assert_eq!(output.counter, Some(5));
    let versions: Vec<_> =
        output.changes.iter().map(|change| (change.key.as_str(), change.version)).collect();
    assert_eq!(versions, [("n", 1), ("n", 2), ("a", 2), ("gone", 1)]);
    assert_eq!(output.changes[1].old_value, Some(counter(2)));
    assert_eq!(machine.machine.get("n"), Some(counter(5)));
    assert_eq!(machine.machine.get("a"), Some(Bytes::from_static(b"2")));
    assert_eq!(machine.machine.key_state("gone"), KeyState { value: None, version: 1 });
    // An empty batch changes nothing and succeeds.
    assert_eq!(machine.apply(Command::Batch(vec![])).unwrap(), CommandOutput::default());
}

#[test]
fn compare_and_swap_by_value_and_by_version() {
    let mut machine = Machine::new();
    let cas = |key: &str, expected: Expectation, new: Option<&'static [u8]>| Command::CompareAndSwap {
        key: key.into(),
        expected,
        new: new.map(Bytes::from_static),
    };
    // Absent key: expecting "absent" or version 0 holds; expecting a value does not.
    assert!(matches!(
        machine.apply(cas("k", Expectation::Value(Some(Bytes::from_static(b"x"))), Some(b"y"))),
        Err(CommandFailure::CompareFailed { current: KeyState { value: None, version: 0 }, .. })
    ));
    assert_eq!(machine.machine.version("k"), 0);
    machine.apply(cas("k", Expectation::Value(None), Some(b"v1"))).unwrap();
    assert_eq!(
        machine.machine.key_state("k"),
        KeyState { value: Some(Bytes::from_static(b"v1")), version: 1 }
    );
    machine.apply(cas("j", Expectation::Version(0), Some(b"j1"))).unwrap();
    assert_eq!(machine.machine.version("j"), 1);

    // By value.
    assert!(machine
        .apply(cas("k", Expectation::Value(Some(Bytes::from_static(b"other"))), Some(b"v2")))
        .is_err());
    machine.apply(cas("k", Expectation::Value(Some(Bytes::from_static(b"v1"))), Some(b"v2"))).unwrap();
    // By version.
    assert!(matches!(
        machine.apply(cas("k", Expectation::Version(1), Some(b"v3"))),
        Err(CommandFailure::CompareFailed { current: KeyState { version: 2, .. }, .. })
    ));
    machine.apply(cas("k", Expectation::Version(2), Some(b"v3"))).unwrap();
    assert_eq!(
        machine.machine.key_state("k"),
        KeyState { value: Some(Bytes::from_static(b"v3")), version: 3 }
    );
    // A swap to `None` deletes, and the version still moves.
    machine.apply(cas("k", Expectation::Version(3), None)).unwrap();
    assert_eq!(machine.machine.key_state("k"), KeyState { value: None, version: 4 });
    // After a delete, "absent" holds again but version 0 does not: versions are never reused.
    assert!(machine.apply(cas("k", Expectation::Version(0), Some(b"again"))).is_err());
    machine.apply(cas("k", Expectation::Value(None), Some(b"again"))).unwrap();
    assert_eq!(machine.machine.version("k"), 5);
}

#[test]
fn delete_keeps_the_version_growing() {
    let mut machine = Machine::new();
    machine.apply(put("k", b"1")).unwrap();
    let deleted = machine.apply(Command::Delete { key: "k".into() }).unwrap();
    assert_eq!(deleted.changes[0].old_value, Some(Bytes::from_static(b"1")));
    assert_eq!(deleted.changes[0].new_value, None);
    assert_eq!(machine.machine.key_state("k"), KeyState { value: None, version: 2 });
    assert!(machine.machine.is_empty());
    assert_eq!(machine.machine.keys().count(), 0, "a tombstone is not a key");
    machine.apply(put("k", b"3")).unwrap();
    assert_eq!(machine.machine.version("k"), 3);
    assert_eq!(machine.machine.len(), 1);
    // Deleting an absent key is a change too: it gets version 1.
    machine.apply(Command::Delete { key: "never".into() }).unwrap();
    assert_eq!(machine.machine.version("never"), 1);
}

#[test]
fn add_on_absent_non_counter_and_overflowing_keys() {
    let mut machine = Machine::new();
    let add = |key: &str, delta: i64| Command::Add { key: key.into(), delta };
    let output = machine.apply(add("n", -7)).unwrap();
    assert_eq!(output.counter, Some(-7));
    assert_eq!(machine.machine.key_state("n"), KeyState { value: Some(counter(-7)), version: 1 });
    assert_eq!(machine.apply(add("n", 10)).unwrap().counter, Some(3));

    machine.apply(put("text", b"abc")).unwrap();
    assert_eq!(machine.apply(add("text", 1)), Err(CommandFailure::NotACounter { key: "text".into() }));
    assert_eq!(machine.machine.version("text"), 1);

    machine.apply(Command::Put { key: "max".into(), value: counter(i64::MAX) }).unwrap();
    assert_eq!(machine.apply(add("max", 1)), Err(CommandFailure::Overflow { key: "max".into(), delta: 1 }));
    machine.apply(Command::Put { key: "min".into(), value: counter(i64::MIN) }).unwrap();
    assert!(matches!(machine.apply(add("min", -1)), Err(CommandFailure::Overflow { .. })));
    assert_eq!(machine.machine.get("max"), Some(counter(i64::MAX)));
    assert_eq!(machine.machine.version("max"), 1);
    // A counter that was deleted counts from 0 again.
    machine.apply(Command::Delete { key: "n".into() }).unwrap();
    assert_eq!(machine.apply(add("n", 4)).unwrap().counter, Some(4));
    assert_eq!(machine.machine.version("n"), 4);
}

fn session(client: u64, sequence: u64) -> Option<ClientSession> {
    Some(ClientSession::new(client, sequence))
}

fn acknowledging(client: u64, sequence: u64, answered_below: u64) -> Option<ClientSession> {
    Some(ClientSession { client, sequence, answered_below })
}

#[test]
fn acknowledged_results_are_forgotten_and_their_late_copies_refused() {
    let add = Command::Add { key: "n".into(), delta: 1 };
    let mut replica = Replica::key_value(1_000);
    let mut without = Replica::key_value(1_000);
    // Client 9 has 100 writes in flight at a time; each acknowledges everything 100 back.
    for sequence in 1..=1_000u64 {
        let answered_below = sequence.saturating_sub(100).max(1);
        let context = context(sequence);
        replica.apply(&context, acknowledging(9, sequence, answered_below), &add).unwrap();
        without.apply(&context, session(9, sequence), &add).unwrap();
    }
    // A late copy of an acknowledged write (a duplicate entry from a retry) is not applied again.
    let late = replica.apply(&context(1_001), acknowledging(9, 850, 850), &add);
    assert_eq!(late, Err(CommandFailure::SessionExpired));
    assert_eq!(replica.machine().get("n"), Some(counter(1_000)));
    // One still in flight (at or above the acknowledgement) is answered from the table.
    let retry = replica.apply(&context(1_002), acknowledging(9, 950, 850), &add).unwrap();
    assert_eq!(retry.counter, Some(950));
    assert_eq!(replica.machine().get("n"), Some(counter(1_000)));
    // The table, and so every snapshot, holds what is in flight, not every result.
    let (small, large) = (replica.snapshot().len(), without.snapshot().len());
    assert!(small * 5 < large, "snapshot with acknowledgements {small} bytes, without {large}");
    let mut restored = Replica::key_value(1_000);
    restored.restore(&replica.snapshot()).unwrap();
    assert_eq!(restored.snapshot(), replica.snapshot());
    assert_eq!(
        restored.apply(&context(1_003), acknowledging(9, 850, 1), &add),
        Err(CommandFailure::SessionExpired)
    );
}

#[test]
fn an_acknowledgement_never_forgets_the_command_that_carries_it() {
    let add = Command::Add { key: "n".into(), delta: 1 };
    let mut replica = Replica::key_value(16);
    // An acknowledgement above its own sequence counts as its own sequence.
    let first = replica.apply(&context(1), acknowledging(4, 5, u64::MAX), &add).unwrap();
    let retry = replica.apply(&context(2), acknowledging(4, 5, u64::MAX), &add).unwrap();
    assert_eq!(retry, first);
    assert_eq!(replica.machine().get("n"), Some(counter(1)));
}

#[test]
fn a_retried_command_returns_its_first_result_and_applies_once() {
    let mut replica = Replica::key_value(16);
    let add = Command::Add { key: "n".into(), delta: 5 };
    let first = replica.apply(&context(1), session(9, 1), &add).unwrap();
    assert_eq!(first.counter, Some(5));
    let retry = replica.apply(&context(2), session(9, 1), &add).unwrap();
    assert_eq!(retry, first);
    assert_eq!(replica.machine().get("n"), Some(counter(5)));
    assert_eq!(replica.machine().version("n"), 1);
    // A failed first result is remembered too: a retry does not re-run the compare.
    let cas = Command::CompareAndSwap { key: "n".into(), expected: Expectation::Version(7), new: None };
    let failed = replica.apply(&context(3), session(9, 2), &cas);
    assert!(failed.is_err());
    replica.apply(&context(4), None, &Command::Add { key: "n".into(), delta: 2 }).unwrap();
    assert_eq!(replica.apply(&context(5), session(9, 2), &cas), failed);
    // The next sequence number applies normally; without a session every apply counts.
    assert_eq!(replica.apply(&context(6), session(9, 3), &add).unwrap().counter, Some(12));
    assert_eq!(replica.apply(&context(7), None, &add).unwrap().counter, Some(17));
    assert_eq!(replica.apply(&context(8), None, &add).unwrap().counter, Some(22));
    assert_eq!(replica.applied(), LogIndex(8));
}

#[test]
fn an_evicted_sessions_retry_expires_instead_of_applying_twice() {
    let mut replica = Replica::key_value(2);
    let add = Command::Add { key: "n".into(), delta: 1 };
    replica.apply(&context(1), session(1, 1), &add).unwrap();
    replica.apply(&context(2), session(2, 1), &add).unwrap();
    replica.apply(&context(3), session(3, 1), &add).unwrap();
    // Client 1's result was the oldest of three with room for two: forgotten.
    assert_eq!(replica.apply(&context(4), session(1, 1), &add), Err(CommandFailure::SessionExpired));
    assert_eq!(replica.machine().get("n"), Some(counter(3)));
    assert_eq!(replica.machine().version("n"), 3);
    // Clients 2 and 3 are still remembered.
    assert_eq!(replica.apply(&context(5), session(3, 1), &add).unwrap().counter, Some(3));
    // Client 1 goes on with a new sequence number.
    assert_eq!(replica.apply(&context(6), session(1, 2), &add).unwrap().counter, Some(4));
    // The expiry survives a snapshot.
    let mut restored = Replica::key_value(2);
    restored.restore(&replica.snapshot()).unwrap();
    assert_eq!(restored.apply(&context(7), session(1, 1), &add), Err(CommandFailure::SessionExpired));
    assert_eq!(restored.machine().get("n"), Some(counter(4)));
}

#[test]
fn a_replica_snapshot_restores_state_sessions_and_position() {
    let mut replica = Replica::key_value(8);
    replica.apply(&context(1), session(4, 1), &put("a", b"1")).unwrap();
    replica.apply(&context(2), None, &Command::Add { key: "n".into(), delta: 3 }).unwrap();
    replica.skip(LogIndex(3), Term(2));
    replica.apply(&context(4), session(4, 2), &Command::Delete { key: "a".into() }).unwrap();
    let snapshot = replica.snapshot();

    let mut restored = Replica::key_value(8);
    restored.restore(&snapshot).unwrap();
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(restored.applied(), LogIndex(4));
    assert_eq!(restored.applied_term(), replica.applied_term());
    assert_eq!(restored.last_timestamp_ms(), 1_004);
    assert_eq!((restored.machine().get("a"), restored.machine().version("a")), (None, 2));
    assert_eq!(restored.machine().get("n"), Some(counter(3)));
    // The sessions came along: a retry is answered, not applied.
    let retry = restored.apply(&context(5), session(4, 1), &put("a", b"1")).unwrap();
    assert_eq!(retry.changes[0].version, 1);
    assert_eq!(restored.machine().get("a"), None);

    // The bare key-value machine round-trips too.
    let mut machine = Machine::new();
    machine.apply(put("x", b"1")).unwrap();
    machine.apply(Command::Delete { key: "x".into() }).unwrap();
    machine.apply(put("y", b"2")).unwrap();
    let mut copy = KvStateMachine::new();
    copy.restore(&machine.machine.snapshot()).unwrap();
    assert_eq!(copy, machine.machine);
}

#[test]
fn corrupt_snapshot_bytes_are_a_typed_error_and_change_nothing() {
    let mut replica = Replica::key_value(8);
    replica.apply(&context(1), session(1, 1), &put("a", b"1")).unwrap();
    let good = replica.snapshot();
    let before = replica.snapshot();

    let mut trailing = good.to_vec();
    trailing.push(0);
    let corrupt: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xFF; 16],
        good[..good.len() / 2].to_vec(),
        good[..good.len() - 1].to_vec(),
        trailing,
    ];
    for bytes in &corrupt {
        assert!(
            matches!(replica.restore(bytes), Err(StateMachineError::CorruptSnapshot(_))),
            "{bytes:02x?} restored"
        );
        assert_eq!(replica.snapshot(), before, "a failed restore changed the replica");
        let mut machine = KvStateMachine::new();
        assert!(matches!(machine.restore(bytes), Err(StateMachineError::CorruptSnapshot(_))));
    }
    // Any single flipped bit either restores to something or fails with the typed error: no panic.
    for bit in 0..good.len() * 8 {
        let mut flipped = good.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let mut target = Replica::key_value(8);
        let _ = target.restore(&flipped);
    }
}

#[test]
#[should_panic(expected = "entries are applied in order")]
fn applying_out_of_order_is_a_caller_bug() {
    let mut replica = Replica::key_value(8);
    replica.apply(&context(2), None, &put("a", b"1")).unwrap();
    let _ = replica.apply(&context(2), None, &put("a", b"2"));
}

/// A user-defined machine: a single counter, commands are little-endian i64 deltas.
#[derive(Default)]
struct Counter {
    total: i64,
}

impl StateMachine for Counter {
    fn apply(&mut self, _context: &ApplyContext, command: &Command) -> CommandResult {
        let Command::Custom(bytes) = command else {
            return Err(CommandFailure::Unsupported("only custom commands".into()));
        };
        let delta = <[u8; 8]>::try_from(&bytes[..])
            .map(i64::from_le_bytes)
            .map_err(|_| CommandFailure::Unsupported("an 8-byte delta".into()))?;
        self.total += delta;
        Ok(CommandOutput {
            custom: Some(Bytes::copy_from_slice(&self.total.to_le_bytes())),
            ..Default::default()
        })
    }
    fn version(&self, _key: &str) -> u64 {
        0
    }
    fn get(&self, _key: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.total.to_le_bytes()))
    }
    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.total.to_le_bytes())
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateMachineError> {
        let bytes = <[u8; 8]>::try_from(snapshot)
            .map_err(|_| StateMachineError::CorruptSnapshot(format!("{} bytes", snapshot.len())))?;
        self.total = i64::from_le_bytes(bytes);
        Ok(())
    }
}

#[test]
fn a_custom_state_machine_gets_sessions_and_snapshots_from_the_replica() {
    let mut replica = Replica::new(Box::<Counter>::default(), 8);
    let delta = Command::Custom(Bytes::copy_from_slice(&5i64.to_le_bytes()));
    replica.apply(&context(1), session(1, 1), &delta).unwrap();
    replica.apply(&context(2), session(1, 1), &delta).unwrap();
    assert_eq!(replica.machine().get(""), Some(Bytes::copy_from_slice(&5i64.to_le_bytes())));
    let mut restored = Replica::new(Box::<Counter>::default(), 8);
    restored.restore(&replica.snapshot()).unwrap();
    assert_eq!(restored.snapshot(), replica.snapshot());
    assert!(restored.apply(&context(3), None, &put("a", b"1")).is_err());
}

/// A custom machine whose refusal nests deeper than the codec allows.
struct DeepFailures;

impl StateMachine for DeepFailures {
    fn apply(&mut self, _context: &ApplyContext, _command: &Command) -> CommandResult {
        let mut failure = CommandFailure::NestedBatch;
        for position in 0..12 {
            failure = CommandFailure::BatchAborted { position, reason: Box::new(failure) };
        }
        Err(failure)
    }
    fn version(&self, _key: &str) -> u64 {
        0
    }
    fn get(&self, _key: &str) -> Option<bytes::Bytes> {
        None
    }
    fn snapshot(&self) -> bytes::Bytes {
        bytes::Bytes::new()
    }
    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), concord_core::state_machine::StateMachineError> {
        Ok(())
    }
}

#[test]
fn a_deeply_nested_failure_in_the_session_table_still_snapshots() {
    let mut replica = Replica::new(Box::new(DeepFailures), 16);
    let context = ApplyContext { index: LogIndex(1), term: Term(1), timestamp_ms: 0 };
    let session = Some(ClientSession::new(7, 1));
    let first = replica.apply(&context, session, &Command::Custom(bytes::Bytes::new()));
    assert!(first.is_err());
    let snapshot = replica.snapshot();
    assert!(!snapshot.is_empty(), "the snapshot must encode");
    let mut restored = Replica::new(Box::new(DeepFailures), 16);
    restored.restore(&snapshot).expect("restores");
    assert_eq!(restored.applied(), LogIndex(1));
    // The retry is answered from the restored session table, flattened but still a failure.
    let retry = restored.apply(
        &ApplyContext { index: LogIndex(2), term: Term(1), timestamp_ms: 0 },
        session,
        &Command::Custom(bytes::Bytes::new()),
    );
    assert!(matches!(retry, Err(CommandFailure::Unsupported(_))), "{retry:?}");
}

proptest! {
    /// The size check's shortcut agrees with the keys the command lists.
    #[test]
    fn longest_key_bytes_is_the_longest_listed_key(command in strategies::command()) {
        let listed = command.keys().iter().map(|key| key.len()).max().unwrap_or(0);
        prop_assert_eq!(command.longest_key_bytes(), listed);
    }
}

fn at(index: u64, timestamp_ms: u64) -> ApplyContext {
    ApplyContext { index: LogIndex(index), term: Term(1), timestamp_ms }
}

#[test]
fn idle_clients_expire_at_the_same_entry_on_every_replica() {
    let add = Command::Add { key: "n".into(), delta: 1 };
    let expiry_ms = 60_000;
    let replica = || Replica::key_value(1_000).with_client_limits(100, expiry_ms);
    let (mut first, mut second) = (replica(), replica());
    let mut index = 0;
    let apply_both = |first: &mut Replica, second: &mut Replica, timestamp_ms, session, index: &mut u64| {
        *index += 1;
        let context = at(*index, timestamp_ms);
        let result = first.apply(&context, session, &add);
        assert_eq!(second.apply(&context, session, &add), result);
        result
    };
    // Clients 1 and 2 write at 1 s; then only client 1, once a second, for two minutes.
    apply_both(&mut first, &mut second, 1_000, session(1, 1), &mut index).unwrap();
    apply_both(&mut first, &mut second, 1_000, session(2, 1), &mut index).unwrap();
    for second_number in 2..=120u64 {
        apply_both(&mut first, &mut second, second_number * 1_000, session(1, second_number), &mut index)
            .unwrap();
        if second_number == 30 {
            // A replica restored from a snapshot taken meanwhile expires at the same entry.
            second = replica();
            second.restore(&first.snapshot()).unwrap();
        }
        let expected = if second_number * 1_000 <= 1_000 + expiry_ms { 2 } else { 1 };
        // Swept when leader time crosses a multiple of the sweep interval (expiry / 16 here).
        let interval = (expiry_ms / 16).max(1_000);
        if second_number * 1_000 >= 1_000 + expiry_ms + interval {
            assert_eq!(first.session_clients(), expected, "at {second_number} s");
        }
        assert_eq!(first.session_clients(), second.session_clients(), "at {second_number} s");
        assert_eq!(first.snapshot(), second.snapshot(), "at {second_number} s");
    }
    assert_eq!(first.session_clients(), 1, "client 2 was idle for two minutes");
    // Client 2 comes back: a fresh record, and its write applies.
    let back = apply_both(&mut first, &mut second, 121_000, session(2, 2), &mut index).unwrap();
    assert_eq!(back.counter, Some(122));
    assert_eq!(first.session_clients(), 2);
    // An active client was never forgotten: its retries are still answered from the table.
    let retry = apply_both(&mut first, &mut second, 121_000, session(1, 120), &mut index).unwrap();
    assert_eq!(retry.counter, Some(121));
    assert_eq!(first.machine().get("n"), Some(counter(122)));
}

#[test]
fn a_full_session_table_refuses_new_clients_and_keeps_the_active_ones() {
    let add = Command::Add { key: "n".into(), delta: 1 };
    let mut replica = Replica::key_value(1_000).with_client_limits(2, 60_000);
    replica.apply(&at(1, 1_000), session(1, 1), &add).unwrap();
    replica.apply(&at(2, 1_000), session(2, 1), &add).unwrap();
    // A third client is refused, and nothing is applied for it.
    assert_eq!(
        replica.apply(&at(3, 2_000), session(3, 1), &add),
        Err(CommandFailure::SessionTableFull { limit: 2 })
    );
    assert_eq!(replica.machine().get("n"), Some(counter(2)));
    assert_eq!(replica.session_clients(), 2);
    // Known clients go on, and commands without a session are not limited.
    replica.apply(&at(4, 2_000), session(1, 2), &add).unwrap();
    replica.apply(&at(5, 2_000), None, &add).unwrap();
    // Once client 2 has been idle past the expiry (client 1 keeps writing), client 3 gets its place.
    for (offset, timestamp_ms) in (10_000..=70_000u64).step_by(10_000).enumerate() {
        replica.apply(&at(6 + offset as u64, timestamp_ms), session(1, 3 + offset as u64), &add).unwrap();
    }
    let index = 6 + 7;
    let admitted = replica.apply(&at(index, 70_000), session(3, 1), &add).unwrap();
    assert_eq!(admitted.counter, Some(12));
    assert_eq!(replica.session_clients(), 2);
}
