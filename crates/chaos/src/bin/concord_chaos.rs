//! `concord-chaos`: the chaos run (`run`, what `cargo xtask chaos` calls), its helpers that run
//! inside the network namespaces (`client`, `final-reads`, `probe`), and `check` for a recorded
//! history.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use concord_chaos::client::{self, ClientOptions, ClientOutput, RunClock};
use concord_chaos::format::{EventType, Function, HistoryEvent, JsonLinesWriter};
use concord_chaos::run::{self, RunOptions, TransportKind};
use concord_node::client::HttpClient;
use serde_json::{json, Value};

/// Exit code: a violation was found (or, with `--expect-violations`, none was).
const EXIT_VIOLATION: u8 = 1;
/// Exit code: bad usage, or the run could not be set up.
const EXIT_SETUP: u8 = 2;
/// Exit code: not root.
const EXIT_NOT_ROOT: u8 = 3;
/// Lines of the checker's report printed; the whole report goes to `violations.txt`.
const VIOLATION_LINES_PRINTED: usize = 30;

fn print_summary(report: &run::RunReport) {
    let summary = &report.check.summary;
    println!("operations: {}", summary.operations);
    for (f, counts) in &summary.by_function {
        println!("  {:<6} ok {:>7}  fail {:>7}  info {:>5}", f.as_str(), counts.ok, counts.fail, counts.info);
    }
    let faults: Vec<String> = report.faults.iter().map(|(name, count)| format!("{name} ×{count}")).collect();
    println!("faults: {}", if faults.is_empty() { "none".into() } else { faults.join(", ") });
    println!(
        "availability (operations by the phase they began in; ok includes CAS answered with a conflict):"
    );
    for phase in &report.availability {
        let total = phase.ok + phase.fail + phase.info;
        let percent = if total == 0 { 0.0 } else { 100.0 * phase.ok as f64 / total as f64 };
        println!(
            "  {:<32} ok {:>7} of {:>7} ({percent:5.1}%)  fail {:>6}  info {:>5}",
            phase.phase, phase.ok, total, phase.fail, phase.info
        );
    }
    println!("served after healing: {} ok operations", report.ok_after_heal);
    println!("plain reads of values never written: {}", report.never_written_local_reads);
    match &report.divergence {
        None => println!("convergence: every node holds the same state"),
        Some(divergence) => println!("convergence: FAILED: {divergence}"),
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "concord-chaos",
    about = "Fault tests of concord against real processes and real network cuts"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// A whole run (as root): namespaces, nodes, clients, nemesis, verdict.
    Run {
        /// Cluster size (3 or 5).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Peer transport: ws or zmq.
        #[arg(long, default_value = "ws")]
        transport: String,
        /// Client time in all, e.g. `60s`, `10m`.
        #[arg(long, default_value = "60s")]
        duration: String,
        /// Seed of the nemesis and clients.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// The `concord` binary.
        #[arg(long)]
        concord: PathBuf,
        /// Nodes acknowledge writes before they commit (binary built with feature unsafe-test-broken).
        #[arg(long)]
        broken: bool,
        /// Succeed only if violations are found (for the broken run in CI).
        #[arg(long)]
        expect_violations: bool,
    },
    /// Client processes against one node (run inside its namespace).
    Client {
        #[arg(long)]
        node: String,
        #[arg(long)]
        node_name: String,
        /// Another node, `NAME=URL`, used while `--node` refuses connections (repeatable).
        #[arg(long = "fallback", value_name = "NAME=URL")]
        fallbacks: Vec<String>,
        #[arg(long, default_value_t = 3)]
        processes: u64,
        #[arg(long)]
        first_process: u64,
        #[arg(long, default_value_t = 5)]
        registers: u64,
        #[arg(long, default_value_t = 2)]
        counters: u64,
        #[arg(long, default_value_t = 10_000)]
        key_period_ms: u64,
        #[arg(long)]
        origin_unix_ns: u64,
        #[arg(long)]
        duration_ms: u64,
        #[arg(long, default_value_t = 100_000)]
        operations_max: u64,
        #[arg(long, default_value_t = 3_000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        history: PathBuf,
        #[arg(long)]
        local_reads: PathBuf,
    },
    /// One consistent read of every register, retried until it succeeds (bounded).
    FinalReads {
        #[arg(long)]
        node: String,
        #[arg(long)]
        node_name: String,
        #[arg(long, default_value_t = 5)]
        registers: u64,
        #[arg(long, default_value_t = 1)]
        generations: u64,
        #[arg(long)]
        origin_unix_ns: u64,
        #[arg(long)]
        first_process: u64,
        #[arg(long)]
        history: PathBuf,
    },
    /// Prints `{"status": …, "values": {…}}` for one node (run inside its namespace).
    Probe {
        #[arg(long)]
        node: String,
        #[arg(long, default_value_t = 5)]
        registers: u64,
        #[arg(long, default_value_t = 2)]
        counters: u64,
        #[arg(long, default_value_t = 1)]
        generations: u64,
        #[arg(long)]
        status_only: bool,
    },
    /// Checks a recorded history.jsonl.
    Check {
        /// The history file.
        history: PathBuf,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 =
        number.parse().map_err(|_| format!("bad duration {text:?}: expected e.g. 45s or 10m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" | "min" => Ok(Duration::from_secs(value * 60)),
        "ms" => Ok(Duration::from_millis(value)),
        _ => Err(format!("bad duration unit in {text:?}: use ms, s or m")),
    }
}

fn create(path: &PathBuf) -> Result<JsonLinesWriter<BufWriter<File>>, String> {
    File::create(path)
        .map(|file| JsonLinesWriter::new(BufWriter::new(file)))
        .map_err(|error| format!("cannot create {}: {error}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_command(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("concord-chaos: {error}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn run_command(command: Commands) -> Result<u8, String> {
    match command {
        Commands::Run { nodes, transport, duration, seed, out, concord, broken, expect_violations } => {
            if !run::is_root() {
                eprintln!(
                    "concord-chaos: a chaos run needs root (it creates network namespaces and nftables rules).\n\
                     Run it as root, e.g. `sudo -E cargo xtask chaos …`. Nothing was tested."
                );
                return Ok(EXIT_NOT_ROOT);
            }
            if nodes != 3 && nodes != 5 {
                return Err("--nodes must be 3 or 5".into());
            }
            let transport = match transport.as_str() {
                "ws" => TransportKind::WebSocket,
                "zmq" => TransportKind::ZeroMq,
                other => return Err(format!("--transport {other:?}: expected ws or zmq")),
            };
            let duration = parse_duration(&duration)?;
            if duration < Duration::from_secs(20) {
                return Err("--duration must be at least 20s (faults, then healing and settling)".into());
            }
            let client =
                std::env::current_exe().map_err(|error| format!("cannot find my own binary: {error}"))?;
            let options =
                RunOptions { nodes, transport, duration, seed, out: out.clone(), concord, client, broken };
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            ctrlc::set_handler(move || {
                eprintln!("concord-chaos: interrupted; cleaning up");
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            })
            .map_err(|error| format!("cannot install the Ctrl-C handler: {error}"))?;
            let report = run::run(&options, stop)?;
            let summary = run::summary_json(&options, &report);
            let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
            let _ = std::fs::write(out.join("summary.json"), &text);
            print_summary(&report);
            if !report.check.is_valid() {
                let full = report.check.to_string();
                let _ = std::fs::write(out.join("violations.txt"), &full);
                for line in full.lines().take(VIOLATION_LINES_PRINTED) {
                    println!("{line}");
                }
                println!("(all violations: {})", out.join("violations.txt").display());
            }
            let valid = report.is_valid();
            println!(
                "chaos: {} — {} operations, {} faults; history in {}",
                if valid { "PASS: no violation" } else { "FAIL: violations found" },
                report.check.summary.operations,
                report.faults.values().sum::<u64>(),
                out.join("history.jsonl").display()
            );
            if expect_violations {
                if valid {
                    println!("chaos: expected violations (broken node) but found none");
                    return Ok(EXIT_VIOLATION);
                }
                println!("chaos: violations found, as expected of a broken node");
                return Ok(0);
            }
            Ok(if valid { 0 } else { EXIT_VIOLATION })
        }
        Commands::Client {
            node,
            node_name,
            fallbacks,
            processes,
            first_process,
            registers,
            counters,
            key_period_ms,
            origin_unix_ns,
            duration_ms,
            operations_max,
            timeout_ms,
            seed,
            history,
            local_reads,
        } => {
            let fallbacks = fallbacks
                .iter()
                .map(|fallback| {
                    fallback
                        .split_once('=')
                        .map(|(name, url)| (name.to_owned(), url.to_owned()))
                        .ok_or_else(|| format!("--fallback {fallback:?}: expected NAME=URL"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let options = ClientOptions {
                node,
                node_name,
                fallbacks,
                processes,
                first_process,
                register_keys: registers,
                counter_keys: counters,
                key_period: Duration::from_millis(key_period_ms.max(1)),
                request_timeout: Duration::from_millis(timeout_ms),
                duration: Duration::from_millis(duration_ms),
                operations_max,
                seed,
                think_time: Duration::from_millis(2),
            };
            let output = ClientOutput { history: create(&history)?, local_reads: create(&local_reads)? };
            let stop = AtomicBool::new(false);
            let totals = client::run(&options, RunClock::new(origin_unix_ns), output, &stop)?;
            eprintln!(
                "client {}: ok {} fail {} info {}",
                options.node_name, totals.ok, totals.fail, totals.info
            );
            Ok(0)
        }
        Commands::FinalReads {
            node,
            node_name,
            registers,
            generations,
            origin_unix_ns,
            first_process,
            history,
        } => {
            let client = HttpClient::new(&node, Duration::from_secs(3)).map_err(|error| error.to_string())?;
            let clock = RunClock::new(origin_unix_ns);
            let mut writer = create(&history)?;
            let mut all_ok = true;
            let keys = client::generation_keys(generations, registers);
            for (number, (generation, index)) in keys.enumerate() {
                let key = client::register_key(generation, index);
                let mut done = false;
                for attempt in 0..20u64 {
                    let process = first_process + number as u64 * 100 + attempt;
                    let event = |event_type, value, time| HistoryEvent {
                        process,
                        event_type,
                        f: Function::Read,
                        key: key.clone(),
                        value,
                        time,
                        node: Some(node_name.clone()),
                        error: None,
                    };
                    let invoked = clock.now();
                    let outcome = client.get(&format!("/v1/kv/{key}?consistent=true"));
                    let completion = client::classify(Function::Read, &outcome);
                    let time = clock.now();
                    if let client::Completion::Ok(value) = completion {
                        writer
                            .write(&event(EventType::Invoke, Value::Null, invoked))
                            .map_err(|e| e.to_string())?;
                        writer.write(&event(EventType::Ok, value, time)).map_err(|e| e.to_string())?;
                        done = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                all_ok &= done;
            }
            writer.flush().map_err(|error| error.to_string())?;
            Ok(if all_ok { 0 } else { 1 })
        }
        Commands::Probe { node, registers, counters, generations, status_only } => {
            let client = HttpClient::new(&node, Duration::from_secs(2)).map_err(|error| error.to_string())?;
            let status = client.get("/v1/status").map_err(|error| error.to_string())?;
            if !status.is_success() {
                return Err(format!("status answered {}", status.status));
            }
            let mut values = serde_json::Map::new();
            if !status_only {
                for (generation, index) in client::generation_keys(generations, registers) {
                    let key = client::register_key(generation, index);
                    let response = client.get(&format!("/v1/kv/{key}")).map_err(|error| error.to_string())?;
                    let value = match response.status {
                        200 => response.json()["value"].clone(),
                        404 => Value::Null,
                        other => return Err(format!("reading {key} answered {other}")),
                    };
                    values.insert(key, value);
                }
                for (generation, index) in client::generation_keys(generations, counters) {
                    let key = client::counter_key(generation, index);
                    let response =
                        client.get(&format!("/v1/counter/{key}")).map_err(|error| error.to_string())?;
                    if !response.is_success() {
                        return Err(format!("reading {key} answered {}", response.status));
                    }
                    values.insert(key, response.json()["value"].clone());
                }
            }
            println!("{}", json!({ "status": status.json(), "values": values }));
            Ok(0)
        }
        Commands::Check { history } => {
            let file = File::open(&history).map_err(|error| format!("{}: {error}", history.display()))?;
            let report =
                concord_chaos::check_jsonl(BufReader::new(file)).map_err(|error| error.to_string())?;
            println!("{report}");
            Ok(if report.is_valid() { 0 } else { EXIT_VIOLATION })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
