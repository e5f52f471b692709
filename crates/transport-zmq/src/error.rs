//! Errors: why the transport did not start, and why a link closed.

use concord_core::codec::CodecError;

use crate::auth::HandshakeError;

/// Why [`crate::ZmqTransport::bind`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZmqError {
    /// An option is out of range (caller's fault).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The listen address could not be bound (local: in use, no permission…).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// ZeroMQ's reason.
        source: zeromq::ZmqError,
    },
}

impl ZmqError {
    /// Whether binding failed because the address is still in use (a restarted node whose previous
    /// incarnation has not released its port yet).
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, ZmqError::Bind { source: zeromq::ZmqError::Network(error), .. }
            if error.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// Why a link closed. Links close and come back on their own; these are logged, never returned
/// to the application, and none of them panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The handshake failed (see the inner error for whose fault).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// An authenticated peer sent a frame that is not a codec frame (peer's fault).
    #[error("peer sent a bad frame: {0}")]
    BadFrame(CodecError),
    /// An authenticated peer sent a frame whose length prefix does not match its size (peer's fault).
    #[error("peer sent a frame declaring {declared} bytes in a part of {actual} bytes")]
    FrameLengthMismatch {
        /// The length the prefix declares.
        declared: usize,
        /// The part's size.
        actual: usize,
    },
    /// A peer sent a message this protocol does not have, or one out of turn (peer's fault).
    #[error("peer sent an unexpected message: {0}")]
    UnexpectedMessage(&'static str),
    /// The peer sent nothing (not even an acknowledgement) for the liveness timeout: it is gone,
    /// or restarted behind a DEALER that no longer delivers (network or peer).
    #[error("no acknowledgement or heartbeat answer within the liveness timeout")]
    LivenessTimeout,
    /// The peer's address does not parse (operator's configuration).
    #[error("bad peer address {address:?}: {reason}")]
    Address {
        /// The address.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// ZeroMQ reported an error (network or peer), e.g. "Not connected to peers" after a restart.
    #[error("zeromq: {0}")]
    Zmq(String),
    /// The peer was removed or the transport closed.
    #[error("link closed locally")]
    Removed,
}

impl From<zeromq::ZmqError> for LinkError {
    fn from(error: zeromq::ZmqError) -> Self {
        LinkError::Zmq(error.to_string())
    }
}
