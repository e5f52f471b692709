//! Client operations and the history they leave: what was invoked, when, and how it ended.
//!
//! The types are plain data (serde-serializable, constructible by hand) so that the chaos tool and a
//! JSON-lines reader can build histories the [linearizability checker](crate::linearizability)
//! accepts, not only the simulator.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one operation in a [`History`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(pub u64);

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// An operation a simulated client submits to one node (see
/// [`Simulation::submit`](crate::Simulation::submit)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientOp {
    /// Write `value` to `key` (a `Command::Put` of the postcard-encoded i64).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: i64,
    },
    /// Linearizable read of `key` (`Mechanism::read`, then the node's replica).
    Get {
        /// The key.
        key: String,
    },
    /// Set `key` to `new` only if it holds `expected` (`None`: absent) when applied.
    Cas {
        /// The key.
        key: String,
        /// The value it must hold.
        expected: Option<i64>,
        /// The value to write.
        new: i64,
    },
    /// Add `delta` to the counter at `key` (absent counts as 0).
    Add {
        /// The key.
        key: String,
        /// The amount.
        delta: i64,
    },
}

impl ClientOp {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            ClientOp::Put { key, .. }
            | ClientOp::Get { key }
            | ClientOp::Cas { key, .. }
            | ClientOp::Add { key, .. } => key,
        }
    }

    /// The operation as the history records it (without its key).
    pub fn kind(&self) -> OperationKind {
        match self {
            ClientOp::Put { value, .. } => OperationKind::Write { value: *value },
            ClientOp::Get { .. } => OperationKind::Read,
            ClientOp::Cas { expected, new, .. } => OperationKind::Cas { expected: *expected, new: *new },
            ClientOp::Add { delta, .. } => OperationKind::Add { delta: *delta },
        }
    }
}

/// What an operation asks of its key: the register-and-counter model the checker knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// Read the value.
    Read,
    /// Write a value.
    Write {
        /// The value.
        value: i64,
    },
    /// Compare-and-swap.
    Cas {
        /// Required current value (`None`: absent).
        expected: Option<i64>,
        /// New value.
        new: i64,
    },
    /// Add to the counter (absent counts as 0).
    Add {
        /// The amount.
        delta: i64,
    },
}

impl OperationKind {
    /// Whether the operation may change the state (reads never do).
    pub fn is_write(&self) -> bool {
        !matches!(self, OperationKind::Read)
    }
}

/// What a successful operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// A read's value (`None`: absent).
    Read {
        /// The value read.
        value: Option<i64>,
    },
    /// A write was applied.
    Written,
    /// A compare-and-swap was applied; `swapped` says whether the expectation held.
    Cas {
        /// Whether the value was replaced.
        swapped: bool,
    },
    /// An add was applied; the counter's value after it.
    Added {
        /// The new value.
        value: i64,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not finished yet (at the end of a run it is treated like [`Outcome::Unknown`]).
    Pending,
    /// It took effect and returned this.
    Ok(Response),
    /// A definite refusal: it did not take effect.
    Fail {
        /// Why.
        reason: String,
    },
    /// It may or may not have taken effect (timeout, crash, leadership lost): Jepsen's `info`.
    Unknown {
        /// Why the outcome is unknown.
        reason: String,
    },
}

/// One operation: invocation and completion, with virtual timestamps in nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Its id, unique in the history.
    pub id: OperationId,
    /// The client that issued it.
    pub client: u64,
    /// The node it was submitted to (the last one, if retried).
    pub node: String,
    /// The key.
    pub key: String,
    /// What it asks.
    pub kind: OperationKind,
    /// When it was invoked (ns of virtual time).
    pub invoked_at_nanos: u64,
    /// When it completed (ns), if it did with a definite outcome (`Ok` or `Fail`).
    pub completed_at_nanos: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            OperationKind::Read => "read".to_owned(),
            OperationKind::Write { value } => format!("write {value}"),
            OperationKind::Cas { expected, new } => format!("cas {expected:?}->{new}"),
            OperationKind::Add { delta } => format!("add {delta}"),
        };
        let outcome = match &self.outcome {
            Outcome::Pending => "pending".to_owned(),
            Outcome::Ok(Response::Read { value }) => format!("ok {value:?}"),
            Outcome::Ok(Response::Written) => "ok".to_owned(),
            Outcome::Ok(Response::Cas { swapped }) => format!("ok swapped={swapped}"),
            Outcome::Ok(Response::Added { value }) => format!("ok ={value}"),
            Outcome::Fail { reason } => format!("fail ({reason})"),
            Outcome::Unknown { reason } => format!("unknown ({reason})"),
        };
        let completed = match self.completed_at_nanos {
            Some(nanos) => format!("{:.3}ms", nanos as f64 / 1e6),
            None => "?".to_owned(),
        };
        write!(
            f,
            "{} client {} on {} key {:?}: {kind} [{:.3}ms..{completed}] {outcome}",
            self.id,
            self.client,
            self.node,
            self.key,
            self.invoked_at_nanos as f64 / 1e6
        )
    }
}

/// Every operation of a run, in invocation order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations.
    pub operations: Vec<Operation>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks an operation up by id.
    pub fn get(&self, id: OperationId) -> Option<&Operation> {
        // Ids are handed out in order by the simulator, so try the direct position first.
        match usize::try_from(id.0).ok().and_then(|position| self.operations.get(position)) {
            Some(operation) if operation.id == id => Some(operation),
            _ => self.operations.iter().find(|operation| operation.id == id),
        }
    }

    /// Counts of operations by outcome: (ok, fail, unknown or pending).
    pub fn outcome_counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for operation in &self.operations {
            match operation.outcome {
                Outcome::Ok(_) => counts.0 += 1,
                Outcome::Fail { .. } => counts.1 += 1,
                Outcome::Unknown { .. } | Outcome::Pending => counts.2 += 1,
            }
        }
        counts
    }
}
