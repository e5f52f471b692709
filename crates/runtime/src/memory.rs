//! The in-memory transport: every node of a cluster in one process, with fault injection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use concord_core::id::{NodeId, NodeInfo};
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

struct NetworkState {
    inboxes: HashMap<NodeId, mpsc::Sender<Incoming>>,
    // Directed links that drop everything: (from, to).
    blocked: HashSet<(NodeId, NodeId)>,
    drop_per_million: u32,
    delay: Duration,
    inbox_frames_max: usize,
    rng: u64,
}

impl Default for NetworkState {
    fn default() -> Self {
        NetworkState {
            inboxes: HashMap::new(),
            blocked: HashSet::new(),
            drop_per_million: 0,
            delay: Duration::ZERO,
            inbox_frames_max: INBOX_FRAMES_MAX,
            rng: 0x9E37_79B9_7F4A_7C15,
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

    /// Creates (or replaces) the transport of node `id`.
    pub fn transport(&self, id: impl Into<NodeId>) -> Arc<MemoryTransport> {
        let id = id.into();
        let mut state = self.inner.lock();
        let (sender, receiver) = mpsc::channel(state.inbox_frames_max);
        state.inboxes.insert(id.clone(), sender);
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

#[async_trait]
impl Transport for MemoryTransport {
    async fn send(&self, to: &NodeId, frames: Vec<Bytes>) -> Result<(), TransportError> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TransportError::Closed);
        }
        let (inbox, delay, drops) = {
            let mut state = self.network.inner.lock();
            if state.blocked.contains(&(self.id.clone(), to.clone())) {
                return Ok(()); // a cut link loses frames silently, as a real one does
            }
            let Some(inbox) = state.inboxes.get(to).cloned() else {
                return Err(TransportError::UnknownPeer(to.clone()));
            };
            let drops: Vec<bool> = if state.drop_per_million == 0 {
                Vec::new()
            } else {
                let threshold = u64::from(state.drop_per_million);
                (0..frames.len()).map(|_| state.next_random() % 1_000_000 < threshold).collect()
            };
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

    async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        self.network.inner.lock().inboxes.remove(&self.id);
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
