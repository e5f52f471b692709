//! `cargo xtask bench`: every benchmark, and BENCHMARKS.md from their results.

use std::process::Command;

use crate::cargo;

/// One attempt of a cluster run: output line, latency line, memory line, writes per second.
type Attempt = (String, String, String, Option<u64>);

/// One cluster-bench run: its output line, latency line, memory line and writes per second.
fn run_cluster_bench(run: &ClusterRun, out: &std::path::Path) -> Attempt {
    let data_dir = out.join("cluster-data");
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut command = Command::new("target/bench-release/cluster-bench");
    command
        .args(["-c", &run.clients.to_string(), "-n", &run.writes.to_string(), "-m", "3"])
        .args(["-b", &run.batch.to_string(), "--mechanism", run.mechanism])
        .args(["--snapshot-interval", &run.snapshot_interval.to_string()])
        .args(["--transport", run.transport]);
    if run.rss_every > 0 {
        command.args(["--rss-every", &run.rss_every.to_string()]);
    }
    if run.current_thread {
        command.arg("--current-thread");
    } else if run.workers > 0 {
        command.args(["--workers", &run.workers.to_string()]);
    }
    if run.durable {
        command.arg("--data-dir").arg(&data_dir);
    }
    let (line, latency, rss) = match command.output() {
        Ok(output) if output.status.success() => {
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let find = |prefix: &str| stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or("").to_owned();
            (find("clients:"), find("latency:"), find("rss:"))
        }
        Ok(output) => (
            format!("failed: {}", String::from_utf8_lossy(&output.stderr).trim()),
            String::new(),
            String::new(),
        ),
        Err(error) => (format!("failed: {error}"), String::new(), String::new()),
    };
    let _ = std::fs::remove_dir_all(&data_dir);
    let ops_per_second = line
        .split("op/ms: ")
        .nth(1)
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(|per_ms| per_ms * 1000);
    (line, latency, rss, ops_per_second)
}

/// One cluster-benchmark configuration: mechanism, clients, writes, batch.
struct ClusterRun {
    mechanism: &'static str,
    clients: u64,
    writes: u64,
    batch: u64,
    /// File storage (group commit) instead of memory.
    durable: bool,
    /// Snapshot interval (0: none); set on the long run that checks memory stays flat.
    snapshot_interval: u64,
    /// `memory`, or real loopback sockets: `ws`, `zmq`.
    transport: &'static str,
    /// Sample resident memory every this many writes (0: never).
    rss_every: u64,
    /// Tokio worker threads (0: cluster-bench's default, one per core).
    workers: u64,
    /// Tokio's current-thread runtime instead (`workers` is then ignored).
    current_thread: bool,
}

impl ClusterRun {
    /// Raft, memory storage, in-memory transport, no snapshots, no memory samples, default workers:
    /// the base every row of the table varies.
    /// In memory through and through (storage, transport), with no snapshots or with openraft's
    /// default snapshot policy: the openraft-comparable configurations.
    fn is_plain(&self) -> bool {
        !self.durable
            && (self.snapshot_interval == 0 || self.snapshot_interval == OPENRAFT_SNAPSHOT_INTERVAL)
            && self.transport == "memory"
    }

    fn raft(clients: u64, writes: u64) -> ClusterRun {
        ClusterRun {
            mechanism: "raft",
            clients,
            writes,
            batch: 1,
            durable: false,
            snapshot_interval: 0,
            transport: "memory",
            rss_every: 0,
            workers: 0,
            current_thread: false,
        }
    }
}

/// openraft's default snapshot policy (`SnapshotPolicy::LogsSinceLast(5000)`), which its
/// `benchmarks/minimal` does not change: its log is compacted every 5,000 entries while it runs.
const OPENRAFT_SNAPSHOT_INTERVAL: u64 = 5_000;

/// openraft's `benchmarks/minimal` on this machine kind (2 vCPU), median put/s, from the issue.
fn openraft_reference(clients: u64, batch: u64) -> Option<u64> {
    match (clients, batch) {
        (1, 1) => Some(14_000),
        (64, 1) => Some(427_000),
        (256, 1) => Some(720_000),
        (1024, 1) => Some(864_000),
        (4096, 1) => Some(774_000),
        (4096, 4) => Some(1_016_000),
        _ => None,
    }
}

