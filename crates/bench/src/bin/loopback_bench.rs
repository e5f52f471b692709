//! Real processes on loopback: throughput and latency when every consensus message crosses a
//! process boundary, beside the transport's own round trip and the raw fsync time of the same run.
//!
//! Member `n1` runs in this process and is made the leader (a short election timeout; the others
//! wait far longer before campaigning); `n2`, `n3`, ... are `concord serve` child processes on
//! 127.0.0.1. Clients call the public async API (`Consensus::propose_bytes`) on `n1`, each writing
//! its own key sequentially. The round trip is a ping-pong of 16-byte frames over the same
//! transport crate between this process and a child copy of this binary (`--pong-listen`).
//!
//! `cargo run --profile bench-release -p concord-bench --bin loopback-bench -- --transport ws --storage memory`
//! prints a markdown section and writes it to `DIR/loopback-TRANSPORT-STORAGE.md`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use concord_bench::processes::{
    concord_binary, free_loopback_port, status_client, wait_until_answering, write_secret_file, ChildGuard,
    ServeSpec, ServeStorage, START_TIMEOUT,
};
use concord_bench::stats::{micros, parse_counts, DurationSummary};
use concord_core::prelude::*;
use concord_runtime::Consensus;

const SECRET: &[u8] = b"loopback-bench-secret-0123456789";
/// `concord serve`'s default `--cluster-id`.
const CLUSTER: ClusterId = ClusterId(1);
/// How long a single ping may wait for its echo.
const ECHO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the first echo (link set-up) may take.
const LINK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the in-process member may take to become the leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// A pong process exits on its own after this long, should its parent vanish without closing stdin.
const PONG_LIFETIME: Duration = Duration::from_secs(1800);

/// Throughput and latency with the members in separate processes on loopback
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// `ws` (WebSocket) or `zmq` (ZeroMQ).
    #[arg(long, default_value = "ws")]
    transport: String,
    /// `memory` or `file` (every member durable, group commit).
    #[arg(long, default_value = "memory")]
    storage: String,
    /// Client counts, one run each.
    #[arg(long, default_value = "1,64,256")]
    clients: String,
    /// Writes of each run, in the order of `--clients`.
    #[arg(long, default_value = "5000,100000,200000")]
    writes: String,
    /// Members (one in this process, the rest child processes).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Ping-pong rounds for the transport round trip.
    #[arg(long, default_value_t = 5000)]
    rtt_rounds: u64,
    /// Append + fdatasync rounds for the raw fsync time (file storage only).
    #[arg(long, default_value_t = 1000)]
    fsync_rounds: u64,
    /// The `concord` binary (default: beside this one).
    #[arg(long)]
    concord: Option<PathBuf>,
    /// Where the markdown result, the data directories and the children's logs go.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// Internal: run as the pong side of the round-trip measurement, listening here.
    #[arg(long, hide = true)]
    pong_listen: Option<String>,
    /// Internal: the ping side's address (with `--pong-listen`).
    #[arg(long, hide = true)]
    pong_peer: Option<String>,
}

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loopback-bench: cannot start tokio: {error}");
            std::process::exit(1);
        }
    };
    if let (Some(listen), Some(peer)) = (&args.pong_listen, &args.pong_peer) {
        if let Err(error) = runtime.block_on(pong(&args.transport, listen, peer)) {
            eprintln!("loopback-bench pong: {error}");
            std::process::exit(1);
        }
        return;
    }
    let data = args.out.join(format!("loopback-data-{}-{}", args.transport, args.storage));
    let result = runtime.block_on(run(&args, &data));
    // Kept on failure: the children's logs say what went wrong.
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&data);
    }
    match result {
        Ok(markdown) => {
            let path = args.out.join(format!("loopback-{}-{}.md", args.transport, args.storage));
            if let Err(error) = std::fs::write(&path, &markdown) {
                eprintln!("loopback-bench: cannot write {}: {error}", path.display());
                std::process::exit(1);
            }
            println!("{markdown}");
        }
        Err(error) => {
            eprintln!("loopback-bench: {error}");
            std::process::exit(1);
        }
    }
}

/// The scheme of peer addresses for a transport name.
fn scheme(transport: &str) -> Result<&'static str, String> {
    match transport {
        "ws" => Ok("ws"),
        "zmq" => Ok("tcp"),
        other => Err(format!("unknown transport {other:?} (ws or zmq)")),
    }
}

