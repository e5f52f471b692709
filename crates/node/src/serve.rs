//! `concord serve`: one cluster member with its peer transport and its client API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use concord_core::config::{Config, ElectionTimeout, MechanismKind, Quorum};
use concord_core::id::{ClusterId, NodeId, NodeInfo};
use concord_core::transport::Transport;
use concord_runtime::Consensus;
use concord_transport_ws::{WsOptions, WsTransport};
use concord_transport_zmq::{ZmqOptions, ZmqTransport};

use crate::api::{self, ApiState};

/// The environment variable that may hold the cluster secret.
pub const SECRET_ENV: &str = "CONCORD_SECRET";
/// Largest secret file read, in bytes.
pub const SECRET_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Arguments of `concord serve`.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("storage").required(true).args(["data_dir", "memory"])))]
pub struct ServeArgs {
    /// This node's id (e.g. `n1`).
    #[arg(long)]
    pub id: String,
    /// Peer transport address: `ws://HOST:PORT` (WebSocket) or `tcp://HOST:PORT` (ZeroMQ); port 0
    /// lets the OS choose.
    #[arg(long)]
    pub listen: String,
    /// Client API address `HOST:PORT` (port 0 lets the OS choose).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub api: String,
    /// Another member, `ID=ADDRESS` with the same scheme as --listen (repeatable).
    #[arg(long = "peer", value_name = "ID=ADDRESS")]
    pub peers: Vec<String>,
    /// Directory of durable storage (created if missing; an existing one is resumed).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep state in memory only (lost when the process ends).
    #[arg(long)]
    pub memory: bool,
    /// File holding the cluster secret (at least 16 bytes; a trailing newline is ignored). Without
    /// it the secret comes from the CONCORD_SECRET environment variable.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Cluster id; peers of another cluster are refused.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// TOML config file with the lesson's field names (`heartbeatInterval = 1000`,
    /// `electionTimeout = [3000, 5000]`, `mechanism = "raft"`, …). Flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `raft` or `simple_majority`.
    #[arg(long)]
    pub mechanism: Option<String>,
    /// Proposal timeout, ms (`timeout`).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Raft heartbeat interval, ms (`heartbeatInterval`).
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// Election timeout range, ms (`electionTimeout`), as `MIN,MAX`.
    #[arg(long, value_name = "MIN,MAX")]
    pub election_timeout_ms: Option<String>,
    /// Votes needed: a fraction (`0.51`) or a count (`2`) (`quorum`).
    #[arg(long)]
    pub quorum: Option<String>,
    /// Snapshot every N applied entries, 0 for never (`snapshotInterval`).
    #[arg(long)]
    pub snapshot_interval: Option<u64>,
    /// Forward proposals and reads on a follower to the leader (`forwardToLeader`).
    #[arg(long)]
    pub forward_to_leader: Option<bool>,
    /// Largest client request body, in bytes.
    #[arg(long, default_value_t = api::REQUEST_BYTES_MAX)]
    pub max_request_bytes: usize,
    /// TEST ONLY (feature `unsafe-test-broken`): acknowledge writes before they commit, so that a
    /// chaos run can prove its checker catches lost acknowledged writes.
    #[cfg(feature = "unsafe-test-broken")]
    #[arg(long)]
    pub unsafe_ack_before_commit: bool,
}

