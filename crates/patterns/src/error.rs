//! What a pattern can end with, saying whose fault it is.

use std::time::Duration;

use concord_core::command::LockState;
use concord_core::error::ProposalError;
use concord_core::typed::ValueError;

/// Why a pattern's operation did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// Consensus did not take the operation (no quorum, timeout, stopped node, a refusal by the state
    /// machine…). [`ProposalError::outcome_unknown`] says whether it may still take effect.
    #[error(transparent)]
    Consensus(#[from] ProposalError),
    /// The caller's value does not encode, or a stored value does not decode as the asked type
    /// (caller's fault: two programs use one key with different types).
    #[error(transparent)]
    Value(#[from] ValueError),
    /// The pattern cannot be made safe on this mechanism (caller's configuration).
    #[error("{pattern} is not supported on the {mechanism} mechanism: {reason}")]
    Unsupported {
        /// The pattern or operation.
        pattern: &'static str,
        /// The mechanism.
        mechanism: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The lock is held by another lease.
    #[error(
        "lock on {resource:?} is held by {holder:?} (token {token}) until {expires_at_ms} ms of log time"
    )]
    LockHeld {
        /// The resource.
        resource: String,
        /// The current holder.
        holder: String,
        /// Its fencing token.
        token: u64,
        /// When its lease ends, in log time (the leader's milliseconds since the Unix epoch).
        expires_at_ms: u64,
    },
    /// A waiting acquire found no free moment within its timeout.
    #[error("no lease on {resource:?} within {waited:?}")]
    AcquireTimeout {
        /// The resource.
        resource: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The lease is no longer valid (expired, released, or superseded by a later grant): the
    /// holder must stop acting on the resource.
    #[error("lease {token} on {resource:?} is lost")]
    LeaseLost {
        /// The resource.
        resource: String,
        /// The lost lease's fencing token.
        token: u64,
        /// The lock's state when the loss was noticed, if the state machine reported it.
        current: Option<LockState>,
    },
    /// Another handle uses this counter client id (its session is ahead of this handle's): two
    /// writers with one id would defeat exactly-once.
    #[error("counter client {client:?} is used by another handle (its session is at {found}, this handle at {expected})")]
    ClientConflict {
        /// The client id.
        client: String,
        /// The sequence found in the session.
        found: u64,
        /// The sequence this handle expected at most.
        expected: u64,
    },
    /// The state machine stored something this pattern did not write (e.g. a counter session key
    /// overwritten by hand).
    #[error("key {key:?} holds unexpected data: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

impl PatternError {
    /// Whether the operation may have taken effect despite the error.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, PatternError::Consensus(error) if error.outcome_unknown())
    }
}