/// Binds `node` on `listen` (port 0: any) with the transport crate named `transport`.
async fn bind(
    transport: &str,
    node: &str,
    listen: std::net::SocketAddr,
) -> Result<(Arc<dyn Transport>, String), String> {
    match transport {
        "ws" => {
            let mut options = concord_transport_ws::WsOptions::new(node, CLUSTER, SECRET);
            options.listen_address = listen;
            let bound = concord_transport_ws::WsTransport::bind(options).await.map_err(|e| e.to_string())?;
            let address = format!("ws://{}", bound.local_addr());
            Ok((bound, address))
        }
        "zmq" => {
            let mut options = concord_transport_zmq::ZmqOptions::new(node, CLUSTER, SECRET);
            options.listen_address = listen;
            let bound =
                concord_transport_zmq::ZmqTransport::bind(options).await.map_err(|e| e.to_string())?;
            let address = format!("tcp://{}", bound.local_addr());
            Ok((bound, address))
        }
        other => Err(format!("unknown transport {other:?} (ws or zmq)")),
    }
}

fn socket_of(address: &str) -> Result<std::net::SocketAddr, String> {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    rest.parse().map_err(|error| format!("{address:?}: {error}"))
}

/// The pong side: echoes every frame back to its sender until stdin closes (the parent is gone).
async fn pong(transport: &str, listen: &str, peer: &str) -> Result<(), String> {
    let (link, _) = bind(transport, "pong", socket_of(listen)?).await?;
    link.add_peer(&NodeInfo::new("ping", peer.to_owned())).map_err(|e| e.to_string())?;
    let (closed_sender, mut closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        let _ = closed_sender.send(());
    });
    let deadline = tokio::time::sleep(PONG_LIFETIME);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut closed => break,
            _ = &mut deadline => break,
            incoming = link.recv() => match incoming {
                Ok(Incoming::Frame { from, frame }) => {
                    // A full queue drops the echo; the ping side then times out and says so.
                    let _ = link.send(&from, vec![frame]).await;
                }
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            },
        }
    }
    link.close().await;
    Ok(())
}

/// The transport's round trip: `rounds` ping-pongs of 16-byte frames with a child process.
async fn round_trip(args: &Args, directory: &Path) -> Result<DurationSummary, String> {
    let (link, address) =
        bind(&args.transport, "ping", "127.0.0.1:0".parse().map_err(|_| "address")?).await?;
    let pong_address = format!(
        "{}://127.0.0.1:{}",
        scheme(&args.transport)?,
        free_loopback_port().map_err(|e| e.to_string())?
    );
    let log = std::fs::File::create(directory.join("pong.log")).map_err(|e| e.to_string())?;
    let executable = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(executable)
        .args(["--transport", &args.transport, "--pong-listen", &pong_address, "--pong-peer", &address])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start the pong process: {e}"))?;
    let _guard = ChildGuard::new("pong", child);
    link.add_peer(&NodeInfo::new("pong", pong_address)).map_err(|e| e.to_string())?;
    let pong = NodeId::parse("pong").map_err(|e| e.to_string())?;
    // The transports check each frame's codec header (length prefix, version), not its body: a
    // 16-byte frame is a 6-byte header and the sequence number.
    let frame = |sequence: u64| {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&12u32.to_be_bytes());
        bytes[4] = concord_core::codec::PROTOCOL_VERSION;
        bytes[6..14].copy_from_slice(&sequence.to_le_bytes());
        Bytes::copy_from_slice(&bytes)
    };
    let sequence_of =
        |frame: &Bytes| -> Option<u64> { Some(u64::from_le_bytes(frame.get(6..14)?.try_into().ok()?)) };
    // Set-up: resend the first frame until an echo comes back (the links are built lazily).
    let link_deadline = Instant::now() + LINK_TIMEOUT;
    loop {
        let _ = link.send(&pong, vec![frame(0)]).await;
        if let Ok(Ok(Incoming::Frame { .. })) =
            tokio::time::timeout(Duration::from_millis(100), link.recv()).await
        {
            break;
        }
        if Instant::now() > link_deadline {
            link.close().await;
            return Err(format!("no echo from the pong process within {LINK_TIMEOUT:?}"));
        }
    }
    let mut samples = Vec::with_capacity(args.rtt_rounds as usize);
    for sequence in 1..=args.rtt_rounds {
        let sent = Instant::now();
        link.send(&pong, vec![frame(sequence)]).await.map_err(|e| e.to_string())?;
        let echo_deadline = sent + ECHO_TIMEOUT;
        loop {
            let left = echo_deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, link.recv()).await {
                Ok(Ok(Incoming::Frame { frame, .. })) if sequence_of(&frame) == Some(sequence) => break,
                Ok(Ok(_)) => continue, // a late set-up echo or a link event
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err(format!("ping {sequence} got no echo within {ECHO_TIMEOUT:?}")),
            }
        }
        samples.push(sent.elapsed());
    }
    link.close().await;
    DurationSummary::of(&mut samples).ok_or_else(|| "no round trips measured".into())
}

