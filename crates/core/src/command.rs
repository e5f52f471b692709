//! Commands of the replicated key-value state machine, and what applying one returns.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::Version;

/// What a compare-and-swap compares against, decided when the command is applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expectation {
    /// The key's current value equals this (`None`: the key is absent).
    Value(Option<Bytes>),
    /// The key's current version equals this (0: the key never existed).
    Version(Version),
}

/// One operation on the key-value state.
// `remote = "Self"` turns the derives into inherent functions that the hand-written trait impls
// below wrap with a nesting limit: `Batch` is recursive, and without a limit a peer could send a
// frame of nested batches deep enough to overflow the decoder's stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub enum Command {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value (opaque bytes; typed helpers use postcard).
        value: Bytes,
    },
    /// Remove `key`. Its version still advances, so versions never repeat.
    Delete {
        /// The key.
        key: String,
    },
    /// Set (or, with `new: None`, delete) `key` only if `expected` holds when the command is applied.
    CompareAndSwap {
        /// The key.
        key: String,
        /// What the current state must be.
        expected: Expectation,
        /// The new value, or `None` to delete.
        new: Option<Bytes>,
    },
    /// Add `delta` to the i64 counter stored at `key` (absent counts as 0), wrapping on overflow is
    /// refused: the command fails instead.
    Add {
        /// The key.
        key: String,
        /// The amount, negative to decrement.
        delta: i64,
    },
    /// Apply every command or none: the first that fails aborts the whole batch.
    Batch(Vec<Command>),
    /// Opaque bytes for a user-supplied [`StateMachine`](crate::state_machine::StateMachine); the key-value
    /// state machine refuses them.
    Custom(Bytes),
}

impl Command {
    /// Deepest nesting of commands inside batches (and of failures inside batch failures) that
    /// encodes or decodes; a plain command is depth 1, a batch of plain commands depth 2. Deeper
    /// values are refused with a serde error instead of recursing without bound.
    pub const NESTING_MAX: usize = 8;

    /// The key the command touches; for a batch, its first key; for custom commands, `""`.
    pub fn key(&self) -> &str {
        match self {
            Command::Put { key, .. }
            | Command::Delete { key }
            | Command::CompareAndSwap { key, .. }
            | Command::Add { key, .. } => key,
            Command::Batch(commands) => commands.first().map_or("", Command::key),
            Command::Custom(_) => "",
        }
    }

    /// Every key the command touches, in order, with repeats.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        self.collect_keys(&mut keys);
        keys
    }

    fn collect_keys<'a>(&'a self, keys: &mut Vec<&'a str>) {
        match self {
            Command::Batch(commands) => commands.iter().for_each(|c| c.collect_keys(keys)),
            Command::Custom(_) => {}
            other => keys.push(other.key()),
        }
    }

    /// The value the command writes, if it writes one (for events and results).
    pub fn written_value(&self) -> Option<&Bytes> {
        match self {
            Command::Put { value, .. } => Some(value),
            Command::CompareAndSwap { new, .. } => new.as_ref(),
            _ => None,
        }
    }

    /// Approximate encoded size, for batching and in-flight byte limits.
    pub fn size_bytes(&self) -> usize {
        match self {
            Command::Put { key, value } => 8 + key.len() + value.len(),
            Command::Delete { key } => 4 + key.len(),
            Command::CompareAndSwap { key, expected, new } => {
                let expected_len = match expected {
                    Expectation::Value(value) => value.as_ref().map_or(1, |v| v.len() + 2),
                    Expectation::Version(_) => 9,
                };
                8 + key.len() + expected_len + new.as_ref().map_or(1, |v| v.len() + 2)
            }
            Command::Add { key, .. } => 12 + key.len(),
            Command::Batch(commands) => 4 + commands.iter().map(Command::size_bytes).sum::<usize>(),
            Command::Custom(bytes) => 4 + bytes.len(),
        }
    }
}

/// The state of one key after a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// The value, `None` if absent.
    pub value: Option<Bytes>,
    /// The version (0 if the key never existed).
    pub version: Version,
}

/// Why an applied command did not take effect. These are decisions of the state machine, the same
/// on every replica, not errors of the system.
// Recursive through `BatchAborted`, so it gets the same nesting limit as `Command`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(remote = "Self")]
#[non_exhaustive]
pub enum CommandFailure {
    /// A compare-and-swap's expectation did not hold.
    #[error("compare-and-swap on {key:?} failed: the current state differs from the expected one")]
    CompareFailed {
        /// The key.
        key: String,
        /// Its state at apply time.
        current: KeyState,
    },
    /// `Add` on a key whose value is not an i64 counter.
    #[error("key {key:?} does not hold an i64 counter")]
    NotACounter {
        /// The key.
        key: String,
    },
    /// `Add` would overflow i64.
    #[error("adding {delta} to counter {key:?} overflows")]
    Overflow {
        /// The key.
        key: String,
        /// The delta refused.
        delta: i64,
    },
    /// A command inside a batch failed, so none of the batch was applied.
    #[error("batch aborted at command {position}: {reason}")]
    BatchAborted {
        /// Zero-based position of the failing command.
        position: usize,
        /// Why it failed.
        reason: Box<CommandFailure>,
    },
    /// Batches may not nest.
    #[error("a batch may not contain another batch")]
    NestedBatch,
    /// The state machine does not understand the command (e.g. `Custom` on the key-value machine).
    #[error("command not supported by this state machine: {0}")]
    Unsupported(String),
    /// A retried command whose session was forgotten (more than `max_client_sessions` clients since).
    #[error("client session expired: the command's first outcome is no longer known")]
    SessionExpired,
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let _depth = nesting::enter().map_err(serde::ser::Error::custom)?;
        Command::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _depth = nesting::enter().map_err(serde::de::Error::custom)?;
        Command::deserialize(deserializer)
    }
}

impl Serialize for CommandFailure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let _depth = nesting::enter().map_err(serde::ser::Error::custom)?;
        CommandFailure::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for CommandFailure {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _depth = nesting::enter().map_err(serde::de::Error::custom)?;
        CommandFailure::deserialize(deserializer)
    }
}

// Serde gives a (de)serializer no place for state, so the current nesting depth lives in a
// thread-local counter that a guard raises on entry and lowers on every exit, error or unwind.
mod nesting {
    use std::cell::Cell;

    use super::Command;

    thread_local! {
        static DEPTH: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) struct DepthGuard(());

    pub(super) fn enter() -> Result<DepthGuard, String> {
        DEPTH.with(|depth| {
            if depth.get() >= Command::NESTING_MAX {
                return Err(format!("commands nest deeper than {} levels", Command::NESTING_MAX));
            }
            depth.set(depth.get() + 1);
            Ok(DepthGuard(()))
        })
    }

    impl Drop for DepthGuard {
        fn drop(&mut self) {
            DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
        }
    }
}

/// The effect of applying one command: the state of every key it touched, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// For each key touched (in command order): key, old state, new state.
    pub changes: Vec<KeyChange>,
    /// For `Add`: the counter's new value.
    pub counter: Option<i64>,
    /// Opaque result of a custom command.
    pub custom: Option<Bytes>,
}

/// One key's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    /// The key.
    pub key: String,
    /// Value before (None if absent).
    pub old_value: Option<Bytes>,
    /// Value after (None if deleted).
    pub new_value: Option<Bytes>,
    /// Version after.
    pub version: Version,
}

/// Outcome of applying a command: it took effect, or the state machine refused it deterministically.
pub type CommandResult = Result<CommandOutput, CommandFailure>;
