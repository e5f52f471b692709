//! The `Consensus` handle, its builder, and the node task that drives a mechanism.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_core::codec::{Codec, Envelope};
use concord_core::command::{Command, CommandFailure, Expectation};
use concord_core::config::{Config, MechanismKind};
use concord_core::error::ProposalError;
use concord_core::event::{DebugState, Event, PartitionSide, ProposalResult};
use concord_core::hashing::U64Hashing;
use concord_core::id::{ClientSession, ClusterId, LogIndex, NodeId, NodeInfo, ProposalId};
use concord_core::mechanism::{Mechanism, MembershipChange, Outbound, ReadId, ReadResult, Ready, Setup};
use concord_core::message::Proposal;
use concord_core::state_machine::{Replica, StateMachine};
use concord_core::storage::{MemoryStorage, Persist, Storage};
use concord_core::transport::{Incoming, Transport};
use concord_core::typed::{decode_value, encode_value};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot, Notify};

use crate::callback::{CallbackTransport, MessageSender};
use crate::clock::Clock;
use crate::error::{ReadError, StartError};
use crate::inbox::{PendingCall, ProposalInbox, Pushed, Submission};
use crate::memory::{Handoff, LocalDelivery, MemoryTransport};
use crate::sequences::{Sequences, Taken};
use crate::stream::{EventStream, KeySubscription};

/// Builds and starts a node: `Consensus::builder("agent-001").config(cfg).transport(t).start().await`.
pub struct ConsensusBuilder {
    node_id: String,
    address: String,
    config: Config,
    members: Vec<NodeInfo>,
    transport: Option<Arc<dyn Transport>>,
    storage: Option<Box<dyn Storage>>,
    state_machine: Option<Box<dyn StateMachine>>,
    cluster_id: ClusterId,
    seed: Option<u64>,
    clock_epoch_unix_ms: Option<u64>,
    #[cfg(feature = "file-storage")]
    data_dir: Option<std::path::PathBuf>,
}

impl ConsensusBuilder {
    fn new(node_id: impl Into<String>) -> Self {
        ConsensusBuilder {
            node_id: node_id.into(),
            address: String::new(),
            config: Config::default(),
            members: Vec::new(),
            transport: None,
            storage: None,
            state_machine: None,
            cluster_id: ClusterId::default(),
            seed: None,
            clock_epoch_unix_ms: None,
            #[cfg(feature = "file-storage")]
            data_dir: None,
        }
    }

    /// The consensus config (validated at start).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// This node's own address, as peers reach it.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// A member of the initial cluster (call once per peer; this node is added automatically). Used
    /// only when storage holds no membership yet.
    pub fn add_node(mut self, node: NodeInfo) -> Self {
        self.members.push(node);
        self
    }

    /// The initial cluster, replacing earlier `add_node` calls.
    pub fn members(mut self, members: impl IntoIterator<Item = NodeInfo>) -> Self {
        self.members = members.into_iter().collect();
        self
    }

    /// The transport (in-memory, WebSocket, ZeroMQ, or your own). Swapping it changes nothing else.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Bring your own network (the lesson's `setMessageSender`): the node calls `sender(to, frame)`
    /// for every outgoing frame, and you pass incoming frames to [`Consensus::handle_message`].
    pub fn set_message_sender(mut self, sender: impl Fn(&NodeId, Bytes) + Send + Sync + 'static) -> Self {
        let sender: MessageSender = Box::new(sender);
        self.transport = Some(Arc::new(CallbackTransport::new(sender)));
        self
    }

    /// Durable storage (default: in memory).
    pub fn storage(mut self, storage: Box<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Durable storage in `directory` (created if missing): a restarted node resumes with its term,
    /// vote, log and snapshot. Errors (unreadable or corrupt files) surface from `start`.
    #[cfg(feature = "file-storage")]
    pub fn data_dir(mut self, directory: impl AsRef<std::path::Path>) -> Self {
        self.data_dir = Some(directory.as_ref().to_path_buf());
        self
    }

    /// Replicate your own state machine instead of the key-value one.
    pub fn state_machine(mut self, machine: Box<dyn StateMachine>) -> Self {
        self.state_machine = Some(machine);
        self
    }

    /// The cluster's id: frames of other clusters are refused.
    pub fn cluster_id(mut self, cluster_id: ClusterId) -> Self {
        self.cluster_id = cluster_id;
        self
    }

    /// Seed of the mechanism's RNG (default: derived from the node id and the time).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Anchor the node's clock at this Unix time instead of the system clock (tests).
    pub fn clock_epoch_unix_ms(mut self, epoch: u64) -> Self {
        self.clock_epoch_unix_ms = Some(epoch);
        self
    }

    /// Validates everything, recovers storage, builds the mechanism and starts the node's tasks.
    /// Must be called inside a tokio runtime.
    ///
    /// Storage is read back, and the mechanism built from it, in tokio's blocking pool. Dropping
    /// this future while it waits for that does not stop the reading: do not start another node
    /// on the same `data_dir` until this call has returned (or the runtime has shut down), as two
    /// stores on one directory corrupt each other.
    pub async fn start(self) -> Result<Consensus, StartError> {
        self.config.validate()?;
        let node_id = NodeId::parse(&self.node_id)?;
        let transport =
            self.transport.ok_or_else(|| StartError::Builder("a transport is required".into()))?;
        #[cfg(feature = "file-storage")]
        let data_dir = self.data_dir;
        #[cfg(feature = "file-storage")]
        if data_dir.is_some() && self.storage.is_some() {
            return Err(StartError::Builder("give either storage(...) or data_dir(...), not both".into()));
        }
        let given_storage = self.storage;
        let mut members = self.members;
        if !members.iter().any(|m| m.id == node_id) {
            members.push(NodeInfo::new(node_id.clone(), self.address.clone()));
        }
        let machine = self
            .state_machine
            .unwrap_or_else(|| Box::new(concord_core::state_machine::KvStateMachine::new()));
        let replica = Replica::with_config(machine, &self.config);
        let clock = Clock::new(self.clock_epoch_unix_ms);
        let seed = self.seed.unwrap_or_else(|| random_u64() ^ hash_str(node_id.as_str()));
        let setup_config = self.config.clone();
        let setup_members = members.clone();
        let setup_node_id = node_id.clone();
        // Reading a long log back is blocking file I/O and decoding (about a second for a million
        // entries), and building the mechanism replays it (a tenth of that again): both run off
        // the async workers, which meanwhile go on running every other task (other nodes of this
        // process among them).
        let recovery = tokio::task::spawn_blocking(move || -> Result<_, StartError> {
            #[cfg(feature = "file-storage")]
            let file_storage: Option<Box<dyn Storage>> = match &data_dir {
                Some(directory) => Some(Box::new(concord_storage::FileStorage::open(
                    directory,
                    concord_storage::FileStorageOptions::default(),
                )?)),
                None => None,
            };
            #[cfg(not(feature = "file-storage"))]
            let file_storage: Option<Box<dyn Storage>> = None;
            let mut storage =
                file_storage.or(given_storage).unwrap_or_else(|| Box::new(MemoryStorage::new()));
            let recovered = storage.recover()?;
            let setup = Setup {
                node_id: setup_node_id,
                config: setup_config,
                initial_members: setup_members,
                recovered,
                seed,
                replica,
            };
            let mut mechanism = build_mechanism(setup)?;
            // Nobody can listen yet (the channel is made below; `listen` turns them on): without
            // this, a restarted node would build an event for every entry it replays from its log.
            mechanism.set_entry_events_wanted(false);
            Ok((storage, mechanism))
        });
        let (storage, mechanism) = match recovery.await {
            Ok(recovered) => recovered?,
            // A panic in the storage's or the state machine's code reaches the caller as the
            // panic it is, as it did when recovery ran in this task.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => {
                return Err(StartError::Storage(concord_core::storage::StorageError::Failed(format!(
                    "storage recovery did not finish: {error}"
                ))))
            }
        };
        // Peers are added only once the node can start, so a failed start leaves the transport
        // as it was given.
        for member in &members {
            if member.id != node_id {
                if let Err(error) = transport.add_peer(member) {
                    tracing::warn!(peer = %member.id, %error, "transport refused peer");
                }
            }
        }
        // The mechanism's own copy of the id (its membership's): proposal ids made here then
        // compare with its id by pointer instead of by bytes, on every proposal.
        let node_id = mechanism.node_id().clone();
        let (events, _) = broadcast::channel(self.config.max_event_backlog as usize);
        let start = clock.now();
        let shared = Arc::new(Shared {
            node_id,
            codec: Codec::from_config(&self.config),
            cluster_id: self.cluster_id,
            config: self.config,
            clock,
            state: Mutex::new(NodeState {
                mechanism,
                proposals: HashMap::default(),
                spare_submissions: Vec::new(),
                reads: HashMap::new(),
                partition: PartitionTracker { started: start, ..PartitionTracker::default() },
                failure: None,
            }),
            inbox: ProposalInbox::new(),
            pending_calls: AtomicUsize::new(0),
            wake: Notify::new(),
            events,
            client_id: random_u64(),
            sequences: Sequences::new(),
            next_read: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            stopped: Notify::new(),
            transport,
            storage_blocking: storage.is_blocking(),
            storage: Arc::new(std::sync::Mutex::new(storage)),
            processing_ready: AtomicBool::new(false),
            ready_requested: AtomicBool::new(false),
            handed_over: Mutex::new(Vec::new()),
            handed_over_waiting: AtomicBool::new(false),
            handed_over_runs: AtomicU64::new(0),
            solo_batches: AtomicU64::new(0),
            node_task_wakes_at: AtomicU64::new(0),
        });
        if let Some(memory) = memory_transport(&shared.transport) {
            let receiver: Arc<dyn LocalDelivery> = shared.clone();
            memory.set_local_delivery(Arc::downgrade(&receiver));
        }
        let driver = tokio::spawn(drive(shared.clone()));
        let receiver = tokio::spawn(receive(shared.clone()));
        Ok(Consensus { shared, tasks: Arc::new(Mutex::new(Some((driver, receiver)))) })
    }
}

