//! The replicated state machine: the key-value machine every node runs by default, the small trait
//! that lets an application replicate its own state instead, and [`Replica`], which adds the
//! exactly-once session table on top of either.
//!
//! Everything here is deterministic: the same commands in the same order give the same state and
//! the same snapshot bytes on every replica (maps are ordered, nothing reads a clock or an RNG; time
//! comes from the leader's stamp in [`ApplyContext`]).

use std::collections::{hash_map, BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::command::{
    Command, CommandFailure, CommandOutput, CommandResult, Expectation, KeyChange, KeyState, LockCommand,
    LockState, LOCK_KEY_PREFIX,
};
use crate::hashing::U64Hashing;
use crate::id::{ClientSession, LogIndex, Term, Version};

/// Where in the log a command is applied, and the time the leader stamped on its entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyContext {
    /// The entry's index (for simple majority: the node's local decision sequence).
    pub index: LogIndex,
    /// The entry's term.
    pub term: Term,
    /// Milliseconds since the Unix epoch by the stamping leader's clock; never decreases along the log.
    pub timestamp_ms: u64,
}

/// A snapshot that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateMachineError {
    /// The snapshot bytes do not decode.
    #[error("corrupt state machine snapshot: {0}")]
    CorruptSnapshot(String),
}

/// A deterministic state machine that consensus replicates.
///
/// Implement it to replicate your own state instead of the key-value map: `apply` must depend only
/// on the current state, the command and the context.
pub trait StateMachine: Send + 'static {
    /// Applies one committed command. A refused command (`Err`) must leave the state unchanged.
    fn apply(&mut self, context: &ApplyContext, command: &Command) -> CommandResult;
    /// The current version of `key` (simple majority votes on versions). Machines without keys
    /// may return 0.
    fn version(&self, key: &str) -> Version;
    /// The current value of `key`, if the machine is keyed.
    fn get(&self, key: &str) -> Option<Bytes>;
    /// The whole state as bytes; equal states must give equal bytes.
    fn snapshot(&self) -> Bytes;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateMachineError>;
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    value: Option<Bytes>,
    version: Version,
}

/// The key-value state machine of the lesson: versioned keys, atomic compare-and-swap, i64
/// counters and all-or-nothing batches.
///
/// A deleted key keeps its version (a tombstone), so a version is never reused and a
/// compare-and-swap on a version can never be fooled by a delete and re-create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    slots: BTreeMap<String, Slot>,
}

impl KvStateMachine {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of `key`.
    pub fn key_state(&self, key: &str) -> KeyState {
        match self.slots.get(key) {
            Some(slot) => KeyState { value: slot.value.clone(), version: slot.version },
            None => KeyState { value: None, version: 0 },
        }
    }

