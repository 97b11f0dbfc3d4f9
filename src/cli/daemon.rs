//! `run`, `check-config`, `echo` and `healthcheck`: the daemon's own subcommands.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rocketmq_webhook::config::{self, Config, ConfigError, Sources, WorkerThreads};
use rocketmq_webhook::daemon::{self, Plan};

use super::CliError;

/// `rocketmq-webhook run` (also the default when no subcommand is given).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RunArgs {
    /// YAML configuration file (default: ROCKETMQ_CONFIG); without it, the configuration comes
    /// from ROCKETMQ_* variables.
    #[arg(long, short = 'c')]
    pub(crate) config: Option<PathBuf>,
}

/// Where `--config` was given on the command line, so that `rocketmq-webhook -c FILE run`
/// reads FILE as `rocketmq-webhook run -c FILE` does.
#[derive(Debug)]
pub(crate) struct ConfigFlag {
    /// The file given before the subcommand.
    pub(crate) before: Option<PathBuf>,
    /// Whether the subcommand was given its own `--config` too.
    pub(crate) after: bool,
    /// The subcommand's name, for messages.
    pub(crate) subcommand: String,
}

impl ConfigFlag {
    /// Puts the file given before the subcommand into the subcommand's `config`; as a flag,
    /// it beats `ROCKETMQ_CONFIG` there just as the subcommand's own flag does.
    ///
    /// # Errors
    /// [`CliError::Usage`] when the flag is given before and after the subcommand with
    /// different files: which one was meant cannot be told.
    pub(crate) fn apply(&self, config: &mut Option<PathBuf>) -> Result<(), CliError> {
        let Some(before) = &self.before else {
            return Ok(());
        };
        match config {
            Some(after) if self.after && after != before => Err(CliError::usage(format!(
                "--config is given twice: {} before `{}` and {} after it",
                before.display(),
                self.subcommand,
                after.display()
            ))),
            _ => {
                *config = Some(before.clone());
                Ok(())
            }
        }
    }

    /// Refuses a `--config` before a subcommand that reads no configuration file, rather than
    /// ignoring it.
    ///
    /// # Errors
    /// [`CliError::Usage`] when the flag was given.
    pub(crate) fn reject(&self) -> Result<(), CliError> {
        match &self.before {
            Some(path) => Err(CliError::usage(format!(
                "--config {} is not read by `{}`: only run, check-config and healthcheck read a configuration file",
                path.display(),
                self.subcommand
            ))),
            None => Ok(()),
        }
    }
}

/// `rocketmq-webhook check-config`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CheckConfigArgs {
    /// YAML configuration file (default: ROCKETMQ_CONFIG); without it, the configuration comes
    /// from ROCKETMQ_* variables.
    #[arg(long, short = 'c')]
    pub(crate) config: Option<PathBuf>,
}

/// `rocketmq-webhook echo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// HTTP status to answer every request with (200-999).
    #[arg(long, default_value = "200", value_parser = parse_status)]
    pub(crate) status: http::StatusCode,
}

/// `--status`: checked while parsing, so a bad code is a usage error (exit 2) naming the flag.
fn parse_status(text: &str) -> Result<http::StatusCode, String> {
    let code: u16 = text
        .parse()
        .map_err(|_| "not a number: use an HTTP status such as 200 or 503".to_owned())?;
    // A 1xx is no final answer: hyper sends a 500 in its place.
    if !(200..=999).contains(&code) {
        return Err("not a final HTTP status: use a code from 200 to 999".to_owned());
    }
    http::StatusCode::from_u16(code).map_err(|e| e.to_string())
}

/// `rocketmq-webhook healthcheck`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HealthcheckArgs {
    /// The admin server's address. Default: ROCKETMQ_ADMIN_LISTEN, else `admin.listen` of the
    /// configuration (the file when one is given, and the ROCKETMQ_* variables), else
    /// 127.0.0.1:9090.
    #[arg(long)]
    pub(crate) admin: Option<String>,
    /// The daemon's YAML configuration file (default: ROCKETMQ_CONFIG), to read `admin.listen`
    /// from.
    #[arg(long, short = 'c')]
    pub(crate) config: Option<PathBuf>,
    /// Check readiness (`/readyz`) instead of liveness (`/healthz`).
    #[arg(long)]
    pub(crate) ready: bool,
}

