//! The `kpilens` command: parses the command line (`cli/`), sets up logging and progress
//! output, runs the command and turns its error into a message and an exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.log_json);
    kpilens::progress::install_for_stderr();
    match cli::run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,datafusion=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Log lines lift a progress bar drawn on the terminal, rather than cut through it.
        .with_writer(|| kpilens::progress::Stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
