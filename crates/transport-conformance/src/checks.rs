//! The point-to-point checks.

use std::time::Duration;

use bytes::Bytes;
use concord_core::id::{ClusterId, NodeId};
use concord_core::transport::{Incoming, TransportError};

use crate::support::*;

/// Frames arrive intact, and `recv` names the node that sent them, in both directions.
pub async fn delivery(factory: &dyn TransportFactory) {
    bounded("delivery", Duration::from_secs(30), async {
        let a = factory.create(NodeSpec::new("a", Limits::default())).await;
        let b = factory.create(NodeSpec::new("b", Limits::default())).await;
        connect(&a, &b);
        let frames: Vec<Bytes> = (0..100).map(|i| codec_frame(i, 14 + i as usize * 7)).collect();
        send_patiently(&a, &b.info.id, frames.clone()).await;
        for expected in &frames {
            let (from, frame) = next_frame(&b, Duration::from_secs(10)).await.expect("b receives a's frames");
            assert_eq!(from, a.info.id, "recv must report the authenticated sender");
            assert_eq!(&frame, expected, "frames arrive intact and, on one link, in order");
        }
        let reply = codec_frame(7, 32);
        send_patiently(&b, &a.info.id, vec![reply.clone()]).await;
        assert_eq!(next_frame(&a, Duration::from_secs(10)).await, Some((b.info.id.clone(), reply)));
        assert!(matches!(
            a.transport.send(&NodeId::new("nobody"), vec![codec_frame(0, 16)]).await,
            Err(TransportError::UnknownPeer(_))
        ));
        close_all(&[&a, &b]).await;
        assert!(matches!(
            a.transport.send(&b.info.id, vec![codec_frame(0, 16)]).await,
            Err(TransportError::Closed)
        ));
    })
    .await;
}

/// Frames on one link arrive in the order sent, while two senders write to the same receiver.
pub async fn ordering(factory: &dyn TransportFactory) {
    const FRAMES: u64 = 5_000;
    bounded("ordering", Duration::from_secs(60), async {
        let limits = Limits::default();
        let a = factory.create(NodeSpec::new("a", limits)).await;
        let b = factory.create(NodeSpec::new("b", limits)).await;
        let c = factory.create(NodeSpec::new("c", limits)).await;
        connect(&a, &b);
        connect(&c, &b);
        let to = b.info.id.clone();
        let senders = [&a, &c].map(|sender| {
            let transport = sender.transport.clone();
            let info = sender.info.clone();
            let to = to.clone();
            tokio::spawn(async move {
                let node = TestNode { transport, info, refused_handshakes: None };
                // One frame per call: a transport may queue part of a batch before reporting
                // `QueueFull` (the memory transport does), and a retried batch would then repeat
                // frames. Batches are covered by `delivery`.
                for sequence in 0..FRAMES {
                    send_patiently(&node, &to, vec![codec_frame(sequence, 64)]).await;
                }
            })
        });
        let mut next = [0u64; 2];
        while next != [FRAMES, FRAMES] {
            let (from, frame) = next_frame(&b, Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("stalled after {next:?} frames"));
            let link = if from == a.info.id { 0 } else { 1 };
            assert_eq!(frame_sequence(&frame), next[link], "frames from {from} out of order");
            next[link] += 1;
        }
        for sender in senders {
            sender.await.expect("sender task");
        }
        close_all(&[&a, &b, &c]).await;
    })
    .await;
}

/// A frame exactly at the limit passes. One byte more is refused by `send`, and a receiver with a
/// smaller limit than its sender drops it (closing that connection) without passing it on; the
/// link then recovers.
pub async fn frame_size_limit(factory: &dyn TransportFactory) {
    if !factory.capabilities().enforces_frame_limit {
        return; // Nothing to check: this transport promises no frame limit (the codec enforces one).
    }
    bounded("frame_size_limit", Duration::from_secs(60), async {
        let limit = Limits::default().frame_bytes_max;
        let receiver = factory.create(NodeSpec::new("receiver", Limits::default())).await;
        let same = factory.create(NodeSpec::new("same", Limits::default())).await;
        let bigger_limits = Limits { frame_bytes_max: limit * 2, ..Limits::default() };
        let bigger = factory.create(NodeSpec::new("bigger", bigger_limits)).await;
        connect(&same, &receiver);
        connect(&bigger, &receiver);
        let to = receiver.info.id.clone();

        let at_limit = codec_frame(1, limit);
        send_patiently(&same, &to, vec![at_limit.clone()]).await;
        assert_eq!(
            next_frame(&receiver, Duration::from_secs(10)).await,
            Some((same.info.id.clone(), at_limit))
        );
        assert_eq!(
            same.transport.send(&to, vec![codec_frame(2, limit + 1)]).await,
            Err(TransportError::FrameTooLarge { size: limit + 1, limit }),
            "send refuses a frame above the limit"
        );

        send_patiently(&bigger, &to, vec![codec_frame(3, limit + 1)]).await;
        let marker = codec_frame(4, 100);
        deliver_marker(&bigger, &receiver, marker, Duration::from_secs(20), |from, frame| {
            assert!(frame.len() <= limit, "{} bytes from {from} passed a limit of {limit}", frame.len());
        })
        .await;
        close_all(&[&receiver, &same, &bigger]).await;
    })
    .await;
}

