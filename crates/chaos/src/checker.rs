//! Turns a `history.jsonl` into a verdict: linearizability per key (the project's checker in
//! [`concord_sim::linearizability`]) plus plain checks that name the usual failures.
//!
//! The plain checks look at keys used as registers (`read`, `write`, `cas`); a key that also sees
//! `add` is a counter and is left to the linearizability check alone. They assume nothing about
//! values being unique, and report only what no linearizable execution could produce. With
//! "`u` is older than write `W`" meaning that `u` is absent (the initial state; the model has no
//! delete), or that every write that could have produced `u` was acknowledged and completed before
//! `W` was invoked:
//! - **value never written**: an `ok` read returned a value no write or `cas` (acknowledged or of
//!   unknown outcome) had been invoked with before the read completed.
//! - **lost acknowledged write**: the key's final read (the `ok` read invoked last, e.g. after
//!   healing) began after an acknowledged write completed, yet returned a value older than that write:
//!   the write vanished, and no later write explains it.
//! - **stale read**: an `ok` read returned a value older than an acknowledged write that completed
//!   before the read began (and that is not itself reported as lost).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::BufRead;

use concord_sim::linearizability::{self, LinearizabilityError, SEARCH_STEPS_MAX};
use concord_sim::{History, Operation, OperationId, OperationKind, Outcome, Response};

use crate::format::{EventType, Function, HistoryEvent, JsonLinesReader, ReadError};

/// Violations of one kind listed in a report, at most (all are counted in
/// [`CheckReport::violation_counts`]): a broken run can produce thousands of stale reads, and the
/// first ones say what is wrong.
pub const REPORTED_VIOLATIONS_PER_KIND_MAX: usize = 100;

/// Why a sequence of events is not a well-formed history (the recording client's fault).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// A completion from a process with no operation outstanding.
    #[error("event {event}: process {process} completes an operation it never invoked")]
    CompletionWithoutInvocation {
        /// The event's position (1-based; the line number when the file has no blank lines).
        event: usize,
        /// The process.
        process: u64,
    },
    /// An invocation from a process whose previous operation has not completed.
    #[error(
        "event {event}: process {process} invokes while its operation of event {outstanding} is outstanding"
    )]
    AlreadyInvoked {
        /// The event's position (1-based).
        event: usize,
        /// The process.
        process: u64,
        /// The outstanding invocation's position (1-based).
        outstanding: usize,
    },
    /// A completion whose `f` or `key` differs from its invocation's.
    #[error("event {event}: process {process} completes {completed} but invoked {invoked}")]
    CompletionMismatch {
        /// The event's position (1-based).
        event: usize,
        /// The process.
        process: u64,
        /// What the invocation was (`f` and key).
        invoked: String,
        /// What the completion says.
        completed: String,
    },
    /// A completion timed before its invocation.
    #[error("event {event}: process {process} completes at {completed_at} ns, before its invocation at {invoked_at} ns")]
    CompletedBeforeInvoked {
        /// The event's position (1-based).
        event: usize,
        /// The process.
        process: u64,
        /// Invocation time (ns).
        invoked_at: u64,
        /// Completion time (ns).
        completed_at: u64,
    },
    /// A value the checker's model (64-bit integer registers and counters) cannot represent.
    #[error("event {event}: {f:?} {event_type:?} needs {expected} as value, found {found}")]
    UnsupportedValue {
        /// The event's position (1-based).
        event: usize,
        /// The operation.
        f: Function,
        /// The event type.
        event_type: EventType,
        /// What the model needs there.
        expected: &'static str,
        /// What the event holds (as JSON).
        found: String,
    },
}

/// Why a `history.jsonl` could not be checked at all (as opposed to checked and found wrong).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// A line could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The events do not form a history.
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// What kind of problem a [`Violation`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// An acknowledged write is gone: the final read shows an older value.
    LostAcknowledgedWrite,
    /// A read returned a value older than a write that completed before the read began.
    StaleRead,
    /// A read returned a value nobody wrote.
    ValueNeverWritten,
    /// No order of the key's operations explains what the clients saw.
    NotLinearizable,
    /// The linearizability search could not decide (step limit) or refused the operations.
    LinearizabilityUndecided,
}

