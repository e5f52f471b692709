//! Optimistic updates: show a value at once, confirm it through consensus, roll back on refusal.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use concord_core::command::Expectation;
use concord_core::error::ProposalError;
use concord_core::typed::{decode_value, encode_value};
use concord_runtime::Consensus;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::error::PatternError;

/// How a pending update ended, as its successors on the same key see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolution {
    Applied { version: u64 },
    RolledBack,
}

/// Why an optimistic update was rolled back.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RollbackReason {
    /// Another writer changed the key first: the update was built on a view that lost.
    Conflict {
        /// The key's version when the update was applied (and refused).
        version: u64,
    },
    /// An earlier pending update on the same key was rolled back, and this one was built on it.
    PredecessorRolledBack,
    /// Consensus did not take it (no quorum, timeout…). With an unknown outcome
    /// ([`ProposalError::outcome_unknown`]) the value may still be applied later; the view then
    /// shows it as the consensus value.
    Failed(ProposalError),
}

/// A rollback notice: the view of `key` went back to the consensus value.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollback {
    /// The key.
    pub key: String,
    /// The value that was shown and then withdrawn.
    pub attempted: Bytes,
    /// Why.
    pub reason: RollbackReason,
}

/// What an optimistic update ended as.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateOutcome {
    /// Consensus applied it; the key has this version.
    Applied {
        /// The key's version after the update.
        version: u64,
    },
    /// It was withdrawn from the view (a [`Rollback`] was also sent to subscribers).
    RolledBack(RollbackReason),
}

#[derive(Default)]
struct KeyQueue {
    // Pending updates in the order they were made: (id, value).
    pending: VecDeque<(u64, Bytes)>,
    // Resolution of the newest pending update; the next update on the key waits for it.
    tail: Option<watch::Receiver<Option<Resolution>>>,
}

#[derive(Default)]
struct Inner {
    keys: BTreeMap<String, KeyQueue>,
    next_id: u64,
    pending_total: usize,
    // Versions this handle's updates produced, for keys this node's replica has not applied yet
    // (a follower learns of a commit after the leader answers): the next update builds on them.
    confirmed: BTreeMap<String, u64>,
}

/// Optimistic updates over one node.
///
/// [`update`](Self::update) puts the value into a local view at once ([`view`](Self::view)),
/// then proposes it as a compare-and-swap on the version the view was built on. Several pending
/// updates on one key form a chain in the order they were made: each is proposed after its
/// predecessor is decided, expecting the version the predecessor produced, and if a predecessor is
/// rolled back every update built on it is rolled back too. So the outcome depends only on the
/// order of the updates and on the log, never on timing, and once nothing is pending the view is
/// exactly this node's consensus value.
#[derive(Clone)]
pub struct Optimistic {
    consensus: Consensus,
    inner: Arc<Mutex<Inner>>,
    rollbacks: broadcast::Sender<Rollback>,
    pending_max: usize,
}

impl std::fmt::Debug for Optimistic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimistic")
            .field("pending", &self.inner.lock().pending_total)
            .finish_non_exhaustive()
    }
}

/// Removes a pending update from the view when its `update` call ends, however it ends (the
/// caller may drop the future).
struct PendingGuard {
    inner: Arc<Mutex<Inner>>,
    key: String,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut inner = self.inner.lock();
        let mut empty = false;
        if let Some(queue) = inner.keys.get_mut(&self.key) {
            queue.pending.retain(|(id, _)| *id != self.id);
            empty = queue.pending.is_empty();
        }
        if empty {
            inner.keys.remove(&self.key);
        }
        inner.pending_total = inner.pending_total.saturating_sub(1);
    }
}

impl Optimistic {
    /// Default bound on updates pending at once (over all keys).
    pub const PENDING_MAX_DEFAULT: usize = 1024;
    /// Rollback notices kept for a slow subscriber before it skips the oldest.
    pub const ROLLBACK_BACKLOG_MAX: usize = 256;

    /// Optimistic updates through `consensus`.
    pub fn new(consensus: Consensus) -> Self {
        let (rollbacks, _) = broadcast::channel(Self::ROLLBACK_BACKLOG_MAX);
        Optimistic {
            consensus,
            inner: Arc::new(Mutex::new(Inner::default())),
            rollbacks,
            pending_max: Self::PENDING_MAX_DEFAULT,
        }
    }

