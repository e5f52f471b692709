//! `cargo xtask chaos`: builds `concord` and `concord-chaos`, then runs `concord-chaos run` (as
//! root): real `concord serve` processes in network namespaces, nftables cuts, kills and pauses,
//! clients inside the namespaces, and the verdict on the recorded history.
//!
//! `--broken` builds `concord` with the test-only feature `unsafe-test-broken` and starts the nodes
//! with `--unsafe-ack-before-commit`; the run then passes only if the checker finds violations.

use std::process::Command;

use crate::{cargo, flag_value};

pub(crate) const USAGE: &str = "usage: cargo xtask chaos [--nodes 3|5] [--transport ws|zmq] [--duration 60s] [--seed S] [--out DIR] [--broken]";

pub(crate) fn run(args: &[String]) -> i32 {
    let nodes = flag_value(args, "--nodes").unwrap_or("3");
    let transport = flag_value(args, "--transport").unwrap_or("ws");
    let duration = flag_value(args, "--duration").unwrap_or("60s");
    let seed = flag_value(args, "--seed").unwrap_or("1");
    let broken = args.iter().any(|arg| arg == "--broken");
    let default_out =
        format!("target/chaos/{transport}-{nodes}-{seed}{}", if broken { "-broken" } else { "" });
    let out = flag_value(args, "--out").unwrap_or(&default_out).to_owned();
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return 0;
    }
    // The test profile (optimized) shares its dependencies with `cargo test`: no second build.
    let mut build = vec!["build", "--profile", "test", "-p", "concord-node", "-p", "concord-chaos", "--bins"];
    if broken {
        build.extend(["--features", "concord-node/unsafe-test-broken"]);
    }
    let status = cargo(&build, &[]);
    if status != 0 {
        return status;
    }
    if let Err(error) = std::fs::remove_dir_all(&out) {
        if error.kind() != std::io::ErrorKind::NotFound {
            eprintln!("xtask chaos: cannot clear {out}: {error}");
            return 2;
        }
    }
    let mut command = Command::new("target/debug/concord-chaos");
    command.args(["run", "--nodes", nodes, "--transport", transport, "--duration", duration, "--seed", seed]);
    command.args(["--out", &out, "--concord", "target/debug/concord"]);
    if broken {
        command.args(["--broken", "--expect-violations"]);
    }
    match command.status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(error) => {
            eprintln!("xtask chaos: cannot run target/debug/concord-chaos: {error}");
            1
        }
    }
}