/// Malformed frames from an authenticated peer never reach `recv` (where the transport validates
/// frames), never panic, and the link recovers after each.
pub async fn garbage_frames(factory: &dyn TransportFactory) {
    let validates = factory.capabilities().validates_frames;
    bounded("garbage_frames", Duration::from_secs(90), async {
        let limits = Limits::default();
        let a = factory.create(NodeSpec::new("a", limits)).await;
        let b = factory.create(NodeSpec::new("b", limits)).await;
        connect(&a, &b);
        let mut oversized_prefix = codec_frame(0, 64).to_vec();
        oversized_prefix[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut short_prefix = codec_frame(0, 64).to_vec();
        short_prefix[0..4].copy_from_slice(&10u32.to_be_bytes());
        let mut long_prefix = codec_frame(0, 64).to_vec();
        long_prefix[0..4].copy_from_slice(&100u32.to_be_bytes());
        let garbage: Vec<Bytes> = vec![
            Bytes::new(),
            Bytes::from_static(&[0, 0, 1]),
            Bytes::from_static(&[0, 0, 0, 0]),
            Bytes::from(oversized_prefix),
            Bytes::from(short_prefix),
            Bytes::from(long_prefix),
            Bytes::from((0..200u32).map(|i| (i * 37 % 256) as u8).collect::<Vec<_>>()),
        ];
        for (round, bad) in garbage.iter().enumerate() {
            send_patiently(&a, &b.info.id, vec![bad.clone()]).await;
            let marker = codec_frame(1_000 + round as u64, 40);
            deliver_marker(&a, &b, marker, Duration::from_secs(20), |from, frame| {
                assert_eq!(*from, a.info.id);
                if validates {
                    assert!(!garbage.contains(frame), "garbage frame {frame:?} reached recv");
                }
            })
            .await;
        }
        close_all(&[&a, &b]).await;
    })
    .await;
}

/// A peer without the secret, with a wrong secret, with an id that is not a configured peer, or
/// from another cluster is refused, and none of its frames reach `recv`.
pub async fn unauthenticated_peers_refused(factory: &dyn TransportFactory) {
    if !factory.capabilities().authenticates {
        return; // Nothing to check: this transport has no notion of peers it could refuse.
    }
    bounded("unauthenticated_peers_refused", Duration::from_secs(60), async {
        let limits = Limits::default();
        let target = factory.create(NodeSpec::new("target", limits)).await;
        let friend = factory.create(NodeSpec::new("friend", limits)).await;
        connect(&friend, &target);
        let wrong_secret = factory
            .create(NodeSpec {
                secret: b"not the cluster secret at all!!".to_vec(),
                ..NodeSpec::new("mallory", limits)
            })
            .await;
        let stranger = factory.create(NodeSpec::new("stranger", limits)).await;
        let other_cluster =
            factory.create(NodeSpec { cluster_id: ClusterId(2), ..NodeSpec::new("other", limits) }).await;
        // The target expects mallory and other (so only the secret or cluster refuses them) but not
        // the stranger.
        target.transport.add_peer(&wrong_secret.info).expect("add peer");
        target.transport.add_peer(&other_cluster.info).expect("add peer");
        let intruders = [&wrong_secret, &stranger, &other_cluster];
        for intruder in intruders {
            intruder.transport.add_peer(&target.info).expect("add peer");
        }
        let attack = codec_frame(666, 64);
        let refused_before = target.refused_handshakes.as_ref().map(|count| count());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut received_from_friend = 0;
        let mut round = 0u64;
        loop {
            for intruder in intruders {
                let _ = intruder.transport.send(&target.info.id, vec![attack.clone()]).await;
            }
            factory.send_without_handshake(&target.info, vec![attack.clone()]).await;
            let marker = codec_frame(round, 64);
            round += 1;
            send_patiently(&friend, &target.info.id, vec![marker]).await;
            while let Some((from, frame)) = next_frame(&target, Duration::from_millis(50)).await {
                assert_eq!(from, friend.info.id, "a frame from {from} got through");
                assert_ne!(frame, attack, "an intruder's frame got through");
                received_from_friend += 1;
            }
            // Enough attempts seen: each intruder and the raw connection were refused at least once.
            let refused_enough = match (&target.refused_handshakes, refused_before) {
                (Some(count), Some(before)) => count() >= before + 4 * 2,
                _ => round >= 50,
            };
            if refused_enough && received_from_friend > 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "intruders were not refused often enough in 30 s"
            );
        }
        for intruder in intruders {
            while let Ok(Ok(event)) =
                tokio::time::timeout(Duration::from_millis(10), intruder.transport.recv()).await
            {
                assert!(
                    !matches!(&event, Incoming::PeerConnected(id) if *id == target.info.id),
                    "{} was let in",
                    intruder.info.id
                );
            }
        }
        close_all(&[&target, &friend, &wrong_secret, &stranger, &other_cluster]).await;
    })
    .await;
}