/// Why `concord serve` could not start (all are the operator's to fix unless said otherwise).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A flag or the config file is wrong.
    #[error("{0}")]
    Usage(String),
    /// The cluster secret is missing or unreadable.
    #[error("cluster secret: {0}")]
    Secret(String),
    /// The peer transport could not start.
    #[error("peer transport: {0}")]
    Transport(String),
    /// The node could not start (storage, config, membership).
    #[error(transparent)]
    Start(#[from] concord_runtime::StartError),
    /// An I/O error (binding the API address, serving).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Builds the config: defaults, then the TOML file, then flags.
pub fn load_config(args: &ServeArgs) -> Result<Config, ServeError> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ServeError::Usage(format!("cannot read config {}: {error}", path.display()))
            })?;
            toml::from_str::<Config>(&text)
                .map_err(|error| ServeError::Usage(format!("config {}: {error}", path.display())))?
        }
        None => Config::default(),
    };
    if let Some(mechanism) = &args.mechanism {
        config.mechanism = match mechanism.as_str() {
            "raft" => MechanismKind::Raft,
            "simple_majority" | "majority" => MechanismKind::SimpleMajority,
            other => {
                return Err(ServeError::Usage(format!(
                    "--mechanism {other:?}: expected raft or simple_majority"
                )))
            }
        };
    }
    if let Some(timeout) = args.timeout_ms {
        config.timeout = Duration::from_millis(timeout);
    }
    if let Some(interval) = args.heartbeat_interval_ms {
        config.heartbeat_interval = Duration::from_millis(interval);
    }
    if let Some(range) = &args.election_timeout_ms {
        let parsed = range
            .split_once(',')
            .and_then(|(min, max)| Some((min.trim().parse().ok()?, max.trim().parse().ok()?)));
        let (min, max): (u64, u64) = parsed.ok_or_else(|| {
            ServeError::Usage(format!("--election-timeout-ms {range:?}: expected MIN,MAX in ms"))
        })?;
        config.election_timeout =
            ElectionTimeout { min: Duration::from_millis(min), max: Duration::from_millis(max) };
    }
    if let Some(quorum) = &args.quorum {
        config.quorum = if quorum.contains('.') {
            quorum.parse().map(Quorum::Fraction).ok()
        } else {
            quorum.parse().map(Quorum::Count).ok()
        }
        .ok_or_else(|| {
            ServeError::Usage(format!("--quorum {quorum:?}: expected a fraction like 0.51 or a count"))
        })?;
    }
    if let Some(interval) = args.snapshot_interval {
        config.snapshot_interval = interval;
    }
    if let Some(forward) = args.forward_to_leader {
        config.forward_to_leader = forward;
    }
    config.validate().map_err(|error| ServeError::Usage(error.to_string()))?;
    Ok(config)
}

/// Reads the cluster secret from `--secret-file`, else from `CONCORD_SECRET`.
pub fn load_secret(args: &ServeArgs) -> Result<Vec<u8>, ServeError> {
    let secret = match &args.secret_file {
        Some(path) => {
            use std::io::Read;
            let file = std::fs::File::open(path)
                .map_err(|error| ServeError::Secret(format!("cannot read {}: {error}", path.display())))?;
            let mut bytes = Vec::new();
            file.take(SECRET_FILE_BYTES_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(|error| ServeError::Secret(format!("cannot read {}: {error}", path.display())))?;
            if bytes.len() as u64 > SECRET_FILE_BYTES_MAX {
                return Err(ServeError::Secret(format!(
                    "{} exceeds {SECRET_FILE_BYTES_MAX} bytes",
                    path.display()
                )));
            }
            while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                bytes.pop();
            }
            bytes
        }
        None => std::env::var_os(SECRET_ENV)
            .map(|value| value.into_encoded_bytes())
            .ok_or_else(|| ServeError::Secret(format!("give --secret-file PATH or set {SECRET_ENV}")))?,
    };
    if secret.is_empty() {
        return Err(ServeError::Secret("the secret is empty".into()));
    }
    Ok(secret)
}

/// Which peer transport an address selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`: concord-transport-ws.
    WebSocket,
    /// `tcp://`: concord-transport-zmq.
    ZeroMq,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Scheme::WebSocket => "ws://",
            Scheme::ZeroMq => "tcp://",
        }
    }
}

/// Splits `ws://HOST:PORT` or `tcp://HOST:PORT` into the scheme and a socket address.
pub fn parse_listen(address: &str) -> Result<(Scheme, SocketAddr), ServeError> {
    let (scheme, rest) = if let Some(rest) = address.strip_prefix("ws://") {
        (Scheme::WebSocket, rest)
    } else if let Some(rest) = address.strip_prefix("tcp://") {
        (Scheme::ZeroMq, rest)
    } else {
        return Err(ServeError::Usage(format!(
            "--listen {address:?}: expected ws://HOST:PORT (WebSocket) or tcp://HOST:PORT (ZeroMQ)"
        )));
    };
    let socket = rest
        .trim_end_matches('/')
        .parse::<SocketAddr>()
        .map_err(|error| ServeError::Usage(format!("--listen {address:?}: {error} (use an IP address)")))?;
    Ok((scheme, socket))
}

