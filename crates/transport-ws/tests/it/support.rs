use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use concord_core::id::NodeInfo;
use concord_transport_conformance::{Capabilities, NodeSpec, TestNode, TransportFactory};
use concord_transport_ws::{WsError, WsOptions, WsTls, WsTransport};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;

/// Makes WebSocket nodes on 127.0.0.1, plain or with TLS.
#[derive(Default)]
pub struct WsFactory {
    pub tls: Option<WsTls>,
}

pub fn options_for(spec: &NodeSpec, tls: Option<WsTls>) -> WsOptions {
    let mut options = WsOptions::new(spec.id.clone(), spec.cluster_id, &spec.secret);
    options.frame_bytes_max = spec.limits.frame_bytes_max;
    options.send_queue_frames_max = spec.limits.send_queue_frames_max;
    options.receive_queue_frames_max = spec.limits.receive_queue_frames_max;
    // Short timers so that restarts are noticed quickly on loopback.
    options.reconnect_backoff_min = Duration::from_millis(20);
    options.reconnect_backoff_max = Duration::from_millis(500);
    options.keepalive_interval = Duration::from_millis(500);
    options.tls = tls;
    options
}

fn socket_address(address: &str) -> SocketAddr {
    let rest = address.trim_start_matches("wss://").trim_start_matches("ws://");
    rest.parse().unwrap_or_else(|_| panic!("bad test address {address}"))
}

#[async_trait]
impl TransportFactory for WsFactory {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            authenticates: true,
            enforces_frame_limit: true,
            validates_frames: true,
            reports_link_status: true,
            tracks_membership: true,
        }
    }

    async fn create(&self, spec: NodeSpec) -> TestNode {
        let mut options = options_for(&spec, self.tls.clone());
        if let Some(address) = &spec.listen_address {
            options.listen_address = socket_address(address);
        }
        // A restarted node takes its old port back; the old socket may take a moment to go.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let transport = loop {
            match WsTransport::bind(options.clone()).await {
                Ok(transport) => break transport,
                Err(WsError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("bind failed: {error}"),
            }
        };
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let info = NodeInfo::new(spec.id.clone(), format!("{scheme}://{}", transport.local_addr()));
        let counter = transport.clone();
        TestNode {
            transport,
            info,
            refused_handshakes: Some(Arc::new(move || counter.stats().handshakes_refused)),
        }
    }

    async fn send_without_handshake(&self, target: &NodeInfo, frames: Vec<Bytes>) {
        let address = socket_address(&target.address);
        // A WebSocket client that skips the handshake and sends frames at once.
        if self.tls.is_none() {
            if let Ok(tcp) = tokio::net::TcpStream::connect(address).await {
                if let Ok((mut socket, _)) =
                    tokio_tungstenite::client_async(format!("ws://{address}/"), tcp).await
                {
                    for frame in &frames {
                        let _ =
                            socket.feed(tokio_tungstenite::tungstenite::Message::Binary(frame.clone())).await;
                    }
                    let _ = socket.flush().await;
                }
            }
        }
        // Raw bytes that are not even WebSocket.
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(address).await {
            for frame in &frames {
                let _ = tcp.write_all(frame).await;
            }
            let _ = tcp.flush().await;
        }
    }
}