    /// Keys that currently hold a value, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().filter(|(_, slot)| slot.value.is_some()).map(|(key, _)| key.as_str())
    }

    /// Number of keys that hold a value.
    pub fn len(&self) -> usize {
        self.keys().count()
    }

    /// Whether no key holds a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes a counter value: absent is 0.
    pub fn decode_counter(value: Option<&Bytes>) -> Option<i64> {
        match value {
            None => Some(0),
            Some(bytes) => match postcard::take_from_bytes::<i64>(bytes) {
                Ok((number, [])) => Some(number),
                _ => None,
            },
        }
    }

    /// Encodes a counter value the way typed reads (`get::<i64>`) expect it.
    pub fn encode_counter(value: i64) -> Bytes {
        Bytes::from(postcard::to_allocvec(&value).unwrap_or_default())
    }

    // Computes the new value of one simple command without changing the state.
    fn plan(
        &self,
        context: &ApplyContext,
        command: &Command,
        staged: &BTreeMap<&str, Slot>,
    ) -> Result<(Option<Bytes>, Option<i64>), CommandFailure> {
        let key = command.key();
        let current =
            staged.get(key).cloned().unwrap_or_else(|| self.slots.get(key).cloned().unwrap_or_default());
        // Lock state may change only through lock commands: a plain `Delete` would reset the fencing
        // token and let an old token win again.
        if key.starts_with(LOCK_KEY_PREFIX) && !matches!(command, Command::Lock(_) | Command::Batch(_)) {
            return Err(CommandFailure::ReservedKey { key: key.to_owned() });
        }
        match command {
            Command::Put { value, .. } => Ok((Some(value.clone()), None)),
            Command::Delete { .. } => Ok((None, None)),
            Command::CompareAndSwap { key, expected, new } => {
                let holds = match expected {
                    Expectation::Value(value) => &current.value == value,
                    Expectation::Version(version) => current.version == *version,
                };
                if holds {
                    Ok((new.clone(), None))
                } else {
                    Err(CommandFailure::CompareFailed {
                        key: key.clone(),
                        current: KeyState { value: current.value, version: current.version },
                    })
                }
            }
            Command::Add { key, delta } => {
                let number = Self::decode_counter(current.value.as_ref())
                    .ok_or_else(|| CommandFailure::NotACounter { key: key.clone() })?;
                let sum = number
                    .checked_add(*delta)
                    .ok_or_else(|| CommandFailure::Overflow { key: key.clone(), delta: *delta })?;
                Ok((Some(Self::encode_counter(sum)), Some(sum)))
            }
            Command::Batch(_) => Err(CommandFailure::NestedBatch),
            Command::Custom(_) => {
                Err(CommandFailure::Unsupported("custom commands need a custom state machine".into()))
            }
            Command::Lock(lock) => {
                let state = Self::lock_state(lock.key(), current.value.as_ref())?;
                let next = Self::plan_lock(context, lock, state)?;
                Ok((Some(next.encode()), None))
            }
            Command::FencedPut { key, value, lock_key, token } => {
                let lock_slot = staged
                    .get(lock_key.as_str())
                    .cloned()
                    .unwrap_or_else(|| self.slots.get(lock_key).cloned().unwrap_or_default());
                let state = Self::lock_state(lock_key, lock_slot.value.as_ref())?;
                let now_ms = context.timestamp_ms.max(state.observed_at_ms);
                if state.token != *token || state.holder_at(now_ms).is_none() {
                    return Err(CommandFailure::LeaseLost {
                        key: key.clone(),
                        token: *token,
                        current: state,
                    });
                }
                Ok((Some(value.clone()), None))
            }
        }
    }

    // The lock state stored at `key` (absent: never granted).
    fn lock_state(key: &str, value: Option<&Bytes>) -> Result<LockState, CommandFailure> {
        if !key.starts_with(LOCK_KEY_PREFIX) {
            return Err(CommandFailure::InvalidLock {
                key: key.to_owned(),
                reason: format!("lock keys start with {LOCK_KEY_PREFIX:?}"),
            });
        }
        match value {
            None => Ok(LockState::default()),
            Some(bytes) => LockState::decode(bytes).ok_or_else(|| CommandFailure::InvalidLock {
                key: key.to_owned(),
                reason: "the key does not hold lock state".into(),
            }),
        }
    }

    // Decides a lease operation at the entry's time. The lock's own clock is the larger of the
    // entry's stamp and the last stamp that changed the lock, so expiry never moves backwards even
    // when stamps come from several proposers' clocks (simple majority).
    fn plan_lock(
        context: &ApplyContext,
        lock: &LockCommand,
        state: LockState,
    ) -> Result<LockState, CommandFailure> {
        let now_ms = context.timestamp_ms.max(state.observed_at_ms);
        let invalid =
            |reason: &str| CommandFailure::InvalidLock { key: lock.key().to_owned(), reason: reason.into() };
        let check_ttl = |ttl_ms: u64| {
            if ttl_ms == 0 || ttl_ms > LockCommand::TTL_MS_MAX {
                Err(invalid(&format!("ttl_ms {ttl_ms} is outside 1..={}", LockCommand::TTL_MS_MAX)))
            } else {
                Ok(())
            }
        };
        if lock.holder().is_empty() {
            return Err(invalid("the holder is empty"));
        }
        match lock {
            LockCommand::Acquire { key, holder, ttl_ms } => {
                check_ttl(*ttl_ms)?;
                if let Some(current) = state.holder_at(now_ms) {
                    return Err(CommandFailure::LockHeld {
                        key: key.clone(),
                        holder: current.to_owned(),
                        token: state.token,
                        granted_at_ms: state.granted_at_ms,
                        expires_at_ms: state.expires_at_ms,
                        decided_at_ms: now_ms,
                    });
                }
                let token = state.token.checked_add(1).ok_or_else(|| invalid("fencing tokens exhausted"))?;
                Ok(LockState {
                    holder: Some(holder.clone()),
                    token,
                    granted_at_ms: now_ms,
                    expires_at_ms: now_ms.saturating_add(*ttl_ms),
                    observed_at_ms: now_ms,
                })
            }
            LockCommand::Renew { key, holder, token, ttl_ms } => {
                check_ttl(*ttl_ms)?;
                if state.token != *token || state.holder_at(now_ms) != Some(holder.as_str()) {
                    return Err(CommandFailure::LeaseLost {
                        key: key.clone(),
                        token: *token,
                        current: state,
                    });
                }
                Ok(LockState {
                    expires_at_ms: now_ms.saturating_add(*ttl_ms),
                    observed_at_ms: now_ms,
                    ..state
                })
            }
            LockCommand::Release { key, holder, token } => {
                // An expired lease that nobody replaced may still be released by its holder: the
                // result (unlocked, same token) is the same either way.
                if state.token != *token || state.holder.as_deref() != Some(holder.as_str()) {
                    return Err(CommandFailure::LeaseLost {
                        key: key.clone(),
                        token: *token,
                        current: state,
                    });
                }
                Ok(LockState {
                    holder: None,
                    expires_at_ms: state.expires_at_ms.min(now_ms),
                    observed_at_ms: now_ms,
                    ..state
                })
            }
        }
    }
}