fn build_mechanism(setup: Setup) -> Result<Box<dyn Mechanism>, StartError> {
    match setup.config.mechanism {
        #[cfg(feature = "raft")]
        MechanismKind::Raft => Ok(Box::new(concord_raft::Raft::new(setup)?)),
        #[cfg(feature = "majority")]
        MechanismKind::SimpleMajority => Ok(Box::new(concord_majority::Majority::new(setup)?)),
        #[allow(unreachable_patterns)]
        other => Err(StartError::MechanismNotCompiled(other.as_str())),
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; good enough for client ids and default seeds
    // (never used by protocol code, which gets its seed explicitly).
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    hasher.finish()
}

fn hash_str(text: &str) -> u64 {
    // FNV-1a: stable across runs, unlike std's hasher.
    text.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

pub(crate) struct Shared {
    node_id: NodeId,
    config: Config,
    codec: Codec,
    cluster_id: ClusterId,
    clock: Clock,
    state: Mutex<NodeState>,
    /// Proposals of this node's callers, until the node hands them to the mechanism.
    inbox: ProposalInbox,
    /// How many callers the mechanism holds proposals for (`NodeState::proposals`), as of the
    /// last batch: with the inbox's own length, what `max_pending_proposals` bounds.
    pending_calls: AtomicUsize,
    wake: Notify,
    pub(crate) events: broadcast::Sender<Event>,
    client_id: u64,
    /// Proposal sequences, and the acknowledgement each proposal carries.
    sequences: Sequences,
    next_read: AtomicU64,
    stopping: AtomicBool,
    // Set once the drain period of `stop` is over: the node task exits at its next check even if
    // proposals are still pending (they are then answered `Stopped`).
    halted: AtomicBool,
    stopped: Notify,
    transport: Arc<dyn Transport>,
    storage: Arc<std::sync::Mutex<Box<dyn Storage>>>,
    /// Whether `storage` blocks (file storage: persisted on the blocking pool).
    storage_blocking: bool,
    /// Set while some task processes this node's Ready batches: they must be handled one at a time
    /// and in order, by the node task or by a task delivering in-process messages to this node.
    processing_ready: AtomicBool,
    /// Set by a task that has new work for this node (an in-process delivery, a proposal, or the
    /// node task itself) but found another task processing its Ready: that task looks at the flag
    /// once it leaves, and wakes the node task if it is set. Cleared before each Ready is taken,
    /// since that Ready covers what was requested before it; so a delivery answered within the
    /// processor's own batch (a follower's acknowledgement to the leader whose proposal it is
    /// processing) costs no wake-up.
    ready_requested: AtomicBool,
    /// In-process messages handed to this node for its own task (`Handoff::ReceiversTask`), in
    /// arrival order; at most `maxHandedOverMessages` messages (beyond that they are handled in
    /// the sender's task, as with `Handoff::SendersTask`: nothing is lost and nothing grows; past
    /// it, under simple majority, with the cross-worker lock contention the queue avoids). Under
    /// Raft their bytes are bounded by the leader's flow control (`maxInflightBytes` per
    /// follower); under simple majority every message comes this way, bounded by the proposals
    /// in flight (`maxPendingProposals`).
    handed_over: Mutex<Vec<(NodeId, concord_core::message::Message)>>,
    /// Whether `handed_over` may hold messages: read without the lock by every Ready, which mostly
    /// finds the queue empty. Set and cleared under the queue's lock.
    handed_over_waiting: AtomicBool,
    /// Runs of messages handed to this node's task so far (seen by tests).
    handed_over_runs: AtomicU64,
    /// Consecutive batches that handed exactly one proposal to the mechanism (reset by a larger
    /// one): while they keep coming, a lone caller proposes inline (`Shared::propose_inline`).
    solo_batches: AtomicU64,
    /// When the node task next wakes by itself (nanoseconds of the node's clock): work done by
    /// another task wakes it earlier only if it moved a deadline before that.
    node_task_wakes_at: AtomicU64,
}

struct NodeState {
    mechanism: Box<dyn Mechanism>,
    /// Callers waiting for proposals made here, by sequence number (their origin is this node).
    /// One insert and one removal per proposal: a fast keyed hash (`U64Hashing`).
    proposals: HashMap<u64, PendingCall, U64Hashing>,
    /// The inbox's last batch, emptied: swapped back into the inbox at the next take, so taking
    /// allocates nothing.
    spare_submissions: Vec<Submission>,
    reads: HashMap<ReadId, oneshot::Sender<Result<LogIndex, ProposalError>>>,
    partition: PartitionTracker,
    failure: Option<String>,
}

/// Tracks whether this node reaches a quorum, for `partition:detected` / `partition:healed` and the
/// read-only mode.
#[derive(Default)]
struct PartitionTracker {
    started: concord_core::time::Instant,
    side: Option<PartitionSide>,
}

type Tasks = (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>);

/// A running node: the lesson's ConsensusTrait. Cheap to clone; every clone drives the same node.
#[derive(Clone)]
pub struct Consensus {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Option<Tasks>>>,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus").field("node_id", &self.shared.node_id).finish_non_exhaustive()
    }
}

/// Most attempts of one proposal (all with the same client session) before its error is returned.
const PROPOSAL_ATTEMPTS_MAX: u32 = 32;

/// The outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the swap happened.
    pub swapped: bool,
    /// The key's value after the command (the new value if swapped, the current one if not).
    pub value: Option<Bytes>,
    /// The key's version after the command.
    pub version: u64,
}

/// One operation of an atomic batch.
pub type BatchOperation = Command;

impl Consensus {
    /// Starts building a node with id `node_id` (e.g. `"agent-001"`).
    pub fn builder(node_id: impl Into<String>) -> ConsensusBuilder {
        ConsensusBuilder::new(node_id)
    }

    /// This node's id (`getNodeId()`).
    pub fn node_id(&self) -> &NodeId {
        &self.shared.node_id
    }

    /// The config the node runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A new proposal id and session. The sequence counts as answered (replicas may forget its
    /// result) once the returned `Taken` is dropped: keep it until the call returns.
    fn next_proposal(&self) -> (ProposalId, ClientSession, Taken<'_>) {
        let taken = self.shared.sequences.take();
        let sequence = taken.sequence;
        let session =
            ClientSession { client: self.shared.client_id, sequence, answered_below: taken.answered_below };
        (ProposalId { origin: self.shared.node_id.clone(), sequence }, session, taken)
    }

