//! Failover with real processes: five `concord serve` processes on 127.0.0.1 (memory storage,
//! WebSocket transport); each trial finds the leader, kills it with SIGKILL at a random point of
//! its heartbeat interval, and polls the survivors' `GET /v1/status` until one reports itself
//! leader of a newer term. The killed node is then restarted and must rejoin before the next trial.
//!
//! `cargo run --profile bench-release -p concord-bench --bin failover-processes -- --trials 100 --out DIR`
//! prints a markdown section and writes it to `DIR/failover-processes.md`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use concord_bench::processes::{
    concord_binary, free_loopback_port, node_status, status_client, wait_until_answering, write_secret_file,
    ChildGuard, NodeStatus, ServeSpec, ServeStorage, START_TIMEOUT,
};
use concord_bench::stats::{millis, DurationSummary};
use concord_node::client::HttpClient;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How often the survivors are polled while a new leader is awaited.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// A trial whose election takes longer than this counts as "no leader".
const ELECTION_WAIT_MAX: Duration = Duration::from_secs(10);
/// How long the cluster may take to agree on one leader before a trial (and the restarted node to
/// rejoin).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Leader failover with real `concord serve` processes
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Trials (leader kills).
    #[arg(long, default_value_t = 100)]
    trials: usize,
    /// Cluster members.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// `--election-timeout-ms` of every node.
    #[arg(long, default_value = "150,300")]
    election_timeout_ms: String,
    /// `--heartbeat-interval-ms` of every node.
    #[arg(long, default_value_t = 50)]
    heartbeat_interval_ms: u64,
    /// Seed of the kill-time randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The `concord` binary (default: beside this one).
    #[arg(long)]
    concord: Option<PathBuf>,
    /// Where the markdown result goes (`failover-processes.md`), and the nodes' logs.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(markdown) => {
            let path = args.out.join("failover-processes.md");
            if let Err(error) = std::fs::write(&path, &markdown) {
                eprintln!("failover-processes: cannot write {}: {error}", path.display());
                std::process::exit(1);
            }
            println!("{markdown}");
        }
        Err(error) => {
            eprintln!("failover-processes: {error}");
            std::process::exit(1);
        }
    }
}

struct Node {
    spec: ServeSpec,
    client: HttpClient,
    guard: ChildGuard,
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (min, max) = text.split_once(',').ok_or_else(|| format!("{text:?}: expected MIN,MAX"))?;
    let min = min.trim().parse().map_err(|_| format!("{text:?}: bad MIN"))?;
    let max = max.trim().parse().map_err(|_| format!("{text:?}: bad MAX"))?;
    Ok((min, max))
}

