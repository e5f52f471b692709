//! The in-memory transport: every node of a cluster in one process, with fault injection.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use concord_core::codec::{Codec, Envelope};
use concord_core::id::{ClusterId, NodeId, NodeInfo};
use concord_core::message::Message;
use concord_core::transport::{Incoming, Transport, TransportError};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Default bound of each node's inbox, in frames. A full inbox drops frames (like a congested
/// link); the mechanisms retransmit.
pub const INBOX_FRAMES_MAX: usize = 65_536;

/// An in-process network connecting [`MemoryTransport`]s, with fault injection for tests, examples
/// and the demo: drop, delay, partition, heal.
///
/// ```
/// use concord_runtime::MemoryNetwork;
/// let network = MemoryNetwork::new();
/// let a = network.transport("a");
/// let b = network.transport("b");
/// network.partition(&[&["a"], &["b"]]); // a and b cannot talk
/// network.heal();
/// # drop((a, b));
/// ```
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<NetworkState>>,
}

/// A node in this process that takes messages as values: nodes run by this crate register one, so
/// messages between them skip encoding, decoding and the receive task's wake-up. Frames (from
/// anyone) still go through the inbox.
pub(crate) trait LocalDelivery: Send + Sync {
    /// Hands over `messages` sent by `from` in cluster `cluster_id`, in order, to be handled as
    /// `handoff` says.
    fn deliver(&self, from: &NodeId, cluster_id: ClusterId, messages: Vec<Message>, handoff: Handoff);
}

/// Which task handles messages handed to an in-process node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handoff {
    /// The sender's: the receiver handles them (and what follows from them) before the send
    /// returns — no wake-up, but the sender waits for it.
    SendersTask,
    /// The receiver's own node task, woken for them: the sender goes on at once, and on a
    /// multi-threaded runtime the receiver may work beside it.
    ReceiversTask,
}

struct NetworkState {
    // Ordered maps: a network holds a handful of nodes, looked up on every send, and comparing a
    // few short ids is cheaper than hashing one.
    inboxes: BTreeMap<NodeId, mpsc::Sender<Incoming>>,
    // Weak: the node owns its transport, which must not keep the node alive.
    local_receivers: BTreeMap<NodeId, Weak<dyn LocalDelivery>>,
    // Directed links that drop everything: (from, to).
    blocked: HashSet<(NodeId, NodeId)>,
    drop_per_million: u32,
    delay: Duration,
    inbox_frames_max: usize,
    rng: u64,
    /// Messages (values or frames) sent over open links and not dropped.
    messages_sent: u64,
}

impl Default for NetworkState {
    fn default() -> Self {
        NetworkState {
            inboxes: BTreeMap::new(),
            local_receivers: BTreeMap::new(),
            blocked: HashSet::new(),
            drop_per_million: 0,
            delay: Duration::ZERO,
            inbox_frames_max: INBOX_FRAMES_MAX,
            rng: 0x9E37_79B9_7F4A_7C15,
            messages_sent: 0,
        }
    }
}

impl NetworkState {
    // xorshift: fault injection needs cheap randomness, not quality.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Which of `count` items the fault injection drops (empty: none).
    /// Draws which of `count` messages on an open link are lost, and counts the others as sent.
    fn draw_drops(&mut self, count: usize) -> Vec<bool> {
        if self.drop_per_million == 0 {
            self.messages_sent += count as u64;
            return Vec::new();
        }
        let threshold = u64::from(self.drop_per_million);
        let drops: Vec<bool> = (0..count).map(|_| self.next_random() % 1_000_000 < threshold).collect();
        self.messages_sent += drops.iter().filter(|dropped| !**dropped).count() as u64;
        drops
    }

    fn notify(&self, node: &NodeId, incoming: Incoming) {
        if let Some(inbox) = self.inboxes.get(node) {
            let _ = inbox.try_send(incoming);
        }
    }

