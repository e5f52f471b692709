//! The Raft state machine of one node.
//!
//! This file holds the state, the constructor, small helpers, the dispatch of incoming messages by
//! term (`step`) and the [`Mechanism`] implementation. The protocol itself is split by concern:
//! `election` (votes, pre-vote, roles), `replication` (appends, heartbeats, snapshots, the commit
//! rule), `apply` (applying entries, membership taking effect, compaction) and `clients`
//! (proposals, batching, ReadIndex and leases).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use concord_core::command::Command;
use concord_core::config::{Config, ConfigError, MechanismKind};
use concord_core::error::{PeerError, ProposalError};
use concord_core::event::{DebugState, Event, ProposalResult, Role, Votes};
use concord_core::id::{LogIndex, Member, MemberRole, Membership, NodeId, NodeInfo, ProposalId, Term};
use concord_core::mechanism::{
    take_with_capacity, Mechanism, MembershipChange, Outbound, ReadId, ReadResult, Ready, Setup, SetupError,
};
use concord_core::message::{
    ConflictHint, Entry, EntryPayload, Message, Proposal, RaftMessage, Snapshot, SnapshotMeta,
};
use concord_core::state_machine::{ApplyContext, Replica};
use concord_core::storage::{HardState, Persist};
use concord_core::time::{Instant, StampAnchor};

use crate::deadlines::{DeadlineKey, DeadlineQueue};
use crate::log::RaftLog;
use crate::progress::{Progress, ReplicationState};
use crate::proposal_index::{ProposalIndex, ProposalMap};
use crate::quorum::{majority, quorum_value};

mod apply;
mod clients;
mod election;
mod replication;

/// Bytes an append's header takes beyond its entries, kept free under `max_message_bytes`.
const APPEND_HEADER_BYTES: usize = 1024;
/// Most heartbeat rounds remembered for leases; older ones are forgotten (the lease then simply
/// cannot be extended from them, which is safe).
const ROUNDS_REMEMBERED_MAX: usize = 4096;
/// Most compacted proposal ids remembered for dropping duplicated forwards.
const COMPACTED_PROPOSALS_REMEMBERED_MAX: usize = 65_536;

/// Deliberately broken behaviours, for proving that the simulator catches real bugs.
#[cfg(feature = "broken-variants")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bug {
    /// Grant a vote to any up-to-date candidate, even after voting for another in the same term.
    DoubleVote,
    /// Commit any entry stored on a majority, whatever its term (the Figure 8 bug of §5.4.2).
    CommitOldTermByCounting,
    /// Write the term but not the vote to storage, so a restarted node can vote again.
    SkipVotePersistence,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

struct PendingProposal {
    /// Its key in `proposal_deadlines`.
    deadline: DeadlineKey,
    /// Identifies the command itself: a restarted process may reuse a proposal id, and an entry
    /// of its earlier life must not answer the new proposal.
    fingerprint: u64,
    key: String,
    value: Option<Bytes>,
    index: Option<LogIndex>,
}

#[derive(Clone, Debug)]
enum ReadOrigin {
    Local(ReadId),
    Remote { from: NodeId, request: u64 },
}

struct LeaderRead {
    origin: ReadOrigin,
    index: LogIndex,
    round: u64,
}

struct Transfer {
    target: NodeId,
    deadline: Instant,
}

struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    data: Vec<u8>,
}

/// One Raft node, without I/O: feed it inputs with the time, drain [`Ready`] batches.
///
/// See the crate docs for the driver loop and the features.
pub struct Raft {
    id: NodeId,
    config: Config,
    rng: ChaCha8Rng,
    replica: Replica,

    // Durable state (mirrored into `persist`).
    term: Term,
    voted_for: Option<NodeId>,
    log: RaftLog,
    snapshot: Option<Snapshot>,
    /// Membership entries of the log (and the snapshot's or bootstrap one first): the last one is in
    /// force as soon as it is appended (one-server-at-a-time changes).
    memberships: Vec<(LogIndex, Membership)>,

    // Volatile state.
    commit: LogIndex,
    /// The highest commit index written to storage (in a hard state, beside the entries it covers),
    /// or recovered: a restart applies up to it without waiting to hear from a leader.
    commit_saved: LogIndex,
    /// Last log index known durable on this node (a leader counts itself only up to it).
    persisted: LogIndex,
    state: State,
    leader: Option<NodeId>,
    started: bool,
    started_at: Option<Instant>,
    /// The newest leader timestamp this node has seen in its log (replayed at start, appended as a
    /// follower, restored from a snapshot), and this node's time when it saw it; empty while the
    /// log holds no stamp. A leader's own stamps never move it (see `leader_stamp`).
    stamp_anchor: StampAnchor,
    now: Instant,
    election_deadline: Instant,
    leader_contact: Option<Instant>,
    votes: BTreeMap<NodeId, bool>,
    reported_role: Role,
    /// Follower: the highest read round acknowledged to the leader, and its term. An append
    /// without entries that carries no newer round (the leader's commit update) then needs no
    /// answer: it would tell the leader nothing it does not know (see `handle_append`).
    answered_round: (Term, u64),

    // Leader state.
    progress: BTreeMap<NodeId, Progress>,
    heartbeat_deadline: Instant,
    check_quorum_deadline: Instant,
    round: u64,
    round_unsent: bool,
    round_sent_at: VecDeque<(u64, Instant)>,
    lease_until: Option<Instant>,
    /// A transfer was started in this term: its target may win an election that ignores leases, so
    /// lease reads stay off for the rest of the term.
    transfer_started: bool,
    /// The commit index moved and followers have not been told yet.
    commit_unsent: bool,
    term_start_index: LogIndex,
    transfer: Option<Transfer>,
    batch: Vec<Arc<Proposal>>,
    /// Scratch for `apply_committed`: the last index each voter is known to store, taken once per
    /// call, so that each applied result counts its holders without walking the membership and
    /// the progress map again.
    stored_by_voter: Vec<u64>,
    batch_deadline: Option<Instant>,
    membership_proposals: BTreeMap<LogIndex, ProposalId>,
    promotions: BTreeMap<NodeId, ProposalId>,
    leader_reads: VecDeque<LeaderRead>,
    deferred_reads: Vec<ReadOrigin>,
    remote_reads: usize,

