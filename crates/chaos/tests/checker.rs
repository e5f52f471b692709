//! The checker's verdicts on recorded histories: planted violations are found and named, clean
//! histories pass.

use concord_chaos::{
    check_events, check_jsonl, to_sim_history, CheckError, EventType, Function, HistoryError, HistoryEvent,
    ReadError, ViolationKind,
};
use serde_json::{json, Value};

/// The recorded history: on `k1` write 2 is acknowledged (and even read) but the final read after
/// healing shows 1; on `k2` process 4 reads 10 after write 11 was acknowledged; `k3` is a clean counter.
const PLANTED: &str = include_str!("data/planted.jsonl");

fn event(
    process: u64,
    event_type: EventType,
    f: Function,
    key: &str,
    value: Value,
    time: u64,
) -> HistoryEvent {
    HistoryEvent { process, event_type, f, key: key.to_owned(), value, time, node: None, error: None }
}

/// One operation as an invoke/completion pair: (process, f, key, invoke value, completion type,
/// completion value, invoked at, completed at).
type Pair = (u64, Function, &'static str, Value, EventType, Value, u64, u64);

/// Events of `pairs`, merged in time order (ties: invocations before completions, as recorded).
fn events(pairs: &[Pair]) -> Vec<HistoryEvent> {
    let mut events = Vec::new();
    for (process, f, key, invoked_value, completion, completed_value, invoked_at, completed_at) in pairs {
        events.push((
            *invoked_at,
            0,
            event(*process, EventType::Invoke, *f, key, invoked_value.clone(), *invoked_at),
        ));
        events.push((
            *completed_at,
            1,
            event(*process, *completion, *f, key, completed_value.clone(), *completed_at),
        ));
    }
    events.sort_by_key(|(time, order, _)| (*time, *order));
    events.into_iter().map(|(_, _, event)| event).collect()
}

#[test]
fn planted_lost_write_and_stale_read_are_both_reported() {
    let report = check_jsonl(PLANTED.as_bytes()).expect("the planted history is well-formed");
    assert!(!report.is_valid());
    assert_eq!(report.count(ViolationKind::LostAcknowledgedWrite), 1, "{report}");
    assert_eq!(report.count(ViolationKind::StaleRead), 1, "{report}");
    assert_eq!(report.count(ViolationKind::ValueNeverWritten), 0, "{report}");

    let lost = report.violations.iter().find(|v| v.kind == ViolationKind::LostAcknowledgedWrite).unwrap();
    assert_eq!(lost.key, "k1");
    assert_eq!(lost.process(), 0);
    assert_eq!((lost.operation.invoked_at_nanos, lost.operation.completed_at_nanos), (30, Some(40)));
    let final_read = lost.evidence.as_ref().unwrap();
    assert_eq!((final_read.process, final_read.invoked_at_nanos), (2, 1000));

    let stale = report.violations.iter().find(|v| v.kind == ViolationKind::StaleRead).unwrap();
    assert_eq!(stale.key, "k2");
    assert_eq!(stale.process(), 4);
    assert_eq!((stale.operation.invoked_at_nanos, stale.operation.completed_at_nanos), (140, Some(150)));
    let missed = stale.evidence.as_ref().unwrap();
    assert_eq!((missed.process, missed.invoked_at_nanos, missed.completed_at_nanos), (3, 120, Some(130)));

    // The project's linearizability checker agrees on both keys, and clears the counter.
    let not_linearizable: Vec<&str> = report
        .violations
        .iter()
        .filter(|v| v.kind == ViolationKind::NotLinearizable)
        .map(|v| v.key.as_str())
        .collect();
    assert_eq!(not_linearizable, ["k1", "k2"]);

    let text = report.to_string();
    assert!(text.contains("lost acknowledged write on key \"k1\""), "{text}");
    assert!(text.contains("stale read on key \"k2\""), "{text}");
}

#[test]
fn summary_counts_operations_by_function_and_outcome() {
    let report = check_jsonl(PLANTED.as_bytes()).unwrap();
    let summary = &report.summary;
    assert_eq!((summary.events, summary.operations, summary.keys), (22, 11, 3));
    let reads = summary.by_function[&Function::Read];
    assert_eq!((reads.invoke, reads.ok, reads.fail, reads.info, reads.pending), (5, 5, 0, 0, 0));
    let cas = summary.by_function[&Function::Cas];
    assert_eq!((cas.invoke, cas.ok, cas.fail), (1, 0, 1));
    assert_eq!(summary.by_function[&Function::Write].ok, 4);
    assert_eq!(summary.by_function[&Function::Add].ok, 1);
    assert_eq!(summary.counter_keys, ["k3"]);
}

#[test]
fn clean_concurrent_history_passes() {
    use EventType::{Fail, Info, Ok};
    use Function::{Add, Cas, Read, Write};
    let pairs: Vec<Pair> = vec![
        (0, Write, "k1", json!(1), Ok, json!(1), 0, 100),
        // Overlaps the write: may see either state.
        (1, Read, "k1", Value::Null, Ok, Value::Null, 10, 50),
        (2, Read, "k1", Value::Null, Ok, json!(1), 20, 120),
        (0, Write, "k1", json!(2), Ok, json!(2), 110, 200),
        (1, Read, "k1", Value::Null, Ok, json!(1), 150, 160),
        (2, Cas, "k1", json!([2, 3]), Ok, json!([2, 3]), 210, 250),
        (3, Cas, "k1", json!([1, 5]), Fail, json!([1, 5]), 255, 280),
        (1, Read, "k1", Value::Null, Ok, json!(3), 260, 270),
        (4, Write, "k1", json!(9), Fail, json!(9), 280, 290),
        (1, Read, "k1", Value::Null, Ok, json!(3), 300, 310),
        (4, Add, "k2", json!(5), Ok, json!(5), 0, 50),
        (5, Add, "k2", json!(3), Ok, json!(8), 10, 60),
        (5, Add, "k2", json!(1), Info, Value::Null, 70, 75),
        (4, Read, "k2", Value::Null, Ok, json!(8), 70, 80),
    ];
    let mut history = events(&pairs);
    // A write still outstanding when the run ended.
    history.push(event(6, EventType::Invoke, Write, "k1", json!(7), 295));
    let report = check_events(&history).unwrap();
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.summary.by_function[&Write].pending, 1);
    assert_eq!(report.summary.by_function[&Add].info, 1);
}

