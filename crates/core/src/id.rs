//! Identifiers and cluster membership types.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The identity of a node, a readable string such as `"agent-001"`.
///
/// Cloning is cheap (a reference count): node ids travel in every message and event.
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

// Hash by content, consistent with the equality below (pointer equality implies equal content).
impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Ids recently decoded on this thread, so that decoding the same few ids again and again (every
/// frame names its sender, receiver and each entry's origin) shares one allocation instead of
/// allocating per occurrence. Bounded: a handful of ids, replaced round-robin.
const DECODED_IDS_CACHED_MAX: usize = 32;

thread_local! {
    static DECODED_IDS: std::cell::RefCell<(Vec<Arc<str>>, usize)> =
        const { std::cell::RefCell::new((Vec::new(), 0)) };
}

fn intern_decoded(text: &str) -> Arc<str> {
    DECODED_IDS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(found) = cache.0.iter().find(|id| &***id == text) {
            return found.clone();
        }
        let id: Arc<str> = Arc::from(text);
        if cache.0.len() < DECODED_IDS_CACHED_MAX {
            cache.0.push(id.clone());
        } else {
            let slot = cache.1 % DECODED_IDS_CACHED_MAX;
            cache.0[slot] = id.clone();
            cache.1 = cache.1.wrapping_add(1);
        }
        id
    })
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl serde::de::Visitor<'_> for IdVisitor {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a node id string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<NodeId, E> {
                Ok(NodeId(intern_decoded(text)))
            }
        }
        deserializer.deserialize_str(IdVisitor)
    }
}

// Ids are compared constantly (maps keyed by node or proposal). Most comparisons are between
// clones of one allocation, so check the pointer before the bytes.
/// Ids up to this long are compared byte by byte in place: ids are compared all the time (every
/// membership and progress look-up), they are short, and a call into `memcmp` costs more than
/// comparing a few bytes.
const INLINE_COMPARE_BYTES_MAX: usize = 16;

impl PartialEq for NodeId {
    fn eq(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.0, &other.0) {
            return true;
        }
        let (left, right) = (self.0.as_bytes(), other.0.as_bytes());
        if left.len() != right.len() {
            return false;
        }
        if left.len() <= INLINE_COMPARE_BYTES_MAX {
            return left.iter().zip(right).all(|(a, b)| a == b);
        }
        left == right
    }
}

impl Eq for NodeId {}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        let (left, right) = (self.0.as_bytes(), other.0.as_bytes());
        if left.len().max(right.len()) <= INLINE_COMPARE_BYTES_MAX {
            // Byte order, then length: the order of `str`.
            for (a, b) in left.iter().zip(right) {
                if a != b {
                    return a.cmp(b);
                }
            }
            return left.len().cmp(&right.len());
        }
        left.cmp(right)
    }
}

impl NodeId {
    /// Longest node id accepted, in bytes. Ids travel in every frame, so they stay short.
    pub const LENGTH_MAX: usize = 128;

    /// Makes a node id. Use [`NodeId::parse`] for input from a user or a peer.
    pub fn new(id: impl AsRef<str>) -> Self {
        NodeId(Arc::from(id.as_ref()))
    }

    /// Makes a node id from untrusted input: it must be 1..=128 bytes of printable ASCII without spaces.
    pub fn parse(id: &str) -> Result<Self, InvalidNodeId> {
        if id.is_empty() || id.len() > Self::LENGTH_MAX || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidNodeId { id: id.chars().take(Self::LENGTH_MAX).collect() });
        }
        Ok(Self::new(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A node id that is empty, too long or not printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {id:?}: expected 1 to 128 printable ASCII characters without spaces")]
pub struct InvalidNodeId {
    /// The offending id (cut to 128 characters).
    pub id: String,
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> Self {
        NodeId::new(id)
    }
}

impl From<String> for NodeId {
    fn from(id: String) -> Self {
        NodeId(Arc::from(id))
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A Raft term (or a majority ballot round). Starts at 0 and only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A position in the replicated log. The first entry has index 1; index 0 means "before the log".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The index before any entry.
    pub const ZERO: LogIndex = LogIndex(0);

    /// The next index.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The previous index, saturating at zero.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The version of a key in the key-value state machine: 0 when the key never existed, then
/// incremented by every command that changes it (a delete too, so versions never repeat).
pub type Version = u64;

/// Identifies one proposal cluster-wide: the node that made it and a per-node sequence number.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalId {
    /// The node the proposal was made on.
    pub origin: NodeId,
    /// Strictly increasing per origin node for the life of its process.
    pub sequence: u64,
}

impl fmt::Debug for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.origin, self.sequence)
    }
}

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.origin, self.sequence)
    }
}

