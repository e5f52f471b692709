//! The peer table every concord network transport keeps, whatever its sockets: one bounded frame
//! queue and one link task per peer, whether each peer's outbound link is up, what the application
//! was last told about it, and the bounded inbox the readers fill.
//!
//! A transport owns a [`Links`], spawns one task per peer in [`Links::add_peer`] (the task drains
//! the queue it is handed and calls [`Links::set_link_up`]), feeds received frames through
//! [`Links::inbox_sender`], and forwards its [`Transport`](concord_core::transport::Transport)
//! calls: [`Links::send`] (all or nothing), [`Links::recv`] (status changes first),
//! [`Links::remove_peer`] and [`Links::shut_down`]. The sockets, framing and handshake stay in the
//! transport.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use concord_core::id::{ClusterId, NodeId, NodeInfo};
use concord_core::transport::{Incoming, TransportError};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::AbortHandle;

use crate::handshake::{HandshakeError, Hello};

/// Frames `recv` takes from the receive queue at once (one wake-up per batch instead of per frame).
pub const RECEIVE_BATCH_FRAMES_MAX: usize = 256;

/// Splits a peer address `scheme://host:port/path` (any of `schemes`, or none) into `host:port`
/// and the host alone (without IPv6 brackets, for TLS name checks); the error says what is wrong.
pub fn split_address<'a>(address: &'a str, schemes: &[&str]) -> Result<(&'a str, &'a str), &'static str> {
    let rest = schemes.iter().find_map(|scheme| address.strip_prefix(scheme)).unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err("expected host:port");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err("expected host:port with a numeric port");
    }
    Ok((authority, host.trim_start_matches('[').trim_end_matches(']')))
}

/// The peer table of one transport; see the module documentation.
pub struct Links {
    node_id: NodeId,
    frame_bytes_max: usize,
    send_queue_frames_max: usize,
    peers: Mutex<BTreeMap<NodeId, PeerLink>>,
    status: Mutex<BTreeMap<NodeId, LinkStatus>>,
    status_changed: Notify,
    inbox_sender: mpsc::Sender<(NodeId, Bytes)>,
    inbox: tokio::sync::Mutex<Inbox>,
    closed: watch::Sender<bool>,
}

/// Received frames: the bounded channel the readers fill, and a batch taken from it at once.
struct Inbox {
    receiver: mpsc::Receiver<(NodeId, Bytes)>,
    taken: VecDeque<(NodeId, Bytes)>,
    scratch: Vec<(NodeId, Bytes)>,
}

struct PeerLink {
    address: String,
    queue: mpsc::Sender<Bytes>,
    task: AbortHandle,
}

/// Whether the outbound link is up, and what the application was last told.
#[derive(Default)]
struct LinkStatus {
    up: bool,
    reported_up: bool,
}

impl Links {
    /// An empty table for node `node_id`: frames above `frame_bytes_max` are refused by `send`,
    /// each peer queues at most `send_queue_frames_max` frames, and the inbox holds at most
    /// `receive_queue_frames_max` (readers wait when it is full). Both queue limits must be at
    /// least 1 (validate options first: tokio panics on a zero-sized channel).
    pub fn new(
        node_id: NodeId,
        frame_bytes_max: usize,
        send_queue_frames_max: usize,
        receive_queue_frames_max: usize,
    ) -> Links {
        assert!(send_queue_frames_max > 0 && receive_queue_frames_max > 0, "queue limits are validated");
        let (inbox_sender, receiver) = mpsc::channel(receive_queue_frames_max);
        Links {
            node_id,
            frame_bytes_max,
            send_queue_frames_max,
            peers: Mutex::new(BTreeMap::new()),
            status: Mutex::new(BTreeMap::new()),
            status_changed: Notify::new(),
            inbox_sender,
            inbox: tokio::sync::Mutex::new(Inbox { receiver, taken: VecDeque::new(), scratch: Vec::new() }),
            closed: watch::Sender::new(false),
        }
    }

    /// Whether [`Links::shut_down`] ran.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Whether `peer` is in the table (a configured peer, not this node).
    pub fn contains(&self, peer: &NodeId) -> bool {
        self.peers.lock().contains_key(peer)
    }

    /// Whether a dialer's `hello` may go on with the handshake: it must be for `cluster_id` and from
    /// a peer in the table.
    pub fn admit(&self, hello: &Hello, cluster_id: ClusterId) -> Result<(), HandshakeError> {
        if hello.cluster_id != cluster_id {
            return Err(HandshakeError::WrongCluster { expected: cluster_id, got: hello.cluster_id });
        }
        if !self.contains(&hello.node_id) {
            return Err(HandshakeError::UnknownPeer(hello.node_id.clone()));
        }
        Ok(())
    }

    /// Where readers put the frames of authenticated peers; bounded, so a slow application makes
    /// readers wait instead of growing memory.
    pub fn inbox_sender(&self) -> &mpsc::Sender<(NodeId, Bytes)> {
        &self.inbox_sender
    }

