//! Real `concord serve` processes on 127.0.0.1 for end-to-end tests: every process is killed when
//! its guard drops, and every wait has a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concord_node::client::{HttpClient, Response};
use serde_json::Value;

pub const SECRET: &str = "end-to-end-test-cluster-secret";
/// How long a node may take to print its addresses.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cluster may take to elect a leader or converge.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(40);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Picks a free loopback port for a node to listen on (the peer addresses must be known before
/// the nodes start). Not from the kernel's ephemeral range: a port taken there and released could
/// be handed to another test's outgoing connection before the node binds it ("address already in
/// use"). Below that range only listeners take ports: each candidate is checked by binding it, and
/// a counter (starting at a per-process offset) never offers the same port twice in a process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000; // 20000–31999, below Linux's default ephemeral range (32768–60999)
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}–{}", FIRST + COUNT - 1);
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `concord serve` process; killed (SIGKILL) and reaped on drop.
pub struct Node {
    pub id: String,
    pub peer: String,
    pub api: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    secret: String,
    log: PathBuf,
}

impl Node {
    /// Starts `concord serve` with `args` and reads the line with its bound addresses.
    pub fn start(id: &str, args: Vec<String>, secret: &str, data_dir: &Path, log: &Path) -> Node {
        let mut node = Node {
            id: id.to_owned(),
            peer: String::new(),
            api: String::new(),
            data_dir: data_dir.to_owned(),
            child: None,
            args,
            secret: secret.to_owned(),
            log: log.to_owned(),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_concord"));
        // An empty secret means "none in the environment" (the test passes --secret-file).
        if self.secret.is_empty() {
            command.env_remove("CONCORD_SECRET");
        } else {
            command.env("CONCORD_SECRET", &self.secret);
        }
        let mut child = command
            .arg("serve")
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child);
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout so the node never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("concord: node ") {
                    let _ = sender.send(line);
                }
            }
        });
        let line = receiver.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
            panic!("node {} printed no address line; log:\n{}", self.id, self.log_text())
        });
        for field in line.split(' ') {
            if let Some(peer) = field.strip_prefix("peer=") {
                self.peer = peer.to_owned();
            } else if let Some(api) = field.strip_prefix("api=") {
                self.api = api.to_owned();
            }
        }
        assert!(!self.api.is_empty() && !self.peer.is_empty(), "bad address line {line:?}");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same arguments (same data directory and peer port).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = wait_until(timeout, "the node to exit", || child.try_wait().unwrap());
        self.child = None;
        status
    }

    pub fn client(&self) -> HttpClient {
        HttpClient::new(&self.api, REQUEST_TIMEOUT).unwrap()
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        self.client().request(method, path, body.map(str::as_bytes)).unwrap()
    }

    /// `GET path` as JSON, or `None` if the node does not answer.
    pub fn try_get(&self, path: &str) -> Option<(u16, Value)> {
        let response = self.client().get(path).ok()?;
        Some((response.status, response.json()))
    }

    pub fn status(&self) -> Value {
        self.try_get("/v1/status").map(|(_, body)| body).unwrap_or(Value::Null)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nodes started together with fast timers.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub directory: tempfile::TempDir,
}

/// Fast timers for tests on a busy 2-core machine.
pub fn timer_args() -> Vec<String> {
    ["--heartbeat-interval-ms", "50", "--election-timeout-ms", "300,600", "--timeout-ms", "3000"]
        .map(String::from)
        .to_vec()
}

impl Cluster {
    /// Starts `count` nodes `n1…` with peer addresses `scheme://127.0.0.1:PORT` and durable storage;
    /// `secrets[i]` is node i's cluster secret.
    pub fn start(scheme: &str, secrets: &[&str], extra: &[&str]) -> Cluster {
        let directory = tempfile::tempdir().unwrap();
        let peers: Vec<(String, String)> = (1..=secrets.len())
            .map(|i| (format!("n{i}"), format!("{scheme}://127.0.0.1:{}", free_port())))
            .collect();
        let mut nodes = Vec::new();
        for (index, (id, address)) in peers.iter().enumerate() {
            let data_dir = directory.path().join(id);
            let mut args = vec!["--id".into(), id.clone(), "--listen".into(), address.clone()];
            args.extend(["--api".into(), "127.0.0.1:0".into(), "--data-dir".into()]);
            args.push(data_dir.to_str().unwrap().to_owned());
            for (other, other_address) in &peers {
                if other != id {
                    args.extend(["--peer".into(), format!("{other}={other_address}")]);
                }
            }
            args.extend(timer_args());
            args.extend(extra.iter().map(|arg| arg.to_string()));
            let log = directory.path().join(format!("{id}.log"));
            nodes.push(Node::start(id, args, secrets[index], &data_dir, &log));
        }
        Cluster { nodes, directory }
    }

    pub fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|node| node.id == id).unwrap()
    }

    /// Waits until every node in `among` that answers agrees on one leader, itself in `among`.
    pub fn wait_for_leader(&self, among: &[&str]) -> String {
        wait_until(CONVERGE_TIMEOUT, "a leader all live nodes agree on", || {
            let mut leader = None;
            for id in among {
                let status = self.node(id).status();
                let seen = status["leader_id"].as_str()?.to_owned();
                if leader.get_or_insert_with(|| seen.clone()) != &seen {
                    return None;
                }
            }
            let leader = leader?;
            (among.contains(&leader.as_str())
                && self.node(&leader).status()["role"].as_str() == Some("leader"))
            .then_some(leader)
        })
    }

    pub fn logs(&self) -> String {
        self.nodes.iter().map(|node| format!("--- {} ---\n{}", node.id, node.log_text())).collect()
    }
}

/// Writes `PUT /v1/kv/{key}` through `node`, retrying transient errors until `timeout`.
pub fn put_eventually(node: &Node, key: &str, value: &str, timeout: Duration) -> Value {
    wait_until(timeout, &format!("PUT {key} through {} to succeed", node.id), || {
        let response = node.client().request("PUT", &format!("/v1/kv/{key}"), Some(value.as_bytes())).ok()?;
        response.is_success().then(|| response.json())
    })
}

/// Any child process, killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
