//! The wire codec: every message round-trips (with and without compression), and no byte string a
//! peer can send makes the decoder panic, allocate past the limit or accept a bad frame.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant as WallClock};

use bytes::Bytes;
use concord_core::codec::{HEADER_BYTES, PROTOCOL_VERSION};
use concord_core::prelude::*;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::largest_allocation_during;
use crate::strategies::{self, MAJORITY_VARIANTS, RAFT_VARIANTS};

const FLAGS_OFFSET: usize = 5;
const VERSION_OFFSET: usize = 4;

fn plain_codec() -> Codec {
    Codec { max_frame_bytes: 1 << 20, compression_threshold_bytes: None }
}

// A threshold this small makes most generated messages compress (when LZ4 actually saves bytes).
fn compressing_codec() -> Codec {
    Codec { max_frame_bytes: 1 << 20, compression_threshold_bytes: Some(16) }
}

fn envelope(message: Message) -> Envelope {
    Envelope {
        cluster_id: ClusterId(42),
        from: NodeId::new("agent-001"),
        to: NodeId::new("agent-002"),
        message,
    }
}

fn heartbeat() -> Envelope {
    envelope(Message::Raft(RaftMessage::Append {
        term: Term(3),
        prev_log_index: LogIndex(10),
        prev_log_term: Term(3),
        entries: Vec::new(),
        leader_commit: LogIndex(9),
        read_round: 0,
    }))
}

// An append whose entries compress very well (long runs of equal bytes).
fn compressible_append(entries: u64, value_bytes: usize) -> Envelope {
    let entries = (1..=entries)
        .map(|index| Entry {
            index: LogIndex(index),
            term: Term(1),
            timestamp_ms: 1_700_000_000_000,
            payload: EntryPayload::Command(std::sync::Arc::new(Proposal {
                id: ProposalId { origin: NodeId::new("agent-001"), sequence: index },
                session: None,
                command: Command::Put {
                    key: "player_score".into(),
                    value: Bytes::from(vec![0u8; value_bytes]),
                },
            })),
        })
        .collect();
    envelope(Message::Raft(RaftMessage::Append {
        term: Term(1),
        prev_log_index: LogIndex(0),
        prev_log_term: Term(0),
        entries,
        leader_commit: LogIndex(0),
        read_round: 0,
    }))
}

fn set_length(frame: &mut [u8], length: u32) {
    frame[0..4].copy_from_slice(&length.to_be_bytes());
}

fn fix_length(frame: &mut [u8]) {
    if frame.len() >= 4 {
        let length = (frame.len() - 4) as u32;
        set_length(frame, length);
    }
}

/// Encodes with both codecs, decodes, and checks the frame's own claims. Returns whether the
/// compressing codec actually compressed.
fn assert_round_trip(envelope: &Envelope) -> bool {
    for codec in [plain_codec(), compressing_codec()] {
        let frame = codec.encode(envelope).expect("encode");
        assert_eq!(codec.frame_length(&frame), Ok(Some(frame.len())), "frame_length of a whole frame");
        assert_eq!(frame[VERSION_OFFSET], PROTOCOL_VERSION);
        assert_eq!(&codec.decode(&frame).expect("decode"), envelope);
        assert_eq!(&codec.decode_for(envelope.cluster_id, &frame).expect("decode_for"), envelope);
        // Either codec reads the other's frames: compression is flagged in the frame itself.
        assert_eq!(&plain_codec().decode(&frame).expect("decode by the other codec"), envelope);
        if codec.compression_threshold_bytes.is_some() {
            return frame[FLAGS_OFFSET] == 1;
        }
        assert_eq!(frame[FLAGS_OFFSET], 0, "the plain codec never compresses");
    }
    unreachable!("the loop returns on the compressing codec")
}

