//! # concord-runtime
//!
//! The tokio driver and the user-facing async API of concord: the lesson's `ConsensusTrait`, in
//! Rust. A [`Consensus`] handle drives one node — a sans-io mechanism (`concord-raft` or
//! `concord-majority`, chosen by `config.mechanism`), a [`Storage`](concord_core::storage::Storage)
//! and a [`Transport`](concord_core::transport::Transport) — in two small tokio tasks.
//!
//! **What it is:** a thin driver. Protocol logic lives in the mechanism crates and is tested there
//! without tokio. **What it is not:** a transport or a durable store; it ships the in-memory
//! transport ([`MemoryNetwork`]) and uses in-memory storage unless given another.
//!
//! ## The lesson's API, one to one
//!
//! | lesson (TypeScript)                     | concord (Rust)                                             |
//! |-----------------------------------------|------------------------------------------------------------|
//! | `createConsensusTrait(id, config)`      | [`create_consensus_trait`]`(id, config)` → builder          |
//! | `new ConsensusTrait(id, config)`        | [`Consensus::builder`]`(id).config(config)`                 |
//! | `start()` / `stop()`                    | `builder.start().await` / [`Consensus::stop`]               |
//! | `addNode({id, address, metadata})`      | [`Consensus::add_node`]`(NodeInfo)` (or `builder.add_node`) |
//! | `removeNode(id)`                        | [`Consensus::remove_node`]                                  |
//! | `getNodes()` (with `connected`)         | [`Consensus::nodes`]                                        |
//! | `getLeader()` / `isLeader()`            | [`Consensus::leader`] / [`Consensus::is_leader`]            |
//! | `getNodeId()`                           | [`Consensus::node_id`]                                      |
//! | `propose(key, value)` → boolean         | [`Consensus::propose`]`(key, &value).await` → `bool`        |
//! | `proposeWithResult(key, value)`         | [`Consensus::propose_with_result`] → `ProposalResult`       |
//! | `get<T>(key)` (local)                   | [`Consensus::get`]`::<T>(key)`                              |
//! | — (linearizable read)                   | [`Consensus::read`]`::<T>(key).await`                       |
//! | `subscribe(key, cb)`                    | [`Consensus::subscribe`]`(key)` → stream of [`KeyUpdate`]   |
//! | `on(event, cb)`                         | [`Consensus::events`]`()` → stream of `Event`               |
//! | `getDebugState()`                       | [`Consensus::debug_state`]                                  |
//! | `vote(proposalId, vote)`                | [`Consensus::vote`]                                         |
//! | `setMessageSender(cb)`                  | `builder.set_message_sender(cb)`                            |
//! | `handleMessage(from, msg)`              | [`Consensus::handle_message`]                               |
//! | compare-and-swap, counter, batch        | [`Consensus::compare_and_swap`], [`Consensus::add`], [`Consensus::batch`] |
//!
//! ```
//! use concord_runtime::{Consensus, MemoryNetwork};
//! use concord_core::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let network = MemoryNetwork::new();
//! let node = Consensus::builder("agent-001")
//!     .config(Config::for_mechanism(MechanismKind::Raft))
//!     .transport(network.transport("agent-001"))
//!     .start()
//!     .await
//!     .unwrap();
//! // A one-node cluster elects itself, then commits on its own.
//! while !node.is_leader() {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! }
//! assert!(node.propose("player_score", &100u32).await);
//! assert_eq!(node.get::<u32>("player_score").unwrap(), Some(100));
//! node.stop().await;
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod callback;
mod clock;
mod consensus;
mod error;
mod inbox;
mod memory;
mod sequences;
mod stream;

pub use callback::MessageSender;
pub use consensus::{BatchOperation, CasOutcome, Consensus, ConsensusBuilder};
pub use error::{ReadError, StartError};
pub use memory::{MemoryNetwork, MemoryTransport, SharedMemoryStorage, INBOX_FRAMES_MAX};
pub use stream::{EventStream, KeySubscription, KeyUpdate};

pub use concord_core as core;

/// The lesson's `createConsensusTrait(id, config)`: a builder for node `id` with `config`; add a
/// transport and call `start()`.
pub fn create_consensus_trait(
    id: impl Into<String>,
    config: concord_core::config::Config,
) -> ConsensusBuilder {
    Consensus::builder(id).config(config)
}

/// Why [`Consensus::handle_message`] refused a frame. The frame is dropped; nothing else changes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleMessageError {
    /// The frame does not decode (or is for another cluster).
    #[error(transparent)]
    Codec(#[from] concord_core::codec::CodecError),
    /// The frame claims another sender than the link it came from.
    #[error("frame claims to be from {claimed} but arrived from {link}")]
    SenderMismatch {
        /// The sender in the frame.
        claimed: String,
        /// Who the caller says sent it.
        link: String,
    },
    /// The frame is addressed to another node.
    #[error("frame addressed to {0}, not to this node")]
    NotForMe(String),
    /// The mechanism refused the message.
    #[error(transparent)]
    Peer(#[from] concord_core::error::PeerError),
}