    // Proposals and reads made on this node.
    /// Hashed (every proposal goes in and out): iterated only after sorting.
    pending: HashMap<ProposalId, PendingProposal, BuildHasherDefault<ProposalIdHasher>>,
    /// Keyed by deadline and registration number: ordering integers, not ids, per proposal.
    proposal_deadlines: DeadlineQueue,
    proposals_registered: u64,
    local_reads: BTreeMap<ReadId, Instant>,
    read_deadlines: BTreeSet<(Instant, ReadId)>,
    apply_waits: BTreeSet<(LogIndex, ReadId)>,
    forwarded_reads: BTreeMap<u64, ReadId>,
    next_read_request: u64,

    incoming_snapshot: Option<IncomingSnapshot>,

    /// Where each proposal in the in-memory log sits, and a bounded memory of compacted ones: a
    /// forwarded proposal the network duplicated is appended only once.
    proposal_index: ProposalIndex,
    /// The fingerprint of each remembered compacted session-less proposal (the only ones
    /// `is_known_proposal` checks), and their order for forgetting the oldest. One fingerprint per
    /// id: an id reused by a restarted origin replaces the older one.
    compacted_proposals: VecDeque<(ProposalId, u64)>,
    compacted_fingerprints: ProposalMap<u64>,

    // Failure detection.
    last_heard: BTreeMap<NodeId, Instant>,
    link_down: BTreeSet<NodeId>,
    unreachable: BTreeSet<NodeId>,

    // Output.
    messages: Vec<Outbound>,
    persisted_messages: Vec<Outbound>,
    persist: Persist,
    results: Vec<ProposalResult>,
    reads: Vec<ReadResult>,
    events: Vec<Event>,
    /// Whether anyone takes the per-entry events (`Mechanism::set_entry_events_wanted`).
    entry_events_wanted: bool,
    ready_number: u64,
    /// Scratch space for quorum arithmetic (commit index, read rounds), kept between calls.
    quorum_scratch: Vec<u64>,
    /// For each handed-out Ready with writes: its number and the log's last index and term then.
    unacknowledged: VecDeque<(u64, LogIndex, Term)>,

    #[cfg(feature = "broken-variants")]
    bug: Option<Bug>,
}

impl std::fmt::Debug for Raft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.id)
            .field("term", &self.term)
            .field("state", &self.state)
            .field("commit", &self.commit)
            .field("last_index", &self.log.last_index())
            .finish_non_exhaustive()
    }
}

/// FNV-1a over a proposal id (its origin's bytes and its sequence), for the tables of proposals in
/// flight (`pending`), which hash every proposal's id: SipHash costs several times
/// more there. Flooding resistance is not needed: proposal ids are chosen by the cluster's own
/// nodes, not by clients.
#[derive(Default)]
struct ProposalIdHasher(u64);

impl Hasher for ProposalIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let start = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        self.0 =
            bytes.iter().fold(start, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3));
    }

    fn write_u64(&mut self, value: u64) {
        let start = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        // The sequence is the part that differs between ids: mix it into every bit, high (the
        // table's tag) and low (its bucket).
        let mixed = (start ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = mixed ^ (mixed >> 32);
    }
}

