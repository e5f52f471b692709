//! # concord-chaos
//!
//! The history format and the checker of `cargo xtask chaos`, concord's fault test against real
//! processes and real network cuts.
//!
//! - [`format`](mod@format): the operation history (`history.jsonl`) in the convention Jepsen uses, one JSON
//!   object per line — `{"process": 3, "type": "invoke"|"ok"|"fail"|"info", "f":
//!   "read"|"write"|"cas"|"add", "key": "k1", "value": …, "time": <ns since start>}` — and the
//!   nemesis log (`nemesis.jsonl`), with a streaming [`JsonLinesReader`] that reports malformed lines
//!   by line number and a [`JsonLinesWriter`].
//! - [`checker`]: pairs invocations with completions into a [`concord_sim::History`], runs the
//!   project's [linearizability checker](concord_sim::linearizability) key by key, and adds plain
//!   checks that name the problem: a **lost acknowledged write**, a **stale read**, a **value never
//!   written**. The [`CheckReport`] lists each violation with its key, process and times, and counts
//!   operations by function and outcome.
//!
//! - The run itself, as root ([`run`]): network namespaces joined by a bridge ([`netns`]), `concord
//!   serve` in each, [`client`] processes inside the namespaces, the seeded [`nemesis`] (nftables
//!   cuts on the bridge, `kill -9` and restart, SIGSTOP/SIGCONT), healing, a convergence check and
//!   the verdict with availability per phase ([`summary`]). `cargo xtask chaos` builds the binaries
//!   and calls the `concord-chaos` binary's `run`.
//!
//! **What it is not:** a general Jepsen: it drives concord's own HTTP API, its models are the
//! registers and counters of that API, and it needs root on Linux.
//!
//! ```
//! use concord_chaos::{check_jsonl, ViolationKind};
//!
//! // Process 0 writes 1, then 2 (both acknowledged); after healing, process 1 reads 1 back.
//! let history = r#"
//! {"process": 0, "type": "invoke", "f": "write", "key": "k1", "value": 1, "time": 10}
//! {"process": 0, "type": "ok",     "f": "write", "key": "k1", "value": 1, "time": 20}
//! {"process": 0, "type": "invoke", "f": "write", "key": "k1", "value": 2, "time": 30}
//! {"process": 0, "type": "ok",     "f": "write", "key": "k1", "value": 2, "time": 40}
//! {"process": 1, "type": "invoke", "f": "read",  "key": "k1", "value": null, "time": 50}
//! {"process": 1, "type": "ok",     "f": "read",  "key": "k1", "value": 1, "time": 60}
//! "#;
//! let report = check_jsonl(history.as_bytes())?;
//! assert!(!report.is_valid());
//! assert!(report.violations.iter().any(|v| v.kind == ViolationKind::LostAcknowledgedWrite));
//! assert_eq!(report.summary.operations, 3);
//! # Ok::<(), concord_chaos::CheckError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod checker;
pub mod client;
pub mod format;
pub mod nemesis;
pub mod netns;
pub mod run;
pub mod summary;

pub use checker::{
    check_events, check_events_with_limit, check_jsonl, to_sim_history, CheckError, CheckReport,
    FunctionCounts, HistoryError, OperationSummary, Summary, Violation, ViolationKind,
    REPORTED_VIOLATIONS_PER_KIND_MAX, SEARCH_STEPS_PER_OPERATION,
};
pub use format::{
    read_history, read_nemesis, EventType, Function, HistoryEvent, JsonLinesReader, JsonLinesWriter,
    NemesisEvent, NemesisPhase, ReadError, WriteError, LINE_BYTES_MAX,
};
