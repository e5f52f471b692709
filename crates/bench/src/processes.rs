//! Real `concord serve` processes on 127.0.0.1 for the benchmarks that must cross process
//! boundaries: start them, ask them for their status, and always kill them (a [`ChildGuard`] kills
//! its process when dropped, also when a benchmark fails half-way).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use concord_node::client::HttpClient;

/// How long one status request may take: a live node on loopback answers in well under this.
pub const STATUS_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a started process may take to answer its first status request.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process that is killed (SIGKILL) and reaped when this guard is dropped.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Takes ownership of `child`.
    pub fn new(name: impl Into<String>, child: Child) -> ChildGuard {
        ChildGuard { name: name.into(), child: Some(child) }
    }

    /// The name given at creation (the node id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, while the process is owned.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGKILL (what `kill -9` does) and returns at once, without reaping: the caller
    /// measures from this moment.
    pub fn kill(&mut self) -> std::io::Result<()> {
        match self.child.as_mut() {
            Some(child) => child.kill(),
            None => Ok(()),
        }
    }

    /// Kills (if still running) and reaps the process.
    pub fn kill_and_wait(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, release it). Another process
/// could take it before the node binds it; the node then fails to start and says so.
pub fn free_loopback_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")?.local_addr().map(|address| address.port())
}

/// The `concord` binary: beside this executable (both live in `target/bench-release/`), unless given.
pub fn concord_binary(given: Option<&Path>) -> PathBuf {
    if let Some(path) = given {
        return path.to_owned();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|directory| directory.join("concord")))
        .unwrap_or_else(|| PathBuf::from("target/bench-release/concord"))
}

/// Writes the cluster secret every member reads with `--secret-file`.
pub fn write_secret_file(path: &Path, secret: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, secret)
}

/// How a `concord serve` process keeps its log.
#[derive(Clone, Debug)]
pub enum ServeStorage {
    /// `--memory`.
    Memory,
    /// `--data-dir DIR`.
    Directory(PathBuf),
}

/// The flags of one `concord serve` process.
#[derive(Clone, Debug)]
pub struct ServeSpec {
    /// `--id`.
    pub id: String,
    /// `--listen`, with its scheme (`ws://127.0.0.1:P` or `tcp://127.0.0.1:P`).
    pub listen: String,
    /// `--api` (`127.0.0.1:P`).
    pub api: String,
    /// `--peer ID=ADDRESS` for every other member.
    pub peers: Vec<(String, String)>,
    /// Memory or a data directory.
    pub storage: ServeStorage,
    /// `--secret-file`.
    pub secret_file: PathBuf,
    /// `--election-timeout-ms MIN,MAX`.
    pub election_timeout_ms: (u64, u64),
    /// `--heartbeat-interval-ms`.
    pub heartbeat_interval_ms: u64,
    /// Where the process's stdout and stderr go.
    pub log_file: PathBuf,
}

impl ServeSpec {
    /// The API base URL, `http://127.0.0.1:P`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Starts the process; it is killed when the returned guard is dropped.
    pub fn spawn(&self, binary: &Path) -> Result<ChildGuard, String> {
        let log = std::fs::File::create(&self.log_file)
            .map_err(|error| format!("cannot create {}: {error}", self.log_file.display()))?;
        let log_err = log.try_clone().map_err(|error| format!("cannot share the log file: {error}"))?;
        let mut command = Command::new(binary);
        command.args(["serve", "--id", &self.id, "--listen", &self.listen, "--api", &self.api]);
        command.arg("--secret-file").arg(&self.secret_file);
        match &self.storage {
            ServeStorage::Memory => {
                command.arg("--memory");
            }
            ServeStorage::Directory(directory) => {
                command.arg("--data-dir").arg(directory);
            }
        }
        command
            .arg("--election-timeout-ms")
            .arg(format!("{},{}", self.election_timeout_ms.0, self.election_timeout_ms.1));
        command.arg("--heartbeat-interval-ms").arg(self.heartbeat_interval_ms.to_string());
        for (id, address) in &self.peers {
            command.arg("--peer").arg(format!("{id}={address}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        Ok(ChildGuard::new(self.id.clone(), child))
    }
}

/// What a node's `GET /v1/status` says about leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// `node_id`.
    pub node_id: String,
    /// `role` (`leader`, `follower`, `candidate`, ...).
    pub role: String,
    /// `leader_id`, if the node knows a leader.
    pub leader_id: Option<String>,
    /// `current_term`.
    pub term: u64,
    /// `commit_index`.
    pub commit_index: u64,
}

impl NodeStatus {
    /// Reads the fields from a `/v1/status` body; `None` if a required one is missing.
    pub fn from_json(value: &serde_json::Value) -> Option<NodeStatus> {
        Some(NodeStatus {
            node_id: value.get("node_id")?.as_str()?.to_owned(),
            role: value.get("role")?.as_str()?.to_owned(),
            leader_id: value.get("leader_id").and_then(|leader| leader.as_str()).map(str::to_owned),
            term: value.get("current_term")?.as_u64()?,
            commit_index: value.get("commit_index").and_then(|index| index.as_u64()).unwrap_or(0),
        })
    }

    /// Whether this node says it is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
}

/// One `GET /v1/status`; `None` if the node does not answer (e.g. it was just killed).
pub fn node_status(client: &HttpClient) -> Option<NodeStatus> {
    let response = client.get("/v1/status").ok()?;
    if !response.is_success() {
        return None;
    }
    NodeStatus::from_json(&response.json())
}

/// A status client for `api_url`.
pub fn status_client(api_url: &str) -> Result<HttpClient, String> {
    HttpClient::new(api_url, STATUS_REQUEST_TIMEOUT).map_err(|error| error.to_string())
}

/// Waits (polling every 20 ms, at most `timeout`) until `client` answers a status request.
pub fn wait_until_answering(
    client: &HttpClient,
    guard: &mut ChildGuard,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if node_status(client).is_some() {
            return Ok(());
        }
        if !guard.is_running() {
            return Err(format!("{} exited before answering", guard.name()));
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not answer within {timeout:?}", guard.name()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_is_read() {
        let value = serde_json::json!({
            "node_id": "n2", "role": "follower", "leader_id": "n1", "current_term": 7,
            "commit_index": 42, "mechanism": "raft"
        });
        let status = NodeStatus::from_json(&value).unwrap();
        assert_eq!(status.node_id, "n2");
        assert_eq!(status.leader_id.as_deref(), Some("n1"));
        assert_eq!((status.term, status.commit_index), (7, 42));
        assert!(!status.is_leader());
        let no_leader = serde_json::json!({"node_id": "n3", "role": "candidate", "leader_id": null,
            "current_term": 8});
        let status = NodeStatus::from_json(&no_leader).unwrap();
        assert_eq!(status.leader_id, None);
        assert_eq!(status.commit_index, 0);
        assert_eq!(NodeStatus::from_json(&serde_json::json!({"role": "leader"})), None);
    }

    #[test]
    fn a_guard_kills_its_process_when_dropped() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let mut guard = ChildGuard::new("sleeper", child);
        assert!(guard.is_running());
        drop(guard);
        // Reaped by the guard: no /proc entry (or, at worst, a different process reused the pid).
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(!status.contains("sleep"), "pid {pid} still runs sleep");
    }
}