/// Parses `--peer ID=ADDRESS`.
pub fn parse_peer(peer: &str, scheme: Scheme) -> Result<NodeInfo, ServeError> {
    let (id, address) = peer
        .split_once('=')
        .ok_or_else(|| ServeError::Usage(format!("--peer {peer:?}: expected ID=ADDRESS")))?;
    let id = NodeId::parse(id).map_err(|error| ServeError::Usage(format!("--peer {peer:?}: {error}")))?;
    if !address.starts_with(scheme.prefix()) {
        return Err(ServeError::Usage(format!(
            "--peer {peer:?}: the address must use {} like --listen",
            scheme.prefix()
        )));
    }
    Ok(NodeInfo::new(id, address))
}

/// A node that is running: its handle and where it listens.
pub struct RunningNode {
    /// The node.
    pub consensus: Consensus,
    /// The peer address, with its scheme.
    pub peer_address: String,
    /// The client API listener (already bound).
    pub api_listener: tokio::net::TcpListener,
    /// The transport's counters, for `/metrics`.
    pub transport_stats: api::TransportStats,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("consensus", &self.consensus)
            .field("peer_address", &self.peer_address)
            .finish_non_exhaustive()
    }
}

/// Binds the transport, starts the node and binds the API listener.
pub async fn start(args: &ServeArgs) -> Result<RunningNode, ServeError> {
    let config = load_config(args)?;
    let secret = load_secret(args)?;
    let node_id = NodeId::parse(&args.id).map_err(|error| ServeError::Usage(format!("--id: {error}")))?;
    let (scheme, listen) = parse_listen(&args.listen)?;
    let peers = args.peers.iter().map(|peer| parse_peer(peer, scheme)).collect::<Result<Vec<_>, _>>()?;
    if peers.iter().any(|peer| peer.id == node_id) {
        return Err(ServeError::Usage(format!("--peer lists this node's own id {node_id}")));
    }
    let cluster_id = ClusterId(args.cluster_id);
    let (transport, bound, transport_stats): (Arc<dyn Transport>, SocketAddr, api::TransportStats) =
        match scheme {
            Scheme::WebSocket => {
                let mut options = WsOptions::new(node_id.clone(), cluster_id, &secret);
                options.listen_address = listen;
                options.frame_bytes_max = config.max_message_bytes as usize;
                let transport = WsTransport::bind(options)
                    .await
                    .map_err(|error| ServeError::Transport(error.to_string()))?;
                let bound = transport.local_addr();
                let stats = transport.clone();
                let stats: api::TransportStats = Box::new(move || {
                    let stats = stats.stats();
                    vec![
                        ("handshakes_refused_total", stats.handshakes_refused),
                        ("links_closed_for_bad_frames_total", stats.links_closed_for_bad_frames),
                    ]
                });
                (transport, bound, stats)
            }
            Scheme::ZeroMq => {
                let mut options = ZmqOptions::new(node_id.clone(), cluster_id, &secret);
                options.listen_address = listen;
                options.frame_bytes_max = config.max_message_bytes as usize;
                let transport = ZmqTransport::bind(options)
                    .await
                    .map_err(|error| ServeError::Transport(error.to_string()))?;
                let bound = transport.local_addr();
                let stats = transport.clone();
                let stats: api::TransportStats = Box::new(move || {
                    let stats = stats.stats();
                    vec![
                        ("handshakes_refused_total", stats.handshakes_refused),
                        ("links_closed_for_bad_frames_total", stats.links_closed_for_bad_frames),
                        ("links_rebuilt_for_silence_total", stats.links_rebuilt_for_silence),
                    ]
                });
                (transport, bound, stats)
            }
        };
    let peer_address = format!("{}{bound}", scheme.prefix());
    let mut members = peers;
    members.push(NodeInfo::new(node_id.clone(), peer_address.clone()));
    let mut builder = Consensus::builder(node_id.as_str())
        .config(config)
        .address(peer_address.clone())
        .members(members)
        .cluster_id(cluster_id)
        .transport(transport.clone());
    if let Some(directory) = &args.data_dir {
        builder = builder.data_dir(directory);
    }
    let consensus = match builder.start().await {
        Ok(consensus) => consensus,
        Err(error) => {
            transport.close().await;
            return Err(error.into());
        }
    };
    let api_listener = match tokio::net::TcpListener::bind(&args.api).await {
        Ok(listener) => listener,
        Err(source) => {
            consensus.stop().await;
            return Err(ServeError::Io { context: format!("cannot bind --api {}", args.api), source });
        }
    };
    Ok(RunningNode { consensus, peer_address, api_listener, transport_stats })
}

