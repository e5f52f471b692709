//! # concord-core
//!
//! The sans-io core of concord: the types, config, replicated key-value state machine, wire codec,
//! and the traits that consensus mechanisms, storage and transports implement.
//!
//! **What it is:** plain data and deterministic functions. A [`Mechanism`](mechanism::Mechanism)
//! takes inputs with the current time passed in and hands back a [`Ready`](mechanism::Ready) batch
//! of messages to send, writes to persist (and which messages must wait for them), results and
//! events.
//!
//! **What it is not:** it has no async runtime, no clock, no socket, no file and no global RNG.
//! Raft lives in `concord-raft`, simple majority in `concord-majority`, the tokio driver and the
//! user-facing API in `concord-runtime`, durable storage in `concord-storage`.
//!
//! ```
//! use concord_core::prelude::*;
//!
//! // The replicated key-value state machine is deterministic: same commands, same state.
//! let mut replica = Replica::key_value(1024);
//! let context = ApplyContext { index: LogIndex(1), term: Term(1), timestamp_ms: 0 };
//! let output = replica
//!     .apply(&context, None, &Command::Add { key: "score".into(), delta: 5 })
//!     .unwrap();
//! assert_eq!(output.counter, Some(5));
//!
//! // Frames carry a cluster id, sender and receiver, and decode with typed errors.
//! let codec = Codec { max_frame_bytes: 1 << 20, compression_threshold_bytes: None };
//! let envelope = Envelope {
//!     cluster_id: ClusterId(7),
//!     from: NodeId::new("agent-001"),
//!     to: NodeId::new("agent-002"),
//!     message: Message::Raft(RaftMessage::TimeoutNow { term: Term(3) }),
//! };
//! let frame = codec.encode(&envelope).unwrap();
//! assert_eq!(codec.decode(&frame).unwrap(), envelope);
//! assert!(codec.decode(&frame[..frame.len() - 1]).is_err());
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod codec;
pub mod command;
pub mod config;
pub mod error;
pub mod event;
pub mod hashing;
pub mod id;
pub mod mechanism;
pub mod message;
pub mod state_machine;
pub mod storage;
pub mod time;
pub mod transport;
pub mod typed;

/// The names most users need.
pub mod prelude {
    pub use crate::codec::{Codec, CodecError, Envelope};
    pub use crate::command::{Command, CommandFailure, CommandOutput, CommandResult, Expectation, KeyState};
    pub use crate::config::{Config, ConfigError, ElectionTimeout, MechanismKind, Quorum, VotingMode};
    pub use crate::error::{PeerError, ProposalError};
    pub use crate::event::{DebugState, Event, PartitionSide, ProposalResult, Role, Votes};
    pub use crate::id::{
        ClientSession, ClusterId, LogIndex, Member, MemberRole, Membership, NodeId, NodeInfo, ProposalId,
        Term, Version,
    };
    pub use crate::mechanism::{Mechanism, MembershipChange, Outbound, ReadId, ReadResult, Ready, Setup};
    pub use crate::message::{
        Entry, EntryPayload, MajorityMessage, Message, Proposal, RaftMessage, Snapshot, SnapshotMeta,
    };
    pub use crate::state_machine::{ApplyContext, KvStateMachine, Replica, StateMachine};
    pub use crate::storage::{HardState, MemoryStorage, Persist, Recovered, Storage, StorageError};
    pub use crate::time::Instant;
    pub use crate::transport::{Incoming, Transport, TransportError};
}