    /// Bounds the updates pending at once; beyond it `update` fails with `Busy`.
    pub fn with_pending_max(mut self, pending_max: usize) -> Self {
        self.pending_max = pending_max.max(1);
        self
    }

    /// Rollback notices, as they happen.
    pub fn rollbacks(&self) -> broadcast::Receiver<Rollback> {
        self.rollbacks.subscribe()
    }

    /// The value to show for `key`: the newest pending update, else this node's consensus value.
    pub fn view<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, PatternError> {
        let pending =
            self.inner.lock().keys.get(key).and_then(|queue| queue.pending.back().map(|(_, v)| v.clone()));
        let bytes = pending.or_else(|| self.consensus.get_bytes(key));
        Ok(bytes.as_deref().map(decode_value).transpose()?)
    }

    /// Updates pending on `key`.
    pub fn pending(&self, key: &str) -> usize {
        self.inner.lock().keys.get(key).map_or(0, |queue| queue.pending.len())
    }

    /// Shows `value` for `key` at once, then has consensus decide it; returns how it ended. A
    /// rolled-back update is also announced on [`rollbacks`](Self::rollbacks).
    pub async fn update<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<UpdateOutcome, PatternError> {
        let bytes = encode_value(value)?;
        let (sender, _) = watch::channel(None);
        let (guard, predecessor, base_version) = {
            let mut inner = self.inner.lock();
            if inner.pending_total >= self.pending_max {
                return Err(ProposalError::Busy {
                    what: "optimistic updates".into(),
                    limit: self.pending_max as u64,
                }
                .into());
            }
            let id = inner.next_id;
            inner.next_id += 1;
            inner.pending_total += 1;
            let queue = inner.keys.entry(key.to_owned()).or_default();
            let predecessor = queue.tail.replace(sender.subscribe());
            queue.pending.push_back((id, bytes.clone()));
            // Read under the lock, so no other update of this handle slips between the version
            // and the queue.
            let local_version = self.consensus.version(key);
            let base_version = match inner.confirmed.get(key) {
                Some(&confirmed) if confirmed > local_version => confirmed,
                Some(_) => {
                    inner.confirmed.remove(key);
                    local_version
                }
                None => local_version,
            };
            (PendingGuard { inner: self.inner.clone(), key: key.to_owned(), id }, predecessor, base_version)
        };
        let expected_version = match predecessor {
            None => Some(base_version),
            Some(mut predecessor) => loop {
                let resolution = *predecessor.borrow_and_update();
                match resolution {
                    Some(Resolution::Applied { version }) => break Some(version),
                    Some(Resolution::RolledBack) => break None,
                    // A dropped predecessor never reached a decision this handle knows: treat it as
                    // rolled back, so nothing is built on it.
                    None => {
                        if predecessor.changed().await.is_err() {
                            break None;
                        }
                    }
                }
            },
        };
        let reason = match expected_version {
            None => RollbackReason::PredecessorRolledBack,
            Some(version) => {
                let outcome = self
                    .consensus
                    .compare_and_swap_bytes(key, Expectation::Version(version), Some(bytes.clone()))
                    .await;
                match outcome {
                    Ok(outcome) if outcome.swapped => {
                        {
                            let mut inner = self.inner.lock();
                            let confirmed = inner.confirmed.entry(key.to_owned()).or_default();
                            *confirmed = (*confirmed).max(outcome.version);
                            while inner.confirmed.len() > self.pending_max {
                                inner.confirmed.pop_first();
                            }
                        }
                        let _ = sender.send(Some(Resolution::Applied { version: outcome.version }));
                        drop(guard);
                        return Ok(UpdateOutcome::Applied { version: outcome.version });
                    }
                    Ok(outcome) => RollbackReason::Conflict { version: outcome.version },
                    Err(error) => RollbackReason::Failed(error),
                }
            }
        };
        let _ = sender.send(Some(Resolution::RolledBack));
        drop(guard);
        let _ =
            self.rollbacks.send(Rollback { key: key.to_owned(), attempted: bytes, reason: reason.clone() });
        Ok(UpdateOutcome::RolledBack(reason))
    }
}
