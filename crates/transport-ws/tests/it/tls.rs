//! TLS: the suite's core checks over `wss`, with a self-signed certificate made here, and a node
//! that does not trust the certificate cannot connect.

use std::sync::Arc;
use std::time::Duration;

use concord_core::transport::Incoming;
use concord_transport_conformance::{self as conformance, codec_frame, Limits, NodeSpec, TransportFactory};
use concord_transport_ws::WsTls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::WsFactory;

/// TLS configs for a certificate valid for 127.0.0.1 and localhost, trusted by the client side.
fn self_signed_tls() -> (WsTls, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("certificate");
    let certificate = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (WsTls { server: Arc::new(server), client: Arc::new(client) }, certificate)
}

fn tls_factory() -> WsFactory {
    WsFactory { tls: Some(self_signed_tls().0) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_delivery() {
    conformance::delivery(&tls_factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_unauthenticated_peers_refused() {
    conformance::unauthenticated_peers_refused(&tls_factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_peer_restart() {
    conformance::peer_restart(&tls_factory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_trust_the_certificate_cannot_connect() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let server = tls_factory().create(NodeSpec::new("server", Limits::default())).await;
        // Same secret, but its own certificate: the server's is not in its root store.
        let client = WsFactory { tls: Some(self_signed_tls().0) }
            .create(NodeSpec::new("client", Limits::default()))
            .await;
        server.transport.add_peer(&client.info).unwrap();
        client.transport.add_peer(&server.info).unwrap();
        let refused = server.refused_handshakes.clone().unwrap();
        while refused() < 3 {
            let _ = client.transport.send(&server.info.id, vec![codec_frame(1, 32)]).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The server's TLS handshakes failed (the client aborted them); nothing got through, and
        // the client never saw its link come up.
        assert!(tokio::time::timeout(Duration::from_millis(200), server.transport.recv())
            .await
            .map_or(true, |event| !matches!(event, Ok(Incoming::Frame { .. }))));
        while let Ok(Ok(event)) =
            tokio::time::timeout(Duration::from_millis(10), client.transport.recv()).await
        {
            assert!(
                !matches!(event, Incoming::PeerConnected(_)),
                "client connected without trusting the server"
            );
        }
        server.transport.close().await;
        client.transport.close().await;
    })
    .await
    .expect("bounded");
}
