//! Proptest strategies for every wire type, and exhaustive variant indexes that stop compiling when
//! a message enum gains a variant (so the strategies below must be extended with it).

use std::collections::BTreeMap;

use bytes::Bytes;
use concord_core::command::{lock_key, Command, CommandFailure, Expectation, KeyState, LockCommand};
use concord_core::error::ProposalError;
use concord_core::id::{
    ClientSession, ClusterId, LogIndex, Member, MemberRole, Membership, NodeId, NodeInfo,
};
use concord_core::id::{ProposalId, Term};
use concord_core::message::{
    Ballot, CastVote, ConflictHint, Decision, Entry, EntryPayload, MajorityMessage, Message, PromiseOutcome,
    Proposal, RaftMessage, Slot, SnapshotMeta,
};
use concord_core::prelude::{Envelope, KvStateMachine};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

/// Number of distinct Raft message kinds: the [`RaftMessage`] variants, with pre-vote requests and
/// responses counted apart from real ones; [`raft_variant`] maps each message to one index below it.
pub const RAFT_VARIANTS: usize = 13;
/// Number of [`MajorityMessage`] variants; [`majority_variant`] maps each to one index below it.
pub const MAJORITY_VARIANTS: usize = 9;

/// A kind index per Raft message. No wildcard arm: a new variant is a compile error here, which is
/// the reminder to add it to [`raft_message`] and to bump [`RAFT_VARIANTS`].
pub fn raft_variant(message: &RaftMessage) -> usize {
    match message {
        RaftMessage::VoteRequest { pre_vote: false, .. } => 0,
        RaftMessage::VoteRequest { pre_vote: true, .. } => 1,
        RaftMessage::VoteResponse { pre_vote: false, .. } => 2,
        RaftMessage::VoteResponse { pre_vote: true, .. } => 3,
        RaftMessage::Append { .. } => 4,
        RaftMessage::AppendResponse { .. } => 5,
        RaftMessage::InstallSnapshot { .. } => 6,
        RaftMessage::InstallSnapshotResponse { .. } => 7,
        RaftMessage::TimeoutNow { .. } => 8,
        RaftMessage::ForwardProposal { .. } => 9,
        RaftMessage::ForwardRejected { .. } => 10,
        RaftMessage::ReadIndexRequest { .. } => 11,
        RaftMessage::ReadIndexResponse { .. } => 12,
    }
}

/// A variant index per simple-majority message, exhaustive like [`raft_variant`].
pub fn majority_variant(message: &MajorityMessage) -> usize {
    match message {
        MajorityMessage::Propose { .. } => 0,
        MajorityMessage::Vote { .. } => 1,
        MajorityMessage::Decided { .. } => 2,
        MajorityMessage::Prepare { .. } => 3,
        MajorityMessage::Promise { .. } => 4,
        MajorityMessage::Heartbeat { .. } => 5,
        MajorityMessage::CatchUpRequest { .. } => 6,
        MajorityMessage::CatchUpResponse { .. } => 7,
        MajorityMessage::CatchUpSnapshot { .. } => 8,
    }
}

/// Variant indexes of the enums nested in messages (`#[non_exhaustive]` ones cannot be matched
/// exhaustively from here and are left out). Exhaustive like [`raft_variant`].
pub fn command_variant(command: &Command) -> usize {
    match command {
        Command::Put { .. } => 0,
        Command::Delete { .. } => 1,
        Command::CompareAndSwap { expected: Expectation::Value(_), .. } => 2,
        Command::CompareAndSwap { expected: Expectation::Version(_), .. } => 3,
        Command::Add { .. } => 4,
        Command::Batch(_) => 5,
        Command::Custom(_) => 6,
        Command::Lock(_) => 7,
        Command::FencedPut { .. } => 8,
    }
}

/// See [`command_variant`].
pub fn payload_variant(payload: &EntryPayload) -> usize {
    match payload {
        EntryPayload::Noop => 0,
        EntryPayload::Command(_) => 1,
        EntryPayload::Membership(_) => 2,
    }
}

