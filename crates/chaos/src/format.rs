//! The JSON-lines files a chaos run leaves: `history.jsonl` ([`HistoryEvent`]) and `nemesis.jsonl`
//! ([`NemesisEvent`]), and a streaming reader and writer for both.
//!
//! The history follows Jepsen's convention so that outside checkers (Knossos, Elle, Porcupine
//! adapters) can read it: each client operation is an `invoke` event followed, from the same
//! `process`, by exactly one completion — `ok` (it took effect), `fail` (it certainly did not) or
//! `info` (unknown: timeout, connection lost). Values:
//! - `read`: `null` on invoke; on `ok`, the value read (`null`: absent).
//! - `write`: the value written.
//! - `cas`: `[expected, new]` (`expected` may be `null`: absent); a `cas` whose expectation did not
//!   hold completes with `fail`, as in Jepsen.
//! - `add`: the delta on invoke; on `ok`, the counter's value after the add (concord's client API
//!   returns it, and the checker uses it; Jepsen's own counters echo the delta instead).

use std::io::{BufRead, Read, Write};
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Longest line the reader accepts, in bytes (without its newline). A history line is a few
/// hundred bytes; anything near this limit is a corrupt file, not an operation.
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// What an event in `history.jsonl` records: an invocation or one of the three completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client sent the request.
    Invoke,
    /// The operation took effect.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// The outcome is unknown: it may or may not have taken effect.
    Info,
}

/// The operation an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// Read a key.
    Read,
    /// Write a value to a key.
    Write,
    /// Compare-and-swap: `[expected, new]`.
    Cas,
    /// Add a delta to a counter.
    Add,
}

impl Function {
    /// The name used in the file (`"read"`, `"write"`, `"cas"`, `"add"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
            Function::Add => "add",
        }
    }
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// The client (Jepsen: a process); it has at most one operation outstanding.
    pub process: u64,
    /// Invocation or completion.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The operation.
    pub f: Function,
    /// The key it touches.
    pub key: String,
    /// The operation's value (see the [module docs](self) for what it holds per `f` and `type`).
    #[serde(default)]
    pub value: serde_json::Value,
    /// Nanoseconds since the start of the run.
    pub time: u64,
    /// The node the request went to, if the client recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why it failed or its outcome is unknown, if the client recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether a fault begins or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisPhase {
    /// The fault is injected.
    Start,
    /// The fault is healed.
    Stop,
}