/// Runs the round trip over `cases` generated envelopes and checks that every variant came up and
/// that compression triggered on a good share of them.
fn round_trip_every_variant(
    name: &str,
    strategy: impl Strategy<Value = Envelope>,
    variants: usize,
    variant_of: impl Fn(&Message) -> usize,
    seed: u64,
) {
    let seen = RefCell::new(vec![0usize; variants]);
    let compressed = Cell::new(0usize);
    let cases = 1500;
    let mut runner = TestRunner::new(strategies::seeded(cases, seed));
    runner
        .run(&strategy, |envelope| {
            seen.borrow_mut()[variant_of(&envelope.message)] += 1;
            if assert_round_trip(&envelope) {
                compressed.set(compressed.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{name}: {failure}"));
    let seen = seen.into_inner();
    assert!(seen.iter().all(|&count| count > 0), "{name}: some variant never generated: {seen:?}");
    assert!(
        compressed.get() > cases as usize / 10,
        "{name}: compression triggered only {} times",
        compressed.get()
    );
}

#[test]
fn every_raft_message_round_trips_with_and_without_compression() {
    round_trip_every_variant(
        "raft",
        strategies::envelope_with(strategies::raft_message().prop_map(Message::Raft)),
        RAFT_VARIANTS,
        |message| match message {
            Message::Raft(message) => strategies::raft_variant(message),
            Message::Majority(_) => unreachable!("raft strategy"),
        },
        0x5EED_0001,
    );
}

#[test]
fn every_majority_message_round_trips_with_and_without_compression() {
    round_trip_every_variant(
        "majority",
        strategies::envelope_with(strategies::majority_message().prop_map(Message::Majority)),
        MAJORITY_VARIANTS,
        |message| match message {
            Message::Majority(message) => strategies::majority_variant(message),
            Message::Raft(_) => unreachable!("majority strategy"),
        },
        0x5EED_0002,
    );
}

/// Samples `strategy` and checks that `variant_of` saw each of `variants` indexes.
fn assert_covers<T: std::fmt::Debug>(
    name: &str,
    strategy: impl Strategy<Value = T>,
    variants: usize,
    variant_of: impl Fn(&T) -> usize,
) {
    let mut runner = TestRunner::new(strategies::seeded(1, 0x5EED_0006));
    let mut seen = vec![0usize; variants];
    for _ in 0..2000 {
        let value = strategy.new_tree(&mut runner).expect("strategy").current();
        seen[variant_of(&value)] += 1;
    }
    assert!(seen.iter().all(|&count| count > 0), "{name}: some variant never generated: {seen:?}");
}

#[test]
fn the_strategies_cover_every_variant_of_the_nested_enums() {
    assert_covers("command", strategies::command(), 9, strategies::command_variant);
    assert_covers(
        "entry payload",
        strategies::entry().prop_map(|entry| entry.payload),
        3,
        strategies::payload_variant,
    );
    assert_covers("decision", strategies::decision(), 3, strategies::decision_variant);
    assert_covers("promise outcome", strategies::promise_outcome(), 4, strategies::promise_outcome_variant);
}

#[test]
fn compression_shrinks_large_frames_and_leaves_small_ones_alone() {
    let codec = Codec { max_frame_bytes: 1 << 20, compression_threshold_bytes: Some(256) };
    let large = compressible_append(64, 512);
    let compressed = codec.encode(&large).unwrap();
    let uncompressed = plain_codec().encode(&large).unwrap();
    assert_eq!(compressed[FLAGS_OFFSET], 1);
    assert!(compressed.len() * 4 < uncompressed.len(), "{} vs {}", compressed.len(), uncompressed.len());
    assert_eq!(codec.decode(&compressed).unwrap(), large);

    let small = heartbeat();
    let frame = codec.encode(&small).unwrap();
    assert_eq!(frame[FLAGS_OFFSET], 0, "below the threshold");
    assert_eq!(frame, plain_codec().encode(&small).unwrap());

    // Above the threshold but incompressible: LZ4 would not save bytes, so the frame stays plain.
    let noise: Vec<u8> = {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        (0..2048).map(|_| rng.gen()).collect()
    };
    let incompressible = envelope(Message::Raft(RaftMessage::InstallSnapshot {
        term: Term(2),
        meta: SnapshotMeta::default(),
        offset: 0,
        total_bytes: 2048,
        data: Bytes::from(noise),
        done: true,
    }));
    let frame = codec.encode(&incompressible).unwrap();
    assert_eq!(frame[FLAGS_OFFSET], 0);
    assert_eq!(codec.decode(&frame).unwrap(), incompressible);
}

#[test]
fn a_header_declaring_4_gib_is_too_large_before_any_allocation() {
    let codec = plain_codec();
    let limit = codec.max_frame_bytes as u64;
    let header = [0xFF, 0xFF, 0xFF, 0xFF, PROTOCOL_VERSION, 0];
    assert_eq!(
        codec.frame_length(&header),
        Err(CodecError::TooLarge { size: u64::from(u32::MAX) + 4, limit })
    );
    // `decode` says too large, not truncated: it never waits for (or buffers) the declared bytes,
    // and allocates nothing of the sort.
    let (buffer, largest) = largest_allocation_during(|| vec![0u8; 100_000]);
    assert!(largest >= buffer.len(), "the allocation tracker sees allocations");
    let (result, largest) = largest_allocation_during(|| codec.decode(&header));
    assert!(matches!(result, Err(CodecError::TooLarge { .. })));
    assert!(largest < 1024, "allocated {largest} bytes for a refused frame");
    // One byte over the limit is refused too, exactly at the limit is not.
    let mut at_limit = (limit as u32 - 4).to_be_bytes().to_vec();
    assert_eq!(codec.frame_length(&at_limit), Ok(Some(limit as usize)));
    at_limit = (limit as u32 - 3).to_be_bytes().to_vec();
    assert_eq!(codec.frame_length(&at_limit), Err(CodecError::TooLarge { size: limit + 1, limit }));
    // Fewer than four bytes: not known yet. A length too short for the header: truncated.
    assert_eq!(codec.frame_length(&[0, 0, 0]), Ok(None));
    assert!(matches!(codec.frame_length(&[0, 0, 0, 1]), Err(CodecError::Truncated { .. })));
}

#[test]
fn oversize_frames_are_refused_on_both_ends() {
    let large = compressible_append(64, 512);
    let small_codec = Codec { max_frame_bytes: 4096, compression_threshold_bytes: None };
    assert!(matches!(small_codec.encode(&large), Err(CodecError::TooLarge { limit: 4096, .. })));
    let frame = plain_codec().encode(&large).unwrap();
    assert!(matches!(small_codec.decode(&frame), Err(CodecError::TooLarge { limit: 4096, .. })));
}

#[test]
fn trailing_garbage_is_rejected() {
    let codec = plain_codec();
    let frame = codec.encode(&heartbeat()).unwrap().to_vec();

    // After the declared length.
    let mut with_garbage = frame.clone();
    with_garbage.extend_from_slice(b"xyz");
    assert_eq!(codec.decode(&with_garbage), Err(CodecError::TrailingBytes(3)));

    // Inside the declared length, after the body.
    let mut padded = frame.clone();
    padded.extend_from_slice(&[0, 0]);
    fix_length(&mut padded);
    assert_eq!(codec.decode(&padded), Err(CodecError::TrailingBytes(2)));

    // Inside a compressed body.
    let large = compressible_append(8, 256);
    let plain = codec.encode(&large).unwrap();
    let mut body = plain[HEADER_BYTES..].to_vec();
    body.push(0);
    let compressed_body = lz4_literal_block(&body);
    let mut frame = vec![0, 0, 0, 0, PROTOCOL_VERSION, 1];
    frame.extend_from_slice(&compressed_body);
    fix_length(&mut frame);
    assert_eq!(codec.decode(&frame), Err(CodecError::TrailingBytes(1)));
}

// The test crate has no LZ4 dependency of its own: it writes the simplest valid block by hand.
/// A valid size-prepended LZ4 block holding `data` as literals: `[size: u32 LE][token][len…][data]`.
fn lz4_literal_block(data: &[u8]) -> Vec<u8> {
    let mut block = (data.len() as u32).to_le_bytes().to_vec();
    let literals = data.len();
    if literals < 15 {
        block.push((literals as u8) << 4);
    } else {
        block.push(0xF0);
        let mut rest = literals - 15;
        while rest >= 255 {
            block.push(255);
            rest -= 255;
        }
        block.push(rest as u8);
    }
    block.extend_from_slice(data);
    block
}

#[test]
fn the_most_compressible_frames_still_decode() {
    // The decoder refuses sizes LZ4 cannot produce; real maximal-ratio frames must stay within it.
    let codec = Codec { max_frame_bytes: 8 << 20, compression_threshold_bytes: Some(0) };
    for value_bytes in [0, 1, 15, 16, 19, 255, 256, 270, 4096, 65_535, 1 << 20, 4 << 20] {
        for byte in [0u8, 0xAB] {
            let envelope =
                forward(Command::Put { key: String::new(), value: Bytes::from(vec![byte; value_bytes]) });
            let frame = codec.encode(&envelope).unwrap();
            assert_eq!(codec.decode(&frame).unwrap(), envelope, "{value_bytes} bytes of {byte:#x}");
        }
    }
}

#[test]
fn every_truncation_of_a_frame_is_rejected() {
    for codec in [plain_codec(), compressing_codec()] {
        let frame = codec.encode(&compressible_append(4, 64)).unwrap();
        for cut in 0..frame.len() {
            assert!(codec.decode(&frame[..cut]).is_err(), "prefix of {cut} bytes accepted");
        }
    }
}

#[test]
fn unknown_versions_and_flags_are_rejected() {
    let codec = plain_codec();
    let frame = codec.encode(&heartbeat()).unwrap().to_vec();
    for version in [0u8, PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, 0xFF] {
        let mut bad = frame.clone();
        bad[VERSION_OFFSET] = version;
        assert_eq!(codec.decode(&bad), Err(CodecError::UnsupportedVersion(version)));
    }
    for flags in [0b10u8, 0b11, 0x80] {
        let mut bad = frame.clone();
        bad[FLAGS_OFFSET] = flags;
        assert_eq!(codec.decode(&bad), Err(CodecError::UnknownFlags(flags)));
    }
}

#[test]
fn a_compressed_frame_that_inflates_past_the_limit_is_refused() {
    // 64 KiB of zeros compresses to a few hundred bytes: the frame fits a 4 KiB limit, its
    // inflated body does not.
    let bomb = compressible_append(1, 64 * 1024);
    let frame = compressing_codec().encode(&bomb).unwrap();
    assert_eq!(frame[FLAGS_OFFSET], 1);
    assert!(frame.len() < 4096, "compressed frame is {} bytes", frame.len());
    let small = Codec { max_frame_bytes: 4096, compression_threshold_bytes: Some(16) };
    let (result, largest) = largest_allocation_during(|| small.decode(&frame));
    assert!(matches!(result, Err(CodecError::TooLarge { limit: 4096, .. })));
    assert!(largest < 4096, "allocated {largest} bytes before refusing");
    assert_eq!(compressing_codec().decode(&frame).unwrap(), bomb, "within a larger limit it decodes");

    // A tiny frame that declares a large (but allowed) inflated size cannot be LZ4: refused before
    // a buffer of that size is allocated.
    let mut tiny = vec![0, 0, 0, 0, PROTOCOL_VERSION, 1];
    tiny.extend_from_slice(&(1u32 << 20).to_le_bytes());
    tiny.extend_from_slice(&[0x1F, 0, 0, 1, 0]);
    fix_length(&mut tiny);
    let (result, largest) = largest_allocation_during(|| compressing_codec().decode(&tiny));
    assert!(matches!(result, Err(CodecError::Decompression(_))), "{result:?}");
    assert!(largest < 4096, "allocated {largest} bytes for a 15-byte frame");

    // A size prefix that lies low: decompression refuses to write past it.
    let mut lying = frame.to_vec();
    lying[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&100u32.to_le_bytes());
    assert!(matches!(compressing_codec().decode(&lying), Err(CodecError::Decompression(_))));

    // A compressed flag on a body too short for the size prefix.
    let mut stub = vec![0, 0, 0, 0, PROTOCOL_VERSION, 1, 9, 9];
    fix_length(&mut stub);
    assert!(matches!(compressing_codec().decode(&stub), Err(CodecError::Decompression(_))));
}

#[test]
fn a_frame_of_another_cluster_is_refused_by_decode_for() {
    let codec = plain_codec();
    let frame = codec.encode(&heartbeat()).unwrap();
    assert_eq!(
        codec.decode_for(ClusterId(41), &frame),
        Err(CodecError::WrongCluster { expected: ClusterId(41), got: ClusterId(42) })
    );
    assert!(codec.decode_for(ClusterId(42), &frame).is_ok());
}

fn nested_batch(depth: usize) -> Command {
    let mut command = Command::Delete { key: "k".into() };
    for _ in 1..depth {
        command = Command::Batch(vec![command]);
    }
    command
}

fn forward(command: Command) -> Envelope {
    envelope(Message::Raft(RaftMessage::ForwardProposal {
        term: Term(1),
        proposal: std::sync::Arc::new(Proposal {
            id: ProposalId { origin: NodeId::new("a"), sequence: 1 },
            session: None,
            command,
        }),
    }))
}

#[test]
fn nesting_is_bounded_so_a_deep_frame_cannot_overflow_the_stack() {
    let codec = plain_codec();
    // At the limit: round-trips. One deeper: refused on encode, with a typed error.
    let deepest = forward(nested_batch(Command::NESTING_MAX));
    assert_eq!(codec.decode(&codec.encode(&deepest).unwrap()).unwrap(), deepest);
    assert!(matches!(
        codec.encode(&forward(nested_batch(Command::NESTING_MAX + 1))),
        Err(CodecError::Encode(_))
    ));

    // A peer's frame of a million nested batches (2 MB): refused as malformed, no stack overflow.
    // Body: cluster 7, from "a", to "b", Message::Raft, ForwardProposal, term 3, origin "a", sequence 1,
    // no session, then Batch(len 1) a million times, then Delete { key: "" }.
    let mut body = vec![7u8, 1, b'a', 1, b'b', 0, 7, 3, 1, b'a', 1, 0];
    for _ in 0..1_000_000 {
        body.extend_from_slice(&[4, 1]);
    }
    body.extend_from_slice(&[1, 0]);
    let mut frame = vec![0, 0, 0, 0, PROTOCOL_VERSION, 0];
    frame.extend_from_slice(&body);
    fix_length(&mut frame);
    let big = Codec { max_frame_bytes: 4 << 20, compression_threshold_bytes: None };
    assert!(matches!(big.decode(&frame), Err(CodecError::Malformed(_))));

    // The same through a failure nested in a forwarded proposal's rejection: ForwardRejected,
    // term 3, proposal "a"#1, ProposalError::Command, then BatchAborted { position: 0 } a million
    // times, then NestedBatch.
    let mut body = vec![7u8, 1, b'a', 1, b'b', 0, 8, 3, 1, b'a', 1, 5];
    for _ in 0..1_000_000 {
        body.extend_from_slice(&[3, 0]);
    }
    body.push(4);
    let mut frame = vec![0, 0, 0, 0, PROTOCOL_VERSION, 0];
    frame.extend_from_slice(&body);
    fix_length(&mut frame);
    assert!(matches!(big.decode(&frame), Err(CodecError::Malformed(_))));
    // And shallow, the same bytes decode: the failure above is the depth, not the layout.
    let mut body = vec![7u8, 1, b'a', 1, b'b', 0, 8, 3, 1, b'a', 1, 5, 3, 0, 4];
    let mut frame = vec![0, 0, 0, 0, PROTOCOL_VERSION, 0];
    frame.append(&mut body);
    fix_length(&mut frame);
    let decoded = big.decode(&frame).unwrap();
    assert!(matches!(
        decoded.message,
        Message::Raft(RaftMessage::ForwardRejected {
            error: ProposalError::Command(CommandFailure::BatchAborted { position: 0, .. }),
            ..
        })
    ));
}

/// Valid frames to mutate: generated envelopes of every kind, plain and compressed.
fn corpus(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut runner = TestRunner::new(strategies::seeded(1, seed));
    let strategy = strategies::envelope();
    let compressing = Codec { max_frame_bytes: 1 << 20, compression_threshold_bytes: Some(24) };
    let mut frames = Vec::with_capacity(count);
    while frames.len() < count {
        let envelope = strategy.new_tree(&mut runner).expect("strategy").current();
        let codec = if frames.len() % 2 == 0 { plain_codec() } else { compressing.clone() };
        frames.push(codec.encode(&envelope).expect("encode").to_vec());
    }
    frames.push(codec_frame(&heartbeat(), &plain_codec()));
    frames.push(codec_frame(&compressible_append(3, 300), &compressing));
    frames
}

fn codec_frame(envelope: &Envelope, codec: &Codec) -> Vec<u8> {
    codec.encode(envelope).expect("encode").to_vec()
}

const INTERESTING_BYTES: [u8; 8] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, 0x04, 0x0A];

/// One mutated (or random) input; which mutation is drawn from `rng`.
fn mutate(rng: &mut ChaCha8Rng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    input.clear();
    let mutation = rng.gen_range(0..12u8);
    if mutation == 0 {
        // Pure random bytes.
        let length = rng.gen_range(0..48);
        input.extend((0..length).map(|_| rng.gen::<u8>()));
        return;
    }
    if mutation == 1 {
        // A valid header over random bytes, to reach the body decoders.
        let length = rng.gen_range(0..64);
        input.extend_from_slice(&[0, 0, 0, 0, PROTOCOL_VERSION, rng.gen_range(0..2)]);
        input.extend((0..length).map(|_| rng.gen::<u8>()));
        fix_length(input);
        return;
    }
    input.extend_from_slice(&corpus[rng.gen_range(0..corpus.len())]);
    let fix = rng.gen_bool(0.5);
    match mutation {
        2 | 3 => {
            for _ in 0..rng.gen_range(1..=4) {
                let bit = rng.gen_range(0..input.len() * 8);
                input[bit / 8] ^= 1 << (bit % 8);
            }
        }
        4 => {
            let cut = rng.gen_range(0..input.len());
            input.truncate(cut);
        }
        5 => {
            let length = match rng.gen_range(0..4) {
                0 => rng.gen::<u32>(),
                1 => u32::MAX,
                2 => rng.gen_range(0..8),
                _ => ((input.len() - 4) as u32).wrapping_add(rng.gen_range(0..7)).wrapping_sub(3),
            };
            set_length(input, length);
        }
        6 => {
            let at = rng.gen_range(0..=input.len());
            let inserted: Vec<u8> = (0..rng.gen_range(1..=8)).map(|_| rng.gen()).collect();
            input.splice(at..at, inserted);
            if fix {
                fix_length(input);
            }
        }
        7 => {
            let from = rng.gen_range(0..input.len());
            let to = (from + rng.gen_range(1..=8)).min(input.len());
            input.drain(from..to);
            if fix {
                fix_length(input);
            }
        }
        8 => {
            for _ in 0..rng.gen_range(1..=3) {
                let at = rng.gen_range(0..input.len());
                input[at] = INTERESTING_BYTES[rng.gen_range(0..INTERESTING_BYTES.len())];
            }
        }
        9 => {
            input.extend((0..rng.gen_range(1..=8)).map(|_| rng.gen::<u8>()));
            if fix {
                fix_length(input);
            }
        }
        10 => {
            // Splice the head of this frame onto the tail of another.
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let head = rng.gen_range(0..=input.len());
            let tail = rng.gen_range(0..=other.len());
            input.truncate(head);
            input.extend_from_slice(&other[tail..]);
            if fix {
                fix_length(input);
            }
        }
        _ => {
            // Only the body changes; the header stays valid (compressed frames reach LZ4 this way).
            if input.len() > HEADER_BYTES {
                let at = rng.gen_range(HEADER_BYTES..input.len());
                input[at] = rng.gen();
            }
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    truncated: usize,
    too_large: usize,
    version: usize,
    flags: usize,
    trailing: usize,
    malformed: usize,
    decompression: usize,
}

/// Seed of the fuzz loop; a failure prints it with the iteration and the input.
const FUZZ_SEED: u64 = 0xF022_0001;
const FUZZ_INPUTS: usize = 1_000_000;

#[test]
fn a_million_random_and_mutated_frames_never_panic() {
    let corpus = corpus(FUZZ_SEED, 256);
    // A small limit, so that length edits and inflated bodies hit it.
    let codec = Codec { max_frame_bytes: 4096, compression_threshold_bytes: Some(24) };
    let mut rng = ChaCha8Rng::seed_from_u64(FUZZ_SEED);
    let mut tally = Tally::default();
    let mut input = Vec::with_capacity(8192);
    let started = WallClock::now();
    for iteration in 0..FUZZ_INPUTS {
        mutate(&mut rng, &corpus, &mut input);
        let result = catch_unwind(AssertUnwindSafe(|| codec.decode(&input))).unwrap_or_else(|_| {
            panic!("decode panicked: seed {FUZZ_SEED:#x}, iteration {iteration}, input {input:02x?}")
        });
        match result {
            Ok(envelope) => {
                tally.ok += 1;
                // Whatever decodes is a real message: it survives a round trip of its own.
                let again = plain_codec().encode(&envelope).expect("re-encode a decoded envelope");
                assert_eq!(plain_codec().decode(&again).expect("decode the re-encoding"), envelope);
            }
            Err(CodecError::Truncated { .. }) => tally.truncated += 1,
            Err(CodecError::TooLarge { .. }) => tally.too_large += 1,
            Err(CodecError::UnsupportedVersion(_)) => tally.version += 1,
            Err(CodecError::UnknownFlags(_)) => tally.flags += 1,
            Err(CodecError::TrailingBytes(_)) => tally.trailing += 1,
            Err(CodecError::Malformed(_)) => tally.malformed += 1,
            Err(CodecError::Decompression(_)) => tally.decompression += 1,
            Err(other) => panic!("decode returned an encode-side error: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "fuzzed {FUZZ_INPUTS} inputs in {elapsed:?} ({:.0} inputs/s): {tally:?}",
        FUZZ_INPUTS as f64 / elapsed.as_secs_f64()
    );
    // Every layer of the decoder was reached, and some mutations still decode.
    for (name, count) in [
        ("ok", tally.ok),
        ("truncated", tally.truncated),
        ("too_large", tally.too_large),
        ("version", tally.version),
        ("flags", tally.flags),
        ("trailing", tally.trailing),
        ("malformed", tally.malformed),
        ("decompression", tally.decompression),
    ] {
        assert!(count >= 100, "outcome {name} reached only {count} times: {tally:?}");
    }
    // Generous against a loaded 2-core machine; it takes about a second alone.
    assert!(elapsed < Duration::from_secs(30), "fuzzing took {elapsed:?}");
}