/// A peer that stops and comes back on the same address is reached again within a bounded time,
/// both ways, and the link changes are reported.
pub async fn peer_restart(factory: &dyn TransportFactory) {
    let reports = factory.capabilities().reports_link_status;
    bounded("peer_restart", Duration::from_secs(90), async {
        let limits = Limits::default();
        let a = factory.create(NodeSpec::new("a", limits)).await;
        let b = factory.create(NodeSpec::new("b", limits)).await;
        connect(&a, &b);
        deliver_marker(&a, &b, codec_frame(1, 32), Duration::from_secs(10), |_, _| {}).await;
        if reports {
            wait_for_link(&a, &b.info.id, true, Duration::from_secs(10)).await;
        }
        b.transport.close().await;
        let address = b.info.address.clone();
        drop(b);
        let b_id = NodeId::new("b");
        if reports {
            // Frames sent meanwhile make a transport that only notices on write notice.
            let probe = async {
                loop {
                    let _ = a.transport.send(&b_id, vec![codec_frame(2, 32)]).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = wait_for_link(&a, &b_id, false, Duration::from_secs(20)) => {}
                _ = probe => unreachable!("the probe loops forever"),
            }
        }
        let restarted =
            factory.create(NodeSpec { listen_address: Some(address), ..NodeSpec::new("b", limits) }).await;
        restarted.transport.add_peer(&a.info).expect("add peer");
        let took =
            deliver_marker(&a, &restarted, codec_frame(3, 32), Duration::from_secs(30), |_, _| {}).await;
        tracing::info!(?took, "delivery resumed after the restart");
        deliver_marker(&restarted, &a, codec_frame(4, 32), Duration::from_secs(30), |_, _| {}).await;
        close_all(&[&a, &restarted]).await;
    })
    .await;
}

/// A receiver that stops calling `recv` makes the sender's `send` fail with `QueueFull` after a
/// bounded number of frames (memory stays bounded); once it reads again, the frames that were
/// accepted arrive in order and the link works.
pub async fn slow_receiver(factory: &dyn TransportFactory) {
    // Ample for the queues plus what TCP buffers hold on loopback; a transport that never pushes
    // back fails here instead of growing without bound.
    const ATTEMPTS_MAX: u64 = 20_000;
    const FRAME_BYTES: usize = 16 * 1024;
    bounded("slow_receiver", Duration::from_secs(90), async {
        let limits = Limits { send_queue_frames_max: 64, receive_queue_frames_max: 64, ..Limits::default() };
        let a = factory.create(NodeSpec::new("a", limits)).await;
        let b = factory.create(NodeSpec::new("b", limits)).await;
        connect(&a, &b);
        deliver_marker(&a, &b, codec_frame(u64::MAX, 32), Duration::from_secs(10), |_, _| {}).await;
        let mut accepted = 0u64;
        let mut full = false;
        let fill_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while accepted < ATTEMPTS_MAX && tokio::time::Instant::now() < fill_deadline {
            match a.transport.send(&b.info.id, vec![codec_frame(accepted, FRAME_BYTES)]).await {
                Ok(()) => accepted += 1,
                Err(TransportError::QueueFull { limit, .. }) => {
                    assert!(limit > 0);
                    full = true;
                    break;
                }
                Err(error) => panic!("send failed: {error}"),
            }
            if accepted % 64 == 0 {
                tokio::task::yield_now().await; // let the writer run, as a real application would
            }
        }
        assert!(full, "the send queue never filled: {accepted} frames of {FRAME_BYTES} bytes accepted");
        tracing::info!(accepted, "send queue full");
        let mut expected = 0u64;
        let mut received = 0u64;
        while let Some((_, frame)) = next_frame(&b, Duration::from_secs(3)).await {
            let sequence = frame_sequence(&frame);
            if sequence == u64::MAX {
                continue;
            }
            assert!(
                sequence >= expected && sequence < accepted,
                "frame {sequence} out of order or never accepted"
            );
            expected = sequence + 1;
            received += 1;
            if expected == accepted {
                break;
            }
        }
        assert!(received > 0, "nothing arrived once the receiver read again");
        deliver_marker(&a, &b, codec_frame(u64::MAX - 1, 32), Duration::from_secs(20), |_, _| {}).await;
        close_all(&[&a, &b]).await;
    })
    .await;
}

/// Membership changes: a removed peer can no longer be sent to, and (where the transport
/// authenticates) a peer removed on the receiving side is refused from then on; adding it back
/// restores delivery both ways.
pub async fn membership_changes(factory: &dyn TransportFactory) {
    let capabilities = factory.capabilities();
    if !capabilities.tracks_membership {
        return; // Nothing to check: this transport reaches every node of its network regardless.
    }
    let authenticates = capabilities.authenticates;
    bounded("membership_changes", Duration::from_secs(60), async {
        let limits = Limits::default();
        let a = factory.create(NodeSpec::new("a", limits)).await;
        let b = factory.create(NodeSpec::new("b", limits)).await;
        connect(&a, &b);
        deliver_marker(&a, &b, codec_frame(1, 32), Duration::from_secs(10), |_, _| {}).await;

        a.transport.remove_peer(&b.info.id);
        assert!(matches!(
            a.transport.send(&b.info.id, vec![codec_frame(2, 32)]).await,
            Err(TransportError::UnknownPeer(_))
        ));
        a.transport.add_peer(&b.info).expect("add peer again");
        deliver_marker(&a, &b, codec_frame(3, 32), Duration::from_secs(20), |_, _| {}).await;

        if authenticates {
            let refused = b.refused_handshakes.clone();
            let refused_before = refused.as_ref().map(|count| count());
            b.transport.remove_peer(&a.info.id);
            // Frames queued before the removal may still be in b's receive queue: drain them.
            while next_frame(&b, Duration::from_millis(100)).await.is_some() {}
            // a keeps sending; its link to b breaks and every new handshake is refused.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let rejected = codec_frame(4, 32);
            loop {
                let _ = a.transport.send(&b.info.id, vec![rejected.clone()]).await;
                if let Some((from, frame)) = next_frame(&b, Duration::from_millis(20)).await {
                    // Only what was already in flight when the peer was removed can still arrive.
                    assert_eq!(from, a.info.id);
                    assert_ne!(
                        frame, rejected,
                        "a removed peer's new frames were delivered after it was refused"
                    );
                }
                let refused_now = refused.as_ref().map(|count| count());
                if refused_now > refused_before {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "the removed peer was never refused");
            }
            b.transport.add_peer(&a.info).expect("add peer again");
            deliver_marker(&a, &b, codec_frame(5, 32), Duration::from_secs(20), |_, _| {}).await;
        }
        close_all(&[&a, &b]).await;
    })
    .await;
}

/// A peer whose configured address reaches another node of the cluster: the dialer notices that
/// the listener is not the node it meant to reach, and the other node receives nothing addressed
/// to the first.
pub async fn misaddressed_peer(factory: &dyn TransportFactory) {
    if !factory.capabilities().authenticates {
        return; // Nothing to check: without a handshake a transport cannot tell who answered.
    }
    bounded("misaddressed_peer", Duration::from_secs(60), async {
        let limits = Limits::default();
        let a = factory.create(NodeSpec::new("a", limits)).await;
        let b = factory.create(NodeSpec::new("b", limits)).await;
        let c = factory.create(NodeSpec::new("c", limits)).await;
        // a believes b lives at c's address; c knows a (so only the identity check can catch it).
        let wrong = concord_core::id::NodeInfo::new(b.info.id.clone(), c.info.address.clone());
        a.transport.add_peer(&wrong).expect("add peer");
        c.transport.add_peer(&a.info).expect("add peer");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let _ = a.transport.send(&b.info.id, vec![codec_frame(9, 32)]).await;
            assert_eq!(
                next_frame(&c, Duration::from_millis(50)).await,
                None,
                "c received frames meant for b"
            );
        }
        while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(10), a.transport.recv()).await {
            assert!(
                !matches!(event, Incoming::PeerConnected(_)),
                "a's link to the wrong node came up: {event:?}"
            );
        }
        close_all(&[&a, &b, &c]).await;
    })
    .await;
}
