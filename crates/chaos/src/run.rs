//! The orchestrator of a chaos run: namespaces, `concord serve` processes, clients inside the
//! namespaces, the seeded nemesis, then healing, convergence and the verdict.
//!
//! Everything it starts is owned by a guard ([`Network`], `Nodes`, `Clients`) whose `Drop`
//! kills or deletes it, so a failure, a panic or Ctrl-C (which only sets a flag the loops poll)
//! leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::checker::{check_events, CheckReport};
use crate::client::{generations, unix_nanos_now, RunClock, PROCESS_STRIDE};
use crate::format::{read_history, EventType, HistoryEvent, JsonLinesWriter, NemesisEvent, NemesisPhase};
use crate::nemesis::{Fault, Nemesis, NemesisTiming};
use crate::netns::{delete_stale_namespaces, run_command, Network};
use crate::summary::{availability, never_written_local_reads, PhaseAvailability};

/// Port of every node's peer transport (each node has its own namespace and address).
pub const PEER_PORT: u16 = 7100;
/// Port of every node's client API.
pub const API_PORT: u16 = 7000;
/// Register keys the clients use.
pub const REGISTER_KEYS: u64 = 5;
/// Counter keys the clients use.
pub const COUNTER_KEYS: u64 = 2;
/// Longest wait for the cluster to elect its first leader.
pub const FIRST_LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait, after healing, for every node to hold the same state.
pub const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Clients move to fresh keys this often (see [`crate::client::ClientOptions::key_period`]).
pub const KEY_PERIOD: Duration = Duration::from_secs(10);
/// Process ids of the clients of node `i` start at `(i + 1) × PROCESS_RANGE`: room for ten thousand
/// retired processes (one per unknown outcome) per node before ranges could meet.
pub const PROCESS_RANGE: u64 = 10_000 * PROCESS_STRIDE;
/// Client processes per node.
pub const PROCESSES_PER_NODE: u64 = 3;
/// Operations per client process, at most (a bound, not a target).
pub const OPERATIONS_PER_PROCESS_MAX: u64 = 100_000;
/// Timeout of one client request; above the node's proposal timeout (2 s), so a request that
/// the node decides is answered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(3_000);

/// The peer transport of the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// WebSocket (`ws://`).
    WebSocket,
    /// ZeroMQ (`tcp://`).
    ZeroMq,
}

impl TransportKind {
    fn scheme(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "ws",
            TransportKind::ZeroMq => "tcp",
        }
    }

    /// `ws` or `zmq`.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "ws",
            TransportKind::ZeroMq => "zmq",
        }
    }
}

/// What a chaos run does.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Cluster size: 3 or 5.
    pub nodes: usize,
    /// Peer transport.
    pub transport: TransportKind,
    /// Client time in all (faults run during the first part, then everything heals).
    pub duration: Duration,
    /// Seed of the nemesis and of the clients.
    pub seed: u64,
    /// Output directory (history, nemesis log, node logs, data directories).
    pub out: PathBuf,
    /// The `concord` binary.
    pub concord: PathBuf,
    /// The `concord-chaos` binary (runs the clients inside the namespaces).
    pub client: PathBuf,
    /// Start the nodes with `--unsafe-ack-before-commit` (a binary built with feature
    /// `unsafe-test-broken`): the run must then find violations.
    pub broken: bool,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct RunReport {
    /// The checker's verdict on `history.jsonl`.
    pub check: CheckReport,
    /// Plain (local) reads that returned a value never written.
    pub never_written_local_reads: usize,
    /// Whether every node ended with the same state.
    pub converged: bool,
    /// What differed, if not.
    pub divergence: Option<String>,
    /// Operations completed `ok` after everything healed.
    pub ok_after_heal: u64,
    /// Faults injected, by name.
    pub faults: BTreeMap<String, u64>,
    /// Availability per phase.
    pub availability: Vec<PhaseAvailability>,
}

