//! Restart serve time: three members in one process (in-memory transport, durable file storage,
//! no snapshots) write `--entries` entries; then all three stop and start again from their data
//! directories, and the benchmark measures the time from the restart until the cluster serves
//! again: a write and a linearizable read (`read_bytes`, a read barrier through the leader) both
//! succeed. Replaying the whole log into the state machine is part of that time, since nothing was
//! snapshotted.
//!
//! `cargo run --profile bench-release -p concord-bench --bin restart-bench -- --entries 1000000 --out DIR`
//! prints a markdown section and writes it to `DIR/restart.md`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use concord_bench::stats::{millis, resident_kibibytes};
use concord_core::prelude::*;
use concord_runtime::{Consensus, MemoryNetwork};

/// How long the restarted cluster may take to serve before the run counts as failed.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time for a cluster with a long durable log to serve again after a restart
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Entries written before the restart.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Concurrent writers while filling the log.
    #[arg(long, default_value_t = 256)]
    clients: u64,
    /// Members (all restarted together).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Election timeout MIN,MAX in ms (the restart includes one election).
    #[arg(long, default_value = "150,300")]
    election_timeout_ms: String,
    /// Heartbeat interval in ms.
    #[arg(long, default_value_t = 50)]
    heartbeat_interval_ms: u64,
    /// Where the markdown result goes (`restart.md`) and the data directories (removed at the end).
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
}

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("restart-bench: cannot start tokio: {error}");
            std::process::exit(1);
        }
    };
    let data = args.out.join("restart-data");
    let result = runtime.block_on(run(&args, &data));
    let _ = std::fs::remove_dir_all(&data);
    match result {
        Ok(markdown) => {
            let path = args.out.join("restart.md");
            if let Err(error) = std::fs::write(&path, &markdown) {
                eprintln!("restart-bench: cannot write {}: {error}", path.display());
                std::process::exit(1);
            }
            println!("{markdown}");
        }
        Err(error) => {
            eprintln!("restart-bench: {error}");
            std::process::exit(1);
        }
    }
}

fn config(args: &Args) -> Result<Config, String> {
    let (min, max) = args
        .election_timeout_ms
        .split_once(',')
        .and_then(|(min, max)| Some((min.trim().parse().ok()?, max.trim().parse().ok()?)))
        .ok_or_else(|| format!("--election-timeout-ms {:?}: expected MIN,MAX", args.election_timeout_ms))?;
    let mut config = Config::for_mechanism(MechanismKind::Raft);
    config.election_timeout =
        ElectionTimeout { min: Duration::from_millis(min), max: Duration::from_millis(max) };
    config.heartbeat_interval = Duration::from_millis(args.heartbeat_interval_ms);
    // No snapshots: the restarted members must recover the whole log.
    config.snapshot_interval = 0;
    config.timeout = Duration::from_secs(30);
    config.max_pending_proposals = 1_000_000;
    config.validate().map_err(|error| error.to_string())?;
    Ok(config)
}

fn member_ids(args: &Args) -> Vec<String> {
    (1..=args.members).map(|i| format!("n{i}")).collect()
}

/// The builder of member `index`, on `network`, from its data directory under `data`.
fn member(
    args: &Args,
    config: &Config,
    data: &std::path::Path,
    network: &MemoryNetwork,
    index: usize,
) -> concord_runtime::ConsensusBuilder {
    let ids = member_ids(args);
    let members: Vec<NodeInfo> = ids.iter().map(|id| NodeInfo::new(id.as_str(), String::new())).collect();
    Consensus::builder(ids[index].as_str())
        .config(config.clone())
        .cluster_id(ClusterId(1))
        .members(members)
        .transport(network.transport(ids[index].as_str()))
        .data_dir(data.join(&ids[index]))
        .seed(index as u64)
}

async fn start_cluster(
    args: &Args,
    config: &Config,
    data: &std::path::Path,
    network: &MemoryNetwork,
) -> Result<Vec<Consensus>, String> {
    // All members start at once, as separate machines restarting together would.
    let mut starting = Vec::new();
    for (index, id) in member_ids(args).into_iter().enumerate() {
        let builder = member(args, config, data, network, index);
        starting.push((id, tokio::spawn(builder.start())));
    }
    let mut nodes = Vec::new();
    for (id, start) in starting {
        let node = start
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| format!("{id} did not start: {error}"))?;
        nodes.push(node);
    }
    Ok(nodes)
}