impl KvStateMachine {
    // One command outside a batch (nearly every applied entry): the same outcome as a batch of
    // one, without the staged view, and the key copied only when it is new.
    fn apply_single(&mut self, context: &ApplyContext, command: &Command) -> CommandResult {
        if let Command::Put { key, value } = command {
            // The most common command: `plan` would only check that the key is not a lock's,
            // so check that here and find the slot once instead of twice.
            if !key.starts_with(LOCK_KEY_PREFIX) {
                if let Some(slot) = self.slots.get_mut(key.as_str()) {
                    slot.version += 1;
                    let old_value = slot.value.replace(value.clone());
                    let change = KeyChange {
                        key: key.clone(),
                        old_value,
                        new_value: Some(value.clone()),
                        version: slot.version,
                    };
                    return Ok(CommandOutput { changes: vec![change], ..CommandOutput::default() });
                }
            }
        }
        let (new_value, counter) = self.plan(context, command, &BTreeMap::new())?;
        let key = command.key();
        let change = match self.slots.get_mut(key) {
            Some(slot) => {
                slot.version += 1;
                let old_value = std::mem::replace(&mut slot.value, new_value.clone());
                KeyChange { key: key.to_owned(), old_value, new_value, version: slot.version }
            }
            None => {
                let change = KeyChange { key: key.to_owned(), old_value: None, new_value, version: 1 };
                self.slots.insert(
                    key.to_owned(),
                    Slot { value: change.new_value.clone(), version: change.version },
                );
                change
            }
        };
        Ok(CommandOutput { changes: vec![change], counter, ..CommandOutput::default() })
    }
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, context: &ApplyContext, command: &Command) -> CommandResult {
        // Plan every command against a staged view first and commit only if all succeed: that is
        // what makes a batch all-or-nothing.
        let is_batch = matches!(command, Command::Batch(_));
        if !is_batch {
            return self.apply_single(context, command);
        }
        let commands: &[Command] = match command {
            Command::Batch(commands) => commands,
            _ => std::slice::from_ref(command),
        };
        let mut staged: BTreeMap<&str, Slot> = BTreeMap::new();
        let mut output = CommandOutput::default();
        for (position, command) in commands.iter().enumerate() {
            let key = command.key();
            let before =
                staged.get(key).cloned().unwrap_or_else(|| self.slots.get(key).cloned().unwrap_or_default());
            let (new_value, counter) = self.plan(context, command, &staged).map_err(|failure| {
                if is_batch {
                    CommandFailure::BatchAborted { position, reason: Box::new(failure) }
                } else {
                    failure
                }
            })?;
            let version = before.version + 1;
            output.changes.push(KeyChange {
                key: key.to_owned(),
                old_value: before.value,
                new_value: new_value.clone(),
                version,
            });
            if counter.is_some() {
                output.counter = counter;
            }
            staged.insert(key, Slot { value: new_value, version });
        }
        for (key, slot) in staged {
            self.slots.insert(key.to_owned(), slot);
        }
        Ok(output)
    }

    fn version(&self, key: &str) -> Version {
        self.slots.get(key).map_or(0, |slot| slot.version)
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        self.slots.get(key).and_then(|slot| slot.value.clone())
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(&self.slots).unwrap_or_default())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateMachineError> {
        let (slots, rest) = postcard::take_from_bytes::<BTreeMap<String, Slot>>(snapshot)
            .map_err(|error| StateMachineError::CorruptSnapshot(error.to_string()))?;
        if !rest.is_empty() {
            return Err(StateMachineError::CorruptSnapshot(format!("{} trailing bytes", rest.len())));
        }
        self.slots = slots;
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ClientRecord {
    results: SequenceResults,
    // Results for sequences at or below this were forgotten: a retry of one must not apply again.
    forgotten_through: u64,
    // The highest acknowledgement seen (`ClientSession::answered_below`): results below it were
    // dropped, and their places in the retention queue are empty.
    answered_below: u64,
    // Leader timestamp (ms) of the last command of this client applied: the record expires
    // `SessionLimits::expiry_ms` after it.
    last_active_ms: u64,
}

/// A retained result's place in the eviction order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Retained {
    index: u64,
    client: u64,
    sequence: u64,
}

/// One client's stored results, sorted by sequence. A client's sequences arrive almost always in
/// increasing order and the oldest is evicted first, so a deque sorted by sequence inserts at the
/// back and removes at the front — far cheaper per applied entry than a tree map. Encoded exactly
/// like a `BTreeMap<u64, CommandResult>` (snapshots do not change).
#[derive(Clone, Debug, Default)]
struct SequenceResults(VecDeque<(u64, CommandResult)>);

