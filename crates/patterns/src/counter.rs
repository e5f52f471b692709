//! The lesson's exercise: a fault-tolerant distributed counter, applied exactly once.

use std::time::Duration;

use bytes::Bytes;
use concord_core::command::{Command, CommandFailure, Expectation};
use concord_core::config::MechanismKind;
use concord_core::error::ProposalError;
use concord_core::state_machine::KvStateMachine;
use concord_core::typed::{decode_value, encode_value};
use concord_runtime::Consensus;
use tokio::time::Instant;

use crate::error::PatternError;

/// Keys that start with this hold counter clients' sessions (`counter-session:<client>`).
pub const SESSION_KEY_PREFIX: &str = "counter-session:";

/// Sequence numbers a new handle skips past the last applied one, so that operations of an earlier
/// incarnation of the same client that are still undecided can never be taken for its own.
const INCARNATION_SEQUENCE_GAP: u64 = 1 << 32;

struct Session {
    // The session key's value as last known: the sequence of the last applied operation.
    last_applied: u64,
    next_sequence: u64,
    // Whether `last_applied` has been read from the cluster yet.
    synchronized: bool,
}

/// A distributed counter client: increments and decrements from any node, the same value on every
/// node, exactly once across retries and leader changes, and atomic multi-key batches (Raft).
///
/// On Raft every operation is one batch: a compare-and-swap of this client's session key
/// (`counter-session:<client>`) from the last applied sequence to this operation's, then the
/// `Add`s. The log applies it once or not at all; a retry after a lost answer finds the session
/// already at its sequence and knows it was applied, so it is never applied twice. One key per
/// client bounds the state (unlike one marker per operation).
///
/// On simple majority keys are decided independently, so the session and the counter cannot be
/// updated atomically: each operation is a single `Add` on one key (exactly once only within the
/// runtime's own retries), multi-key batches are refused, and an operation whose outcome is
/// unknown is returned as such, never retried by this client.
pub struct Counter {
    consensus: Consensus,
    client: String,
    session_key: String,
    session: tokio::sync::Mutex<Session>,
    retry_for: Duration,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter").field("client", &self.client).finish_non_exhaustive()
    }
}

impl Counter {
    /// Most counters one atomic batch may update (the runtime's `maxBatchCommands` also applies).
    pub const BATCH_COUNTERS_MAX: usize = 64;

    /// A counter client with id `client` (unique in the cluster; reuse it after a restart). Operations
    /// of one client are applied one at a time, in call order.
    pub fn new(consensus: Consensus, client: impl Into<String>) -> Self {
        let client = client.into();
        let retry_for = consensus.config().timeout * 4;
        Counter {
            session_key: format!("{SESSION_KEY_PREFIX}{client}"),
            consensus,
            client,
            session: tokio::sync::Mutex::new(Session {
                last_applied: 0,
                next_sequence: 1,
                synchronized: false,
            }),
            retry_for,
        }
    }

    /// How long one operation keeps retrying after outcomes it cannot know (timeouts, leader
    /// changes) before it returns the error (default: four times the config's `timeout`).
    pub fn with_retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// The client id.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// Adds 1 to `key`; returns the counter's value after it.
    pub async fn increment(&self, key: &str) -> Result<i64, PatternError> {
        self.add(key, 1).await
    }

    /// Subtracts 1 from `key`; returns the counter's value after it.
    pub async fn decrement(&self, key: &str) -> Result<i64, PatternError> {
        self.add(key, -1).await
    }

    /// Adds `delta` to `key`; returns the counter's value after it (if a retry finds the operation
    /// already applied, the value this node shows now).
    pub async fn add(&self, key: &str, delta: i64) -> Result<i64, PatternError> {
        let values = self.add_all(&[(key, delta)]).await?;
        values.first().copied().ok_or_else(|| PatternError::Corrupt {
            key: key.to_owned(),
            reason: "the batch returned no counter value".into(),
        })
    }

