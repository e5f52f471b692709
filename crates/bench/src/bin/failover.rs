//! Failover after Figure 16 of the Raft paper, in the deterministic simulator.
//!
//! `cargo run --profile bench-release -p concord-bench --bin failover -- [--trials 1000] [--quick] [--out DIR]`
//! runs every timeout range of the figure (and 150–300 ms with pre-vote and check-quorum on),
//! prints a markdown table, and writes it to `DIR/failover.md` beside the CDF plot
//! `DIR/failover-cdf.png`. The numbers are virtual time, so a seed always gives the same table;
//! only the "took" line (wall-clock time of the run) varies.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant as WallClock;

use clap::Parser;
use concord_bench::failover::{self, plot, FailoverSetup, RangeResult, PAPER_RANGES};

/// Time to elect a new leader after the leader crashes (Raft paper, Figure 16), in the simulator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Trials per timeout range.
    #[arg(long, default_value_t = 1000)]
    trials: usize,
    /// A short pass: 100 trials per range.
    #[arg(long)]
    quick: bool,
    /// Where failover.md and failover-cdf.png are written.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// Seed of the first trial; trial `t` of range `r` uses `seed + r × 1,000,000 + t`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The binary runs at most this many trials per range: seeds of different ranges must not overlap.
const TRIALS_PER_RANGE_MAX: usize = 1_000_000;

fn main() {
    let args = Args::parse();
    if let Err(error) = run(args) {
        eprintln!("failover: {error}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let trials = if args.quick { 100 } else { args.trials };
    if trials == 0 || trials > TRIALS_PER_RANGE_MAX {
        return Err(format!("--trials must be in 1..={TRIALS_PER_RANGE_MAX}, not {trials}"));
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|error| format!("creating {}: {error}", args.out.display()))?;
    let setup = FailoverSetup::default();
    let started = WallClock::now();
    let mut results: Vec<RangeResult> = Vec::with_capacity(PAPER_RANGES.len());
    for (index, range) in PAPER_RANGES.iter().enumerate() {
        let range_started = WallClock::now();
        let label = range.label();
        let mut stderr = std::io::stderr();
        // A progress line that rewrites itself on a terminal (every 1% is plenty); elsewhere
        // only the line for the finished range.
        let on_terminal = stderr.is_terminal();
        let result = failover::run_range(&setup, range, index, trials, args.seed, |done| {
            if on_terminal && (done % (trials / 100).max(1) == 0 || done == trials) {
                let _ = write!(stderr, "\r{label:<40} {done:>7}/{trials}");
                let _ = stderr.flush();
            }
        })
        .map_err(|error| error.to_string())?;
        if !on_terminal {
            eprint!("{label:<40} {trials:>7}/{trials}");
        }
        eprintln!("  ({:.1} s)", range_started.elapsed().as_secs_f64());
        for failure in &result.setup_failures {
            eprintln!("  setup failure: {failure}");
        }
        results.push(result);
    }
    let took = started.elapsed();
    let table = failover::markdown_table(&setup, &results);
    let png_path = args.out.join("failover-cdf.png");
    let plot_report =
        plot::write_cdf_png(&png_path, &results, setup.election_bound).map_err(|error| error.to_string())?;
    let total_trials: usize = results.iter().map(RangeResult::trials).sum();
    let mut markdown = String::new();
    markdown.push_str("# Failover time after a leader crash (Raft paper, Figure 16), simulated\n\n");
    markdown.push_str(&format!(
        "Command: `cargo run --profile bench-release -p concord-bench --bin failover -- --trials {trials} --seed {}`\n\n",
        args.seed
    ));
    markdown.push_str(&format!(
        "Setup: {} nodes in `concord-sim` running `concord-raft`; one-way delay {:?}–{:?} (broadcast \
         time ≈ 15 ms), no loss; persists {:?}–{:?}; clock-rate spread {} ppm; heartbeat interval = \
         half the minimum election timeout (as in the paper); pre-vote and check-quorum off unless \
         the row says otherwise (the paper's Raft had neither). Nodes 2–5 boot at random times within \
         one minimum timeout (so the first election is not a lockstep), a leader is elected and \
         followed by every node for {:?}, then it is crashed at a uniformly random point of its heartbeat interval; the \
         time is virtual time from the crash until a live node leads in a higher term. Percentiles \
         are nearest-rank; a trial with no leader within {:?} counts as slower than all others. \
         \"Elections over >1 term\" counts trials whose new leader needed more than one term (a \
         split vote or a lost race).\n\n",
        setup.node_count,
        setup.one_way_delay_min,
        setup.one_way_delay_max,
        setup.persist_delay_min,
        setup.persist_delay_max,
        setup.clock_rate_spread * 1e6,
        setup.settle,
        setup.election_bound,
    ));
    markdown.push_str(&table);
    markdown.push_str(&format!(
        "\n{total_trials} trials in {:.1} s of wall-clock time ({:.0} trials/s) on this machine.\n\nCDF plot: \
         `failover-cdf.png`{}.\n",
        took.as_secs_f64(),
        total_trials as f64 / took.as_secs_f64().max(1e-9),
        if plot_report.labelled { "" } else { " (no TrueType font found: drawn without text)" },
    ));
    let markdown_path = args.out.join("failover.md");
    std::fs::write(&markdown_path, &markdown)
        .map_err(|error| format!("writing {}: {error}", markdown_path.display()))?;
    println!("{markdown}");
    println!("wrote {} and {}", markdown_path.display(), png_path.display());
    Ok(())
}
