//! Subcommand implementations of the `rocketmq-webhook` binary (bin-only; not part of the library).
//!
//! Contract shared by every subcommand: a bad argument is a [`CliError::Usage`] (exit 2), a
//! failure at run time a [`CliError::Runtime`] (exit 1); either is printed by `main` as exactly
//! one line on stderr naming the address, topic or argument involved. Regular output goes to
//! stdout, progress to stderr.

pub(crate) mod daemon;
pub(crate) mod produce;
pub(crate) mod route;
pub(crate) mod topic;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use rocketmq_webhook::client::{Client, ClientConfig, ClientError, NotSupported};

/// A subcommand failure, reported as one line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The arguments (or the environment standing in for them) are wrong: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Something failed while running: exit code 1.
    #[error("{0}")]
    Runtime(String),
    /// Stopped by a signal: the exit status a process killed by it would have (128 + its
    /// number).
    #[error("stopped by a signal")]
    Signal(u8),
}

impl CliError {
    /// A run-time failure; newlines are folded so the report stays on one line.
    pub(crate) fn runtime(msg: impl std::fmt::Display) -> Self {
        Self::Runtime(one_line(&msg.to_string()))
    }

    /// A bad argument.
    pub(crate) fn usage(msg: impl std::fmt::Display) -> Self {
        Self::Usage(one_line(&msg.to_string()))
    }

    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            Self::Runtime(_) => ExitCode::from(1),
            Self::Signal(code) => ExitCode::from(*code),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes `text` to stdout. `print!` panics when the reader has gone (`| head`: Rust ignores
/// SIGPIPE); this is an error instead, which names what happened.
pub(crate) fn print_out(text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            CliError::runtime(format!(
                "cannot write to stdout (its reader may have exited): {e}"
            ))
        })
}

/// Prints a clap parse error: help and version as clap renders them (exit 0), anything else as
/// one `error:` line (exit 2) instead of clap's multi-line usage block.
pub(crate) fn report_clap_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Printing help can only fail on a closed stdout; nothing useful to do then.
            let _ = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "rocketmq-webhook: {} (see --help)",
                clap_message(&err.render().to_string())
            );
            ExitCode::from(2)
        }
    }
}

/// Clap's error message on one line, without its usage block: what follows the first line
/// names the arguments a missing-argument error is about, the values an invalid one may take,
/// or a tip, so it is kept.
fn clap_message(rendered: &str) -> String {
    let text = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match text.strip_prefix("error: ") {
        Some(rest) => rest.to_owned(),
        None if text.is_empty() => "invalid arguments".to_owned(),
        None => text,
    }
}

/// Runs one subcommand on a fresh multi-threaded runtime, until it ends or SIGTERM or SIGINT
/// arrives. Without a handler, a tool running as a container's PID 1 (compose's topic and
/// produce jobs) ignored SIGTERM, and `docker stop` waited its 10 s for the SIGKILL.
pub(crate) fn block_on<F>(fut: F) -> Result<(), CliError>
where
    F: Future<Output = Result<(), CliError>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(async {
        let mut signals = daemon::Signals::new();
        tokio::select! {
            result = fut => result,
            code = signals.next() => Err(CliError::Signal(code)),
        }
    });
    // Dropped, the runtime would wait for blocking work without limit (a name server's DNS
    // look-up), with no handler left for a second signal.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Installs a stderr log subscriber for the tools, only when `RUST_LOG` asks for one: by default