/// See [`command_variant`].
pub fn decision_variant(decision: &Decision) -> usize {
    match decision {
        Decision::Proposal { .. } => 0,
        Decision::Membership { .. } => 1,
        Decision::Abort => 2,
    }
}

/// See [`command_variant`].
pub fn promise_outcome_variant(outcome: &PromiseOutcome) -> usize {
    match outcome {
        PromiseOutcome::Promised { .. } => 0,
        PromiseOutcome::Refused { .. } => 1,
        PromiseOutcome::Decided { .. } => 2,
        PromiseOutcome::WrongEpoch { .. } => 3,
    }
}

/// A proptest config with a fixed seed, so a run means the same cases tomorrow, and no regression
/// files (the fixed seed already reproduces a failure).
pub fn seeded(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

pub fn node_id() -> impl Strategy<Value = NodeId> {
    "[a-z0-9-]{1,12}".prop_map(NodeId::new)
}

pub fn term() -> impl Strategy<Value = Term> {
    prop_oneof![0..8u64, any::<u64>()].prop_map(Term)
}

pub fn log_index() -> impl Strategy<Value = LogIndex> {
    prop_oneof![0..64u64, any::<u64>()].prop_map(LogIndex)
}

/// Random bytes up to `max`, or a run of one byte up to `4 × max` (which LZ4 compresses, so that
/// frames with it exercise the compressed path).
pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> + Clone {
    prop_oneof![
        vec(any::<u8>(), 0..=max).prop_map(Bytes::from),
        (any::<u8>(), 0..=max * 4).prop_map(|(byte, length)| Bytes::from(vec![byte; length])),
    ]
}

/// Keys from a small alphabet, so that generated commands collide on keys and exercise versions.
pub fn small_key() -> impl Strategy<Value = String> + Clone {
    "[a-d]{1,2}"
}

pub fn key() -> impl Strategy<Value = String> + Clone {
    prop_oneof![small_key(), "\\PC{0,16}"]
}

pub fn session() -> impl Strategy<Value = ClientSession> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(client, sequence, answered_below)| ClientSession {
        client,
        sequence,
        answered_below,
    })
}

pub fn proposal_id() -> impl Strategy<Value = ProposalId> {
    (node_id(), any::<u64>()).prop_map(|(origin, sequence)| ProposalId { origin, sequence })
}

pub fn expectation() -> impl Strategy<Value = Expectation> + Clone {
    prop_oneof![option::of(bytes(8)).prop_map(Expectation::Value), (0..6u64).prop_map(Expectation::Version),]
}

/// A command that is not a batch, over `key` and values from `value`.
pub fn simple_command(
    key: impl Strategy<Value = String> + Clone + 'static,
    value: impl Strategy<Value = Bytes> + Clone + 'static,
) -> impl Strategy<Value = Command> + Clone {
    prop_oneof![
        3 => (key.clone(), value.clone()).prop_map(|(key, value)| Command::Put { key, value }),
        1 => key.clone().prop_map(|key| Command::Delete { key }),
        2 => (key.clone(), expectation(), option::of(value))
            .prop_map(|(key, expected, new)| Command::CompareAndSwap { key, expected, new }),
        2 => (key, prop_oneof![-5..5i64, any::<i64>()]).prop_map(|(key, delta)| Command::Add { key, delta }),
    ]
}

/// Any command, batches (rarely nested, within the codec's nesting limit) and custom ones included.
pub fn command() -> impl Strategy<Value = Command> {
    let leaf = prop_oneof![
        6 => simple_command(key(), bytes(24)),
        1 => bytes(16).prop_map(Command::Custom),
        2 => lock_command(),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| vec(inner, 0..6).prop_map(Command::Batch))
}