/// A stable fingerprint of a proposal's session and command, telling a proposal from an older one
/// that reused its id (sequence numbers restart with the process). A client session is random per
/// process, so when there is one it identifies the proposal on its own, without hashing the
/// command (this runs for every applied entry); otherwise FNV-1a over the encoding.
fn fingerprint(proposal: &Proposal) -> u64 {
    if let Some(session) = proposal.session {
        return (session.client ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0x0100_0000_01b3) ^ session.sequence;
    }
    let encoded = postcard::to_allocvec(&(&proposal.session, &proposal.command)).unwrap_or_default();
    encoded
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

fn validate_command(config: &Config, command: &Command) -> Result<(), ProposalError> {
    let commands: &[Command] = match command {
        Command::Batch(commands) => {
            if commands.len() > config.max_batch_commands as usize {
                return Err(ProposalError::Invalid(format!(
                    "a batch holds {} commands, more than maxBatchCommands ({})",
                    commands.len(),
                    config.max_batch_commands
                )));
            }
            commands
        }
        other => std::slice::from_ref(other),
    };
    for command in commands {
        if command.key().len() > config.max_key_bytes as usize {
            return Err(ProposalError::Invalid(format!(
                "key of {} bytes is over maxKeyBytes ({})",
                command.key().len(),
                config.max_key_bytes
            )));
        }
        let value_bytes = match command {
            Command::Put { value, .. } => value.len(),
            Command::CompareAndSwap { new, .. } => new.as_ref().map_or(0, Bytes::len),
            Command::Custom(bytes) => bytes.len(),
            _ => 0,
        };
        if value_bytes > config.max_value_bytes as usize {
            return Err(ProposalError::Invalid(format!(
                "value of {value_bytes} bytes is over maxValueBytes ({})",
                config.max_value_bytes
            )));
        }
    }
    Ok(())
}

impl Raft {
    /// Starts a node from its setup: recovers the snapshot (restored into the replica), the log and
    /// the hard state, and takes the membership from the log, else the snapshot, else
    /// `setup.initial_members` (bootstrap). A node joining an existing cluster starts with empty
    /// `initial_members` and waits, without campaigning, until a leader adds it.
    pub fn new(setup: Setup) -> Result<Raft, SetupError> {
        let Setup { node_id, config, initial_members, recovered, seed, mut replica } = setup;
        config.validate()?;
        if config.mechanism != MechanismKind::Raft {
            return Err(SetupError::Config(ConfigError::Invalid {
                field: "mechanism",
                reason: format!("concord-raft runs \"raft\", not {:?}", config.mechanism.as_str()),
            }));
        }
        let mut memberships = Vec::new();
        let mut log = RaftLog::new(LogIndex::ZERO, Term(0));
        let mut snapshot = None;
        if let Some(recovered_snapshot) = recovered.snapshot {
            replica
                .restore(&recovered_snapshot.data)
                .map_err(|error| SetupError::Recovered(format!("snapshot does not restore: {error}")))?;
            let meta = &recovered_snapshot.meta;
            if replica.applied() != meta.last_index {
                return Err(SetupError::Recovered(format!(
                    "snapshot state is at index {} but its metadata says {}",
                    replica.applied(),
                    meta.last_index
                )));
            }
            log = RaftLog::new(meta.last_index, meta.last_term);
            memberships.push((meta.last_index, meta.membership.clone()));
            snapshot = Some(recovered_snapshot);
        } else if replica.applied() != LogIndex::ZERO {
            return Err(SetupError::Recovered(format!(
                "the replica has applied up to {} but storage holds no snapshot",
                replica.applied()
            )));
        }
        let (mut last_index, mut last_term) = (log.last_index(), log.last_term());
        for entry in &recovered.entries {
            if entry.index != last_index.next() || entry.term < last_term {
                return Err(SetupError::Recovered(format!(
                    "entry {} (term {}) does not follow {} (term {})",
                    entry.index, entry.term, last_index, last_term
                )));
            }
            (last_index, last_term) = (entry.index, entry.term);
            if let EntryPayload::Membership(membership) = &entry.payload {
                memberships.push((entry.index, Membership::clone(membership)));
            }
        }
        // Checked contiguous just above; the recovered vector becomes the log without a copy.
        log.extend_checked(recovered.entries);
        // The first element is the base that truncation never removes: the snapshot's
        // membership, or the bootstrap one at index 0.
        let has_membership_entries =
            log.entries().any(|entry| matches!(entry.payload, EntryPayload::Membership(_)));
        if snapshot.is_none() {
            let bootstrap = Membership::with_voters(initial_members);
            if !has_membership_entries && !bootstrap.members.is_empty() && !bootstrap.contains(&node_id) {
                return Err(SetupError::NotAMember(node_id));
            }
            memberships.insert(0, (LogIndex::ZERO, bootstrap));
        }
        let hard_state = recovered.hard_state;
        let term = hard_state.term.max(log.last_term());
        let voted_for = if hard_state.term == term { hard_state.voted_for } else { None };
        // Entries up to the saved commit index were committed (it never passes the durable log it
        // was saved with), so they can be applied before any leader is heard from: a restart with a
        // long log replays them while the election is still under way.
        let commit = log.snapshot_index().max(hard_state.commit.min(log.last_index()));
        let persisted = log.last_index();
        // Share the membership's allocation of our own id: ids are compared constantly (quorum
        // counts, progress lookups), and clones of one allocation compare by pointer.
        let node_id = memberships
            .last()
            .and_then(|(_, membership)| membership.members.get_key_value(&node_id))
            .map_or(node_id.clone(), |(id, _)| id.clone());
        let mut raft = Raft {
            id: node_id,
            rng: ChaCha8Rng::seed_from_u64(seed),
            replica,
            term,
            voted_for,
            log,
            snapshot,
            memberships,
            commit,
            commit_saved: commit,
            persisted,
            state: State::Follower,
            leader: None,
            started: false,
            started_at: None,
            stamp_anchor: StampAnchor::default(),
            now: Instant::ZERO,
            election_deadline: Instant::ZERO,
            leader_contact: None,
            votes: BTreeMap::new(),
            reported_role: Role::Follower,
            answered_round: (Term(0), 0),
            progress: BTreeMap::new(),
            heartbeat_deadline: Instant::ZERO,
            check_quorum_deadline: Instant::ZERO,
            round: 0,
            round_unsent: false,
            round_sent_at: VecDeque::new(),
            lease_until: None,
            transfer_started: false,
            commit_unsent: false,
            term_start_index: LogIndex::ZERO,
            transfer: None,
            batch: Vec::new(),
            stored_by_voter: Vec::new(),
            batch_deadline: None,
            membership_proposals: BTreeMap::new(),
            promotions: BTreeMap::new(),
            leader_reads: VecDeque::new(),
            deferred_reads: Vec::new(),
            remote_reads: 0,
            pending: HashMap::default(),
            proposal_deadlines: DeadlineQueue::default(),
            proposals_registered: 0,
            local_reads: BTreeMap::new(),
            read_deadlines: BTreeSet::new(),
            apply_waits: BTreeSet::new(),
            forwarded_reads: BTreeMap::new(),
            next_read_request: 1,
            incoming_snapshot: None,
            proposal_index: ProposalIndex::default(),
            compacted_proposals: VecDeque::new(),
            compacted_fingerprints: ProposalMap::default(),
            last_heard: BTreeMap::new(),
            link_down: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            persist: Persist::default(),
            results: Vec::new(),
            reads: Vec::new(),
            events: Vec::new(),
            entry_events_wanted: true,
            ready_number: 0,
            quorum_scratch: Vec::new(),
            unacknowledged: VecDeque::new(),
            config,
            #[cfg(feature = "broken-variants")]
            bug: None,
        };
        raft.reported_role = raft.role();
        for entry in raft.log.entries() {
            if let EntryPayload::Command(proposal) = &entry.payload {
                raft.proposal_index.insert(&proposal.id, entry.index);
            }
        }
        Ok(raft)
    }

    /// Switches on a deliberately broken behaviour (tests of the simulator only).
    #[cfg(feature = "broken-variants")]
    pub fn set_bug(&mut self, bug: Bug) {
        self.bug = Some(bug);
    }

    #[cfg(feature = "broken-variants")]
    fn has_bug(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Who this node voted for in the current term.
    pub fn voted_for(&self) -> Option<&NodeId> {
        self.voted_for.as_ref()
    }

    /// The role: `Learner` for a follower that is not a voter.
    pub fn role(&self) -> Role {
        match self.state {
            State::Leader => Role::Leader,
            State::Candidate => Role::Candidate,
            State::PreCandidate => Role::PreCandidate,
            State::Follower if self.membership().is_voter(&self.id) => Role::Follower,
            State::Follower => Role::Learner,
        }
    }

    /// The commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }

    /// The last applied index.
    pub fn applied_index(&self) -> LogIndex {
        self.replica.applied()
    }

    /// The index of the last log entry (or of the snapshot when the log after it is empty).
    pub fn last_log_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The term of the last log entry (or of the snapshot).
    pub fn last_log_term(&self) -> Term {
        self.log.last_term()
    }

    /// The term of the entry at `index`, if the log (or the snapshot point) holds it.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// The entries after the snapshot, in order.
    pub fn log_entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.entries()
    }

    /// What the latest snapshot covers, if there is one.
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref().map(|snapshot| &snapshot.meta)
    }

    /// The latest snapshot, if there is one.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The time at which this node's election timer fires (meaningless on a leader).
    pub fn election_deadline(&self) -> Instant {
        self.election_deadline
    }

    /// Whether a lease read could be served now (leader with a valid lease).
    pub fn lease_valid(&self, now: Instant) -> bool {
        self.state == State::Leader && self.lease_until.is_some_and(|until| now < until)
    }

    fn membership_now(&self) -> &Membership {
        &self.memberships[self.memberships.len() - 1].1
    }

    /// Refills `into` with one figure per voter, in membership order: `own` for this node, `of` its
    /// progress for the others (0 without progress). The per-voter tallies of commit, read rounds
    /// and results use it on every acknowledgement, so the buffer is reused, not allocated.
    fn fill_per_voter(&self, into: &mut Vec<u64>, own: u64, of: impl Fn(&Progress) -> u64) {
        into.clear();
        into.extend(self.membership_now().voters().map(|voter| {
            if *voter == self.id {
                own
            } else {
                self.progress.get(voter).map_or(0, &of)
            }
        }));
    }

    fn membership_at(&self, index: LogIndex) -> &Membership {
        self.memberships
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map_or_else(|| &self.memberships[0].1, |(_, membership)| membership)
    }

    fn voters(&self) -> Vec<NodeId> {
        self.membership_now().voters().cloned().collect()
    }

    fn is_voter(&self) -> bool {
        self.membership_now().is_voter(&self.id)
    }

    fn node_info(&self, id: &NodeId) -> NodeInfo {
        self.membership_now()
            .members
            .get(id)
            .map(|member| member.info.clone())
            .unwrap_or_else(|| NodeInfo::new(id.clone(), ""))
    }

    fn not_leader(&self) -> ProposalError {
        ProposalError::NotLeader { leader: self.leader.as_ref().map(|leader| self.node_info(leader)) }
    }

    fn random_election_timeout(&mut self) -> Duration {
        let (min, max) = self.config.election_timeout_range();
        let spread = u64::try_from((max - min).as_nanos()).unwrap_or(u64::MAX);
        min + Duration::from_nanos(self.rng.gen_range(0..=spread))
    }

    fn reset_election_deadline(&mut self, now: Instant) {
        let timeout = self.random_election_timeout();
        self.election_deadline = now + timeout;
    }

    fn send(&mut self, to: NodeId, message: RaftMessage) {
        debug_assert_ne!(to, self.id, "a node never sends to itself");
        self.messages.push(Outbound { to, message: Message::Raft(message) });
    }

    fn send_after_persist(&mut self, to: NodeId, message: RaftMessage) {
        debug_assert_ne!(to, self.id, "a node never sends to itself");
        self.persisted_messages.push(Outbound { to, message: Message::Raft(message) });
    }

    fn save_hard_state(&mut self) {
        self.persist.hard_state = Some(self.hard_state());
    }

    fn hard_state(&self) -> HardState {
        #[allow(unused_mut)]
        let mut voted_for = self.voted_for.clone();
        #[cfg(feature = "broken-variants")]
        if self.has_bug(Bug::SkipVotePersistence) {
            voted_for = None;
        }
        HardState { term: self.term, voted_for, commit: self.commit }
    }

    /// Saves the commit index with a write that stores entries anyway (same group, same sync: a
    /// write of its own per commit update would cost a sync each). Every entry up to it is in this
    /// write or an earlier one, so storage never holds a commit index beyond its log.
    fn save_commit_with_entries(&mut self) {
        if self.commit <= self.commit_saved {
            return;
        }
        if self.persist.entries.is_empty() && self.persist.hard_state.is_none() {
            return;
        }
        let mut hard_state = self.persist.hard_state.take().unwrap_or_else(|| self.hard_state());
        hard_state.commit = self.commit;
        self.persist.hard_state = Some(hard_state);
        self.commit_saved = self.commit;
    }

    fn set_commit(&mut self, index: LogIndex) {
        assert!(index >= self.commit, "the commit index never moves back ({} to {index})", self.commit);
        assert!(
            index <= self.log.last_index(),
            "commit {index} beyond the log's end {}",
            self.log.last_index()
        );
        self.commit = index;
    }

    fn set_leader(&mut self, leader: Option<NodeId>) {
        if leader != self.leader {
            if let Some(new) = &leader {
                if *new != self.id {
                    self.events.push(Event::LeaderElected { leader: new.clone(), term: self.term });
                }
            }
            self.leader = leader;
        }
    }

    fn start_if_needed(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.started {
            return;
        }
        self.started = true;
        self.started_at = Some(now);
        let recovered_stamp = self.newest_stamp();
        self.see_stamp(recovered_stamp, now);
        self.reset_election_deadline(now);
        let peers: Vec<NodeId> =
            self.membership_now().members.keys().filter(|id| **id != self.id).cloned().collect();
        for peer in peers {
            self.last_heard.insert(peer, now);
        }
    }

    /// Work common to the end of every input.
    fn finish(&mut self, now: Instant) {
        debug_assert_eq!(
            self.pending.len(),
            self.proposal_deadlines.len(),
            "every pending proposal has exactly one deadline"
        );
        if self.state == State::Leader {
            self.try_promote(now);
        }
        let role = self.role();
        if role != self.reported_role {
            self.reported_role = role;
            self.events.push(Event::RoleChanged { role, term: self.term });
        }
    }

    fn append_entry(&mut self, entry: Entry) {
        if let EntryPayload::Membership(membership) = &entry.payload {
            self.memberships.push((entry.index, Membership::clone(membership)));
        }
        let key = match &entry.payload {
            EntryPayload::Command(proposal) => {
                self.proposal_index.insert(&proposal.id, entry.index);
                Some(proposal.command.key())
            }
            _ => None,
        };
        if self.entry_events_wanted {
            let key = key.map(str::to_owned);
            self.events.push(Event::LogAppended { index: entry.index, term: entry.term, key });
        }
        self.persist.entries.push(entry.clone());
        self.log.push(entry);
    }

    fn truncate_log_from(&mut self, from: LogIndex) {
        assert!(from > self.commit, "a committed entry ({from}, commit {}) is never truncated", self.commit);
        let mut index = from;
        while let Some(entry) = self.log.entry(index) {
            if let EntryPayload::Command(proposal) = &entry.payload {
                self.proposal_index.remove(&proposal.id);
            }
            index = index.next();
        }
        self.log.truncate_from(from);
        self.memberships.retain(|(index, _)| *index < from);
        assert!(!self.memberships.is_empty(), "the snapshot's membership is never truncated");
        self.persisted = self.persisted.min(from.prev());
        if self.persist.entries.first().is_some_and(|first| first.index <= from) {
            self.persist.entries.retain(|entry| entry.index < from);
        } else {
            self.persist.entries.clear();
            self.persist.truncate_from = Some(self.persist.truncate_from.map_or(from, |old| old.min(from)));
        }
    }

    /// Puts a snapshot in the pending persist; `log_continues` says whether the in-memory log
    /// kept the entries after it.
    fn persist_snapshot(&mut self, snapshot: Snapshot, log_continues: bool, committed_before: LogIndex) {
        let last = snapshot.meta.last_index;
        self.persist.entries.retain(|entry| entry.index > last);
        if !log_continues {
            // Everything after what was committed before may be a stale entry the snapshot
            // replaces: say so explicitly (storage drops it with the snapshot anyway).
            self.persist.entries.clear();
            let from = committed_before.next().min(last.next());
            self.persist.truncate_from = Some(self.persist.truncate_from.map_or(from, |old| old.min(from)));
        }
        self.persist.snapshot = Some(snapshot);
    }

    /// The newest leader timestamp in this node's log or, below it, its state machine.
    fn newest_stamp(&self) -> u64 {
        let last_entry = self.log.entry(self.log.last_index()).map_or(0, |entry| entry.timestamp_ms);
        last_entry.max(self.replica.last_timestamp_ms())
    }

    /// Notes a leader timestamp found in the log at `now` (0: none yet).
    pub(super) fn see_stamp(&mut self, stamp_ms: u64, now: Instant) {
        self.stamp_anchor.see(stamp_ms, now);
    }

    /// The timestamp of the next entry this leader appends: its clock, but never below the last
    /// entry's stamp (stamps never decrease), and never more than `STAMP_LEAD_MAX_MS` past the
    /// newest stamp it saw from earlier leaders plus the time it has measured since. So a node
    /// whose wall clock was set far ahead when its process started cannot, once elected, move
    /// leader time forward by the error: that would expire every client session at once (a retry
    /// would then apply a second time) and every lock lease early. Leader time then runs at the
    /// rate of this node's monotonic clock, and after a whole-cluster outage it stays behind the
    /// wall clock by about the outage: expiries count the time the cluster ran.
    fn leader_stamp(&self, now: Instant) -> u64 {
        let previous = self
            .log
            .entry(self.log.last_index())
            .map_or(self.replica.last_timestamp_ms(), |entry| entry.timestamp_ms);
        self.stamp_anchor.cap(now).max(previous)
    }

    fn leader_append(&mut self, now: Instant, payload: EntryPayload) -> LogIndex {
        debug_assert_eq!(self.state, State::Leader);
        let index = self.log.last_index().next();
        let timestamp_ms = self.leader_stamp(now);
        if let EntryPayload::Command(proposal) = &payload {
            if let Some(pending) = self.pending.get_mut(&proposal.id) {
                pending.index = Some(index);
            }
        }
        let is_membership = matches!(payload, EntryPayload::Membership(_));
        self.append_entry(Entry { index, term: self.term, timestamp_ms, payload });
        if is_membership {
            self.sync_progress();
        }
        index
    }

    fn heard_from(&mut self, now: Instant, from: &NodeId) {
        if !self.membership_now().contains(from) && !self.progress.contains_key(from) {
            return;
        }
        // Runs for every message: update in place, cloning the id only for a new peer.
        match self.last_heard.get_mut(from) {
            Some(heard) => *heard = now,
            None => {
                self.last_heard.insert(from.clone(), now);
            }
        }
        if self.unreachable.remove(from) {
            self.events.push(Event::NodeReconnected { node: from.clone() });
        }
        if let Some(progress) = self.progress.get_mut(from) {
            progress.recent_active = true;
        }
    }

    fn step(&mut self, now: Instant, from: NodeId, message: RaftMessage) -> Result<(), PeerError> {
        let term = message.term();
        if term > self.term {
            match &message {
                RaftMessage::VoteRequest { pre_vote, transfer, .. } => {
                    if !transfer && self.in_leader_lease(now) {
                        // A current leader is alive: a node rejoining (or partitioned one way) must
                        // not disrupt it. Ignore, as etcd does.
                        return Ok(());
                    }
                    if !pre_vote {
                        self.become_follower(now, term, None);
                    }
                }
                RaftMessage::VoteResponse { pre_vote: true, granted: true, .. } => {}
                RaftMessage::Append { .. } | RaftMessage::InstallSnapshot { .. } => {
                    self.become_follower(now, term, Some(from.clone()));
                }
                _ => self.become_follower(now, term, None),
            }
        } else if term < self.term {
            match &message {
                RaftMessage::Append { .. } | RaftMessage::InstallSnapshot { .. } => {
                    // Tell a stale leader about the newer term, or it never steps down.
                    let response = RaftMessage::AppendResponse {
                        term: self.term,
                        success: false,
                        match_index: LogIndex::ZERO,
                        conflict: None,
                        last_log_index: self.log.last_index(),
                        read_round: 0,
                    };
                    self.send_after_persist(from, response);
                    return Ok(());
                }
                RaftMessage::VoteRequest { pre_vote, .. } => {
                    // Figure 2: reply false with the current term, for the candidate to update itself.
                    let response =
                        RaftMessage::VoteResponse { term: self.term, granted: false, pre_vote: *pre_vote };
                    self.send_after_persist(from, response);
                    return Ok(());
                }
                // Proposals, reads and their answers do not depend on the sender's term.
                RaftMessage::ForwardProposal { .. }
                | RaftMessage::ReadIndexRequest { .. }
                | RaftMessage::ForwardRejected { .. }
                | RaftMessage::ReadIndexResponse { .. } => {}
                _ => return Ok(()),
            }
        }
        match message {
            RaftMessage::VoteRequest { term, last_log_index, last_log_term, pre_vote, .. } => {
                self.handle_vote_request(now, from, term, last_log_index, last_log_term, pre_vote);
            }
            RaftMessage::VoteResponse { term, granted, pre_vote } => {
                self.handle_vote_response(now, from, term, granted, pre_vote);
            }
            RaftMessage::Append {
                prev_log_index, prev_log_term, entries, leader_commit, read_round, ..
            } => {
                self.handle_append(
                    now,
                    from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    read_round,
                )?;
            }
            RaftMessage::AppendResponse { success, match_index, conflict, read_round, .. } => {
                self.handle_append_response(now, from, success, match_index, conflict, read_round);
            }
            RaftMessage::InstallSnapshot { meta, offset, total_bytes, data, done, .. } => {
                self.handle_install_snapshot(now, from, meta, offset, total_bytes, data, done)?;
            }
            RaftMessage::InstallSnapshotResponse { last_index, next_offset, done, .. } => {
                self.handle_install_snapshot_response(now, from, last_index, next_offset, done);
            }
            RaftMessage::TimeoutNow { .. } => {
                if self.state != State::Leader && self.is_voter() {
                    self.campaign(now, false, true);
                }
            }
            RaftMessage::ForwardProposal { proposal, .. } => {
                let id = proposal.id.clone();
                // A duplicate of a forward already in the log is dropped: the first copy decides.
                // With a client session it is appended again instead: the session applies it at
                // most once, and its second application hands the first result back to the
                // origin, which may have missed the first one (it retries after losing track of
                // it, e.g. after stepping down as leader).
                let outcome = if proposal.session.is_none() && self.is_known_proposal(&proposal) {
                    Ok(())
                } else if self.state != State::Leader {
                    Err(self.not_leader())
                } else {
                    validate_command(&self.config, &proposal.command)
                        .and_then(|()| self.leader_accept(now, proposal))
                };
                if let Err(error) = outcome {
                    let term = self.term;
                    self.send(from, RaftMessage::ForwardRejected { term, proposal: id, error });
                }
            }
            RaftMessage::ForwardRejected { proposal, error, .. } => {
                if proposal.origin == self.id {
                    // The network may have duplicated the forward: a first copy can have been
                    // appended by this node while it led, and be committed by its successor, even
                    // though this copy found it a follower. So "not the leader" only means the
                    // outcome is unknown. (Busy and Invalid are decided before any append.)
                    let error = match error {
                        ProposalError::NotLeader { .. } => ProposalError::LeadershipLost,
                        other => other,
                    };
                    self.fail_proposal(&proposal, error);
                }
            }
            RaftMessage::ReadIndexRequest { request, .. } => {
                let limit = self.config.max_pending_reads as usize;
                let refusal = if self.state != State::Leader {
                    Some(self.not_leader())
                } else if self.pending_read_count() >= limit {
                    Some(ProposalError::Busy { what: "pending reads".into(), limit: limit as u64 })
                } else {
                    None
                };
                match refusal {
                    Some(error) => {
                        let term = self.term;
                        self.send(from, RaftMessage::ReadIndexResponse { term, request, result: Err(error) });
                    }
                    None => {
                        self.remote_reads += 1;
                        self.leader_read(now, ReadOrigin::Remote { from, request });
                    }
                }
            }
            RaftMessage::ReadIndexResponse { request, result, .. } => {
                if let Some(id) = self.forwarded_reads.remove(&request) {
                    self.answer_origin(ReadOrigin::Local(id), result);
                }
            }
        }
        Ok(())
    }
}

