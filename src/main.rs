//! The `rocketmq-webhook` command line.
//!
//! One enum variant and one function per subcommand; each returns `Result<(), CliError>`, and
//! `main` alone turns that into a single stderr line and an exit code (2 for bad arguments or
//! configuration, 1 for runtime failures). Nothing here panics on user input.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A RocketMQ push consumer that delivers messages to an HTTP endpoint, plus tools to create
/// topics, produce test messages and inspect routes.
#[derive(Debug, Parser)]
#[command(name = "rocketmq-webhook", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Manage topics (test and demo setup).
    #[command(subcommand)]
    Topic(cli::topic::TopicCommand),
    /// Send test messages to a topic.
    Produce(cli::produce::ProduceArgs),
    /// Show the route (brokers and queues) of a topic.
    Route(cli::route::RouteArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return cli::report_clap_error(&err),
    };
    let result = match cli.command {
        Command::Topic(cmd) => cli::block_on(cli::topic::run(cmd)),
        Command::Produce(args) => cli::block_on(cli::produce::run(args)),
        Command::Route(args) => cli::block_on(cli::route::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rocketmq-webhook: {err}");
            err.exit_code()
        }
    }
}