/// Lease commands and fenced writes on two resources, with tokens and TTLs small enough that
/// grants, refusals, expiries and stale tokens all happen.
pub fn lock_command() -> impl Strategy<Value = Command> {
    let resource = prop_oneof![Just("r"), Just("s")];
    let holder = prop_oneof![Just("h1".to_owned()), Just("h2".to_owned())];
    prop_oneof![
        (resource.clone(), holder.clone(), 1..20u64).prop_map(|(resource, holder, ttl_ms)| Command::Lock(
            LockCommand::acquire(resource, holder, ttl_ms)
        )),
        (resource.clone(), holder.clone(), 0..4u64, 0..20u64).prop_map(
            |(resource, holder, token, ttl_ms)| {
                Command::Lock(LockCommand::renew(resource, holder, token, ttl_ms))
            }
        ),
        (resource.clone(), holder, 0..4u64).prop_map(|(resource, holder, token)| Command::Lock(
            LockCommand::release(resource, holder, token)
        )),
        (small_key(), bytes(4), resource, 0..4u64).prop_map(|(key, value, resource, token)| {
            Command::FencedPut { key, value, lock_key: lock_key(resource), token }
        }),
    ]
}

/// Commands for the state machine tests: few keys, counters, locks, batches of simple commands.
pub fn kv_command() -> impl Strategy<Value = Command> {
    let value = prop_oneof![bytes(4), (-3..3i64).prop_map(KvStateMachine::encode_counter)];
    let simple = simple_command(small_key(), value);
    prop_oneof![
        6 => simple.clone(),
        2 => lock_command(),
        1 => vec(simple, 0..5).prop_map(Command::Batch),
    ]
}

pub fn node_info() -> impl Strategy<Value = NodeInfo> {
    (node_id(), "[a-z0-9.:]{0,20}", btree_map("[a-z]{1,6}", "[a-z0-9-]{0,8}", 0..3), any::<bool>())
        .prop_map(|(id, address, metadata, connected)| NodeInfo { id, address, metadata, connected })
}

pub fn membership() -> impl Strategy<Value = Membership> {
    vec((node_info(), any::<bool>()), 0..6).prop_map(|members| Membership {
        members: members
            .into_iter()
            .map(|(info, voter)| {
                let role = if voter { MemberRole::Voter } else { MemberRole::Learner };
                (info.id.clone(), Member { info, role })
            })
            .collect::<BTreeMap<_, _>>(),
    })
}

pub fn proposal() -> impl Strategy<Value = Proposal> {
    (proposal_id(), option::of(session()), command()).prop_map(|(id, session, command)| Proposal {
        id,
        session,
        command,
    })
}

pub fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        1 => Just(EntryPayload::Noop),
        4 => proposal().prop_map(|proposal| EntryPayload::Command(std::sync::Arc::new(proposal))),
        1 => membership().prop_map(|membership| EntryPayload::Membership(Box::new(membership))),
    ];
    (log_index(), term(), any::<u64>(), payload).prop_map(|(index, term, timestamp_ms, payload)| Entry {
        index,
        term,
        timestamp_ms,
        payload,
    })
}

pub fn snapshot_meta() -> impl Strategy<Value = SnapshotMeta> {
    (log_index(), term(), membership()).prop_map(|(last_index, last_term, membership)| SnapshotMeta {
        last_index,
        last_term,
        membership,
    })
}

pub fn key_state() -> impl Strategy<Value = KeyState> {
    (option::of(bytes(8)), any::<u64>()).prop_map(|(value, version)| KeyState { value, version })
}

pub fn command_failure() -> impl Strategy<Value = CommandFailure> {
    let leaf = prop_oneof![
        (key(), key_state()).prop_map(|(key, current)| CommandFailure::CompareFailed { key, current }),
        key().prop_map(|key| CommandFailure::NotACounter { key }),
        (key(), any::<i64>()).prop_map(|(key, delta)| CommandFailure::Overflow { key, delta }),
        Just(CommandFailure::NestedBatch),
        "\\PC{0,12}".prop_map(CommandFailure::Unsupported),
        Just(CommandFailure::SessionExpired),
    ];
    leaf.prop_recursive(2, 4, 1, |inner| {
        (any::<usize>(), inner).prop_map(|(position, reason)| CommandFailure::BatchAborted {
            position,
            reason: Box::new(reason),
        })
    })
}