    fn set_blocked(&mut self, blocked: HashSet<(NodeId, NodeId)>) {
        let newly_blocked: Vec<_> = blocked.difference(&self.blocked).cloned().collect();
        let newly_open: Vec<_> = self.blocked.difference(&blocked).cloned().collect();
        self.blocked = blocked;
        for (from, to) in newly_blocked {
            self.notify(&to, Incoming::PeerDisconnected(from));
        }
        for (from, to) in newly_open {
            if !self.blocked.contains(&(from.clone(), to.clone())) {
                self.notify(&to, Incoming::PeerConnected(from));
            }
        }
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A network whose inboxes hold at most `frames` frames each.
    pub fn with_inbox_limit(frames: usize) -> Self {
        let network = Self::default();
        network.inner.lock().inbox_frames_max = frames.max(1);
        network
    }

    /// Messages the network has carried so far (over open links, not dropped): lets a test see
    /// how many messages a workload costs, for instance that concurrent proposals share rounds.
    pub fn messages_sent(&self) -> u64 {
        self.inner.lock().messages_sent
    }

    /// Creates (or replaces) the transport of node `id`.
    pub fn transport(&self, id: impl Into<NodeId>) -> Arc<MemoryTransport> {
        let id = id.into();
        let mut state = self.inner.lock();
        let (sender, receiver) = mpsc::channel(state.inbox_frames_max);
        state.inboxes.insert(id.clone(), sender);
        state.local_receivers.remove(&id);
        Arc::new(MemoryTransport {
            id,
            network: self.clone(),
            inbox: tokio::sync::Mutex::new(receiver),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Cuts every link between nodes of different groups (both ways). Nodes in no group keep
    /// their links to everyone.
    pub fn partition(&self, groups: &[&[&str]]) {
        let mut state = self.inner.lock();
        let mut blocked = HashSet::new();
        for (i, group) in groups.iter().enumerate() {
            for (j, other) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for a in group.iter() {
                    for b in other.iter() {
                        blocked.insert((NodeId::new(a), NodeId::new(b)));
                    }
                }
            }
        }
        state.set_blocked(blocked);
    }

    /// Cuts every link to and from `node`.
    pub fn isolate(&self, node: &str) {
        let mut state = self.inner.lock();
        let node = NodeId::new(node);
        let mut blocked = state.blocked.clone();
        for other in state.inboxes.keys() {
            if *other != node {
                blocked.insert((node.clone(), other.clone()));
                blocked.insert((other.clone(), node.clone()));
            }
        }
        state.set_blocked(blocked);
    }

    /// Cuts the one-way link `from → to`.
    pub fn cut(&self, from: &str, to: &str) {
        let mut state = self.inner.lock();
        let mut blocked = state.blocked.clone();
        blocked.insert((NodeId::new(from), NodeId::new(to)));
        state.set_blocked(blocked);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.inner.lock().set_blocked(HashSet::new());
    }

    /// Drops each frame with this probability (0.0 to 1.0).
    pub fn set_drop_probability(&self, probability: f64) {
        self.inner.lock().drop_per_million = (probability.clamp(0.0, 1.0) * 1_000_000.0) as u32;
    }

    /// Delays every frame by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.inner.lock().delay = delay;
    }
}

/// One node's endpoint on a [`MemoryNetwork`].
pub struct MemoryTransport {
    id: NodeId,
    network: MemoryNetwork,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    closed: std::sync::atomic::AtomicBool,
}

impl MemoryTransport {
    /// Lets `receiver` take messages sent to this node by other nodes of this crate as values.
    pub(crate) fn set_local_delivery(&self, receiver: Weak<dyn LocalDelivery>) {
        self.network.inner.lock().local_receivers.insert(self.id.clone(), receiver);
    }

    /// Sends `messages` to `to`: as values when `to` registered a [`LocalDelivery`], else encoded
    /// with `codec` as frames. Faults (cut links, drops, delay) apply either way.
    pub(crate) fn send_messages(
        &self,
        to: &NodeId,
        cluster_id: ClusterId,
        messages: Vec<Message>,
        codec: &Codec,
        handoff: Handoff,
    ) -> Result<(), TransportError> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        let (receiver, delay, drops) = {
            let mut state = self.network.inner.lock();
            match state.local_receivers.get(to).map(Weak::upgrade) {
                Some(Some(receiver)) => {
                    // Checked for emptiness first: the lookup hashes two ids, on every send.
                    if !state.blocked.is_empty() && state.blocked.contains(&(self.id.clone(), to.clone())) {
                        return Ok(()); // a cut link loses messages silently, as a real one does
                    }
                    let drops = state.draw_drops(messages.len());
                    (Some(receiver), state.delay, drops)
                }
                _ => (None, Duration::ZERO, Vec::new()),
            }
        };
        let Some(receiver) = receiver else {
            let frames = messages
                .into_iter()
                .filter_map(|message| {
                    let envelope = Envelope { cluster_id, from: self.id.clone(), to: to.clone(), message };
                    codec
                        .encode(&envelope)
                        .map_err(|error| {
                            tracing::error!(%to, kind = envelope.message.kind(), %error, "cannot encode message")
                        })
                        .ok()
                })
                .collect();
            return self.send_frames(to, frames);
        };
        let messages: Vec<Message> = if drops.is_empty() {
            messages
        } else {
            messages
                .into_iter()
                .zip(drops)
                .filter(|(_, dropped)| !dropped)
                .map(|(message, _)| message)
                .collect()
        };
        if messages.is_empty() {
            return Ok(());
        }
        if delay.is_zero() {
            receiver.deliver(&self.id, cluster_id, messages, handoff);
        } else {
            let from = self.id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                receiver.deliver(&from, cluster_id, messages, handoff);
            });
        }
        Ok(())
    }

    fn send_frames(&self, to: &NodeId, frames: Vec<Bytes>) -> Result<(), TransportError> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        let (inbox, delay, drops) = {
            let mut state = self.network.inner.lock();
            if !state.blocked.is_empty() && state.blocked.contains(&(self.id.clone(), to.clone())) {
                return Ok(()); // a cut link loses frames silently, as a real one does
            }
            let Some(inbox) = state.inboxes.get(to).cloned() else {
                return Err(TransportError::UnknownPeer(to.clone()));
            };
            let drops = state.draw_drops(frames.len());
            (inbox, state.delay, drops)
        };
        let limit = inbox.max_capacity();
        let incoming: Vec<Incoming> = frames
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !drops.get(*i).copied().unwrap_or(false))
            .map(|(_, frame)| Incoming::Frame { from: self.id.clone(), frame })
            .collect();
        if delay.is_zero() {
            // All or nothing: reserve room for the whole batch first, so a refused send queued
            // nothing and a retry cannot duplicate frames.
            if incoming.is_empty() {
                return Ok(());
            }
            let Ok(permits) = inbox.try_reserve_many(incoming.len()) else {
                return Err(TransportError::QueueFull { peer: to.clone(), limit });
            };
            for (permit, item) in permits.zip(incoming) {
                permit.send(item);
            }
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for item in incoming {
                    let _ = inbox.try_send(item);
                }
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn send(&self, to: &NodeId, frames: Vec<Bytes>) -> Result<(), TransportError> {
        self.send_frames(to, frames)
    }

    async fn recv(&self) -> Result<Incoming, TransportError> {
        let mut inbox = self.inbox.lock().await;
        inbox.recv().await.ok_or(TransportError::Closed)
    }

    async fn recv_batch(&self, max: usize) -> Result<Vec<Incoming>, TransportError> {
        let mut inbox = self.inbox.lock().await;
        let first = inbox.recv().await.ok_or(TransportError::Closed)?;
        let mut batch = Vec::with_capacity(max.clamp(1, 64));
        batch.push(first);
        while batch.len() < max {
            match inbox.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    fn add_peer(&self, _peer: &NodeInfo) -> Result<(), TransportError> {
        Ok(())
    }

    fn remove_peer(&self, _peer: &NodeId) {}

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        {
            let mut state = self.network.inner.lock();
            state.inboxes.remove(&self.id);
            state.local_receivers.remove(&self.id);
        }
        self.inbox.lock().await.close();
    }
}

/// In-memory storage that outlives the node using it: stop a node and start it again with a clone
/// of the same handle, and it resumes with its term, vote, log and snapshot — a crash-and-restart
/// without files (tests, examples, the demo).
#[derive(Clone, Default)]
pub struct SharedMemoryStorage {
    inner: Arc<Mutex<concord_core::storage::MemoryStorage>>,
}

impl SharedMemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }
}