/// Raw fdatasync of 256-byte records in `directory`: appended to a growing file (each sync also
/// commits the new file size), or written in place over a preallocated, already synced file (the
/// device's cost alone; the goal is measured against this, the stricter of the two).
fn fsync_time(directory: &Path, rounds: u64, in_place: bool) -> Result<DurationSummary, String> {
    let name = if in_place { "fsync-probe-in-place" } else { "fsync-probe-append" };
    let mut samples = fsync_samples(&directory.join(name), rounds, in_place)?;
    DurationSummary::of(&mut samples).ok_or_else(|| "no fsync measured".into())
}

/// In-place fdatasync with `writers` files synced at the same time, one thread each: what every
/// member of this benchmark pays, since all of them share this machine's one disk (a write's
/// critical path holds the leader's and a follower's sync, running side by side).
fn concurrent_fsync_time(directory: &Path, rounds: u64, writers: usize) -> Result<DurationSummary, String> {
    let mut samples = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..writers)
            .map(|writer| {
                let path = directory.join(format!("fsync-probe-concurrent-{writer}"));
                scope.spawn(move || fsync_samples(&path, rounds, true))
            })
            .collect();
        let mut all = Vec::new();
        for thread in threads {
            all.extend(thread.join().map_err(|_| "an fsync probe thread panicked".to_owned())??);
        }
        Ok::<_, String>(all)
    })?;
    DurationSummary::of(&mut samples).ok_or_else(|| "no fsync measured".into())
}

/// One probe file's fdatasync times (see [`fsync_time`]); the file is removed afterwards.
fn fsync_samples(path: &Path, rounds: u64, in_place: bool) -> Result<Vec<Duration>, String> {
    use std::io::{Seek, SeekFrom};
    const RECORD_BYTES: u64 = 256;
    const PREALLOCATED_BYTES: u64 = 1024 * 1024;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if in_place {
        file.write_all(&vec![0u8; PREALLOCATED_BYTES as usize]).map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
    }
    let record = [0x5au8; RECORD_BYTES as usize];
    let mut samples = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        if in_place {
            let offset = (round * RECORD_BYTES) % PREALLOCATED_BYTES;
            file.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        }
        let started = Instant::now();
        file.write_all(&record).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        samples.push(started.elapsed());
    }
    let _ = std::fs::remove_file(path);
    Ok(samples)
}

/// One client-count run: ops/s and per-write latency.
struct RunResult {
    clients: u64,
    writes: u64,
    elapsed: Duration,
    latency: DurationSummary,
    failed: u64,
    /// Failed writes by error code (`timeout`, `busy`, …).
    failed_by_code: std::collections::BTreeMap<&'static str, u64>,
}