pub(crate) fn run(args: &[String]) -> i32 {
    let quick = args.iter().any(|a| a == "--quick");
    let out = std::path::Path::new("target/bench-results");
    if let Err(error) = std::fs::create_dir_all(out) {
        eprintln!("xtask bench: cannot create {}: {error}", out.display());
        return 1;
    }
    // The node binary too: the failover and loopback benchmarks start `concord serve` processes.
    let status = cargo(
        &["build", "--profile", "bench-release", "-p", "concord-bench", "-p", "concord-node", "--bins"],
        &[],
    );
    if status != 0 {
        return status;
    }
    let scale = if quick { 10 } else { 1 };
    let mut runs = Vec::new();
    for (clients, writes, batch) in [
        // One client: 200k writes (about 1.3 s; 20k when quick), long enough that a moment of
        // noise on this shared machine or thread placement at start does not decide the figure.
        (1, 200_000, 1),
        (64, 500_000, 1),
        (256, 1_000_000, 1),
        (1024, 1_000_000, 1),
        (4096, 1_000_000, 1),
        (4096, 1_000_000, 4),
    ] {
        runs.push(ClusterRun { batch, ..ClusterRun::raft(clients, writes / scale) });
    }
    // The same clients against no consensus at all (`--mechanism none`): the ceiling of one
    // awaited call per write on this machine, which the goals are set against below the table.
    for (clients, writes, batch) in [
        (1, 1_000_000, 1),
        (256, 2_000_000, 1),
        (1024, 2_000_000, 1),
        (4096, 2_000_000, 1),
        (4096, 2_000_000, 4),
    ] {
        runs.push(ClusterRun { mechanism: "none", batch, ..ClusterRun::raft(clients, writes / scale) });
    }
    // With openraft's default snapshot policy, which its benchmark runs with: the log is compacted
    // every 5,000 entries instead of growing by about 570 MiB per million writes.
    for clients in [256, 1024, 4096] {
        runs.push(ClusterRun {
            snapshot_interval: OPENRAFT_SNAPSHOT_INTERVAL,
            ..ClusterRun::raft(clients, 1_000_000 / scale)
        });
    }
    // The same on one tokio worker thread (a current-thread runtime, as in `#[tokio::test]`):
    // no thread hand-offs, but the clients and the three nodes share one core.
    for (clients, writes) in [(1, 200_000), (256, 1_000_000), (4096, 1_000_000)] {
        runs.push(ClusterRun { workers: 1, ..ClusterRun::raft(clients, writes / scale) });
    }
    // Tokio's current-thread runtime: less scheduling work per wake-up than one worker of the
    // multi-thread runtime (which the ceiling shows), the consensus work unchanged.
    for (mechanism, clients, writes) in [
        ("none", 256, 2_000_000),
        ("none", 4096, 2_000_000),
        ("raft", 256, 1_000_000),
        ("raft", 4096, 1_000_000),
    ] {
        runs.push(ClusterRun {
            mechanism,
            current_thread: true,
            ..ClusterRun::raft(clients, writes / scale)
        });
    }
    // Durable group commit, and a long run with snapshots whose peak memory must stay flat.
    runs.push(ClusterRun { durable: true, ..ClusterRun::raft(256, 300_000 / scale) });
    // Resident memory over 10M writes (quick: 1M), sampled every 1M (quick: 100k).
    runs.push(ClusterRun {
        snapshot_interval: 10_000,
        rss_every: 1_000_000 / scale,
        ..ClusterRun::raft(256, 10_000_000 / scale)
    });
    // Real loopback sockets between the three nodes (still one process).
    for transport in ["ws", "zmq"] {
        for (clients, writes) in [(1, 10_000), (64, 200_000), (256, 300_000)] {
            runs.push(ClusterRun { transport, ..ClusterRun::raft(clients, writes / scale) });
        }
        runs.push(ClusterRun { durable: true, transport, ..ClusterRun::raft(256, 300_000 / scale) });
    }
    for (clients, writes) in [(1, 20_000), (64, 200_000), (256, 200_000)] {
        runs.push(ClusterRun { mechanism: "simple_majority", ..ClusterRun::raft(clients, writes / scale) });
    }
    // Cluster runs, then the process benchmarks (failover, restart, four loopback runs), the
    // simulated failover and criterion.
    let total_steps = runs.len() + 8;
    let mut cluster_rows = Vec::new();
    let mut sections = ProcessSections::default();
    // In-process runs vary by about ±20% from run to run on this 2-core machine (where tokio places
    // the nodes' and clients' tasks decides how much runs in parallel), and the machine itself is
    // slow or fast for minutes at a time: they run three times and the row shows the median
    // (openraft's reference figures are medians too). The three attempts of a row are taken in
    // three passes over all rows, not back to back, so that one slow stretch of a few minutes
    // lowers at most one attempt of each row instead of all three of some rows.
    let repeats = |run: &ClusterRun| if run.is_plain() && !quick { 3 } else { 1 };
    let passes = runs.iter().map(repeats).max().unwrap_or(1);
    let mut attempts: Vec<Vec<Attempt>> = runs.iter().map(|_| Vec::new()).collect();
    for pass in 0..passes {
        for (step, run) in runs.iter().enumerate() {
            if pass >= repeats(run) {
                continue;
            }
            eprintln!(
                "xtask bench [{}/{total_steps}] cluster {} clients={} n={} batch={} (pass {} of {})",
                step + 1,
                run.mechanism,
                run.clients,
                run.writes,
                run.batch,
                pass + 1,
                repeats(run)
            );
            attempts[step].push(run_cluster_bench(run, out));
        }
    }
    for (run, mut attempts) in runs.iter().zip(attempts) {
        let mut all_ops: Vec<u64> = attempts.iter().filter_map(|attempt| attempt.3).collect();
        all_ops.sort_unstable();
        attempts.sort_by_key(|attempt| attempt.3.unwrap_or(0));
        let (line, latency, rss, ops_per_second) = attempts.swap_remove(attempts.len() / 2);
        if run.rss_every > 0 {
            println!("{rss}");
            sections.resident_memory.push((run.writes, run.snapshot_interval, parse_resident_series(&rss)));
        }
        println!("{line}\n{latency}");
        let spread = if all_ops.len() > 1 {
            let figures: Vec<String> = all_ops.iter().map(|ops| format!("{}k", ops / 1000)).collect();
            format!("median of {}: {}", all_ops.len(), figures.join(", "))
        } else {
            String::new()
        };
        cluster_rows.push((run, line, latency, ops_per_second, spread));
    }

    let mut step = runs.len();
    let mut next_step = |what: &str| {
        step += 1;
        eprintln!("xtask bench [{step}/{total_steps}] {what}");
    };
    let out_arg = out.display().to_string();
    next_step("failover with real processes");
    let trials = if quick { "10" } else { "100" };
    sections.failover_processes = run_section(
        "failover-processes",
        &["--trials", trials, "--out", &out_arg],
        &out.join("failover-processes.md"),
    );
    next_step("restart with a 1M-entry log");
    sections.restart =
        run_section("restart-bench", &["--entries", "1000000", "--out", &out_arg], &out.join("restart.md"));
    let (writes, rtt_rounds, fsync_rounds) =
        if quick { ("2000,20000,50000", "2000", "300") } else { ("20000,200000,500000", "10000", "2000") };
    for transport in ["ws", "zmq"] {
        for storage in ["memory", "file"] {
            next_step(&format!("real processes on loopback: {transport}, {storage} storage"));
            let markdown = run_section(
                "loopback-bench",
                &[
                    "--transport",
                    transport,
                    "--storage",
                    storage,
                    "--clients",
                    "1,64,256",
                    "--writes",
                    writes,
                    "--rtt-rounds",
                    rtt_rounds,
                    "--fsync-rounds",
                    fsync_rounds,
                    "--out",
                    &out_arg,
                ],
                &out.join(format!("loopback-{transport}-{storage}.md")),
            );
            sections.loopback.push((format!("{transport}, {storage} storage"), markdown));
        }
    }

    next_step("failover (simulated, Figure 16)");
    let failover_md = out.join("failover.md");
    let mut failover_args = vec!["--out".to_owned(), out.display().to_string()];
    if quick {
        failover_args.push("--quick".to_owned());
    }
    let failover = if std::path::Path::new("target/bench-release/failover").exists() {
        match Command::new("target/bench-release/failover").args(&failover_args).status() {
            Ok(status) if status.success() => std::fs::read_to_string(&failover_md).ok(),
            _ => None,
        }
    } else {
        None
    };

    next_step("criterion micro-benchmarks");
    let mut bench_args = vec!["bench", "--workspace", "--bench", "*", "--"];
    if quick {
        bench_args.extend_from_slice(&[
            "--warm-up-time",
            "0.5",
            "--measurement-time",
            "1",
            "--sample-size",
            "10",
        ]);
    } else {
        bench_args.extend_from_slice(&[
            "--warm-up-time",
            "1",
            "--measurement-time",
            "3",
            "--sample-size",
            "20",
        ]);
    }
    let criterion_text = cargo_output(&bench_args);
    let _ = std::fs::write(out.join("criterion.txt"), &criterion_text);
    let criterion_rows = parse_criterion(&criterion_text);

    let report = benchmarks_markdown(quick, &cluster_rows, &sections, failover.as_deref(), &criterion_rows);
    match std::fs::write("BENCHMARKS.md", report) {
        Ok(()) => {
            eprintln!("xtask bench: wrote BENCHMARKS.md (raw output in {})", out.display());
            0
        }
        Err(error) => {
            eprintln!("xtask bench: cannot write BENCHMARKS.md: {error}");
            1
        }
    }
}

