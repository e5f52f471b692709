//! # concord-bench
//!
//! Benchmark harnesses that need a whole cluster (the criterion micro-benchmarks live in the
//! crates whose hot paths they measure). Not a library to depend on.
//!
//! The cluster benchmark mirrors openraft's `benchmarks/minimal`: three nodes in one process,
//! in-memory log, a no-op state machine, empty requests, `C` clients writing sequentially.
//!
//! [`failover`] measures the time to elect a new leader after a leader crash, in the simulator,
//! after Figure 16 of the Raft paper (the `failover` binary); the `failover-processes` binary does
//! the same with real `concord serve` processes killed with SIGKILL ([`processes`]).
//!
//! `restart-bench` measures how long a cluster whose durable logs hold 1M entries takes to serve
//! again after a restart; `loopback-bench` measures throughput and latency with the members in
//! separate processes on loopback, beside the transport's own round trip and the raw fsync time.
//! [`stats`] holds the percentile and `/proc` helpers they share.
//!
//! ```
//! let machine = concord_bench::NoopStateMachine;
//! # let _ = machine;
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod failover;
pub mod processes;
pub mod stats;

use bytes::Bytes;
use concord_core::command::{Command, CommandOutput, CommandResult};
use concord_core::state_machine::{ApplyContext, StateMachine, StateMachineError};

/// A state machine that stores nothing: it measures consensus, not the application.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopStateMachine;

impl StateMachine for NoopStateMachine {
    fn apply(&mut self, _context: &ApplyContext, _command: &Command) -> CommandResult {
        Ok(CommandOutput::default())
    }

    fn version(&self, _key: &str) -> u64 {
        0
    }

    fn get(&self, _key: &str) -> Option<Bytes> {
        None
    }

    fn snapshot(&self) -> Bytes {
        Bytes::new()
    }

    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), StateMachineError> {
        Ok(())
    }
}