async fn client_run(leader: &Consensus, clients: u64, writes: u64) -> Result<RunResult, String> {
    let per_client = (writes / clients).max(1);
    let failures = Arc::new(AtomicU64::new(0));
    let failure_codes =
        Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<&'static str, u64>::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let node = leader.clone();
        let failures = failures.clone();
        let failure_codes = failure_codes.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("client-{client}");
            let mut latencies = Vec::with_capacity(per_client as usize);
            for _ in 0..per_client {
                let sent = Instant::now();
                let result = node.propose_bytes(&key, Bytes::new()).await;
                if !result.accepted {
                    failures.fetch_add(1, Ordering::Relaxed);
                    let code = result.error.as_ref().map_or("unknown", |error| error.code());
                    if let Ok(mut codes) = failure_codes.lock() {
                        *codes.entry(code).or_default() += 1;
                    }
                }
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity((per_client * clients) as usize);
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed();
    let latency = DurationSummary::of(&mut latencies).ok_or("no writes")?;
    Ok(RunResult {
        clients,
        writes: per_client * clients,
        elapsed,
        latency,
        failed: failures.load(Ordering::Relaxed),
        failed_by_code: failure_codes.lock().map(|codes| codes.clone()).unwrap_or_default(),
    })
}

impl RunResult {
    fn ops_per_second(&self) -> u64 {
        (self.writes as f64 / self.elapsed.as_secs_f64().max(1e-9)) as u64
    }
}

async fn run(args: &Args, data: &Path) -> Result<String, String> {
    let scheme = scheme(&args.transport)?;
    let durable = match args.storage.as_str() {
        "memory" => false,
        "file" => true,
        other => return Err(format!("unknown storage {other:?} (memory or file)")),
    };
    let clients = parse_counts(&args.clients)?;
    let writes = parse_counts(&args.writes)?;
    if clients.len() != writes.len() || args.members < 2 || args.rtt_rounds == 0 || args.fsync_rounds == 0 {
        return Err(
            "--clients and --writes need as many entries; --members at least 2; rounds at least 1".into()
        );
    }
    let _ = std::fs::remove_dir_all(data);
    std::fs::create_dir_all(data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;

    eprintln!("loopback-bench {} {}: transport round trip", args.transport, args.storage);
    let round_trip = round_trip(args, data).await?;
    let fsync = if durable {
        Some(FsyncTimes {
            in_place: fsync_time(data, args.fsync_rounds, true)?,
            append: fsync_time(data, args.fsync_rounds, false)?,
            concurrent: concurrent_fsync_time(data, args.fsync_rounds, args.members)?,
        })
    } else {
        None
    };

    // The cluster: n1 here, the others child processes.
    let (transport, n1_address) =
        bind(&args.transport, "n1", "127.0.0.1:0".parse().map_err(|_| "address")?).await?;
    let secret_file = data.join("secret");
    write_secret_file(&secret_file, SECRET).map_err(|e| e.to_string())?;
    let ids: Vec<String> = (1..=args.members).map(|i| format!("n{i}")).collect();
    let mut peer_addresses = vec![n1_address.clone()];
    let mut api_addresses = vec![String::new()];
    for _ in 1..args.members {
        peer_addresses
            .push(format!("{scheme}://127.0.0.1:{}", free_loopback_port().map_err(|e| e.to_string())?));
        api_addresses.push(format!("127.0.0.1:{}", free_loopback_port().map_err(|e| e.to_string())?));
    }
    let binary = concord_binary(args.concord.as_deref());
    let mut children = Vec::new();
    for index in 1..args.members {
        let spec = ServeSpec {
            id: ids[index].clone(),
            listen: peer_addresses[index].clone(),
            api: api_addresses[index].clone(),
            peers: ids
                .iter()
                .zip(&peer_addresses)
                .filter(|(other, _)| **other != ids[index])
                .map(|(other, address)| (other.clone(), address.clone()))
                .collect(),
            storage: if durable {
                ServeStorage::Directory(data.join(&ids[index]))
            } else {
                ServeStorage::Memory
            },
            secret_file: secret_file.clone(),
            // Far longer than n1's, so n1 campaigns first and stays the leader.
            election_timeout_ms: (5_000, 10_000),
            heartbeat_interval_ms: 50,
            // Beside, not inside, the data directory: kept after the run for a look at warnings.
            log_file: args
                .out
                .join(format!("loopback-{}-{}-{}.log", args.transport, args.storage, ids[index])),
        };
        let client = status_client(&spec.api_url())?;
        let mut guard = spec.spawn(&binary)?;
        wait_until_answering(&client, &mut guard, START_TIMEOUT)?;
        children.push(guard);
    }
    let mut config = Config::for_mechanism(MechanismKind::Raft);
    config.election_timeout =
        ElectionTimeout { min: Duration::from_millis(150), max: Duration::from_millis(300) };
    config.heartbeat_interval = Duration::from_millis(50);
    config.timeout = Duration::from_secs(30);
    config.max_pending_proposals = 1_000_000;
    let members: Vec<NodeInfo> = ids
        .iter()
        .zip(&peer_addresses)
        .map(|(id, address)| NodeInfo::new(id.as_str(), address.clone()))
        .collect();
    let mut builder = Consensus::builder("n1")
        .config(config)
        .cluster_id(CLUSTER)
        .address(n1_address)
        .members(members)
        .transport(transport)
        .seed(1);
    if durable {
        builder = builder.data_dir(data.join("n1"));
    }
    let leader = builder.start().await.map_err(|e| format!("n1 did not start: {e}"))?;
    let deadline = Instant::now() + LEADER_TIMEOUT;
    while !leader.is_leader() {
        if Instant::now() > deadline {
            leader.stop().await;
            return Err(format!("n1 did not become the leader within {LEADER_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut results = Vec::new();
    for (&count, &total) in clients.iter().zip(&writes) {
        eprintln!("loopback-bench {} {}: {count} clients, {total} writes", args.transport, args.storage);
        let result = client_run(&leader, count, total).await;
        match result {
            Ok(result) => results.push(result),
            Err(error) => {
                leader.stop().await;
                return Err(error);
            }
        }
    }
    let still_leader = leader.is_leader();
    leader.stop().await;
    for child in &mut children {
        child.kill_and_wait();
    }
    Ok(markdown(args, &round_trip, fsync.as_ref(), &results, still_leader))
}

/// The raw fdatasync times of one run (file storage only).
struct FsyncTimes {
    in_place: DurationSummary,
    append: DurationSummary,
    /// In place, one file per member synced at the same time.
    concurrent: DurationSummary,
}

fn markdown(
    args: &Args,
    round_trip: &DurationSummary,
    fsync: Option<&FsyncTimes>,
    results: &[RunResult],
    still_leader: bool,
) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "### {} transport, {} storage\n\n`cargo run --profile bench-release -p concord-bench --bin loopback-bench -- --transport {} \
         --storage {} --clients {} --writes {}`. Transport round trip (16-byte ping-pong with a child process, \
         {} rounds): p50 {}, p99 {}.",
        args.transport,
        args.storage,
        args.transport,
        args.storage,
        args.clients,
        args.writes,
        round_trip.count,
        micros(round_trip.median),
        micros(round_trip.p99)
    ));
    if let Some(FsyncTimes { in_place, append, concurrent }) = fsync {
        text.push_str(&format!(
            " Raw fdatasync of 256-byte writes ({} rounds) in place in a preallocated file: p50 {}, p99 {}; \
             appending to a growing file: p50 {}, p99 {}; in place with {} files synced at once (as the {} \
             members here share one disk): p50 {}, p99 {}.",
            in_place.count,
            micros(in_place.median),
            micros(in_place.p99),
            micros(append.median),
            micros(append.p99),
            args.members,
            args.members,
            micros(concurrent.median),
            micros(concurrent.p99)
        ));
    }
    if !still_leader {
        text.push_str(" **n1 lost the leadership during the run**: figures are not comparable.");
    }
    text.push_str(
        "\n\n| clients | writes | ops/s | p50 | p99 | failed | goal |\n|---|---|---|---|---|---|---|\n",
    );
    for result in results {
        let mut goals = Vec::new();
        if result.clients == 1 {
            let bound = round_trip.median * 2;
            goals.push(format!(
                "p50 ≤ 2× round trip ({}): {}",
                micros(bound),
                if result.latency.median <= bound { "met" } else { "missed" }
            ));
            if let Some(times) = fsync {
                // A write waits for a follower's sync after a round trip's half, and for the
                // leader's own sync, side by side on the shared disk: no write can beat this.
                goals.push(format!(
                    "(this machine's floor: round trip + concurrent fsync p50 = {})",
                    micros(round_trip.median + times.concurrent.median)
                ));
            }
        }
        if result.clients >= 256 {
            match fsync {
                None => goals.push(format!(
                    "≥ 250k ops/s: {}",
                    if result.ops_per_second() >= 250_000 { "met" } else { "missed" }
                )),
                Some(FsyncTimes { in_place: fsync, .. }) => {
                    goals.push(format!(
                        "≥ 100k ops/s: {}",
                        if result.ops_per_second() >= 100_000 { "met" } else { "missed" }
                    ));
                    let bound = fsync.p99 * 3;
                    goals.push(format!(
                        "p99 ≤ 3× in-place fsync p99 ({}): {}",
                        micros(bound),
                        if result.latency.p99 <= bound { "met" } else { "missed" }
                    ));
                }
            }
        }
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            result.clients,
            result.writes,
            result.ops_per_second(),
            micros(result.latency.median),
            micros(result.latency.p99),
            if result.failed_by_code.is_empty() {
                result.failed.to_string()
            } else {
                let codes: Vec<String> =
                    result.failed_by_code.iter().map(|(code, count)| format!("{code} {count}")).collect();
                format!("{} ({})", result.failed, codes.join(", "))
            },
            goals.join("; ")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{scheme, socket_of};

    #[test]
    fn addresses_and_schemes() {
        assert_eq!(scheme("ws"), Ok("ws"));
        assert_eq!(scheme("zmq"), Ok("tcp"));
        assert!(scheme("udp").is_err());
        assert_eq!(socket_of("tcp://127.0.0.1:9000").unwrap().port(), 9000);
        assert_eq!(socket_of("127.0.0.1:9001").unwrap().port(), 9001);
        assert!(socket_of("ws://localhost").is_err());
    }
}
