//! The `rocketmq-webhook` tools (`topic create`, `produce`, `route`) run as a user runs them:
//! the built binary against the real name server and broker (tests/support), plus the error
//! contract (one stderr line, exit 2 for bad arguments, 1 for runtime failures, no panic).

mod support;

use std::process::Output;

use rocketmq_webhook::remoting::rpc::GetMaxOffset;
use support::{unique, RocketMq};

const BIN: &str = env!("CARGO_BIN_EXE_rocketmq-webhook");

/// Runs the binary with `args` and no name-server variables from the caller's environment.
async fn run(args: &[&str]) -> Output {
    run_env(args, &[]).await
}

async fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("NAMESRV_ADDR")
        .env_remove("ROCKETMQ_NAMESRV_ADDR")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure: `code`, exactly one stderr line containing every `needles`, no panic.
fn assert_one_line_failure(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr: {err}\nstdout: {}",
        stdout(o)
    );
    assert_eq!(
        err.lines().count(),
        1,
        "expected one stderr line, got: {err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

/// Sends SIGTERM to `child` and waits for it to exit, at most 10 s.
async fn terminate(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
    assert!(killed.success());
    tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("the process did not stop within 10 s of SIGTERM")
        .expect("waited")
}

fn is_msg_id(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test]
async fn topic_create_produce_and_route() {
    let mq = RocketMq::start().await;
    let ns = mq.namesrv_addr();
    let topic = unique("CliTopic");

    let out = run(&[
        "topic",
        "create",
        "--namesrv",
        &ns,
        "--topic",
        &topic,
        "--queues",
        "3",
    ])
    .await;
    assert!(out.status.success(), "topic create: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&topic) && text.contains(mq.broker_name()),
        "{text}"
    );
    assert!(text.contains("3 read / 3 write queues"), "{text}");

    // The name server may also come from NAMESRV_ADDR.
    let out = run_env(
        &[
            "produce", "--topic", &topic, "--count", "5", "--tag", "TagC", "--key", "K1",
        ],
        &[("NAMESRV_ADDR", &ns)],
    )
    .await;
    assert!(out.status.success(), "produce: {}", stderr(&out));
    let text = stdout(&out);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 5, "{text}");
    assert!(ids.iter().all(|id| is_msg_id(id)), "{text}");
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        5,
        "ids are distinct: {text}"
    );
    assert!(
        text.lines()
            .all(|l| l.contains(&format!("{topic}@{}#", mq.broker_name()))),
        "{text}"
    );

    // Cross-check with the broker: five messages across the three queues. The broker's consume
    // queues are built asynchronously after the commit log write, so a loaded machine may need a
    // moment before the max offsets show every stored message.
    let client = mq.client();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let total = loop {
        let mut total = 0;
        for queue_id in 0..3 {
            let max = GetMaxOffset {
                topic: topic.clone(),
                queue_id,
            };
            total += client
                .pool()
                .call(&mq.broker_addr(), &max, std::time::Duration::from_secs(5))
                .await
                .expect("max offset");
        }
        if total >= 5 || tokio::time::Instant::now() > deadline {
            break total;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(total, 5);

    // Larger runs print a summary instead of ids; batches work through the CLI too.
    let out = run(&[
        "produce",
        "--namesrv",
        &ns,
        "--topic",
        &topic,
        "--count",
        "50",
        "--batch",
        "10",
        "--size",
        "100",
    ])
    .await;
    assert!(out.status.success(), "produce batch: {}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("sent 50 messages (5000 body bytes)"),
        "{text}"
    );

    let out = run(&["route", "--namesrv", &ns, "--topic", &topic]).await;
    assert!(out.status.success(), "route: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&mq.broker_addr()), "{text}");
    assert!(text.contains("read=3 write=3"), "{text}");

    let out = run(&["route", "--namesrv", &ns, "--topic", &topic, "--json"]).await;
    assert!(out.status.success(), "route --json: {}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("route --json is JSON");
    assert_eq!(json["queueDatas"][0]["writeQueueNums"], 3, "{json}");
    assert_eq!(
        json["brokerDatas"][0]["brokerAddrs"]["0"],
        mq.broker_addr(),
        "{json}"
    );
}

#[tokio::test]
async fn errors_are_one_line_with_the_right_exit_code() {
    // A port nobody listens on: bind, note, release.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let out = run(&["route", "--namesrv", &dead, "--topic", "T"]).await;
    assert_one_line_failure(&out, 1, &[&dead]);
    let out = run(&["produce", "--namesrv", &dead, "--topic", "T"]).await;
    assert_one_line_failure(&out, 1, &[&dead]);
    let out = run(&["topic", "create", "--namesrv", &dead, "--topic", "T"]).await;
    assert_one_line_failure(&out, 1, &[&dead]);

    // Bad arguments: exit 2, naming the argument.
    let out = run(&[
        "produce",
        "--namesrv",
        "127.0.0.1:9876",
        "--topic",
        "T",
        "--count",
        "abc",
    ])
    .await;
    assert_one_line_failure(&out, 2, &["--count", "abc"]);
    let out = run(&["produce", "--topic", "T"]).await;
    assert_one_line_failure(&out, 2, &["--namesrv", "NAMESRV_ADDR"]);
    let out = run(&["route", "--namesrv", "no-port", "--topic", "T"]).await;
    assert_one_line_failure(&out, 2, &["no-port"]);
    let out = run(&[
        "route",
        "--namesrv",
        "127.0.0.1:9876",
        "--topic",
        "bad topic",
    ])
    .await;
    assert_one_line_failure(&out, 2, &["--topic", "bad topic"]);
    let out = run(&[
        "produce",
        "--namesrv",
        "127.0.0.1:9876",
        "--topic",
        "T",
        "--rate",
        "0",
    ])
    .await;
    assert_one_line_failure(&out, 2, &["--rate"]);
    let out = run(&["no-such-command"]).await;
    assert_one_line_failure(&out, 2, &["no-such-command"]);
    // Clap's lines after the first name what is missing, or what a value may be.
    let out = run(&["produce", "--namesrv", "127.0.0.1:9876"]).await;
    assert_one_line_failure(&out, 2, &["required", "--topic"]);
    let out = run(&[
        "produce",
        "--namesrv",
        "127.0.0.1:9876",
        "--topic",
        "T",
        "--selector",
        "nearest",
    ])
    .await;
    assert_one_line_failure(&out, 2, &["nearest", "round-robin"]);

    // Unknown topic on a live name server: exit 1, naming the topic.
    let mq = RocketMq::start().await;
    let missing = unique("Missing");
    let out = run(&[
        "route",
        "--namesrv",
        &mq.namesrv_addr(),
        "--topic",
        &missing,
    ])
    .await;
    assert_one_line_failure(&out, 1, &[&missing, &mq.namesrv_addr()]);
    let out = run(&[
        "produce",
        "--namesrv",
        &mq.namesrv_addr(),
        "--topic",
        &missing,
    ])
    .await;
    assert_one_line_failure(&out, 1, &[&missing]);
}

/// Runs the binary with `args` and an empty environment (no `ROCKETMQ_*` of the caller reaches
/// the configuration loader).
async fn run_clean(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

#[tokio::test]
async fn config_before_the_subcommand_is_read_or_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {name}: {e}"));
        path.display().to_string()
    };
    // Nothing listens on either address: no subcommand here may get as far as connecting.
    let dead = support::daemon::free_port().to_string();
    let good = write(
        "good.yaml",
        &format!(
            "namesrv_addr: \"127.0.0.1:9\"\nadmin:\n  listen: \"{dead}\"\nsubscriptions:\n  - group: G_from_the_file\n    topic: T\n    webhook:\n      url: \"http://127.0.0.1:9/hook\"\n"
        ),
    );
    let bad = write(
        "bad.yaml",
        "namesrv_addr: \"127.0.0.1:9\"\nsubscriptions:\n  - group: G\n    topic: T\n    consume_form: FIRST_OFFSET\n    webhook:\n      url: \"http://127.0.0.1:9/hook\"\n",
    );

    // Before the subcommand, as after it.
    for args in [
        ["-c", good.as_str(), "check-config"],
        ["check-config", "--config", good.as_str()],
    ] {
        let out = run_clean(&args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("G_from_the_file"),
            "{args:?}: {}",
            stdout(&out)
        );
    }
    // The same file twice is no conflict.
    let out = run_clean(&["-c", &good, "check-config", "-c", &good]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run_clean(&["--config", &bad, "run"]).await;
    assert_one_line_failure(&out, 2, &["consume_form", &bad]);
    let out = run_clean(&["-c", &good, "healthcheck"]).await;
    assert_one_line_failure(&out, 1, &[&format!("http://{dead}/healthz")]);

    // Refused where it would be ignored or ambiguous.
    let out = run_clean(&["-c", &good, "echo", "--listen", "127.0.0.1:0"]).await;
    assert_one_line_failure(&out, 2, &["--config", &good, "echo"]);
    let out = run_clean(&["-c", &good, "route", "--namesrv", &dead, "--topic", "T"]).await;
    assert_one_line_failure(&out, 2, &["--config", "route"]);
    let out = run_clean(&["-c", &good, "check-config", "-c", &bad]).await;
    assert_one_line_failure(&out, 2, &["--config", &good, &bad]);
}

#[tokio::test]
async fn a_tls_file_that_does_not_parse_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", garbage.display()));
    let garbage = garbage.display().to_string();
    // A name server that must never hear from the daemon.
    let namesrv = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    namesrv.set_nonblocking(true).expect("nonblocking");
    let namesrv_addr = namesrv.local_addr().expect("addr").to_string();
    let config = |tls: &str| {
        let path = dir.path().join("config.yaml");
        let text = format!(
            "namesrv_addr: \"{namesrv_addr}\"\nclient:\n  tls:\n    enabled: true\n{tls}subscriptions:\n  - group: G\n    topic: T\n    webhook:\n      url: \"http://127.0.0.1:9/hook\"\n"
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write the config: {e}"));
        path.display().to_string()
    };
    let cases = [
        (
            format!("    ca_file: \"{garbage}\"\n    insecure_skip_verify: false\n"),
            "client.tls.ca_file",
        ),
        // Also when verification is off and the CA file is not used yet.
        (
            format!("    ca_file: \"{garbage}\"\n"),
            "client.tls.ca_file",
        ),
        (
            format!(
                "    cert_file: \"{}\"\n    key_file: \"{garbage}\"\n",
                concat!(env!("CARGO_MANIFEST_DIR"), "/src/client/testdata/leaf.pem")
            ),
            "client.tls.key_file",
        ),
    ];
    for (tls, key) in cases {
        let file = config(&tls);
        for subcommand in ["check-config", "run"] {
            let out = run_clean(&[subcommand, "--config", &file]).await;
            assert_one_line_failure(&out, 2, &[key, &garbage, "line"]);
        }
    }
    // A webhook's TLS file: named by the configuration's key, not the library's field.
    let path = dir.path().join("webhook.yaml");
    let text = format!(
        "namesrv_addr: \"{namesrv_addr}\"\nsubscriptions:\n  - group: G\n    topic: T\n    webhook:\n      url: \"https://127.0.0.1:9/hook\"\n      tls:\n        cert_file: \"{}\"\n        key_file: \"{garbage}\"\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/src/client/testdata/leaf.pem")
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write the config: {e}"));
    let file = path.display().to_string();
    for subcommand in ["check-config", "run"] {
        let out = run_clean(&[subcommand, "--config", &file]).await;
        assert_one_line_failure(
            &out,
            2,
            &["subscriptions[0].webhook.tls.key_file", &garbage, "line 9"],
        );
    }
    assert!(
        namesrv.accept().is_err(),
        "a daemon with a bad TLS file connected to the name server"
    );
}

#[tokio::test]
async fn echo_takes_only_an_http_status() {
    for bad in ["42", "101", "1000", "ok"] {
        let out = run_clean(&["echo", "--listen", "127.0.0.1:0", "--status", bad]).await;
        assert_one_line_failure(&out, 2, &["--status", bad]);
    }
    // A valid one is what every request gets.
    let listen = support::daemon::free_port().to_string();
    let _echo = tokio::process::Command::new(BIN)
        .args(["echo", "--listen", &listen, "--status", "503"])
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN} echo: {e}"));
    let url = format!("http://{listen}/hook");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        match reqwest::Client::new().post(&url).body("{}").send().await {
            Ok(response) => break response.status(),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("echo did not answer on {listen}: {e}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    assert_eq!(status, 503);
}

/// A client that sent half a request does not hold `echo`'s exit: axum's graceful shutdown
/// waited for it without a limit, and further signals did nothing.
#[tokio::test]
async fn echo_stops_on_sigterm_beside_a_half_sent_request() {
    use tokio::io::AsyncWriteExt;
    let listen = support::daemon::free_port().to_string();
    let mut echo = tokio::process::Command::new(BIN)
        .args(["echo", "--listen", &listen])
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN} echo: {e}"));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut half = loop {
        match tokio::net::TcpStream::connect(&listen).await {
            Ok(stream) => break stream,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("echo did not listen on {listen}: {e}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    half.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        .await
        .expect("half a request written");
    // The request is being read before the signal comes.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = terminate(&mut echo).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    drop(half);
}

/// Configuration warnings found while loading (a setting that has no effect, a
/// `consume_timeout` a batch's requests may outlast, an unknown `ROCKETMQ_*` variable) are
/// printed by `check-config` and reach the daemon's log, in its
/// format: they are found before logging starts, so they must be held until it has.
#[tokio::test]
async fn a_misspelt_variable_is_named_beside_the_error_it_causes() {
    // Only variables: the misspelt topic leaves the subscription without one.
    let out = tokio::process::Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env("ROCKETMQ_NAMESRV_ADDR", "127.0.0.1:9")
        .env("ROCKETMQ_CONSUMER_GROUP", "G")
        .env("ROCKETMQ_TOPPIC", "T")
        .env("ROCKETMQ_WEBHOOK_URL", "http://127.0.0.1:9/hook")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ROCKETMQ_TOPPIC") && err.contains("ROCKETMQ_TOPIC"),
        "the misspelt variable and its likely meaning are not named: {err}"
    );
}

#[tokio::test]
async fn configuration_warnings_reach_check_config_and_the_log() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
    let file = dir.path().join("config.yaml");
    // Nothing listens on the name server: the daemon logs and retries, never connects.
    let yaml = "namesrv_addr: \"127.0.0.1:9\"\nsubscriptions:\n  - group: G\n    topic: T\n    enable_auto_recovery: false\n    consume_mode: ORDERLY\n    consume_batch_size: 32\n    consume_timeout: 1m\n    webhook:\n      url: \"http://127.0.0.1:9/hook\"\n      format: raw\n";
    std::fs::write(&file, yaml).unwrap_or_else(|e| panic!("cannot write the config: {e}"));
    let file = file.display().to_string();

    let out = tokio::process::Command::new(BIN)
        .args(["check-config", "--config", &file])
        .env_clear()
        .env("ROCKETMQ_SOMETHING_ELSE", "x")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning") && err.contains("subscriptions[0].enable_auto_recovery"),
        "check-config does not show the setting without effect: {err}"
    );
    assert!(err.contains("ROCKETMQ_SOMETHING_ELSE"), "{err}");
    assert!(
        err.contains("warning: `subscriptions[0].consume_timeout` = 1m"),
        "check-config does not warn of the batch deadline: {err}"
    );

    let daemon = support::daemon::Daemon::spawn(
        &support::daemon::Launch::yaml(yaml)
            .env("ROCKETMQ_LOG_FORMAT", "json")
            .env("ROCKETMQ_SOMETHING_ELSE", "x"),
    );
    let in_the_log = |needle: &str| {
        daemon
            .output()
            .lines()
            .any(|l| l.starts_with('{') && l.contains("\"WARN\"") && l.contains(needle))
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(in_the_log("enable_auto_recovery")
        && in_the_log("ROCKETMQ_SOMETHING_ELSE")
        && in_the_log("subscriptions[0].consume_timeout"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the warnings are not in the JSON log\n{}",
            daemon.output_tail(20)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// SIGTERM stops a tool with 128 + 15: before, `topic`, `produce` and `route` had no handler,
/// and as a container's PID 1 (compose's jobs) a process without one ignores SIGTERM, so
/// `docker stop` waited for its SIGKILL.
#[tokio::test]
async fn a_tool_stops_on_sigterm_with_its_status() {
    use tokio::io::AsyncBufReadExt;
    let mq = RocketMq::start().await;
    let topic = unique("T_sigterm");
    mq.create_topic(&topic, 1).await;
    let namesrv = mq.namesrv_addr();
    let mut child = tokio::process::Command::new(BIN)
        .args(["produce", "--namesrv", &namesrv, "--topic", &topic])
        // Few enough to be listed on stdout as they go out; at 1 msg/s, 20 s of them.
        .args(["--count", "20", "--rate", "1"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    // The first message's line: the tool runs, with its handler in place.
    // Kept open to the end: closed, the tool's next line would fail on the broken pipe.
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await;
    assert!(
        matches!(first, Ok(Ok(Some(_)))),
        "no message sent: {first:?}"
    );
    let status = terminate(&mut child).await;
    // A process the signal killed has no code; one that handled it exits 143.
    assert_eq!(status.code(), Some(143), "{status:?}");
    drop(lines);
}
