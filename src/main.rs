//! The `rocketmq-webhook` command line.
//!
//! One enum variant and one function per subcommand; each returns `Result<(), CliError>`, and
//! `main` alone turns that into a single stderr line and an exit code (2 for bad arguments or
//! configuration, 1 for runtime failures). Nothing here panics on user input.

mod cli;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use cli::daemon::ConfigFlag;
use cli::CliError;

/// A RocketMQ push consumer that delivers messages to an HTTP endpoint, plus tools to create
/// topics, produce test messages and inspect routes.
#[derive(Debug, Parser)]
#[command(name = "rocketmq-webhook", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of `run`, the default command. `--config` here, before a subcommand, also
    /// serves `run`, `check-config` and `healthcheck` (see [`parse`]).
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
    let code = match parse() {
        Ok((cli, config_flag)) => match dispatch(cli, &config_flag) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("rocketmq-webhook: {err}");
                err.exit_code()
            }
        },
        Err(err) => cli::report_clap_error(&err),
    };
    // Docker reserves 2 in a health check's status; a bad `healthcheck` line is a failed check.
    if code == ExitCode::from(2) && subcommand_named().as_deref() == Some("healthcheck") {
        return ExitCode::from(1);
    }
    code
}

/// The subcommand on the command line, read without clap (which may have refused the line).
fn subcommand_named() -> Option<String> {
    let command = Cli::command();
    let names: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
    std::env::args_os()
        .skip(1)
        .filter_map(|arg| arg.into_string().ok())
        .find(|arg| names.contains(&arg.as_str()))
}

/// Parses the command line and notes where `--config` was given on it. clap fills the
/// top-level `--config` (`rocketmq-webhook -c FILE run`) and the subcommand's own separately,
/// so [`dispatch`] has to carry the first into the second.
fn parse() -> Result<(Cli, ConfigFlag), clap::Error> {
    let matches = Cli::command().try_get_matches()?;
    let cli = Cli::from_arg_matches(&matches)?;
    let on_command_line =
        |m: &ArgMatches| m.value_source("config") == Some(ValueSource::CommandLine);
    let before = if on_command_line(&matches) {
        cli.run.config.clone()
    } else {
        None
    };
    // Only these subcommands define `config` (asking any other one for it panics).
    let after = match matches.subcommand() {
        Some(("run" | "check-config" | "healthcheck", sub)) => on_command_line(sub),
        _ => false,
    };
    let subcommand = matches.subcommand_name().unwrap_or("run").to_owned();
    Ok((
        cli,
        ConfigFlag {
            before,
            after,
            subcommand,
        },
    ))
}

fn dispatch(cli: Cli, config_flag: &ConfigFlag) -> Result<ExitCode, CliError> {
    let Some(command) = cli.command else {
        return Ok(cli::daemon::run(cli.run));
    };
    if !matches!(
        command,
        Command::Run(_) | Command::CheckConfig(_) | Command::Healthcheck(_)
    ) {
        config_flag.reject()?;
    }
    let result = match command {
        Command::Run(mut args) => {
            config_flag.apply(&mut args.config)?;
            return Ok(cli::daemon::run(args));
        }
        Command::CheckConfig(mut args) => {
            config_flag.apply(&mut args.config)?;
            return Ok(cli::daemon::check_config(args));
        }
        Command::Healthcheck(mut args) => {
            config_flag.apply(&mut args.config)?;
            return Ok(cli::daemon::healthcheck(args));
        }
        Command::Echo(args) => return Ok(cli::daemon::echo(args)),
        Command::Topic(cmd) => cli::block_on(cli::topic::run(cmd)),
        Command::Produce(args) => cli::block_on(cli::produce::run(args)),
        Command::Route(args) => cli::block_on(cli::route::run(args)),
    };
    result.map(|()| ExitCode::SUCCESS)
}

// The daemon's hot path allocates per message; mimalloc is markedly cheaper than glibc malloc
// there (see the benchmark report).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