pub fn proposal_error() -> impl Strategy<Value = ProposalError> {
    prop_oneof![
        Just(ProposalError::Timeout),
        option::of(node_info()).prop_map(|leader| ProposalError::NotLeader { leader }),
        (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(reachable, members, required)| {
            ProposalError::NoQuorum { reachable, members, required }
        }),
        ("[a-z ]{0,12}", any::<u64>()).prop_map(|(what, limit)| ProposalError::Busy { what, limit }),
        "\\PC{0,12}".prop_map(|reason| ProposalError::Rejected { reason }),
        command_failure().prop_map(ProposalError::Command),
        "\\PC{0,12}".prop_map(ProposalError::Invalid),
        Just(ProposalError::LeadershipLost),
        ("[a-z_]{0,8}", "[a-z ]{0,8}")
            .prop_map(|(mechanism, operation)| ProposalError::Unsupported { mechanism, operation }),
        Just(ProposalError::Stopped),
        "\\PC{0,12}".prop_map(ProposalError::Storage),
    ]
}

pub fn conflict_hint() -> impl Strategy<Value = ConflictHint> {
    (log_index(), option::of(term()), log_index()).prop_map(|(rejected_index, term, index)| ConflictHint {
        rejected_index,
        term,
        index,
    })
}

/// Every Raft message variant, with arbitrary fields.
pub fn raft_message() -> impl Strategy<Value = RaftMessage> {
    prop_oneof![
        (term(), log_index(), term(), any::<bool>(), any::<bool>()).prop_map(
            |(term, last_log_index, last_log_term, pre_vote, transfer)| RaftMessage::VoteRequest {
                term,
                last_log_index,
                last_log_term,
                pre_vote,
                transfer,
            }
        ),
        (term(), any::<bool>(), any::<bool>())
            .prop_map(|(term, granted, pre_vote)| RaftMessage::VoteResponse { term, granted, pre_vote }),
        (term(), log_index(), term(), vec(entry(), 0..4), log_index(), any::<u64>()).prop_map(
            |(term, prev_log_index, prev_log_term, entries, leader_commit, read_round)| RaftMessage::Append {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            }
        ),
        (term(), any::<bool>(), log_index(), option::of(conflict_hint()), log_index(), any::<u64>())
            .prop_map(|(term, success, match_index, conflict, last_log_index, read_round)| {
                RaftMessage::AppendResponse {
                    term,
                    success,
                    match_index,
                    conflict,
                    last_log_index,
                    read_round,
                }
            }),
        (term(), snapshot_meta(), any::<u64>(), any::<u64>(), bytes(64), any::<bool>()).prop_map(
            |(term, meta, offset, total_bytes, data, done)| RaftMessage::InstallSnapshot {
                term,
                meta,
                offset,
                total_bytes,
                data,
                done,
            }
        ),
        (term(), log_index(), any::<u64>(), any::<bool>()).prop_map(
            |(term, last_index, next_offset, done)| {
                RaftMessage::InstallSnapshotResponse { term, last_index, next_offset, done }
            }
        ),
        term().prop_map(|term| RaftMessage::TimeoutNow { term }),
        (term(), proposal())
            .prop_map(|(term, proposal)| RaftMessage::ForwardProposal { term, proposal: proposal.into() }),
        (term(), proposal_id(), proposal_error())
            .prop_map(|(term, proposal, error)| RaftMessage::ForwardRejected { term, proposal, error }),
        (term(), any::<u64>()).prop_map(|(term, request)| RaftMessage::ReadIndexRequest { term, request }),
        (term(), any::<u64>(), prop_oneof![log_index().prop_map(Ok), proposal_error().prop_map(Err)])
            .prop_map(|(term, request, result)| RaftMessage::ReadIndexResponse { term, request, result }),
    ]
}

pub fn ballot() -> impl Strategy<Value = Ballot> {
    (term(), node_id(), prop_oneof![0..3u64, any::<u64>()]).prop_map(|(round, node, incarnation)| Ballot {
        round,
        node,
        incarnation,
    })
}