/// Where to reach an admin server listening on `listen`: through loopback when it binds every
/// interface (as it does by default).
fn probe_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// Loads and validates the configuration, printing every problem (exit code 2) on failure.
/// Warnings are left to the caller: `run` logs them once logging is set up (it is configured
/// by this very configuration), `check-config` prints them.
fn load(file: Option<PathBuf>) -> Result<(Config, Plan), ExitCode> {
    let sources = Sources::from_process(file);
    let cfg = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            // A misspelt variable may be what the error is about (`ROCKETMQ_TOPPIC`).
            for w in sources.env_warnings() {
                eprintln!("rocketmq-webhook: warning: {w}");
            }
            report_config_error(&e);
            return Err(ExitCode::from(config::EXIT_CONFIG as u8));
        }
    };
    match Plan::new(&cfg) {
        Ok(plan) => Ok((cfg, plan)),
        Err(e) => {
            // No log will follow; a warning (a misspelt variable) may explain the error.
            print_warnings(&cfg);
            eprintln!("rocketmq-webhook: invalid configuration: {e}");
            Err(ExitCode::from(config::EXIT_CONFIG as u8))
        }
    }
}

fn print_warnings(cfg: &Config) {
    for w in cfg.warnings() {
        eprintln!("rocketmq-webhook: warning: {w}");
    }
}

fn report_config_error(e: &ConfigError) {
    let errors = e.errors();
    if errors.len() <= 1 {
        eprintln!("rocketmq-webhook: invalid configuration: {e}");
    } else {
        eprintln!(
            "rocketmq-webhook: invalid configuration ({} problems):",
            errors.len()
        );
        for err in errors {
            eprintln!("  - {err}");
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG wins over the configured level, as operators expect. An empty one is unset, as
    // every variable is here: taken as a filter it has no directive, and turned logging off.
    let filter = super::env_value("RUST_LOG")
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&cfg.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        config::LogFormat::Json => builder.json().init(),
        config::LogFormat::Pretty => builder.init(),
    }
}

/// The async runtime for `worker_threads`.
///
/// One thread gets tokio's current-thread scheduler, as linkerd2-proxy does when it has one
/// core, so that one thread means one: a multi-thread runtime with a single worker also runs
/// `block_on` on a thread of its own. The two measured the same CPU per message within the
/// benchmark's spread; the saving of the one-thread default comes from having one thread, not
/// from the scheduler (docs/performance.md, "One thread by default").
fn runtime(worker_threads: WorkerThreads, last_words: LastWords) -> tokio::runtime::Runtime {
    let threads = thread_count(worker_threads, || {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().unwrap_or_else(|e| {
        last_words.say(&format!("cannot start the async runtime: {e}"));
        std::process::exit(1)
    })
}

/// How many threads the runtime gets: the configured count (validated 0..=1024), or for `0`
/// the CPUs the process may use, asked only then. Resolved once here, so the choice of
/// scheduler and the multi-thread runtime's size come from the same count.
fn thread_count(configured: WorkerThreads, cpus: impl FnOnce() -> usize) -> usize {
    configured
        .count()
        .map_or_else(cpus, |n| usize::try_from(n).unwrap_or(1))
}

/// SIGTERM and SIGINT, listened to from the moment this is built: a signal during start-up then
/// stops the daemon in order (before any subscription has started: at once; after: with a
/// drain) instead of killing the process with the default action.
pub(crate) struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Listens for SIGTERM and SIGINT; call inside a runtime.
    pub(crate) fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next signal, as the exit status a process killed by it would have (128 + number).
    pub(crate) async fn next(&mut self) -> u8 {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.term) => 143,
                () = recv(&mut self.int) => 130,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            130
        }
    }
}