async fn leader(nodes: &[Consensus], timeout: Duration) -> Result<Consensus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(leader) = nodes.iter().find(|node| node.is_leader()) {
            return Ok(leader.clone());
        }
        if Instant::now() > deadline {
            return Err(format!("no leader within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn directory_bytes(directory: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(directory) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => directory_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Writes `key` through `node` and reads it back linearizably, retrying (bounded) until both
/// succeed; returns the time since `restarted`.
async fn serve_probe(node: &Consensus, restarted: Instant, key: &str) -> Result<Duration, String> {
    let deadline = Instant::now() + SERVE_TIMEOUT;
    loop {
        let wrote = node.propose_bytes(key, Bytes::from_static(b"1")).await;
        if wrote.accepted {
            match node.read_bytes(key).await {
                Ok(Some(value)) if value.as_ref() == b"1" => return Ok(restarted.elapsed()),
                Ok(other) => return Err(format!("the linearizable read of {key} returned {other:?}")),
                Err(error) => eprintln!("restart-bench: read of {key} failed ({error}); retrying"),
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not serve within {SERVE_TIMEOUT:?}", node.node_id()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn run(args: &Args, data: &std::path::Path) -> Result<String, String> {
    if args.entries == 0 || args.clients == 0 || args.members == 0 {
        return Err("--entries, --clients and --members must be at least 1".into());
    }
    let config = config(args)?;
    let _ = std::fs::remove_dir_all(data);
    std::fs::create_dir_all(data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;

    // Fill the log: each client writes its own key, sequentially.
    let network = MemoryNetwork::new();
    let mut nodes = start_cluster(args, &config, data, &network).await?;
    let target = leader(&nodes, Duration::from_secs(10)).await?;
    let per_client = args.entries.div_ceil(args.clients);
    let failures = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let fill_started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let node = target.clone();
        let failures = failures.clone();
        let first_error = first_error.clone();
        let writes = per_client.min(args.entries.saturating_sub(client * per_client));
        tasks.push(tokio::spawn(async move {
            let key = format!("client-{client}");
            for _ in 0..writes {
                let result = node.propose_bytes(&key, Bytes::new()).await;
                if !result.accepted {
                    failures.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert_with(|| format!("{:?}", result.error));
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())?;
    }
    let fill_time = fill_started.elapsed();
    let failed = failures.load(Ordering::Relaxed);
    let first_error = first_error.lock().ok().and_then(|first| first.clone()).unwrap_or_default();
    // A few failed writes (e.g. timeouts on a loaded machine) only shorten the log a little, and the
    // log length actually recovered is reported; many mean the run says nothing.
    if failed * 100 > args.entries {
        return Err(format!("{failed} writes failed while filling the log (first: {first_error})"));
    }
    if failed > 0 {
        eprintln!("restart-bench: {failed} writes failed while filling the log (first: {first_error})");
    }
    let log_before = target.debug_state();
    let bytes_on_disk = directory_bytes(data);
    eprintln!(
        "restart-bench: wrote {} entries in {:.1} s; log length {}; {} MiB on disk; restarting",
        args.entries,
        fill_time.as_secs_f64(),
        log_before.log_length,
        bytes_on_disk / (1024 * 1024)
    );

    // One member restarted while the others keep serving: a follower, so no election is needed;
    // it serves when a write and a linearizable read through it succeed (both go through the
    // leader, and the read waits until the restarted member has applied everything).
    let follower_index = nodes.iter().position(|node| !node.is_leader()).ok_or("no follower")?;
    nodes[follower_index].stop().await;
    let restarted = Instant::now();
    let follower = member(args, &config, data, &network, follower_index)
        .start()
        .await
        .map_err(|error| format!("the follower did not restart: {error}"))?;
    let follower_loaded = restarted.elapsed();
    let follower_serving = serve_probe(&follower, restarted, "follower-probe").await?;
    nodes[follower_index] = follower;
    eprintln!("restart-bench: follower serving after {}", millis(follower_serving));

    for node in &nodes {
        node.stop().await;
    }
    drop(nodes);
    drop(target);

    // The restart: time every phase from the moment the members are started again.
    let restarted = Instant::now();
    let nodes = start_cluster(args, &config, data, &MemoryNetwork::new()).await?;
    let recovered = restarted.elapsed();
    let recovered_log = nodes.iter().map(|node| node.debug_state().log_length).min().unwrap_or(0);
    let leader_node = leader(&nodes, SERVE_TIMEOUT).await?;
    let elected = restarted.elapsed();
    let serving = serve_probe(&leader_node, restarted, "restart-probe").await?;
    let applied = leader_node.debug_state().last_applied;
    let resident = resident_kibibytes().map_or("?".to_owned(), |kib| format!("{} MiB", kib / 1024));
    for node in &nodes {
        node.stop().await;
    }
    let goal =
        |time: Duration| if time <= Duration::from_secs(1) { "≤ 1 s: met" } else { "≤ 1 s: missed" };
    let mut text = String::new();
    text.push_str("# Restart with a long log\n\n");
    text.push_str(&format!(
        "`cargo run --profile bench-release -p concord-bench --bin restart-bench -- --entries {} --members {} \
         --election-timeout-ms {}`: {} members in one process (in-memory transport, file storage, \
         `snapshot_interval` 0) write {} entries with {} clients ({:.1} s, {} MiB on disk for all members). \
         Then (1) one follower is stopped and started again from its data directory while the others keep \
         serving, and (2) all members are stopped and started again at once (concurrently, which includes \
         an election). The node serves when a write and a linearizable read through it succeed; with no \
         snapshot, the read waits until its state machine has replayed the whole log.\n\n",
        args.entries,
        args.members,
        args.election_timeout_ms,
        args.members,
        args.entries,
        args.clients,
        fill_time.as_secs_f64(),
        bytes_on_disk / (1024 * 1024),
    ));
    text.push_str(
        "| restart | log entries | log loaded (start returned) | leader elected | serving (write + linearizable read) | goal |\n",
    );
    text.push_str("|---|---|---|---|---|---|\n");
    text.push_str(&format!(
        "| one follower | {} | {} | (leader kept) | {} | {} |\n",
        log_before.log_length,
        millis(follower_loaded),
        millis(follower_serving),
        goal(follower_serving),
    ));
    text.push_str(&format!(
        "| whole cluster | {recovered_log} | {} (slowest member) | {} | {} | {} |\n",
        millis(recovered),
        millis(elected),
        millis(serving),
        goal(serving),
    ));
    if failed > 0 {
        text.push_str(&format!(
            "\n{failed} of the {} writes failed while filling the log (first error: {first_error}).\n",
            args.entries
        ));
    }
    text.push_str(&format!(
        "\nAfter the whole-cluster restart the leader had applied {applied} entries; process resident memory {resident}.\n"
    ));
    Ok(text)
}
