//! The `concord` binary: `concord serve` runs a node; the other subcommands are its client.

use std::process::ExitCode;

use clap::Parser;
use concord_node::cli::{run_client, run_stream, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        command => {
            let outcome = match command {
                Command::Watch { .. } | Command::Events { .. } => run_stream(command),
                command => run_client(command),
            };
            if outcome.exit_code == 0 {
                if !outcome.text.is_empty() {
                    println!("{}", outcome.text);
                }
            } else {
                eprintln!("{}", outcome.text);
            }
            ExitCode::from(outcome.exit_code)
        }
    }
}

fn serve(args: concord_node::serve::ServeArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("concord: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(concord_node::serve::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("concord: error: {error}");
            ExitCode::FAILURE
        }
    }
}
