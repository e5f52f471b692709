//! The WebSocket transport: one outbound link per peer (this node dials, sends frames), and the
//! inbound links peers dial (this node reads frames). Each link authenticates before any frame.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use concord_core::codec::{Codec, CodecError};
use concord_core::id::{NodeId, NodeInfo};
use concord_core::transport::{Incoming, Transport, TransportError};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::auth::{self, Challenge, HandshakeError, Hello, Transcript};
use crate::backoff::Backoff;
use crate::links::{split_address, Links};
use crate::{LinkError, WsError, WsOptions};

/// Keepalive intervals without any answer before an outbound link is declared down.
const KEEPALIVE_MISSES_MAX: u32 = 3;

/// Any byte stream a WebSocket can run over: plain TCP or TLS.
trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}
type Socket = WebSocketStream<Box<dyn ByteStream>>;

/// A WebSocket [`Transport`]; see the crate documentation.
pub struct WsTransport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

/// Counters for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsStats {
    /// Inbound connections refused before or during the handshake (bad secret, unknown peer,
    /// malformed handshake, timeout, too many handshakes at once).
    pub handshakes_refused: u64,
    /// Inbound connections closed because an authenticated peer sent a bad or oversized frame.
    pub links_closed_for_bad_frames: u64,
}

struct Shared {
    options: WsOptions,
    codec: Codec,
    websocket_config: WebSocketConfig,
    tls: Option<(tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector)>,
    runtime: tokio::runtime::Handle,
    /// Peers, their send queues and link status, and the inbox (shared with the other transports).
    links: Links,
    inbound: Mutex<BTreeMap<NodeId, InboundLink>>,
    accept_task: Mutex<Option<AbortHandle>>,
    handshakes_in_progress: AtomicUsize,
    next_connection: AtomicU64,
    handshakes_refused: AtomicU64,
    links_closed_for_bad_frames: AtomicU64,
}

/// An authenticated inbound connection; dropping it closes the connection.
struct InboundLink {
    connection: u64,
    _stop: oneshot::Sender<()>,
}

