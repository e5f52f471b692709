//! The `concord` binary: `concord serve` runs a node; the other subcommands are its client.

use std::process::ExitCode;

use clap::Parser;
use concord_node::cli::{run_client, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        command => {
            let outcome = run_client(command);
            if outcome.exit_code == 0 {
                println!("{}", outcome.text);
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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
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
