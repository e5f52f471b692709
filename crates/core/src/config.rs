//! Cluster configuration, with the lesson's field names and every bound the implementation needs.
//!
//! ```
//! use concord_core::config::{Config, MechanismKind};
//! let config = Config::from_json(r#"{
//!     "mechanism": "raft",
//!     "timeout": 3000,
//!     "heartbeatInterval": 1000,
//!     "electionTimeout": [3000, 5000]
//! }"#).unwrap();
//! assert_eq!(config.mechanism, MechanismKind::Raft);
//! assert_eq!(config.election_timeout.min.as_millis(), 3000);
//! ```

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// Which consensus mechanism a node runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MechanismKind {
    /// Raft: a leader, a replicated log, linearizable operations.
    #[default]
    Raft,
    /// Quick per-key voting: at most one value accepted per key and version.
    SimpleMajority,
}

impl MechanismKind {
    /// The lesson's name for the mechanism.
    pub fn as_str(self) -> &'static str {
        match self {
            MechanismKind::Raft => "raft",
            MechanismKind::SimpleMajority => "simple_majority",
        }
    }
}

impl Serialize for MechanismKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MechanismKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "raft" => Ok(MechanismKind::Raft),
            "simple_majority" | "simpleMajority" | "majority" => Ok(MechanismKind::SimpleMajority),
            other => Err(de::Error::custom(format!(
                "field `mechanism`: unknown mechanism {other:?}, expected \"raft\" or \"simple_majority\""
            ))),
        }
    }
}

/// How many votes a decision needs: a fraction of the voters (`0.51`) or a count (`3`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quorum {
    /// Votes needed = the smallest count strictly greater than `fraction × voters`... see
    /// [`Quorum::required`] for the exact rule.
    Fraction(f64),
    /// An absolute number of votes.
    Count(u32),
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum::Fraction(0.51)
    }
}

impl Quorum {
    /// Votes required among `voters` members: `ceil(fraction × voters)` (at least 1) for a fraction,
    /// the count itself for a count. `0.51` of 3 is 2; `0.51` of 4 is 3; `0.5` of 4 is 2.
    pub fn required(self, voters: usize) -> usize {
        match self {
            Quorum::Fraction(fraction) => {
                // The tiny epsilon keeps 0.6 × 5 = 3.0000000000000004 from becoming 4.
                let exact = fraction * voters as f64;
                ((exact - 1e-9).ceil() as usize).max(1)
            }
            Quorum::Count(count) => count as usize,
        }
    }

    /// Whether the quorum is a strict majority of `voters`, which is what makes two quorums
    /// intersect and so keeps two different values from both being accepted.
    pub fn is_strict_majority(self, voters: usize) -> bool {
        self.required(voters) * 2 > voters
    }
}

impl Serialize for Quorum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Quorum::Fraction(fraction) => serializer.serialize_f64(fraction),
            Quorum::Count(count) => serializer.serialize_u32(count),
        }
    }
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuorumVisitor;
        impl de::Visitor<'_> for QuorumVisitor {
            type Value = Quorum;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("field `quorum`: a fraction in (0, 1] such as 0.51, or a count such as 3")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Quorum, E> {
                u32::try_from(value)
                    .map(Quorum::Count)
                    .map_err(|_| E::custom(format!("field `quorum`: count {value} is too large")))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Quorum, E> {
                if value < 0 {
                    return Err(E::custom(format!("field `quorum`: {value} is negative")));
                }
                self.visit_u64(value as u64)
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Quorum, E> {
                Ok(Quorum::Fraction(value))
            }
        }
        deserializer.deserialize_any(QuorumVisitor)
    }
}

/// The election timeout range `[min, max]`, written `electionTimeout: [3000, 5000]` in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTimeout {
    /// Shortest timeout drawn.
    pub min: Duration,
    /// Longest timeout drawn (inclusive).
    pub max: Duration,
}

impl Serialize for ElectionTimeout {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        [self.min.as_millis() as u64, self.max.as_millis() as u64].serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ElectionTimeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let [min, max] = <[u64; 2]>::deserialize(deserializer).map_err(|error| {
            de::Error::custom(format!("field `electionTimeout`: expected [min, max] in ms ({error})"))
        })?;
        Ok(ElectionTimeout { min: Duration::from_millis(min), max: Duration::from_millis(max) })
    }
}

/// How a simple-majority member votes on proposals it receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VotingMode {
    /// Vote for a proposal whose base version is current and that conflicts with no earlier vote.
    #[default]
    Automatic,
    /// Hand each proposal to the application as an event and wait for `vote(proposal_id, vote)`.
    Manual,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// Everything a node needs to know to take part in consensus.
