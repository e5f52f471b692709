use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use concord_core::id::NodeInfo;
use concord_transport_conformance::{Capabilities, NodeSpec, TestNode, TransportFactory};
use concord_transport_zmq::{ZmqOptions, ZmqTransport};
use tokio::io::AsyncWriteExt;
use zeromq::{Socket, SocketSend};

/// Makes ZeroMQ nodes on 127.0.0.1.
#[derive(Default)]
pub struct ZmqFactory;

pub fn options_for(spec: &NodeSpec) -> ZmqOptions {
    let mut options = ZmqOptions::new(spec.id.clone(), spec.cluster_id, &spec.secret);
    options.frame_bytes_max = spec.limits.frame_bytes_max;
    options.in_flight_bytes_max = options.in_flight_bytes_max.max(spec.limits.frame_bytes_max);
    options.send_queue_frames_max = spec.limits.send_queue_frames_max;
    options.receive_queue_frames_max = spec.limits.receive_queue_frames_max;
    // Short timers so that restarts are noticed quickly on loopback, with room for a loaded machine.
    options.reconnect_backoff_min = Duration::from_millis(20);
    options.reconnect_backoff_max = Duration::from_millis(500);
    options.heartbeat_interval = Duration::from_millis(200);
    options.liveness_timeout = Duration::from_secs(2);
    // A refused dialer hears nothing (refusals are silent) and gives up after this.
    options.handshake_timeout = Duration::from_secs(2);
    options
}

pub fn socket_address(address: &str) -> SocketAddr {
    address.trim_start_matches("tcp://").parse().unwrap_or_else(|_| panic!("bad test address {address}"))
}

pub async fn bind_retrying(options: ZmqOptions) -> Arc<ZmqTransport> {
    // A restarted node takes its old port back; the old socket may take a moment to go.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ZmqTransport::bind(options.clone()).await {
            Ok(transport) => return transport,
            Err(error) if error.is_address_in_use() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("bind failed: {error}"),
        }
    }
}

#[async_trait]
impl TransportFactory for ZmqFactory {
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
        let mut options = options_for(&spec);
        if let Some(address) = &spec.listen_address {
            options.listen_address = socket_address(address);
        }
        let transport = bind_retrying(options).await;
        let info = NodeInfo::new(spec.id.clone(), format!("tcp://{}", transport.local_addr()));
        let counter = transport.clone();
        TestNode {
            transport,
            info,
            refused_handshakes: Some(Arc::new(move || counter.stats().handshakes_refused)),
        }
    }

    async fn send_without_handshake(&self, target: &NodeInfo, frames: Vec<Bytes>) {
        // A DEALER that skips the handshake and sends data messages at once.
        let mut dealer = zeromq::DealerSocket::new();
        let connected = tokio::time::timeout(Duration::from_secs(2), dealer.connect(&target.address))
            .await
            .is_ok_and(|r| r.is_ok());
        if connected {
            let mut parts = vec![Bytes::from_static(b"D")];
            parts.extend(frames.iter().cloned());
            if let Ok(message) = zeromq::ZmqMessage::try_from(parts) {
                let _ = tokio::time::timeout(Duration::from_secs(2), dealer.send(message)).await;
            }
        }
        // Raw bytes that are not even ZeroMQ.
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(socket_address(&target.address)).await {
            for frame in &frames {
                let _ = tcp.write_all(frame).await;
            }
            let _ = tcp.flush().await;
        }
    }
}
