//! ZeroMQ transport for concord, on the pure-Rust `zeromq` crate.
//!
//! [`ZmqTransport`] implements the core's [`Transport`](concord_core::transport::Transport) with a
//! ROUTER socket that receives from every peer and one DEALER socket per peer for sending. Each
//! ZeroMQ part carries one codec frame; a burst of queued frames goes out as one multipart message.
//!
//! What it does:
//! - **Authenticates every connection** before any frame: the DEALER opens with a handshake
//!   carrying the cluster id and both node ids, proven with HMAC-SHA256 over a fresh nonce from
//!   each side, keyed with the shared cluster secret ([`ZmqOptions::cluster_secret`]). A peer
//!   without the secret, with another cluster id or with an id that is not a configured peer is
//!   dropped, and none of its frames reach `recv`. Connections that do not authenticate within
//!   [`ZmqOptions::handshake_timeout`] are dropped too.
//! - **Survives peer restarts**: with zeromq 0.7 a DEALER does not recover when its peer restarts
//!   (sends return `Ok` and are lost, later ones fail with "Not connected to peers"). Every link
//!   therefore heartbeats and expects acknowledgements; a send error or
//!   [`ZmqOptions::liveness_timeout`] of silence throws the DEALER away and dials a new one with
//!   exponential backoff and jitter. Links going down and up are reported as `PeerDisconnected` /
//!   `PeerConnected`.
//! - **Bounds memory**: a per-peer send queue (`send` fails with `QueueFull` when full, queueing
//!   nothing), an acknowledged in-flight window per link (frames and bytes), a receive queue
//!   shared by all peers, the frame limit on send and on receive, and a cap on connections in
//!   their handshake.
//!
//! What it is not: it does not retransmit (frames in flight when a link is torn down are lost,
//! which the mechanisms tolerate), it does not encrypt (use the WebSocket transport with TLS, or a
//! private network), and it does not decode messages (the runtime does).
//!
//! Known limit of zeromq 0.7, outside this crate's control: ZeroMQ's own decoder allocates a
//! message as large as the peer declares before this crate sees it, so the frame limit stops an
//! oversized frame from reaching the application but not from being read; expose the port only to
//! the cluster's network.
//!
//! ```
//! use concord_core::id::{ClusterId, NodeInfo};
//! use concord_core::transport::{Incoming, Transport};
//! use concord_transport_zmq::{ZmqOptions, ZmqTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = b"a shared secret of 16+ bytes";
//! let a = ZmqTransport::bind(ZmqOptions::new("a", ClusterId(1), secret)).await?;
//! let b = ZmqTransport::bind(ZmqOptions::new("b", ClusterId(1), secret)).await?;
//! a.add_peer(&NodeInfo::new("b", format!("tcp://{}", b.local_addr())))?;
//! b.add_peer(&NodeInfo::new("a", format!("tcp://{}", a.local_addr())))?;
//! // A codec frame: 4-byte length, version, flags, body.
//! a.send(&"b".into(), vec![bytes::Bytes::from_static(&[0, 0, 0, 3, 1, 0, 7])]).await?;
//! loop {
//!     if let Incoming::Frame { from, frame } = b.recv().await? {
//!         assert_eq!((from.as_str(), &frame[..]), ("a", &[0, 0, 0, 3, 1, 0, 7][..]));
//!         break;
//!     }
//! }
//! a.close().await;
//! b.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! Swapping transports is one line: pass `ZmqTransport::bind(options).await?` to
//! `Consensus::builder(id).transport(...)` instead of another transport.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

// The handshake and backoff are shared with the other transports (concord-transport-auth).
use concord_transport_auth::{backoff, handshake as auth, limits, links};
mod error;
mod options;
mod transport;

pub use auth::{HandshakeError, SECRET_BYTES_MIN};
pub use error::{LinkError, ZmqError};
pub use options::{
    ZmqOptions, FRAME_BYTES_MAX, HANDSHAKES_IN_PROGRESS_MAX, IN_FLIGHT_BYTES_MAX, IN_FLIGHT_FRAMES_MAX,
    RECEIVE_QUEUE_FRAMES_MAX, SEND_QUEUE_FRAMES_MAX, WRITE_BATCH_FRAMES_MAX,
};
pub use transport::{ZmqStats, ZmqTransport};