impl RunReport {
    /// No violation of any kind.
    pub fn is_valid(&self) -> bool {
        self.check.is_valid()
            && self.never_written_local_reads == 0
            && self.converged
            && self.ok_after_heal > 0
    }
}

/// Whether this process runs as root (namespaces and nftables need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .map(|line| line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Makes sure `ip` and `nft` exist, installing nftables with apt-get if it is missing.
pub fn ensure_tools() -> Result<(), String> {
    run_command("ip", &["-V"], None).map_err(|_| {
        "`ip` (iproute2) is missing: install it with `apt-get install -y iproute2`".to_owned()
    })?;
    if run_command("nft", &["--version"], None).is_ok() {
        return Ok(());
    }
    eprintln!("chaos: nft is missing; running `apt-get install -y nftables`");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "nftables"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if installed && run_command("nft", &["--version"], None).is_ok() {
        Ok(())
    } else {
        Err("nftables is missing and could not be installed: run `apt-get install -y nftables` as root"
            .into())
    }
}

fn node_name(node: usize) -> String {
    format!("n{}", node + 1)
}

fn api_url(node: usize) -> String {
    format!("http://{}:{API_PORT}", Network::address(node))
}

/// The `concord serve` processes; killed on drop.
struct Nodes {
    children: Vec<Option<Child>>,
    paused: Vec<bool>,
    options: RunOptions,
}

impl Nodes {
    fn start(&mut self, network: &Network, node: usize) -> Result<(), String> {
        let options = &self.options;
        let scheme = options.transport.scheme();
        let log_path = options.out.join("nodes").join(format!("{}.log", node_name(node)));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| format!("cannot open {}: {error}", log_path.display()))?;
        let log_err =
            log.try_clone().map_err(|error| format!("cannot open {}: {error}", log_path.display()))?;
        let mut command = network.command_in(node, &options.concord.display().to_string());
        command
            .arg("serve")
            .args(["--id", &node_name(node)])
            .args(["--listen", &format!("{scheme}://{}:{PEER_PORT}", Network::address(node))])
            .args(["--api", &format!("{}:{API_PORT}", Network::address(node))])
            .arg("--data-dir")
            .arg(options.out.join("data").join(node_name(node)))
            .arg("--secret-file")
            .arg(options.out.join("secret"))
            .args(["--heartbeat-interval-ms", "100", "--election-timeout-ms", "500,1000"])
            .args(["--timeout-ms", "2000", "--snapshot-interval", "2000"]);
        for peer in (0..options.nodes).filter(|&peer| peer != node) {
            command.args([
                "--peer",
                &format!("{}={scheme}://{}:{PEER_PORT}", node_name(peer), Network::address(peer)),
            ]);
        }
        if options.broken {
            command.arg("--unsafe-ack-before-commit");
        }
        command.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child =
            command.spawn().map_err(|error| format!("cannot start node {}: {error}", node_name(node)))?;
        self.children[node] = Some(child);
        self.paused[node] = false;
        Ok(())
    }

    fn signal(&self, node: usize, signal: &str) -> Result<(), String> {
        let Some(child) = &self.children[node] else { return Ok(()) };
        run_command("kill", &[signal, &child.id().to_string()], None).map(|_| ())
    }

    fn kill(&mut self, node: usize) -> Result<(), String> {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            child.wait().map_err(|error| format!("waiting for {}: {error}", node_name(node)))?;
        }
        Ok(())
    }

    fn pause(&mut self, node: usize) -> Result<(), String> {
        self.signal(node, "-STOP")?;
        self.paused[node] = true;
        Ok(())
    }

    fn resume(&mut self, node: usize) -> Result<(), String> {
        if self.paused[node] {
            self.signal(node, "-CONT")?;
            self.paused[node] = false;
        }
        Ok(())
    }

    /// Nodes whose process exited on its own (a crash), with the exit status.
    fn exited(&mut self) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for (node, slot) in self.children.iter_mut().enumerate() {
            if let Some(child) = slot {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((node, status.to_string()));
                    *slot = None;
                }
            }
        }
        exited
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            let _ = self.resume(node);
            let _ = self.kill(node);
        }
    }
}