impl Mechanism for Raft {
    fn node_id(&self) -> &NodeId {
        &self.id
    }

    fn handle_message(&mut self, now: Instant, from: NodeId, message: Message) -> Result<(), PeerError> {
        self.start_if_needed(now);
        let message = match message {
            Message::Raft(message) => message,
            Message::Majority(_) => {
                return Err(PeerError::WrongMechanism { expected: "raft", got: "simple_majority" });
            }
        };
        if from == self.id {
            return Err(PeerError::Protocol {
                from: from.to_string(),
                reason: "a message from itself".into(),
            });
        }
        self.heard_from(now, &from);
        let result = self.step(now, from, message);
        self.finish(now);
        result
    }

    fn propose(&mut self, now: Instant, proposal: Proposal) -> Result<(), ProposalError> {
        self.start_if_needed(now);
        validate_command(&self.config, &proposal.command)?;
        if proposal.id.origin != self.id {
            return Err(ProposalError::Invalid(format!(
                "proposal {} names origin {} but was made on {}",
                proposal.id, proposal.id.origin, self.id
            )));
        }
        if self.pending.contains_key(&proposal.id) {
            return Err(ProposalError::Invalid(format!("proposal {} is already pending", proposal.id)));
        }
        let limit = self.config.max_pending_proposals as usize;
        if self.pending.len() >= limit {
            return Err(ProposalError::Busy { what: "pending proposals".into(), limit: limit as u64 });
        }
        let outcome = if self.state == State::Leader {
            self.leader_accept(now, Arc::new(proposal))
        } else if let (true, Some(leader)) = (self.config.forward_to_leader, self.leader.clone()) {
            self.register_proposal(now, &proposal);
            let term = self.term;
            self.send(leader, RaftMessage::ForwardProposal { term, proposal: Arc::new(proposal) });
            Ok(())
        } else {
            Err(self.not_leader())
        };
        self.finish(now);
        outcome
    }