/// The markdown of the benchmarks that run real processes (or need a run of their own); `None`
/// where the binary failed (its error went to stderr).
#[derive(Default)]
struct ProcessSections {
    failover_processes: Option<String>,
    restart: Option<String>,
    /// (label, markdown) per transport and storage.
    loopback: Vec<(String, Option<String>)>,
    /// Per run that sampled memory.
    resident_memory: Vec<ResidentMemoryRun>,
}

/// (writes, snapshot interval, [(writes so far, resident MiB)]).
type ResidentMemoryRun = (u64, u64, Vec<(u64, u64)>);

/// Runs `target/bench-release/BINARY ARGS`, which writes its markdown to `markdown_path`.
fn run_section(binary: &str, args: &[&str], markdown_path: &std::path::Path) -> Option<String> {
    let _ = std::fs::remove_file(markdown_path);
    let path = format!("target/bench-release/{binary}");
    match Command::new(&path).args(args).stdout(std::process::Stdio::null()).status() {
        Ok(status) if status.success() => std::fs::read_to_string(markdown_path).ok(),
        Ok(status) => {
            eprintln!("xtask bench: {binary} failed ({status})");
            None
        }
        Err(error) => {
            eprintln!("xtask bench: cannot run {path}: {error}");
            None
        }
    }
}