/// Runs `concord serve` until SIGTERM or ctrl-c, then drains requests and stops the node.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let node = start(&args).await?;
    let api_address = node
        .api_listener
        .local_addr()
        .map_err(|source| ServeError::Io { context: "API listener address".into(), source })?;
    // The line tests and scripts read to learn the bound addresses.
    println!(
        "concord: node {} peer={} api=http://{api_address}",
        node.consensus.node_id(),
        node.peer_address
    );
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    tracing::info!(node = %node.consensus.node_id(), peer = %node.peer_address, api = %api_address, "serving");
    let state = ApiState::new(node.consensus.clone(), node.peer_address.clone(), node.transport_stats);
    #[cfg(feature = "unsafe-test-broken")]
    if args.unsafe_ack_before_commit {
        tracing::warn!("--unsafe-ack-before-commit: writes are acknowledged before they commit (test only)");
        state.set_unsafe_ack_before_commit(true);
    }
    let app = api::router(state.clone(), args.max_request_bytes);
    let signal = async move {
        shutdown_signal().await;
        state.begin_shutdown();
    };
    let served = axum::serve(node.api_listener, app).with_graceful_shutdown(signal).await;
    tracing::info!("shutting down: stopping the node");
    node.consensus.stop().await;
    served.map_err(|source| ServeError::Io { context: "serving the client API".into(), source })
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(extra: &[&str]) -> ServeArgs {
        let mut all = vec!["concord", "--id", "n1", "--listen", "ws://127.0.0.1:0", "--memory"];
        all.extend_from_slice(extra);
        Wrapper::try_parse_from(all).unwrap().serve
    }

    #[test]
    fn flags_override_the_toml_config() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("concord.toml");
        std::fs::write(
            &path,
            "heartbeatInterval = 100\nelectionTimeout = [400, 800]\nmechanism = \"raft\"\n",
        )
        .unwrap();
        let config =
            load_config(&args(&["--config", path.to_str().unwrap(), "--timeout-ms", "1234"])).unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(config.election_timeout.min, Duration::from_millis(400));
        assert_eq!(config.timeout, Duration::from_millis(1234));
        std::fs::write(&path, "heartbeatInterval = 100\nnoSuchField = 1\n").unwrap();
        let error = load_config(&args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(error.to_string().contains("noSuchField"), "{error}");
    }

    #[test]
    fn addresses_and_peers_are_checked() {
        assert_eq!(parse_listen("ws://127.0.0.1:7000").unwrap().0, Scheme::WebSocket);
        assert_eq!(parse_listen("tcp://127.0.0.1:7000").unwrap().0, Scheme::ZeroMq);
        assert!(parse_listen("http://127.0.0.1:7000").is_err());
        assert!(parse_peer("n2=ws://127.0.0.1:1", Scheme::WebSocket).is_ok());
        assert!(parse_peer("n2=tcp://127.0.0.1:1", Scheme::WebSocket).is_err());
        assert!(parse_peer("n2", Scheme::WebSocket).is_err());
    }

    #[test]
    fn secret_comes_from_a_file_without_its_newline() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("secret");
        std::fs::write(&path, "0123456789abcdef-secret\n").unwrap();
        let secret = load_secret(&args(&["--secret-file", path.to_str().unwrap()])).unwrap();
        assert_eq!(secret, b"0123456789abcdef-secret");
    }
}
