//! Errors of the runtime API.

use concord_core::config::ConfigError;
use concord_core::error::ProposalError;
use concord_core::mechanism::SetupError;
use concord_core::storage::StorageError;
use concord_core::typed::ValueError;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The config is invalid (the message names the field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node id is not acceptable.
    #[error(transparent)]
    NodeId(#[from] concord_core::id::InvalidNodeId),
    /// Storage could not be read.
    #[error("cannot recover storage: {0}")]
    Storage(#[from] StorageError),
    /// The mechanism refused the recovered state or membership.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// `config.mechanism` names a mechanism this build does not include (cargo feature off).
    #[error("mechanism {0} is not compiled in: enable the concord-runtime feature of the same name")]
    MechanismNotCompiled(&'static str),
    /// The builder is missing something.
    #[error("builder: {0}")]
    Builder(String),
}

/// Why a read did not return a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The read could not be confirmed linearizable (not leader, no quorum, timeout…).
    #[error(transparent)]
    Consensus(#[from] ProposalError),
    /// The stored bytes do not decode as the type asked for.
    #[error(transparent)]
    Value(#[from] ValueError),
}
