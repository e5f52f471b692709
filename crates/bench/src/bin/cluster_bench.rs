//! The openraft-comparable cluster benchmark.
//!
//! `cargo run --profile bench-release -p concord-bench --bin cluster-bench -- -c 256 -n 1000000 -m 3`
//! prints one line per run:
//! `clients: C, n: N, members: M, batch: B: time: T, ns/op: X, op/ms: Y`.
//!
//! `--mechanism none` runs the same clients against no consensus at all (see [`ImmediateAnswers`]):
//! the most any library whose API is one awaited call per write can do on this machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use concord_bench::NoopStateMachine;
use concord_core::prelude::*;
use concord_runtime::{Consensus, MemoryNetwork};

/// concord cluster benchmark (same shape as openraft's benchmarks/minimal)
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Concurrent clients, each writing sequentially.
    #[arg(short = 'c', long, default_value_t = 256)]
    clients: u64,
    /// Writes in all.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    writes: u64,
    /// Cluster members.
    #[arg(short = 'm', long, default_value_t = 3)]
    members: usize,
    /// Writes each client keeps in flight per round (1: strictly sequential).
    #[arg(short = 'b', long, default_value_t = 1)]
    batch: u64,
    /// `raft`, `simple_majority`, or `none`: no cluster, every write answered at once by one task
    /// (the ceiling of this benchmark's shape on this machine).
    #[arg(long, default_value = "raft")]
    mechanism: String,
    /// Tokio worker threads (default: one per core).
    #[arg(short = 'w', long)]
    workers: Option<usize>,
    /// Run everything on tokio's current-thread runtime (one thread, no work stealing) instead of the
    /// multi-thread one.
    #[arg(long, conflicts_with = "workers")]
    current_thread: bool,
    /// Durable file storage under this directory (one subdirectory per node) instead of memory:
    /// measures group commit. The directory must not hold an older cluster.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// `memory` (in-process channels), or real loopback sockets: `ws` (WebSocket) or `zmq` (ZeroMQ).
    /// All nodes still run in this one process.
    #[arg(long, default_value = "memory")]
    transport: String,
    /// Take a snapshot every this many entries (0: never). Set it on long runs so memory stays flat.
    #[arg(long, default_value_t = 0)]
    snapshot_interval: u64,
    /// Sample resident memory (VmRSS) every this many completed writes (0: never) and print the
    /// series on an `rss:` line, to show that memory stays flat on long runs.
    #[arg(long, default_value_t = 0)]
    rss_every: u64,
}

