//! Leases and locks with fencing tokens, decided by the replicated state machine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_core::command::{lock_key, Command, CommandFailure, LockCommand, LockState};
use concord_core::config::MechanismKind;
use concord_core::error::ProposalError;
use concord_core::event::ProposalResult;
use concord_core::typed::encode_value;
use concord_runtime::Consensus;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::error::PatternError;

/// Fencing token of a lease: strictly increases with every grant of one resource.
pub type FencingToken = u64;

/// Default margin a holder subtracts from its lease for clock drift and skew (see the crate doc).
pub const CLOCK_SKEW_MARGIN_DEFAULT: Duration = Duration::from_millis(50);

/// Grants, renews and releases leases through one node.
#[derive(Clone)]
pub struct LockClient {
    consensus: Consensus,
    owner: String,
    next_attempt: Arc<AtomicU64>,
    clock_skew_margin: Duration,
}

impl std::fmt::Debug for LockClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockClient").field("owner", &self.owner).finish_non_exhaustive()
    }
}

fn process_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Only makes holder names unique between processes; never used in a decision.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x51ED);
    hasher.finish()
}

impl LockClient {
    /// A client on `consensus`, with holder names `<node>/<random>/<n>`: unique per acquire call,
    /// so a retried acquire recognises its own grant and two clients never share a lease.
    pub fn new(consensus: Consensus) -> Self {
        let owner = format!("{}/{:016x}", consensus.node_id(), process_nonce());
        Self::with_owner(consensus, owner)
    }

    /// A client whose holder names start with `owner` (must be unique in the cluster).
    pub fn with_owner(consensus: Consensus, owner: impl Into<String>) -> Self {
        LockClient {
            consensus,
            owner: owner.into(),
            next_attempt: Arc::new(AtomicU64::new(1)),
            clock_skew_margin: CLOCK_SKEW_MARGIN_DEFAULT,
        }
    }

    /// The margin subtracted from every lease's local validity (see the crate doc's clock section).
    pub fn with_clock_skew_margin(mut self, margin: Duration) -> Self {
        self.clock_skew_margin = margin;
        self
    }

    /// The lock's replicated state as this node has applied it.
    pub fn state(&self, resource: &str) -> Option<LockState> {
        self.consensus.get_bytes(&lock_key(resource)).and_then(|bytes| LockState::decode(&bytes))
    }

    fn next_holder(&self) -> String {
        format!("{}/{}", self.owner, self.next_attempt.fetch_add(1, Ordering::Relaxed))
    }

    /// Takes the lock if it is free (or its lease expired, by log time); fails at once with
    /// `LockHeld` otherwise.
    pub async fn try_acquire(&self, resource: &str, ttl: Duration) -> Result<Lease, PatternError> {
        let holder = self.next_holder();
        let deadline = Instant::now() + self.consensus.config().timeout * 2;
        match self.acquire_as(resource, &holder, ttl, deadline, &mut None).await? {
            Attempt::Granted(lease) => Ok(lease),
            Attempt::Held { holder, token, expires_at_ms, .. } => {
                Err(PatternError::LockHeld { resource: resource.to_owned(), holder, token, expires_at_ms })
            }
        }
    }

