//! The ZeroMQ transport: one ROUTER socket receives from every peer; one DEALER per peer sends.
//!
//! On top of ZeroMQ's messages runs a small protocol (the first part of every message is its kind):
//!
//! ```text
//! DEALER → ROUTER   H hello | P proof | D frame frame … | B (heartbeat)
//! ROUTER → DEALER   C challenge | W welcome | A frames_received bytes_received (acknowledgement)
//! ```
//!
//! The acknowledgements do two jobs. They bound memory: a link sends at most
//! `in_flight_frames_max` / `in_flight_bytes_max` beyond what the peer acknowledged, so ZeroMQ's
//! own per-peer queue (100,000 messages in zeromq 0.7) never fills. And they prove the peer is
//! alive: a DEALER whose peer restarted keeps accepting sends and loses them, so a link that hears
//! nothing for `liveness_timeout` (heartbeats are answered at once) is dropped and dialled again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use concord_core::codec::{Codec, CodecError};
use concord_core::id::{NodeId, NodeInfo};
use concord_core::transport::{Incoming, Transport, TransportError};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use zeromq::util::PeerIdentity;
use zeromq::{
    DealerRecvHalf, DealerSendHalf, DealerSocket, MultiPeerBackend, RouterSendHalf, RouterSocket, Socket,
    SocketEvent, SocketOptions, SocketRecv, SocketSend, ZmqMessage,
};

use crate::auth::{self, Challenge, HandshakeError, Hello, Nonce, Transcript};
use crate::backoff::Backoff;
use crate::links::{split_address, Links};
use crate::{LinkError, ZmqError, ZmqOptions};

const KIND_HELLO: &[u8] = b"H";
const KIND_CHALLENGE: &[u8] = b"C";
const KIND_PROOF: &[u8] = b"P";
const KIND_WELCOME: &[u8] = b"W";
const KIND_DATA: &[u8] = b"D";
const KIND_HEARTBEAT: &[u8] = b"B";
const KIND_ACK: &[u8] = b"A";

/// A ZeroMQ [`Transport`]; see the crate documentation.
pub struct ZmqTransport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

/// Counters for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZmqStats {
    /// Inbound connections dropped before or during the handshake (bad secret, unknown peer,
    /// malformed handshake, timeout, too many at once).
    pub handshakes_refused: u64,
    /// Inbound connections dropped because an authenticated peer sent a bad or oversized frame.
    pub links_closed_for_bad_frames: u64,
    /// Outbound links torn down and dialled again because the peer stopped answering.
    pub links_rebuilt_for_silence: u64,
}

struct Shared {
    options: ZmqOptions,
    codec: Codec,
    runtime: tokio::runtime::Handle,
    /// Peers, their send queues and link status, and the inbox (shared with the other transports).
    links: Links,
    router_task: Mutex<Option<AbortHandle>>,
    /// Authenticated peers to cut off, sent by `remove_peer` to the ROUTER task.
    removals: mpsc::UnboundedSender<NodeId>,
    handshakes_refused: AtomicU64,
    links_closed_for_bad_frames: AtomicU64,
    links_rebuilt_for_silence: AtomicU64,
}

