//! The conformance suite every concord transport passes.
//!
//! Each check is an async function that takes a [`TransportFactory`] (which makes nodes of the
//! transport under test) and panics with a message when the transport does not conform. A
//! transport's own tests call every check, one `#[tokio::test]` each:
//!
//! | check | what it proves |
//! | --- | --- |
//! | [`delivery`] | frames arrive, intact, from the sender the transport reports |
//! | [`ordering`] | frames on one link arrive in the order they were sent, with two links at once |
//! | [`frame_size_limit`] | a frame at the limit passes; one above is refused by the sender and by the receiver |
//! | [`garbage_frames`] | malformed frames never reach `recv` (where the transport validates) and never break it |
//! | [`unauthenticated_peers_refused`] | no secret, a wrong secret, a non-member id or another cluster: nothing gets through |
//! | [`peer_restart`] | a peer restarted on the same address is reached again within a bounded time |
//! | [`slow_receiver`] | a receiver that stops reading makes `send` fail with `QueueFull` instead of growing memory |
//! | [`membership_changes`] | removed peers cannot be sent to and are refused; adding them back restores delivery |
//! | [`misaddressed_peer`] | a dialer that reaches the wrong node notices, and that node gets nothing |
//! | [`raft_cluster`] | three Raft nodes elect a leader, commit 10,000 proposals, survive a restart and converge |
//!
//! Everything runs on 127.0.0.1 with OS-chosen ports, and every wait is bounded: a check either
//! passes or panics within its time limit. Waits poll for a condition; no check asserts after a
//! fixed sleep.
//!
//! This crate is not published: it exists for the transports' tests.
//!
//! ```
//! use concord_transport_conformance::{Limits, NodeSpec};
//! let spec = NodeSpec::new("n1", Limits::default());
//! assert!(spec.limits.frame_bytes_max >= 1024);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod checks;
mod cluster;
pub mod measure;
mod support;

pub use checks::{
    delivery, frame_size_limit, garbage_frames, membership_changes, misaddressed_peer, ordering,
    peer_restart, slow_receiver, unauthenticated_peers_refused,
};
pub use cluster::raft_cluster;
pub use support::{
    codec_frame, frame_sequence, Capabilities, Limits, NodeSpec, TestNode, TransportFactory, SECRET,
};