impl concord_core::storage::Storage for SharedMemoryStorage {
    fn recover(&mut self) -> Result<concord_core::storage::Recovered, concord_core::storage::StorageError> {
        self.inner.lock().recover()
    }

    fn persist(
        &mut self,
        persist: &concord_core::storage::Persist,
    ) -> Result<(), concord_core::storage::StorageError> {
        self.inner.lock().persist(persist)
    }

    fn is_blocking(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use concord_core::config::Config;
    use concord_core::id::Term;
    use concord_core::message::RaftMessage;

    use super::*;

    /// Records what it is handed.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(NodeId, ClusterId, Message)>>);

    impl LocalDelivery for Recorder {
        fn deliver(&self, from: &NodeId, cluster_id: ClusterId, messages: Vec<Message>, _: Handoff) {
            let mut seen = self.0.lock();
            seen.extend(messages.into_iter().map(|message| (from.clone(), cluster_id, message)));
        }
    }

    fn timeout_now(term: u64) -> Message {
        Message::Raft(RaftMessage::TimeoutNow { term: Term(term) })
    }

    #[tokio::test]
    async fn messages_go_as_values_to_local_nodes_and_as_frames_to_everyone_else() {
        let network = MemoryNetwork::new();
        let a = network.transport("a");
        let b = network.transport("b");
        let c = network.transport("c");
        let recorder = Arc::new(Recorder::default());
        let receiver: Arc<dyn LocalDelivery> = recorder.clone();
        b.set_local_delivery(Arc::downgrade(&receiver));
        let codec = Codec::from_config(&Config::default());
        let cluster = ClusterId(7);

        a.send_messages(
            &NodeId::new("b"),
            cluster,
            vec![timeout_now(1), timeout_now(2)],
            &codec,
            Handoff::SendersTask,
        )
        .unwrap();
        let seen = recorder.0.lock().clone();
        assert_eq!(
            seen,
            vec![(NodeId::new("a"), cluster, timeout_now(1)), (NodeId::new("a"), cluster, timeout_now(2))]
        );

        // `c` takes frames: it gets the same message encoded.
        a.send_messages(&NodeId::new("c"), cluster, vec![timeout_now(3)], &codec, Handoff::SendersTask)
            .unwrap();
        let Incoming::Frame { from, frame } = c.recv().await.unwrap() else { panic!("a frame") };
        assert_eq!(from, NodeId::new("a"));
        let envelope = codec.decode_for(cluster, &frame).unwrap();
        assert_eq!((envelope.from, envelope.to, envelope.message), (from, NodeId::new("c"), timeout_now(3)));

        // Faults apply to values too: a cut link and certain loss deliver nothing.
        network.cut("a", "b");
        a.send_messages(&NodeId::new("b"), cluster, vec![timeout_now(4)], &codec, Handoff::SendersTask)
            .unwrap();
        network.heal();
        network.set_drop_probability(1.0);
        a.send_messages(&NodeId::new("b"), cluster, vec![timeout_now(5)], &codec, Handoff::SendersTask)
            .unwrap();
        network.set_drop_probability(0.0);
        assert_eq!(recorder.0.lock().len(), 2);

        // A closed receiver takes nothing more; a dropped one falls back to frames.
        b.close().await;
        assert_eq!(
            a.send_messages(&NodeId::new("b"), cluster, vec![timeout_now(6)], &codec, Handoff::SendersTask),
            Err(TransportError::UnknownPeer(NodeId::new("b")))
        );
        assert_eq!(recorder.0.lock().len(), 2);
        drop(receiver);
    }
}