impl WsTransport {
    /// Validates `options`, binds the listen address and starts accepting peers. Must be called
    /// inside a tokio runtime; the transport's tasks run on it.
    pub async fn bind(options: WsOptions) -> Result<Arc<WsTransport>, WsError> {
        options.validate()?;
        let listener = TcpListener::bind(options.listen_address)
            .await
            .map_err(|source| WsError::Bind { address: options.listen_address, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| WsError::Bind { address: options.listen_address, source })?;
        let websocket_config = WebSocketConfig::default()
            .max_message_size(Some(options.frame_bytes_max))
            .max_frame_size(Some(options.frame_bytes_max));
        let tls = options.tls.as_ref().map(|tls| {
            (
                tokio_rustls::TlsAcceptor::from(tls.server.clone()),
                tokio_rustls::TlsConnector::from(tls.client.clone()),
            )
        });
        let links = Links::new(
            options.node_id.clone(),
            options.frame_bytes_max,
            options.send_queue_frames_max,
            options.receive_queue_frames_max,
        );
        let shared = Arc::new(Shared {
            codec: Codec { max_frame_bytes: options.frame_bytes_max, compression_threshold_bytes: None },
            options,
            websocket_config,
            tls,
            runtime: tokio::runtime::Handle::current(),
            links,
            inbound: Mutex::new(BTreeMap::new()),
            accept_task: Mutex::new(None),
            handshakes_in_progress: AtomicUsize::new(0),
            next_connection: AtomicU64::new(1),
            handshakes_refused: AtomicU64::new(0),
            links_closed_for_bad_frames: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        *shared.accept_task.lock() = Some(accept.abort_handle());
        Ok(Arc::new(WsTransport { shared, local_addr }))
    }

    /// The address the transport listens on (with the OS-chosen port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.shared.options.node_id
    }

    /// Counters since the transport started.
    pub fn stats(&self) -> WsStats {
        WsStats {
            handshakes_refused: self.shared.handshakes_refused.load(Ordering::Relaxed),
            links_closed_for_bad_frames: self.shared.links_closed_for_bad_frames.load(Ordering::Relaxed),
        }
    }
}

impl Drop for WsTransport {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}

impl Shared {
    fn shut_down(&self) {
        self.links.shut_down();
        if let Some(accept) = self.accept_task.lock().take() {
            accept.abort();
        }
        self.inbound.lock().clear();
    }
}

#[async_trait]
impl Transport for WsTransport {
    /// Queues `frames` for `to`, all or none: if the peer's queue has no room for all of them the
    /// call fails with `QueueFull` and queues nothing. While the link is down (peer restarting,
    /// reconnect backoff) frames wait in the queue up to its limit; frames being written when a
    /// link breaks are lost, which the mechanisms tolerate.
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
        self.shared.inbound.lock().remove(peer);
    }

    async fn close(&self) {
        self.shared.shut_down();
    }
}

/// Splits `ws://host:port/path`, `wss://…`, `tcp://…` or `host:port` into `host:port` and the host
/// alone (for TLS name checks).
pub(crate) fn parse_address(address: &str) -> Result<(String, String), LinkError> {
    let (authority, host) = split_address(address, &["ws://", "wss://", "tcp://"])
        .map_err(|reason| LinkError::Address { address: address.to_owned(), reason: reason.to_owned() })?;
    Ok((authority.to_owned(), host.to_owned()))
}

/// Keeps one outbound link to `peer` alive until the task is aborted: dial, authenticate, write
/// queued frames in batches, and on any failure back off and dial again.
async fn run_outbound(shared: Arc<Shared>, peer: NodeId, address: String, mut queue: mpsc::Receiver<Bytes>) {
    let options = &shared.options;
    let (min, max) = (options.reconnect_backoff_min, options.reconnect_backoff_max);
    let mut backoff = Backoff::for_link(min, max, options.node_id.as_str(), peer.as_str());
    loop {
        match tokio::time::timeout(options.handshake_timeout, dial(&shared, &peer, &address)).await {
            Ok(Ok(socket)) => {
                backoff.reset();
                shared.links.set_link_up(&peer, true);
                tracing::debug!(node = %options.node_id, %peer, "link up");
                let outcome = pump(&shared, socket, &mut queue).await;
                shared.links.set_link_up(&peer, false);
                let Some(error) = outcome else {
                    return; // The peer was removed: its queue is gone.
                };
                tracing::info!(node = %options.node_id, %peer, %error, "link down; reconnecting");
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

/// Connects to `peer` and runs the dialer's side of the handshake.
async fn dial(shared: &Shared, peer: &NodeId, address: &str) -> Result<Socket, LinkError> {
    let options = &shared.options;
    let (authority, host) = parse_address(address)?;
    let tcp = TcpStream::connect(authority.as_str()).await?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn ByteStream> = match &shared.tls {
        Some((_, connector)) => {
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|error| {
                LinkError::Address { address: address.to_owned(), reason: error.to_string() }
            })?;
            Box::new(connector.connect(name, tcp).await?)
        }
        None => Box::new(tcp),
    };
    let scheme = if shared.tls.is_some() { "wss" } else { "ws" };
    let (mut socket, _response) = tokio_tungstenite::client_async_with_config(
        format!("{scheme}://{authority}/concord"),
        stream,
        Some(shared.websocket_config),
    )
    .await?;
    let hello = Hello {
        cluster_id: options.cluster_id,
        node_id: options.node_id.clone(),
        nonce: auth::fresh_nonce()?,
    };
    socket.send(Message::Binary(auth::encode_hello(&hello).into())).await?;
    let challenge: Challenge = auth::decode_challenge(&next_binary(&mut socket).await?)?;
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
    socket.send(Message::Binary(auth::encode_proof(&transcript.dialer_proof()).into())).await?;
    auth::decode_welcome(&next_binary(&mut socket).await?)?;
    Ok(socket)
}

/// The next binary message of the handshake; pings are skipped, anything else ends it.
async fn next_binary(socket: &mut Socket) -> Result<Bytes, LinkError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(data))) => return Ok(data),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Err(HandshakeError::Closed.into()),
            Some(Ok(_)) => return Err(HandshakeError::Malformed("expected a binary message").into()),
            Some(Err(error)) => return Err(error.into()),
        }
    }
}