    fn read(&mut self, now: Instant, id: ReadId) -> Result<(), ProposalError> {
        self.start_if_needed(now);
        if self.local_reads.contains_key(&id) {
            return Err(ProposalError::Invalid(format!("read {id} is already pending")));
        }
        let limit = self.config.max_pending_reads as usize;
        if self.pending_read_count() >= limit {
            return Err(ProposalError::Busy { what: "pending reads".into(), limit: limit as u64 });
        }
        if self.state == State::Leader {
            self.register_read(now, id);
            self.leader_read(now, ReadOrigin::Local(id));
        } else if let (true, Some(leader)) = (self.config.forward_to_leader, self.leader.clone()) {
            self.register_read(now, id);
            let request = self.next_read_request;
            self.next_read_request += 1;
            self.forwarded_reads.insert(request, id);
            let term = self.term;
            self.send(leader, RaftMessage::ReadIndexRequest { term, request });
        } else {
            return Err(self.not_leader());
        }
        self.finish(now);
        Ok(())
    }

    fn change_membership(
        &mut self,
        now: Instant,
        id: ProposalId,
        change: MembershipChange,
    ) -> Result<(), ProposalError> {
        self.start_if_needed(now);
        if self.state != State::Leader {
            return Err(self.not_leader());
        }
        if self.transfer.is_some() {
            return Err(ProposalError::Busy { what: "leadership transfer in progress".into(), limit: 0 });
        }
        if self.pending.contains_key(&id) {
            return Err(ProposalError::Invalid(format!("proposal {id} is already pending")));
        }
        if !self.committed_own_term() {
            // The known fix for one-server-at-a-time changes: a new leader first commits an entry
            // of its own term, so no change of an earlier leader can still be in flight.
            return Err(ProposalError::Busy {
                what: "the new leader has not committed an entry of its term yet".into(),
                limit: 0,
            });
        }
        if self.membership_change_in_progress() || !self.promotions.is_empty() {
            return Err(ProposalError::Busy {
                what: "another membership change is in progress".into(),
                limit: 1,
            });
        }
        let mut next = self.membership_now().clone();
        let node = change.node().clone();
        let invalid = |reason: &str| Err(ProposalError::Invalid(format!("{reason}: {node}")));
        match &change {
            MembershipChange::AddVoter(info) | MembershipChange::AddLearner(info) => {
                if next.contains(&info.id) {
                    return invalid("already a member");
                }
                let mut info = info.clone();
                info.connected = false;
                next.members.insert(info.id.clone(), Member { info, role: MemberRole::Learner });
            }
            MembershipChange::Promote(id) => match next.members.get_mut(id) {
                Some(member) if member.role == MemberRole::Learner => member.role = MemberRole::Voter,
                Some(_) => return invalid("already a voter"),
                None => return invalid("not a member"),
            },
            MembershipChange::Remove(id) => {
                if !next.contains(id) {
                    return invalid("not a member");
                }
                if next.is_voter(id) && next.voter_count() == 1 {
                    return invalid("cannot remove the last voter");
                }
                next.members.remove(id);
            }
            MembershipChange::Update(info) => match next.members.get_mut(&info.id) {
                Some(member) => {
                    let mut info = info.clone();
                    info.connected = false;
                    member.info = info;
                }
                None => return invalid("not a member"),
            },
        }
        let deadline = self.track_deadline(now, &id);
        self.pending.insert(
            id.clone(),
            PendingProposal { deadline, fingerprint: 0, key: node.to_string(), value: None, index: None },
        );
        let index = self.leader_append(now, EntryPayload::Membership(Box::new(next)));
        if let Some(pending) = self.pending.get_mut(&id) {
            pending.index = Some(index);
        }
        if matches!(change, MembershipChange::AddVoter(_)) {
            // The result comes when the promotion that follows the catch-up commits.
            if let Some(pending) = self.pending.get_mut(&id) {
                pending.index = None;
            }
            self.promotions.insert(node, id);
        } else {
            self.membership_proposals.insert(index, id);
        }
        self.broadcast_append(now);
        self.maybe_commit(now);
        self.finish(now);
        Ok(())
    }