    /// Takes the lock, waiting up to `wait_max` for it to be released or to expire. Waiting wakes on
    /// every change of the lock and when the holder's lease runs out; the decision is always the
    /// state machine's.
    pub async fn acquire(
        &self,
        resource: &str,
        ttl: Duration,
        wait_max: Duration,
    ) -> Result<Lease, PatternError> {
        let holder = self.next_holder();
        let started = Instant::now();
        let deadline = started + wait_max;
        let mut changes = self.consensus.subscribe(&lock_key(resource));
        let retry_pause = self.consensus.config().heartbeat_interval;
        let mut in_doubt_since = None;
        loop {
            let attempt_deadline = deadline.max(Instant::now() + self.consensus.config().timeout);
            let wake =
                match self.acquire_as(resource, &holder, ttl, attempt_deadline, &mut in_doubt_since).await {
                    Ok(Attempt::Granted(lease)) => return Ok(lease),
                    Ok(Attempt::Held { expires_at_ms, decided_at_ms, .. }) => {
                        // The holder's remaining lease, measured in the log's time at the refusal.
                        let remaining = Duration::from_millis(expires_at_ms.saturating_sub(decided_at_ms));
                        Instant::now() + remaining.min(wait_max) + Duration::from_millis(1)
                    }
                    Err(error @ PatternError::Consensus(ProposalError::NoQuorum { .. }))
                    | Err(error @ PatternError::Consensus(ProposalError::Timeout))
                    | Err(error @ PatternError::Consensus(ProposalError::LeadershipLost))
                    | Err(error @ PatternError::Consensus(ProposalError::Busy { .. })) => {
                        if Instant::now() >= deadline {
                            return Err(error);
                        }
                        Instant::now() + retry_pause
                    }
                    Err(error) => return Err(error),
                };
            if Instant::now() >= deadline {
                return Err(PatternError::AcquireTimeout {
                    resource: resource.to_owned(),
                    waited: Instant::now().saturating_duration_since(started),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake.min(deadline)) => {}
                _ = changes.next() => {}
            }
        }
    }

    async fn acquire_as(
        &self,
        resource: &str,
        holder: &str,
        ttl: Duration,
        deadline: Instant,
        in_doubt_since: &mut Option<Instant>,
    ) -> Result<Attempt, PatternError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let command = Command::Lock(LockCommand::acquire(resource, holder, ttl_ms));
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The earliest submission that may have been granted: the lease's stamp is no earlier.
            let submitted_since = *in_doubt_since.get_or_insert_with(Instant::now);
            let result = self.consensus.propose_command(command.clone()).await;
            let lease = |state: &LockState| Lease {
                shared: Arc::new(LeaseShared {
                    consensus: self.consensus.clone(),
                    resource: resource.to_owned(),
                    holder: holder.to_owned(),
                    token: state.token,
                    ttl,
                    clock_skew_margin: self.clock_skew_margin,
                    times: Mutex::new(LeaseTimes {
                        granted_at_ms: state.granted_at_ms,
                        expires_at_ms: state.expires_at_ms,
                        // The grant's stamp is no earlier than the submission (in a leader's clock
                        // that agrees with ours), so the lease ends no earlier than this.
                        local_deadline: submitted_since + ttl,
                    }),
                    ended: AtomicBool::new(false),
                }),
            };
            match decode_lock_result(&result) {
                Ok(state) => return Ok(Attempt::Granted(lease(&state))),
                Err(ProposalError::Command(CommandFailure::LockHeld {
                    holder: current,
                    token,
                    granted_at_ms,
                    expires_at_ms,
                    decided_at_ms,
                    ..
                })) => {
                    if current == holder {
                        // An earlier attempt of this call was granted (its answer was lost).
                        let state = LockState {
                            holder: Some(current),
                            token,
                            granted_at_ms,
                            expires_at_ms,
                            observed_at_ms: decided_at_ms,
                        };
                        return Ok(Attempt::Granted(lease(&state)));
                    }
                    // A definite refusal: no earlier attempt of this holder holds the lock now.
                    *in_doubt_since = None;
                    return Ok(Attempt::Held { holder: current, token, expires_at_ms, decided_at_ms });
                }
                Err(error) if error.outcome_unknown() && !matches!(error, ProposalError::Stopped) => {
                    if Instant::now() >= deadline {
                        return Err(error.into());
                    }
                    // Same holder name: if the lost attempt was granted, the retry finds it.
                    tokio::time::sleep(self.consensus.config().heartbeat_interval).await;
                }
                // Simple majority refuses a slot in which proposers collided; nothing was applied.
                Err(ProposalError::Rejected { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(crate::contention_backoff(&self.consensus, attempt)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// One acquire attempt's decision.
enum Attempt {
    Granted(Lease),
    Held { holder: String, token: FencingToken, expires_at_ms: u64, decided_at_ms: u64 },
}

fn decode_lock_result(result: &ProposalResult) -> Result<LockState, ProposalError> {
    if result.accepted {
        let change = result.output.as_ref().and_then(|output| output.changes.first());
        return change.and_then(|change| change.new_value.as_deref()).and_then(LockState::decode).ok_or_else(
            || ProposalError::Rejected { reason: "lock command applied without lock state".into() },
        );
    }
    Err(result.error.clone().unwrap_or(ProposalError::Rejected { reason: "lock command not applied".into() }))
}

#[derive(Clone, Copy, Debug)]
struct LeaseTimes {
    granted_at_ms: u64,
    expires_at_ms: u64,
    local_deadline: Instant,
}

struct LeaseShared {
    consensus: Consensus,
    resource: String,
    holder: String,
    token: FencingToken,
    ttl: Duration,
    clock_skew_margin: Duration,
    times: Mutex<LeaseTimes>,
    ended: AtomicBool,
}

/// A granted lease. Its [`token`](Self::token) fences every write made under it.
///
/// Dropping a lease does not release it (a drop cannot wait for consensus); it expires after its
/// TTL. Call [`release`](Self::release) to free it at once.
#[derive(Clone)]
pub struct Lease {
    shared: Arc<LeaseShared>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let times = *self.shared.times.lock();
        f.debug_struct("Lease")
            .field("resource", &self.shared.resource)
            .field("holder", &self.shared.holder)
            .field("token", &self.shared.token)
            .field("granted_at_ms", &times.granted_at_ms)
            .field("expires_at_ms", &times.expires_at_ms)
            .finish()
    }
}

impl Lease {
    /// The fencing token.
    pub fn token(&self) -> FencingToken {
        self.shared.token
    }

    /// The resource.
    pub fn resource(&self) -> &str {
        &self.shared.resource
    }

    /// The holder name the state machine knows this lease by.
    pub fn holder(&self) -> &str {
        &self.shared.holder
    }

    /// When the lease was granted, in log time (leader's ms since the Unix epoch).
    pub fn granted_at_ms(&self) -> u64 {
        self.shared.times.lock().granted_at_ms
    }

    /// When the lease ends unless renewed, in log time.
    pub fn expires_at_ms(&self) -> u64 {
        self.shared.times.lock().expires_at_ms
    }

    /// How long the holder may still act, by its own clock: the lease's TTL from the last
    /// submission that granted or renewed it, minus the clock-skew margin. Zero once it ended.
    pub fn remaining(&self) -> Duration {
        if self.shared.ended.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let deadline = self.shared.times.lock().local_deadline;
        deadline.saturating_duration_since(Instant::now()).saturating_sub(self.shared.clock_skew_margin)
    }

    /// Whether the holder may still act (see [`remaining`](Self::remaining)).
    pub fn is_valid(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// Extends the lease by its TTL from now (log time). Fails with `LeaseLost` if it expired or was
    /// released first — then another holder may already have the lock.
    pub async fn renew(&self) -> Result<(), PatternError> {
        let shared = &self.shared;
        let ttl_ms = u64::try_from(shared.ttl.as_millis()).unwrap_or(u64::MAX);
        let command =
            Command::Lock(LockCommand::renew(&shared.resource, shared.holder.clone(), shared.token, ttl_ms));
        let deadline = Instant::now() + shared.consensus.config().timeout * 2;
        loop {
            let submitted = Instant::now();
            let result = shared.consensus.propose_command(command.clone()).await;
            match decode_lock_result(&result) {
                Ok(state) => {
                    let mut times = shared.times.lock();
                    times.expires_at_ms = state.expires_at_ms;
                    times.local_deadline = times.local_deadline.max(submitted + shared.ttl);
                    return Ok(());
                }
                Err(ProposalError::Command(CommandFailure::LeaseLost { current, .. })) => {
                    shared.ended.store(true, Ordering::Release);
                    return Err(self.lost(Some(current)));
                }
                Err(error) if error.outcome_unknown() && !matches!(error, ProposalError::Stopped) => {
                    if Instant::now() >= deadline {
                        return Err(error.into());
                    }
                    tokio::time::sleep(shared.consensus.config().heartbeat_interval).await;
                }
                // Simple majority refuses a slot in which proposers collided; nothing was applied.
                Err(ProposalError::Rejected { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(crate::contention_backoff(&shared.consensus, 1)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Ends the lease; only its holder can. Returns the log time at which it ended. Releasing a
    /// lease that already expired and was not taken over succeeds; one that was superseded fails
    /// with `LeaseLost`.
    pub async fn release(self) -> Result<u64, PatternError> {
        let shared = &self.shared;
        let command =
            Command::Lock(LockCommand::release(&shared.resource, shared.holder.clone(), shared.token));
        let deadline = Instant::now() + shared.consensus.config().timeout * 2;
        loop {
            let result = shared.consensus.propose_command(command.clone()).await;
            match decode_lock_result(&result) {
                Ok(state) => {
                    shared.ended.store(true, Ordering::Release);
                    return Ok(state.expires_at_ms);
                }
                Err(ProposalError::Command(CommandFailure::LeaseLost { current, .. })) => {
                    shared.ended.store(true, Ordering::Release);
                    // A retry of a release whose first answer was lost finds it already released.
                    if current.token == shared.token && current.holder.is_none() {
                        return Ok(current.expires_at_ms);
                    }
                    return Err(self.lost(Some(current)));
                }
                Err(error) if error.outcome_unknown() && !matches!(error, ProposalError::Stopped) => {
                    if Instant::now() >= deadline {
                        return Err(error.into());
                    }
                    tokio::time::sleep(shared.consensus.config().heartbeat_interval).await;
                }
                // Simple majority refuses a slot in which proposers collided; nothing was applied.
                Err(ProposalError::Rejected { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(crate::contention_backoff(&shared.consensus, 1)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Writes `value` to `key` only if this lease is still the valid one when the write is applied
    /// (its token is the lock's current token and the lease has not expired by log time). Raft only:
    /// simple majority decides keys independently and cannot check one key against another.
    pub async fn fenced_put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64, PatternError> {
        fenced_put(&self.shared.consensus, &self.shared.resource, self.shared.token, key, value).await
    }

    /// Renews the lease in the background every third of its TTL until it is lost or the returned
    /// handle is dropped or stopped.
    pub fn keep_alive(&self) -> KeepAlive {
        let lease = self.clone();
        let lost = Arc::new(AtomicBool::new(false));
        let task_lost = lost.clone();
        let period = (self.shared.ttl / 3).max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if lease.shared.ended.load(Ordering::Acquire) {
                    break;
                }
                match lease.renew().await {
                    Ok(()) => {}
                    Err(PatternError::LeaseLost { .. }) => {
                        task_lost.store(true, Ordering::Release);
                        break;
                    }
                    // Outcome unknown or no quorum: try again next period; the lease stays valid
                    // only as long as `remaining` says.
                    Err(error) => tracing::debug!(%error, "lease renewal failed; retrying"),
                }
            }
        });
        KeepAlive { task, lost }
    }

    fn lost(&self, current: Option<LockState>) -> PatternError {
        PatternError::LeaseLost { resource: self.shared.resource.clone(), token: self.shared.token, current }
    }
}

/// A background renewal ([`Lease::keep_alive`]); stops when dropped.
#[derive(Debug)]
pub struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl KeepAlive {
    /// Whether a renewal found the lease lost (the task has then stopped).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Stops renewing.
    pub fn stop(self) {}
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes `value` to `key` only if `token` is the current, unexpired lease on `resource` when the
/// write is applied; returns the key's new version. A holder whose lease expired or was superseded
/// gets `LeaseLost`. Raft only.
pub async fn fenced_put<T: Serialize + ?Sized>(
    consensus: &Consensus,
    resource: &str,
    token: FencingToken,
    key: &str,
    value: &T,
) -> Result<u64, PatternError> {
    if consensus.config().mechanism == MechanismKind::SimpleMajority {
        return Err(PatternError::Unsupported {
            pattern: "fenced write",
            mechanism: "simple_majority",
            reason: "it checks the lock's key while writing another key; simple majority decides keys independently",
        });
    }
    let value: Bytes = encode_value(value)?;
    let command = Command::FencedPut { key: key.to_owned(), value, lock_key: lock_key(resource), token };
    let result = consensus.propose_command(command).await;
    if result.accepted {
        return Ok(result
            .output
            .and_then(|output| output.changes.first().map(|change| change.version))
            .unwrap_or(0));
    }
    match result.error {
        Some(ProposalError::Command(CommandFailure::LeaseLost { current, .. })) => {
            Err(PatternError::LeaseLost { resource: resource.to_owned(), token, current: Some(current) })
        }
        Some(error) => Err(error.into()),
        None => Err(ProposalError::Rejected { reason: "fenced write not applied".into() }.into()),
    }
}

/// Why a [`Fence`] refused a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FenceError {
    /// The token is older than one already seen: the writer's lease was superseded (caller's fault:
    /// a stale holder).
    #[error("token {token} on {resource:?} is older than {highest}, already seen")]
    Stale {
        /// The resource.
        resource: String,
        /// The refused token.
        token: FencingToken,
        /// The highest token seen.
        highest: FencingToken,
    },
    /// The fence tracks its maximum number of resources.
    #[error("fence is full: it tracks {limit} resources")]
    Full {
        /// The limit.
        limit: usize,
    },
}

/// The check a protected resource outside concord (a file store, a database) makes on every write:
/// refuse a token older than the highest it has seen for the resource. Deterministic, no I/O.
#[derive(Clone, Debug)]
pub struct Fence {
    highest: BTreeMap<String, FencingToken>,
    resources_max: usize,
}

impl Default for Fence {
    fn default() -> Self {
        Fence::new(Fence::RESOURCES_MAX_DEFAULT)
    }
}

impl Fence {
    /// Default bound on the resources one fence tracks.
    pub const RESOURCES_MAX_DEFAULT: usize = 4096;

    /// A fence tracking at most `resources_max` resources.
    pub fn new(resources_max: usize) -> Self {
        Fence { highest: BTreeMap::new(), resources_max: resources_max.max(1) }
    }

    /// Admits a write with `token` on `resource` (equal to the highest seen: the same holder
    /// writing again), remembering it; refuses older tokens.
    pub fn admit(&mut self, resource: &str, token: FencingToken) -> Result<(), FenceError> {
        let tracked = self.highest.len();
        match self.highest.get_mut(resource) {
            Some(highest) if token < *highest => {
                Err(FenceError::Stale { resource: resource.to_owned(), token, highest: *highest })
            }
            Some(highest) => {
                *highest = token;
                Ok(())
            }
            None if tracked >= self.resources_max => Err(FenceError::Full { limit: self.resources_max }),
            None => {
                self.highest.insert(resource.to_owned(), token);
                Ok(())
            }
        }
    }

    /// The highest token seen for `resource`.
    pub fn highest(&self, resource: &str) -> Option<FencingToken> {
        self.highest.get(resource).copied()
    }
}