    fn check_sizes(&self, command: &Command) -> Result<(), ProposalError> {
        let config = &self.shared.config;
        let longest_key = command.longest_key_bytes();
        if longest_key > config.max_key_bytes as usize {
            return Err(ProposalError::Invalid(format!(
                "key of {longest_key} bytes exceeds maxKeyBytes ({})",
                config.max_key_bytes
            )));
        }
        if let Command::Batch(commands) = command {
            if commands.len() > config.max_batch_commands as usize {
                return Err(ProposalError::Invalid(format!(
                    "batch of {} commands exceeds maxBatchCommands ({})",
                    commands.len(),
                    config.max_batch_commands
                )));
            }
        }
        let size = command.size_bytes();
        if size > config.max_value_bytes as usize + config.max_key_bytes as usize + 64 {
            return Err(ProposalError::Invalid(format!(
                "command of {size} bytes exceeds maxValueBytes ({})",
                config.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Proposes `value` for `key` and waits for the decision (`propose`): `true` if accepted.
    pub async fn propose<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> bool {
        self.propose_with_result(key, value).await.accepted
    }

    /// Proposes `value` for `key` and returns the detailed result (`proposeWithResult`).
    pub async fn propose_with_result<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> ProposalResult {
        match encode_value(value) {
            Ok(bytes) => self.propose_command(Command::Put { key: key.to_owned(), value: bytes }).await,
            Err(error) => {
                let (id, _, _) = self.next_proposal();
                ProposalResult::failed(id, key, ProposalError::Invalid(error.to_string()))
            }
        }
    }

    /// Proposes raw bytes for `key`.
    pub async fn propose_bytes(&self, key: &str, value: Bytes) -> ProposalResult {
        self.propose_command(Command::Put { key: key.to_owned(), value }).await
    }

    /// Deletes `key` through consensus.
    pub async fn delete(&self, key: &str) -> ProposalResult {
        self.propose_command(Command::Delete { key: key.to_owned() }).await
    }

    /// Adds `delta` to the i64 counter at `key` atomically; returns the new value.
    pub async fn add(&self, key: &str, delta: i64) -> Result<i64, ProposalError> {
        let result = self.propose_command(Command::Add { key: key.to_owned(), delta }).await;
        match (result.accepted, result.output.and_then(|o| o.counter), result.error) {
            (true, Some(value), _) => Ok(value),
            (_, _, Some(error)) => Err(error),
            _ => Err(ProposalError::Rejected { reason: "counter update not applied".into() }),
        }
    }

    /// Atomic compare-and-swap, decided when the command is applied: sets `key` to `new` only if its
    /// value then equals `expected` (`None`: absent). Never check-then-propose.
    pub async fn compare_and_swap<E: Serialize, T: Serialize>(
        &self,
        key: &str,
        expected: Option<&E>,
        new: &T,
    ) -> Result<CasOutcome, ProposalError> {
        let expected = match expected {
            Some(value) => Some(encode_value(value).map_err(|e| ProposalError::Invalid(e.to_string()))?),
            None => None,
        };
        let new = encode_value(new).map_err(|e| ProposalError::Invalid(e.to_string()))?;
        self.compare_and_swap_bytes(key, Expectation::Value(expected), Some(new)).await
    }

    /// Compare-and-swap on raw bytes, against a value or a version; `new: None` deletes.
    pub async fn compare_and_swap_bytes(
        &self,
        key: &str,
        expected: Expectation,
        new: Option<Bytes>,
    ) -> Result<CasOutcome, ProposalError> {
        let result =
            self.propose_command(Command::CompareAndSwap { key: key.to_owned(), expected, new }).await;
        if result.accepted {
            let change = result.output.and_then(|o| o.changes.into_iter().next());
            return Ok(CasOutcome {
                swapped: true,
                value: change.as_ref().and_then(|c| c.new_value.clone()),
                version: change.map_or(0, |c| c.version),
            });
        }
        match result.error {
            Some(ProposalError::Command(concord_core::command::CommandFailure::CompareFailed {
                current,
                ..
            })) => Ok(CasOutcome { swapped: false, value: current.value, version: current.version }),
            Some(error) => Err(error),
            None => Err(ProposalError::Rejected { reason: "compare-and-swap not applied".into() }),
        }
    }

    /// Applies every command or none (atomic batch).
    pub async fn batch(&self, commands: Vec<Command>) -> ProposalResult {
        self.propose_command(Command::Batch(commands)).await
    }

    /// Proposes any command and waits for its result. Retries after a leadership change with the same
    /// client session, so the command applies at most once (Raft thesis §6.3).
    pub async fn propose_command(&self, command: Command) -> ProposalResult {
        // `_taken` lives until this call returns (or is dropped): only then is the sequence
        // acknowledged, since every retry reuses it.
        let (id, session, _taken) = self.next_proposal();
        if let Err(error) = self.check_sizes(&command) {
            return ProposalResult::failed(id, command.key(), error);
        }
        let deadline = tokio::time::Instant::now() + self.shared.config.timeout;
        // The first attempt awaits only its answer channel: this future stays small (it is moved
        // and polled once per write), and the retry loop's state is boxed on the rare retry.
        let proposal = Proposal { id, session: Some(session), command: command.clone() };
        // The result (about 300 bytes) is completed and judged in place: each move is a copy. Its
        // scope ends before the retry's await, so that this future keeps no result across it.
        let outcome_unknown = {
            let mut result = match self.submit(proposal, command.key(), deadline) {
                Ok(receiver) => self.answer(receiver.await, &command, session),
                Err(refusal) => *refusal,
            };
            match self.retry_after(&mut result, false, 1, deadline) {
                None => return result,
                Some(outcome_unknown) => outcome_unknown,
            }
        };
        Box::pin(self.retry(command, session, deadline, outcome_unknown)).await
    }

    /// The attempts after the first, each after a pause that lets the cluster elect a leader.
    async fn retry(
        &self,
        command: Command,
        session: ClientSession,
        deadline: tokio::time::Instant,
        mut outcome_unknown: bool,
    ) -> ProposalResult {
        let mut attempt = 1u32;
        loop {
            tokio::time::sleep(self.shared.config.heartbeat_interval).await;
            attempt += 1;
            let id = ProposalId { origin: self.shared.node_id.clone(), sequence: session.sequence };
            let proposal = Proposal { id, session: Some(session), command: command.clone() };
            let mut result = match self.submit(proposal, command.key(), deadline) {
                Ok(receiver) => self.answer(receiver.await, &command, session),
                Err(refusal) => *refusal,
            };
            match self.retry_after(&mut result, outcome_unknown, attempt, deadline) {
                None => return result,
                Some(unknown) => outcome_unknown = unknown,
            }
        }
    }

    /// What one attempt's result means: `None` to return it (as amended here), `Some(outcome_unknown)`
    /// to retry with the same session (so at most once): leadership changed, or no leader is known
    /// yet (an election is under way). `outcome_unknown` says whether an earlier attempt's entry may
    /// still commit, so that a later attempt refused up front (not leader, no quorum, busy) does not
    /// report a definite failure.
    fn retry_after(
        &self,
        result: &mut ProposalResult,
        mut outcome_unknown: bool,
        attempt: u32,
        deadline: tokio::time::Instant,
    ) -> Option<bool> {
        let retryable = match &result.error {
            None => return None,
            Some(ProposalError::LeadershipLost) => true,
            Some(ProposalError::NotLeader { leader: None }) => self.shared.config.forward_to_leader,
            _ => false,
        };
        if outcome_unknown && refused_before_proposing(result.error.as_ref()) {
            result.error = Some(ProposalError::LeadershipLost);
        }
        outcome_unknown |=
            matches!(result.error, Some(ProposalError::LeadershipLost | ProposalError::Timeout));
        (retryable && tokio::time::Instant::now() < deadline && attempt < PROPOSAL_ATTEMPTS_MAX)
            .then_some(outcome_unknown)
    }

    /// Leaves one attempt in the inbox and returns where its answer comes, or the refusal (boxed:
    /// it is rare, and keeps the `Result` small). `key` is the command's, copied only for a refusal.
    fn submit(
        &self,
        proposal: Proposal,
        key: &str,
        deadline: tokio::time::Instant,
    ) -> Result<oneshot::Receiver<ProposalResult>, Box<ProposalResult>> {
        let shared = &self.shared;
        let sequence = proposal.id.sequence;
        let refused = |error: ProposalError| {
            let id = ProposalId { origin: shared.node_id.clone(), sequence };
            Box::new(ProposalResult::failed(id, key, error))
        };
        if shared.stopping.load(Ordering::Acquire) {
            return Err(refused(ProposalError::Stopped));
        }
        let (sender, receiver) = oneshot::channel();
        // The mechanism times proposals out itself; this outer bound only guards against a
        // result that never comes.
        let give_up_at = Some(deadline + shared.config.heartbeat_interval * 2);
        let submission = Submission { proposal, call: PendingCall { sender, give_up_at } };
        // Left in the inbox, not proposed here: see `inbox`. Refusals that need the node's state
        // (storage failed, read-only, not the leader) come back as the result.
        let limit = shared.config.max_pending_proposals as usize;
        match shared.inbox.push(submission, limit, shared.pending_calls.load(Ordering::Relaxed)) {
            Ok(Pushed::First) => {
                if !shared.propose_inline() {
                    shared.wake.notify_one();
                }
            }
            Ok(Pushed::Queued) => {}
            Err(error) => return Err(refused(error)),
        }
        Ok(receiver)
    }

    /// The answer to one attempt; a dropped channel means the node stopped. Inlined into the
    /// awaiting caller so that the result is not copied in and out of a call on every write.
    #[inline(always)]
    fn answer(
        &self,
        received: Result<ProposalResult, oneshot::error::RecvError>,
        command: &Command,
        session: ClientSession,
    ) -> ProposalResult {
        match received {
            Ok(mut result) => {
                // Answers made without the command at hand (timeout, stop) leave the key empty.
                if result.key.is_empty() {
                    result.key = command.key().to_owned();
                }
                result
            }
            Err(_) => {
                let id = ProposalId { origin: self.shared.node_id.clone(), sequence: session.sequence };
                ProposalResult::failed(id, command.key(), ProposalError::Stopped)
            }
        }
    }

    /// The local value of `key` (`get`): fast, possibly stale on a follower. `Ok(None)` if absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, concord_core::typed::ValueError> {
        match self.get_bytes(key) {
            Some(bytes) => decode_value(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The local raw value of `key`.
    pub fn get_bytes(&self, key: &str) -> Option<Bytes> {
        self.shared.state.lock().mechanism.replica().machine().get(key)
    }

    /// The local version of `key` (0 if it never existed).
    pub fn version(&self, key: &str) -> u64 {
        self.shared.state.lock().mechanism.replica().machine().version(key)
    }

    /// A linearizable read of `key` (Raft: ReadIndex or lease; forwarded from a follower).
    pub async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ReadError> {
        match self.read_bytes(key).await? {
            Some(bytes) => Ok(Some(decode_value(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A linearizable read of raw bytes.
    pub async fn read_bytes(&self, key: &str) -> Result<Option<Bytes>, ProposalError> {
        self.read_barrier().await?;
        Ok(self.get_bytes(key))
    }

    /// Waits until the local replica reflects every write completed before this call. Retried
    /// while no leader is known (an election is under way), up to the configured timeout.
    pub async fn read_barrier(&self) -> Result<LogIndex, ProposalError> {
        let deadline = tokio::time::Instant::now() + self.shared.config.timeout;
        loop {
            match self.read_barrier_once().await {
                Err(ProposalError::NotLeader { leader: None } | ProposalError::LeadershipLost)
                    if self.shared.config.forward_to_leader && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(self.shared.config.heartbeat_interval).await;
                }
                other => return other,
            }
        }
    }

    async fn read_barrier_once(&self) -> Result<LogIndex, ProposalError> {
        let id = self.shared.next_read.fetch_add(1, Ordering::Relaxed);
        let receiver = {
            if self.shared.stopping.load(Ordering::Acquire) {
                return Err(ProposalError::Stopped);
            }
            let mut state = self.shared.state.lock();
            let limit = self.shared.config.max_pending_reads as usize;
            if state.reads.len() >= limit {
                return Err(ProposalError::Busy { what: "pending reads".into(), limit: limit as u64 });
            }
            let now = self.shared.clock.now();
            state.mechanism.read(now, id)?;
            let (sender, receiver) = oneshot::channel();
            state.reads.insert(id, sender);
            receiver
        };
        self.shared.wake.notify_one();
        match tokio::time::timeout(self.shared.config.timeout, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposalError::Stopped),
            Err(_) => {
                self.shared.state.lock().reads.remove(&id);
                Err(ProposalError::Timeout)
            }
        }
    }

    /// A stream of `key`'s new values (`subscribe`).
    pub fn subscribe(&self, key: &str) -> KeySubscription {
        KeySubscription::new(key.to_owned(), self.listen())
    }

    /// A stream of every event (`on(...)` for all event names).
    pub fn events(&self) -> EventStream {
        EventStream::new(self.listen())
    }

    /// A new receiver of the event channel. The mechanism is told after the receiver exists, so
    /// every write proposed from now on produces its per-entry events (the driver turns them
    /// off again once no receiver is left, see `process_ready`).
    fn listen(&self) -> broadcast::Receiver<Event> {
        let receiver = self.shared.events.subscribe();
        self.shared.state.lock().mechanism.set_entry_events_wanted(true);
        receiver
    }

    /// Every member, with `connected` as this node sees it (`getNodes()`).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let state = self.shared.state.lock();
        let connected = state.mechanism.connected_peers();
        state
            .mechanism
            .membership()
            .members
            .values()
            .map(|member| {
                let mut info = member.info.clone();
                info.connected = info.id == self.shared.node_id || connected.contains(&info.id);
                info
            })
            .collect()
    }

    /// The current leader, if known (`getLeader()`); always `None` for simple majority.
    pub fn leader(&self) -> Option<NodeInfo> {
        let state = self.shared.state.lock();
        let leader = state.mechanism.leader()?;
        let info = state.mechanism.membership().members.get(&leader).map(|m| m.info.clone());
        Some(info.unwrap_or_else(|| NodeInfo::new(leader, "")))
    }

    /// Whether this node is the leader (`isLeader()`).
    pub fn is_leader(&self) -> bool {
        self.shared.state.lock().mechanism.leader().as_ref() == Some(&self.shared.node_id)
    }

    /// The debug state (`getDebugState()`).
    pub fn debug_state(&self) -> DebugState {
        self.shared.state.lock().mechanism.debug_state()
    }

    /// Adds a member through consensus (`addNode`); Raft adds it as a learner, then promotes it.
    pub async fn add_node(&self, node: NodeInfo) -> Result<(), ProposalError> {
        if let Err(error) = self.shared.transport.add_peer(&node) {
            return Err(ProposalError::Invalid(error.to_string()));
        }
        self.change_membership(MembershipChange::AddVoter(node)).await
    }

    /// Removes a member through consensus (`removeNode`).
    pub async fn remove_node(&self, node: &str) -> Result<(), ProposalError> {
        let id = NodeId::parse(node).map_err(|e| ProposalError::Invalid(e.to_string()))?;
        if !self.shared.state.lock().mechanism.membership().contains(&id) {
            return Err(ProposalError::Invalid(format!("unknown node {id}")));
        }
        self.change_membership(MembershipChange::Remove(id)).await
    }

    /// Any membership change (learners, promotion, metadata update).
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), ProposalError> {
        // Membership entries carry no session: nothing to keep unacknowledged while this call waits
        // (which may take several timeouts).
        let (id, _, _) = self.next_proposal();
        let receiver = {
            if self.shared.stopping.load(Ordering::Acquire) {
                return Err(ProposalError::Stopped);
            }
            let mut state = self.shared.state.lock();
            let now = self.shared.clock.now();
            state.mechanism.change_membership(now, id.clone(), change)?;
            let (sender, receiver) = oneshot::channel();
            state.proposals.insert(id.sequence, PendingCall { sender, give_up_at: None });
            receiver
        };
        self.shared.wake.notify_one();
        // Adding a voter waits for it to catch up: allow a few timeouts.
        match tokio::time::timeout(self.shared.config.timeout * 3, receiver).await {
            Ok(Ok(result)) if result.accepted => Ok(()),
            Ok(Ok(result)) => {
                Err(result.error.unwrap_or(ProposalError::Rejected { reason: "refused".into() }))
            }
            Ok(Err(_)) => Err(ProposalError::Stopped),
            Err(_) => {
                self.shared.state.lock().proposals.remove(&id.sequence);
                Err(ProposalError::Timeout)
            }
        }
    }

    /// Casts this node's vote on a proposal (`vote(proposalId, vote)`, simple majority with manual voting).
    pub fn vote(&self, proposal: &ProposalId, in_favor: bool) -> Result<(), ProposalError> {
        let result = {
            let mut state = self.shared.state.lock();
            let now = self.shared.clock.now();
            state.mechanism.vote(now, proposal, in_favor)
        };
        self.shared.wake.notify_one();
        result
    }

    /// Hands leadership to `to` (Raft).
    pub fn transfer_leadership(&self, to: &str) -> Result<(), ProposalError> {
        let id = NodeId::parse(to).map_err(|e| ProposalError::Invalid(e.to_string()))?;
        let result = {
            let mut state = self.shared.state.lock();
            let now = self.shared.clock.now();
            state.mechanism.transfer_leadership(now, &id)
        };
        self.shared.wake.notify_one();
        result
    }

    /// Feeds a frame received from your own network (the lesson's `handleMessage(from, message)`).
    pub fn handle_message(&self, from: &str, frame: &[u8]) -> Result<(), crate::HandleMessageError> {
        let shared = &self.shared;
        let envelope = shared.codec.decode_for(shared.cluster_id, frame)?;
        if envelope.from.as_str() != from {
            return Err(crate::HandleMessageError::SenderMismatch {
                claimed: envelope.from.to_string(),
                link: from.to_owned(),
            });
        }
        if envelope.to != shared.node_id {
            return Err(crate::HandleMessageError::NotForMe(envelope.to.to_string()));
        }
        {
            let mut state = shared.state.lock();
            let now = shared.clock.now();
            state.mechanism.handle_message(now, envelope.from, envelope.message)?;
        }
        shared.wake.notify_one();
        Ok(())
    }

    /// Whether the node is in read-only mode (it cannot reach a quorum).
    pub fn is_read_only(&self) -> bool {
        self.shared.state.lock().partition.side == Some(PartitionSide::Minority)
    }

    /// Stops the node gracefully: new calls fail with `Stopped`, proposals in flight get up to one
    /// heartbeat interval to finish, then fail with `Stopped`; the transport is closed.
    pub async fn stop(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let drain_until = tokio::time::Instant::now() + self.shared.config.heartbeat_interval;
        while tokio::time::Instant::now() < drain_until {
            let pending = {
                let state = self.shared.state.lock();
                state.proposals.len() + state.reads.len() + self.shared.inbox.len()
            };
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.shared.halted.store(true, Ordering::Release);
        self.shared.stopped.notify_waiters();
        self.shared.wake.notify_one();
        let tasks = self.tasks.lock().take();
        if let Some((driver, receiver)) = tasks {
            receiver.abort();
            let _ = driver.await;
            let _ = receiver.await;
        }
        answer_submissions(
            &self.shared,
            self.shared.inbox.close(ProposalError::Stopped),
            ProposalError::Stopped,
        );
        {
            let mut state = self.shared.state.lock();
            let origin = self.shared.node_id.clone();
            for (sequence, call) in state.proposals.drain() {
                let id = ProposalId { origin: origin.clone(), sequence };
                let _ = call.sender.send(ProposalResult::failed(id, "", ProposalError::Stopped));
            }
            for (_, sender) in state.reads.drain() {
                let _ = sender.send(Err(ProposalError::Stopped));
            }
        }
        self.shared.transport.close().await;
    }
}

/// Errors that say a proposal was refused before it reached any log: a definite failure, unless an
/// earlier attempt of the same proposal may still commit.
fn refused_before_proposing(error: Option<&ProposalError>) -> bool {
    matches!(
        error,
        Some(
            ProposalError::NotLeader { .. }
                | ProposalError::NoQuorum { .. }
                | ProposalError::Busy { .. }
                // Refused at apply, but only this attempt: an earlier one may still be applied.
                | ProposalError::Command(CommandFailure::SessionTableFull { .. })
        )
    )
}

fn read_only_error(state: &NodeState, config: &Config) -> Option<ProposalError> {
    if state.partition.side != Some(PartitionSide::Minority) {
        return None;
    }
    let membership = state.mechanism.membership();
    let members = membership.voter_count();
    let connected = state.mechanism.connected_peers();
    let reachable = 1 + membership.voters().filter(|v| connected.contains(v)).count();
    Some(ProposalError::NoQuorum { reachable, members, required: quorum_required(config, members) })
}

fn quorum_required(config: &Config, voters: usize) -> usize {
    match config.mechanism {
        MechanismKind::Raft => voters / 2 + 1,
        MechanismKind::SimpleMajority => config.quorum.required(voters),
    }
}

/// The node task: waits for inputs or the next deadline, then drains every Ready in the order the
/// core documents (send, persist, send persisted, advance, deliver).
/// Tells the transport about members added or removed (or whose address changed) since the last
/// call, so authenticating transports accept new members and drop removed ones.
///
/// `known` is in id order, like the membership, so the check that runs every round is one pass
/// over both (ids cloned from the membership compare by pointer).
fn sync_transport_peers(shared: &Shared, known: &mut Vec<(NodeId, String)>) {
    let current: BTreeMap<NodeId, NodeInfo> = {
        let state = shared.state.lock();
        let membership = state.mechanism.membership();
        if membership.members.len() == known.len()
            && membership
                .members
                .values()
                .zip(known.iter())
                .all(|(member, (id, address))| member.info.id == *id && member.info.address == *address)
        {
            return;
        }
        membership.members.values().map(|m| (m.info.id.clone(), m.info.clone())).collect()
    };
    let known_map: BTreeMap<&NodeId, &String> = known.iter().map(|(id, address)| (id, address)).collect();
    for (id, info) in &current {
        if *id != shared.node_id && known_map.get(id) != Some(&&info.address) {
            if let Err(error) = shared.transport.add_peer(info) {
                tracing::warn!(peer = %id, %error, "transport refused a new member");
            }
        }
    }
    for id in known_map.keys() {
        if !current.contains_key(*id) && **id != shared.node_id {
            shared.transport.remove_peer(id);
        }
    }
    drop(known_map);
    *known = current.into_iter().map(|(id, info)| (id, info.address)).collect();
}

async fn drive(shared: Arc<Shared>) {
    let mut known_peers: Vec<(NodeId, String)> = Vec::new();
    sync_transport_peers(&shared, &mut known_peers);
    let partition_check = shared.config.heartbeat_interval;
    let mut next_partition_check = shared.clock.now() + partition_check;
    let mut busy = false;
    let sleep = tokio::time::sleep_until(shared.clock.tokio_instant(next_partition_check));
    tokio::pin!(sleep);
    loop {
        if shared.halted.load(Ordering::Acquire)
            || (shared.stopping.load(Ordering::Acquire) && pending_is_empty(&shared))
        {
            break;
        }
        // Asked once per round: a deadline that moved earlier meanwhile is caught by the next
        // round, which then does not sleep. While it is being read, a task processing this node's
        // Ready inline must wake this one whatever deadline it sets (`process_ready_inline`).
        shared.node_task_wakes_at.store(u64::MAX, Ordering::Release);
        let mechanism_deadline =
            shared.state.lock().mechanism.poll_timeout().unwrap_or(concord_core::time::Instant::MAX);
        let wakes_at = mechanism_deadline.min(next_partition_check);
        shared.node_task_wakes_at.store(wakes_at.as_nanos(), Ordering::Release);
        let wake_at = shared.clock.tokio_instant(wakes_at);
        // One timer for the task's life, moved only when the deadline does: registering a new one
        // every round costs more than the round's own work when rounds are small. `stop` wakes
        // the task through `wake` after setting `halted`.
        if sleep.deadline() != wake_at {
            sleep.as_mut().reset(wake_at);
        }
        tokio::select! {
            biased;
            _ = shared.wake.notified() => {}
            _ = &mut sleep => {}
        }
        // Let the tasks that are ready run first (clients proposing, the receive task handing
        // over frames): whatever they add now goes into this round's batch instead of one round
        // per proposal. Costs one trip through the scheduler when nothing else is ready, so it is
        // skipped when no caller of this node waits and the last round wrote at most one entry.
        // A single waiting caller is no sign that it is alone: the proposer wakes this task, which
        // then often runs before the other callers made ready by the last round (tokio runs the
        // task woken last first), and every write would commit alone.
        if busy || !shared.inbox.is_empty() || !shared.state.lock().proposals.is_empty() {
            tokio::task::yield_now().await;
        }
        let now = shared.clock.now();
        if mechanism_deadline <= now {
            shared.state.lock().mechanism.handle_timeout(now);
        }
        if now >= next_partition_check {
            next_partition_check = now + partition_check;
            give_up_overdue_proposals(&shared);
            let events = shared.state.lock().update_partition(&shared.config, now);
            for event in events {
                let _ = shared.events.send(event);
            }
        }
        // Another task may be processing this node's Ready (delivering in-process messages to it,
        // or a lone caller proposing): leave a request and wait to be woken (see
        // `process_inline_or_request`) instead of spinning beside it, which on a multi-threaded
        // runtime burnt the other worker that the processing task could have used.
        if !shared.enter_ready_processing() {
            shared.ready_requested.store(true, Ordering::SeqCst);
            if !shared.enter_ready_processing() {
                continue;
            }
        }
        let processed = process_ready(&shared).await;
        shared.leave_ready_processing();
        match processed {
            Some(entries_written) => busy = entries_written > 1,
            None => break,
        }
        sync_transport_peers(&shared, &mut known_peers);
        if shared.stopping.load(Ordering::Acquire) && pending_is_empty(&shared) {
            break;
        }
    }
}

/// Answers `Timeout` to callers whose result is overdue (it will not come any more, e.g. a message
/// was lost with the node that held the proposal).
fn give_up_overdue_proposals(shared: &Shared) {
    let now = tokio::time::Instant::now();
    let mut state = shared.state.lock();
    let overdue: Vec<u64> = state
        .proposals
        .iter()
        .filter(|(_, call)| call.give_up_at.is_some_and(|at| at <= now))
        .map(|(sequence, _)| *sequence)
        .collect();
    for sequence in overdue {
        if let Some(call) = state.proposals.remove(&sequence) {
            let id = ProposalId { origin: shared.node_id.clone(), sequence };
            let _ = call.sender.send(ProposalResult::failed(id, "", ProposalError::Timeout));
        }
    }
}

fn pending_is_empty(shared: &Shared) -> bool {
    let state = shared.state.lock();
    state.proposals.is_empty() && state.reads.is_empty() && shared.inbox.is_empty()
}

/// Hands the proposals waiting in the inbox to the mechanism, or answers the refused ones. Runs
/// under the state lock at the start of every Ready, by whichever task processes it.
fn accept_submissions(shared: &Shared, state: &mut NodeState) {
    let mut submissions = std::mem::take(&mut state.spare_submissions);
    shared.inbox.take(&mut submissions);
    count_batch(shared, submissions.len());
    if !submissions.is_empty() {
        let now = shared.clock.now();
        let limit = shared.config.max_pending_proposals as usize;
        for Submission { proposal, call } in submissions.drain(..) {
            let sequence = proposal.id.sequence;
            let refusal = if let Some(failure) = &state.failure {
                Some(ProposalError::Storage(failure.clone()))
            } else if let Some(error) = read_only_error(state, &shared.config) {
                Some(error)
            } else if state.proposals.len() >= limit {
                Some(crate::inbox::busy(limit))
            } else {
                None
            };
            let outcome = match refusal {
                Some(error) => Err(error),
                None => state.mechanism.propose(now, proposal),
            };
            match outcome {
                Ok(()) => {
                    state.proposals.insert(sequence, call);
                }
                Err(error) => {
                    // Answered under the lock: refusals are rare, and answering now keeps them in
                    // order with the accepted ones.
                    let id = ProposalId { origin: shared.node_id.clone(), sequence };
                    let _ = call.sender.send(ProposalResult::failed(id, "", error));
                }
            }
        }
    }
    state.spare_submissions = submissions;
    shared.pending_calls.store(state.proposals.len(), Ordering::Relaxed);
}

/// Counts the batches of one proposal in a row, for `Shared::propose_inline`.
fn count_batch(shared: &Shared, proposals: usize) {
    match proposals {
        0 => {}
        1 => {
            shared.solo_batches.fetch_add(1, Ordering::Relaxed);
        }
        _ => shared.solo_batches.store(0, Ordering::Relaxed),
    }
}

/// Answers `error` to callers whose proposals never reached the mechanism.
fn answer_submissions(shared: &Shared, submissions: Vec<Submission>, error: ProposalError) {
    for Submission { proposal, call } in submissions {
        let id = ProposalId { origin: shared.node_id.clone(), sequence: proposal.id.sequence };
        let _ = call.sender.send(ProposalResult::failed(id, "", error.clone()));
    }
}

/// A bound on the Ready batches handled per wake-up, so one busy node cannot starve the others.
const READY_ROUNDS_MAX: usize = 64;

/// The next Ready of the node, taken under the state lock.
// Moved out once per round and never stored: boxing the large variant would allocate per round.
#[allow(clippy::large_enum_variant)]
enum TakenReady {
    Ready(Ready),
    /// Nothing to do; the mechanism's next deadline.
    Idle(concord_core::time::Instant),
    /// Storage has failed: the node no longer acknowledges anything.
    StorageFailed,
}

fn take_ready(shared: &Shared) -> TakenReady {
    // Whatever was requested so far is in this Ready (see `ready_requested`).
    shared.ready_requested.store(false, Ordering::SeqCst);
    let mut state = shared.state.lock();
    if state.failure.is_some() {
        return TakenReady::StorageFailed;
    }
    shared.handle_handed_over(&mut state);
    accept_submissions(shared, &mut state);
    if !state.mechanism.has_ready() {
        return TakenReady::Idle(state.mechanism.poll_timeout().unwrap_or(concord_core::time::Instant::MAX));
    }
    // Checked under the state lock, which `Consensus::listen` takes after subscribing: a new
    // receiver is never missed.
    if shared.events.receiver_count() == 0 {
        state.mechanism.set_entry_events_wanted(false);
    }
    TakenReady::Ready(state.mechanism.ready())
}

fn persist_now(storage: &std::sync::Mutex<Box<dyn Storage>>, persist: &Persist) -> Result<(), String> {
    match storage.lock() {
        Ok(mut storage) => storage.persist(persist).map_err(|e| e.to_string()),
        Err(_) => Err("storage lock poisoned".to_owned()),
    }
}

/// Storage failed: the node stops acknowledging, and every waiting caller gets the error.
fn storage_failed(shared: &Shared, error: String) {
    tracing::error!(node = %shared.node_id, %error, "storage failed; the node stops acknowledging writes");
    let waiting = shared.inbox.close(ProposalError::Storage(error.clone()));
    answer_submissions(shared, waiting, ProposalError::Storage(error.clone()));
    let mut state = shared.state.lock();
    state.failure = Some(error.clone());
    // Nobody will take these any more (the node task ends): drop them, as a dead node's network
    // would.
    let mut handed_over = shared.handed_over.lock();
    handed_over.clear();
    shared.handed_over_waiting.store(false, Ordering::SeqCst);
    drop(handed_over);
    for (sequence, call) in state.proposals.drain() {
        let id = ProposalId { origin: shared.node_id.clone(), sequence };
        let _ = call.sender.send(ProposalResult::failed(id, "", ProposalError::Storage(error.clone())));
    }
    for (_, sender) in state.reads.drain() {
        let _ = sender.send(Err(ProposalError::Storage(error.clone())));
    }
}

/// The last step of a Ready, once its writes are durable and its messages sent: acknowledge it,
/// answer the callers, publish the events.
fn finish_ready(
    shared: &Shared,
    number: u64,
    results: Vec<ProposalResult>,
    reads: Vec<ReadResult>,
    events: Vec<Event>,
) {
    // The callers are found under the state lock but answered after it is released: answering
    // wakes each caller's task (and may wake another worker thread), which would otherwise lengthen
    // the time new proposals wait for the lock.
    // One sender (or none) per result, in the results' order: the results themselves (large) move
    // once, straight into their channels.
    let mut senders = Vec::with_capacity(results.len());
    let mut read_answers = Vec::with_capacity(reads.len());
    let extra_events = {
        let mut state = shared.state.lock();
        let now = shared.clock.now();
        state.mechanism.advance(now, number);
        for result in &results {
            let call = if result.proposal_id.origin == shared.node_id {
                state.proposals.remove(&result.proposal_id.sequence)
            } else {
                None
            };
            senders.push(call.map(|call| call.sender));
        }
        shared.pending_calls.store(state.proposals.len(), Ordering::Relaxed);
        for read in reads {
            if let Some(sender) = state.reads.remove(&read.id) {
                read_answers.push((sender, read.result));
            }
        }
        if events.iter().any(|e| matches!(e, Event::NodeUnreachable { .. } | Event::NodeReconnected { .. })) {
            state.update_partition(&shared.config, now)
        } else {
            Vec::new()
        }
    };
    for (sender, result) in senders.into_iter().zip(results) {
        if let Some(sender) = sender {
            let _ = sender.send(result);
        }
    }
    for (sender, result) in read_answers {
        let _ = sender.send(result);
    }
    for event in events.into_iter().chain(extra_events) {
        // No subscriber is fine: events are then dropped.
        let _ = shared.events.send(event);
    }
}

/// Drains every Ready. Returns how many log entries it wrote, or `None` once storage has failed
/// (the node stops acknowledging). The caller holds `processing_ready`.
async fn process_ready(shared: &Arc<Shared>) -> Option<usize> {
    let mut entries_written = 0;
    for _ in 0..READY_ROUNDS_MAX {
        let ready = match take_ready(shared) {
            TakenReady::Ready(ready) => ready,
            TakenReady::Idle(_) => return Some(entries_written),
            TakenReady::StorageFailed => return None,
        };
        let Ready { number, messages, persist, persisted_messages, results, reads, events } = ready;
        send_all(shared, messages).await;
        entries_written += persist.entries.len();
        if !persist.is_empty() {
            let outcome = if shared.storage_blocking {
                let storage = shared.storage.clone();
                tokio::task::spawn_blocking(move || persist_now(&storage, &persist))
                    .await
                    .unwrap_or_else(|error| Err(error.to_string()))
            } else {
                persist_now(&shared.storage, &persist)
            };
            if let Err(error) = outcome {
                storage_failed(shared, error);
                return None;
            }
        }
        send_all(shared, persisted_messages).await;
        finish_ready(shared, number, results, reads, events);
    }
    // More work remains: come back without waiting.
    shared.wake.notify_one();
    Some(entries_written)
}

/// How deep in-process deliveries may nest while processing each receiver's Ready in the
/// delivering task (a node's reply to a node whose Ready is already being processed is only
/// handed over). One level per node of a chain; the bound keeps the stack small.
const INLINE_READY_DEPTH_MAX: u32 = 4;

thread_local! {
    static INLINE_READY_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Set while a lone caller runs a write's round trip in its own task (`propose_inline`): every
    /// in-process hop of it is then inline (see `send_local`).
    static LONE_CALLER_ROUND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as running a lone caller's round trip until dropped (also on unwind).
struct LoneCallerRound {
    previous: bool,
}

impl LoneCallerRound {
    fn enter() -> Self {
        LoneCallerRound { previous: LONE_CALLER_ROUND.with(|cell| cell.replace(true)) }
    }
}

impl Drop for LoneCallerRound {
    fn drop(&mut self) {
        LONE_CALLER_ROUND.with(|cell| cell.set(self.previous));
    }
}

/// Processes the node's Ready batches in the calling task, which just delivered in-process
/// messages to it: the follower stores the entries and answers the leader right away, instead of
/// waking its own task (and often the other worker thread) for it. Only for nodes whose storage
/// does not block, and whose transport is the in-process one (nothing here awaits). Returns whether
/// the node task must still wake: work remains, storage failed, or a deadline moved before its
/// sleep ends.
fn process_ready_inline(shared: &Shared) -> bool {
    for _ in 0..READY_ROUNDS_MAX {
        let ready = match take_ready(shared) {
            TakenReady::Ready(ready) => ready,
            TakenReady::Idle(deadline) => {
                // A stopping node task waits for its callers to be answered, which may just
                // have happened here.
                return shared.stopping.load(Ordering::Acquire)
                    || deadline.as_nanos() < shared.node_task_wakes_at.load(Ordering::Acquire);
            }
            TakenReady::StorageFailed => return true,
        };
        let Ready { number, messages, persist, persisted_messages, results, reads, events } = ready;
        send_local(shared, messages);
        if !persist.is_empty() {
            if let Err(error) = persist_now(&shared.storage, &persist) {
                storage_failed(shared, error);
                return true;
            }
        }
        send_local(shared, persisted_messages);
        finish_ready(shared, number, results, reads, events);
    }
    true
}

/// The in-process transport behind `transport`, if it is one: messages to its nodes skip the codec.
fn memory_transport(transport: &Arc<dyn Transport>) -> Option<&MemoryTransport> {
    transport.as_any()?.downcast_ref::<MemoryTransport>()
}

impl LocalDelivery for Shared {
    fn deliver(
        &self,
        from: &NodeId,
        cluster_id: ClusterId,
        messages: Vec<concord_core::message::Message>,
        handoff: Handoff,
    ) {
        if cluster_id != self.cluster_id {
            tracing::warn!(%from, ?cluster_id, "dropping messages of another cluster");
            return;
        }
        // A halted node has stopped its receive task too: it takes nothing more.
        if self.halted.load(Ordering::Acquire) {
            return;
        }
        if handoff == Handoff::ReceiversTask {
            let mut handed_over = self.handed_over.lock();
            if handed_over.len() + messages.len() <= self.config.max_handed_over_messages as usize {
                let was_empty = handed_over.is_empty();
                handed_over.extend(messages.into_iter().map(|message| (from.clone(), message)));
                self.handed_over_waiting.store(true, Ordering::SeqCst);
                drop(handed_over);
                self.handed_over_runs.fetch_add(1, Ordering::Relaxed);
                if was_empty {
                    self.wake.notify_one();
                }
                return;
            }
        }
        {
            let mut state = self.state.lock();
            // Messages handed over earlier go first: per-sender order is kept.
            self.handle_handed_over(&mut state);
            let now = self.clock.now();
            // The membership's own copy of the id: the mechanism compares ids all the time, and
            // clones of one allocation compare by pointer instead of by bytes.
            let from = match state.mechanism.membership().members.get_key_value(from) {
                Some((member, _)) => member.clone(),
                None => from.clone(),
            };
            for message in messages {
                if let Err(error) = state.mechanism.handle_message(now, from.clone(), message) {
                    tracing::warn!(%error, "dropping message");
                }
            }
        }
        let depth = INLINE_READY_DEPTH.with(std::cell::Cell::get);
        if self.storage_blocking || depth >= INLINE_READY_DEPTH_MAX {
            self.wake.notify_one();
            return;
        }
        self.process_inline_or_request(depth);
    }
}

impl Shared {
    /// Hands the messages waiting in `handed_over` to the mechanism (under the state lock, in
    /// arrival order).
    fn handle_handed_over(&self, state: &mut NodeState) {
        // A sender sets the flag before it wakes anyone or delivers anything later: whoever it
        // wakes, and its own later inline deliveries (which must come after), see it.
        if !self.handed_over_waiting.load(Ordering::SeqCst) {
            return;
        }
        let handed_over = {
            let mut queue = self.handed_over.lock();
            self.handed_over_waiting.store(false, Ordering::SeqCst);
            std::mem::take(&mut *queue)
        };
        let now = self.clock.now();
        let mut canonical: Option<NodeId> = None;
        for (from, message) in handed_over {
            // The membership's own copy of the sender's id, as for inline deliveries (ids then
            // compare by pointer); looked up once per run of one sender.
            let from = match &canonical {
                Some(known) if *known == from => known.clone(),
                _ => {
                    let found = match state.mechanism.membership().members.get_key_value(&from) {
                        Some((member, _)) => member.clone(),
                        None => from,
                    };
                    canonical = Some(found.clone());
                    found
                }
            };
            if let Err(error) = state.mechanism.handle_message(now, from, message) {
                tracing::warn!(%error, "dropping message");
            }
        }
    }

    /// Takes the right to process this node's Ready batches; `false` if another task has it.
    fn enter_ready_processing(&self) -> bool {
        // SeqCst with `leave_ready_processing`: see `process_inline_or_request`.
        self.processing_ready.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Gives the right back, and wakes the node task if work was requested since the last Ready
    /// was taken.
    fn leave_ready_processing(&self) {
        self.processing_ready.store(false, Ordering::SeqCst);
        if self.ready_requested.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// New work for this node (messages handed to its mechanism, or a proposal left in its inbox):
    /// processes its Ready batches in the calling task, or, if another task is processing them,
    /// leaves a request that this one sees (so nobody has to wake the node task for it).
    /// Only for nodes whose storage does not block and whose transport is the in-process one (see
    /// `process_ready_inline`); `depth` is the nesting of in-process deliveries so far.
    ///
    /// No request is lost: the requester sets the flag and then tries to enter; the processor
    /// leaves and then reads the flag (all SeqCst), so at least one of them sees the other.
    fn process_inline_or_request(&self, depth: u32) {
        self.ready_requested.store(true, Ordering::SeqCst);
        if !self.enter_ready_processing() {
            return;
        }
        let guard = InlineProcessing { shared: self, depth };
        INLINE_READY_DEPTH.with(|cell| cell.set(depth + 1));
        let wake_node_task = process_ready_inline(self);
        drop(guard);
        if wake_node_task {
            self.wake.notify_one();
        }
    }

    /// Called by a caller whose proposal is the only one in the inbox: returns `true` if it
    /// proposed it in its own task (so the node task need not be woken). That is done only while
    /// the node sees one proposal at a time (`solo_batches`: a lone client writing sequentially),
    /// where waking the node task, and often the other worker thread, would cost more than the
    /// write. With the in-process transport the whole round trip (every follower storing the entry
    /// and answering — all inline for such a round, see `send_local` —, the commit, the apply) then
    /// runs in the caller's task, and its result is ready when it awaits it. Every
    /// `SOLO_PROBE_EVERY`th proposal still goes through the node task: if other callers were only
    /// waiting for their turn on this thread, they join its batch and end the run of single
    /// batches, so concurrent callers are batched, never serialized.
    fn propose_inline(&self) -> bool {
        let solo = self.solo_batches.load(Ordering::Relaxed);
        // A stopping node takes no new work in callers' tasks: `stop` answers what waits.
        if self.stopping.load(Ordering::Acquire)
            || solo < SOLO_BATCHES_BEFORE_INLINE
            || solo % SOLO_PROBE_EVERY == 0
            || self.storage_blocking
            || self.pending_calls.load(Ordering::Relaxed) != 0
            || memory_transport(&self.transport).is_none()
        {
            return false;
        }
        let depth = INLINE_READY_DEPTH.with(std::cell::Cell::get);
        if depth >= INLINE_READY_DEPTH_MAX {
            return false;
        }
        let _round = LoneCallerRound::enter();
        self.process_inline_or_request(depth);
        true
    }
}

/// Held while a task other than the node task processes the node's Ready: restores the nesting
/// depth and gives the processing right back when dropped — also when a panic (in a custom state
/// machine, or a broken invariant) unwinds through it. The node is then marked failed, as on a
/// storage failure: its state may be half-changed, so it stops acknowledging, and every waiting
/// caller is answered instead of the node task waiting forever for the right to process.
struct InlineProcessing<'a> {
    shared: &'a Shared,
    depth: u32,
}

impl Drop for InlineProcessing<'_> {
    fn drop(&mut self) {
        INLINE_READY_DEPTH.with(|cell| cell.set(self.depth));
        if std::thread::panicking() {
            storage_failed(self.shared, "a panic while processing this node's Ready in another task".into());
        }
        self.shared.leave_ready_processing();
    }
}

/// Batches of one proposal in a row after which a lone caller proposes inline.
const SOLO_BATCHES_BEFORE_INLINE: u64 = 8;
/// While proposing inline, every this many batches go through the node task instead (see
/// `Shared::propose_inline`).
const SOLO_PROBE_EVERY: u64 = 64;

/// Hands messages to in-process nodes (the in-process transport's path of `send_all`, which never
/// awaits). Raft emits each peer's messages together (one peer, then the next): each run is
/// handed over as it ends. Messages that interleave peers (simple majority, slot by slot) are
/// first sorted by peer, stably, so each peer still gets one run, in order.
///
/// Which task handles the messages (`handoff_to`): the leader and the first half (rounded up) of
/// the other voters in id order — with the leader, a majority — exchange messages in the sender's
/// task, so a leader commits without waiting for another task; every other pair goes through the
/// receiver's own node task,
/// which a multi-threaded runtime runs on another worker meanwhile. With no leader (simple
/// majority) every message goes through its receiver's task. The split is the same on
/// every send, so a follower's messages always take the same path. All inline, one write's whole
/// round trip ran on one thread while the other idled (measured: 1.1–1.2 of 2 cores busy at 256
/// clients); all in their own tasks, the leader waited for a task switch before it could commit.
fn send_local(shared: &Shared, mut messages: Vec<Outbound>) {
    let Some(memory) = memory_transport(&shared.transport) else {
        debug_assert!(messages.is_empty(), "send_local is only used with the in-process transport");
        return;
    };
    if messages.is_empty() {
        return;
    }
    if !grouped_by_destination(&messages) {
        // One delivery per peer instead of one per message (simple majority interleaves its
        // peers, slot by slot). Stable: each peer still gets its messages in order.
        messages.sort_by(|a, b| a.to.cmp(&b.to));
    }
    // Learned from the first run: with no leader every run is queued, and the state lock need
    // not be taken again for each peer.
    let mut leaderless = false;
    let mut messages = messages.into_iter().peekable();
    while let Some(Outbound { to, message }) = messages.next() {
        let mut run = vec![message];
        while let Some(next) = messages.next_if(|next| next.to == to) {
            run.push(next.message);
        }
        // A lone caller's round trip stays inline: nothing else would run beside it, and a
        // hand-over would cost it a wake-up of another task on every write.
        let handoff = if LONE_CALLER_ROUND.with(std::cell::Cell::get) {
            Handoff::SendersTask
        } else if leaderless {
            Handoff::ReceiversTask
        } else {
            let state = shared.state.lock();
            let leader = state.mechanism.leader();
            leaderless = leader.is_none();
            handoff_to(state.mechanism.membership(), leader.as_ref(), &shared.node_id, &to)
        };
        if let Err(error) = memory.send_messages(&to, shared.cluster_id, run, &shared.codec, handoff) {
            tracing::debug!(peer = %to, %error, "send failed");
        }
    }
}

/// Whether every destination's messages are already consecutive (without allocating: this runs
/// on every send). It remembers the destinations whose run has ended, at most
/// `ENDED_RUNS_TRACKED_MAX` of them: a send with more runs than that answers `false`, and the
/// caller sorts.
fn grouped_by_destination(messages: &[Outbound]) -> bool {
    const ENDED_RUNS_TRACKED_MAX: usize = 8;
    let mut ended: [Option<&NodeId>; ENDED_RUNS_TRACKED_MAX] = [None; ENDED_RUNS_TRACKED_MAX];
    let mut count = 0;
    for pair in messages.windows(2) {
        if pair[0].to != pair[1].to {
            if ended[..count].contains(&Some(&pair[1].to)) || count == ENDED_RUNS_TRACKED_MAX {
                return false;
            }
            ended[count] = Some(&pair[0].to);
            count += 1;
        }
    }
    true
}

/// See `send_local`: the leader handles in its own task the messages of the first half (rounded
/// up) of the other voters, in id order, and they handle its messages in theirs; every other pair
/// (a follower outside the half, two followers, a learner) goes through the receiver's node task.
/// So a follower's answers take the same path as the leader's messages to it: the leader's work
/// stays in the leader's task (and the inline followers'), and a follower outside the half works
/// in its own.
///
/// With no leader (simple majority, or Raft between leaders) there is no hub whose work to keep
/// together: every message goes through its receiver's task. Handled inline, a voter's answer
/// would take the proposer's state lock from the voter's worker while the proposer's own task
/// holds it on the other (simple majority at 256 clients on two workers: about 42k writes/s
/// inline, 57k queued).
fn handoff_to(
    membership: &concord_core::id::Membership,
    leader: Option<&NodeId>,
    sender: &NodeId,
    to: &NodeId,
) -> Handoff {
    let Some(hub) = leader else {
        return Handoff::ReceiversTask;
    };
    let other = if to == hub {
        sender
    } else if sender == hub {
        to
    } else {
        return Handoff::ReceiversTask; // between two followers (votes, while the leader changes)
    };
    let mut others = 0usize;
    let mut rank = None;
    for (id, member) in &membership.members {
        if member.role != concord_core::id::MemberRole::Voter || id == hub {
            continue;
        }
        if id == other {
            rank = Some(others);
        }
        others += 1;
    }
    match rank {
        Some(rank) if rank < others.div_ceil(2) => Handoff::SendersTask,
        _ => Handoff::ReceiversTask,
    }
}

async fn send_all(shared: &Shared, messages: Vec<Outbound>) {
    if messages.is_empty() {
        return;
    }
    if memory_transport(&shared.transport).is_some() {
        send_local(shared, messages);
        return;
    }
    // Group by destination so each peer gets one send (one flush) per round.
    let mut by_peer: Vec<(NodeId, Vec<Bytes>)> = Vec::new();
    for Outbound { to, message } in messages {
        let envelope = Envelope { cluster_id: shared.cluster_id, from: shared.node_id.clone(), to, message };
        let frame = match shared.codec.encode(&envelope) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(to = %envelope.to, kind = envelope.message.kind(), %error, "cannot encode message");
                continue;
            }
        };
        match by_peer.iter_mut().find(|(peer, _)| *peer == envelope.to) {
            Some((_, frames)) => frames.push(frame),
            None => by_peer.push((envelope.to, vec![frame])),
        }
    }
    for (peer, frames) in by_peer {
        if let Err(error) = shared.transport.send(&peer, frames).await {
            tracing::debug!(%peer, %error, "send failed");
        }
    }
}

/// Most transport items handled under one lock acquisition.
const RECEIVE_BATCH_MAX: usize = 256;

/// Receives frames from the transport and feeds them to the mechanism, a burst at a time: frames
/// are decoded outside the lock, then handed over under one lock acquisition.
async fn receive(shared: Arc<Shared>) {
    let mut decoded: Vec<(NodeId, concord_core::message::Message)> = Vec::new();
    let mut links: Vec<(NodeId, bool)> = Vec::new();
    loop {
        let batch = tokio::select! {
            batch = shared.transport.recv_batch(RECEIVE_BATCH_MAX) => batch,
            _ = shared.stopped.notified() => return,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(concord_core::transport::TransportError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, "transport receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        for incoming in batch {
            match incoming {
                Incoming::Frame { from, frame } => match shared.codec.decode_for(shared.cluster_id, &frame) {
                    Ok(envelope) if envelope.from == from && envelope.to == shared.node_id => {
                        decoded.push((from, envelope.message))
                    }
                    Ok(envelope) => {
                        tracing::warn!(%from, claimed = %envelope.from, to = %envelope.to, "dropping misrouted frame")
                    }
                    Err(error) => tracing::warn!(%from, %error, "dropping undecodable frame"),
                },
                Incoming::PeerConnected(peer) => links.push((peer, true)),
                Incoming::PeerDisconnected(peer) => links.push((peer, false)),
            }
        }
        if decoded.is_empty() && links.is_empty() {
            continue;
        }
        {
            let mut state = shared.state.lock();
            let now = shared.clock.now();
            for (peer, connected) in links.drain(..) {
                state.mechanism.handle_peer_status(now, &peer, connected);
            }
            for (from, message) in decoded.drain(..) {
                if let Err(error) = state.mechanism.handle_message(now, from, message) {
                    tracing::warn!(%error, "dropping message");
                }
            }
        }
        shared.wake.notify_one();
    }
}

impl NodeState {
    /// Recomputes which side of a partition this node is on and returns the events to emit.
    fn update_partition(&mut self, config: &Config, now: concord_core::time::Instant) -> Vec<Event> {
        // Right after start no peer has been heard from yet: that is not a partition.
        if now < self.partition.started + config.election_timeout.max {
            return Vec::new();
        }
        let membership = self.mechanism.membership();
        let voters: Vec<NodeId> = membership.voters().cloned().collect();
        if voters.len() <= 1 {
            return Vec::new();
        }
        let me = self.mechanism.node_id().clone();
        let connected = self.mechanism.connected_peers();
        let mut reachable: Vec<NodeId> =
            voters.iter().filter(|v| **v == me || connected.contains(v)).cloned().collect();
        if !reachable.contains(&me) {
            reachable.push(me);
        }
        reachable.sort();
        let required = quorum_required(config, voters.len());
        let side = if reachable.len() < required {
            Some(PartitionSide::Minority)
        } else if reachable.len() < voters.len() {
            Some(PartitionSide::Majority)
        } else {
            None
        };
        if side == self.partition.side {
            return Vec::new();
        }
        let previous = std::mem::replace(&mut self.partition.side, side);
        match side {
            Some(side) => vec![Event::PartitionDetected { side, reachable }],
            None if previous.is_some() => vec![Event::PartitionHealed],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use concord_core::config::{ElectionTimeout, MechanismKind};
    use concord_core::id::{Member, MemberRole, Membership};

    use super::*;
    use crate::MemoryNetwork;

    fn membership(voters: &[&str], learners: &[&str]) -> Membership {
        let mut membership = Membership::with_voters(voters.iter().map(|id| NodeInfo::new(*id, "")));
        for id in learners {
            let info = NodeInfo::new(*id, "");
            membership.members.insert(info.id.clone(), Member { info, role: MemberRole::Learner });
        }
        membership
    }

    #[test]
    fn interleaved_destinations_are_told_apart_from_grouped_ones() {
        use concord_core::message::{Message, RaftMessage};
        let to = |names: &[&str]| -> Vec<Outbound> {
            names
                .iter()
                .map(|name| Outbound {
                    to: NodeId::new(*name),
                    message: Message::Raft(RaftMessage::TimeoutNow { term: concord_core::id::Term(1) }),
                })
                .collect()
        };
        assert!(grouped_by_destination(&to(&[])));
        assert!(grouped_by_destination(&to(&["n2", "n2", "n3", "n3", "n1"])));
        assert!(!grouped_by_destination(&to(&["n2", "n3", "n2"])));
        assert!(!grouped_by_destination(&to(&["n2", "n2", "n3", "n4", "n3"])));
        // Nine runs (eight ended) are still checked; ten answer "sort" (no allocation to remember
        // them all).
        let many: Vec<String> = (0..10).map(|n| format!("n{n}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(!grouped_by_destination(&to(&many)));
        assert!(grouped_by_destination(&to(&many[..9])));
    }

    /// Records what an in-process peer is handed: each delivery's messages, in order.
    #[derive(Default)]
    struct Deliveries(Mutex<Vec<Vec<concord_core::message::Message>>>);

    impl LocalDelivery for Deliveries {
        fn deliver(
            &self,
            _: &NodeId,
            _: ClusterId,
            messages: Vec<concord_core::message::Message>,
            _: Handoff,
        ) {
            self.0.lock().push(messages);
        }
    }

    /// Messages a Ready interleaves across peers (simple majority does, slot by slot) reach each
    /// peer in one delivery, in the order they were emitted for it.
    #[tokio::test(start_paused = true)]
    async fn interleaved_messages_reach_each_peer_in_one_delivery_and_in_order() {
        use concord_core::message::{Message, RaftMessage};
        let network = MemoryNetwork::new();
        let members: Vec<NodeInfo> = ["a", "b", "c"].iter().map(|id| NodeInfo::new(*id, "")).collect();
        let node = Consensus::builder("a")
            .config(Config::for_mechanism(MechanismKind::SimpleMajority))
            .members(members)
            .transport(network.transport("a"))
            .start()
            .await
            .expect("node starts");
        let peers: Vec<(Arc<Deliveries>, Arc<dyn LocalDelivery>)> = ["b", "c"]
            .iter()
            .map(|id| {
                let deliveries = Arc::new(Deliveries::default());
                let receiver: Arc<dyn LocalDelivery> = deliveries.clone();
                network.transport(*id).set_local_delivery(Arc::downgrade(&receiver));
                (deliveries, receiver)
            })
            .collect();
        let marked =
            |term: u64| Message::Raft(RaftMessage::TimeoutNow { term: concord_core::id::Term(term) });
        let to = |id: &str, term: u64| Outbound { to: NodeId::new(id), message: marked(term) };
        send_local(&node.shared, vec![to("b", 1), to("c", 2), to("b", 3), to("c", 4), to("b", 5)]);
        // Only the marked messages (the node's own heartbeats may be delivered too).
        let marked_deliveries = |deliveries: &Deliveries| -> Vec<Vec<u64>> {
            deliveries
                .0
                .lock()
                .iter()
                .map(|delivery| {
                    delivery
                        .iter()
                        .filter_map(|message| match message {
                            Message::Raft(RaftMessage::TimeoutNow { term }) => Some(term.0),
                            _ => None,
                        })
                        .collect::<Vec<u64>>()
                })
                .filter(|terms| !terms.is_empty())
                .collect()
        };
        assert_eq!(marked_deliveries(&peers[0].0), vec![vec![1, 3, 5]]);
        assert_eq!(marked_deliveries(&peers[1].0), vec![vec![2, 4]]);
        node.stop().await;
    }

    /// A node's queue of handed-over messages holds at most `maxHandedOverMessages`: a run that
    /// would pass it is handled in the sender's task instead (nothing is lost).
    #[tokio::test(start_paused = true)]
    async fn the_handed_over_queue_is_bounded_by_its_config() {
        use concord_core::message::{Message, RaftMessage};
        let network = MemoryNetwork::new();
        let members: Vec<NodeInfo> = ["a", "b"].iter().map(|id| NodeInfo::new(*id, "")).collect();
        let mut config = Config::for_mechanism(MechanismKind::SimpleMajority);
        config.max_handed_over_messages = 3;
        let node = Consensus::builder("a")
            .config(config)
            .members(members)
            .transport(network.transport("a"))
            .start()
            .await
            .expect("node starts");
        let run = |count: u64| -> Vec<Message> {
            (0..count)
                .map(|term| Message::Raft(RaftMessage::TimeoutNow { term: concord_core::id::Term(term) }))
                .collect()
        };
        let from = NodeId::new("b");
        // No await in between: the node's task cannot take the queue meanwhile.
        node.shared.deliver(&from, ClusterId(0), run(3), Handoff::ReceiversTask);
        assert_eq!(node.shared.handed_over.lock().len(), 3, "within the bound: queued");
        node.shared.deliver(&from, ClusterId(0), run(1), Handoff::ReceiversTask);
        assert!(node.shared.handed_over.lock().is_empty(), "past it: handled at once, the queue first");
        node.stop().await;
    }

    #[test]
    fn the_leader_and_the_first_half_of_the_other_voters_exchange_messages_inline() {
        use Handoff::{ReceiversTask as Queued, SendersTask as Inline};
        let id = NodeId::new;
        let three = membership(&["n1", "n2", "n3"], &[]);
        let leader = id("n2");
        // Others of n2 in id order: n1 (first half, inline), n3 (its own task) — both directions.
        assert_eq!(handoff_to(&three, Some(&leader), &id("n2"), &id("n1")), Inline);
        assert_eq!(handoff_to(&three, Some(&leader), &id("n1"), &id("n2")), Inline);
        assert_eq!(handoff_to(&three, Some(&leader), &id("n2"), &id("n3")), Queued);
        assert_eq!(handoff_to(&three, Some(&leader), &id("n3"), &id("n2")), Queued);
        // Between two followers, and with no leader known (no hub: always the receiver's task).
        assert_eq!(handoff_to(&three, Some(&leader), &id("n1"), &id("n3")), Queued);
        assert_eq!(handoff_to(&three, None, &id("n3"), &id("n1")), Queued);
        assert_eq!(handoff_to(&three, None, &id("n1"), &id("n2")), Queued);
        // Five voters: two of the four others inline; a learner never; a stranger never.
        let five = membership(&["n1", "n2", "n3", "n4", "n5"], &["n6"]);
        let leader = id("n1");
        let from_leader: Vec<Handoff> = ["n2", "n3", "n4", "n5", "n6", "n9"]
            .iter()
            .map(|to| handoff_to(&five, Some(&leader), &leader, &id(to)))
            .collect();
        assert_eq!(from_leader, [Inline, Inline, Queued, Queued, Queued, Queued]);
    }

    /// Under load (many callers, so no lone-caller round trips), the leader hands its messages to
    /// the followers beyond a majority through their node tasks, and they answer through its node
    /// task; the followers within the majority never get a hand-over.
    #[tokio::test(start_paused = true)]
    async fn under_load_followers_beyond_a_majority_work_in_their_own_tasks() {
        let mut config = Config::for_mechanism(MechanismKind::Raft);
        config.heartbeat_interval = Duration::from_millis(50);
        config.election_timeout =
            ElectionTimeout { min: Duration::from_millis(150), max: Duration::from_millis(300) };
        let network = MemoryNetwork::new();
        let ids = ["n1", "n2", "n3", "n4", "n5"];
        let members: Vec<NodeInfo> = ids.iter().map(|id| NodeInfo::new(*id, format!("mem://{id}"))).collect();
        let mut nodes = Vec::new();
        for (index, id) in ids.iter().enumerate() {
            let node = Consensus::builder(*id)
                .config(config.clone())
                .members(members.clone())
                .transport(network.transport(*id))
                .seed(7 + index as u64)
                .start()
                .await
                .expect("node starts");
            nodes.push(node);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let leader = loop {
            if let Some(leader) = nodes.iter().position(Consensus::is_leader) {
                break leader;
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader within 10 s of virtual time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let runs = |nodes: &[Consensus]| -> Vec<u64> {
            nodes.iter().map(|node| node.shared.handed_over_runs.load(Ordering::Relaxed)).collect()
        };
        let before = runs(&nodes);
        let mut callers = Vec::new();
        for caller in 0..16u32 {
            let node = nodes[leader].clone();
            callers.push(tokio::spawn(async move {
                for write in 0..8u32 {
                    assert!(
                        node.propose(&format!("k{caller}"), &write).await,
                        "caller {caller} write {write}"
                    );
                }
            }));
        }
        for caller in callers {
            caller.await.expect("caller finished");
        }
        let after = runs(&nodes);
        let handed: Vec<u64> = after.iter().zip(&before).map(|(after, before)| after - before).collect();
        let mut followers: Vec<usize> = (0..nodes.len()).filter(|&index| index != leader).collect();
        followers.sort_by(|a, b| nodes[*a].node_id().cmp(nodes[*b].node_id()));
        let shape: Vec<bool> = followers.iter().map(|&index| handed[index] > 0).collect();
        assert_eq!(shape, [false, false, true, true], "hand-overs per follower in id order: {handed:?}");
        assert!(handed[leader] > 0, "the outer followers answer through the leader's task: {handed:?}");
        for node in &nodes {
            node.stop().await;
        }
    }
}