/// Client processes inside the namespaces; killed on drop.
struct Clients {
    children: Vec<Child>,
}

impl Drop for Clients {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `concord-chaos probe` inside `node`'s namespace: its status and (with `values`) every
/// key's local value.
fn probe(network: &Network, options: &RunOptions, node: usize, values: bool) -> Option<Value> {
    let mut command = network.command_in(node, &options.client.display().to_string());
    command.args(["probe", "--node", &api_url(node)]);
    command.args(["--registers", &REGISTER_KEYS.to_string(), "--counters", &COUNTER_KEYS.to_string()]);
    command.args(["--generations", &generations(options.duration, KEY_PERIOD).to_string()]);
    if !values {
        command.arg("--status-only");
    }
    let output = command.stderr(Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// The leader as the highest-term node that says it leads.
fn find_leader(network: &Network, options: &RunOptions, alive: &[bool]) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for node in (0..options.nodes).filter(|&node| alive[node]) {
        let Some(status) = probe(network, options, node, false) else { continue };
        let status = &status["status"];
        if status["role"] == "leader" {
            let term = status["current_term"].as_u64().unwrap_or(0);
            if best.map_or(true, |(best_term, _)| term > best_term) {
                best = Some((term, node));
            }
        }
    }
    best.map(|(_, node)| node)
}

/// Sleeps `duration` in small steps, returning early (false) when `stop` is set.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(deadline - Instant::now()));
    }
    !stop.load(Ordering::Relaxed)
}