/// Parses cluster-bench's `rss: MiB after writes: 0=15 1000000=180 ...` line.
fn parse_resident_series(line: &str) -> Vec<(u64, u64)> {
    let Some(points) = line.strip_prefix("rss: MiB after writes:") else { return Vec::new() };
    points
        .split_whitespace()
        .filter_map(|point| {
            let (writes, mebibytes) = point.split_once('=')?;
            Some((writes.parse().ok()?, mebibytes.parse().ok()?))
        })
        .collect()
}

/// Turns a document's `# ` headings into `prefix` (`## `, `### `) so it nests in BENCHMARKS.md.
fn demoted(markdown: &str, prefix: &str) -> String {
    let mut text = String::new();
    for line in markdown.lines() {
        match line.strip_prefix("# ") {
            Some(heading) => {
                text.push_str(prefix);
                text.push_str(heading);
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// (benchmark name, median time, throughput if criterion printed one)
fn parse_criterion(text: &str) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    let mut name = String::new();
    let mut last: Option<usize> = None;
    // Inside criterion's "change:" block, whose time/thrpt lines compare with the previous run.
    let mut in_change = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("change:") {
            in_change = true;
            continue;
        }
        if let Some(position) = line.find("time:") {
            let before = line[..position].trim();
            if !before.is_empty() {
                name = before.to_owned();
                in_change = false;
            }
            if in_change {
                continue;
            }
            let inside = line[position..].split(['[', ']']).nth(1).unwrap_or("");
            let parts: Vec<&str> = inside.split_whitespace().collect();
            let median =
                if parts.len() >= 4 { format!("{} {}", parts[2], parts[3]) } else { inside.to_owned() };
            rows.push((name.clone(), median, String::new()));
            last = Some(rows.len() - 1);
        } else if let Some(position) = line.find("thrpt:") {
            if in_change {
                continue;
            }
            let inside = line[position..].split(['[', ']']).nth(1).unwrap_or("");
            let parts: Vec<&str> = inside.split_whitespace().collect();
            if let (Some(index), true) = (last, parts.len() >= 4) {
                rows[index].2 = format!("{} {}", parts[2], parts[3]);
            }
        } else if !trimmed.is_empty() && !line.starts_with(' ') {
            const NOT_NAMES: [&str; 8] = [
                "Found ",
                "Benchmarking",
                "Performance",
                "No change",
                "Change within",
                "Gnuplot",
                "Warning",
                "WARNING",
            ];
            if !NOT_NAMES.iter().any(|prefix| trimmed.starts_with(prefix)) && !trimmed.contains("outliers") {
                name = trimmed.to_owned();
                in_change = false;
            }
        }
    }
    rows
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores ({cpu})")
}

fn benchmarks_markdown(
    quick: bool,
    cluster_rows: &[(&ClusterRun, String, String, Option<u64>, String)],
    sections: &ProcessSections,
    failover: Option<&str>,
    criterion_rows: &[(String, String, String)],
) -> String {
    let mut text = String::new();
    text.push_str("# Benchmarks\n\n");
    text.push_str("Written by `cargo xtask bench");
    text.push_str(if quick { " --quick" } else { "" });
    text.push_str("`; every figure below comes from that run. Machine: ");
    text.push_str(&machine_description());
    text.push_str(". Raw output: `target/bench-results/`.\n\n");
    text.push_str("## Cluster throughput (openraft-comparable)\n\n");
    text.push_str("`cargo run --profile bench-release -p concord-bench --bin cluster-bench -- -c C -n N -m 3 [-b B] [--mechanism M]`: three nodes in one\n");
    text.push_str("process, in-memory log and transport, a no-op state machine (Raft) or the key-value machine with one key per client\n");
    text.push_str(
        "(simple majority), empty values, C clients writing sequentially through the public async API.\n",
    );
    text.push_str("Every binary here is built with the `bench-release` profile (thin LTO, one codegen unit), as openraft's\n");
    text.push_str("`benchmarks/minimal` is built; tests, the demo and `--release` builds do not use it.\n");
    text.push_str("The openraft column is the issue's reference for openraft's `benchmarks/minimal` on this machine kind.\n\n");
    text.push_str("Durable rows use `--data-dir` (concord-storage, one fdatasync per persisted batch); the long snapshot row\n");
    text.push_str("sets `--snapshot-interval 10000` and reports peak resident memory, which must not grow with the number of writes.\n");
    text.push_str("Rows with `snapshot every 5000` use openraft's default snapshot policy (`LogsSinceLast(5000)`), which its benchmark\n");
    text.push_str("runs with; rows with plain `memory` keep the whole log (about 570 MiB per million writes, whose page faults\n");
    text.push_str("cost about a sixth of the CPU time here). Both are compared with openraft's figure.\n\n");
    text.push_str("Tokio workers: cluster-bench's default is one worker thread per core; `1` runs clients and nodes on one worker thread;\n");
    text.push_str("`current thread` on tokio's current-thread runtime (`--current-thread`, one thread without work stealing).\n\n");
    if !quick {
        text.push_str("In-process rows without storage or snapshots run three times, in three passes over all rows (so that a slow\n");
        text.push_str("stretch of this shared machine lowers one attempt of each row, not all three of some); the row shows the median\n");
        text.push_str("run (its output line) and all three figures: they vary by about ±20% with where tokio places the tasks on the two cores.\n\n");
    }
    text.push_str("| mechanism | storage | clients | batch | tokio workers | writes | concord ops/s | openraft ops/s | goal | latency and memory | output line |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (run, line, latency, ops, spread) in cluster_rows {
        let reference = if run.mechanism == "raft" && run.is_plain() {
            openraft_reference(run.clients, run.batch)
        } else {
            None
        };
        let storage = match (run.durable, run.snapshot_interval) {
            (true, _) => "file".to_owned(),
            (false, 0) => "memory".to_owned(),
            (false, interval) => format!("memory, snapshot every {interval}"),
        };
        let storage = if run.transport == "memory" {
            storage
        } else {
            format!("{storage}, {} on loopback (one process)", run.transport)
        };
        let goal = match (run.mechanism, run.clients, reference, ops) {
            ("raft", 1, Some(r), Some(o)) => {
                if *o >= 10 * r {
                    "≥10× met"
                } else {
                    "≥10×: missed"
                }
            }
            ("raft", c, Some(r), Some(o)) if c >= 256 => {
                if *o >= 3 * r {
                    "≥3× met"
                } else {
                    "≥3×: missed"
                }
            }
            _ if run.durable => match ops {
                Some(o) if *o >= 100_000 => "≥100k durable: met (in-process)",
                _ => "≥100k durable: missed",
            },
            _ => "",
        };
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | `{}` |\n",
            if run.mechanism == "none" { "none (the ceiling)" } else { run.mechanism },
            storage,
            run.clients,
            run.batch,
            match (run.current_thread, run.workers) {
                (true, _) => "current thread".to_owned(),
                (false, 0) => "one per core".to_owned(),
                (false, workers) => workers.to_string(),
            },
            run.writes,
            match (ops, spread.is_empty()) {
                (None, _) => "failed".to_owned(),
                (Some(ops), true) => ops.to_string(),
                (Some(ops), false) => format!("{ops} ({spread})"),
            },
            reference.map_or("—".to_owned(), |r| r.to_string()),
            goal,
            latency.trim_start_matches("latency: "),
            line
        ));
    }
    text.push_str(&ceiling_markdown(cluster_rows));
    text.push_str("\n## Real processes on loopback\n\n");
    text.push_str(
        "Every consensus message crosses a process boundary: member `n1` runs in the benchmark process and leads \
         (election timeout 150–300 ms; the `concord serve` child processes `n2` and `n3` wait 5–10 s before \
         campaigning), clients call `Consensus::propose_bytes` on `n1`, each writing its own key sequentially \
         (key-value state machine, empty values). The transport's round trip and the raw fdatasync time are measured \
         in the same run; latency is per write, over every write of the run.\n\n",
    );
    for (label, markdown) in &sections.loopback {
        match markdown {
            Some(markdown) => text.push_str(markdown),
            None => text
                .push_str(&format!("### {label}\n\nNot measured in this run (`loopback-bench` failed).\n")),
        }
        text.push('\n');
    }
    text.push_str("## Memory and recovery\n\n");
    for (writes, interval, series) in &sections.resident_memory {
        text.push_str(&format!(
            "### Resident memory over {writes} writes\n\n`cluster-bench -c 256 -n {writes} -m 3 --snapshot-interval {interval} \
             --rss-every N`: three members in one process, in-memory log; VmRSS of the process after every N writes. \
             Goal: flat (here: the peak of the second half of the run at most 25% above the peak of the first half).\n\n"
        ));
        text.push_str(&resident_memory_table(series));
        text.push('\n');
    }
    match &sections.restart {
        Some(markdown) => text.push_str(&demoted(markdown, "### ")),
        None => text
            .push_str("### Restart with a long log\n\nNot measured in this run (`restart-bench` failed).\n"),
    }
    text.push('\n');
    match &sections.failover_processes {
        Some(markdown) => text.push_str(&demoted(markdown, "## ")),
        None => text.push_str(
            "## Failover with real processes\n\nNot measured in this run (`failover-processes` failed).\n",
        ),
    }
    text.push_str("\n## Failover (simulated, after Figure 16 of the Raft paper)\n\n");
    match failover {
        // The failover report is a document of its own: demote its headings under this section.
        Some(table) => {
            for line in table.lines() {
                if let Some(heading) = line.strip_prefix("# ") {
                    text.push_str("### ");
                    text.push_str(heading);
                } else {
                    text.push_str(line);
                }
                text.push('\n');
            }
        }
        None => text.push_str("Not measured in this run (the `failover` binary is missing or failed).\n"),
    }
    text.push_str("\n## Micro-benchmarks (criterion)\n\n`cargo bench --workspace --bench '*'`; median time per iteration (and throughput where the\nbenchmark declares one). Storage and transport reference figures from the issues: storage prototype 586–627k\nentries/s at batch 100 (redb 289–316k/s, raw fdatasync 7.4–9k/s); zeromq ~2M 16-byte messages/s one way,\ntungstenite 4–12M/s, round trip 19–60 µs.\n\n");
    text.push_str("| benchmark | median | throughput |\n|---|---|---|\n");
    for (name, median, throughput) in criterion_rows {
        text.push_str(&format!("| `{name}` | {median} | {throughput} |\n"));
    }
    text
}