pub fn slot() -> impl Strategy<Value = Slot> {
    (key(), prop_oneof![0..8u64, any::<u64>()], prop_oneof![0..3u64, any::<u64>()])
        .prop_map(|(key, version, attempt)| Slot { key, version, attempt })
}

pub fn decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        3 => (proposal(), any::<u64>())
            .prop_map(|(proposal, timestamp_ms)| Decision::Proposal {
                proposal: std::sync::Arc::new(proposal),
                timestamp_ms,
            }),
        1 => (proposal_id(), membership(), any::<u64>())
            .prop_map(|(id, membership, state_digest)| Decision::Membership { id, membership, state_digest }),
        1 => Just(Decision::Abort),
    ]
}

pub fn epoch() -> impl Strategy<Value = u64> {
    prop_oneof![0..4u64, any::<u64>()]
}

pub fn promise_outcome() -> impl Strategy<Value = PromiseOutcome> {
    let cast_vote = (ballot(), epoch(), decision()).prop_map(|(ballot, epoch, decision)| CastVote {
        ballot,
        epoch,
        decision,
    });
    prop_oneof![
        option::of(cast_vote).prop_map(|voted| PromiseOutcome::Promised { voted }),
        ballot().prop_map(|promised| PromiseOutcome::Refused { promised }),
        option::of(decision()).prop_map(|decision| PromiseOutcome::Decided { decision }),
        epoch().prop_map(|epoch| PromiseOutcome::WrongEpoch { epoch }),
    ]
}

/// Every simple-majority message variant, with arbitrary fields.
pub fn majority_message() -> impl Strategy<Value = MajorityMessage> {
    prop_oneof![
        (slot(), ballot(), epoch(), decision()).prop_map(|(slot, ballot, epoch, decision)| {
            MajorityMessage::Propose { slot, ballot, epoch, decision: Box::new(decision) }
        }),
        (slot(), ballot(), any::<bool>(), option::of("\\PC{0,16}")).prop_map(
            |(slot, ballot, granted, reason)| { MajorityMessage::Vote { slot, ballot, granted, reason } }
        ),
        (slot(), decision())
            .prop_map(|(slot, decision)| MajorityMessage::Decided { slot, decision: Box::new(decision) }),
        (slot(), ballot(), epoch()).prop_map(|(slot, ballot, epoch)| MajorityMessage::Prepare {
            slot,
            ballot,
            epoch
        }),
        (slot(), ballot(), promise_outcome()).prop_map(|(slot, ballot, outcome)| MajorityMessage::Promise {
            slot,
            ballot,
            outcome: Box::new(outcome)
        }),
        (any::<u64>(), any::<u64>(), epoch(), any::<u64>()).prop_map(
            |(incarnation, applied, membership_epoch, state_digest)| MajorityMessage::Heartbeat {
                incarnation,
                applied,
                membership_epoch,
                state_digest
            }
        ),
        any::<u64>().prop_map(|after| MajorityMessage::CatchUpRequest { after }),
        (any::<u64>(), any::<u64>(), vec((slot(), decision()), 0..4), any::<u64>()).prop_map(
            |(incarnation, from, decisions, applied)| MajorityMessage::CatchUpResponse {
                incarnation,
                from,
                decisions,
                applied
            }
        ),
        (any::<u64>(), any::<u64>(), bytes(64)).prop_map(|(incarnation, through, data)| {
            MajorityMessage::CatchUpSnapshot { incarnation, through, data }
        }),
    ]
}

pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![raft_message().prop_map(Message::Raft), majority_message().prop_map(Message::Majority)]
}

pub fn envelope_with(message: impl Strategy<Value = Message>) -> impl Strategy<Value = Envelope> {
    (any::<u64>(), node_id(), node_id(), message).prop_map(|(cluster, from, to, message)| Envelope {
        cluster_id: ClusterId(cluster),
        from,
        to,
        message,
    })
}

pub fn envelope() -> impl Strategy<Value = Envelope> {
    envelope_with(message())
}