fn main() {
    let args = Args::parse();
    let mut builder = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(workers) = args.workers {
        builder.worker_threads(workers.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start tokio: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(run(args)) {
        eprintln!("cluster-bench: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mechanism = match args.mechanism.as_str() {
        "raft" => Some(MechanismKind::Raft),
        "simple_majority" | "majority" => Some(MechanismKind::SimpleMajority),
        "none" => None,
        other => return Err(format!("unknown mechanism {other:?} (raft, simple_majority or none)")),
    };
    if args.clients == 0 || args.writes == 0 || args.members == 0 || args.batch == 0 {
        return Err("-c, -n, -m and -b must be at least 1".into());
    }
    if mechanism.is_none()
        && (args.transport != "memory" || args.data_dir.is_some() || args.snapshot_interval > 0)
    {
        return Err(
            "--mechanism none runs no cluster: --transport, --data-dir and --snapshot-interval do not apply"
                .into(),
        );
    }
    let (target, nodes) = match mechanism {
        Some(mechanism) => start_cluster(&args, mechanism).await?,
        None => (Target::Ceiling(ImmediateAnswers::start()), Vec::new()),
    };
    // The ceiling's clients send the command the Raft runs send (`make_command`).
    let mechanism = mechanism.unwrap_or(MechanismKind::Raft);
    let per_client = args.writes / args.clients;
    let total = per_client * args.clients;
    let started = Instant::now();
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Counted only when memory is sampled: one counter that every client bumps on every write
    // moves between the cores' caches, a cost openraft's benchmark does not have.
    let completed = (args.rss_every > 0).then(|| Arc::new(std::sync::atomic::AtomicU64::new(0)));
    let sampler =
        completed.clone().map(|completed| tokio::spawn(sample_resident(completed, args.rss_every, total)));
    // Per-operation latencies, sampled (every 16th operation) to keep memory bounded.
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::with_capacity((total / 16 + 1) as usize)));
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let node = target.clone();
        let failures = failures.clone();
        let latencies = latencies.clone();
        let completed = completed.clone();
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let key = format!("client-{client}");
            let mut done = 0;
            while done < per_client {
                let round = batch.min(per_client - done);
                if round == 1 {
                    // One write at a time, as openraft's client loop does: awaited in place,
                    // without the join's buffers. The clock is read only for the sampled writes
                    // (a clock read costs about as much as a tenth of a write here).
                    let round_started = (done % 16 == 0).then(Instant::now);
                    if !node.write(make_command(mechanism, &key)).await {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let Some(started) = round_started {
                        if let Ok(mut samples) = latencies.lock() {
                            samples.push(started.elapsed().as_nanos() as u64);
                        }
                    }
                    done += 1;
                    if let Some(completed) = &completed {
                        completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    continue;
                }
                let mut pending = Vec::with_capacity(round as usize);
                for _ in 0..round {
                    pending.push(node.write(make_command(mechanism, &key)));
                }
                let round_started = (done % 16 == 0).then(Instant::now);
                for accepted in futures_util::future::join_all(pending).await {
                    if !accepted {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if let Some(started) = round_started {
                    if let Ok(mut samples) = latencies.lock() {
                        samples.push(started.elapsed().as_nanos() as u64);
                    }
                }
                done += round;
                if let Some(completed) = &completed {
                    completed.fetch_add(round, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed();
    if let Some(sampler) = sampler {
        let series = sampler.await.map_err(|e| e.to_string())?;
        let points: Vec<String> =
            series.iter().map(|(writes, kibibytes)| format!("{writes}={}", kibibytes / 1024)).collect();
        println!("rss: MiB after writes: {}", points.join(" "));
    }
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "clients: {}, n: {}, members: {}, batch: {}: time: {:?}, ns/op: {}, op/ms: {}",
        args.clients,
        total,
        nodes.len(),
        args.batch,
        elapsed,
        elapsed.as_nanos() / u128::from(total.max(1)),
        total as u128 * 1_000_000 / elapsed.as_nanos().max(1)
    );
    let mut samples = latencies.lock().map(|samples| samples.clone()).unwrap_or_default();
    samples.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1] as f64 / 1000.0
    };
    println!(
        "latency: p50 {:.1} µs, p99 {:.1} µs (per round of {} writes); peak resident memory {} MiB; transport {}",
        percentile(0.50),
        percentile(0.99),
        args.batch,
        peak_resident_mebibytes().map_or("?".to_owned(), |m| m.to_string()),
        args.transport
    );
    if failed > 0 {
        eprintln!("{failed} writes failed");
    }
    for node in &nodes {
        node.stop().await;
    }
    if let Target::Ceiling(answers) = &target {
        answers.stop();
    }
    if failed > 0 {
        return Err(format!("{failed} of {total} writes failed"));
    }
    Ok(())
}

/// Samples this process's resident memory each time another `every` writes have completed (checked
/// every millisecond), until `total` writes are done: at most `total / every + 1` samples.
async fn sample_resident(
    completed: Arc<std::sync::atomic::AtomicU64>,
    every: u64,
    total: u64,
) -> Vec<(u64, u64)> {
    let mut series = Vec::new();
    if let Some(kibibytes) = concord_bench::stats::resident_kibibytes() {
        series.push((0, kibibytes));
    }
    // Marks every `every` writes, and the last write when `total` is not a multiple of `every`.
    let mut next_mark = every.min(total);
    // Bounded: give up if the writes stop making progress (the run then fails on its own).
    let mut last_progress = Instant::now();
    while last_progress.elapsed() < Duration::from_secs(60) {
        let done = completed.load(std::sync::atomic::Ordering::Relaxed);
        if done >= next_mark {
            last_progress = Instant::now();
            if let Some(kibibytes) = concord_bench::stats::resident_kibibytes() {
                series.push((next_mark, kibibytes));
            }
            if next_mark == total {
                break;
            }
            next_mark = (next_mark + every).min(total);
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    series
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_resident_mebibytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kibibytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kibibytes / 1024)
}

/// Awaits every future, in order (a tiny join_all without another dependency).
/// One benchmark write: an empty custom command for Raft (openraft's benchmark applies nothing
/// either), an empty put for simple majority (which decides per key).
fn make_command(mechanism: MechanismKind, key: &str) -> Command {
    match mechanism {
        MechanismKind::Raft => Command::Custom(Bytes::new()),
        _ => Command::Put { key: key.to_owned(), value: Bytes::new() },
    }
}

/// What the clients write to.
#[derive(Clone)]
enum Target {
    /// A cluster member: the leader for Raft, the first member for simple majority.
    Node(Consensus),
    /// No consensus at all.
    Ceiling(Arc<ImmediateAnswers>),
}

impl Target {
    /// One write; whether it was accepted.
    async fn write(&self, command: Command) -> bool {
        match self {
            Target::Node(node) => node.propose_command(command).await.accepted,
            Target::Ceiling(answers) => answers.write(command).await.accepted,
        }
    }
}

/// The ceiling of this benchmark's shape: each write takes the path a write to a node takes
/// outside consensus (the command moved to another task through a locked inbox, one wake-up of
/// that task per batch, the answer, a [`ProposalResult`], through a oneshot channel per write), and
/// nothing else: the task answers every write as soon as it takes it. No library whose API is one
/// awaited call per write can go faster on this machine; the table in BENCHMARKS.md sets the
/// cluster's figures and the goals against it.
struct ImmediateAnswers {
    inbox: parking_lot::Mutex<Vec<(Command, tokio::sync::oneshot::Sender<ProposalResult>)>>,
    wake: tokio::sync::Notify,
    origin: NodeId,
    next_sequence: std::sync::atomic::AtomicU64,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ImmediateAnswers {
    fn start() -> Arc<ImmediateAnswers> {
        let answers = Arc::new(ImmediateAnswers {
            inbox: parking_lot::Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            origin: NodeId::new("n1"),
            next_sequence: std::sync::atomic::AtomicU64::new(1),
            task: parking_lot::Mutex::new(None),
        });
        let task = tokio::spawn(answers.clone().answer_forever());
        *answers.task.lock() = Some(task);
        answers
    }

    async fn answer_forever(self: Arc<Self>) {
        let mut batch = Vec::new();
        loop {
            self.wake.notified().await;
            loop {
                std::mem::swap(&mut *self.inbox.lock(), &mut batch);
                if batch.is_empty() {
                    break;
                }
                for (command, sender) in batch.drain(..) {
                    drop(command);
                    let sequence = self.next_sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = sender.send(ProposalResult {
                        proposal_id: ProposalId { origin: self.origin.clone(), sequence },
                        accepted: true,
                        key: String::new(),
                        value: None,
                        votes: Votes { in_favor: 1, against: 0, total: 1 },
                        quorum_required: 1,
                        error: None,
                        output: Some(CommandOutput::default()),
                        index: Some(LogIndex(sequence)),
                        advisory: false,
                    });
                }
            }
        }
    }

    async fn write(&self, command: Command) -> ProposalResult {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let first = {
            let mut inbox = self.inbox.lock();
            inbox.push((command, sender));
            inbox.len() == 1
        };
        if first {
            self.wake.notify_one();
        }
        match receiver.await {
            Ok(result) => result,
            // The answering task stopped: counted as a failed write, as a stopped node's would be.
            Err(_) => ProposalResult::failed(
                ProposalId { origin: self.origin.clone(), sequence: 0 },
                "",
                ProposalError::Stopped,
            ),
        }
    }

    fn stop(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

/// Starts the cluster and returns the node the clients write to (the leader for Raft) and every
/// node.
async fn start_cluster(args: &Args, mechanism: MechanismKind) -> Result<(Target, Vec<Consensus>), String> {
    let mut config = Config::for_mechanism(mechanism);
    config.timeout = Duration::from_secs(30);
    config.snapshot_interval = args.snapshot_interval;
    config.max_pending_proposals = 1_000_000;
    let network = MemoryNetwork::new();
    let ids: Vec<String> = (1..=args.members).map(|i| format!("n{i}")).collect();
    let secret = b"cluster-bench-secret-0123456789";
    let cluster = ClusterId(1);
    // Bind every transport first (OS-chosen loopback ports), then tell each node the addresses.
    let mut transports: Vec<Arc<dyn Transport>> = Vec::new();
    let mut members: Vec<NodeInfo> = Vec::new();
    for id in &ids {
        let (transport, address): (Arc<dyn Transport>, String) = match args.transport.as_str() {
            "memory" => (network.transport(id.as_str()), String::new()),
            "ws" => {
                let transport = concord_transport_ws::WsTransport::bind(
                    concord_transport_ws::WsOptions::new(id.as_str(), cluster, secret),
                )
                .await
                .map_err(|e| e.to_string())?;
                let address = format!("ws://{}", transport.local_addr());
                (transport, address)
            }
            "zmq" => {
                let transport = concord_transport_zmq::ZmqTransport::bind(
                    concord_transport_zmq::ZmqOptions::new(id.as_str(), cluster, secret),
                )
                .await
                .map_err(|e| e.to_string())?;
                let address = format!("tcp://{}", transport.local_addr());
                (transport, address)
            }
            other => return Err(format!("unknown transport {other:?} (memory, ws or zmq)")),
        };
        transports.push(transport);
        members.push(NodeInfo::new(id.as_str(), address));
    }
    let mut nodes = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let mut builder = Consensus::builder(id.as_str())
            .config(config.clone())
            .cluster_id(cluster)
            .members(members.clone())
            .transport(transports[index].clone())
            .seed(index as u64);
        if mechanism == MechanismKind::Raft {
            builder = builder.state_machine(Box::new(NoopStateMachine));
        }
        if let Some(directory) = &args.data_dir {
            builder = builder.data_dir(directory.join(id));
        }
        nodes.push(builder.start().await.map_err(|e| e.to_string())?);
    }
    let leader = if mechanism == MechanismKind::Raft {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(leader) = nodes.iter().find(|n| n.is_leader()) {
                break leader.clone();
            }
            if Instant::now() > deadline {
                return Err("no leader within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    } else {
        nodes[0].clone()
    };
    Ok((Target::Node(leader), nodes))
}
