//! `cargo xtask`: the workspace's automation (demo, simulation runs, benchmarks).
//!
//! It only runs cargo and the workspace's binaries and tests; no library depends on it.

mod bench;
mod chaos;
mod cluster;

use std::process::{exit, Command};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo                                   run the in-process demo (5-node Raft game, 3-node majority vote)
  sim [--mechanism raft|majority] [--seeds N] [--seed S]
                                         run N randomized simulation seeds (or replay seed S), release build
  bench [--quick]                        run every benchmark and write BENCHMARKS.md
  chaos [--nodes 3|5] [--transport ws|zmq] [--duration 60s] [--seed S] [--out DIR] [--broken]
                                         fault test (as root): real processes in network namespaces,
                                         nftables partitions, kill -9, pauses; checks the history
  cluster up [-n 3|5] [--transport ws|zmq] [--storage file|memory]
                                         start a local cluster of `concord serve` processes on 127.0.0.1
  cluster status                         show each node of that cluster
  cluster down                           stop it (SIGTERM) and forget it
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        exit(2);
    };
    let rest = &args[1..];
    let status = match command.as_str() {
        "demo" => cargo(&["run", "--release", "--quiet", "-p", "concord-runtime", "--example", "demo"], &[]),
        "sim" => sim(rest),
        "bench" => bench::run(rest),
        "chaos" => chaos::run(rest),
        "cluster" => cluster::run(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            0
        }
        other => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            2
        }
    };
    exit(status);
}

pub(crate) fn flag_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn sim(args: &[String]) -> i32 {
    let mechanisms: Vec<&str> = match flag_value(args, "--mechanism") {
        Some("raft") => vec!["raft"],
        Some("majority") | Some("simple_majority") => vec!["majority"],
        None => vec!["raft", "majority"],
        Some(other) => {
            eprintln!("xtask sim: unknown mechanism {other:?} (raft or majority)");
            return 2;
        }
    };
    let mut env: Vec<(&str, String)> = Vec::new();
    if let Some(seeds) = flag_value(args, "--seeds") {
        if seeds.parse::<u64>().is_err() {
            eprintln!("xtask sim: --seeds takes a number, got {seeds:?}");
            return 2;
        }
        env.push(("CONCORD_SIM_SEEDS", seeds.to_owned()));
    }
    if let Some(seed) = flag_value(args, "--seed") {
        if seed.parse::<u64>().is_err() {
            eprintln!("xtask sim: --seed takes a number, got {seed:?}");
            return 2;
        }
        env.push(("CONCORD_SIM_SEED", seed.to_owned()));
    }
    for mechanism in mechanisms {
        let package = format!("concord-{mechanism}");
        let status = cargo(
            &[
                "test",
                "--release",
                "-p",
                &package,
                "--test",
                "simulation",
                "--",
                "--nocapture",
                "--test-threads",
                "1",
            ],
            &env,
        );
        if status != 0 {
            return status;
        }
    }
    0
}

pub(crate) fn cargo(args: &[&str], env: &[(&str, String)]) -> i32 {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut command = Command::new(cargo);
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    match command.status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(error) => {
            eprintln!("xtask: cannot run cargo: {error}");
            1
        }
    }
}
