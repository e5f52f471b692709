//! `cargo xtask bench`: every benchmark, and BENCHMARKS.md from their results.

use std::process::Command;

use crate::cargo;

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
}

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
    let status = cargo(&["build", "--release", "-p", "concord-bench", "--bins"], &[]);
    if status != 0 {
        return status;
    }
    let scale = if quick { 10 } else { 1 };
    let mut runs = Vec::new();
    for (clients, writes, batch) in [
        (1, 50_000, 1),
        (64, 500_000, 1),
        (256, 1_000_000, 1),
        (1024, 1_000_000, 1),
        (4096, 1_000_000, 1),
        (4096, 1_000_000, 4),
    ] {
        runs.push(ClusterRun {
            mechanism: "raft",
            clients,
            writes: writes / scale,
            batch,
            durable: false,
            snapshot_interval: 0,
            transport: "memory",
        });
    }
    // Durable group commit, and a long run with snapshots whose peak memory must stay flat.
    runs.push(ClusterRun {
        mechanism: "raft",
        clients: 256,
        writes: 300_000 / scale,
        batch: 1,
        durable: true,
        snapshot_interval: 0,
        transport: "memory",
    });
    runs.push(ClusterRun {
        mechanism: "raft",
        clients: 256,
        writes: 3_000_000 / scale,
        batch: 1,
        durable: false,
        snapshot_interval: 10_000,
        transport: "memory",
    });
    // Real loopback sockets between the three nodes (still one process).
    for transport in ["ws", "zmq"] {
        for (clients, writes) in [(1, 10_000), (64, 200_000), (256, 300_000)] {
            runs.push(ClusterRun {
                mechanism: "raft",
                clients,
                writes: writes / scale,
                batch: 1,
                durable: false,
                snapshot_interval: 0,
                transport,
            });
        }
        runs.push(ClusterRun {
            mechanism: "raft",
            clients: 256,
            writes: 300_000 / scale,
            batch: 1,
            durable: true,
            snapshot_interval: 0,
            transport,
        });
    }
    for (clients, writes) in [(1, 20_000), (64, 200_000), (256, 200_000)] {
        runs.push(ClusterRun {
            mechanism: "simple_majority",
            clients,
            writes: writes / scale,
            batch: 1,
            durable: false,
            snapshot_interval: 0,
            transport: "memory",
        });
    }
    let total_steps = runs.len() + 2;
    let mut cluster_rows = Vec::new();
    for (step, run) in runs.iter().enumerate() {
        eprintln!(
            "xtask bench [{}/{total_steps}] cluster {} clients={} n={} batch={}",
            step + 1,
            run.mechanism,
            run.clients,
            run.writes,
            run.batch
        );
        let data_dir = out.join("cluster-data");
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut command = Command::new("target/release/cluster-bench");
        command
            .args(["-c", &run.clients.to_string(), "-n", &run.writes.to_string(), "-m", "3"])
            .args(["-b", &run.batch.to_string(), "--mechanism", run.mechanism])
            .args(["--snapshot-interval", &run.snapshot_interval.to_string()])
            .args(["--transport", run.transport]);
        if run.durable {
            command.arg("--data-dir").arg(&data_dir);
        }
        let (line, latency) = match command.output() {
            Ok(output) if output.status.success() => {
                let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
                let find =
                    |prefix: &str| stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or("").to_owned();
                (find("clients:"), find("latency:"))
            }
            Ok(output) => {
                (format!("failed: {}", String::from_utf8_lossy(&output.stderr).trim()), String::new())
            }
            Err(error) => (format!("failed: {error}"), String::new()),
        };
        let _ = std::fs::remove_dir_all(&data_dir);
        println!("{line}\n{latency}");
        let ops_per_second = line
            .split("op/ms: ")
            .nth(1)
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(|per_ms| per_ms * 1000);
        cluster_rows.push((run, line, latency, ops_per_second));
    }

    eprintln!("xtask bench [{}/{total_steps}] failover (simulated, Figure 16)", runs.len() + 1);
    let failover_md = out.join("failover.md");
    let mut failover_args = vec!["--out".to_owned(), out.display().to_string()];
    if quick {
        failover_args.push("--quick".to_owned());
    }
    let failover = if std::path::Path::new("target/release/failover").exists() {
        match Command::new("target/release/failover").args(&failover_args).status() {
            Ok(status) if status.success() => std::fs::read_to_string(&failover_md).ok(),
            _ => None,
        }
    } else {
        None
    };

    eprintln!("xtask bench [{total_steps}/{total_steps}] criterion micro-benchmarks");
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

    let report = benchmarks_markdown(quick, &cluster_rows, failover.as_deref(), &criterion_rows);
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
    cluster_rows: &[(&ClusterRun, String, String, Option<u64>)],
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
    text.push_str("`cargo run --release -p concord-bench --bin cluster-bench -- -c C -n N -m 3 [-b B] [--mechanism M]`: three nodes in one\n");
    text.push_str("process, in-memory log and transport, a no-op state machine (Raft) or the key-value machine with one key per client\n");
    text.push_str(
        "(simple majority), empty values, C clients writing sequentially through the public async API.\n",
    );
    text.push_str("The openraft column is the issue's reference for openraft's `benchmarks/minimal` on this machine kind.\n\n");
    text.push_str("Durable rows use `--data-dir` (concord-storage, one fdatasync per persisted batch); the snapshot row\n");
    text.push_str("sets `--snapshot-interval 10000` and reports peak resident memory, which must not grow with the number of writes.\n\n");
    text.push_str("| mechanism | storage | clients | batch | writes | concord ops/s | openraft ops/s | goal | latency and memory | output line |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (run, line, latency, ops) in cluster_rows {
        let plain = !run.durable && run.snapshot_interval == 0 && run.transport == "memory";
        let reference =
            if run.mechanism == "raft" && plain { openraft_reference(run.clients, run.batch) } else { None };
        let storage = match (run.durable, run.snapshot_interval) {
            (true, _) => "file".to_owned(),
            (false, 0) => "memory".to_owned(),
            (false, interval) => format!("memory, snapshot every {interval}"),
        };
        let storage = if run.transport == "memory" {
            storage
        } else {
            format!("{storage}, {} on loopback", run.transport)
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | `{}` |\n",
            run.mechanism,
            storage,
            run.clients,
            run.batch,
            run.writes,
            ops.map_or("failed".to_owned(), |o| o.to_string()),
            reference.map_or("—".to_owned(), |r| r.to_string()),
            goal,
            latency.trim_start_matches("latency: "),
            line
        ));
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

#[cfg(test)]
mod tests {
    use super::parse_criterion;

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
}
