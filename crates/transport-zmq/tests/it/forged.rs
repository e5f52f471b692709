//! A dialer that ignores the listener's proof and sends a forged proof of its own (what an attacker
//! without the secret can do at best) is refused, and the frames it sends after are never delivered.

use std::time::Duration;

use bytes::Bytes;
use concord_core::transport::Incoming;
use concord_transport_conformance::{codec_frame, Limits, NodeSpec, TransportFactory};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::support::ZmqFactory;

/// The handshake's Hello, written out byte by byte (magic, kind, cluster id, nonce, id).
fn hello(cluster: u64, id: &str) -> Vec<u8> {
    let mut message = b"CCH1H".to_vec();
    message.extend_from_slice(&cluster.to_be_bytes());
    message.extend_from_slice(&[7; 32]);
    message.push(id.len() as u8);
    message.extend_from_slice(id.as_bytes());
    message
}

fn message(parts: Vec<Bytes>) -> ZmqMessage {
    ZmqMessage::try_from(parts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_proof_is_refused_and_nothing_after_it_is_delivered() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let target = ZmqFactory.create(NodeSpec::new("target", Limits::default())).await;
        // "mallory" is a configured peer: only the proof can keep it out.
        let mallory = ZmqFactory.create(NodeSpec::new("mallory", Limits::default())).await;
        target.transport.add_peer(&mallory.info).unwrap();
        mallory.transport.close().await;
        let refused = target.refused_handshakes.clone().unwrap();
        let before = refused();

        let mut dealer = zeromq::DealerSocket::new();
        dealer.connect(&target.info.address).await.unwrap();
        dealer.send(message(vec![Bytes::from_static(b"H"), hello(1, "mallory").into()])).await.unwrap();
        let challenge = dealer.recv().await.unwrap().into_vec();
        assert!(challenge.len() == 2 && challenge[1].starts_with(b"CCH1C"), "{challenge:?}");
        let mut forged = b"CCH1P".to_vec();
        forged.extend_from_slice(&[0x42; 32]);
        dealer.send(message(vec![Bytes::from_static(b"P"), forged.into()])).await.unwrap();
        for sequence in 0..10 {
            let _ = dealer.send(message(vec![Bytes::from_static(b"D"), codec_frame(sequence, 32)])).await;
        }
        while refused() == before {
            let next = tokio::time::timeout(Duration::from_millis(10), target.transport.recv()).await;
            assert!(!matches!(next, Ok(Ok(Incoming::Frame { .. }))), "a frame got through: {next:?}");
        }
        // Refused: the connection is dropped, so nothing it sent can still arrive.
        let next = tokio::time::timeout(Duration::from_millis(200), target.transport.recv()).await;
        assert!(!matches!(next, Ok(Ok(Incoming::Frame { .. }))), "a frame got through: {next:?}");
        target.transport.close().await;
    })
    .await
    .expect("bounded");
}