///
/// Field names in JSON and TOML are the lesson's (`heartbeatInterval`, `electionTimeout`,
/// `batchWindow`…); snake_case spellings are accepted too. Durations are in milliseconds. Every
/// field has a default, so `{}` is a valid Raft config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// `raft` or `simple_majority`.
    pub mechanism: MechanismKind,
    /// How long a proposal may take before it fails with a timeout (`timeout`, ms).
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Votes a simple-majority decision needs (`quorum`). Raft always uses a strict majority of voters
    /// and only checks that a configured quorum is not weaker than that.
    pub quorum: Quorum,
    /// The cluster size the application expects (`nodes` in the lesson's game config), if stated.
    pub nodes: Option<u32>,
    /// A Raft leader's heartbeat period (`heartbeatInterval`, ms).
    #[serde(with = "millis", alias = "heartbeat_interval")]
    pub heartbeat_interval: Duration,
    /// The randomized election timeout range (`electionTimeout: [min, max]`, ms).
    #[serde(alias = "election_timeout")]
    pub election_timeout: ElectionTimeout,
    /// Collect proposals arriving within `batch_window` into one append (`batchUpdates`).
    #[serde(alias = "batch_updates")]
    pub batch_updates: bool,
    /// How long a batch may wait to fill (`batchWindow`, ms). Zero means "what is ready now".
    #[serde(with = "millis", alias = "batch_window")]
    pub batch_window: Duration,
    /// Compress message payloads larger than `compression_threshold_bytes` with LZ4.
    pub compression: bool,
    /// Take a snapshot and compact the log every this many applied entries (`snapshotInterval`);
    /// 0 turns snapshots off.
    #[serde(alias = "snapshot_interval")]
    pub snapshot_interval: u64,

    /// Raft: run a pre-vote round before an election, so a rejoining node cannot disrupt a leader.
    #[serde(alias = "pre_vote")]
    pub pre_vote: bool,
    /// Raft: a leader that has not heard from a quorum within an election timeout steps down.
    #[serde(alias = "check_quorum")]
    pub check_quorum: bool,
    /// Raft: serve linearizable reads from a leader lease instead of a ReadIndex round trip. Assumes
    /// clocks on different nodes run at rates within `lease_clock_drift_max` of each other.
    #[serde(alias = "lease_reads")]
    pub lease_reads: bool,
    /// Raft: the largest relative clock-rate difference a lease tolerates, in parts per thousand
    /// (the lease is shortened by this much).
    #[serde(alias = "lease_clock_drift_max_per_mille")]
    pub lease_clock_drift_max_per_mille: u32,
    /// Forward proposals and reads made on a follower to the leader; off means `NotLeader` errors.
    #[serde(alias = "forward_to_leader")]
    pub forward_to_leader: bool,
    /// Simple majority: how members vote.
    pub voting: VotingMode,
    /// Simple majority: allow a quorum that is not a strict majority. Decisions are then advisory
    /// (two values may both be accepted) and every result says so.
    pub advisory: bool,

    /// Largest encoded frame sent or accepted, in bytes; larger frames are refused before allocation.
    #[serde(alias = "max_message_bytes")]
    pub max_message_bytes: u32,
    /// Most entries one replication message carries.
    #[serde(alias = "max_entries_per_message")]
    pub max_entries_per_message: u32,
    /// Most replication messages in flight to one follower.
    #[serde(alias = "max_inflight_messages")]
    pub max_inflight_messages: u32,
    /// Most entry bytes in flight to one follower.
    #[serde(alias = "max_inflight_bytes")]
    pub max_inflight_bytes: u64,
    /// Most proposals collected into one batch.
    #[serde(alias = "max_batch_entries")]
    pub max_batch_entries: u32,
    /// Most committed entries a Raft node applies in one step (one `Ready`); the rest follow in
    /// the next ones. A node that learns of a long committed tail at once (after a restart, or
    /// catching up) keeps answering heartbeats and votes meanwhile instead of stalling for the
    /// whole tail.
    #[serde(alias = "max_apply_entries")]
    pub max_apply_entries: u32,
    /// Most proposals accepted but not yet decided on one node; more get a `Busy` error.
    #[serde(alias = "max_pending_proposals")]
    pub max_pending_proposals: u32,
    /// Most linearizable reads waiting on one node; more get a `Busy` error.
    #[serde(alias = "max_pending_reads")]
    pub max_pending_reads: u32,
    /// Payloads larger than this are compressed when `compression` is on.
    #[serde(alias = "compression_threshold_bytes")]
    pub compression_threshold_bytes: u32,
    /// Size of one InstallSnapshot chunk.
    #[serde(alias = "snapshot_chunk_bytes")]
    pub snapshot_chunk_bytes: u32,
    /// Most client sessions remembered for exactly-once proposals; the least recently used is
    /// forgotten beyond it (its retries then fail with `SessionExpired`).
    #[serde(alias = "max_client_sessions")]
    pub max_client_sessions: u32,
    /// Most clients the session table remembers. A command from a new client beyond it fails with
    /// `SessionTableFull` (nothing applied) until idle clients expire.
    #[serde(alias = "max_client_records")]
    pub max_client_records: u32,
    /// A client none of whose commands was applied for this long (leader time, so the same on
    /// every replica) is forgotten by the session table, results and all (`clientSessionExpiry`,
    /// ms). At least ten times `timeout`: no retry of a forgotten client's command can still come.
    /// Leader time is the leaders' wall clocks (never going back), so this assumes they differ by
    /// less than the expiry minus `timeout`; a leader far ahead makes idle clients expire early
    /// (and until real time catches up, none expire after it). Raft only (see concord-majority).
    #[serde(with = "millis", alias = "client_session_expiry")]
    pub client_session_expiry: Duration,
    /// Largest key accepted, in bytes.
    #[serde(alias = "max_key_bytes")]
    pub max_key_bytes: u32,
    /// Largest value accepted, in bytes.
    #[serde(alias = "max_value_bytes")]
    pub max_value_bytes: u32,
    /// Most commands in one atomic batch.
    #[serde(alias = "max_batch_commands")]
    pub max_batch_commands: u32,
    /// Most events buffered for one subscriber before the oldest are dropped (and a lag reported).
    #[serde(alias = "max_event_backlog")]
    pub max_event_backlog: u32,
    /// Most in-process messages (between nodes of one process on a `MemoryNetwork`) waiting for
    /// one node's own task; beyond it, further messages are handled in the sender's task instead
    /// (nothing is lost, only the work moves). Under Raft the leader's flow control keeps the queue
    /// far below this; under simple majority every message waits here, about as many as the
    /// proposals in flight.
    #[serde(alias = "max_handed_over_messages")]
    pub max_handed_over_messages: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mechanism: MechanismKind::Raft,
            timeout: Duration::from_millis(5000),
            quorum: Quorum::default(),
            nodes: None,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: ElectionTimeout {
                min: Duration::from_millis(300),
                max: Duration::from_millis(600),
            },
            batch_updates: true,
            batch_window: Duration::ZERO,
            compression: false,
            snapshot_interval: 10_000,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            lease_clock_drift_max_per_mille: 100,
            forward_to_leader: true,
            voting: VotingMode::Automatic,
            advisory: false,
            max_message_bytes: 16 * 1024 * 1024,
            max_entries_per_message: 4096,
            max_inflight_messages: 256,
            max_inflight_bytes: 64 * 1024 * 1024,
            max_batch_entries: 4096,
            max_apply_entries: 8192,
            max_pending_proposals: 100_000,
            max_pending_reads: 100_000,
            compression_threshold_bytes: 4096,
            snapshot_chunk_bytes: 1024 * 1024,
            max_client_sessions: 100_000,
            max_client_records: crate::state_machine::DEFAULT_CLIENTS_MAX as u32,
            client_session_expiry: Duration::from_millis(crate::state_machine::DEFAULT_SESSION_EXPIRY_MS),
            max_key_bytes: 4096,
            max_value_bytes: 1024 * 1024,
            max_batch_commands: 1024,
            max_event_backlog: 4096,
            max_handed_over_messages: 4096,
        }
    }
}

