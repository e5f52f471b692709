//! The zeromq 0.7 DEALER problem: after its peer restarts, a DEALER's sends return `Ok` and are
//! lost. The transport must notice and dial again; delivery resumes within a bounded time.

use std::time::Duration;

use concord_core::id::ClusterId;
use concord_core::transport::{Incoming, Transport};
use concord_transport_conformance::{codec_frame, frame_sequence, Limits, NodeSpec, SECRET};
use concord_transport_zmq::ZmqOptions;

use crate::support::{bind_retrying, options_for};

/// Sends a numbered frame every 10 ms from `a` until `b` receives one numbered `from_sequence` or
/// later; returns how long that took.
async fn resume_time(
    a: &dyn Transport,
    b: &dyn Transport,
    b_id: &concord_core::id::NodeId,
    from_sequence: u64,
) -> Duration {
    let started = tokio::time::Instant::now();
    let mut sequence = from_sequence;
    loop {
        let _ = a.send(b_id, vec![codec_frame(sequence, 32)]).await;
        sequence += 1;
        if let Ok(Ok(Incoming::Frame { frame, .. })) =
            tokio::time::timeout(Duration::from_millis(10), b.recv()).await
        {
            if frame_sequence(&frame) >= from_sequence {
                return started.elapsed();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_within_a_bounded_time_after_the_peer_restarts_on_the_same_port() {
    const RESTARTS: u64 = 3;
    // The bound: the liveness timeout, plus the longest backoff, plus a generous margin.
    const RESUME_WITHIN: Duration = Duration::from_secs(10);
    tokio::time::timeout(Duration::from_secs(90), async {
        let options = |id: &str| -> ZmqOptions { options_for(&NodeSpec::new(id, Limits::default())) };
        let a = bind_retrying(options("a")).await;
        let mut b = bind_retrying(options("b")).await;
        let b_address = b.local_addr();
        let b_info = concord_core::id::NodeInfo::new("b", format!("tcp://{b_address}"));
        let a_info = concord_core::id::NodeInfo::new("a", format!("tcp://{}", a.local_addr()));
        a.add_peer(&b_info).unwrap();
        b.add_peer(&a_info).unwrap();
        let b_id = b_info.id.clone();
        let took = tokio::time::timeout(RESUME_WITHIN, resume_time(&*a, &*b, &b_id, 0)).await;
        assert!(took.is_ok(), "first delivery");
        for restart in 1..=RESTARTS {
            b.close().await;
            drop(b);
            let mut restarted_options = options("b");
            restarted_options.listen_address = b_address;
            b = bind_retrying(restarted_options).await;
            b.add_peer(&a_info).unwrap();
            let took = tokio::time::timeout(RESUME_WITHIN, resume_time(&*a, &*b, &b_id, restart * 1_000_000))
                .await
                .unwrap_or_else(|_| {
                    panic!("delivery did not resume within {RESUME_WITHIN:?} after restart {restart}")
                });
            println!("restart {restart}: delivery resumed after {took:?} (stats {:?})", a.stats());
        }
        a.close().await;
        b.close().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn options_are_validated() {
    let good = ZmqOptions::new("a", ClusterId(1), SECRET);
    assert!(good.validate().is_ok());
    let short_secret = ZmqOptions::new("a", ClusterId(1), b"short");
    assert!(short_secret.validate().is_err());
    let mut no_queue = good.clone();
    no_queue.send_queue_frames_max = 0;
    assert!(no_queue.validate().is_err());
    let mut deaf = good.clone();
    deaf.liveness_timeout = deaf.heartbeat_interval;
    assert!(deaf.validate().is_err());
    let mut tiny_window = good;
    tiny_window.in_flight_bytes_max = tiny_window.frame_bytes_max - 1;
    assert!(tiny_window.validate().is_err());
}

/// A peer that stops answering (here: its application stops reading, so its ROUTER stops and no
/// acknowledgement comes back) is detected by the liveness timeout and the link is rebuilt; once
/// the peer answers again, delivery resumes. This is the path that catches a DEALER whose sends
/// are silently lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_detected_and_the_link_rebuilt() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let limits = Limits { receive_queue_frames_max: 4, send_queue_frames_max: 64, ..Limits::default() };
        let options = |id: &str| -> ZmqOptions {
            let mut options = options_for(&NodeSpec::new(id, limits));
            options.heartbeat_interval = Duration::from_millis(100);
            options.liveness_timeout = Duration::from_millis(500);
            options
        };
        let a = bind_retrying(options("a")).await;
        let b = bind_retrying(options("b")).await;
        let a_info = concord_core::id::NodeInfo::new("a", format!("tcp://{}", a.local_addr()));
        let b_info = concord_core::id::NodeInfo::new("b", format!("tcp://{}", b.local_addr()));
        a.add_peer(&b_info).unwrap();
        b.add_peer(&a_info).unwrap();
        // Fill b's receive queue without reading it: b's ROUTER blocks and stops acknowledging.
        let mut sequence = 0;
        while a.stats().links_rebuilt_for_silence == 0 {
            let _ = a.send(&b_info.id, vec![codec_frame(sequence, 64)]).await;
            sequence += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // b reads again: delivery resumes with frames sent after the rebuild.
        let marker_from = sequence + 1_000_000;
        let took =
            tokio::time::timeout(Duration::from_secs(20), resume_time(&*a, &*b, &b_info.id, marker_from))
                .await
                .expect("delivery resumes once the peer answers again");
        println!("silent peer: link rebuilt, delivery resumed {took:?} after the receiver read again");
        a.close().await;
        b.close().await;
    })
    .await
    .expect("bounded");
}