/// Starts the thread that owns the process's signals and returns the daemon's stop request
/// (`true` from the first SIGTERM or SIGINT on). The second signal exits at once, with the
/// status a process killed by it has; so does the first once the daemon has dropped the
/// request (its drain is over).
///
/// A thread with a small runtime of its own rather than a task of the daemon's runtime: the
/// exit shuts that runtime down and then waits up to [`daemon::BLOCKING_SHUTDOWN`] for blocking
/// work (an offsets write on a hung volume), and a task would be gone by then, leaving the
/// signal unheard. Returns once the signals are registered, so none is lost from then on.
fn signal_thread(last_words: LastWords) -> tokio::sync::watch::Receiver<bool> {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (registered, wait_registered) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    last_words.say(&format!("cannot listen for signals: {e}"));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut signals = Signals::new();
                let _ = registered.send(());
                let code = signals.next().await;
                // Logged first, so that it comes before the daemon's own "Shutting down" line.
                if !stop.is_closed() {
                    tracing::info!("Signal received; stopping (send it again to exit at once).");
                }
                // No receiver left: the daemon has drained and only waits for blocking work,
                // which this signal need not wait for.
                if stop.send(true).is_err() {
                    last_words
                        .say("signal after the drain, exiting without waiting for blocking work");
                    std::process::exit(i32::from(code));
                }
                let code = signals.next().await;
                last_words.say("second signal, exiting without draining");
                std::process::exit(i32::from(code));
            });
        });
    match spawned {
        // An error: the thread ended without registering (said why on stderr).
        Ok(_) => drop(wait_registered.recv()),
        Err(e) => last_words.say(&format!("cannot start the signal thread: {e}")),
    }
    stop_rx
}

/// Completes at the first signal (see [`signal_thread`]); never if no signal can be heard.
async fn shutdown_signal(mut stop: tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|&stop| stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `--config`, else `ROCKETMQ_CONFIG`. Read here, not by clap: clap takes a variable set to the
/// empty string for an empty value and refuses it, so `ROCKETMQ_CONFIG: ""` in a template
/// failed every command, where an empty `ROCKETMQ_*` variable counts as unset.
fn config_file(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| super::env_value("ROCKETMQ_CONFIG").map(PathBuf::from))
}

pub(crate) fn run(args: RunArgs) -> ExitCode {
    let (cfg, plan) = match load(config_file(args.config)) {
        Ok(x) => x,
        Err(code) => return code,
    };
    init_logging(&cfg);
    // Found while loading, before there was a log to write them to.
    for warning in cfg.warnings() {
        tracing::warn!(%warning, "Configuration warning.");
    }
    let last_words = LastWords(cfg.log.format);
    if matches!(cfg.log.format, config::LogFormat::Json) {
        // A panic's plain text would be the one line a JSON collector cannot parse. The
        // default hook's backtrace is given up for it (RUST_BACKTRACE is not read).
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            last_words.say(&format!(
                "thread '{}' {info}",
                thread.name().unwrap_or("<unnamed>")
            ));
        }));
    }
    let stop = signal_thread(last_words);
    let runtime = runtime(cfg.worker_threads, last_words);
    let outcome = runtime.block_on(daemon::run(plan, shutdown_signal(stop)));
    // Blocking work still running would otherwise hold the exit for as long as it hangs.
    runtime.shutdown_timeout(daemon::BLOCKING_SHUTDOWN);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            last_words.say(&e.to_string());
            ExitCode::from(1)
        }
    }
}

/// How the daemon's own stderr lines are written once logging has started (the reason for an
/// exit, a failed signal listener, a panic): as a log record when the log is JSON, so that a
/// collector parsing every line as JSON gets them too (whatever the level: they are rare and
/// matter); as the plain `rocketmq-webhook: ...` line otherwise, as before logging started.
#[derive(Debug, Clone, Copy)]
struct LastWords(config::LogFormat);