    /// Adds each delta to its counter, all or none (Raft only for more than one counter); returns
    /// the values after it, in order.
    pub async fn add_all(&self, deltas: &[(&str, i64)]) -> Result<Vec<i64>, PatternError> {
        if deltas.is_empty() || deltas.len() > Self::BATCH_COUNTERS_MAX {
            return Err(ProposalError::Invalid(format!(
                "a counter batch needs 1..={} counters, got {}",
                Self::BATCH_COUNTERS_MAX,
                deltas.len()
            ))
            .into());
        }
        if self.consensus.config().mechanism == MechanismKind::SimpleMajority {
            if deltas.len() > 1 {
                return Err(PatternError::Unsupported {
                    pattern: "atomic multi-counter batch",
                    mechanism: "simple_majority",
                    reason: "simple majority decides every key independently",
                });
            }
            let (key, delta) = deltas[0];
            let deadline = Instant::now() + self.retry_for;
            let mut attempt = 0;
            loop {
                match self.consensus.add(key, delta).await {
                    Ok(value) => return Ok(vec![value]),
                    // A refused slot (proposers collided) applied nothing: trying again is safe.
                    Err(ProposalError::Rejected { .. }) if Instant::now() < deadline => {
                        attempt += 1;
                        tokio::time::sleep(crate::contention_backoff(&self.consensus, attempt)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let mut session = self.session.lock().await;
        if !session.synchronized {
            // A linearizable read: every operation an earlier incarnation got applied is seen.
            let bytes = self.consensus.read_bytes(&self.session_key).await?;
            session.last_applied = self.decode_sequence(bytes.as_ref())?;
            session.next_sequence = session.last_applied.saturating_add(INCARNATION_SEQUENCE_GAP);
            session.synchronized = true;
        }
        let sequence = session.next_sequence;
        session.next_sequence += 1;
        let deadline = Instant::now() + self.retry_for;
        let mut unknown: Option<ProposalError> = None;
        loop {
            let mut commands = Vec::with_capacity(deltas.len() + 1);
            commands.push(Command::CompareAndSwap {
                key: self.session_key.clone(),
                expected: Expectation::Value(
                    (session.last_applied > 0)
                        .then(|| self.encode_sequence(session.last_applied))
                        .transpose()?,
                ),
                new: Some(self.encode_sequence(sequence)?),
            });
            commands.extend(
                deltas.iter().map(|(key, delta)| Command::Add { key: (*key).to_owned(), delta: *delta }),
            );
            let result = self.consensus.batch(commands).await;
            if result.accepted {
                session.last_applied = sequence;
                let output = result.output.unwrap_or_default();
                return output
                    .changes
                    .iter()
                    .skip(1)
                    .map(|change| {
                        KvStateMachine::decode_counter(change.new_value.as_ref()).ok_or_else(|| {
                            PatternError::Corrupt {
                                key: change.key.clone(),
                                reason: "not an i64 counter".into(),
                            }
                        })
                    })
                    .collect();
            }
            let error = result
                .error
                .unwrap_or(ProposalError::Rejected { reason: "counter batch not applied".into() });
            match error {
                ProposalError::Command(CommandFailure::BatchAborted { position: 0, reason }) => {
                    let CommandFailure::CompareFailed { current, .. } = *reason else {
                        return Err(ProposalError::Command(*reason).into());
                    };
                    let found = self.decode_sequence(current.value.as_ref())?;
                    if found == sequence {
                        // An earlier attempt was applied; its answer was lost.
                        session.last_applied = sequence;
                        return deltas.iter().map(|(key, _)| self.value(key)).collect();
                    }
                    if found > sequence {
                        return Err(PatternError::ClientConflict {
                            client: self.client.clone(),
                            found,
                            expected: sequence,
                        });
                    }
                    if found <= session.last_applied {
                        return Err(PatternError::Corrupt {
                            key: self.session_key.clone(),
                            reason: format!("the session went back from {} to {found}", session.last_applied),
                        });
                    }
                    // One of this client's earlier operations (whose outcome was unknown) was
                    // applied after all: build on it. Sequences increase, so this terminates.
                    session.last_applied = found;
                }
                ProposalError::Command(failure) => return Err(ProposalError::Command(failure).into()),
                error if error.outcome_unknown() && !matches!(error, ProposalError::Stopped) => {
                    if Instant::now() >= deadline {
                        return Err(error.into());
                    }
                    unknown = Some(error);
                    tokio::time::sleep(self.consensus.config().heartbeat_interval).await;
                }
                // No leader yet (an election), or a full queue: nothing was applied; wait.
                ProposalError::Busy { .. } | ProposalError::NotLeader { leader: None }
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(self.consensus.config().heartbeat_interval).await;
                }
                // After an attempt with unknown outcome, keep trying (within the deadline) until
                // the outcome is known rather than leave the operation in doubt.
                ProposalError::NoQuorum { .. } | ProposalError::NotLeader { .. }
                    if unknown.is_some() && Instant::now() < deadline =>
                {
                    tokio::time::sleep(self.consensus.config().heartbeat_interval).await;
                }
                // A definite refusal (no quorum…) after an attempt with unknown outcome leaves the
                // operation in doubt: say so.
                error => return Err(unknown.unwrap_or(error).into()),
            }
        }
    }

    /// The counter's value on this node (0 if absent); possibly stale on a follower.
    pub fn value(&self, key: &str) -> Result<i64, PatternError> {
        KvStateMachine::decode_counter(self.consensus.get_bytes(key).as_ref())
            .ok_or_else(|| PatternError::Corrupt { key: key.to_owned(), reason: "not an i64 counter".into() })
    }

    /// The counter's value, linearizable (Raft; simple majority has no linearizable reads).
    pub async fn read(&self, key: &str) -> Result<i64, PatternError> {
        let bytes = self.consensus.read_bytes(key).await?;
        KvStateMachine::decode_counter(bytes.as_ref())
            .ok_or_else(|| PatternError::Corrupt { key: key.to_owned(), reason: "not an i64 counter".into() })
    }

    fn encode_sequence(&self, sequence: u64) -> Result<Bytes, PatternError> {
        Ok(encode_value(&sequence)?)
    }

    fn decode_sequence(&self, bytes: Option<&Bytes>) -> Result<u64, PatternError> {
        match bytes {
            None => Ok(0),
            Some(bytes) => decode_value::<u64>(bytes).map_err(|error| PatternError::Corrupt {
                key: self.session_key.clone(),
                reason: error.to_string(),
            }),
        }
    }
}
