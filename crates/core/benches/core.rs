//! Benchmarks of the hot paths of concord-core: the codec on a full append and on a heartbeat, and
//! the key-value state machine applying a put.

use std::hint::black_box;

use bytes::Bytes;
use concord_core::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn envelope(message: RaftMessage) -> Envelope {
    Envelope {
        cluster_id: ClusterId(1),
        from: NodeId::new("agent-001"),
        to: NodeId::new("agent-002"),
        message: Message::Raft(message),
    }
}

fn append(entries: u64) -> Envelope {
    let entries = (1..=entries)
        .map(|index| Entry {
            index: LogIndex(index),
            term: Term(4),
            timestamp_ms: 1_700_000_000_000 + index,
            payload: EntryPayload::Command(std::sync::Arc::new(Proposal {
                id: ProposalId { origin: NodeId::new("agent-001"), sequence: index },
                session: Some(ClientSession::new(77, index)),
                command: Command::Put {
                    key: format!("player_score:{index}"),
                    value: Bytes::from(index.to_le_bytes().repeat(8)),
                },
            })),
        })
        .collect();
    envelope(RaftMessage::Append {
        term: Term(4),
        prev_log_index: LogIndex(0),
        prev_log_term: Term(0),
        entries,
        leader_commit: LogIndex(0),
        read_round: 0,
    })
}

fn heartbeat() -> Envelope {
    envelope(RaftMessage::Append {
        term: Term(4),
        prev_log_index: LogIndex(1000),
        prev_log_term: Term(4),
        entries: Vec::new(),
        leader_commit: LogIndex(1000),
        read_round: 17,
    })
}

fn codec_benches(c: &mut Criterion) {
    let plain = Codec { max_frame_bytes: 16 << 20, compression_threshold_bytes: None };
    let compressing = Codec { max_frame_bytes: 16 << 20, compression_threshold_bytes: Some(4096) };
    for (name, envelope) in [("append_64", append(64)), ("heartbeat", heartbeat())] {
        for (codec_name, codec) in [("plain", &plain), ("lz4", &compressing)] {
            let frame = codec.encode(&envelope).expect("encode");
            let mut group = c.benchmark_group(format!("codec/{name}/{codec_name}"));
            group.throughput(Throughput::Bytes(frame.len() as u64));
            group
                .bench_function("encode", |b| b.iter(|| codec.encode(black_box(&envelope)).expect("encode")));
            group.bench_function("decode", |b| b.iter(|| codec.decode(black_box(&frame)).expect("decode")));
            group.finish();
        }
    }
}

fn state_machine_benches(c: &mut Criterion) {
    let mut machine = KvStateMachine::new();
    let command = Command::Put { key: "player_score".into(), value: Bytes::from_static(b"100") };
    let mut index = 0u64;
    c.bench_function("kv/apply_put", |b| {
        b.iter(|| {
            index += 1;
            let context = ApplyContext { index: LogIndex(index), term: Term(1), timestamp_ms: index };
            machine.apply(&context, black_box(&command)).expect("put")
        })
    });
}

criterion_group!(benches, codec_benches, state_machine_benches);
criterion_main!(benches);