impl SequenceResults {
    /// `Ok(position)` of `sequence`, or `Err(position)` where it would be inserted.
    fn search(&self, sequence: u64) -> Result<usize, usize> {
        match self.0.back() {
            // The common case: a new sequence above every stored one.
            Some((last, _)) if *last < sequence => Err(self.0.len()),
            None => Err(0),
            // Otherwise it is usually just below the newest ones (proposals in flight together
            // apply a little out of sequence order): search back from the end (doubling steps,
            // then halving) instead of across the whole table, which is large.
            Some(_) => {
                let length = self.0.len();
                let mut start = length - 1;
                let mut step = 1;
                while start > 0 && self.0[start].0 > sequence {
                    start = start.saturating_sub(step);
                    step *= 2;
                }
                // Every position before `start` holds a sequence of at most `self.0[start]`, which
                // is at most `sequence`: the answer is at or after `start`.
                let (mut low, mut high) = (start, length);
                while low < high {
                    let middle = low + (high - low) / 2;
                    match self.0[middle].0.cmp(&sequence) {
                        std::cmp::Ordering::Less => low = middle + 1,
                        std::cmp::Ordering::Equal => return Ok(middle),
                        std::cmp::Ordering::Greater => high = middle,
                    }
                }
                Err(low)
            }
        }
    }

    fn remove(&mut self, sequence: u64) {
        // Eviction follows apply order, which is sequence order give or take the proposals in
        // flight together, so the result to drop sits at or near the front: search from there
        // (doubling steps, then halving) instead of across the whole table, which is large.
        let length = self.0.len();
        let mut end = 1.min(length);
        while end < length && self.0[end - 1].0 < sequence {
            end = (end * 2).min(length);
        }
        // Every position at or after `end` holds a sequence of at least `self.0[end - 1]`, which
        // is at least `sequence`: if it is stored, it is before `end`.
        let (mut low, mut high) = (0, end);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.0[middle].0 < sequence {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        if self.0.get(low).is_some_and(|(stored, _)| *stored == sequence) {
            self.0.remove(low);
        }
    }
}

impl Serialize for SequenceResults {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(sequence, result)| (sequence, result)))
    }
}

impl<'de> Deserialize<'de> for SequenceResults {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<u64, CommandResult>::deserialize(deserializer)?;
        Ok(SequenceResults(map.into_iter().collect()))
    }
}

/// A state machine plus the exactly-once session table (Raft thesis §6.3).
///
/// A command that carries a [`ClientSession`] is applied once; a retry with the same session gets
/// the first result back. The table keeps at most `results_max` results; beyond it the oldest
/// result is forgotten, and a retry of a forgotten one fails with `SessionExpired` rather than
/// applying twice.
pub struct Replica {
    machine: Box<dyn StateMachine>,
    /// Looked up twice per applied entry: a fast keyed hash (`U64Hashing`). Snapshots sort it.
    clients: HashMap<u64, ClientRecord, U64Hashing>,
    // Apply order of retained results, oldest first, for deterministic eviction.
    retention: VecDeque<Retained>,
    results_max: usize,
    clients_max: usize,
    expiry_ms: u64,
    /// The next multiple of the sweep interval above `last_timestamp_ms`: idle clients are swept
    /// when leader time reaches it. A function of `last_timestamp_ms`, so not in snapshots.
    next_sweep_ms: u64,
    /// Clients forgotten by expiry since this replica was built (not in snapshots).
    clients_expired: u64,
    applied: LogIndex,
    applied_term: Term,
    last_timestamp_ms: u64,
    /// Size of the last snapshot, to size the next one's buffer.
    last_snapshot_bytes: std::cell::Cell<usize>,
}

/// The form of a result kept in the session table. A failure nested deeper than the codec allows
/// (only a custom state machine can build one) is kept flattened to its message, so the table — and
/// every snapshot of it — always encodes; the same on every replica, since it depends only on the
/// result.
fn storable(result: &CommandResult) -> CommandResult {
    match result {
        Err(failure) if too_deep_to_store(failure) => Err(CommandFailure::Unsupported(failure.to_string())),
        other => other.clone(),
    }
}

/// [`storable`] for a result nobody else needs: moved, not copied.
fn into_storable(result: CommandResult) -> CommandResult {
    match result {
        Err(failure) if too_deep_to_store(&failure) => Err(CommandFailure::Unsupported(failure.to_string())),
        other => other,
    }
}

fn too_deep_to_store(failure: &CommandFailure) -> bool {
    fn depth(failure: &CommandFailure) -> usize {
        match failure {
            CommandFailure::BatchAborted { reason, .. } => 1 + depth(reason),
            _ => 1,
        }
    }
    depth(failure) >= Command::NESTING_MAX
}

/// A postcard output buffer made with a capacity (postcard's own vector flavor starts empty).
struct SizedBuffer(Vec<u8>);

impl postcard::ser_flavors::Flavor for SizedBuffer {
    type Output = Vec<u8>;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// [`ReplicaSnapshot`] borrowed from the replica: encodes to the same bytes (serde encodes a
/// reference as what it refers to).
#[derive(Serialize)]
struct ReplicaSnapshotRef<'a> {
    clients: BTreeMap<u64, &'a ClientRecord>,
    retention: &'a VecDeque<Retained>,
    applied: LogIndex,
    applied_term: Term,
    last_timestamp_ms: u64,
    machine: Bytes,
}

