//! Errors: why the transport did not start, and why a link closed.

use concord_core::codec::CodecError;

use crate::auth::HandshakeError;

/// Why [`crate::WsTransport::bind`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// An option is out of range (caller's fault).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The listen address could not be bound (local: in use, no permission…).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// Why a link closed. Links close and reconnect on their own; these are logged, never returned to
/// the application, and none of them panics.
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
    #[error("peer sent a frame declaring {declared} bytes in a message of {actual} bytes")]
    FrameLengthMismatch {
        /// The length the prefix declares.
        declared: usize,
        /// The message's size.
        actual: usize,
    },
    /// A peer sent a message larger than the frame limit (peer's fault or mismatched limits).
    #[error("peer sent a message above the limit of {limit} bytes")]
    FrameTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A peer sent a WebSocket message of a kind this protocol never uses (peer's fault).
    #[error("peer sent an unexpected {0} message")]
    UnexpectedMessage(&'static str),
    /// The peer closed the connection (peer restarted or shut down).
    #[error("closed by the peer")]
    ClosedByPeer,
    /// The peer stopped answering pings (peer or network).
    #[error("no answer to keepalive pings")]
    KeepaliveTimeout,
    /// The peer's address does not parse or resolve (operator's configuration).
    #[error("bad peer address {address:?}: {reason}")]
    Address {
        /// The address.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP, TLS or WebSocket failed (network or peer).
    #[error("connection failed: {0}")]
    Io(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for LinkError {
    fn from(error: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error;
        match error {
            Error::ConnectionClosed | Error::AlreadyClosed => LinkError::ClosedByPeer,
            other => LinkError::Io(other.to_string()),
        }
    }
}

impl From<std::io::Error> for LinkError {
    fn from(error: std::io::Error) -> Self {
        LinkError::Io(error.to_string())
    }
}