impl LastWords {
    /// Writes `text`, ignoring a failed write: `eprintln!` panics on one (stderr's reader gone,
    /// EPIPE), and a panic in the panic hook aborts the process instead of letting the
    /// supervisor drain and commit.
    fn say(self, text: &str) {
        use std::io::Write as _;
        let mut stderr = std::io::stderr().lock();
        let _ = match self.0 {
            config::LogFormat::Json => {
                let line = serde_json::json!({
                    "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now())
                        .to_string(),
                    "level": "ERROR",
                    "fields": { "message": text },
                    "target": "rocketmq_webhook",
                });
                writeln!(stderr, "{line}")
            }
            config::LogFormat::Pretty => writeln!(stderr, "rocketmq-webhook: {text}"),
        };
    }
}

pub(crate) fn check_config(args: CheckConfigArgs) -> ExitCode {
    match load(config_file(args.config)) {
        Ok((cfg, _)) => {
            print_warnings(&cfg);
            match super::print_out(&cfg.redacted_yaml()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    LastWords(config::LogFormat::Pretty).say(&e.to_string());
                    e.exit_code()
                }
            }
        }
        Err(code) => code,
    }
}

pub(crate) fn echo(args: EchoArgs) -> ExitCode {
    let runtime = runtime(WorkerThreads(0), LastWords(config::LogFormat::Pretty));
    let result = runtime.block_on(rocketmq_webhook::echo::serve(
        args.listen,
        args.status,
        async {
            Signals::new().next().await;
        },
    ));
    // A write to a stdout nobody reads is stuck in a blocking thread, which dropping the
    // runtime would wait for.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "rocketmq-webhook: echo cannot serve on {}: {e}",
                args.listen
            );
            ExitCode::from(1)
        }
    }
}

pub(crate) fn healthcheck(args: HealthcheckArgs) -> ExitCode {
    let path = if args.ready { "readyz" } else { "healthz" };
    // Read here, as `config_file` is: an empty variable is unset, not an address.
    let admin = args
        .admin
        .or_else(|| super::env_value("ROCKETMQ_ADMIN_LISTEN"));
    let host = match (admin, config_file(args.config)) {
        (Some(admin), _) => match admin.parse::<SocketAddr>() {
            Ok(addr) => probe_address(addr).to_string(),
            Err(_) => admin,
        },
        // The daemon's own loading, so the file and the ROCKETMQ_* variables count as they do
        // there; a container whose file moves the admin port needs no second setting.
        (None, Some(file)) => match Config::load(&Sources::from_process(Some(file))) {
            Ok(cfg) => probe_address(cfg.admin.listen).to_string(),
            Err(e) => {
                report_config_error(&e);
                return ExitCode::from(1);
            }
        },
        // Variables alone (`ROCKETMQ_ADMIN__LISTEN` moves the port as well as
        // `ROCKETMQ_ADMIN_LISTEN`); a configuration the daemon could not have started with
        // leaves the default to probe.
        (None, None) => match Config::load(&Sources::from_process(None)) {
            Ok(cfg) => probe_address(cfg.admin.listen).to_string(),
            Err(_) => "127.0.0.1:9090".to_owned(),
        },
    };
    let url = format!("http://{host}/{path}");
    let result = runtime(WorkerThreads(1), LastWords(config::LogFormat::Pretty)).block_on(async {
        // The probe is local: a container's HTTP_PROXY (for its egress) must not carry it.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        client.get(&url).send().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("rocketmq-webhook: {url} answered {}", r.status());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("rocketmq-webhook: {url} unreachable: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::thread_count;
    use rocketmq_webhook::config::WorkerThreads;

    #[test]
    fn one_thread_configured_or_one_cpu_gets_the_current_thread_scheduler() {
        // The runtime is current-thread exactly when the count is 1.
        assert_eq!(thread_count(WorkerThreads(1), || 8), 1);
        assert_eq!(thread_count(WorkerThreads(2), || 1), 2);
        assert_eq!(thread_count(WorkerThreads(0), || 1), 1);
        assert_eq!(thread_count(WorkerThreads(0), || 2), 2);
        // The CPU count is not asked for when the count is configured.
        assert_eq!(thread_count(WorkerThreads(1), || unreachable!()), 1);
    }
}