/// The resident-memory series as a table, with the flatness verdict.
fn resident_memory_table(series: &[(u64, u64)]) -> String {
    if series.is_empty() {
        return "Not measured in this run (the run failed or printed no `rss:` line).\n".to_owned();
    }
    let mut text = String::from("| writes | resident MiB |\n|---|---|\n");
    for (writes, mebibytes) in series {
        text.push_str(&format!("| {writes} | {mebibytes} |\n"));
    }
    let after_start: Vec<u64> = series.iter().filter(|(writes, _)| *writes > 0).map(|(_, m)| *m).collect();
    // Flat: the peak of the second half of the run is at most 25% above the peak of the first
    // half (the first samples include the warm-up, when queues and caches fill).
    let (first_half, second_half) = after_start.split_at(after_start.len() / 2);
    text.push_str(&match (first_half.iter().max(), second_half.iter().max()) {
        (Some(first), Some(second)) => {
            let flat = *second * 100 <= *first * 125;
            format!(
                "\nPeak of the first half of the run {first} MiB, of the second half {second} MiB: {}.\n",
                if flat { "flat (goal met)" } else { "**missed** (memory grows with the writes)" }
            )
        }
        _ => "\nToo few samples to judge flatness.\n".to_owned(),
    });
    text
}

fn cargo_output(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    match Command::new(cargo).args(args).stderr(std::process::Stdio::inherit()).output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned(),
        Err(error) => {
            eprintln!("xtask: cannot run cargo: {error}");
            String::new()
        }
    }
}