impl ZmqTransport {
    /// Validates `options`, binds the ROUTER socket and starts accepting peers. Must be called
    /// inside a tokio runtime; the transport's tasks run on it.
    pub async fn bind(options: ZmqOptions) -> Result<Arc<ZmqTransport>, ZmqError> {
        options.validate()?;
        let address = options.listen_address;
        let mut router = RouterSocket::new();
        let monitor = router.monitor().boxed();
        let endpoint = router
            .bind(&format!("tcp://{address}"))
            .await
            .map_err(|source| ZmqError::Bind { address, source })?;
        let local_addr = match endpoint {
            zeromq::Endpoint::Tcp(_, port) => SocketAddr::new(address.ip(), port),
            _ => address,
        };
        let backend = router.backend();
        let links = Links::new(
            options.node_id.clone(),
            options.frame_bytes_max,
            options.send_queue_frames_max,
            options.receive_queue_frames_max,
        );
        // Unbounded, but only `remove_peer` sends, once per call: it cannot outgrow the membership
        // changes the application makes.
        let (removals, removal_receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            codec: Codec { max_frame_bytes: options.frame_bytes_max, compression_threshold_bytes: None },
            options,
            runtime: tokio::runtime::Handle::current(),
            links,
            router_task: Mutex::new(None),
            removals,
            handshakes_refused: AtomicU64::new(0),
            links_closed_for_bad_frames: AtomicU64::new(0),
            links_rebuilt_for_silence: AtomicU64::new(0),
        });
        let (send_half, recv_half) = router.split();
        let inbound = Inbound {
            shared: shared.clone(),
            backend,
            send_half,
            pending: BTreeMap::new(),
            authenticated: BTreeMap::new(),
            by_peer: BTreeMap::new(),
        };
        let task = tokio::spawn(inbound.run(recv_half, monitor, removal_receiver));
        *shared.router_task.lock() = Some(task.abort_handle());
        Ok(Arc::new(ZmqTransport { shared, local_addr }))
    }

    /// The address the ROUTER listens on (with the OS-chosen port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.shared.options.node_id
    }

    /// Counters since the transport started.
    pub fn stats(&self) -> ZmqStats {
        ZmqStats {
            handshakes_refused: self.shared.handshakes_refused.load(Ordering::Relaxed),
            links_closed_for_bad_frames: self.shared.links_closed_for_bad_frames.load(Ordering::Relaxed),
            links_rebuilt_for_silence: self.shared.links_rebuilt_for_silence.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ZmqTransport {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}

impl Shared {
    fn shut_down(&self) {
        self.links.shut_down();
        if let Some(router) = self.router_task.lock().take() {
            router.abort();
        }
    }
}

#[async_trait]
impl Transport for ZmqTransport {
    /// Queues `frames` for `to`, all or none: if the peer's queue has no room for all of them the
    /// call fails with `QueueFull` and queues nothing. While the link is down or its in-flight
    /// window is full, frames wait in the queue up to its limit; frames in flight when a link is
    /// torn down are lost, which the mechanisms tolerate.
    async fn send(&self, to: &NodeId, frames: Vec<Bytes>) -> Result<(), TransportError> {
        self.shared.links.send(to, frames)
    }

    async fn recv(&self) -> Result<Incoming, TransportError> {
        self.shared.links.recv().await
    }

    fn add_peer(&self, peer: &NodeInfo) -> Result<(), TransportError> {
        self.shared.links.add_peer(peer, parse_address, |queue| {
            let link = run_outbound(self.shared.clone(), peer.id.clone(), peer.address.clone(), queue);
            self.shared.runtime.spawn(link).abort_handle()
        })
    }

    fn remove_peer(&self, peer: &NodeId) {
        self.shared.links.remove_peer(peer);
        let _ = self.shared.removals.send(peer.clone());
    }

    async fn close(&self) {
        self.shared.shut_down();
    }
}

/// Splits `tcp://host:port`, `zmq://host:port` or `host:port` into `host:port`.
pub(crate) fn parse_address(address: &str) -> Result<String, LinkError> {
    let (authority, _host) = split_address(address, &["tcp://", "zmq://"])
        .map_err(|reason| LinkError::Address { address: address.to_owned(), reason: reason.to_owned() })?;
    Ok(authority.to_owned())
}

fn message(parts: Vec<Bytes>) -> Result<ZmqMessage, LinkError> {
    ZmqMessage::try_from(parts).map_err(|_| LinkError::Zmq("empty message".into()))
}

/// Keeps one outbound link to `peer` alive until the task is aborted: a fresh DEALER per attempt
/// (a DEALER is never reused after its link failed: that is the zeromq 0.7 problem), authenticate,
/// send within the acknowledged window, and on any failure or silence back off and start over.
async fn run_outbound(shared: Arc<Shared>, peer: NodeId, address: String, mut queue: mpsc::Receiver<Bytes>) {
    let options = &shared.options;
    let (min, max) = (options.reconnect_backoff_min, options.reconnect_backoff_max);
    let mut backoff = Backoff::for_link(min, max, options.node_id.as_str(), peer.as_str());
    loop {
        match tokio::time::timeout(options.handshake_timeout, dial(&shared, &peer, &address)).await {
            Ok(Ok(dealer)) => {
                backoff.reset();
                let (mut send_half, mut recv_half) = dealer.split();
                shared.links.set_link_up(&peer, true);
                tracing::debug!(node = %options.node_id, %peer, "link up");
                let error = pump(&shared, &mut send_half, &mut recv_half, &mut queue).await;
                shared.links.set_link_up(&peer, false);
                if matches!(error, LinkError::LivenessTimeout) {
                    shared.links_rebuilt_for_silence.fetch_add(1, Ordering::Relaxed);
                }
                if matches!(error, LinkError::Removed) {
                    return;
                }
                tracing::info!(node = %options.node_id, %peer, %error, "link down; dialling again");
            }
            Ok(Err(error)) => tracing::debug!(node = %options.node_id, %peer, %error, "cannot reach peer"),
            Err(_) => {
                let error = LinkError::Handshake(HandshakeError::Timeout);
                tracing::debug!(node = %options.node_id, %peer, %error, "cannot reach peer");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// The next message on a DEALER during the handshake, as its parts.
async fn next_message(dealer: &mut DealerSocket) -> Result<Vec<Bytes>, LinkError> {
    Ok(dealer.recv().await?.into_vec())
}

/// Connects a new DEALER to `peer` and runs the dialer's side of the handshake.
async fn dial(shared: &Shared, peer: &NodeId, address: &str) -> Result<DealerSocket, LinkError> {
    let options = &shared.options;
    let authority = parse_address(address)?;
    let mut socket_options = SocketOptions::default();
    socket_options.connect_timeout(options.handshake_timeout);
    let mut dealer = DealerSocket::with_options(socket_options);
    dealer.connect(&format!("tcp://{authority}")).await?;
    let hello = Hello {
        cluster_id: options.cluster_id,
        node_id: options.node_id.clone(),
        nonce: auth::fresh_nonce()?,
    };
    dealer.send(message(vec![Bytes::from_static(KIND_HELLO), auth::encode_hello(&hello).into()])?).await?;
    let parts = next_message(&mut dealer).await?;
    let challenge: Challenge = match parts.as_slice() {
        [kind, body] if kind == KIND_CHALLENGE => auth::decode_challenge(body)?,
        _ => return Err(HandshakeError::Malformed("expected a challenge").into()),
    };
    if challenge.node_id != *peer {
        return Err(HandshakeError::UnexpectedPeer { expected: peer.clone(), got: challenge.node_id }.into());
    }
    let transcript = Transcript {
        secret: &options.cluster_secret,
        cluster_id: options.cluster_id,
        dialer: &options.node_id,
        listener: peer,
        dialer_nonce: &hello.nonce,
        listener_nonce: &challenge.nonce,
    };
    transcript.verify_listener(&challenge.proof)?;
    let proof = auth::encode_proof(&transcript.dialer_proof());
    dealer.send(message(vec![Bytes::from_static(KIND_PROOF), proof.into()])?).await?;
    match next_message(&mut dealer).await?.as_slice() {
        [kind, body] if kind == KIND_WELCOME => auth::decode_welcome(body)?,
        _ => return Err(HandshakeError::Malformed("expected a welcome").into()),
    }
    Ok(dealer)
}

fn decode_ack(parts: &[Bytes]) -> Option<(u64, u64)> {
    match parts {
        [kind, frames, bytes] if kind == KIND_ACK && frames.len() == 8 && bytes.len() == 8 => {
            let mut frame_count = [0; 8];
            frame_count.copy_from_slice(frames);
            let mut byte_count = [0; 8];
            byte_count.copy_from_slice(bytes);
            Some((u64::from_be_bytes(frame_count), u64::from_be_bytes(byte_count)))
        }
        _ => None,
    }
}

/// Sends queued frames on an authenticated link within the acknowledged window, heartbeats, and
/// watches for acknowledgements, until the link fails (the error says why).
async fn pump(
    shared: &Shared,
    send_half: &mut DealerSendHalf,
    recv_half: &mut DealerRecvHalf,
    queue: &mut mpsc::Receiver<Bytes>,
) -> LinkError {
    let options = &shared.options;
    let (frames_max, bytes_max) = (options.in_flight_frames_max as u64, options.in_flight_bytes_max as u64);
    let (mut sent_frames, mut sent_bytes, mut acked_frames, mut acked_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut heartbeat = tokio::time::interval(options.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        let window_open = sent_frames - acked_frames < frames_max && sent_bytes - acked_bytes < bytes_max;
        tokio::select! {
            frame = queue.recv(), if window_open => {
                let Some(frame) = frame else { return LinkError::Removed };
                let mut parts = Vec::with_capacity(options.write_batch_frames_max.min(64) + 1);
                parts.push(Bytes::from_static(KIND_DATA));
                sent_frames += 1;
                sent_bytes += frame.len() as u64;
                parts.push(frame);
                while parts.len() <= options.write_batch_frames_max
                    && sent_frames - acked_frames < frames_max
                    && sent_bytes - acked_bytes < bytes_max
                {
                    let Ok(frame) = queue.try_recv() else { break };
                    sent_frames += 1;
                    sent_bytes += frame.len() as u64;
                    parts.push(frame);
                }
                let sent = match message(parts) {
                    Ok(message) => send_half.send(message).await.map_err(LinkError::from),
                    Err(error) => Err(error),
                };
                if let Err(error) = sent {
                    return error;
                }
            }
            received = recv_half.recv() => match received {
                Ok(received) => match decode_ack(&received.into_vec()) {
                    Some((frames, bytes)) if frames <= sent_frames && bytes <= sent_bytes => {
                        acked_frames = acked_frames.max(frames);
                        acked_bytes = acked_bytes.max(bytes);
                        last_heard = Instant::now();
                    }
                    _ => return LinkError::UnexpectedMessage("not an acknowledgement of what was sent"),
                },
                Err(error) => return error.into(),
            },
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > options.liveness_timeout {
                    return LinkError::LivenessTimeout;
                }
                let sent = match message(vec![Bytes::from_static(KIND_HEARTBEAT)]) {
                    Ok(message) => send_half.send(message).await.map_err(LinkError::from),
                    Err(error) => Err(error),
                };
                if let Err(error) = sent {
                    return error;
                }
            }
        }
    }
}

/// A connection that has not authenticated yet.
struct Pending {
    since: Instant,
    /// Set once its Hello was answered.
    challenge: Option<(NodeId, Nonce, Nonce)>,
}

/// An authenticated connection and what it delivered (for acknowledgements).
struct Authenticated {
    peer: NodeId,
    frames: u64,
    bytes: u64,
    unacknowledged_frames: u64,
    unacknowledged_bytes: u64,
}

/// The ROUTER side: authenticates connections and moves their frames into the inbox. One task owns
/// all of it, so the session tables need no lock; each table is bounded (pending connections by
/// `handshakes_in_progress_max`, authenticated ones by one per configured peer).
struct Inbound {
    shared: Arc<Shared>,
    backend: Arc<dyn MultiPeerBackend>,
    send_half: RouterSendHalf,
    pending: BTreeMap<Bytes, Pending>,
    authenticated: BTreeMap<Bytes, Authenticated>,
    by_peer: BTreeMap<NodeId, Bytes>,
}

impl Inbound {
    async fn run(
        mut self,
        mut recv_half: zeromq::RouterRecvHalf,
        mut monitor: futures_util::stream::BoxStream<'static, SocketEvent>,
        mut removals: mpsc::UnboundedReceiver<NodeId>,
    ) {
        let mut expiry = tokio::time::interval(self.shared.options.handshake_timeout / 4);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = recv_half.recv() => match received {
                    Ok(received) => self.handle_message(received.into_vec()).await,
                    Err(error) => {
                        tracing::debug!(node = %self.shared.options.node_id, %error, "router receive failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                event = monitor.next() => match event {
                    Some(SocketEvent::Accepted(_, identity)) => self.accepted(identity.into()),
                    Some(SocketEvent::Disconnected(identity)) => self.forget(&Bytes::from(identity)),
                    Some(_) => {}
                    None => monitor = Box::pin(futures_util::stream::pending()),
                },
                Some(peer) = removals.recv() => {
                    if let Some(identity) = self.by_peer.get(&peer).cloned() {
                        self.drop_connection(&identity);
                    }
                }
                _ = expiry.tick() => self.expire_handshakes(),
            }
        }
    }

    fn accepted(&mut self, identity: Bytes) {
        if self.authenticated.contains_key(&identity) {
            return;
        }
        self.pending.entry(identity).or_insert(Pending { since: Instant::now(), challenge: None });
        while self.pending.len() > self.shared.options.handshakes_in_progress_max {
            let oldest =
                self.pending.iter().min_by_key(|(_, pending)| pending.since).map(|(id, _)| id.clone());
            let Some(oldest) = oldest else { break };
            self.refuse(&oldest, HandshakeError::Timeout.into());
        }
    }

    fn expire_handshakes(&mut self) {
        let timeout = self.shared.options.handshake_timeout;
        let expired: Vec<Bytes> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.since.elapsed() > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for identity in expired {
            self.refuse(&identity, HandshakeError::Timeout.into());
        }
    }

    /// Drops a connection and everything known about it.
    fn drop_connection(&mut self, identity: &Bytes) {
        self.forget(identity);
        if let Ok(peer_identity) = PeerIdentity::try_from(identity.clone()) {
            self.backend.peer_disconnected(&peer_identity);
        }
    }

    fn forget(&mut self, identity: &Bytes) {
        self.pending.remove(identity);
        if let Some(session) = self.authenticated.remove(identity) {
            if self.by_peer.get(&session.peer) == Some(identity) {
                self.by_peer.remove(&session.peer);
            }
        }
    }

    fn refuse(&mut self, identity: &Bytes, error: LinkError) {
        self.shared.handshakes_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node = %self.shared.options.node_id, %error, "refused a connection");
        self.drop_connection(identity);
    }

    async fn reply(&mut self, identity: &Bytes, parts: Vec<Bytes>) {
        let mut message = match message(parts) {
            Ok(message) => message,
            Err(_) => return,
        };
        message.push_front(identity.clone());
        if let Err(error) = self.send_half.send(message).await {
            tracing::debug!(node = %self.shared.options.node_id, %error, "reply not sent");
        }
    }

    async fn handle_message(&mut self, mut parts: Vec<Bytes>) {
        if parts.len() < 2 {
            return; // ZeroMQ always puts the identity first; nothing else to go on.
        }
        let identity = parts.remove(0);
        if self.authenticated.contains_key(&identity) {
            self.handle_authenticated(identity, parts).await;
            return;
        }
        // The monitor may not have reported this connection yet.
        self.accepted(identity.clone());
        let result = match parts.as_slice() {
            [kind, body] if kind == KIND_HELLO => self.handle_hello(&identity, body).await,
            [kind, body] if kind == KIND_PROOF => self.handle_proof(&identity, body).await,
            _ => Err(HandshakeError::Malformed("expected a handshake message").into()),
        };
        if let Err(error) = result {
            self.refuse(&identity, error);
        }
    }

    async fn handle_hello(&mut self, identity: &Bytes, body: &[u8]) -> Result<(), LinkError> {
        let options = &self.shared.options;
        let hello = auth::decode_hello(body)?;
        self.shared.links.admit(&hello, options.cluster_id)?;
        let Some(pending) = self.pending.get_mut(identity) else {
            return Err(HandshakeError::Malformed("hello on an unknown connection").into());
        };
        if pending.challenge.is_some() {
            return Err(HandshakeError::Malformed("second hello").into());
        }
        let nonce = auth::fresh_nonce()?;
        let transcript = Transcript {
            secret: &options.cluster_secret,
            cluster_id: options.cluster_id,
            dialer: &hello.node_id,
            listener: &options.node_id,
            dialer_nonce: &hello.nonce,
            listener_nonce: &nonce,
        };
        let challenge =
            Challenge { node_id: options.node_id.clone(), nonce, proof: transcript.listener_proof() };
        pending.challenge = Some((hello.node_id, hello.nonce, nonce));
        let body = auth::encode_challenge(&challenge);
        self.reply(identity, vec![Bytes::from_static(KIND_CHALLENGE), body.into()]).await;
        Ok(())
    }

    async fn handle_proof(&mut self, identity: &Bytes, body: &[u8]) -> Result<(), LinkError> {
        let options = &self.shared.options;
        let proof = auth::decode_proof(body)?;
        let Some((peer, dialer_nonce, listener_nonce)) =
            self.pending.get(identity).and_then(|pending| pending.challenge.clone())
        else {
            return Err(HandshakeError::Malformed("proof before hello").into());
        };
        Transcript {
            secret: &options.cluster_secret,
            cluster_id: options.cluster_id,
            dialer: &peer,
            listener: &options.node_id,
            dialer_nonce: &dialer_nonce,
            listener_nonce: &listener_nonce,
        }
        .verify_dialer(&proof)?;
        self.pending.remove(identity);
        // A peer that restarted dials again while its old connection may linger: the newest wins.
        if let Some(old) = self.by_peer.insert(peer.clone(), identity.clone()) {
            if old != *identity {
                self.drop_connection(&old);
                self.by_peer.insert(peer.clone(), identity.clone());
            }
        }
        self.authenticated.insert(
            identity.clone(),
            Authenticated { peer, frames: 0, bytes: 0, unacknowledged_frames: 0, unacknowledged_bytes: 0 },
        );
        self.reply(identity, vec![Bytes::from_static(KIND_WELCOME), auth::encode_welcome().into()]).await;
        Ok(())
    }

    async fn handle_authenticated(&mut self, identity: Bytes, mut parts: Vec<Bytes>) {
        let kind = parts.remove(0);
        if kind == KIND_HEARTBEAT && parts.is_empty() {
            self.acknowledge(&identity).await;
            return;
        }
        if kind != KIND_DATA || parts.is_empty() {
            self.close_for_bad_frame(&identity, LinkError::UnexpectedMessage("expected data or a heartbeat"));
            return;
        }
        if let Some(error) = parts.iter().find_map(|frame| check_frame(&self.shared.codec, frame).err()) {
            self.close_for_bad_frame(&identity, error);
            return;
        }
        let Some(peer) = self.authenticated.get(&identity).map(|session| session.peer.clone()) else {
            return;
        };
        let (count, bytes) = (parts.len() as u64, parts.iter().map(|frame| frame.len() as u64).sum::<u64>());
        for frame in parts {
            // Bounded: when the application falls behind this waits, the ROUTER stops reading and
            // acknowledging, and the senders' windows and queues fill instead of our memory.
            let sent = match self.shared.links.inbox_sender().try_send((peer.clone(), frame)) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.shared.links.inbox_sender().send(item).await.map_err(|_| ())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            };
            if sent.is_err() {
                return;
            }
        }
        let options = &self.shared.options;
        let Some(session) = self.authenticated.get_mut(&identity) else { return };
        session.frames += count;
        session.bytes += bytes;
        session.unacknowledged_frames += count;
        session.unacknowledged_bytes += bytes;
        // Acknowledge well before the sender's window closes (senders use the same options).
        if session.unacknowledged_frames >= (options.in_flight_frames_max as u64 / 4).max(1)
            || session.unacknowledged_bytes >= options.in_flight_bytes_max as u64 / 4
        {
            self.acknowledge(&identity).await;
        }
    }

    async fn acknowledge(&mut self, identity: &Bytes) {
        let Some(session) = self.authenticated.get_mut(identity) else { return };
        session.unacknowledged_frames = 0;
        session.unacknowledged_bytes = 0;
        let parts = vec![
            Bytes::from_static(KIND_ACK),
            Bytes::copy_from_slice(&session.frames.to_be_bytes()),
            Bytes::copy_from_slice(&session.bytes.to_be_bytes()),
        ];
        self.reply(identity, parts).await;
    }

    fn close_for_bad_frame(&mut self, identity: &Bytes, error: LinkError) {
        self.shared.links_closed_for_bad_frames.fetch_add(1, Ordering::Relaxed);
        let peer = self.authenticated.get(identity).map(|session| session.peer.clone());
        tracing::warn!(node = %self.shared.options.node_id, peer = ?peer, %error, "closing inbound link");
        self.drop_connection(identity);
    }
}

/// A frame from an authenticated peer must be exactly one codec frame within the limit.
fn check_frame(codec: &Codec, frame: &[u8]) -> Result<(), LinkError> {
    match codec.frame_length(frame) {
        Ok(Some(declared)) if declared == frame.len() => Ok(()),
        Ok(Some(declared)) => Err(LinkError::FrameLengthMismatch { declared, actual: frame.len() }),
        Ok(None) => Err(LinkError::BadFrame(CodecError::Truncated { needed: 4, available: frame.len() })),
        Err(error) => Err(LinkError::BadFrame(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_or_without_a_scheme() {
        assert_eq!(parse_address("tcp://10.0.0.2:7000").unwrap(), "10.0.0.2:7000");
        assert_eq!(parse_address("localhost:5002").unwrap(), "localhost:5002");
        for bad in ["", "tcp://", "host", "host:port", ":80", "tcp://host:99999"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn acknowledgements_decode_only_when_well_formed() {
        let ack = |frames: u64, bytes: u64| {
            vec![
                Bytes::from_static(KIND_ACK),
                Bytes::copy_from_slice(&frames.to_be_bytes()),
                Bytes::copy_from_slice(&bytes.to_be_bytes()),
            ]
        };
        assert_eq!(decode_ack(&ack(3, 99)), Some((3, 99)));
        assert_eq!(decode_ack(&ack(3, 99)[..2]), None);
        assert_eq!(decode_ack(&[Bytes::from_static(KIND_DATA), Bytes::new(), Bytes::new()]), None);
    }

    #[test]
    fn frames_are_checked_against_their_length_prefix_and_the_limit() {
        let codec = Codec { max_frame_bytes: 64, compression_threshold_bytes: None };
        assert!(check_frame(&codec, &[0, 0, 0, 4, 1, 0, 9, 9]).is_ok());
        assert!(matches!(
            check_frame(&codec, &[0, 0, 0, 4, 1, 0, 9, 9, 0]),
            Err(LinkError::FrameLengthMismatch { .. })
        ));
        assert!(matches!(check_frame(&codec, &[0, 0]), Err(LinkError::BadFrame(_))));
        assert!(matches!(check_frame(&codec, &[0, 0, 1, 0, 1, 0]), Err(LinkError::BadFrame(_))));
    }
}