/// Runs a whole chaos run. `stop` (set by Ctrl-C) ends it early, still cleaning up; an early end
/// is an error, never a pass.
pub fn run(options: &RunOptions, stop: Arc<AtomicBool>) -> Result<RunReport, String> {
    if !is_root() {
        return Err(
            "cargo xtask chaos needs root (network namespaces and nftables); run it as root, e.g. with sudo"
                .into(),
        );
    }
    assert!(options.nodes >= 3);
    ensure_tools()?;
    for stale in delete_stale_namespaces() {
        eprintln!("chaos: deleted namespace {stale} left by an earlier run");
    }
    for directory in ["nodes", "data", "clients"] {
        std::fs::create_dir_all(options.out.join(directory))
            .map_err(|error| format!("cannot create {}: {error}", options.out.display()))?;
    }
    std::fs::write(
        options.out.join("secret"),
        format!("chaos-secret-{:016x}-{:016x}\n", options.seed, unix_nanos_now()),
    )
    .map_err(|error| format!("cannot write the secret file: {error}"))?;
    let network = Network::create(options.nodes)?;
    eprintln!(
        "chaos: {} nodes over {} in namespaces {}-*, out {}",
        options.nodes,
        options.transport.name(),
        network.bridge_namespace().trim_end_matches("-br"),
        options.out.display()
    );
    let mut nodes = Nodes {
        children: (0..options.nodes).map(|_| None).collect(),
        paused: vec![false; options.nodes],
        options: options.clone(),
    };
    for node in 0..options.nodes {
        nodes.start(&network, node)?;
    }
    let all_alive = vec![true; options.nodes];
    let started = Instant::now();
    let first_leader = loop {
        if let Some(leader) = find_leader(&network, options, &all_alive) {
            break leader;
        }
        if started.elapsed() > FIRST_LEADER_TIMEOUT || stop.load(Ordering::Relaxed) {
            return Err(format!(
                "no leader within {FIRST_LEADER_TIMEOUT:?}; see {}/nodes/*.log",
                options.out.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("chaos: leader {} after {:?}", node_name(first_leader), started.elapsed());

    // Clients: origin of the run's clock is now.
    let origin = unix_nanos_now();
    let clock = RunClock::new(origin);
    let mut clients = Clients { children: Vec::new() };
    for node in 0..options.nodes {
        let mut command = network.command_in(node, &options.client.display().to_string());
        command
            .arg("client")
            .args(["--node", &api_url(node), "--node-name", &node_name(node)])
            .args((1..options.nodes).flat_map(|step| {
                let other = (node + step) % options.nodes;
                ["--fallback".to_owned(), format!("{}={}", node_name(other), api_url(other))]
            }))
            .args(["--processes", &PROCESSES_PER_NODE.to_string()])
            .args(["--first-process", &((node as u64 + 1) * PROCESS_RANGE).to_string()])
            .args(["--registers", &REGISTER_KEYS.to_string(), "--counters", &COUNTER_KEYS.to_string()])
            .args(["--key-period-ms", &KEY_PERIOD.as_millis().to_string()])
            .args(["--origin-unix-ns", &origin.to_string()])
            .args(["--duration-ms", &options.duration.as_millis().to_string()])
            .args(["--operations-max", &OPERATIONS_PER_PROCESS_MAX.to_string()])
            .args(["--timeout-ms", &REQUEST_TIMEOUT.as_millis().to_string()])
            .args(["--seed", &options.seed.wrapping_add(node as u64).to_string()])
            .arg("--history")
            .arg(options.out.join("clients").join(format!("{}.jsonl", node_name(node))))
            .arg("--local-reads")
            .arg(options.out.join("clients").join(format!("{}.local.jsonl", node_name(node))))
            .stdin(Stdio::null());
        clients.children.push(command.spawn().map_err(|error| format!("cannot start clients: {error}"))?);
    }

    // The nemesis, until the tail of the run, which stays healthy.
    let settle = (options.duration / 4).clamp(Duration::from_secs(8), Duration::from_secs(30));
    let fault_window_end = options.duration.saturating_sub(settle);
    let nemesis_file = File::create(options.out.join("nemesis.jsonl"))
        .map_err(|error| format!("cannot create nemesis.jsonl: {error}"))?;
    let mut nemesis_log = JsonLinesWriter::new(BufWriter::new(nemesis_file));
    let mut nemesis = Nemesis::new(options.nodes, options.seed, NemesisTiming::default());
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut crashed: Vec<String> = Vec::new();
    let log_event = |log: &mut JsonLinesWriter<BufWriter<File>>, fault: &Fault, phase| {
        let event = NemesisEvent {
            time: clock.now(),
            fault: fault.name(),
            targets: fault.targets().into_iter().map(node_name).collect(),
            phase,
        };
        let _ = log.write(&event);
        let _ = log.flush();
    };
    if !sleep_unless_stopped(Duration::from_secs(2), &stop) {
        return Err("interrupted".into());
    }
    while Duration::from_nanos(clock.now()) + NemesisTiming::default().fault_max < fault_window_end {
        let alive: Vec<bool> = nodes.children.iter().map(Option::is_some).collect();
        let leader = find_leader(&network, options, &alive);
        let fault = nemesis.next_fault(leader);
        let duration = nemesis.fault_duration();
        eprintln!(
            "chaos: t={:>6.1}s {} on {:?} for {duration:?}",
            clock.now() as f64 / 1e9,
            fault.name(),
            fault.targets().into_iter().map(node_name).collect::<Vec<_>>()
        );
        log_event(&mut nemesis_log, &fault, NemesisPhase::Start);
        *faults.entry(fault.name()).or_default() += 1;
        network.set_cuts(&fault.cuts(options.nodes))?;
        for node in fault.killed() {
            nodes.kill(node)?;
        }
        for node in fault.paused() {
            nodes.pause(node)?;
        }
        let completed = sleep_unless_stopped(duration, &stop);
        network.set_cuts(&[])?;
        for node in fault.paused() {
            nodes.resume(node)?;
        }
        for node in fault.killed() {
            nodes.start(&network, node)?;
        }
        log_event(&mut nemesis_log, &fault, NemesisPhase::Stop);
        for (node, status) in nodes.exited() {
            crashed.push(format!("{} exited on its own ({status})", node_name(node)));
            nodes.start(&network, node)?;
        }
        if !completed {
            return Err("interrupted".into());
        }
        let quiet = nemesis.quiet_duration();
        if !sleep_unless_stopped(quiet, &stop) {
            return Err("interrupted".into());
        }
    }
    let healed_at = clock.now();
    eprintln!(
        "chaos: t={:>6.1}s everything healed; clients go on until {:?}",
        healed_at as f64 / 1e9,
        options.duration
    );

    // Wait for the clients (bounded: their own deadline plus a request timeout and slack).
    let client_deadline = Instant::now()
        + options.duration.saturating_sub(Duration::from_nanos(clock.now()))
        + REQUEST_TIMEOUT
        + Duration::from_secs(10);
    for child in &mut clients.children {
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < client_deadline && !stop.load(Ordering::Relaxed) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
    if stop.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    for (node, status) in nodes.exited() {
        crashed.push(format!("{} exited on its own ({status})", node_name(node)));
    }

    // Final consistent reads of every register (the lost-write check's reference), from node 1.
    let final_reads = options.out.join("clients").join("final.jsonl");
    let status = network
        .command_in(0, &options.client.display().to_string())
        .args(["final-reads", "--node", &api_url(0), "--node-name", &node_name(0)])
        .args(["--registers", &REGISTER_KEYS.to_string(), "--origin-unix-ns", &origin.to_string()])
        .args(["--generations", &generations(options.duration, KEY_PERIOD).to_string()])
        .args(["--first-process", &(99 * PROCESS_RANGE).to_string()])
        .arg("--history")
        .arg(&final_reads)
        .status()
        .map_err(|error| format!("cannot run the final reads: {error}"))?;
    if !status.success() {
        eprintln!("chaos: final reads did not all succeed ({status})");
    }

    // Convergence: same applied index and same values everywhere.
    let (converged, divergence) = wait_for_convergence(&network, options, &stop);

    // Merge the client histories by time into history.jsonl, then check.
    let mut events = Vec::new();
    let mut local_reads = Vec::new();
    for node in 0..options.nodes {
        let name = node_name(node);
        events.extend(read_events(&options.out.join("clients").join(format!("{name}.jsonl")))?);
        local_reads.extend(read_events(&options.out.join("clients").join(format!("{name}.local.jsonl")))?);
    }
    events.extend(read_events(&final_reads)?);
    events.sort_by_key(|event| event.time);
    local_reads.sort_by_key(|event| event.time);
    write_events(&options.out.join("history.jsonl"), &events)?;
    write_events(&options.out.join("local-reads.jsonl"), &local_reads)?;
    let check = check_events(&events).map_err(|error| format!("history.jsonl is malformed: {error}"))?;
    let never_written = never_written_local_reads(&events, &local_reads);
    let nemesis_events = crate::format::read_nemesis(BufReader::new(
        File::open(options.out.join("nemesis.jsonl")).map_err(|error| format!("nemesis.jsonl: {error}"))?,
    ))
    .map_err(|error| format!("nemesis.jsonl: {error}"))?;
    let availability = availability(&events, &nemesis_events, healed_at);
    let ok_after_heal = events
        .iter()
        .filter(|event| event.event_type == EventType::Ok && event.time > healed_at + 2_000_000_000)
        .count() as u64;
    let mut divergence = divergence;
    if !crashed.is_empty() {
        divergence = Some(format!("{}; {}", divergence.unwrap_or_default(), crashed.join("; ")));
    }
    Ok(RunReport {
        check,
        never_written_local_reads: never_written,
        converged: converged && crashed.is_empty(),
        divergence,
        ok_after_heal,
        faults,
        availability,
    })
}

fn read_events(path: &Path) -> Result<Vec<HistoryEvent>, String> {
    match File::open(path) {
        Ok(file) => {
            read_history(BufReader::new(file)).map_err(|error| format!("{}: {error}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

fn write_events(path: &Path, events: &[HistoryEvent]) -> Result<(), String> {
    let file = File::create(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut writer = JsonLinesWriter::new(BufWriter::new(file));
    for event in events {
        writer.write(event).map_err(|error| format!("{}: {error}", path.display()))?;
    }
    writer.flush().map_err(|error| format!("{}: {error}", path.display()))
}

fn wait_for_convergence(
    network: &Network,
    options: &RunOptions,
    stop: &AtomicBool,
) -> (bool, Option<String>) {
    let started = Instant::now();
    let mut last_difference = String::from("no node answered");
    while started.elapsed() < CONVERGENCE_TIMEOUT && !stop.load(Ordering::Relaxed) {
        let probes: Vec<Option<Value>> =
            (0..options.nodes).map(|node| probe(network, options, node, true)).collect();
        match compare_states(&probes) {
            Ok(()) => return (true, None),
            Err(difference) => last_difference = difference,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    (false, Some(format!("nodes did not converge within {CONVERGENCE_TIMEOUT:?}: {last_difference}")))
}

/// Ok if every node answered, all applied everything committed, and all hold the same values.
pub fn compare_states(probes: &[Option<Value>]) -> Result<(), String> {
    let mut reference: Option<(usize, &Value, u64)> = None;
    for (node, probe) in probes.iter().enumerate() {
        let Some(probe) = probe else { return Err(format!("{} did not answer", node_name(node))) };
        let applied = probe["status"]["last_applied"].as_u64().unwrap_or(0);
        let committed = probe["status"]["commit_index"].as_u64().unwrap_or(0);
        if applied != committed {
            return Err(format!("{} applied {applied} of {committed}", node_name(node)));
        }
        match reference {
            None => reference = Some((node, &probe["values"], applied)),
            Some((first, values, first_applied)) => {
                if applied != first_applied {
                    return Err(format!(
                        "{} applied {first_applied}, {} applied {applied}",
                        node_name(first),
                        node_name(node)
                    ));
                }
                if *values != probe["values"] {
                    return Err(format!(
                        "{} holds {values}, {} holds {}",
                        node_name(first),
                        node_name(node),
                        probe["values"]
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The summary printed at the end and written to `summary.json`.
pub fn summary_json(options: &RunOptions, report: &RunReport) -> Value {
    let summary = &report.check.summary;
    json!({
        "valid": report.is_valid(),
        "nodes": options.nodes,
        "transport": options.transport.name(),
        "duration_seconds": options.duration.as_secs_f64(),
        "seed": options.seed,
        "broken": options.broken,
        "operations": summary.operations,
        "by_function": summary.by_function.iter().map(|(f, counts)| (f.as_str().to_owned(), json!({
            "ok": counts.ok, "fail": counts.fail, "info": counts.info,
        }))).collect::<serde_json::Map<String, Value>>(),
        "faults": report.faults,
        "violations": report.check.violation_counts.iter().map(|(kind, count)| (kind.as_str().to_owned(), json!(count))).collect::<serde_json::Map<String, Value>>(),
        "never_written_local_reads": report.never_written_local_reads,
        "converged": report.converged,
        "divergence": report.divergence,
        "ok_after_heal": report.ok_after_heal,
        "availability": report.availability.iter().map(|phase| json!({
            "phase": phase.phase, "ok": phase.ok, "fail": phase.fail, "info": phase.info,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(applied: u64, committed: u64, values: Value) -> Option<Value> {
        Some(json!({ "status": { "last_applied": applied, "commit_index": committed }, "values": values }))
    }

    #[test]
    fn states_compare_equal_only_when_applied_and_identical() {
        let a = json!({ "k0": 1, "c0": 4 });
        assert!(
            compare_states(&[probe(9, 9, a.clone()), probe(9, 9, a.clone()), probe(9, 9, a.clone())]).is_ok()
        );
        assert!(compare_states(&[probe(9, 9, a.clone()), probe(8, 9, a.clone())]).is_err());
        assert!(compare_states(&[probe(9, 9, a.clone()), probe(10, 10, a.clone())]).is_err());
        assert!(compare_states(&[probe(9, 9, a.clone()), probe(9, 9, json!({ "k0": 2, "c0": 4 }))]).is_err());
        assert!(compare_states(&[probe(9, 9, a), None]).is_err());
    }
}
