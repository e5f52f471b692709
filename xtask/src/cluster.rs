//! `cargo xtask cluster up|status|down`: a local cluster of real `concord serve` processes on
//! 127.0.0.1, for trying the node and the CLI by hand.
//!
//! State lives in `target/cluster/`: `nodes` (one line per node: id, pid, api address, peer
//! address), the cluster secret, each node's data directory and log.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cargo, flag_value};

const DIRECTORY: &str = "target/cluster";
const BINARY: &str = "target/release/concord";
/// How long `up` waits for every node to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("status") => status(),
        Some("down") => down(),
        _ => {
            eprintln!("usage: cargo xtask cluster up [-n 3|5] [--transport ws|zmq] [--storage file|memory] | status | down");
            2
        }
    }
}

struct NodeRecord {
    id: String,
    pid: u32,
    api: String,
    peer: String,
}

fn state_file() -> PathBuf {
    Path::new(DIRECTORY).join("nodes")
}

fn read_state() -> Vec<NodeRecord> {
    let Ok(text) = std::fs::read_to_string(state_file()) else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some(NodeRecord {
                id: fields.next()?.to_owned(),
                pid: fields.next()?.parse().ok()?,
                api: fields.next()?.to_owned(),
                peer: fields.next()?.to_owned(),
            })
        })
        .collect()
}

fn free_port() -> Result<u16, String> {
    // Bind port 0 to let the OS pick, then release it for the node: fine on loopback for a
    // hand-run cluster (a race with another process taking it is reported by the node).
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("cannot find a free port: {error}"))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn up(args: &[String]) -> i32 {
    let count: usize = match flag_value(args, "-n").unwrap_or("3").parse() {
        Ok(count @ (1..=9)) => count,
        _ => {
            eprintln!("xtask cluster up: -n takes a node count from 1 to 9");
            return 2;
        }
    };
    let scheme = match flag_value(args, "--transport").unwrap_or("ws") {
        "ws" => "ws",
        "zmq" | "tcp" => "tcp",
        other => {
            eprintln!("xtask cluster up: unknown transport {other:?} (ws or zmq)");
            return 2;
        }
    };
    let file_storage = match flag_value(args, "--storage").unwrap_or("file") {
        "file" => true,
        "memory" => false,
        other => {
            eprintln!("xtask cluster up: unknown storage {other:?} (file or memory)");
            return 2;
        }
    };
    if read_state().iter().any(|node| alive(node.pid)) {
        eprintln!("xtask cluster up: a cluster is already running; `cargo xtask cluster down` first");
        return 1;
    }
    let status = cargo(&["build", "--release", "-p", "concord-node", "--bin", "concord"], &[]);
    if status != 0 {
        return status;
    }
    if let Err(error) = start(count, scheme, file_storage) {
        eprintln!("xtask cluster up: {error}");
        stop_all(&read_state());
        return 1;
    }
    status_report();
    0
}

fn start(count: usize, scheme: &str, file_storage: bool) -> Result<(), String> {
    let directory = Path::new(DIRECTORY);
    std::fs::create_dir_all(directory).map_err(|e| format!("cannot create {DIRECTORY}: {e}"))?;
    let secret_path = directory.join("secret");
    let mut secret = String::new();
    let mut bytes = [0u8; 32];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut file| file.read_exact(&mut bytes))
            .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    }
    for byte in bytes {
        let _ = write!(secret, "{byte:02x}");
    }
    std::fs::write(&secret_path, &secret).map_err(|e| format!("cannot write the secret: {e}"))?;
    let ids: Vec<String> = (1..=count).map(|i| format!("n{i}")).collect();
    let mut peers = Vec::new();
    let mut apis = Vec::new();
    for _ in &ids {
        peers.push(format!("{scheme}://127.0.0.1:{}", free_port()?));
        apis.push(format!("127.0.0.1:{}", free_port()?));
    }
    let mut state = String::new();
    for (index, id) in ids.iter().enumerate() {
        let log = std::fs::File::create(directory.join(format!("{id}.log")))
            .map_err(|e| format!("cannot create the log of {id}: {e}"))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(BINARY);
        command.args(["serve", "--id", id, "--listen", &peers[index], "--api", &apis[index]]);
        command.arg("--secret-file").arg(&secret_path);
        if file_storage {
            command.arg("--data-dir").arg(directory.join(id));
        } else {
            command.arg("--memory");
        }
        for (other, peer) in ids.iter().zip(&peers) {
            if other != id {
                command.args(["--peer", &format!("{other}={peer}")]);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {BINARY}: {e}"))?;
        let _ = writeln!(state, "{id} {} http://{} {}", child.id(), apis[index], peers[index]);
        std::fs::write(state_file(), &state).map_err(|e| format!("cannot write the state: {e}"))?;
    }
    // Wait until every node printed its listening line (or died).
    let deadline = Instant::now() + START_TIMEOUT;
    for node in read_state() {
        let log_path = directory.join(format!("{}.log", node.id));
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("concord: node") {
                break;
            }
            if !alive(node.pid) {
                return Err(format!("{} exited; see {}", node.id, log_path.display()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not start within {START_TIMEOUT:?}; see {}",
                    node.id,
                    log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn status_report() {
    let nodes = read_state();
    if nodes.is_empty() {
        println!("no cluster (start one with `cargo xtask cluster up`)");
        return;
    }
    for node in &nodes {
        println!(
            "{}  {}  api {}  peer {}  log {DIRECTORY}/{}.log",
            node.id,
            if alive(node.pid) { format!("running (pid {})", node.pid) } else { "stopped".to_owned() },
            node.api,
            node.peer,
            node.id
        );
    }
    if let Some(first) = nodes.iter().find(|n| alive(n.pid)) {
        println!("\ntry:\n  {BINARY} status --node {}\n  {BINARY} kv put greeting '\"hello\"' --node {}\n  {BINARY} kv get greeting --consistent --node {}",
            first.api, first.api, nodes.last().map_or(&first.api, |n| &n.api));
    }
}

fn status() -> i32 {
    status_report();
    for node in read_state().iter().filter(|n| alive(n.pid)) {
        let _ = Command::new(BINARY).args(["status", "--node", &node.api]).status();
    }
    0
}

fn stop_all(nodes: &[NodeRecord]) {
    for node in nodes.iter().filter(|n| alive(n.pid)) {
        let _ = Command::new("kill").args(["-TERM", &node.pid.to_string()]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes.iter().any(|n| alive(n.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for node in nodes.iter().filter(|n| alive(n.pid)) {
        let _ = Command::new("kill").args(["-KILL", &node.pid.to_string()]).status();
    }
}

fn down() -> i32 {
    let nodes = read_state();
    stop_all(&nodes);
    let _ = std::fs::remove_file(state_file());
    println!("stopped {} node(s); data stays in {DIRECTORY}/", nodes.len());
    0
}