#[derive(Serialize, Deserialize)]
struct ReplicaSnapshot {
    clients: BTreeMap<u64, ClientRecord>,
    retention: VecDeque<Retained>,
    applied: LogIndex,
    applied_term: Term,
    last_timestamp_ms: u64,
    machine: Bytes,
}

/// The retention queue's front is swept of acknowledged results at every index that is a multiple
/// of this (and before every eviction): at most this many acknowledged places wait in it between
/// sweeps.
const RETENTION_SWEEP_EVERY: u64 = 32;

/// Default of [`Replica::with_client_limits`]'s `clients_max` (`Config::max_client_records`).
pub const DEFAULT_CLIENTS_MAX: usize = 100_000;
/// Default of [`Replica::with_client_limits`]'s `expiry_ms` (`Config::client_session_expiry`): one hour.
pub const DEFAULT_SESSION_EXPIRY_MS: u64 = 60 * 60 * 1000;

impl Replica {
    /// Wraps a state machine; `results_max` bounds the results the session table keeps
    /// (`Config::max_client_sessions`). Client records are bounded by the defaults
    /// ([`DEFAULT_CLIENTS_MAX`], [`DEFAULT_SESSION_EXPIRY_MS`]); see [`Replica::with_client_limits`].
    pub fn new(machine: Box<dyn StateMachine>, results_max: usize) -> Self {
        Replica {
            machine,
            clients: HashMap::default(),
            retention: VecDeque::new(),
            results_max: results_max.max(1),
            clients_max: DEFAULT_CLIENTS_MAX,
            expiry_ms: DEFAULT_SESSION_EXPIRY_MS,
            next_sweep_ms: 0,
            clients_expired: 0,
            applied: LogIndex::ZERO,
            applied_term: Term(0),
            last_timestamp_ms: 0,
            last_snapshot_bytes: std::cell::Cell::new(0),
        }
    }

    /// A replica of the key-value machine.
    pub fn key_value(results_max: usize) -> Self {
        Self::new(Box::new(KvStateMachine::new()), results_max)
    }

    /// A replica of `machine` with the session table bounded as `config` says
    /// (`max_client_sessions`, `max_client_records`, `client_session_expiry`).
    pub fn with_config(machine: Box<dyn StateMachine>, config: &crate::config::Config) -> Self {
        let expiry_ms = u64::try_from(config.client_session_expiry.as_millis()).unwrap_or(u64::MAX);
        Self::new(machine, config.max_client_sessions as usize)
            .with_client_limits(config.max_client_records as usize, expiry_ms)
    }

    /// Bounds the client records of the session table (Raft thesis §6.3, session expiry):
    /// - a client none of whose commands was applied for `expiry_ms` of leader time (the entries'
    ///   timestamps, so every replica forgets it at the same entry) is forgotten with its results;
    /// - a command of a client the table does not know, while it holds `clients_max` records, is
    ///   refused with [`CommandFailure::SessionTableFull`] and not applied. Refusing, not evicting
    ///   the least recently active client, keeps exactly-once for every client that is active.
    ///
    /// Forgetting an idle client is safe while `expiry_ms` is far longer than a proposal can be
    /// retried (`Config::timeout`) plus the leaders' clock skew: no copy of its commands can still
    /// be committed. Its next command starts a fresh record. Every replica must use the same
    /// limits (like `results_max`), or their session tables diverge.
    pub fn with_client_limits(mut self, clients_max: usize, expiry_ms: u64) -> Self {
        self.clients_max = clients_max.max(1);
        self.expiry_ms = expiry_ms.max(1);
        self.next_sweep_ms = self.sweep_after(self.last_timestamp_ms);
        self
    }

    /// How many clients the session table remembers (at most `clients_max`).
    pub fn session_clients(&self) -> usize {
        self.clients.len()
    }

    /// Clients forgotten by expiry since this replica was built. Not part of snapshots: a restarted
    /// node counts again the expiries of the entries it replays.
    pub fn clients_expired(&self) -> u64 {
        self.clients_expired
    }

    /// Forgets the clients idle for `expiry_ms` as of `now_ms`, and their results' places in the
    /// retention queue. Runs when leader time crosses a multiple of the sweep interval, so it
    /// costs nothing per entry and happens at the same entry on every replica.
    fn expire_clients(&mut self, now_ms: u64) {
        let Some(horizon) = now_ms.checked_sub(self.expiry_ms) else { return };
        let before = self.clients.len();
        self.clients.retain(|_, record| record.last_active_ms > horizon);
        if self.clients.len() != before {
            self.clients_expired += (before - self.clients.len()) as u64;
            let clients = &self.clients;
            self.retention.retain(|place| clients.contains_key(&place.client));
        }
    }