/// A client session for exactly-once proposals (Raft thesis §6.3): a retried command that carries the
/// same `(client, sequence)` is applied at most once and answered with the first result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientSession {
    /// A random id the client picked for itself.
    pub client: u64,
    /// Strictly increasing per client: one number per logical operation, reused by its retries.
    pub sequence: u64,
    /// The client's lowest sequence still waiting for an answer (the thesis' acknowledgement): the
    /// client will never retry a sequence below it, so replicas forget those results, and a late
    /// copy of one is refused with `SessionExpired` instead of applied. `0` acknowledges nothing
    /// (results are then kept until `max_client_sessions` evicts them). Values above `sequence`
    /// count as `sequence`.
    pub answered_below: u64,
}

impl ClientSession {
    /// A session that acknowledges nothing (`answered_below` 0).
    pub fn new(client: u64, sequence: u64) -> Self {
        ClientSession { client, sequence, answered_below: 0 }
    }
}

/// A cluster's identity: every frame carries it, and frames of another cluster are refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterId(pub u64);

/// Free-form node metadata (region, zone, role…), replicated with the membership.
pub type Metadata = BTreeMap<String, String>;

/// A member of the cluster as the lesson's `addNode({ id, address, metadata })` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Where the node's peer transport listens, e.g. `localhost:5002` or `ws://10.0.0.2:7000`.
    #[serde(default)]
    pub address: String,
    /// Free-form metadata, e.g. `region = "us-west"`.
    #[serde(default)]
    pub metadata: Metadata,
    /// Whether this node currently hears from it (not replicated: each node's own view).
    #[serde(default)]
    pub connected: bool,
}

impl NodeInfo {
    /// A node with an id and an address, no metadata, not (yet) known to be connected.
    pub fn new(id: impl Into<NodeId>, address: impl Into<String>) -> Self {
        NodeInfo { id: id.into(), address: address.into(), metadata: Metadata::new(), connected: false }
    }

    /// Adds one metadata pair.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// The role a member plays in the membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberRole {
    /// Votes and counts towards quorums.
    Voter,
    /// Receives the log but does not vote or count towards quorums (catching up before promotion).
    Learner,
}

/// One member of the replicated membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Id, address and metadata (`connected` is not meaningful here and is kept false).
    pub info: NodeInfo,
    /// Voter or learner.
    pub role: MemberRole,
}

/// The replicated cluster membership: who votes, who learns, and their addresses and metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members in id order.
    pub members: BTreeMap<NodeId, Member>,
}

impl Membership {
    /// A membership of voters.
    pub fn with_voters(nodes: impl IntoIterator<Item = NodeInfo>) -> Self {
        let members = nodes
            .into_iter()
            .map(|mut info| {
                info.connected = false;
                (info.id.clone(), Member { info, role: MemberRole::Voter })
            })
            .collect();
        Membership { members }
    }

    /// Ids of the voters, in order.
    pub fn voters(&self) -> impl Iterator<Item = &NodeId> {
        self.members.values().filter(|m| m.role == MemberRole::Voter).map(|m| &m.info.id)
    }

    /// Ids of the learners, in order.
    pub fn learners(&self) -> impl Iterator<Item = &NodeId> {
        self.members.values().filter(|m| m.role == MemberRole::Learner).map(|m| &m.info.id)
    }

    /// Number of voters.
    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: &NodeId) -> bool {
        self.members.get(id).is_some_and(|m| m.role == MemberRole::Voter)
    }

    /// Whether `id` is a member (voter or learner).
    pub fn contains(&self, id: &NodeId) -> bool {
        self.members.contains_key(id)
    }
}