#[test]
fn info_write_that_later_shows_up_passes() {
    use EventType::{Info, Ok};
    use Function::{Read, Write};
    let pairs: Vec<Pair> = vec![
        (0, Write, "k1", json!(1), Ok, json!(1), 0, 10),
        (1, Write, "k1", json!(2), Info, json!(2), 20, 30),
        (2, Read, "k1", Value::Null, Ok, json!(1), 40, 50),
        (2, Read, "k1", Value::Null, Ok, json!(2), 60, 70),
        (3, Read, "k1", Value::Null, Ok, json!(2), 100, 110),
    ];
    let report = check_events(&events(&pairs)).unwrap();
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.summary.by_function[&Write].info, 1);
}

#[test]
fn unacknowledged_write_that_vanishes_is_not_a_lost_write() {
    // The planted lost write of `k1`, but with the write's outcome unknown: it may never have happened,
    // but the read at 50..60 saw it, so the final read of 1 is only explained if it was lost.
    let with_info = PLANTED.replacen(
        r#"{"process": 0, "type": "ok", "f": "write", "key": "k1", "value": 2, "time": 40, "node": "n1"}"#,
        r#"{"process": 0, "type": "info", "f": "write", "key": "k1", "value": 2, "time": 40}"#,
        1,
    );
    assert_ne!(with_info, PLANTED);
    let report = check_jsonl(with_info.as_bytes()).unwrap();
    assert_eq!(report.count(ViolationKind::LostAcknowledgedWrite), 0, "{report}");
    // The observed-then-gone value is still not linearizable: a register cannot go back to 1.
    assert!(report.violations.iter().any(|v| v.kind == ViolationKind::NotLinearizable && v.key == "k1"));

    // Without the read that saw 2, nothing is wrong with `k1` any more.
    let unseen: String = with_info
        .lines()
        .filter(|line| !line.contains(r#""time": 60"#))
        .map(|line| format!("{line}\n"))
        .collect();
    let unseen = unseen.replace(
        r#"{"process": 1, "type": "invoke", "f": "read", "key": "k1", "value": null, "time": 50}"#,
        "",
    );
    let report = check_jsonl(unseen.as_bytes()).unwrap();
    assert!(!report.violations.iter().any(|v| v.key == "k1"), "{report}");
}

#[test]
fn value_never_written_is_named() {
    use EventType::Ok;
    use Function::{Read, Write};
    let pairs: Vec<Pair> = vec![
        (0, Write, "k1", json!(1), Ok, json!(1), 0, 10),
        (1, Read, "k1", Value::Null, Ok, json!(99), 20, 30),
        // Written only after the read completed: still never written as far as the read is concerned.
        (0, Write, "k1", json!(99), Ok, json!(99), 40, 50),
    ];
    let report = check_events(&events(&pairs)).unwrap();
    assert_eq!(report.count(ViolationKind::ValueNeverWritten), 1, "{report}");
    assert_eq!(report.count(ViolationKind::StaleRead), 0, "{report}");
    let violation = report.violations.iter().find(|v| v.kind == ViolationKind::ValueNeverWritten).unwrap();
    assert_eq!((violation.process(), violation.operation.invoked_at_nanos), (1, 20));
}

#[test]
fn stale_read_of_the_initial_absent_value_is_named() {
    use EventType::Ok;
    use Function::{Read, Write};
    let pairs: Vec<Pair> = vec![
        (0, Write, "k1", json!(1), Ok, json!(1), 0, 10),
        (1, Read, "k1", Value::Null, Ok, Value::Null, 20, 30),
        (1, Read, "k1", Value::Null, Ok, json!(1), 40, 50),
    ];
    let report = check_events(&events(&pairs)).unwrap();
    assert_eq!(report.count(ViolationKind::StaleRead), 1, "{report}");
    assert_eq!(report.count(ViolationKind::LostAcknowledgedWrite), 0, "{report}");
}

#[test]
fn malformed_history_gives_a_typed_error() {
    let with_bad_line = PLANTED.replacen(r#""type": "ok""#, r#""type": "okay""#, 1);
    match check_jsonl(with_bad_line.as_bytes()) {
        Err(CheckError::Read(ReadError::Malformed { line, .. })) => assert_eq!(line, 2),
        other => panic!("expected a malformed line 2, got {other:?}"),
    }

    let orphan = [event(7, EventType::Ok, Function::Read, "k1", Value::Null, 5)];
    assert_eq!(
        to_sim_history(&orphan).unwrap_err(),
        HistoryError::CompletionWithoutInvocation { event: 1, process: 7 }
    );

    let twice = [
        event(1, EventType::Invoke, Function::Read, "k1", Value::Null, 5),
        event(1, EventType::Invoke, Function::Read, "k1", Value::Null, 6),
    ];
    assert_eq!(
        to_sim_history(&twice).unwrap_err(),
        HistoryError::AlreadyInvoked { event: 2, process: 1, outstanding: 1 }
    );

    let mismatch = [
        event(1, EventType::Invoke, Function::Read, "k1", Value::Null, 5),
        event(1, EventType::Ok, Function::Read, "k2", Value::Null, 6),
    ];
    assert!(matches!(to_sim_history(&mismatch), Err(HistoryError::CompletionMismatch { event: 2, .. })));

    let backwards = [
        event(1, EventType::Invoke, Function::Read, "k1", Value::Null, 5),
        event(1, EventType::Ok, Function::Read, "k1", Value::Null, 4),
    ];
    assert!(matches!(to_sim_history(&backwards), Err(HistoryError::CompletedBeforeInvoked { event: 2, .. })));

    for (value, event_type) in
        [(json!("one"), EventType::Invoke), (json!(1.5), EventType::Invoke), (json!([1]), EventType::Invoke)]
    {
        let f = if value.is_array() { Function::Cas } else { Function::Write };
        let history = [event(1, event_type, f, "k1", value.clone(), 5)];
        assert!(
            matches!(to_sim_history(&history), Err(HistoryError::UnsupportedValue { event: 1, .. })),
            "{value} should be refused"
        );
    }
    let string_read = [
        event(1, EventType::Invoke, Function::Read, "k1", Value::Null, 5),
        event(1, EventType::Ok, Function::Read, "k1", json!("x"), 6),
    ];
    let error = to_sim_history(&string_read).unwrap_err();
    assert!(matches!(error, HistoryError::UnsupportedValue { event: 2, f: Function::Read, .. }));
    assert!(error.to_string().starts_with("event 2:"), "{error}");
}

/// 2.5 s of key `k0` recorded by a real `cargo xtask chaos` run (3 nodes over WebSocket, seed 3,
/// during an isolated-leader fault): 519 operations by nine client processes.
const RECORDED: &str = include_str!("data/recorded-ws-k0.jsonl");

#[test]
fn recorded_real_history_passes_and_planting_into_it_is_caught() {
    let events = concord_chaos::read_history(RECORDED.as_bytes()).expect("the recording is well-formed");
    let clean = check_events(&events).expect("well-formed");
    assert!(clean.is_valid(), "{clean}");
    assert!(clean.summary.operations > 500);

    // Two acknowledged writes, the first completed before the second began.
    let acknowledged_writes: Vec<(&HistoryEvent, u64)> = events
        .iter()
        .filter(|event| event.f == Function::Write && event.event_type == EventType::Ok)
        .map(|completion| {
            let invoked = events
                .iter()
                .rev()
                .find(|event| {
                    event.process == completion.process
                        && event.event_type == EventType::Invoke
                        && event.time <= completion.time
                })
                .expect("every completion has its invocation")
                .time;
            (completion, invoked)
        })
        .collect();
    let (older, _) = acknowledged_writes[0];
    let (newer, _) =
        *acknowledged_writes.iter().find(|(_, invoked)| *invoked > older.time).expect("a later write");
    // The final read will show `middle`: acknowledged after `newer`, yet overwritten later.
    let (middle, _) =
        *acknowledged_writes.iter().find(|(_, invoked)| *invoked > newer.time).expect("a third write");
    assert!(acknowledged_writes.iter().any(|(_, invoked)| *invoked > middle.time), "a write after it");

    let mut planted = events.clone();
    let read = |process, event_type, value: Value, time| HistoryEvent {
        process,
        event_type,
        f: Function::Read,
        key: "k0".into(),
        value,
        time,
        node: Some("n9".into()),
        error: None,
    };
    // A stale read: begins right after `newer` completed, returns `older`'s value.
    planted.push(read(77_000_001, EventType::Invoke, Value::Null, newer.time + 1));
    planted.push(read(77_000_001, EventType::Ok, older.value.clone(), newer.time + 2));
    // Lost writes: the final read, long after everything, shows `middle` again.
    let end = events.last().unwrap().time;
    planted.push(read(77_000_002, EventType::Invoke, Value::Null, end + 1_000_000_000));
    planted.push(read(77_000_002, EventType::Ok, middle.value.clone(), end + 1_000_100_000));
    planted.sort_by_key(|event| event.time);
    let report = check_events(&planted).expect("well-formed");
    assert!(report.count(ViolationKind::LostAcknowledgedWrite) >= 1, "{report}");
    assert!(report.count(ViolationKind::StaleRead) >= 1, "{report}");
    let stale = report.violations.iter().find(|v| v.kind == ViolationKind::StaleRead).unwrap();
    assert_eq!(stale.process(), 77_000_001, "{report}");
}