    /// Records whether the outbound link to `peer` is up; `recv` reports the change. A peer
    /// removed meanwhile stays removed.
    pub fn set_link_up(&self, peer: &NodeId, up: bool) {
        let mut status = self.status.lock();
        if let Some(link) = status.get_mut(peer) {
            link.up = up;
            drop(status);
            self.status_changed.notify_one();
        }
    }

    /// The next link-status change the application has not been told about yet.
    fn take_status_change(&self) -> Option<Incoming> {
        let mut status = self.status.lock();
        for (peer, link) in status.iter_mut() {
            if link.up != link.reported_up {
                link.reported_up = link.up;
                return Some(if link.up {
                    Incoming::PeerConnected(peer.clone())
                } else {
                    Incoming::PeerDisconnected(peer.clone())
                });
            }
        }
        None
    }

    /// Queues `frames` for `to`, all or none: if the peer's queue has no room for all of them the
    /// call fails with `QueueFull` and queues nothing.
    pub fn send(&self, to: &NodeId, frames: Vec<Bytes>) -> Result<(), TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed);
        }
        let limit = self.frame_bytes_max;
        if let Some(frame) = frames.iter().find(|frame| frame.len() > limit) {
            return Err(TransportError::FrameTooLarge { size: frame.len(), limit });
        }
        let queue = match self.peers.lock().get(to) {
            Some(link) => link.queue.clone(),
            None => return Err(TransportError::UnknownPeer(to.clone())),
        };
        if frames.is_empty() {
            return Ok(());
        }
        let permits = queue.try_reserve_many(frames.len()).map_err(|error| match error {
            mpsc::error::TrySendError::Full(()) => {
                TransportError::QueueFull { peer: to.clone(), limit: self.send_queue_frames_max }
            }
            mpsc::error::TrySendError::Closed(()) => TransportError::Closed,
        })?;
        for (permit, frame) in permits.zip(frames) {
            permit.send(frame);
        }
        Ok(())
    }

    /// The next link-status change, else the next received frame; `Closed` once shut down.
    pub async fn recv(&self) -> Result<Incoming, TransportError> {
        let mut closed = self.closed.subscribe();
        loop {
            if *closed.borrow_and_update() {
                return Err(TransportError::Closed);
            }
            if let Some(change) = self.take_status_change() {
                return Ok(change);
            }
            let mut inbox = self.inbox.lock().await;
            if let Some((from, frame)) = inbox.taken.pop_front() {
                return Ok(Incoming::Frame { from, frame });
            }
            let Inbox { receiver, taken, scratch } = &mut *inbox;
            tokio::select! {
                biased;
                _ = closed.changed() => return Err(TransportError::Closed),
                _ = self.status_changed.notified() => continue,
                count = receiver.recv_many(scratch, RECEIVE_BATCH_FRAMES_MAX) => {
                    if count == 0 {
                        return Err(TransportError::Closed);
                    }
                    taken.extend(scratch.drain(..));
                }
            }
        }
    }

    /// Adds `peer` and starts its link with `spawn`, which is handed the receiving end of the
    /// peer's new queue and returns the task's handle. `check_address` (the transport's address
    /// syntax) runs first; its error is returned as `TransportError::Link`. This node itself and a peer already known at
    /// the same address are left alone. A new address is a new link: the old task is aborted and
    /// its queue goes with it.
    pub fn add_peer<Parsed, Error: std::fmt::Display>(
        &self,
        peer: &NodeInfo,
        check_address: impl FnOnce(&str) -> Result<Parsed, Error>,
        spawn: impl FnOnce(mpsc::Receiver<Bytes>) -> AbortHandle,
    ) -> Result<(), TransportError> {
        if self.is_closed() {
            return Err(TransportError::Closed);
        }
        if peer.id == self.node_id {
            return Ok(());
        }
        check_address(&peer.address).map_err(|error| TransportError::Link(error.to_string()))?;
        let mut peers = self.peers.lock();
        if let Some(existing) = peers.get(&peer.id) {
            if existing.address == peer.address {
                return Ok(());
            }
            existing.task.abort();
        }
        let (queue, receiver) = mpsc::channel(self.send_queue_frames_max);
        self.status.lock().insert(peer.id.clone(), LinkStatus::default());
        let task = spawn(receiver);
        peers.insert(peer.id.clone(), PeerLink { address: peer.address.clone(), queue, task });
        Ok(())
    }

    /// Forgets `peer`: aborts its link task, drops its queue and its status.
    pub fn remove_peer(&self, peer: &NodeId) {
        if let Some(link) = self.peers.lock().remove(peer) {
            link.task.abort();
        }
        self.status.lock().remove(peer);
    }

    /// Closes the table: `recv` and `send` return `Closed` from now on, every link task is
    /// aborted and every status forgotten.
    pub fn shut_down(&self) {
        self.closed.send_replace(true);
        let peers = std::mem::take(&mut *self.peers.lock());
        for link in peers.values() {
            link.task.abort();
        }
        self.status.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        Links::new(NodeId::from("a"), 8, 2, 4)
    }

    fn any_address(_: &str) -> Result<(), TransportError> {
        Ok(())
    }

    #[test]
    fn addresses_split_with_or_without_a_scheme() {
        let split = |address| split_address(address, &["ws://", "tcp://"]);
        assert_eq!(split("ws://10.0.0.2:7000/x"), Ok(("10.0.0.2:7000", "10.0.0.2")));
        assert_eq!(split("[::1]:5002"), Ok(("[::1]:5002", "::1")));
        for bad in ["", "ws://", "host", "host:port", ":80", "tcp://host:99999", "zmq://host:1"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn only_configured_peers_of_this_cluster_are_admitted() {
        let links = links();
        links.add_peer(&NodeInfo::new("b", "b:1"), any_address, |_| idle_task()).unwrap();
        let hello = |cluster, node_id: &str| Hello {
            cluster_id: ClusterId(cluster),
            node_id: node_id.into(),
            nonce: [0; 32],
        };
        assert!(links.admit(&hello(1, "b"), ClusterId(1)).is_ok());
        assert!(matches!(
            links.admit(&hello(2, "b"), ClusterId(1)),
            Err(HandshakeError::WrongCluster { .. })
        ));
        assert!(matches!(links.admit(&hello(1, "c"), ClusterId(1)), Err(HandshakeError::UnknownPeer(_))));
    }

    fn idle_task() -> AbortHandle {
        tokio::spawn(std::future::pending::<()>()).abort_handle()
    }

    #[tokio::test]
    async fn send_is_all_or_nothing_within_the_queue_limit() {
        let links = links();
        let mut queue = None;
        links
            .add_peer(&NodeInfo::new("b", "b:1"), any_address, |receiver| {
                queue = Some(receiver);
                idle_task()
            })
            .unwrap();
        let b = NodeId::from("b");
        let frame = Bytes::from_static(b"x");
        assert!(matches!(
            links.send(&b, vec![frame.clone(); 3]),
            Err(TransportError::QueueFull { limit: 2, .. })
        ));
        links.send(&b, vec![frame.clone(); 2]).unwrap();
        assert!(matches!(links.send(&b, vec![frame.clone()]), Err(TransportError::QueueFull { .. })));
        assert_eq!(queue.as_mut().map(|queue| queue.len()), Some(2));
        assert!(matches!(
            links.send(&b, vec![Bytes::from_static(&[0; 9])]),
            Err(TransportError::FrameTooLarge { size: 9, limit: 8 })
        ));
        assert!(matches!(links.send(&"c".into(), vec![frame]), Err(TransportError::UnknownPeer(_))));
    }

    #[tokio::test]
    async fn status_changes_come_before_frames_and_once_each() {
        let links = links();
        links.add_peer(&NodeInfo::new("b", "b:1"), any_address, |_| idle_task()).unwrap();
        let b = NodeId::from("b");
        links.inbox_sender().send((b.clone(), Bytes::from_static(b"f"))).await.unwrap();
        links.set_link_up(&b, true);
        assert!(matches!(links.recv().await, Ok(Incoming::PeerConnected(peer)) if peer == b));
        assert!(matches!(links.recv().await, Ok(Incoming::Frame { from, .. }) if from == b));
        links.set_link_up(&b, false);
        links.set_link_up(&b, true);
        // Down and up again before anyone looked: nothing changed for the application.
        links.inbox_sender().send((b.clone(), Bytes::from_static(b"g"))).await.unwrap();
        assert!(matches!(links.recv().await, Ok(Incoming::Frame { .. })));
        links.set_link_up(&b, false);
        assert!(matches!(links.recv().await, Ok(Incoming::PeerDisconnected(peer)) if peer == b));
    }

    #[tokio::test]
    async fn a_new_address_is_a_new_link_and_self_and_removed_peers_are_skipped() {
        let links = links();
        let mut spawned = 0;
        for address in ["b:1", "b:1", "b:2"] {
            links
                .add_peer(&NodeInfo::new("b", address), any_address, |_| {
                    spawned += 1;
                    idle_task()
                })
                .unwrap();
        }
        links.add_peer(&NodeInfo::new("a", "a:1"), any_address, |_| unreachable!("this node")).unwrap();
        let refused = links.add_peer(
            &NodeInfo::new("c", "nowhere"),
            |_| Err::<(), _>("bad address"),
            |_| unreachable!("the address was refused"),
        );
        assert!(matches!(refused, Err(TransportError::Link(_))));
        assert_eq!(spawned, 2);
        assert!(links.contains(&"b".into()) && !links.contains(&"a".into()));
        links.remove_peer(&"b".into());
        links.set_link_up(&"b".into(), true);
        assert!(links.take_status_change().is_none());
        links.shut_down();
        assert!(matches!(links.recv().await, Err(TransportError::Closed)));
        assert!(matches!(
            links.add_peer(&NodeInfo::new("b", "b:1"), any_address, |_| idle_task()),
            Err(TransportError::Closed)
        ));
    }
}
