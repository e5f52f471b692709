//! Bring your own network: the lesson's `setMessageSender(callback)` + `handleMessage(from, msg)`.

use async_trait::async_trait;
use bytes::Bytes;
use concord_core::id::{NodeId, NodeInfo};
use concord_core::transport::{Incoming, Transport, TransportError};
use tokio::sync::mpsc;

/// The callback the node calls to send an encoded frame to a peer.
pub type MessageSender = Box<dyn Fn(&NodeId, Bytes) + Send + Sync>;

/// A transport whose sends call a user callback; frames from the user's network come in through
/// `Consensus::handle_message`.
pub(crate) struct CallbackTransport {
    sender: MessageSender,
    // Nothing arrives through recv: `handle_message` feeds the node directly. The channel only lets
    // `recv` wait until close.
    closed: tokio::sync::Mutex<mpsc::Receiver<()>>,
    close: mpsc::Sender<()>,
}

impl CallbackTransport {
    pub(crate) fn new(sender: MessageSender) -> Self {
        let (close, closed) = mpsc::channel(1);
        CallbackTransport { sender, closed: tokio::sync::Mutex::new(closed), close }
    }
}

#[async_trait]
impl Transport for CallbackTransport {
    async fn send(&self, to: &NodeId, frames: Vec<Bytes>) -> Result<(), TransportError> {
        for frame in frames {
            (self.sender)(to, frame);
        }
        Ok(())
    }

    async fn recv(&self) -> Result<Incoming, TransportError> {
        let _ = self.closed.lock().await.recv().await;
        Err(TransportError::Closed)
    }

    fn add_peer(&self, _peer: &NodeInfo) -> Result<(), TransportError> {
        Ok(())
    }

    fn remove_peer(&self, _peer: &NodeId) {}

    async fn close(&self) {
        let _ = self.close.try_send(());
    }
}