/// The ceiling rows (`--mechanism none`) set against the Raft rows and the goals: how much of what
/// this machine allows one awaited call per write concord reaches, and whether a goal is within it.
fn ceiling_markdown(cluster_rows: &[(&ClusterRun, String, String, Option<u64>, String)]) -> String {
    let find = |mechanism: &str, clients: u64, batch: u64, current_thread: bool| {
        cluster_rows.iter().find_map(|(run, _, _, ops, _)| {
            let plain = run.is_plain() && run.snapshot_interval == 0 && run.workers == 0;
            let matches = run.mechanism == mechanism
                && run.clients == clients
                && run.batch == batch
                && run.current_thread == current_thread;
            (plain && matches).then_some(*ops).flatten()
        })
    };
    let mut text = String::new();
    text.push_str("\n### The ceiling: one awaited call per write, no consensus\n\n");
    text.push_str(
        "Rows `none (the ceiling)` run the same clients with `--mechanism none`: every write takes the path a write \
        to a node takes outside consensus (the command moved to another task through a locked inbox, one wake-up of that \
        task per batch, a `ProposalResult` answered through a oneshot channel per write) and nothing else. No library \
        whose API is one awaited call per write, as openraft's `client_write` and the lesson's `propose` are, can go \
        faster on the same tokio runtime on this machine; a goal above the ceiling leaves no time at all for consensus.\n\n",
    );
    text.push_str("| tokio runtime | clients | batch | ceiling ops/s | concord Raft ops/s | Raft / ceiling | goal ops/s | goal / ceiling |\n|---|---|---|---|---|---|---|---|\n");
    let rows = [(1, 1, 10), (256, 1, 3), (1024, 1, 3), (4096, 1, 3), (4096, 4, 3)];
    for current_thread in [false, true] {
        for (clients, batch, multiple) in rows {
            let ceiling = find("none", clients, batch, current_thread);
            let raft = find("raft", clients, batch, current_thread);
            let (Some(ceiling), Some(raft)) = (ceiling, raft) else { continue };
            let goal = openraft_reference(clients, batch).map(|reference| reference * multiple);
            let ratio = |value: u64| format!("{:.2}", value as f64 / ceiling.max(1) as f64);
            text.push_str(&format!(
                "| {} | {clients} | {batch} | {ceiling} | {raft} | {} | {} | {} |\n",
                if current_thread { "current thread" } else { "multi-thread, one worker per core" },
                ratio(raft),
                goal.map_or("—".to_owned(), |goal| format!("{goal} ({multiple}× openraft)")),
                goal.map_or("—".to_owned(), ratio),
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{
        ceiling_markdown, demoted, parse_criterion, parse_resident_series, resident_memory_table, ClusterRun,
    };

    #[test]
    fn resident_series_is_parsed_and_judged() {
        let series = parse_resident_series("rss: MiB after writes: 0=15 100000=180 200000=185 bad 300000=x");
        assert_eq!(series, vec![(0, 15), (100_000, 180), (200_000, 185)]);
        assert!(parse_resident_series("latency: p50 1 µs").is_empty());
        assert!(resident_memory_table(&series).contains("flat (goal met)"));
        assert!(resident_memory_table(&[(0, 15), (1, 100), (2, 200)]).contains("**missed**"));
        assert!(resident_memory_table(&[]).contains("Not measured"));
    }

    #[test]
    fn headings_are_demoted() {
        assert_eq!(
            demoted("# Title\n\ntext # not a heading\n## Kept", "### "),
            "### Title\n\ntext # not a heading\n## Kept\n"
        );
        assert_eq!(demoted("# Title", "## "), "## Title\n");
    }

    #[test]
    fn criterion_output_is_parsed_without_the_change_blocks() {
        let text = "\
codec/append_64/plain/encode
                        time:   [3.3000 µs 3.3565 µs 3.4000 µs]
                        thrpt:  [1.8000 GiB/s 1.8718 GiB/s 1.9000 GiB/s]
                 change:
                        time:   [-42.787% -38.185% -33.237%] (p = 0.00 < 0.05)
                        thrpt:  [+49.9% +61.7% +74.8%]
                        Performance has improved.
kv/apply_put            time:   [116.89 ns 117.01 ns 117.09 ns]
                        change: [-59.375% -56.446% -53.191%] (p = 0.00 < 0.05)
Found 2 outliers among 10 measurements (20.00%)

majority: one uncontended vote round, 3 nodes
                        time:   [12.999 µs 13.274 µs 13.421 µs]
";
        let rows = parse_criterion(text);
        assert_eq!(
            rows,
            vec![
                ("codec/append_64/plain/encode".into(), "3.3565 µs".into(), "1.8718 GiB/s".into()),
                ("kv/apply_put".into(), "117.01 ns".into(), String::new()),
                ("majority: one uncontended vote round, 3 nodes".into(), "13.274 µs".into(), String::new()),
            ]
        );
    }

    #[test]
    fn the_ceiling_table_sets_raft_and_the_goal_against_the_no_consensus_row() {
        let none = ClusterRun { mechanism: "none", ..ClusterRun::raft(256, 1000) };
        let raft = ClusterRun::raft(256, 1000);
        let snapshots = ClusterRun { snapshot_interval: 5_000, ..ClusterRun::raft(256, 1000) };
        let row = |run, ops: u64| (run, String::new(), String::new(), Some(ops), String::new());
        let none_one_thread = ClusterRun {
            current_thread: true,
            ..ClusterRun { mechanism: "none", ..ClusterRun::raft(256, 1000) }
        };
        let raft_one_thread = ClusterRun { current_thread: true, ..ClusterRun::raft(256, 1000) };
        let rows = vec![
            row(&none, 1_500_000),
            row(&snapshots, 1),
            row(&raft, 750_000),
            row(&none_one_thread, 5_000_000),
            row(&raft_one_thread, 600_000),
        ];
        let text = ceiling_markdown(&rows);
        // 3× openraft's 720,000 is 2,160,000: 1.44 times the ceiling. The snapshot row is not the
        // plain one.
        assert!(
            text.contains("| 256 | 1 | 1500000 | 750000 | 0.50 | 2160000 (3× openraft) | 1.44 |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| current thread | 256 | 1 | 5000000 | 600000 | 0.12 | 2160000 (3× openraft) | 0.43 |"
            ),
            "{text}"
        );
        // No row for a client count without both figures.
        assert!(!text.contains("| 4096 |"), "{text}");
    }
}