    fn vote(&mut self, _now: Instant, _proposal: &ProposalId, _in_favor: bool) -> Result<(), ProposalError> {
        Err(ProposalError::Unsupported { mechanism: "raft".into(), operation: "manual votes".into() })
    }

    fn transfer_leadership(&mut self, now: Instant, to: &NodeId) -> Result<(), ProposalError> {
        self.start_if_needed(now);
        if self.state != State::Leader {
            return Err(self.not_leader());
        }
        if *to == self.id {
            return Ok(());
        }
        if !self.membership_now().is_voter(to) {
            return Err(ProposalError::Invalid(format!("{to} is not a voter")));
        }
        self.transfer =
            Some(Transfer { target: to.clone(), deadline: now + self.config.election_timeout.max });
        // The target may win an election that ignores leases: no lease reads for the rest of the term.
        self.lease_until = None;
        self.transfer_started = true;
        if !self.batch.is_empty() {
            self.flush_batch(now);
        }
        self.send_append(now, to, false);
        self.maybe_send_timeout_now(to);
        self.finish(now);
        Ok(())
    }

    fn handle_peer_status(&mut self, now: Instant, peer: &NodeId, connected: bool) {
        self.start_if_needed(now);
        if *peer == self.id {
            return;
        }
        if connected {
            self.link_down.remove(peer);
            self.heard_from(now, peer);
        } else {
            self.link_down.insert(peer.clone());
            if self.membership_now().contains(peer) && self.unreachable.insert(peer.clone()) {
                self.events.push(Event::NodeUnreachable { node: peer.clone() });
            }
        }
        self.finish(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.started {
            self.start_if_needed(now);
            return;
        }
        self.start_if_needed(now);
        while let Some(id) = self.proposal_deadlines.pop_due(now) {
            self.fail_proposal(&id, ProposalError::Timeout);
        }
        while let Some((deadline, id)) = self.read_deadlines.first().copied() {
            if deadline > now {
                break;
            }
            self.answer_read(id, Err(ProposalError::Timeout));
            self.read_deadlines.remove(&(deadline, id));
        }
        if !self.forwarded_reads.is_empty() {
            let local_reads = &self.local_reads;
            self.forwarded_reads.retain(|_, id| local_reads.contains_key(id));
        }
        if !self.apply_waits.is_empty() {
            let local_reads = &self.local_reads;
            self.apply_waits.retain(|(_, id)| local_reads.contains_key(id));
        }
        if self.batch_deadline.is_some_and(|deadline| deadline <= now) {
            self.flush_batch(now);
        }
        if self.state == State::Leader {
            if self.transfer.as_ref().is_some_and(|transfer| transfer.deadline <= now) {
                self.transfer = None;
            }
            if self.config.check_quorum && self.check_quorum_deadline <= now {
                self.check_quorum_deadline = now + self.config.election_timeout.min;
                let voters = self.voters();
                let active = voters
                    .iter()
                    .filter(|voter| {
                        **voter == self.id
                            || self.progress.get(*voter).is_some_and(|progress| progress.recent_active)
                    })
                    .count();
                for progress in self.progress.values_mut() {
                    progress.recent_active = false;
                }
                if active < majority(voters.len()) {
                    let term = self.term;
                    self.become_follower(now, term, None);
                }
            }
            if self.state == State::Leader && self.heartbeat_deadline <= now {
                self.broadcast_heartbeat(now);
            }
        } else if self.election_deadline <= now {
            // Not heard from the leader for an election timeout: that is what unreachable means.
            if let Some(leader) = self.leader.clone() {
                if leader != self.id && self.unreachable.insert(leader.clone()) {
                    self.events.push(Event::NodeUnreachable { node: leader });
                }
            }
            let pre_vote = self.config.pre_vote;
            self.campaign(now, pre_vote, false);
        }
        let timeout = self.config.election_timeout.max;
        let expected: Vec<NodeId> = match self.state {
            State::Leader => self.progress.keys().cloned().collect(),
            _ => self.leader.iter().cloned().collect(),
        };
        for peer in expected {
            let silent = self.last_heard.get(&peer).is_some_and(|heard| now >= *heard + timeout);
            if silent && self.unreachable.insert(peer.clone()) {
                self.events.push(Event::NodeUnreachable { node: peer });
            }
        }
        self.finish(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.started {
            return Some(Instant::ZERO);
        }
        let mut earliest = Instant::MAX;
        let mut consider = |instant: Instant| earliest = earliest.min(instant);
        if let Some(deadline) = self.proposal_deadlines.first() {
            consider(deadline);
        }
        if let Some((deadline, _)) = self.read_deadlines.first() {
            consider(*deadline);
        }
        if let Some(deadline) = self.batch_deadline {
            consider(deadline);
        }
        if self.state == State::Leader {
            consider(self.heartbeat_deadline);
            if self.config.check_quorum {
                consider(self.check_quorum_deadline);
            }
            if let Some(transfer) = &self.transfer {
                consider(transfer.deadline);
            }
            for peer in self.progress.keys() {
                if !self.unreachable.contains(peer) {
                    if let Some(heard) = self.last_heard.get(peer) {
                        consider(*heard + self.config.election_timeout.max);
                    }
                }
            }
        } else {
            if self.is_voter() {
                consider(self.election_deadline);
            }
            if let Some(leader) = &self.leader {
                if !self.unreachable.contains(leader) {
                    if let Some(heard) = self.last_heard.get(leader) {
                        consider(*heard + self.config.election_timeout.max);
                    }
                }
            }
        }
        (earliest != Instant::MAX).then_some(earliest)
    }

    fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.persist.is_empty()
            || !self.results.is_empty()
            || !self.reads.is_empty()
            || !self.events.is_empty()
            || (!self.batch.is_empty() && self.config.batch_window.is_zero())
            || (self.commit_unsent && self.state == State::Leader)
            || (self.started && self.replica.applied() < self.commit)
    }

    fn ready(&mut self) -> Ready {
        // Not before the first input: the clock is unknown until then (a restart's saved commit
        // index is applied from the first round on).
        if self.started && self.replica.applied() < self.commit {
            // The rest of a committed tail longer than `max_apply_entries`.
            let now = self.now;
            self.apply_committed(now);
            self.finish(now);
        }
        if !self.batch.is_empty() && self.config.batch_window.is_zero() {
            let now = self.now;
            self.flush_batch(now);
            self.finish(now);
        }
        if self.commit_unsent && self.state == State::Leader {
            self.send_commit_updates();
        }
        self.commit_unsent = false;
        self.round_unsent = false;
        self.ready_number += 1;
        let number = self.ready_number;
        self.save_commit_with_entries();
        let persist = self.persist.take_with_capacity();
        if !persist.is_empty() {
            self.unacknowledged.push_back((number, self.log.last_index(), self.log.last_term()));
        }
        Ready {
            number,
            messages: take_with_capacity(&mut self.messages),
            persist,
            persisted_messages: take_with_capacity(&mut self.persisted_messages),
            results: take_with_capacity(&mut self.results),
            reads: std::mem::take(&mut self.reads),
            events: take_with_capacity(&mut self.events),
        }
    }

    fn advance(&mut self, now: Instant, number: u64) {
        self.start_if_needed(now);
        while self.unacknowledged.front().is_some_and(|(acknowledged, _, _)| *acknowledged <= number) {
            let Some((_, index, term)) = self.unacknowledged.pop_front() else { break };
            // Storage now holds the log as it was when that batch was taken; if the entry there is
            // still ours, so is everything before it (log matching).
            if self.log.term_at(index) == Some(term) {
                self.persisted = self.persisted.max(index);
            }
        }
        self.maybe_commit(now);
        self.finish(now);
    }

    fn replica(&self) -> &Replica {
        &self.replica
    }

    fn membership(&self) -> &Membership {
        self.membership_now()
    }

    fn leader(&self) -> Option<NodeId> {
        self.leader.clone()
    }

    fn connected_peers(&self) -> Vec<NodeId> {
        self.membership_now()
            .members
            .keys()
            .filter(|id| **id != self.id && !self.unreachable.contains(*id) && !self.link_down.contains(*id))
            .cloned()
            .collect()
    }

    fn set_entry_events_wanted(&mut self, wanted: bool) {
        self.entry_events_wanted = wanted;
    }

    fn debug_state(&self) -> DebugState {
        DebugState {
            node_id: self.id.clone(),
            mechanism: "raft".into(),
            current_term: self.term,
            role: self.role(),
            leader_id: self.leader.clone(),
            commit_index: self.commit,
            last_applied: self.replica.applied(),
            log_length: self.log.len() as u64,
            last_log_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index(),
            followers: self.progress.iter().map(|(id, progress)| (id.clone(), progress.debug())).collect(),
            pending_proposals: self.pending.len(),
            session_results: self.replica.session_results(),
            session_clients: self.replica.session_clients(),
            session_clients_expired: self.replica.clients_expired(),
        }
    }
}
