//! The JSON-lines format: round trips, the Jepsen field names, and line-numbered errors.

use concord_chaos::format::{read_history, read_nemesis};
use concord_chaos::{
    EventType, Function, HistoryEvent, JsonLinesReader, JsonLinesWriter, NemesisEvent, NemesisPhase,
    ReadError, LINE_BYTES_MAX,
};
use serde_json::{json, Value};

fn sample_events() -> Vec<HistoryEvent> {
    let event = |process, event_type, f, value: Value, time| HistoryEvent {
        process,
        event_type,
        f,
        key: "k1".to_owned(),
        value,
        time,
        node: None,
        error: None,
    };
    vec![
        event(0, EventType::Invoke, Function::Write, json!(3), 1),
        event(1, EventType::Invoke, Function::Cas, json!([null, 4]), 2),
        event(2, EventType::Invoke, Function::Read, Value::Null, 3),
        HistoryEvent {
            node: Some("n2".to_owned()),
            ..event(0, EventType::Ok, Function::Write, json!(3), 10)
        },
        HistoryEvent {
            error: Some("timeout".to_owned()),
            ..event(1, EventType::Info, Function::Cas, json!([null, 4]), 11)
        },
        event(2, EventType::Ok, Function::Read, Value::Null, 12),
        event(3, EventType::Invoke, Function::Add, json!(-2), 13),
        event(3, EventType::Fail, Function::Add, json!(-2), u64::MAX),
    ]
}

#[test]
fn history_round_trips_through_writer_and_reader() {
    let events = sample_events();
    let mut writer = JsonLinesWriter::new(Vec::new());
    for event in &events {
        writer.write(event).unwrap();
    }
    writer.flush().unwrap();
    assert_eq!(writer.lines_written(), events.len() as u64);
    let bytes = writer.into_inner();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert_eq!(text.lines().count(), events.len());
    // Jepsen's field names, and optional fields only when present.
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({"process": 0, "type": "invoke", "f": "write", "key": "k1", "value": 3, "time": 1})
    );
    assert!(text.contains(r#""node":"n2""#) && text.contains(r#""error":"timeout""#));

    assert_eq!(read_history(bytes.as_slice()).unwrap(), events);
}

#[test]
fn nemesis_round_trips() {
    let events = vec![
        NemesisEvent {
            time: 5_000_000_000,
            fault: "partition-majority".to_owned(),
            targets: vec!["n1".to_owned(), "n2".to_owned()],
            phase: NemesisPhase::Start,
        },
        NemesisEvent {
            time: 9_000_000_000,
            fault: "partition-majority".to_owned(),
            targets: vec![],
            phase: NemesisPhase::Stop,
        },
    ];
    let mut writer = JsonLinesWriter::new(Vec::new());
    for event in &events {
        writer.write(event).unwrap();
    }
    let bytes = writer.into_inner();
    assert!(String::from_utf8_lossy(&bytes).contains(r#""phase":"start""#));
    assert_eq!(read_nemesis(bytes.as_slice()).unwrap(), events);
}

#[test]
fn reader_names_malformed_lines_and_goes_on() {
    let input = concat!(
        r#"{"process": 0, "type": "invoke", "f": "read", "key": "k1", "value": null, "time": 1}"#,
        "\n\n",
        "{not json\n",
        r#"{"process": 0, "type": "done", "f": "read", "key": "k1", "time": 2}"#,
        "\n",
        r#"{"process": 0, "type": "ok", "f": "read", "key": "k1", "time": 3}"#,
        "\r\n",
        r#"{"process": 0, "type": "ok", "f": "delete", "key": "k1", "time": 4}"#,
        "\n",
        r#"{"process": -1, "type": "ok", "f": "read", "key": "k1", "time": 5}"#,
        "\n",
        r#"{"type": "ok", "f": "read", "key": "k1", "time": 6}"#,
        "\n",
        "\u{0}\u{ff}\n",
    );
    let results: Vec<Result<HistoryEvent, ReadError>> = JsonLinesReader::new(input.as_bytes()).collect();
    let summary: Vec<(u64, bool)> = results
        .iter()
        .map(|result| match result {
            Ok(event) => (event.time, true),
            Err(error) => (error.line(), false),
        })
        .collect();
    // Line 2 is blank; event 3 has no value, which reads as null.
    assert_eq!(
        summary,
        [(1, true), (3, false), (4, false), (3, true), (6, false), (7, false), (8, false), (9, false)]
    );
    for result in &results {
        if let Err(error) = result {
            assert!(matches!(error, ReadError::Malformed { .. }));
            assert!(error.to_string().starts_with(&format!("line {}: malformed", error.line())), "{error}");
        }
    }
    assert_eq!(results[3].as_ref().unwrap().value, Value::Null);
    assert!(read_history(input.as_bytes()).is_err());
}

#[test]
fn over_long_line_stops_the_reader() {
    let mut input =
        b"{\"process\": 0, \"type\": \"invoke\", \"f\": \"read\", \"key\": \"k1\", \"time\": 1}\n".to_vec();
    input.extend(std::iter::repeat(b' ').take(LINE_BYTES_MAX + 10));
    input.extend_from_slice(
        b"\n{\"process\": 1, \"type\": \"invoke\", \"f\": \"read\", \"key\": \"k1\", \"time\": 2}\n",
    );
    let mut reader = JsonLinesReader::<_, HistoryEvent>::new(input.as_slice());
    assert!(reader.next().unwrap().is_ok());
    assert!(matches!(reader.next(), Some(Err(ReadError::LineTooLong { line: 2, limit: LINE_BYTES_MAX }))));
    assert!(reader.next().is_none());

    // A line of exactly the limit is accepted (here: read, then refused as JSON, not as too long).
    let exact = vec![b'x'; LINE_BYTES_MAX];
    let mut reader = JsonLinesReader::<_, HistoryEvent>::new(exact.as_slice());
    assert!(matches!(reader.next(), Some(Err(ReadError::Malformed { line: 1, .. }))));
    assert!(reader.next().is_none());
}