/// the tools print their own one-line results and nothing else.
pub(crate) fn init_tool_logging() {
    // Empty is unset, as for the daemon (a template's `RUST_LOG: ""`).
    if let Some(filter) = env_value("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// A client for the tools: the given name servers, default connect options, and an inbound
/// handler that declines broker requests (the tools never register as consumers).
pub(crate) fn tool_client(namesrv: &[String]) -> Result<Client, CliError> {
    Client::new(
        ClientConfig {
            namesrv_addr: namesrv.join(";"),
            ..ClientConfig::default()
        },
        Arc::new(NotSupported),
    )
    .map_err(|e| CliError::usage(format!("invalid --namesrv: {e}")))
}

/// Describes a client failure of a tool as one line naming the peer or topic.
pub(crate) fn describe(err: &ClientError, namesrv: &[String]) -> CliError {
    match err {
        ClientError::NoRoute { topic } => CliError::runtime(format!(
            "topic '{topic}' does not exist on name server {} (create it with `rocketmq-webhook topic create`)",
            namesrv.join(";")
        )),
        ClientError::NoNameServer { addrs, last } => CliError::runtime(format!(
            "cannot reach name server {}: {last}",
            addrs.join(";")
        )),
        other => CliError::runtime(other),
    }
}

/// The `--namesrv` option shared by the tools.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NamesrvArg {
    /// Name-server address(es), `host:port[;host:port...]`. Default: $ROCKETMQ_NAMESRV_ADDR, then
    /// $NAMESRV_ADDR.
    #[arg(long, value_name = "ADDR")]
    pub(crate) namesrv: Option<String>,
}

impl NamesrvArg {
    /// The name-server addresses from the flag or the environment, validated.
    ///
    /// # Errors
    /// [`CliError::Usage`] when none is given or one is not `host:port`.
    pub(crate) fn addrs(&self) -> Result<Vec<String>, CliError> {
        let (raw, source) = match &self.namesrv {
            Some(v) => (v.clone(), "--namesrv"),
            None => match env_value("ROCKETMQ_NAMESRV_ADDR") {
                Some(v) => (v, "ROCKETMQ_NAMESRV_ADDR"),
                None => match env_value("NAMESRV_ADDR") {
                    Some(v) => (v, "NAMESRV_ADDR"),
                    None => {
                        return Err(CliError::usage(
                            "no name server given: pass --namesrv HOST:PORT or set \
                             ROCKETMQ_NAMESRV_ADDR or NAMESRV_ADDR",
                        ))
                    }
                },
            },
        };
        parse_namesrv_list(&raw).map_err(|bad| {
            CliError::usage(format!(
                "invalid {source} address '{bad}': expected HOST:PORT"
            ))
        })
    }
}

/// A variable's value; one set to blanks counts as unset, as every `ROCKETMQ_*` variable does.
pub(crate) fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Splits `a:1;b:2` (commas accepted too) into addresses; returns the first bad entry.
fn parse_namesrv_list(raw: &str) -> Result<Vec<String>, String> {
    let addrs: Vec<String> = raw
        .split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if addrs.is_empty() {
        return Err(raw.to_owned());
    }
    for addr in &addrs {
        let valid = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(addr.clone());
        }
    }
    Ok(addrs)
}

/// Checks a topic name the way the broker does (letters, digits, `%`, `|`, `-`, `_`; at most
/// 127 characters), so a typo is a usage error and not a confusing broker answer.
pub(crate) fn validate_topic(topic: &str) -> Result<(), CliError> {
    let ok = !topic.is_empty()
        && topic.len() <= 127
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "invalid --topic '{topic}': use 1-127 characters from [A-Za-z0-9%|_-]"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namesrv_lists_parse_and_reject_garbage() {
        assert_eq!(
            parse_namesrv_list("127.0.0.1:9876; host-b:9877").unwrap(),
            vec!["127.0.0.1:9876".to_owned(), "host-b:9877".to_owned()]
        );
        assert_eq!(parse_namesrv_list("localhost").unwrap_err(), "localhost");
        assert_eq!(parse_namesrv_list("h:0").unwrap_err(), "h:0");
        assert_eq!(parse_namesrv_list(":9876").unwrap_err(), ":9876");
        assert_eq!(parse_namesrv_list(" ; ").unwrap_err(), " ; ");
    }

    #[test]
    fn topic_names_follow_the_broker_rules() {
        assert!(validate_topic("Topic_1-a%b|c").is_ok());
        assert!(validate_topic("").is_err());
        assert!(validate_topic("has space").is_err());
        assert!(validate_topic(&"x".repeat(128)).is_err());
    }

    #[test]
    fn errors_stay_on_one_line() {
        let e = CliError::runtime("a\nb\n  c");
        assert_eq!(e.to_string(), "a b c");
        assert_eq!(e.exit_code(), ExitCode::from(1));
        assert_eq!(CliError::usage("x").exit_code(), ExitCode::from(2));
    }
}
