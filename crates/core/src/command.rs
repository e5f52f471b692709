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
    /// A lease operation on the lock stored at a `lock:<resource>` key (see [`LockCommand`]). Expiry is
    /// decided from the entry's leader timestamp, never from a node's clock.
    Lock(LockCommand),
    /// Set `key` to `value` only if `token` is the fencing token of the lease currently valid at
    /// `lock_key` (at the entry's timestamp). Reads a second key, so simple majority refuses it.
    FencedPut {
        /// The key written.
        key: String,
        /// The new value.
        value: Bytes,
        /// The lock guarding `key`: `lock:<resource>` (see [`lock_key`]).
        lock_key: String,
        /// The writer's fencing token.
        token: u64,
    },
}

/// Keys that start with this hold lock state ([`LockState`]); plain writes to them are refused, so
/// fencing tokens can never be reset by a `Put` or `Delete`.
pub const LOCK_KEY_PREFIX: &str = "lock:";

/// The key where the lock on `resource` lives: `lock:<resource>`.
pub fn lock_key(resource: &str) -> String {
    format!("{LOCK_KEY_PREFIX}{resource}")
}

/// A lease operation, decided by the state machine at apply time from the entry's timestamp.
///
/// `key` is the lock's key, `lock:<resource>` (build commands with [`LockCommand::acquire`] etc.).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    /// Grant the lock to `holder` for `ttl_ms` with a new fencing token, if no unexpired lease exists.
    Acquire {
        /// The lock's key.
        key: String,
        /// Who asks (unique per lease attempt, so a retry can recognise its own grant).
        holder: String,
        /// Lease length in milliseconds of log time (1..=[`LockCommand::TTL_MS_MAX`]).
        ttl_ms: u64,
    },
    /// Extend the unexpired lease `token` of `holder` to `ttl_ms` from the entry's timestamp.
    Renew {
        /// The lock's key.
        key: String,
        /// The holder.
        holder: String,
        /// The lease's fencing token.
        token: u64,
        /// New lease length from now, in milliseconds of log time.
        ttl_ms: u64,
    },
    /// End the lease `token` of `holder` (the token survives, so the next grant gets a larger one).
    Release {
        /// The lock's key.
        key: String,
        /// The holder.
        holder: String,
        /// The lease's fencing token.
        token: u64,
    },
}

impl LockCommand {
    /// Longest lease one command may ask for (one day): a typo in a TTL must not lock a resource for years.
    pub const TTL_MS_MAX: u64 = 24 * 60 * 60 * 1000;

    /// Acquire the lock on `resource`.
    pub fn acquire(resource: &str, holder: impl Into<String>, ttl_ms: u64) -> Self {
        LockCommand::Acquire { key: lock_key(resource), holder: holder.into(), ttl_ms }
    }

    /// Renew lease `token` on `resource`.
    pub fn renew(resource: &str, holder: impl Into<String>, token: u64, ttl_ms: u64) -> Self {
        LockCommand::Renew { key: lock_key(resource), holder: holder.into(), token, ttl_ms }
    }

    /// Release lease `token` on `resource`.
    pub fn release(resource: &str, holder: impl Into<String>, token: u64) -> Self {
        LockCommand::Release { key: lock_key(resource), holder: holder.into(), token }
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        match self {
            LockCommand::Acquire { key, .. }
            | LockCommand::Renew { key, .. }
            | LockCommand::Release { key, .. } => key,
        }
    }

    /// The holder named in the command.
    pub fn holder(&self) -> &str {
        match self {
            LockCommand::Acquire { holder, .. }
            | LockCommand::Renew { holder, .. }
            | LockCommand::Release { holder, .. } => holder,
        }
    }
}

/// The replicated state of one lock, stored (postcard-encoded) as the value of its `lock:` key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    /// The holder of the latest lease (`None`: released, or never granted). The lease is valid only
    /// while the log's time is before `expires_at_ms`.
    pub holder: Option<String>,
    /// The latest fencing token issued for this lock (0: never granted). Strictly increases per grant.
    pub token: u64,
    /// Log time (leader's timestamp, ms) when the latest lease was granted.
    pub granted_at_ms: u64,
    /// Log time when the latest lease ends (or ended: on release it is set to the release time).
    pub expires_at_ms: u64,
    /// Latest log time at which this lock changed; the lock's clock never runs backwards even if
    /// stamps do (simple majority stamps with each proposer's clock).
    pub observed_at_ms: u64,
}