    /// Leader time between two sweeps for idle clients: a sixteenth of the expiry (so a client is
    /// forgotten at most 1/16 late), at least one second.
    fn sweep_interval_ms(&self) -> u64 {
        (self.expiry_ms / 16).max(1000)
    }

    /// The first multiple of the sweep interval above `timestamp_ms`.
    fn sweep_after(&self, timestamp_ms: u64) -> u64 {
        let interval = self.sweep_interval_ms();
        (timestamp_ms / interval).saturating_add(1).saturating_mul(interval)
    }

    /// Applies a command at `context.index`, which must follow the last applied index.
    pub fn apply(
        &mut self,
        context: &ApplyContext,
        session: Option<ClientSession>,
        command: &Command,
    ) -> CommandResult {
        match self.apply_answering(context, session, command, true) {
            Some(result) => result,
            None => unreachable!("an answered apply always returns its result"),
        }
    }

    /// [`Replica::apply`] for a replica nobody waits on for this entry's result (a follower, or a
    /// node without the proposal's caller): the same state, session table and retention, but the
    /// result moves into the session table instead of being copied out of it. This runs on every
    /// replica but one for every entry, and the copy allocates (each changed key, the changes'
    /// vector) only to be dropped.
    pub fn apply_unanswered(
        &mut self,
        context: &ApplyContext,
        session: Option<ClientSession>,
        command: &Command,
    ) {
        self.apply_answering(context, session, command, false);
    }

    /// Applies; returns the result if `answered`, `None` otherwise.
    fn apply_answering(
        &mut self,
        context: &ApplyContext,
        session: Option<ClientSession>,
        command: &Command,
        answered: bool,
    ) -> Option<CommandResult> {
        assert!(
            context.index > self.applied,
            "entries are applied in order: {} after {}",
            context.index,
            self.applied
        );
        self.applied = context.index;
        self.applied_term = context.term;
        self.last_timestamp_ms = self.last_timestamp_ms.max(context.timestamp_ms);
        if self.last_timestamp_ms >= self.next_sweep_ms {
            self.expire_clients(self.last_timestamp_ms);
            self.next_sweep_ms = self.sweep_after(self.last_timestamp_ms);
        }
        let Some(session) = session else {
            let result = self.machine.apply(context, command);
            return answered.then_some(result);
        };
        let full = self.clients.len() >= self.clients_max;
        // One lookup in each table finds both a stored result and the slot for a new one (this
        // runs for every applied entry).
        let (record, known) = match self.clients.entry(session.client) {
            hash_map::Entry::Occupied(known) => (known.into_mut(), true),
            hash_map::Entry::Vacant(_) if full => {
                return Some(Err(CommandFailure::SessionTableFull { limit: self.clients_max as u64 }));
            }
            hash_map::Entry::Vacant(new) => (new.insert(ClientRecord::default()), false),
        };
        record.last_active_ms = self.last_timestamp_ms;
        let answered_below = session.answered_below.min(session.sequence);
        if answered_below > record.answered_below {
            record.answered_below = answered_below;
            record.forgotten_through = record.forgotten_through.max(answered_below - 1);
            while record.results.0.front().is_some_and(|(sequence, _)| *sequence < answered_below) {
                record.results.0.pop_front();
            }
        }
        let slot = match record.results.search(session.sequence) {
            Ok(stored) => return answered.then(|| record.results.0[stored].1.clone()),
            Err(slot) => slot,
        };
        if known && session.sequence <= record.forgotten_through {
            return Some(Err(CommandFailure::SessionExpired));
        }
        let result = self.machine.apply(context, command);
        let (stored, result) = if answered {
            ((session.sequence, storable(&result)), Some(result))
        } else {
            ((session.sequence, into_storable(result)), None)
        };
        if slot == record.results.0.len() {
            record.results.0.push_back(stored);
        } else {
            record.results.0.insert(slot, stored);
        }
        // Indexes only grow, so the queue stays in apply order without sorting.
        self.retention.push_back(Retained {
            index: context.index.0,
            client: session.client,
            sequence: session.sequence,
        });
        // Places whose results acknowledgements dropped leave from the front (they mostly arrive
        // there in order: a client acknowledges its oldest answers first), so with acknowledging
        // clients the queue holds about what is in flight instead of `results_max` entries. Done
        // every `RETENTION_SWEEP_EVERY`th index rather than every entry (each check is a lookup in
        // the client table, and the one that stops the sweep found nothing), and always before an
        // eviction, so evictions see the same queue as with a sweep per entry. The schedule
        // depends only on the index, so every replica (one restored from a snapshot too) sweeps at
        // the same entries and holds the same queue.
        let sweep = context.index.0 % RETENTION_SWEEP_EVERY == 0 || self.retention.len() > self.results_max;
        while let Some(oldest) = self.retention.front().filter(|_| sweep) {
            let acknowledged = self
                .clients
                .get(&oldest.client)
                .map_or(true, |record| oldest.sequence < record.answered_below);
            if !acknowledged {
                break;
            }
            self.retention.pop_front();
        }
        while self.retention.len() > self.results_max {
            let Some(oldest) = self.retention.pop_front() else { break };
            if let Some(record) = self.clients.get_mut(&oldest.client) {
                record.results.remove(oldest.sequence);
                record.forgotten_through = record.forgotten_through.max(oldest.sequence);
            }
        }
        result
    }