/// A configuration that cannot work, naming the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field holds a value that cannot work.
    #[error("invalid config: field `{field}`: {reason}")]
    Invalid {
        /// The field, by the lesson's name.
        field: &'static str,
        /// Why it cannot work.
        reason: String,
    },
    /// The text could not be parsed (the message names the field where the parser can tell).
    #[error("invalid config: {0}")]
    Parse(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, reason: reason.into() }
}

impl Config {
    /// A default config for the given mechanism.
    pub fn for_mechanism(mechanism: MechanismKind) -> Self {
        Config { mechanism, ..Config::default() }
    }

    /// Parses the lesson's JSON form and validates it.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_json_parse(text).map_err(ConfigError::Parse)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the config can work; the error names the first field that cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be greater than 0 ms"));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(invalid("heartbeatInterval", "must be greater than 0 ms"));
        }
        let election = self.election_timeout;
        if election.min > election.max {
            return Err(invalid(
                "electionTimeout",
                format!("min {} ms is above max {} ms", election.min.as_millis(), election.max.as_millis()),
            ));
        }
        if self.mechanism == MechanismKind::Raft && election.min < self.heartbeat_interval * 2 {
            return Err(invalid(
                "electionTimeout",
                format!(
                    "min {} ms must be at least twice heartbeatInterval ({} ms), or followers time out between heartbeats",
                    election.min.as_millis(),
                    self.heartbeat_interval.as_millis()
                ),
            ));
        }
        match self.quorum {
            Quorum::Fraction(fraction) if !(fraction > 0.0 && fraction <= 1.0) => {
                return Err(invalid("quorum", format!("fraction {fraction} must be in (0, 1]")));
            }
            Quorum::Count(0) => return Err(invalid("quorum", "count must be at least 1")),
            _ => {}
        }
        if let Some(nodes) = self.nodes {
            if nodes == 0 {
                return Err(invalid("nodes", "a cluster has at least one node"));
            }
            let required = self.quorum.required(nodes as usize);
            if required > nodes as usize {
                return Err(invalid(
                    "quorum",
                    format!("requires {required} votes but the cluster has only {nodes} nodes"),
                ));
            }
            if !self.quorum.is_strict_majority(nodes as usize)
                && (self.mechanism == MechanismKind::Raft || !self.advisory)
            {
                return Err(invalid(
                    "quorum",
                    format!(
                        "{required} of {nodes} is not a strict majority, so two conflicting values could both win; \
                         use more than {} votes{}",
                        nodes / 2,
                        if self.mechanism == MechanismKind::SimpleMajority { " or set `advisory: true`" } else { "" }
                    ),
                ));
            }
        }
        if let Quorum::Fraction(fraction) = self.quorum {
            if fraction <= 0.5 && !(self.mechanism == MechanismKind::SimpleMajority && self.advisory) {
                return Err(invalid(
                    "quorum",
                    format!(
                        "fraction {fraction} is not more than half, so two conflicting values could both win"
                    ),
                ));
            }
        }
        if self.lease_reads && !self.check_quorum {
            return Err(invalid("leaseReads", "lease reads are only safe with checkQuorum on"));
        }
        if self.lease_clock_drift_max_per_mille >= 1000 {
            return Err(invalid("leaseClockDriftMaxPerMille", "must be below 1000"));
        }
        if self.client_session_expiry < self.timeout.saturating_mul(10) {
            return Err(invalid(
                "clientSessionExpiry",
                "must be at least 10 × timeout: a retried proposal must never outlive its session",
            ));
        }
        let positive: [(&'static str, u64); 16] = [
            ("maxMessageBytes", self.max_message_bytes.into()),
            ("maxEntriesPerMessage", self.max_entries_per_message.into()),
            ("maxInflightMessages", self.max_inflight_messages.into()),
            ("maxInflightBytes", self.max_inflight_bytes),
            ("maxBatchEntries", self.max_batch_entries.into()),
            ("maxApplyEntries", self.max_apply_entries.into()),
            ("maxPendingProposals", self.max_pending_proposals.into()),
            ("maxPendingReads", self.max_pending_reads.into()),
            ("snapshotChunkBytes", self.snapshot_chunk_bytes.into()),
            ("maxClientSessions", self.max_client_sessions.into()),
            ("maxClientRecords", self.max_client_records.into()),
            ("maxKeyBytes", self.max_key_bytes.into()),
            ("maxValueBytes", self.max_value_bytes.into()),
            ("maxBatchCommands", self.max_batch_commands.into()),
            ("maxEventBacklog", self.max_event_backlog.into()),
            ("maxHandedOverMessages", self.max_handed_over_messages.into()),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err(invalid("maxMessageBytes", "must be at least 1024 bytes"));
        }
        if u64::from(self.snapshot_chunk_bytes) + 1024 > u64::from(self.max_message_bytes) {
            return Err(invalid(
                "snapshotChunkBytes",
                format!("a chunk plus its header must fit in maxMessageBytes ({})", self.max_message_bytes),
            ));
        }
        if u64::from(self.max_value_bytes) + u64::from(self.max_key_bytes) + 1024
            > u64::from(self.max_message_bytes)
        {
            return Err(invalid(
                "maxValueBytes",
                "a largest key and value must fit in one message (maxMessageBytes)",
            ));
        }
        Ok(())
    }

    /// The election timeout range as used by Raft.
    pub fn election_timeout_range(&self) -> (Duration, Duration) {
        (self.election_timeout.min, self.election_timeout.max)
    }
}

// A tiny JSON front end would need serde_json in the core's normal dependencies; it is small, has no
// runtime, and configs come as JSON in the lesson, so it is worth it. serde_json's own messages do
// not say which field a type error is in ("invalid type: string, expected u64"), so the path to the
// failing value is tracked and put in front.
fn serde_json_parse(text: &str) -> Result<Config, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let config: Config = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // Messages from this module's own deserializers already name their field.
        if path == "." || inner.to_string().starts_with("field `") {
            inner.to_string()
        } else {
            format!("field `{path}`: {inner}")
        }
    })?;
    deserializer.end().map_err(|error| error.to_string())?;
    Ok(config)
}
