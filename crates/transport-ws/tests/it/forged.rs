//! A dialer that ignores the listener's proof and sends a forged proof of its own (what an attacker
//! without the secret can do at best) is refused, and the frames it sends after are never delivered.

use std::time::Duration;

use concord_core::transport::Incoming;
use concord_transport_conformance::{codec_frame, Limits, NodeSpec, TransportFactory};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::WsFactory;

/// The handshake's Hello, written out byte by byte (magic, kind, cluster id, nonce, id).
fn hello(cluster: u64, id: &str) -> Vec<u8> {
    let mut message = b"CCH1H".to_vec();
    message.extend_from_slice(&cluster.to_be_bytes());
    message.extend_from_slice(&[7; 32]);
    message.push(id.len() as u8);
    message.extend_from_slice(id.as_bytes());
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_proof_is_refused_and_nothing_after_it_is_delivered() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let factory = WsFactory::default();
        let target = factory.create(NodeSpec::new("target", Limits::default())).await;
        // "mallory" is a configured peer: only the proof can keep it out.
        let mallory = factory.create(NodeSpec::new("mallory", Limits::default())).await;
        target.transport.add_peer(&mallory.info).unwrap();
        mallory.transport.close().await;
        let refused = target.refused_handshakes.clone().unwrap();
        let before = refused();

        let address = target.info.address.trim_start_matches("ws://").to_owned();
        let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{address}/"), tcp).await.unwrap();
        socket.send(Message::Binary(hello(1, "mallory").into())).await.unwrap();
        let challenge = socket.next().await.unwrap().unwrap();
        assert!(matches!(&challenge, Message::Binary(body) if body.starts_with(b"CCH1C")), "{challenge:?}");
        let mut forged = b"CCH1P".to_vec();
        forged.extend_from_slice(&[0x42; 32]);
        socket.send(Message::Binary(forged.into())).await.unwrap();
        for sequence in 0..10 {
            let _ = socket.send(Message::Binary(codec_frame(sequence, 32))).await;
        }
        while refused() == before {
            let next = tokio::time::timeout(Duration::from_millis(10), target.transport.recv()).await;
            assert!(!matches!(next, Ok(Ok(Incoming::Frame { .. }))), "a frame got through: {next:?}");
        }
        // Refused: the connection is closed, so nothing it sent can still arrive.
        let next = tokio::time::timeout(Duration::from_millis(200), target.transport.recv()).await;
        assert!(!matches!(next, Ok(Ok(Incoming::Frame { .. }))), "a frame got through: {next:?}");
        target.transport.close().await;
    })
    .await
    .expect("bounded");
}