    /// Marks `index` applied without a command (no-ops, membership entries).
    pub fn skip(&mut self, index: LogIndex, term: Term) {
        assert!(index > self.applied, "entries are applied in order: {index} after {}", self.applied);
        self.applied = index;
        self.applied_term = term;
    }

    /// The last applied index.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// The term of the last applied entry.
    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    /// The latest leader timestamp applied (ms since the Unix epoch).
    pub fn last_timestamp_ms(&self) -> u64 {
        self.last_timestamp_ms
    }

    /// How many results the session table holds (at most `results_max`).
    pub fn session_results(&self) -> usize {
        self.clients.values().map(|record| record.results.0.len()).sum()
    }

    /// The wrapped state machine.
    pub fn machine(&self) -> &dyn StateMachine {
        &*self.machine
    }

    /// The whole replica (sessions included) as deterministic bytes.
    pub fn snapshot(&self) -> Bytes {
        // Encoded from borrows (the session table holds up to `results_max` results: copying it
        // first would double the work), into a buffer sized like the last snapshot so that it
        // does not grow by doubling.
        let snapshot = ReplicaSnapshotRef {
            clients: self.clients.iter().map(|(client, record)| (*client, record)).collect(),
            retention: &self.retention,
            applied: self.applied,
            applied_term: self.applied_term,
            last_timestamp_ms: self.last_timestamp_ms,
            machine: self.machine.snapshot(),
        };
        let hint = self.last_snapshot_bytes.get();
        let buffer = SizedBuffer(Vec::with_capacity(hint + hint / 8));
        let bytes = postcard::serialize_with_flavor(&snapshot, buffer).unwrap_or_default();
        self.last_snapshot_bytes.set(bytes.len());
        Bytes::from(bytes)
    }

    /// Replaces the replica's state with a snapshot's.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StateMachineError> {
        let (snapshot, rest) = postcard::take_from_bytes::<ReplicaSnapshot>(bytes)
            .map_err(|error| StateMachineError::CorruptSnapshot(error.to_string()))?;
        if !rest.is_empty() {
            return Err(StateMachineError::CorruptSnapshot(format!("{} trailing bytes", rest.len())));
        }
        self.machine.restore(&snapshot.machine)?;
        self.clients = snapshot.clients.into_iter().collect();
        self.retention = snapshot.retention;
        self.applied = snapshot.applied;
        self.applied_term = snapshot.applied_term;
        self.last_timestamp_ms = snapshot.last_timestamp_ms;
        self.next_sweep_ms = self.sweep_after(self.last_timestamp_ms);
        Ok(())
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("applied", &self.applied)
            .field("applied_term", &self.applied_term)
            .field("sessions", &self.retention.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(pairs: &[(u64, i64)]) -> Vec<(u64, CommandResult)> {
        pairs
            .iter()
            .map(|(sequence, counter)| {
                (*sequence, Ok(CommandOutput { counter: Some(*counter), ..CommandOutput::default() }))
            })
            .collect()
    }

    #[test]
    fn sequence_results_encode_exactly_like_the_tree_map_they_replace() {
        let pairs = results(&[(1, 10), (4, 40), (9, 90)]);
        let deque = SequenceResults(pairs.iter().cloned().collect());
        let map: BTreeMap<u64, CommandResult> = pairs.into_iter().collect();
        let encoded = postcard::to_allocvec(&deque).expect("encodes");
        assert_eq!(encoded, postcard::to_allocvec(&map).expect("encodes"));
        let decoded: SequenceResults = postcard::from_bytes(&encoded).expect("decodes");
        assert_eq!(decoded.0, deque.0);
    }

    #[test]
    fn a_single_command_changes_state_exactly_as_a_batch_of_one_does() {
        // `apply` takes a shorter path outside batches; its outputs and states must be the
        // batch path's (failures differ only by the batch's wrapping).
        let lock_key = format!("{LOCK_KEY_PREFIX}l");
        let put = |key: &str, value: &'static [u8]| Command::Put {
            key: key.into(),
            value: Bytes::from_static(value),
        };
        let commands = vec![
            put("a", b"1"),
            put("a", b"2"),
            Command::Add { key: "n".into(), delta: 5 },
            Command::Add { key: "n".into(), delta: -2 },
            Command::Add { key: "a".into(), delta: 1 },
            Command::CompareAndSwap { key: "a".into(), expected: Expectation::Version(2), new: None },
            Command::CompareAndSwap { key: "a".into(), expected: Expectation::Version(9), new: None },
            put("a", b"3"),
            Command::Delete { key: "b".into() },
            put(&lock_key, b"x"),
            Command::Lock(LockCommand::Acquire { key: lock_key.clone(), holder: "h".into(), ttl_ms: 10 }),
            Command::Lock(LockCommand::Acquire { key: lock_key.clone(), holder: "g".into(), ttl_ms: 10 }),
        ];
        let (mut single, mut batched) = (KvStateMachine::new(), KvStateMachine::new());
        for (position, command) in commands.into_iter().enumerate() {
            let context =
                ApplyContext { index: LogIndex(position as u64 + 1), term: Term(1), timestamp_ms: 100 };
            let alone = single.apply(&context, &command);
            let in_batch = batched.apply(&context, &Command::Batch(vec![command.clone()]));
            match (alone, in_batch) {
                (Ok(alone), Ok(in_batch)) => assert_eq!(alone, in_batch, "{command:?}"),
                (Err(alone), Err(CommandFailure::BatchAborted { position: 0, reason })) => {
                    assert_eq!(alone, *reason, "{command:?}")
                }
                (alone, in_batch) => panic!("{command:?}: alone {alone:?}, in a batch {in_batch:?}"),
            }
            assert_eq!(single, batched, "after {command:?}");
        }
    }