/// One line of `nemesis.jsonl`: what fault was injected or healed, when, on which nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// Nanoseconds since the start of the run (the same clock as the history).
    pub time: u64,
    /// The fault, e.g. `"partition-majority"`, `"kill"`, `"pause"`.
    pub fault: String,
    /// The nodes it affects.
    pub targets: Vec<String>,
    /// Start or stop.
    pub phase: NemesisPhase,
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The underlying reader failed (the file's or the system's fault, not the line's).
    #[error("line {line}: reading failed: {source}")]
    Io {
        /// The line being read (1-based).
        line: u64,
        /// The error.
        source: std::io::Error,
    },
    /// The line is not a valid event: bad JSON, a missing field, an unknown `type` or `f`.
    #[error("line {line}: malformed: {source}")]
    Malformed {
        /// The line (1-based).
        line: u64,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// The line is longer than [`LINE_BYTES_MAX`]; reading stops there.
    #[error("line {line}: longer than {limit} bytes")]
    LineTooLong {
        /// The line (1-based).
        line: u64,
        /// The limit.
        limit: usize,
    },
}

impl ReadError {
    /// The line the error is about (1-based).
    pub fn line(&self) -> u64 {
        match self {
            ReadError::Io { line, .. }
            | ReadError::Malformed { line, .. }
            | ReadError::LineTooLong { line, .. } => *line,
        }
    }
}

/// Reads one JSON value of type `T` per line, streaming. Blank lines are skipped. A malformed line
/// yields [`ReadError::Malformed`] and reading goes on with the next line; an I/O error or an
/// over-long line yields its error and ends the iteration (the rest of the stream cannot be trusted
/// to be split into lines correctly).
pub struct JsonLinesReader<R, T> {
    input: R,
    line: u64,
    buffer: Vec<u8>,
    finished: bool,
    item: PhantomData<fn() -> T>,
}

impl<R: BufRead, T: DeserializeOwned> JsonLinesReader<R, T> {
    /// Reads from `input`.
    pub fn new(input: R) -> Self {
        Self { input, line: 0, buffer: Vec::new(), finished: false, item: PhantomData }
    }

    /// The number of the last line read (1-based; 0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }
}

impl<R: BufRead, T: DeserializeOwned> Iterator for JsonLinesReader<R, T> {
    type Item = Result<T, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Blank lines are skipped; the loop is bounded by the input's length.
        while !self.finished {
            self.buffer.clear();
            self.line += 1;
            let line = self.line;
            // One byte beyond the limit (plus the newline) tells an over-long line from a full one.
            let limit = (LINE_BYTES_MAX + 2) as u64;
            let read = (&mut self.input).take(limit).read_until(b'\n', &mut self.buffer);
            match read {
                Err(source) => {
                    self.finished = true;
                    return Some(Err(ReadError::Io { line, source }));
                }
                Ok(0) => {
                    self.finished = true;
                    return None;
                }
                Ok(_) => {}
            }
            if self.buffer.last() == Some(&b'\n') {
                self.buffer.pop();
                if self.buffer.last() == Some(&b'\r') {
                    self.buffer.pop();
                }
            }
            if self.buffer.len() > LINE_BYTES_MAX {
                self.finished = true;
                return Some(Err(ReadError::LineTooLong { line, limit: LINE_BYTES_MAX }));
            }
            if self.buffer.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(
                serde_json::from_slice(&self.buffer).map_err(|source| ReadError::Malformed { line, source }),
            );
        }
        None
    }
}

/// Reads every event of a `history.jsonl`, stopping at the first error.
pub fn read_history<R: BufRead>(input: R) -> Result<Vec<HistoryEvent>, ReadError> {
    JsonLinesReader::new(input).collect()
}

/// Reads every event of a `nemesis.jsonl`, stopping at the first error.
pub fn read_nemesis<R: BufRead>(input: R) -> Result<Vec<NemesisEvent>, ReadError> {
    JsonLinesReader::new(input).collect()
}

/// Why a line could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The underlying writer failed.
    #[error("writing line {line} failed: {source}")]
    Io {
        /// The line being written (1-based).
        line: u64,
        /// The error.
        source: std::io::Error,
    },
    /// The value could not be encoded (a caller's bug: e.g. a map with non-string keys).
    #[error("encoding line {line} failed: {source}")]
    Encode {
        /// The line being written (1-based).
        line: u64,
        /// The error.
        source: serde_json::Error,
    },
}

/// Writes one JSON value per line. Callers that need the file to survive a crash call
/// [`flush`](Self::flush) (and sync the file) themselves; the writer adds no buffering of its own.
pub struct JsonLinesWriter<W> {
    output: W,
    line: u64,
}

impl<W: Write> JsonLinesWriter<W> {
    /// Writes to `output`.
    pub fn new(output: W) -> Self {
        Self { output, line: 0 }
    }

    /// Writes `item` as one line.
    pub fn write<T: Serialize>(&mut self, item: &T) -> Result<(), WriteError> {
        let line = self.line + 1;
        let mut encoded = serde_json::to_vec(item).map_err(|source| WriteError::Encode { line, source })?;
        // serde_json never emits a raw newline inside a value, so one value stays one line.
        debug_assert!(!encoded.contains(&b'\n'));
        encoded.push(b'\n');
        self.output.write_all(&encoded).map_err(|source| WriteError::Io { line, source })?;
        self.line = line;
        Ok(())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        self.output.flush().map_err(|source| WriteError::Io { line: self.line, source })
    }

    /// Lines written so far.
    pub fn lines_written(&self) -> u64 {
        self.line
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.output
    }
}