impl ViolationKind {
    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::LostAcknowledgedWrite => "lost acknowledged write",
            ViolationKind::StaleRead => "stale read",
            ViolationKind::ValueNeverWritten => "value never written",
            ViolationKind::NotLinearizable => "not linearizable",
            ViolationKind::LinearizabilityUndecided => "linearizability undecided",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation named in a [`Violation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationSummary {
    /// The process that issued it.
    pub process: u64,
    /// What it was, e.g. `write 3`, `read -> Some(2)`.
    pub description: String,
    /// Invocation time (ns since start).
    pub invoked_at_nanos: u64,
    /// Completion time (ns), if it completed with a definite outcome.
    pub completed_at_nanos: Option<u64>,
}

impl OperationSummary {
    fn of(operation: &Operation) -> Self {
        Self {
            process: operation.client,
            description: describe(operation),
            invoked_at_nanos: operation.invoked_at_nanos,
            completed_at_nanos: operation.completed_at_nanos,
        }
    }
}

impl fmt::Display for OperationSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let completed = match self.completed_at_nanos {
            Some(nanos) => nanos.to_string(),
            None => "?".to_owned(),
        };
        write!(
            f,
            "process {} {} [{}..{} ns]",
            self.process, self.description, self.invoked_at_nanos, completed
        )
    }
}

/// One problem the checker found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What kind of problem.
    pub kind: ViolationKind,
    /// The key.
    pub key: String,
    /// The operation at fault: the lost write, the stale or impossible read, the operation the
    /// linearizability search could not place.
    pub operation: OperationSummary,
    /// The operation that shows it: the final read that misses a lost write, the write a stale read
    /// missed.
    pub evidence: Option<OperationSummary>,
    /// Explanation (for linearizability failures, the search's account).
    pub details: String,
}

impl Violation {
    /// The process of the operation at fault.
    pub fn process(&self) -> u64 {
        self.operation.process
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on key {:?}: {}", self.kind, self.key, self.operation)?;
        if let Some(evidence) = &self.evidence {
            write!(f, "; shown by {evidence}")?;
        }
        if !self.details.is_empty() {
            write!(f, "\n    {}", self.details.trim_end().replace('\n', "\n    "))?;
        }
        Ok(())
    }
}

/// Events of one function, by type; `pending` counts invocations that never completed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionCounts {
    /// Invocations.
    pub invoke: usize,
    /// `ok` completions.
    pub ok: usize,
    /// `fail` completions.
    pub fail: usize,
    /// `info` completions (outcome unknown).
    pub info: usize,
    /// Invocations without any completion in the file.
    pub pending: usize,
}

/// Counts over the whole history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events (lines) read.
    pub events: usize,
    /// Operations (invocations).
    pub operations: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Counts per function.
    pub by_function: BTreeMap<Function, FunctionCounts>,
    /// Keys that saw `add` (counters): only the linearizability check applies to them.
    pub counter_keys: Vec<String>,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Counts.
    pub summary: Summary,
    /// The violations found, by key, then kind, then time (at most
    /// [`REPORTED_VIOLATIONS_PER_KIND_MAX`] of each kind).
    pub violations: Vec<Violation>,
    /// How many violations of each kind were found, including those not listed.
    pub violation_counts: BTreeMap<ViolationKind, usize>,
}

impl CheckReport {
    /// Whether the history passed every check.
    pub fn is_valid(&self) -> bool {
        self.violation_counts.values().all(|count| *count == 0)
    }

    /// How many violations of `kind` were found.
    pub fn count(&self, kind: ViolationKind) -> usize {
        self.violation_counts.get(&kind).copied().unwrap_or(0)
    }

    fn record(&mut self, violation: Violation) {
        let count = self.violation_counts.entry(violation.kind).or_insert(0);
        *count += 1;
        if *count <= REPORTED_VIOLATIONS_PER_KIND_MAX {
            self.violations.push(violation);
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = &self.summary;
        writeln!(
            f,
            "{} operations on {} keys ({} events)",
            summary.operations, summary.keys, summary.events
        )?;
        for (function, counts) in &summary.by_function {
            writeln!(
                f,
                "  {:<5} invoke {} ok {} fail {} info {} pending {}",
                function.as_str(),
                counts.invoke,
                counts.ok,
                counts.fail,
                counts.info,
                counts.pending
            )?;
        }
        if self.is_valid() {
            return writeln!(f, "valid: no violations");
        }
        for (kind, count) in &self.violation_counts {
            writeln!(f, "  {kind}: {count}")?;
        }
        for violation in &self.violations {
            writeln!(f, "{violation}")?;
        }
        Ok(())
    }
}

/// Reads a `history.jsonl` and checks it.
pub fn check_jsonl<R: BufRead>(input: R) -> Result<CheckReport, CheckError> {
    let events = JsonLinesReader::<R, HistoryEvent>::new(input).collect::<Result<Vec<_>, _>>()?;
    Ok(check_events(&events)?)
}

/// Search steps allowed per operation of a key, beyond [`SEARCH_STEPS_MAX`]: a search walks the
/// operations concurrent with each one (clients, plus every unknown-outcome write still open), so
/// a long history needs a limit that grows with it.
pub const SEARCH_STEPS_PER_OPERATION: u64 = 500;

/// Checks a history given as events, allowing the linearizability search
/// `max(SEARCH_STEPS_MAX, SEARCH_STEPS_PER_OPERATION × operations)` steps per key.
pub fn check_events(events: &[HistoryEvent]) -> Result<CheckReport, HistoryError> {
    let operations = events.iter().filter(|event| event.event_type == EventType::Invoke).count() as u64;
    check_events_with_limit(
        events,
        SEARCH_STEPS_MAX.max(SEARCH_STEPS_PER_OPERATION.saturating_mul(operations)),
    )
}

/// Checks a history given as events, allowing the linearizability search `steps_max` steps per key.
pub fn check_events_with_limit(events: &[HistoryEvent], steps_max: u64) -> Result<CheckReport, HistoryError> {
    let history = to_sim_history(events)?;
    let mut report = CheckReport { summary: summarize(events, &history), ..CheckReport::default() };
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in &history.operations {
        by_key.entry(operation.key.as_str()).or_default().push(operation);
    }
    for (key, operations) in by_key {
        let is_counter =
            operations.iter().any(|operation| matches!(operation.kind, OperationKind::Add { .. }));
        if !is_counter {
            check_register(key, &operations, &mut report);
        }
        check_linearizable(key, &operations, steps_max, &mut report);
    }
    report.violations.sort_by(|a, b| {
        (&a.key, a.kind, a.operation.invoked_at_nanos).cmp(&(&b.key, b.kind, b.operation.invoked_at_nanos))
    });
    Ok(report)
}

fn summarize(events: &[HistoryEvent], history: &History) -> Summary {
    let mut summary =
        Summary { events: events.len(), operations: history.operations.len(), ..Summary::default() };
    for event in events {
        let counts = summary.by_function.entry(event.f).or_default();
        match event.event_type {
            EventType::Invoke => counts.invoke += 1,
            EventType::Ok => counts.ok += 1,
            EventType::Fail => counts.fail += 1,
            EventType::Info => counts.info += 1,
        }
    }
    let mut keys: BTreeMap<&str, bool> = BTreeMap::new();
    for operation in &history.operations {
        let is_counter = keys.entry(operation.key.as_str()).or_insert(false);
        *is_counter |= matches!(operation.kind, OperationKind::Add { .. });
        if operation.outcome == Outcome::Pending {
            summary.by_function.entry(function_of(operation.kind)).or_default().pending += 1;
        }
    }
    summary.keys = keys.len();
    summary.counter_keys =
        keys.into_iter().filter(|(_, is_counter)| *is_counter).map(|(key, _)| key.to_owned()).collect();
    summary
}

fn function_of(kind: OperationKind) -> Function {
    match kind {
        OperationKind::Read => Function::Read,
        OperationKind::Write { .. } => Function::Write,
        OperationKind::Cas { .. } => Function::Cas,
        OperationKind::Add { .. } => Function::Add,
    }
}

fn describe(operation: &Operation) -> String {
    let what = match operation.kind {
        OperationKind::Read => match operation.outcome {
            Outcome::Ok(Response::Read { value: Some(value) }) => format!("read -> {value}"),
            Outcome::Ok(Response::Read { value: None }) => "read -> absent".to_owned(),
            _ => "read".to_owned(),
        },
        OperationKind::Write { value } => format!("write {value}"),
        OperationKind::Cas { expected: Some(expected), new } => format!("cas {expected} -> {new}"),
        OperationKind::Cas { expected: None, new } => format!("cas absent -> {new}"),
        OperationKind::Add { delta } => format!("add {delta}"),
    };
    let outcome = match operation.outcome {
        Outcome::Ok(_) => "ok",
        Outcome::Fail { .. } => "fail",
        Outcome::Unknown { .. } => "info",
        Outcome::Pending => "pending",
    };
    format!("{what} ({outcome})")
}

/// Converts events into the simulator's [`History`]: operations in invocation order, ids from 0.
/// A `fail` becomes [`Outcome::Fail`], an `info` [`Outcome::Unknown`], an invocation never completed
/// [`Outcome::Pending`]; an `ok` `cas` swapped (Jepsen reports a failed expectation as `fail`).
pub fn to_sim_history(events: &[HistoryEvent]) -> Result<History, HistoryError> {
    let mut history = History::new();
    // process -> (index in `history.operations`, position of the invocation event, 1-based)
    let mut outstanding: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        let position = index + 1;
        let completed_as = match event.event_type {
            EventType::Ok => EventType::Ok,
            EventType::Fail => EventType::Fail,
            EventType::Info => EventType::Info,
            EventType::Invoke => {
                if let Some(&(_, outstanding)) = outstanding.get(&event.process) {
                    return Err(HistoryError::AlreadyInvoked {
                        event: position,
                        process: event.process,
                        outstanding,
                    });
                }
                let id = OperationId(history.operations.len() as u64);
                outstanding.insert(event.process, (history.operations.len(), position));
                history.operations.push(Operation {
                    id,
                    client: event.process,
                    // The simulator's history names a node per operation; `?` when the client did not record it.
                    node: event.node.clone().unwrap_or_else(|| "?".to_owned()),
                    key: event.key.clone(),
                    kind: invocation_kind(event, position)?,
                    invoked_at_nanos: event.time,
                    completed_at_nanos: None,
                    outcome: Outcome::Pending,
                });
                continue;
            }
        };
        let Some((operation_index, _)) = outstanding.remove(&event.process) else {
            return Err(HistoryError::CompletionWithoutInvocation {
                event: position,
                process: event.process,
            });
        };
        let operation = &mut history.operations[operation_index];
        let invoked_function = function_of(operation.kind);
        if invoked_function != event.f || operation.key != event.key {
            return Err(HistoryError::CompletionMismatch {
                event: position,
                process: event.process,
                invoked: format!("{} {:?}", invoked_function.as_str(), operation.key),
                completed: format!("{} {:?}", event.f.as_str(), event.key),
            });
        }
        if event.time < operation.invoked_at_nanos {
            return Err(HistoryError::CompletedBeforeInvoked {
                event: position,
                process: event.process,
                invoked_at: operation.invoked_at_nanos,
                completed_at: event.time,
            });
        }
        if let Some(node) = &event.node {
            operation.node = node.clone();
        }
        let reason = || event.error.clone().unwrap_or_default();
        (operation.outcome, operation.completed_at_nanos) = match completed_as {
            EventType::Ok => (Outcome::Ok(completion_response(event, position)?), Some(event.time)),
            EventType::Fail => (Outcome::Fail { reason: reason() }, Some(event.time)),
            // An unknown outcome has no completion: the operation may take effect at any later time.
            EventType::Info | EventType::Invoke => (Outcome::Unknown { reason: reason() }, None),
        };
    }
    Ok(history)
}

fn unsupported(event: &HistoryEvent, position: usize, expected: &'static str) -> HistoryError {
    HistoryError::UnsupportedValue {
        event: position,
        f: event.f,
        event_type: event.event_type,
        expected,
        found: event.value.to_string(),
    }
}

fn integer(value: &serde_json::Value) -> Option<i64> {
    value.as_i64()
}

fn optional_integer(value: &serde_json::Value) -> Option<Option<i64>> {
    if value.is_null() {
        Some(None)
    } else {
        value.as_i64().map(Some)
    }
}

fn invocation_kind(event: &HistoryEvent, position: usize) -> Result<OperationKind, HistoryError> {
    match event.f {
        // Jepsen records `null`; whatever a client put there, a read's invocation asks nothing.
        Function::Read => Ok(OperationKind::Read),
        Function::Write => integer(&event.value)
            .map(|value| OperationKind::Write { value })
            .ok_or_else(|| unsupported(event, position, "an integer")),
        Function::Add => integer(&event.value)
            .map(|delta| OperationKind::Add { delta })
            .ok_or_else(|| unsupported(event, position, "an integer delta")),
        Function::Cas => {
            let pair = match event.value.as_array() {
                Some(items) if items.len() == 2 => optional_integer(&items[0]).zip(integer(&items[1])),
                _ => None,
            };
            pair.map(|(expected, new)| OperationKind::Cas { expected, new })
                .ok_or_else(|| unsupported(event, position, "[expected integer or null, new integer]"))
        }
    }
}

fn completion_response(event: &HistoryEvent, position: usize) -> Result<Response, HistoryError> {
    match event.f {
        Function::Read => optional_integer(&event.value)
            .map(|value| Response::Read { value })
            .ok_or_else(|| unsupported(event, position, "an integer or null")),
        Function::Write => Ok(Response::Written),
        Function::Cas => Ok(Response::Cas { swapped: true }),
        Function::Add => integer(&event.value)
            .map(|value| Response::Added { value })
            .ok_or_else(|| unsupported(event, position, "the counter's integer value after the add")),
    }
}

/// The value an operation may have written, unless it certainly wrote nothing.
fn possibly_written(operation: &Operation) -> Option<i64> {
    let value = match operation.kind {
        OperationKind::Write { value } => value,
        OperationKind::Cas { new, .. } => new,
        OperationKind::Read | OperationKind::Add { .. } => return None,
    };
    match operation.outcome {
        Outcome::Fail { .. } | Outcome::Ok(Response::Cas { swapped: false }) => None,
        _ => Some(value),
    }
}

fn acknowledged_write(operation: &Operation) -> bool {
    matches!(operation.outcome, Outcome::Ok(Response::Written | Response::Cas { swapped: true }))
}

fn read_value(operation: &Operation) -> Option<Option<i64>> {
    match (operation.kind, &operation.outcome) {
        (OperationKind::Read, Outcome::Ok(Response::Read { value })) => Some(*value),
        _ => None,
    }
}

/// The register checks of one key (see the module docs for the definitions). O(n log n) in the
/// key's operations: a long chaos run records hundreds of thousands.
fn check_register(key: &str, operations: &[&Operation], report: &mut CheckReport) {
    // Per value written: the earliest invocation of a write of it, and the time after which it is
    // "older" than any write invoked later (the latest completion of its producers if all were
    // acknowledged; `u64::MAX` — never older — if one may have written it without acknowledgment).
    let mut first_invoked: HashMap<i64, u64> = HashMap::new();
    let mut older_after: HashMap<i64, u64> = HashMap::new();
    for operation in operations {
        let Some(value) = possibly_written(operation) else { continue };
        let first = first_invoked.entry(value).or_insert(operation.invoked_at_nanos);
        *first = (*first).min(operation.invoked_at_nanos);
        let done = match operation.completed_at_nanos {
            Some(done) if acknowledged_write(operation) => done,
            _ => u64::MAX,
        };
        let threshold = older_after.entry(value).or_insert(done);
        *threshold = (*threshold).max(done);
    }
    // `value` is older than a write invoked at `invoked_at`: absent, or only ever written by
    // operations acknowledged before that.
    let older = |value: Option<i64>, invoked_at: u64| match value {
        None => true,
        Some(value) => older_after.get(&value).is_some_and(|&after| after < invoked_at),
    };
    let mut acknowledged: Vec<&Operation> = operations
        .iter()
        .copied()
        .filter(|operation| acknowledged_write(operation) && operation.completed_at_nanos.is_some())
        .collect();
    let reads: Vec<(&Operation, Option<i64>, u64)> = operations
        .iter()
        .filter_map(|operation| {
            let value = read_value(operation)?;
            Some((*operation, value, operation.completed_at_nanos?))
        })
        .collect();

    let mut never_written = HashSet::new();
    for &(read, value, completed_at) in &reads {
        let Some(value) = value else { continue };
        if first_invoked.get(&value).map_or(true, |&invoked| invoked > completed_at) {
            never_written.insert(read.id);
            report.record(Violation {
                kind: ViolationKind::ValueNeverWritten,
                key: key.to_owned(),
                operation: OperationSummary::of(read),
                evidence: None,
                details: format!("no write of {value} was invoked before this read completed"),
            });
        }
    }

    // The final read: the `ok` read invoked last (ties: the one recorded last).
    let final_read = reads.iter().max_by_key(|(read, _, _)| read.invoked_at_nanos);
    let mut lost = HashSet::new();
    if let Some(&(final_read, value, _)) = final_read {
        for write in &acknowledged {
            let Some(completed_at) = write.completed_at_nanos else { continue };
            if completed_at < final_read.invoked_at_nanos && older(value, write.invoked_at_nanos) {
                lost.insert(write.id);
                report.record(Violation {
                    kind: ViolationKind::LostAcknowledgedWrite,
                    key: key.to_owned(),
                    operation: OperationSummary::of(write),
                    evidence: Some(OperationSummary::of(final_read)),
                    details: format!(
                        "the final read, begun after the write was acknowledged, shows {}, written before it",
                        value.map_or_else(|| "the key absent".to_owned(), |value| value.to_string())
                    ),
                });
            }
        }
    }

    // Stale reads: the acknowledged writes (not lost) by completion time, with the latest
    // invocation among each prefix, answer "did some write completed before this read begin after
    // the read's value was superseded?" by a binary search.
    acknowledged.retain(|write| !lost.contains(&write.id));
    acknowledged.sort_by_key(|write| write.completed_at_nanos);
    let mut latest_invoked = Vec::with_capacity(acknowledged.len());
    let mut latest = 0u64;
    for write in &acknowledged {
        latest = latest.max(write.invoked_at_nanos);
        latest_invoked.push(latest);
    }
    for &(read, value, _) in &reads {
        if never_written.contains(&read.id) {
            continue;
        }
        let before =
            acknowledged.partition_point(|write| write.completed_at_nanos < Some(read.invoked_at_nanos));
        if before == 0 || !older(value, latest_invoked[before - 1]) {
            continue;
        }
        // The evidence: the latest-completing such write.
        let missed = acknowledged[..before].iter().rev().find(|write| older(value, write.invoked_at_nanos));
        if let Some(missed) = missed {
            report.record(Violation {
                kind: ViolationKind::StaleRead,
                key: key.to_owned(),
                operation: OperationSummary::of(read),
                evidence: Some(OperationSummary::of(missed)),
                details: "the read began after this write was acknowledged, yet returned an older value"
                    .to_owned(),
            });
        }
    }
}

fn check_linearizable(key: &str, operations: &[&Operation], steps_max: u64, report: &mut CheckReport) {
    let history = History { operations: operations.iter().map(|operation| (*operation).clone()).collect() };
    let Err(error) = linearizability::check_with_limit(&history, steps_max) else { return };
    let details = error.to_string();
    let (kind, operation) = match &error {
        LinearizabilityError::NotLinearizable { operation, .. } => {
            (ViolationKind::NotLinearizable, Some(OperationSummary::of(operation)))
        }
        LinearizabilityError::Malformed { operation, .. } => {
            (ViolationKind::LinearizabilityUndecided, history.get(*operation).map(OperationSummary::of))
        }
        _ => (ViolationKind::LinearizabilityUndecided, None),
    };
    let operation = operation.unwrap_or_else(|| OperationSummary {
        process: 0,
        description: format!("{} operations", operations.len()),
        invoked_at_nanos: operations.first().map_or(0, |operation| operation.invoked_at_nanos),
        completed_at_nanos: None,
    });
    report.record(Violation { kind, key: key.to_owned(), operation, evidence: None, details });
}