    #[test]
    fn sequence_results_remove_finds_every_sequence_wherever_it_sits() {
        // Sequences stored out of order, then removed in another order (near the front, deep
        // inside, at the back, absent): the table always matches a tree map given the same calls.
        let sequences: Vec<u64> = (0..200u64).map(|i| (i * 37) % 211 + 1).collect();
        let mut table = SequenceResults::default();
        let mut model = BTreeMap::new();
        for &sequence in &sequences {
            let Err(slot) = table.search(sequence) else { panic!("{sequence} is new") };
            table.0.insert(slot, results(&[(sequence, 0)]).remove(0));
            model.insert(sequence, ());
        }
        let removals = sequences.iter().rev().step_by(3).chain(sequences.iter()).copied().chain([0, 500]);
        for sequence in removals {
            table.remove(sequence);
            model.remove(&sequence);
            let stored: Vec<u64> = table.0.iter().map(|(sequence, _)| *sequence).collect();
            assert_eq!(stored, model.keys().copied().collect::<Vec<_>>(), "after removing {sequence}");
        }
        assert!(table.0.is_empty());
    }

    #[test]
    fn a_snapshot_encoded_from_borrows_is_the_owned_encoding_and_sizes_the_next_buffer() {
        let mut replica = Replica::key_value(50);
        for index in 1..=120u64 {
            let context = ApplyContext { index: LogIndex(index), term: Term(1), timestamp_ms: index };
            let session = ClientSession::new(index % 3, index);
            let command = Command::Add { key: format!("k{}", index % 7), delta: 1 };
            let _ = replica.apply(&context, Some(session), &command);
        }
        let bytes = replica.snapshot();
        assert_eq!(replica.last_snapshot_bytes.get(), bytes.len());
        let (owned, rest) = postcard::take_from_bytes::<ReplicaSnapshot>(&bytes).expect("decodes");
        assert!(rest.is_empty());
        assert_eq!(postcard::to_allocvec(&owned).expect("encodes"), bytes.to_vec());
        let mut restored = Replica::key_value(50);
        restored.restore(&bytes).expect("restores");
        assert_eq!(restored.snapshot(), bytes, "a restored replica snapshots to the same bytes");
    }

    #[test]
    fn sequence_results_search_agrees_with_a_binary_search_everywhere() {
        // Stored sequences with gaps; every sequence from below the first to above the last,
        // wherever it would sit (front, deep inside, near the back), is found or placed exactly
        // as a plain binary search over the whole table would.
        let mut table = SequenceResults::default();
        for sequence in (0..300u64).map(|i| i * 3 + 10) {
            table.0.push_back(results(&[(sequence, 0)]).remove(0));
        }
        for sequence in 0..1_000u64 {
            let expected = table.0.binary_search_by_key(&sequence, |(stored, _)| *stored);
            assert_eq!(table.search(sequence), expected, "sequence {sequence}");
        }
    }

    #[test]
    fn sequence_results_stay_sorted_when_sequences_arrive_out_of_order() {
        let mut table = SequenceResults::default();
        for (sequence, counter) in [(5, 50), (2, 20), (7, 70), (3, 30)] {
            let Err(slot) = table.search(sequence) else { panic!("{sequence} is new") };
            table.0.insert(slot, results(&[(sequence, counter)]).remove(0));
        }
        let order: Vec<u64> = table.0.iter().map(|(sequence, _)| *sequence).collect();
        assert_eq!(order, [2, 3, 5, 7]);
        assert_eq!(table.search(5), Ok(2));
        assert_eq!(table.search(4), Err(2));
        table.remove(3);
        table.remove(6); // absent: nothing happens
        let order: Vec<u64> = table.0.iter().map(|(sequence, _)| *sequence).collect();
        assert_eq!(order, [2, 5, 7]);
    }
}