/// Writes queued frames to an authenticated outbound link until it fails (the error says why) or
/// the queue is dropped (the peer was removed: `None`). Feeds a batch, then flushes once.
async fn pump(shared: &Shared, socket: Socket, queue: &mut mpsc::Receiver<Bytes>) -> Option<LinkError> {
    let options = &shared.options;
    let (mut sink, mut stream) = socket.split();
    let mut keepalive = tokio::time::interval(options.keepalive_interval);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            frame = queue.recv() => {
                let Some(frame) = frame else {
                    let _ = sink.close().await;
                    return None;
                };
                if let Err(error) = sink.feed(Message::Binary(frame)).await {
                    return Some(error.into());
                }
                for _ in 1..options.write_batch_frames_max {
                    let Ok(frame) = queue.try_recv() else { break };
                    if let Err(error) = sink.feed(Message::Binary(frame)).await {
                        return Some(error.into());
                    }
                }
                if let Err(error) = sink.flush().await {
                    return Some(error.into());
                }
            }
            message = stream.next() => match message {
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => last_heard = tokio::time::Instant::now(),
                Some(Ok(Message::Close(_))) | None => return Some(LinkError::ClosedByPeer),
                Some(Ok(_)) => return Some(LinkError::UnexpectedMessage("data on an outbound link")),
                Some(Err(error)) => return Some(error.into()),
            },
            _ = keepalive.tick() => {
                if last_heard.elapsed() > options.keepalive_interval * KEEPALIVE_MISSES_MAX {
                    return Some(LinkError::KeepaliveTimeout);
                }
                if let Err(error) = sink.send(Message::Ping(Bytes::new())).await {
                    return Some(error.into());
                }
            }
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.handshakes_in_progress.load(Ordering::Acquire) >= shared.options.handshakes_in_progress_max
        {
            shared.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, "too many handshakes in progress; closing the connection");
            continue;
        }
        shared.handshakes_in_progress.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(run_inbound(shared.clone(), tcp, remote));
    }
}

/// Authenticates one inbound connection, then reads its frames into the inbox until it closes,
/// misbehaves, or is replaced by a newer connection from the same peer.
async fn run_inbound(shared: Arc<Shared>, tcp: TcpStream, remote: SocketAddr) {
    let accepted = tokio::time::timeout(shared.options.handshake_timeout, accept(&shared, tcp)).await;
    shared.handshakes_in_progress.fetch_sub(1, Ordering::AcqRel);
    let (peer, mut socket) = match accepted {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(error)) => {
            shared.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %shared.options.node_id, %remote, %error, "refused a connection");
            return;
        }
        Err(_) => {
            shared.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            let error = LinkError::Handshake(HandshakeError::Timeout);
            tracing::warn!(node = %shared.options.node_id, %remote, %error, "refused a connection");
            return;
        }
    };
    let connection = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let (stop_sender, mut stop) = oneshot::channel();
    {
        let mut inbound = shared.inbound.lock();
        if shared.links.is_closed() || !shared.links.contains(&peer) {
            return;
        }
        // A peer that restarted dials again while its old connection may linger: the newest wins.
        inbound.insert(peer.clone(), InboundLink { connection, _stop: stop_sender });
    }
    let error = loop {
        let message = tokio::select! {
            _ = &mut stop => return,
            message = socket.next() => message,
        };
        match message {
            Some(Ok(Message::Binary(frame))) => {
                if let Err(error) = check_frame(&shared.codec, &frame) {
                    shared.links_closed_for_bad_frames.fetch_add(1, Ordering::Relaxed);
                    break Some(error);
                }
                // Bounded: when the application falls behind this waits, reading stops, TCP pushes
                // back, and the sender's queue fills up instead of our memory.
                match shared.links.inbox_sender().try_send((peer.clone(), frame)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                    Err(mpsc::error::TrySendError::Full(item)) => tokio::select! {
                        _ = &mut stop => return,
                        sent = shared.links.inbox_sender().send(item) => if sent.is_err() { return },
                    },
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => break None,
            Some(Ok(Message::Text(_))) => break Some(LinkError::UnexpectedMessage("text")),
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                shared.links_closed_for_bad_frames.fetch_add(1, Ordering::Relaxed);
                break Some(LinkError::FrameTooLarge { limit: shared.options.frame_bytes_max });
            }
            Some(Err(error)) => break Some(error.into()),
        }
    };
    if let Some(error) = error {
        tracing::warn!(node = %shared.options.node_id, %peer, %error, "closing inbound link");
        let _ = socket.close(None).await;
    }
    let mut inbound = shared.inbound.lock();
    if inbound.get(&peer).is_some_and(|link| link.connection == connection) {
        inbound.remove(&peer);
    }
}

