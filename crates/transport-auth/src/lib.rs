//! # concord-transport-auth
//!
//! What every concord network transport (WebSocket, ZeroMQ, your own) needs besides its socket:
//! the authenticated handshake that admits only members holding the cluster secret
//! ([`handshake`]), the jittered exponential backoff used to reconnect ([`backoff`]), the peer
//! table with one bounded frame queue per peer, link up/down state and status-change reporting
//! ([`links`], on tokio), and the checks of the options all transports share ([`limits`]). It does
//! no socket I/O: each transport keeps its own sockets, framing and wire protocol (and TLS or
//! acknowledgement windows), and shares the security-critical and bookkeeping parts.
//!
//! ```
//! use concord_transport_auth::backoff::Backoff;
//! use std::time::Duration;
//! let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5), 7);
//! let first = backoff.next_delay();
//! assert!(first <= Duration::from_millis(50));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod backoff;
pub mod handshake;
pub mod limits;
pub mod links;
