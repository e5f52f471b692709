//! # concord-transport-auth
//!
//! What every concord network transport (WebSocket, ZeroMQ, your own) needs besides its socket:
//! the authenticated handshake that admits only members holding the cluster secret, and the
//! jittered exponential backoff used to reconnect. Pure functions and small state machines — no
//! I/O, no async runtime — so each transport keeps its own socket code and shares the security-
//! critical part.
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
