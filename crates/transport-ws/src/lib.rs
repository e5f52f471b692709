//! WebSocket transport for concord.
//!
//! [`WsTransport`] implements the core's [`Transport`](concord_core::transport::Transport) over
//! WebSocket (`tokio-tungstenite`): every node dials each peer once and sends on that link; peers
//! dial it back for the other direction. Each WebSocket binary message carries one codec frame.
//!
//! What it does:
//! - **Authenticates every connection** before any frame: a handshake carries the cluster id and
//!   both node ids and is proven with HMAC-SHA256 over a fresh nonce from each side, keyed with the
//!   shared cluster secret ([`WsOptions::cluster_secret`]). A peer without the secret, with another
//!   cluster id or with an id that is not a configured peer is refused, and none of its frames
//!   reach [`recv`](concord_core::transport::Transport::recv).
//! - **Bounds memory**: a per-peer send queue ([`WsOptions::send_queue_frames_max`]; when full,
//!   `send` fails with `QueueFull` and queues nothing), a receive queue shared by all peers (when
//!   full, reading pauses and TCP pushes back), a frame limit enforced on send and on receive
//!   (WebSocket message and frame limits, then the codec's length prefix), and a cap on
//!   connections in their handshake.
//! - **Reconnects** broken links with exponential backoff and jitter, and reports links going down
//!   and up as `PeerDisconnected` / `PeerConnected` (the runtime turns them into
//!   `node:unreachable` / `node:reconnected`). Keepalive pings catch peers that vanish silently.
//! - **Batches writes**: a burst of queued frames is fed to the socket and flushed once;
//!   `TCP_NODELAY` is on.
//! - **Optional TLS** with rustls ([`WsOptions::tls`]); authentication applies with or without it.
//!
//! What it is not: it does not retransmit (frames in flight when a link breaks are lost, which the
//! mechanisms tolerate), it does not decode messages (the runtime does), and it does not discover
//! peers (they come from the membership via `add_peer`).
//!
//! ```
//! use concord_core::id::{ClusterId, NodeInfo};
//! use concord_core::transport::{Incoming, Transport};
//! use concord_transport_ws::{WsOptions, WsTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = b"a shared secret of 16+ bytes";
//! let a = WsTransport::bind(WsOptions::new("a", ClusterId(1), secret)).await?;
//! let b = WsTransport::bind(WsOptions::new("b", ClusterId(1), secret)).await?;
//! a.add_peer(&NodeInfo::new("b", format!("ws://{}", b.local_addr())))?;
//! b.add_peer(&NodeInfo::new("a", format!("ws://{}", a.local_addr())))?;
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
//! Swapping transports is one line: pass `WsTransport::bind(options).await?` to
//! `Consensus::builder(id).transport(...)` instead of another transport.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

// The handshake and backoff are shared with the other transports (concord-transport-auth).
use concord_transport_auth::{backoff, handshake as auth, limits, links};
mod error;
mod options;
mod transport;

pub use auth::{HandshakeError, SECRET_BYTES_MIN};
pub use error::{LinkError, WsError};
pub use options::{
    WsOptions, WsTls, FRAME_BYTES_MAX, HANDSHAKES_IN_PROGRESS_MAX, RECEIVE_QUEUE_FRAMES_MAX,
    SEND_QUEUE_FRAMES_MAX, WRITE_BATCH_FRAMES_MAX,
};
pub use transport::{WsStats, WsTransport};