impl LockState {
    /// Decodes a `lock:` key's value.
    pub fn decode(bytes: &[u8]) -> Option<LockState> {
        match postcard::take_from_bytes::<LockState>(bytes) {
            Ok((state, [])) => Some(state),
            _ => None,
        }
    }

    /// Encodes the state as stored.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    /// The holder whose lease is valid at log time `now_ms`, if any.
    pub fn holder_at(&self, now_ms: u64) -> Option<&str> {
        self.holder.as_deref().filter(|_| now_ms < self.expires_at_ms)
    }
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
            | Command::Add { key, .. }
            | Command::FencedPut { key, .. } => key,
            Command::Lock(lock) => lock.key(),
            Command::Batch(commands) => commands.first().map_or("", Command::key),
            Command::Custom(_) => "",
        }
    }

    /// Whether the command may touch or read a key other than the one [`Command::key`] names (a
    /// batch; a fenced write, which reads its lock's key). When `false`, [`Command::keys`] is that
    /// key alone (or nothing, for a custom command), and checks can skip collecting it.
    pub fn touches_several_keys(&self) -> bool {
        match self {
            Command::Batch(_) | Command::FencedPut { .. } => true,
            Command::Put { .. }
            | Command::Delete { .. }
            | Command::CompareAndSwap { .. }
            | Command::Add { .. }
            | Command::Lock(_)
            | Command::Custom(_) => false,
        }
    }

    /// Every key the command touches or reads, in order, with repeats (a fenced write: its key,
    /// then its lock's key).
    pub fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        self.collect_keys(&mut keys);
        keys
    }

    /// The length in bytes of the longest key the command touches (0 for none), without collecting
    /// them: size checks run for every proposal.
    pub fn longest_key_bytes(&self) -> usize {
        match self {
            Command::Batch(commands) => commands.iter().map(Command::longest_key_bytes).max().unwrap_or(0),
            Command::Custom(_) => 0,
            Command::FencedPut { key, lock_key, .. } => key.len().max(lock_key.len()),
            other => other.key().len(),
        }
    }

    fn collect_keys<'a>(&'a self, keys: &mut Vec<&'a str>) {
        match self {
            Command::Batch(commands) => commands.iter().for_each(|c| c.collect_keys(keys)),
            Command::Custom(_) => {}
            Command::FencedPut { key, lock_key, .. } => {
                keys.push(key);
                keys.push(lock_key);
            }
            other => keys.push(other.key()),
        }
    }

    /// The value the command writes, if it writes one (for events and results).
    pub fn written_value(&self) -> Option<&Bytes> {
        match self {
            Command::Put { value, .. } | Command::FencedPut { value, .. } => Some(value),
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
            Command::Lock(lock) => 24 + lock.key().len() + lock.holder().len(),
            Command::FencedPut { key, value, lock_key, .. } => 16 + key.len() + value.len() + lock_key.len(),
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
    /// An acquire found an unexpired lease of another attempt.
    #[error("lock {key:?} is held by {holder:?} (token {token}) until {expires_at_ms} ms; decided at {decided_at_ms} ms")]
    LockHeld {
        /// The lock's key.
        key: String,
        /// The current holder.
        holder: String,
        /// Its fencing token.
        token: u64,
        /// When its lease was granted, in log time.
        granted_at_ms: u64,
        /// When its lease ends, in log time.
        expires_at_ms: u64,
        /// The log time of the refused command (so a waiter knows how long the lease still runs).
        decided_at_ms: u64,
    },
    /// A renew, release or fenced write whose lease is not the valid one (expired, released or
    /// superseded by a later grant), or whose holder does not match.
    #[error("lease {token} on {key:?} is no longer valid (current token {}, holder {:?})", current.token, current.holder)]
    LeaseLost {
        /// The lock's key.
        key: String,
        /// The token the command carried.
        token: u64,
        /// The lock's state at apply time.
        current: LockState,
    },
    /// A plain write to a key reserved for lock state (`lock:…`).
    #[error("key {key:?} is reserved for lock state; use lock commands")]
    ReservedKey {
        /// The key.
        key: String,
    },
    /// A malformed lock command (TTL out of range, empty holder, key without the `lock:` prefix, or a
    /// key that does not hold lock state).
    #[error("invalid lock command on {key:?}: {reason}")]
    InvalidLock {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A command from a client the session table does not know, while it already remembers
    /// `limit` clients (`Config::max_client_records`) that were all active within
    /// `Config::client_session_expiry`. Nothing was applied; retry once idle clients have expired.
    #[error("session table full: {limit} clients active within the session expiry; retry later")]
    SessionTableFull {
        /// The limit.
        limit: u64,
    },
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