fn run(args: &Args) -> Result<String, String> {
    if args.trials == 0 || args.nodes < 3 {
        return Err("--trials must be at least 1 and --nodes at least 3".into());
    }
    let election_timeout_ms = parse_range(&args.election_timeout_ms)?;
    let binary = concord_binary(args.concord.as_deref());
    let directory = args.out.join("failover-processes");
    std::fs::create_dir_all(&directory).map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
    let secret_file = directory.join("secret");
    write_secret_file(&secret_file, b"failover-processes-secret-0123456789")
        .map_err(|e| format!("cannot write the secret: {e}"))?;
    let ids: Vec<String> = (1..=args.nodes).map(|i| format!("n{i}")).collect();
    let mut addresses = Vec::new();
    for _ in &ids {
        let peer = free_loopback_port().map_err(|e| e.to_string())?;
        let api = free_loopback_port().map_err(|e| e.to_string())?;
        addresses.push((format!("ws://127.0.0.1:{peer}"), format!("127.0.0.1:{api}")));
    }
    let mut nodes = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let spec = ServeSpec {
            id: id.clone(),
            listen: addresses[index].0.clone(),
            api: addresses[index].1.clone(),
            peers: ids
                .iter()
                .zip(&addresses)
                .filter(|(other, _)| *other != id)
                .map(|(other, (peer, _))| (other.clone(), peer.clone()))
                .collect(),
            storage: ServeStorage::Memory,
            secret_file: secret_file.clone(),
            election_timeout_ms,
            heartbeat_interval_ms: args.heartbeat_interval_ms,
            log_file: directory.join(format!("{id}.log")),
        };
        let client = status_client(&spec.api_url())?;
        let guard = spec.spawn(&binary)?;
        nodes.push(Node { spec, client, guard });
    }
    for node in &mut nodes {
        wait_until_answering(&node.client, &mut node.guard, START_TIMEOUT)?;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let heartbeat = Duration::from_millis(args.heartbeat_interval_ms.max(1));
    let mut times = Vec::with_capacity(args.trials);
    let mut not_elected = 0usize;
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    for trial in 0..args.trials {
        let (leader_index, old_term) = settled_leader(&nodes, SETTLE_TIMEOUT)?;
        // A random point of the leader's heartbeat interval: its phase is unknown to us, so a
        // uniformly random delay after observing it lands uniformly within the interval.
        let delay = Duration::from_micros(rng.gen_range(0..heartbeat.as_micros() as u64));
        std::thread::sleep(delay);
        nodes[leader_index].guard.kill().map_err(|e| format!("cannot kill the leader: {e}"))?;
        let killed_at = Instant::now();
        let killed_id = nodes[leader_index].spec.id.clone();
        let elected = loop {
            let found =
                nodes.iter().enumerate().filter(|(index, _)| *index != leader_index).find_map(|(_, node)| {
                    node_status(&node.client)
                        .filter(|status| status.is_leader() && status.term > old_term)
                        .map(|status| status.node_id)
                });
            if let Some(new_leader) = found {
                break Some((killed_at.elapsed(), new_leader));
            }
            if killed_at.elapsed() > ELECTION_WAIT_MAX {
                break None;
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        match &elected {
            Some((time, _)) => times.push(*time),
            None => not_elected += 1,
        }
        // A progress line that rewrites itself on a terminal; one line per trial elsewhere.
        let line = format!(
            "failover-processes trial {}/{}: killed {killed_id}, {}",
            trial + 1,
            args.trials,
            elected.as_ref().map_or("no leader within 10 s".to_owned(), |(time, id)| format!(
                "{id} elected after {}",
                millis(*time)
            ))
        );
        if terminal {
            eprint!("\r{line:<72}");
        } else {
            eprintln!("{line}");
        }
        // Restart the killed node (empty memory log) on the same addresses and let it rejoin.
        let node = &mut nodes[leader_index];
        node.guard.kill_and_wait();
        node.guard = node.spec.spawn(&binary)?;
        wait_until_answering(&node.client, &mut node.guard, START_TIMEOUT)?;
    }
    if terminal {
        eprintln!();
    }
    let total = started.elapsed();
    let summary = DurationSummary::of(&mut times);
    Ok(markdown(args, election_timeout_ms, summary.as_ref(), not_elected, total))
}

/// Waits until every node answers and all name the same leader, which says it leads; returns its
/// index and term.
fn settled_leader(nodes: &[Node], timeout: Duration) -> Result<(usize, u64), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let statuses: Vec<Option<NodeStatus>> = nodes.iter().map(|node| node_status(&node.client)).collect();
        let leaders: Vec<&NodeStatus> = statuses.iter().flatten().filter(|s| s.is_leader()).collect();
        if let ([leader], true) = (leaders.as_slice(), statuses.iter().all(Option::is_some)) {
            let agreed = statuses.iter().flatten().all(|status| {
                status.leader_id.as_deref() == Some(&leader.node_id) && status.term == leader.term
            });
            if agreed {
                if let Some(index) = nodes.iter().position(|node| node.spec.id == leader.node_id) {
                    return Ok((index, leader.term));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("the cluster did not agree on a leader within {timeout:?}: {statuses:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn markdown(
    args: &Args,
    (min, max): (u64, u64),
    summary: Option<&DurationSummary>,
    not_elected: usize,
    total: Duration,
) -> String {
    let mut text = String::new();
    text.push_str("# Failover with real processes\n\n");
    text.push_str(&format!(
        "`cargo run --profile bench-release -p concord-bench --bin failover-processes -- --trials {} --nodes {} \
         --election-timeout-ms {min},{max} --heartbeat-interval-ms {}`: {} `concord serve` processes on \
         127.0.0.1 (memory storage, WebSocket), the leader killed with SIGKILL at a random point of its \
         heartbeat interval, the survivors' `GET /v1/status` polled every {} ms until one reports itself \
         leader of a newer term. The killed node is restarted (empty memory log, as the issue asks for memory \
         storage; it has forgotten its vote, which a durable deployment must not allow) and rejoins before the \
         next trial. The time includes the polling resolution (a few ms). Total run time {:.1} s.\n\n",
        args.trials,
        args.nodes,
        args.heartbeat_interval_ms,
        args.nodes,
        POLL_INTERVAL.as_millis(),
        total.as_secs_f64()
    ));
    text.push_str("| timeouts | trials | elected | median | p99 | max | mean | goal (150–300: median ≤ 200 ms, worst ≤ 400 ms) |\n");
    text.push_str("|---|---|---|---|---|---|---|---|\n");
    match summary {
        Some(summary) => {
            let goal = if (min, max) == (150, 300) {
                let median_met = summary.median <= Duration::from_millis(200);
                let worst_met = summary.max <= Duration::from_millis(400) && not_elected == 0;
                format!(
                    "median {}, worst {}",
                    if median_met { "met" } else { "missed" },
                    if worst_met { "met" } else { "missed" }
                )
            } else {
                "— (goal is for 150–300 ms)".to_owned()
            };
            text.push_str(&format!(
                "| {min}–{max} ms | {} | {} | {} | {} | {} | {} | {goal} |\n",
                args.trials,
                summary.count,
                millis(summary.median),
                millis(summary.p99),
                millis(summary.max),
                millis(summary.mean)
            ));
        }
        None => {
            text.push_str(&format!("| {min}–{max} ms | {} | 0 | — | — | — | — | missed |\n", args.trials))
        }
    }
    if not_elected > 0 {
        text.push_str(&format!(
            "\n{not_elected} trial(s) saw no new leader within {} s.\n",
            ELECTION_WAIT_MAX.as_secs()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn timeout_ranges_are_parsed() {
        assert_eq!(parse_range("150,300"), Ok((150, 300)));
        assert_eq!(parse_range(" 12 , 24 "), Ok((12, 24)));
        assert!(parse_range("150").is_err());
        assert!(parse_range("a,b").is_err());
    }
}
