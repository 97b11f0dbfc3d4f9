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
    command: Option<Command>,
    /// Options of `run`, the default command.
    #[command(flatten)]
    run: cli::daemon::RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the configured subscriptions and deliver them to their webhooks (the default).
    Run(cli::daemon::RunArgs),
    /// Load and validate the configuration, print it with secrets redacted (exit 2 on error).
    CheckConfig(cli::daemon::CheckConfigArgs),
    /// A small webhook receiver printing one JSON line per request (demo, compose, tests).
    Echo(cli::daemon::EchoArgs),
    /// Probe the admin server's /healthz (or /readyz); for container health checks.
    Healthcheck(cli::daemon::HealthcheckArgs),
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
        None => return cli::daemon::run(cli.run),
        Some(Command::Run(args)) => return cli::daemon::run(args),
        Some(Command::CheckConfig(args)) => return cli::daemon::check_config(args),
        Some(Command::Echo(args)) => return cli::daemon::echo(args),
        Some(Command::Healthcheck(args)) => return cli::daemon::healthcheck(args),
        Some(Command::Topic(cmd)) => cli::block_on(cli::topic::run(cmd)),
        Some(Command::Produce(args)) => cli::block_on(cli::produce::run(args)),
        Some(Command::Route(args)) => cli::block_on(cli::route::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rocketmq-webhook: {err}");
            err.exit_code()
        }
    }
}

// The daemon's hot path allocates per message; mimalloc is markedly cheaper than glibc malloc
// there (see the benchmark report).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