/// The listener's side of the handshake; returns the authenticated peer.
async fn accept(shared: &Shared, tcp: TcpStream) -> Result<(NodeId, Socket), LinkError> {
    let options = &shared.options;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn ByteStream> = match &shared.tls {
        Some((acceptor, _)) => Box::new(acceptor.accept(tcp).await?),
        None => Box::new(tcp),
    };
    let mut socket =
        tokio_tungstenite::accept_async_with_config(stream, Some(shared.websocket_config)).await?;
    let hello = auth::decode_hello(&next_binary(&mut socket).await?)?;
    shared.links.admit(&hello, options.cluster_id)?;
    let nonce = auth::fresh_nonce()?;
    let transcript = Transcript {
        secret: &options.cluster_secret,
        cluster_id: options.cluster_id,
        dialer: &hello.node_id,
        listener: &options.node_id,
        dialer_nonce: &hello.nonce,
        listener_nonce: &nonce,
    };
    let challenge = Challenge { node_id: options.node_id.clone(), nonce, proof: transcript.listener_proof() };
    socket.send(Message::Binary(auth::encode_challenge(&challenge).into())).await?;
    let proof = auth::decode_proof(&next_binary(&mut socket).await?)?;
    transcript.verify_dialer(&proof)?;
    socket.send(Message::Binary(auth::encode_welcome().into())).await?;
    Ok((hello.node_id, socket))
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
        assert_eq!(parse_address("ws://10.0.0.2:7000").unwrap(), ("10.0.0.2:7000".into(), "10.0.0.2".into()));
        assert_eq!(parse_address("wss://node-1:7000/x").unwrap(), ("node-1:7000".into(), "node-1".into()));
        assert_eq!(parse_address("localhost:5002").unwrap(), ("localhost:5002".into(), "localhost".into()));
        assert_eq!(parse_address("[::1]:5002").unwrap(), ("[::1]:5002".into(), "::1".into()));
        for bad in ["", "ws://", "host", "host:port", ":80", "ws://host:99999"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_are_checked_against_their_length_prefix_and_the_limit() {
        let codec = Codec { max_frame_bytes: 64, compression_threshold_bytes: None };
        let mut frame = vec![0, 0, 0, 4, 1, 0, 9, 9];
        assert!(check_frame(&codec, &frame).is_ok());
        frame.push(0);
        assert!(matches!(check_frame(&codec, &frame), Err(LinkError::FrameLengthMismatch { .. })));
        assert!(matches!(check_frame(&codec, &[0, 0]), Err(LinkError::BadFrame(_))));
        assert!(matches!(check_frame(&codec, &[0, 0, 1, 0, 1, 0]), Err(LinkError::BadFrame(_))));
    }
}
