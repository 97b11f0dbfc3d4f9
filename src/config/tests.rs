//! Loader tests: every layer, every precedence rule and every class of bad configuration, with
//! environments passed as pairs (never `set_var`).

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;

use super::*;

const IDENTITY: &[(&str, &str)] = &[
    ("ROCKETMQ_CONSUMER_GROUP", "g"),
    ("ROCKETMQ_TOPIC", "t"),
    ("ROCKETMQ_WEBHOOK_URL", "http://127.0.0.1:8080/hook"),
];

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Loads `yaml` (written to `config.yaml` in a temporary directory) under `vars`.
fn load(yaml: Option<&str>, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = yaml.map(|text| {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).expect("write config");
        path
    });
    Config::load(&Sources {
        file,
        env: env(vars),
    })
}

fn ok(yaml: Option<&str>, vars: &[(&str, &str)]) -> Config {
    match load(yaml, vars) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got: {e}"),
    }
}

fn fail(yaml: Option<&str>, vars: &[(&str, &str)]) -> ConfigError {
    match load(yaml, vars) {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(e) => {
            assert_eq!(e.exit_code(), EXIT_CONFIG);
            e
        }
    }
}

/// The single `Invalid` error's (key, origin, value, reason).
fn invalid(e: &ConfigError) -> (&str, &Origin, &str, &str) {
    match e {
        ConfigError::Invalid {
            key,
            origin,
            value,
            reason,
        } => (key, origin, value, reason),
        other => panic!("expected one Invalid error, got: {other}"),
    }
}

/// Asserts that some error of `e` is about `key` and its message contains every `needle`.
fn assert_error(e: &ConfigError, key: &str, needles: &[&str]) {
    let text = e.to_string();
    let found = e.errors().into_iter().any(|one| {
        let msg = one.to_string();
        msg.contains(&format!("`{key}`")) && needles.iter().all(|n| msg.contains(n))
    });
    assert!(
        found,
        "no error about `{key}` containing {needles:?} in:\n{text}"
    );
}

fn one_sub(yaml_tail: &str) -> String {
    format!(
        "subscriptions:\n  - group: g\n    topic: t\n    webhook:\n      url: http://h/x\n{yaml_tail}"
    )
}

/// Asserts that `name=value` beside a one-subscription file fails with an error about `key`
/// that names the variable and contains every `needle`.
fn assert_variable_error(name: &str, value: &str, key: &str, needles: &[&str]) {
    let e = fail(Some(&one_sub("")), &[(name, value)]);
    let source = format!("environment {name}");
    let mut all = vec![source.as_str()];
    all.extend_from_slice(needles);
    assert_error(&e, key, &all);
}

// === defaults and layers ===

#[test]
fn defaults_fill_everything_not_set() {
    let config = ok(None, IDENTITY);
    assert_eq!(config.namesrv_addr.addrs(), ["127.0.0.1:9876"]);
    assert_eq!(config.instance_name, None);
    let instance = config.resolved_instance_name();
    let (pid, started) = instance.split_once('#').expect("pid#nanos");
    assert_eq!(pid, std::process::id().to_string());
    assert!(started.parse::<u128>().is_ok_and(|n| n > 0), "{instance}");
    assert_eq!(
        config.resolved_instance_name(),
        instance,
        "one name for the whole process"
    );
    assert_eq!(config.admin.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.log.format, LogFormat::Pretty);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.shutdown.grace_period, Duration::from_secs(30));
    assert_eq!(config.cache.max_count, 10_000);
    assert_eq!(config.cache.max_size, ByteSize::mib(32));
    assert_eq!(config.client.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(
        config.client.poll_name_server_interval,
        Duration::from_secs(30)
    );
    assert_eq!(config.client.rebalance_interval, Duration::from_secs(20));
    assert_eq!(config.client.rpc_timeout, Duration::from_secs(3));
    assert!(!config.client.tls.enabled);
    assert_eq!(config.profile, None);
    assert_eq!(config.subscriptions.len(), 1);
    let sub = &config.subscriptions[0];
    assert_eq!(sub.name, "g/t");
    assert_eq!((sub.group.as_str(), sub.topic.as_str()), ("g", "t"));
    assert_eq!(sub.expression, "*");
    assert_eq!(sub.expression_type, ExpressionType::Tag);
    assert_eq!(sub.message_model, MessageModel::Clustering);
    assert_eq!(sub.consume_mode, ConsumeMode::Concurrent);
    assert_eq!(sub.consume_from, ConsumeFrom::LastOffset);
    assert_eq!(sub.allocate_strategy, AllocateStrategy::Average);
    assert_eq!((sub.consume_thread_min, sub.consume_thread_max), (20, 20));
    assert_eq!((sub.consume_batch_size, sub.pull_batch_size), (1, 32));
    assert_eq!(sub.consume_timeout, Duration::from_secs(900));
    assert_eq!(sub.max_reconsume_times, 16);
    assert_eq!(sub.max_cache_count_per_queue, 1000);
    assert_eq!(sub.max_cache_size_per_queue, ByteSize::mib(100));
    assert_eq!(sub.max_cache_count_per_subscription, 10_000);
    assert_eq!(sub.max_cache_size_per_subscription, ByteSize::mib(32));
    assert_eq!(sub.max_span, 2000);
    assert_eq!(sub.pull_interval, Duration::ZERO);
    assert_eq!(sub.persist_interval, Duration::from_secs(5));
    assert_eq!(sub.offset_store_path, PathBuf::from("~/.rocketmq_offsets"));
    assert_eq!(sub.suspend_current_queue_time, Duration::from_secs(1));
    assert_eq!(sub.lock_expire_time, Duration::from_secs(30));
    assert_eq!(sub.orderly_dlq_policy, OrderlyDlqPolicy::Dlq);
    assert!(sub.enable_auto_recovery);
    let hook = &sub.webhook;
    assert_eq!(hook.url, "http://127.0.0.1:8080/hook");
    assert_eq!(hook.method, HttpMethod::Post);
    assert_eq!(hook.format, WebhookFormat::Json);
    assert_eq!(hook.timeout, Duration::from_secs(10));
    assert_eq!(hook.concurrency, Some(20));
    assert_eq!(sub.webhook_concurrency(), 20);
    assert!(hook.bearer_token.is_none() && hook.signing_secret.is_none());
    assert_eq!(hook.retry_after_cap, Duration::from_secs(60));
    assert_eq!(hook.circuit_breaker.failure_threshold, 5);
    assert_eq!(hook.circuit_breaker.open_duration, Duration::from_secs(5));
    assert_eq!(
        hook.circuit_breaker.max_open_duration,
        Duration::from_secs(60)
    );
    assert_eq!(
        config.origin("subscriptions.0.pull_batch_size"),
        Origin::Default
    );
    assert!(config.warnings().is_empty());
}

#[test]
fn status_codes_default_to_the_delivery_contract() {
    let hook = WebhookConfig::default();
    for code in [408, 425, 429, 500, 503, 599, 401, 403, 409, 302, 100] {
        assert_eq!(hook.status_action(code), StatusAction::Retry, "{code}");
    }
    for code in [400, 404, 410, 413, 415, 422] {
        assert_eq!(hook.status_action(code), StatusAction::Drop, "{code}");
    }
    for code in [200, 201, 204] {
        assert_eq!(hook.status_action(code), StatusAction::Success, "{code}");
    }
    let custom = WebhookConfig {
        retry_codes: vec!["4xx".parse().expect("class")],
        drop_codes: vec!["404".parse().expect("code"), "5xx".parse().expect("class")],
        ..WebhookConfig::default()
    };
    assert_eq!(
        custom.status_action(404),
        StatusAction::Drop,
        "exact beats class"
    );
    assert_eq!(custom.status_action(400), StatusAction::Retry);
    assert_eq!(custom.status_action(502), StatusAction::Drop);
}

const FULL: &str = r#"
namesrv_addr: "ns1:9876;ns2:9876"
instance_name: sidecar-1
client:
  heartbeat_interval: 10s
  rpc_timeout: 1500ms
  access_key: AK
  secret_key: SK-very-secret
admin:
  listen: 127.0.0.1:9191
log:
  format: json
  level: debug
shutdown:
  grace_period: 1m
subscriptions:
  - name: orders
    group: "0001"
    topic: orders
    expression: "created || paid"
    consume_mode: orderly
    consume_from: TIMESTAMP
    consume_timestamp: "2024-05-01T08:00:00Z"
    allocate_strategy: AVG_BY_CIRCLE
    pull_batch_size: 16
    max_cache_size_per_queue: 64MiB
    orderly_dlq_policy: BLOCK
    webhook:
      url: https://app.example/orders
      method: PUT
      format: cloudevents
      timeout: 2s
      headers:
        X-Tenant: acme
        X-Api-Key: key-very-secret
      bearer_token: token-very-secret
      signing_secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
      retry_codes: [429, 5xx]
      drop_codes: ["400", 404]
      circuit_breaker:
        failure_threshold: 2
  - group: audit
    topic: orders
    message_model: BROADCASTING
    consume_from: CONSUME_FROM_FIRST_OFFSET
    allocate_strategy: CONFIG
    allocate_queues:
      - {broker_name: broker-a, queue_id: 0}
      - {broker_name: broker-a, queue_id: 1}
    webhook: {url: "http://audit:8080/", format: raw}
"#;

#[test]
fn yaml_file_is_read_into_the_tree() {
    let config = ok(Some(FULL), &[("HOME", "/home/app")]);
    assert_eq!(config.namesrv_addr.addrs(), ["ns1:9876", "ns2:9876"]);
    assert_eq!(config.instance_name.as_deref(), Some("sidecar-1"));
    assert_eq!(config.resolved_instance_name(), "sidecar-1");
    assert_eq!(config.client.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(config.client.rpc_timeout, Duration::from_millis(1500));
    assert_eq!(config.client.access_key.as_deref(), Some("AK"));
    assert_eq!(
        config.client.secret_key.as_ref().map(Secret::expose),
        Some("SK-very-secret")
    );
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9191");
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.shutdown.grace_period, Duration::from_secs(60));

    let orders = &config.subscriptions[0];
    assert_eq!(orders.name, "orders");
    assert_eq!(orders.group, "0001");
    assert_eq!(orders.consume_mode, ConsumeMode::Orderly);
    assert_eq!(orders.consume_from, ConsumeFrom::Timestamp);
    assert_eq!(
        orders
            .consume_timestamp
            .as_ref()
            .map(ConsumeTimestamp::unix_millis),
        Some(1_714_550_400_000)
    );
    assert_eq!(orders.allocate_strategy, AllocateStrategy::AverageByCircle);
    assert_eq!(orders.pull_batch_size, 16);
    assert_eq!(orders.max_cache_size_per_queue, ByteSize::mib(64));
    assert_eq!(orders.orderly_dlq_policy, OrderlyDlqPolicy::Block);
    assert_eq!(orders.webhook.method, HttpMethod::Put);
    assert_eq!(orders.webhook.format, WebhookFormat::CloudEvents);
    assert_eq!(orders.webhook.timeout, Duration::from_secs(2));
    assert_eq!(
        orders.webhook.headers.get("X-Tenant").map(String::as_str),
        Some("acme")
    );
    assert_eq!(orders.webhook.retry_codes.len(), 2);
    assert_eq!(orders.webhook.status_action(400), StatusAction::Drop);
    assert_eq!(orders.webhook.status_action(422), StatusAction::Retry);
    assert_eq!(orders.webhook.circuit_breaker.failure_threshold, 2);
    assert_eq!(
        orders.webhook.circuit_breaker.open_duration,
        Duration::from_secs(5)
    );
    assert_eq!(
        orders.webhook.signing_key().map(|k| k.len()),
        Some(24),
        "whsec_ base64 decodes"
    );
    assert_eq!(
        orders.offset_store_path,
        PathBuf::from("/home/app/.rocketmq_offsets"),
        "~ expands with HOME"
    );

    let audit = &config.subscriptions[1];
    assert_eq!(audit.name, "audit/orders");
    assert_eq!(audit.message_model, MessageModel::Broadcasting);
    assert_eq!(audit.consume_from, ConsumeFrom::FirstOffset);
    assert_eq!(audit.allocate_queues.len(), 2);
    assert_eq!(audit.allocate_queues[1].queue_id, 1);
    assert_eq!(audit.webhook.format, WebhookFormat::Raw);
    assert_eq!(audit.consume_mode, ConsumeMode::Concurrent);

    match config.origin("subscriptions.0.pull_batch_size") {
        Origin::File { line, .. } => assert_eq!(line, Some(25)),
        other => panic!("expected the file, got {other}"),
    }
}

#[test]
fn environment_overrides_the_file_and_fills_subscriptions() {
    let yaml = "\
namesrv_addr: a:1
log: {format: json}
subscriptions:
  - group: g1
    topic: t1
    pull_batch_size: 16
    webhook: {url: http://h/1}
  - group: g2
    topic: t2
    webhook: {url: http://h/2}
";
    let config = ok(
        Some(yaml),
        &[
            ("ROCKETMQ_NAMESRV_ADDR", "b:2"),
            ("ROCKETMQ_LOG_FORMAT", "pretty"),
            ("ROCKETMQ_PULL_BATCH_SIZE", "64"),
            ("ROCKETMQ_WEBHOOK_TOKEN", "tok"),
            (
                "ROCKETMQ_SUBSCRIPTIONS__1__WEBHOOK__URL",
                "https://override/2",
            ),
            ("ROCKETMQ_SUBSCRIPTIONS__0__CONSUME_THREAD_MAX", "40"),
        ],
    );
    assert_eq!(
        config.namesrv_addr.addrs(),
        ["b:2"],
        "env beats file at top level"
    );
    assert_eq!(config.log.format, LogFormat::Pretty);
    // Per-subscription variables are defaults: the entry that sets the key keeps its value.
    assert_eq!(config.subscriptions[0].pull_batch_size, 16);
    assert_eq!(config.subscriptions[1].pull_batch_size, 64);
    for sub in &config.subscriptions {
        assert_eq!(
            sub.webhook.bearer_token.as_ref().map(Secret::expose),
            Some("tok")
        );
    }
    // Indexed variables beat the entry.
    assert_eq!(config.subscriptions[1].webhook.url, "https://override/2");
    assert_eq!(config.subscriptions[0].webhook.url, "http://h/1");
    assert_eq!(config.subscriptions[0].consume_thread_max, 40);
    assert_eq!(config.subscriptions[0].webhook_concurrency(), 40);

    assert_eq!(
        config.origin("subscriptions.1.pull_batch_size"),
        Origin::Env {
            variable: "ROCKETMQ_PULL_BATCH_SIZE".into()
        }
    );
    assert_eq!(
        config.origin("namesrv_addr"),
        Origin::Env {
            variable: "ROCKETMQ_NAMESRV_ADDR".into()
        }
    );
    assert!(matches!(
        config.origin("subscriptions.0.pull_batch_size"),
        Origin::File { line: Some(6), .. }
    ));
}

#[test]
fn env_only_mode_runs_one_subscription() {
    let config = ok(
        None,
        &[
            ("NAMESRV_ADDR", "10.0.0.1:9876;10.0.0.2:9876"),
            ("ROCKETMQ_CONSUMER_GROUP", "GID_orders"),
            ("ROCKETMQ_TOPIC", "orders"),
            ("ROCKETMQ_EXPRESSION", "a || b"),
            ("ROCKETMQ_EXPRESSION_TYPE", "TAG"),
            ("ROCKETMQ_CONSUME_MODE", "ORDERLY"),
            ("ROCKETMQ_WEBHOOK_URL", "http://localhost:3000/events"),
            ("ROCKETMQ_WEBHOOK_FORMAT", "cloudevents_batch"),
            ("ROCKETMQ_ADMIN_LISTEN", "127.0.0.1:9000"),
            ("ROCKETMQ_INSTANCE_NAME", "pod-7"),
            ("ROCKETMQ_MESSAGE_MODEL", "BROADCASTING"),
            ("ROCKETMQ_CONSUME_FROM_WHERE", "CONSUME_FROM_TIMESTAMP"),
            ("ROCKETMQ_CONSUME_TIMESTAMP", "20240501080000"),
            ("ROCKETMQ_ALLOCATE_STRATEGY", "hash"),
            ("ROCKETMQ_CONSUME_THREAD_MIN", "4"),
            ("ROCKETMQ_CONSUME_THREAD_MAX", "8"),
            ("ROCKETMQ_CONSUME_BATCH_SIZE", "10"),
            ("ROCKETMQ_MAX_CACHE_COUNT_PER_QUEUE", "500"),
            ("ROCKETMQ_MAX_RETRY_TIMES", "3"),
            ("ROCKETMQ_ENABLE_AUTO_RECOVERY", "false"),
            ("ROCKETMQ_OFFSET_STORE_PATH", "/data/offsets"),
            ("ROCKETMQ_SUSPEND_CURRENT_QUEUE_TIME_MILLIS", "250"),
            ("ROCKETMQ_LOCK_EXPIRE_TIME", "20000"),
            ("ROCKETMQ_ACCESS_KEY", "ak"),
            ("ROCKETMQ_SECRET_KEY", "sk"),
            ("ROCKETMQ_LOG_FORMAT", "json"),
        ],
    );
    assert_eq!(config.namesrv_addr.addrs().len(), 2);
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(config.instance_name.as_deref(), Some("pod-7"));
    assert_eq!(config.client.access_key.as_deref(), Some("ak"));
    assert_eq!(config.log.format, LogFormat::Json);
    let [sub] = config.subscriptions.as_slice() else {
        panic!("expected one subscription");
    };
    assert_eq!(sub.name, "GID_orders/orders");
    assert_eq!(sub.expression, "a || b");
    assert_eq!(sub.consume_mode, ConsumeMode::Orderly);
    assert_eq!(sub.message_model, MessageModel::Broadcasting);
    assert_eq!(sub.consume_from, ConsumeFrom::Timestamp);
    assert_eq!(
        sub.consume_timestamp
            .as_ref()
            .map(ConsumeTimestamp::unix_millis),
        Some(1_714_550_400_000)
    );
    assert_eq!(sub.allocate_strategy, AllocateStrategy::ConsistentHash);
    assert_eq!((sub.consume_thread_min, sub.consume_thread_max), (4, 8));
    assert_eq!(sub.consume_batch_size, 10);
    assert_eq!(sub.max_cache_count_per_queue, 500);
    assert_eq!(sub.max_reconsume_times, 3);
    assert!(!sub.enable_auto_recovery);
    assert_eq!(sub.offset_store_path, PathBuf::from("/data/offsets"));
    assert_eq!(sub.suspend_current_queue_time, Duration::from_millis(250));
    assert_eq!(sub.lock_expire_time, Duration::from_secs(20));
    assert_eq!(sub.webhook.format, WebhookFormat::CloudEventsBatch);
    assert_eq!(sub.webhook_concurrency(), 8);
}

#[test]
fn original_units_of_the_environment() {
    let config = ok(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_CONSUME_TIMEOUT", "15"),
            ("ROCKETMQ_PERSIST_INTERVAL", "5000"),
            ("ROCKETMQ_MAX_CACHE_SIZE_PER_QUEUE", "100"),
            ("ROCKETMQ_SUSPEND_CURRENT_QUEUE_TIME_MILLIS", "1500"),
        ],
    );
    let sub = &config.subscriptions[0];
    assert_eq!(sub.consume_timeout, Duration::from_secs(15 * 60));
    assert_eq!(sub.persist_interval, Duration::from_secs(5));
    assert_eq!(sub.max_cache_size_per_queue, ByteSize::mib(100));
    assert_eq!(sub.suspend_current_queue_time, Duration::from_millis(1500));

    let config = ok(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_CONSUME_TIMEOUT", "3"),
            ("ROCKETMQ_PERSIST_INTERVAL", "250"),
            ("ROCKETMQ_MAX_CACHE_SIZE_PER_QUEUE", "7"),
        ],
    );
    let sub = &config.subscriptions[0];
    assert_eq!(sub.consume_timeout, Duration::from_secs(180));
    assert_eq!(sub.persist_interval, Duration::from_millis(250));
    assert_eq!(sub.max_cache_size_per_queue, ByteSize::mib(7));
}

#[test]
fn rocketmq_home_is_ignored() {
    let config = ok(
        Some(&one_sub("")),
        &[
            ("ROCKETMQ_HOME", "/home/rocketmq/rocketmq-4.9.7"),
            ("ROCKETMQ_SOMETHING_ELSE", "x"),
        ],
    );
    assert_eq!(config.subscriptions.len(), 1);
    let warned: Vec<&str> = config
        .warnings()
        .iter()
        .filter_map(|w| match w {
            ConfigWarning::UnknownVariable { variable, .. } => Some(variable.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        warned,
        ["ROCKETMQ_SOMETHING_ELSE"],
        "HOME is not even a warning"
    );
}

#[test]
fn numeric_looking_strings_stay_strings() {
    let config = ok(
        Some(&one_sub("").replace("group: g", "group: \"0001\"")),
        &[],
    );
    assert_eq!(config.subscriptions[0].group, "0001");
    let config = ok(Some(&one_sub("").replace("group: g", "group: '007'")), &[]);
    assert_eq!(config.subscriptions[0].group, "007");
    // serde_yaml reads an unquoted leading-zero number as text, so it survives too.
    let config = ok(Some(&one_sub("").replace("group: g", "group: 0001")), &[]);
    assert_eq!(config.subscriptions[0].group, "0001");

    let config = ok(
        None,
        &[
            ("ROCKETMQ_CONSUMER_GROUP", "0001"),
            ("ROCKETMQ_TOPIC", "1e3"),
            ("ROCKETMQ_INSTANCE_NAME", "42"),
            ("ROCKETMQ_WEBHOOK_URL", "http://h/x"),
        ],
    );
    assert_eq!(config.subscriptions[0].group, "0001");
    assert_eq!(config.subscriptions[0].topic, "1e3");
    assert_eq!(config.instance_name.as_deref(), Some("42"));
    assert_eq!(config.subscriptions[0].name, "0001/1e3");

    // Nested overrides are text too, yet fill numeric keys.
    let config = ok(
        Some(&one_sub("")),
        &[
            ("ROCKETMQ_SUBSCRIPTIONS__0__GROUP", "0002"),
            ("ROCKETMQ_SUBSCRIPTIONS__0__PULL_BATCH_SIZE", "0064"),
        ],
    );
    assert_eq!(config.subscriptions[0].group, "0002");
    assert_eq!(config.subscriptions[0].pull_batch_size, 64);
}

/// Without HOME (or with it empty) `~` cannot be expanded: a broadcasting subscription would
/// keep its offsets under a directory named `~` wherever it was started. Clustering does not
/// use the path.
#[test]
fn a_broadcasting_offset_path_under_an_unset_home_is_refused() {
    let broadcasting = one_sub("    message_model: BROADCASTING\n");
    for vars in [&[][..], &[("HOME", "")][..]] {
        let e = fail(Some(&broadcasting), vars);
        assert_error(
            &e,
            "subscriptions[0].offset_store_path",
            &["HOME is not set", "~/.rocketmq_offsets"],
        );
    }
    ok(Some(&one_sub("")), &[]);
    let config = ok(Some(&broadcasting), &[("HOME", "/home/app")]);
    assert_eq!(
        config.subscriptions[0].offset_store_path,
        PathBuf::from("/home/app/.rocketmq_offsets")
    );
}

#[test]
fn instance_name_of_a_broadcasting_daemon_must_be_a_directory_name() {
    let broadcasting = |name: &str| {
        format!(
            "instance_name: {name:?}\n{}",
            one_sub("    message_model: BROADCASTING\n")
        )
    };
    let home = [("HOME", "/home/app")];
    for bad in ["..", "a/b", "a\\b"] {
        let e = fail(Some(&broadcasting(bad)), &home);
        assert_error(&e, "instance_name", &["offset_store_path", "line 1"]);
    }
    let config = ok(Some(&broadcasting("pod-7.ns")), &home);
    assert_eq!(config.instance_name.as_deref(), Some("pod-7.ns"));
    // Clustering does not use the name as a directory, so it keeps any name.
    let config = ok(
        Some(&format!("instance_name: \"a/b\"\n{}", one_sub(""))),
        &[],
    );
    assert_eq!(config.instance_name.as_deref(), Some("a/b"));
}

#[test]
fn unquoted_number_for_a_string_key_says_to_quote_it() {
    let e = fail(Some(&one_sub("").replace("group: g", "group: 1234")), &[]);
    assert_error(&e, "subscriptions[0].group", &["line 2", "quote it"]);
}

// === unknown keys ===

#[test]
fn unknown_key_names_the_key_and_suggests_the_close_one() {
    let e = fail(Some(&one_sub("    topc: x\n")), &[]);
    match &e {
        ConfigError::UnknownKey {
            key,
            origin,
            suggestion,
        } => {
            assert_eq!(key, "subscriptions[0].topc");
            assert_eq!(suggestion.as_deref(), Some("topic"));
            assert!(
                matches!(origin, Origin::File { line: Some(6), .. }),
                "{origin}"
            );
        }
        other => panic!("expected UnknownKey, got {other}"),
    }
    let text = e.to_string();
    assert!(text.contains("did you mean `topic`"), "{text}");
    assert!(text.contains("config.yaml line 6"), "{text}");

    let e = fail(Some(&format!("namesrv_adr: a:1\n{}", one_sub(""))), &[]);
    assert_error(
        &e,
        "namesrv_adr",
        &["did you mean `namesrv_addr`", "line 1"],
    );

    let e = fail(
        Some(&one_sub("      circuit_breaker: {failure_treshold: 3}\n")),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].webhook.circuit_breaker.failure_treshold",
        &["did you mean `failure_threshold`"],
    );

    let e = fail(Some(&format!("completely_new: 1\n{}", one_sub(""))), &[]);
    match e {
        ConfigError::UnknownKey { suggestion, .. } => assert_eq!(suggestion, None),
        other => panic!("expected UnknownKey, got {other}"),
    }
}

#[test]
fn unknown_keys_in_defaults_and_nested_variables_name_their_source() {
    let yaml = format!(
        "subscription_defaults:\n  pull_bach_size: 8\n{}",
        one_sub("")
    );
    let e = fail(Some(&yaml), &[]);
    assert_error(
        &e,
        "subscription_defaults.pull_bach_size",
        &["line 2", "did you mean `pull_batch_size`"],
    );

    assert_variable_error(
        "ROCKETMQ_CLIENT__RPC_TIMOUT",
        "5s",
        "client.rpc_timout",
        &["did you mean `rpc_timeout`"],
    );

    assert_variable_error(
        "ROCKETMQ_SUBSCRIPTIONS__3__TOPIC",
        "x",
        "subscriptions[3].topic",
        &["no subscription 3"],
    );
}

// === validation classes ===

#[test]
fn required_keys_are_reported_with_their_variable() {
    let e = fail(None, &[("ROCKETMQ_TOPIC", "t")]);
    assert_error(
        &e,
        "subscriptions[0].group",
        &["ROCKETMQ_CONSUMER_GROUP", "(default)"],
    );
    assert_error(
        &e,
        "subscriptions[0].webhook.url",
        &["ROCKETMQ_WEBHOOK_URL"],
    );

    let e = fail(
        Some("subscriptions:\n  - topic: t\n    webhook: {url: http://h}\n"),
        &[],
    );
    assert_error(&e, "subscriptions[0].group", &["required", "line 2"]);

    let e = fail(
        None,
        &[
            ("ROCKETMQ_CONSUMER_GROUP", "bad group!"),
            IDENTITY[1],
            IDENTITY[2],
        ],
    );
    assert_error(
        &e,
        "subscriptions[0].group",
        &["environment ROCKETMQ_CONSUMER_GROUP", "\"bad group!\""],
    );
}

#[test]
fn no_subscriptions_is_an_error() {
    assert!(matches!(fail(None, &[]), ConfigError::NoSubscriptions));
    assert!(matches!(
        fail(
            Some("namesrv_addr: a:1\n"),
            &[("ROCKETMQ_PULL_BATCH_SIZE", "8")]
        ),
        ConfigError::NoSubscriptions
    ));
    assert!(matches!(fail(Some(""), &[]), ConfigError::NoSubscriptions));
}

#[test]
fn bad_urls_are_rejected() {
    for (url, needle) in [
        ("ftp://h/x", "scheme is `ftp`"),
        ("not a url", "not a URL"),
        ("http://", "not a URL"),
        ("http://127.0.0.1:0/x", "port 0 reaches nothing"),
    ] {
        let e = fail(
            None,
            &[IDENTITY[0], IDENTITY[1], ("ROCKETMQ_WEBHOOK_URL", url)],
        );
        assert_error(
            &e,
            "subscriptions[0].webhook.url",
            &[needle, "environment ROCKETMQ_WEBHOOK_URL"],
        );
    }
}

#[test]
fn worker_threads_are_read_and_checked() {
    let config = ok(Some(&one_sub("")), &[]);
    assert_eq!(
        config.worker_threads,
        WorkerThreads(1),
        "one thread by default"
    );
    assert_eq!(config.worker_threads.count(), Some(1));
    let config = ok(
        None,
        &[
            ("ROCKETMQ_WORKER_THREADS", "0"),
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
        ],
    );
    assert_eq!(config.worker_threads, WorkerThreads(0));
    assert_eq!(config.worker_threads.count(), None, "0: one per CPU");
    let config = ok(Some(&format!("worker_threads: 4\n{}", one_sub(""))), &[]);
    assert_eq!(config.worker_threads.count(), Some(4));
    let e = fail(
        None,
        &[
            ("ROCKETMQ_WORKER_THREADS", "1025"),
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
        ],
    );
    let (key, origin, value, reason) = invalid(&e);
    assert_eq!((key, value), ("worker_threads", "1025"));
    assert_eq!(origin.to_string(), "environment ROCKETMQ_WORKER_THREADS");
    assert!(reason.contains("between 0 and 1024"), "{reason}");
    let e = fail(Some(&format!("worker_threads: 2000\n{}", one_sub(""))), &[]);
    assert_error(&e, "worker_threads", &["between 0 and 1024", "line 1"]);
}

#[test]
fn process_cache_limits_are_read_and_checked() {
    let config = ok(
        None,
        &[
            ("ROCKETMQ_CACHE_MAX_COUNT", "2500"),
            ("ROCKETMQ_CACHE_MAX_SIZE", "48"),
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
        ],
    );
    assert_eq!(config.cache.max_count, 2500);
    assert_eq!(config.cache.max_size, ByteSize::mib(48));
    let config = ok(
        Some(&format!("cache: {{max_size: 1GiB}}\n{}", one_sub(""))),
        &[],
    );
    assert_eq!(config.cache.max_size, ByteSize::gib(1));
    assert_eq!(config.cache.max_count, 10_000);
    let e = fail(
        None,
        &[
            ("ROCKETMQ_CACHE_MAX_COUNT", "0"),
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
        ],
    );
    let (key, origin, value, reason) = invalid(&e);
    assert_eq!((key, value), ("cache.max_count", "0"));
    assert_eq!(origin.to_string(), "environment ROCKETMQ_CACHE_MAX_COUNT");
    assert!(reason.contains("between 1 and 16777216"), "{reason}");
    let e = fail(
        Some(&format!("cache:\n  max_size: 65GiB\n{}", one_sub(""))),
        &[],
    );
    assert_error(&e, "cache.max_size", &["between 1MiB and 64GiB", "line 2"]);
}

#[test]
fn delivery_limit_defaults_to_the_larger_of_128_and_any_subscription() {
    let config = ok(None, IDENTITY);
    assert_eq!(config.delivery.max_in_flight, Some(128));
    // A subscription that asks for more is not held below its own setting.
    let config = ok(Some(&one_sub("      concurrency: 300\n")), &[]);
    assert_eq!(config.delivery.max_in_flight, Some(300));
    let config = ok(Some(&one_sub("    consume_thread_max: 200\n")), &[]);
    assert_eq!(config.delivery.max_in_flight, Some(200));
    // An out-of-range concurrency is reported once, under its own key.
    let e = fail(Some(&one_sub("      concurrency: 200000\n")), &[]);
    assert_eq!(e.errors().len(), 1, "{e}");
    assert_error(
        &e,
        "subscriptions[0].webhook.concurrency",
        &["between 1 and 10000"],
    );
    // Set explicitly, it wins, even below a subscription's.
    let config = ok(
        Some(&format!(
            "delivery: {{max_in_flight: 10}}\n{}",
            one_sub("      concurrency: 300\n")
        )),
        &[],
    );
    assert_eq!(config.delivery.max_in_flight, Some(10));
    let config = ok(
        None,
        &[
            ("ROCKETMQ_DELIVERY_MAX_IN_FLIGHT", "40"),
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
        ],
    );
    assert_eq!(config.delivery.max_in_flight, Some(40));
    let e = fail(
        None,
        &[
            ("ROCKETMQ_DELIVERY_MAX_IN_FLIGHT", "0"),
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
        ],
    );
    let (key, origin, value, reason) = invalid(&e);
    assert_eq!((key, value), ("delivery.max_in_flight", "0"));
    assert_eq!(
        origin.to_string(),
        "environment ROCKETMQ_DELIVERY_MAX_IN_FLIGHT"
    );
    assert!(reason.contains("between 1 and 100000"), "{reason}");
    let e = fail(
        Some(&format!("delivery:\n  max_in_flit: 5\n{}", one_sub(""))),
        &[],
    );
    assert_error(&e, "delivery.max_in_flit", &["max_in_flight"]);
}

#[test]
fn bad_name_server_addresses_are_rejected() {
    for addr in ["localhost", "h:0", "h:port", "a:1;b"] {
        let e = fail(
            None,
            &[
                ("ROCKETMQ_NAMESRV_ADDR", addr),
                IDENTITY[0],
                IDENTITY[1],
                IDENTITY[2],
            ],
        );
        let (key, origin, value, _) = invalid(&e);
        assert_eq!(key, "namesrv_addr");
        assert_eq!(value, format!("{addr:?}"));
        assert_eq!(origin.to_string(), "environment ROCKETMQ_NAMESRV_ADDR");
    }
    let e = fail(Some(&format!("namesrv_addr: \"h:\"\n{}", one_sub(""))), &[]);
    assert_error(&e, "namesrv_addr", &["line 1"]);
}

/// `consume_thread_min` has no effect: left unset, it follows a small `consume_thread_max`
/// rather than fail on its default; set above the maximum, it still fails as in Java.
#[test]
fn an_unset_thread_minimum_follows_a_small_maximum() {
    let config = ok(
        None,
        &[IDENTITY, &[("ROCKETMQ_CONSUME_THREAD_MAX", "4")]].concat(),
    );
    let sub = &config.subscriptions[0];
    assert_eq!((sub.consume_thread_min, sub.consume_thread_max), (4, 4));
    let config = ok(Some(&one_sub("    consume_thread_max: 64\n")), &[]);
    assert_eq!(config.subscriptions[0].consume_thread_min, 20);
    // A profile's minimum is no more written by the operator than the default.
    let config = ok(
        None,
        &[
            IDENTITY,
            &[
                ("ROCKETMQ_PROFILE", "high_throughput"),
                ("ROCKETMQ_CONSUME_THREAD_MAX", "16"),
            ],
        ]
        .concat(),
    );
    let sub = &config.subscriptions[0];
    assert_eq!((sub.consume_thread_min, sub.consume_thread_max), (16, 16));
    let e = fail(
        Some(&one_sub(
            "    consume_thread_min: 20\n    consume_thread_max: 4\n",
        )),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].consume_thread_min",
        &["consume_thread_max (4)"],
    );
    let e = fail(Some(&one_sub("    consume_thread_max: 0\n")), &[]);
    // One error, under the key that was written (webhook.concurrency follows the maximum but
    // is not reported again).
    assert_eq!(e.errors().len(), 1, "{e}");
    assert_error(
        &e,
        "subscriptions[0].consume_thread_max",
        &["between 1 and 1000"],
    );
}

/// An expression that names no tag (a template whose parts came out empty) is refused, not
/// taken as `*`.
#[test]
fn a_tag_expression_naming_no_tag_is_refused() {
    for expression in ["'||'", "' || '", "'||||'"] {
        let e = fail(
            Some(&one_sub(&format!("    expression: {expression}\n"))),
            &[],
        );
        assert_error(&e, "subscriptions[0].expression", &["names no tag"]);
    }
    for expression in ["'*'", "'a||'", "' a || b '", "'*||'"] {
        ok(
            Some(&one_sub(&format!("    expression: {expression}\n"))),
            &[],
        );
    }
}

#[test]
fn java_ranges_are_enforced() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "consume_thread_min: 30",
            "subscriptions[0].consume_thread_min",
            "consume_thread_max (20)",
        ),
        (
            "consume_thread_max: 1001",
            "subscriptions[0].consume_thread_max",
            "between 1 and 1000",
        ),
        (
            "pull_batch_size: 0",
            "subscriptions[0].pull_batch_size",
            "between 1 and 1024",
        ),
        (
            "pull_batch_size: 1025",
            "subscriptions[0].pull_batch_size",
            "between 1 and 1024",
        ),
        (
            "consume_batch_size: 2000",
            "subscriptions[0].consume_batch_size",
            "between 1 and 1024",
        ),
        (
            "max_cache_count_per_queue: 70000",
            "subscriptions[0].max_cache_count_per_queue",
            "65535",
        ),
        (
            "max_cache_size_per_queue: 2GiB",
            "subscriptions[0].max_cache_size_per_queue",
            "between 1MiB and 1GiB",
        ),
        (
            "max_cache_size_per_queue: 100",
            "subscriptions[0].max_cache_size_per_queue",
            "bare number is bytes",
        ),
        (
            "max_cache_count_per_subscription: 0",
            "subscriptions[0].max_cache_count_per_subscription",
            "between 1 and 1048576",
        ),
        (
            "max_cache_size_per_subscription: 17GiB",
            "subscriptions[0].max_cache_size_per_subscription",
            "16GiB",
        ),
        (
            "max_span: 0",
            "subscriptions[0].max_span",
            "between 1 and 65535",
        ),
        (
            "lock_expire_time: 90s",
            "subscriptions[0].lock_expire_time",
            "60s",
        ),
        (
            "persist_interval: 0s",
            "subscriptions[0].persist_interval",
            "at least 100ms",
        ),
        (
            "persist_interval: 1ms",
            "subscriptions[0].persist_interval",
            "at least 100ms",
        ),
        (
            "pull_interval: 2m",
            "subscriptions[0].pull_interval",
            "65535ms",
        ),
    ];
    for (line, key, needle) in cases {
        let e = fail(Some(&one_sub(&format!("    {line}\n"))), &[]);
        assert_error(&e, key, &[needle, "config.yaml line 6"]);
    }
    // The unit slip the floor is for: a bare number is milliseconds.
    let e = fail(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_PERSIST_INTERVAL", "1"),
        ],
    );
    assert_error(
        &e,
        "subscriptions[0].persist_interval",
        &["at least 100ms", "environment ROCKETMQ_PERSIST_INTERVAL"],
    );
    let e = fail(
        Some(&format!(
            "client: {{rebalance_interval: 500ms}}\n{}",
            one_sub("")
        )),
        &[],
    );
    assert_error(&e, "client.rebalance_interval", &["at least 1s"]);
    let e = fail(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_PULL_BATCH_SIZE", "5000"),
        ],
    );
    assert_error(
        &e,
        "subscriptions[0].pull_batch_size",
        &["5000", "environment ROCKETMQ_PULL_BATCH_SIZE"],
    );
}

/// A batch deadline that ends before its request's would take the failure away from the
/// webhook, which alone knows an unreachable endpoint (no attempt spent) from a failed delivery.
#[test]
fn consume_timeout_must_outlast_the_webhook_timeout() {
    for consume_timeout in ["5s", "10s"] {
        let e = fail(
            Some(&one_sub(&format!(
                "    consume_timeout: {consume_timeout}\n"
            ))),
            &[],
        );
        let (key, origin, value, reason) = invalid(&e);
        assert_eq!(key, "subscriptions[0].consume_timeout");
        assert_eq!(value, consume_timeout);
        assert!(
            origin.to_string().ends_with("config.yaml line 6"),
            "{origin}"
        );
        // Unset, the timeout points at the webhook mapping, where it would be written.
        assert!(
            reason.contains("longer than `subscriptions[0].webhook.timeout` = 10s (file ")
                && reason.contains("config.yaml line 4)"),
            "{reason}"
        );
    }
    ok(
        Some(&one_sub("      timeout: 3s\n    consume_timeout: 5s\n")),
        &[],
    );

    // Each subscription is checked against its own webhook, wherever each value came from.
    let yaml = "subscription_defaults:\n  consume_timeout: 5s\nsubscriptions:\n  \
                - {group: a, topic: t, webhook: {url: http://h/a, timeout: 3s}}\n  \
                - {group: b, topic: t, webhook: {url: http://h/b}}\n";
    let e = fail(Some(yaml), &[]);
    let (key, origin, _, reason) = invalid(&e);
    assert_eq!(key, "subscriptions[1].consume_timeout");
    assert!(origin.to_string().contains("line 2"), "{origin}");
    assert!(
        reason.contains("`subscriptions[1].webhook.timeout` = 10s (file ")
            && reason.contains("line 5)"),
        "{reason}"
    );
    assert_variable_error(
        "ROCKETMQ_CONSUME_TIMEOUT",
        "8s",
        "subscriptions[0].consume_timeout",
        &["8s", "webhook.timeout` = 10s"],
    );
    let e = fail(
        Some(&one_sub("    consume_timeout: 30s\n")),
        &[("ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__TIMEOUT", "30s")],
    );
    assert_error(
        &e,
        "subscriptions[0].consume_timeout",
        &["30s (environment ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__TIMEOUT)"],
    );
}

#[test]
fn wrong_types_and_enum_values_are_reported() {
    let e = fail(Some(&one_sub("    pull_batch_size: lots\n")), &[]);
    assert_error(
        &e,
        "subscriptions[0].pull_batch_size",
        &["\"lots\"", "line 6"],
    );

    let e = fail(Some(&one_sub("    consume_timeout: 15\n")), &[]);
    assert_error(&e, "subscriptions[0].consume_timeout", &["no unit", "15m"]);

    // Would overflow `Instant + Duration` at run time.
    let e = fail(
        Some(&one_sub("    suspend_current_queue_time: 500000000000y\n")),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].suspend_current_queue_time",
        &["`500000000000y`", "365 days"],
    );

    let e = fail(Some(&one_sub("    message_model: BROADCAST\n")), &[]);
    assert_error(
        &e,
        "subscriptions[0].message_model",
        &["did you mean `BROADCASTING`", "line 6"],
    );

    let e = fail(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_CONSUME_MODE", "PARALLEL"),
        ],
    );
    assert_error(
        &e,
        "subscriptions[0].consume_mode",
        &["environment ROCKETMQ_CONSUME_MODE", "CONCURRENT, ORDERLY"],
    );

    let e = fail(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_ENABLE_AUTO_RECOVERY", "maybe"),
        ],
    );
    assert_error(
        &e,
        "subscription_defaults.enable_auto_recovery",
        &["ROCKETMQ_ENABLE_AUTO_RECOVERY"],
    );

    let e = fail(
        Some(&format!("admin: {{listen: \"nowhere\"}}\n{}", one_sub(""))),
        &[],
    );
    assert_error(&e, "admin.listen", &["line 1"]);

    let e = fail(Some("subscriptions: {group: g}\n"), &[]);
    assert_error(&e, "subscriptions", &["expected a list"]);
}

#[test]
fn timestamps_must_parse() {
    let e = fail(
        Some(&one_sub(
            "    consume_from: TIMESTAMP\n    consume_timestamp: yesterday\n",
        )),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].consume_timestamp",
        &["line 7", "yyyyMMddHHmmss"],
    );
    let e = fail(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_CONSUME_TIMESTAMP", "2024-13-01"),
        ],
    );
    assert_error(
        &e,
        "subscriptions[0].consume_timestamp",
        &["ROCKETMQ_CONSUME_TIMESTAMP"],
    );
}

#[test]
fn config_strategy_needs_queues() {
    let e = fail(Some(&one_sub("    allocate_strategy: CONFIG\n")), &[]);
    assert_error(
        &e,
        "subscriptions[0].allocate_queues",
        &["CONFIG needs the queues"],
    );
    let e = fail(
        Some(&one_sub(
            "    allocate_queues: [{broker_name: b, queue_id: 0}]\n",
        )),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].allocate_queues",
        &["only used with allocate_strategy CONFIG"],
    );
}

#[test]
fn duplicate_subscriptions_are_rejected() {
    let yaml = "\
subscriptions:
  - {group: g, topic: t, webhook: {url: http://h/1}}
  - {group: g, topic: t, webhook: {url: http://h/2}}
  - {name: same, group: g2, topic: t, webhook: {url: http://h/3}}
  - {name: same, group: g3, topic: t, webhook: {url: http://h/4}}
";
    let e = fail(Some(yaml), &[]);
    assert_error(
        &e,
        "subscriptions[1].name",
        &["subscriptions[0] has the same name", "line 3"],
    );
    assert_error(
        &e,
        "subscriptions[3].name",
        &["subscriptions[2] has the same name", "line 5"],
    );
    assert_eq!(e.errors().len(), 2, "{e}");

    for second_topic in ["t", "t2"] {
        let e = fail(
            Some(&format!("subscriptions:\n  - {{name: a, group: g, topic: t, webhook: {{url: http://h}}}}\n  - {{name: b, group: g, topic: {second_topic}, webhook: {{url: http://h}}}}\n")),
            &[],
        );
        assert_error(
            &e,
            "subscriptions[1].group",
            &[
                "subscriptions[0] already uses this group (topic \"t\")",
                "a group of its own",
            ],
        );
    }
}

#[test]
fn webhook_and_client_cross_checks() {
    let e = fail(Some(&one_sub("      signing_secret: not-base64!\n")), &[]);
    assert_error(
        &e,
        "subscriptions[0].webhook.signing_secret",
        &["whsec_", "***"],
    );
    assert!(!e.to_string().contains("not-base64!"), "{e}");

    let e = fail(
        Some(&one_sub(
            "      bearer_token: t\n      headers: {Authorization: Basic x}\n",
        )),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].webhook.bearer_token",
        &["one or the other"],
    );

    let e = fail(Some(&one_sub("      retry_codes: [404]\n")), &[]);
    assert_error(
        &e,
        "subscriptions[0].webhook.drop_codes[1]",
        &["also listed in retry_codes[0]"],
    );

    let e = fail(Some(&one_sub("      drop_codes: [2xx]\n")), &[]);
    assert_error(
        &e,
        "subscriptions[0].webhook.drop_codes[0]",
        &["2xx means success"],
    );

    let e = fail(Some(&one_sub("      retry_codes: [700]\n")), &[]);
    assert_error(
        &e,
        "subscriptions[0].webhook.retry_codes[0]",
        &["100..=599"],
    );

    let e = fail(
        Some(&one_sub("      headers: {Content-Length: \"10\"}\n")),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].webhook.headers.Content-Length",
        &["set by the transport"],
    );

    let e = fail(Some(&one_sub("      retry_after_cap: 5ms\n")), &[]);
    assert_error(
        &e,
        "subscriptions[0].webhook.retry_after_cap",
        &["5ms", "0s (ignore Retry-After) or at least 1s"],
    );
    for cap in ["0s", "1s"] {
        ok(
            Some(&one_sub(&format!("      retry_after_cap: {cap}\n"))),
            IDENTITY,
        );
    }

    let e = fail(
        Some(&one_sub(
            "      circuit_breaker: {open_duration: 2m, max_open_duration: 1m}\n",
        )),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].webhook.circuit_breaker.max_open_duration",
        &["open_duration (2m)"],
    );

    let e = fail(Some(&one_sub("")), &[("ROCKETMQ_ACCESS_KEY", "ak")]);
    assert_error(&e, "client.secret_key", &["both access_key and secret_key"]);

    let e = fail(
        Some(&format!(
            "client: {{tls: {{enabled: true, ca_file: /nonexistent/ca.pem}}}}\n{}",
            one_sub("")
        )),
        &[],
    );
    assert_error(&e, "client.tls.ca_file", &["does not exist", "line 1"]);

    for (client, key) in [
        ("{access_key: AK, secret_key: \"\"}", "client.secret_key"),
        ("{access_key: \"\", secret_key: SK}", "client.access_key"),
    ] {
        let e = fail(Some(&format!("client: {client}\n{}", one_sub(""))), &[]);
        assert_error(&e, key, &["must not be empty", "line 1"]);
    }

    // A webhook's TLS files are checked like the broker's, under the configuration's names.
    let e = fail(
        Some(&one_sub("      tls: {key_file: /nonexistent/key.pem}\n")),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].webhook.tls.cert_file",
        &["set together"],
    );
    assert_error(
        &e,
        "subscriptions[0].webhook.tls.key_file",
        &["/nonexistent/key.pem", "does not exist"],
    );
    let e = fail(
        Some(&one_sub("      tls: {ca_file: /nonexistent/ca.pem}\n")),
        &[],
    );
    assert_error(
        &e,
        "subscriptions[0].webhook.tls.ca_file",
        &["/nonexistent/ca.pem", "does not exist"],
    );

    let e = fail(
        Some(&format!("log: {{level: \"info,=[\"}}\n{}", one_sub(""))),
        &[],
    );
    assert_error(&e, "log.level", &["tracing filter"]);
    // Filters that parse but would silence the daemon.
    for (level, needle) in [
        ("warning", "`warning` is not a level"),
        ("info,WARNING", "`WARNING` is not a level"),
        ("fatal", "`fatal` is not a level"),
        ("eror", "`eror` is not a level"),
        ("rocketmq-webhook=debug", "`rocketmq_webhook`"),
        ("info,rocketmq-webhook", "`rocketmq_webhook`"),
    ] {
        let e = fail(
            Some(&format!("log: {{level: \"{level}\"}}\n{}", one_sub(""))),
            &[],
        );
        assert_error(&e, "log.level", &[needle]);
    }
    // Bare targets mean every level of that target, as written.
    for level in [
        "WARN",
        "info,rocketmq_webhook=debug",
        "debug,hyper[conn]=off",
        "3",
        "OFF",
        "info,rocketmq_webhook",
        "rocketmq_webhook::consumer",
        "rocketmq_webhook[span]",
        "warn,mio,h2,axum,tower,tokio,hyper,reqwest,rustls",
    ] {
        ok(
            Some(&format!("log: {{level: \"{level}\"}}\n{}", one_sub(""))),
            &[],
        );
    }
    // Empty parses as a filter without a directive: logging off.
    let e = fail(Some(&format!("log: {{level: \"\"}}\n{}", one_sub(""))), &[]);
    assert_error(&e, "log.level", &["must not be empty"]);
}

#[test]
fn several_problems_are_reported_together() {
    let e = fail(
        Some(
            &one_sub("    pull_batch_size: 0\n    max_span: 0\n").replace("http://h/x", "ftp://h"),
        ),
        &[],
    );
    assert_eq!(e.errors().len(), 3, "{e}");
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let e = fail(Some("subscriptions:\n  - group: [unclosed\n"), &[]);
    match e {
        ConfigError::Syntax { origin, .. } => {
            assert!(
                matches!(origin, Origin::File { line: Some(_), .. }),
                "{origin}"
            );
        }
        other => panic!("expected Syntax, got {other}"),
    }
    let e = fail(Some("just a string\n"), &[]);
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
    let e = fail(Some(&format!("{}    topic: again\n", one_sub(""))), &[]);
    assert_error(
        &e,
        "subscriptions[0].topic",
        &["already set on line 3", "line 6"],
    );
}

#[test]
fn unreadable_file_is_an_error() {
    let e = Config::load(&Sources::default().with_file("/nonexistent/rocketmq-webhook.yaml"))
        .expect_err("missing file");
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    assert_eq!(e.exit_code(), 2);
}

// === profiles ===

#[test]
fn profiles_sit_under_the_file_and_the_environment() {
    let yaml = format!(
        "profile: high_throughput\n{}",
        one_sub("    consume_batch_size: 4\n")
    );
    let config = ok(Some(&yaml), &[("ROCKETMQ_PULL_BATCH_SIZE", "100")]);
    let sub = &config.subscriptions[0];
    assert_eq!(config.profile, Some(Profile::HighThroughput));
    assert_eq!(sub.consume_thread_max, 64, "from the profile");
    assert_eq!(
        sub.max_cache_size_per_queue,
        ByteSize::mib(512),
        "from the profile"
    );
    assert_eq!(sub.consume_batch_size, 4, "file beats profile");
    assert_eq!(sub.pull_batch_size, 100, "environment beats profile");
    assert!(matches!(
        config.origin("subscriptions.0.consume_thread_max"),
        Origin::Profile {
            profile: Profile::HighThroughput,
            line: Some(_),
            ..
        }
    ));

    // ROCKETMQ_PROFILE beats the file's `profile:`.
    let config = ok(Some(&yaml), &[("ROCKETMQ_PROFILE", "resource-saving")]);
    assert_eq!(config.profile, Some(Profile::ResourceSaving));
    assert_eq!(config.subscriptions[0].consume_thread_max, 4);
    assert_eq!(config.worker_threads, WorkerThreads(1));
    assert_eq!(config.delivery.max_in_flight, Some(16));
    assert_eq!(
        config.client.poll_name_server_interval,
        Duration::from_secs(60)
    );

    let config = ok(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_PROFILE", "low_latency"),
        ],
    );
    assert_eq!(
        config.subscriptions[0].webhook.timeout,
        Duration::from_secs(3)
    );
    assert_eq!(config.client.rebalance_interval, Duration::from_secs(10));

    let e = fail(Some(&format!("{}profile: turbo\n", one_sub(""))), &[]);
    assert_error(
        &e,
        "profile",
        &["high_throughput, low_latency, resource_saving", "line 6"],
    );
}

#[test]
fn profile_values_differ_from_the_defaults() {
    let base = ok(None, IDENTITY);
    for profile in [
        Profile::HighThroughput,
        Profile::LowLatency,
        Profile::ResourceSaving,
    ] {
        let mut vars = IDENTITY.to_vec();
        vars.push(("ROCKETMQ_PROFILE", profile.as_str()));
        let config = ok(None, &vars);
        assert_ne!(
            config
                .redacted_yaml()
                .replace(&format!("profile: {profile}"), "profile: null"),
            base.redacted_yaml(),
            "{profile} changes something"
        );
    }
}

// === secrets and output ===

#[test]
fn secrets_never_appear_in_debug_or_redacted_output() {
    let config = ok(
        Some(FULL),
        &[
            ("ROCKETMQ_WEBHOOK_SECRET", "whsec_ZW52LXNlY3JldC12YWx1ZQ=="),
            ("HOME", "/home/app"),
        ],
    );
    let debug = format!("{config:?}");
    let yaml = config.redacted_yaml();
    for secret in [
        "SK-very-secret",
        "token-very-secret",
        "key-very-secret",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "ZW52LXNlY3JldC12YWx1ZQ",
    ] {
        assert!(!yaml.contains(secret), "{secret} in:\n{yaml}");
        if secret != "key-very-secret" {
            // Header values are plain strings in memory; only the YAML view masks them.
            assert!(!debug.contains(secret), "{secret} in:\n{debug}");
        }
    }
    assert!(yaml.contains("***"));
    assert!(yaml.contains("X-Tenant: acme"), "{yaml}");
    // The environment secret reached the second subscription only (the first sets its own).
    assert!(config.subscriptions[1].webhook.signing_secret.is_some());
    assert_eq!(
        config.subscriptions[0]
            .webhook
            .signing_key()
            .map(|k| k.len()),
        Some(24)
    );
}

/// Errors quote the value they refuse, but never a credential: not one set for a subscription
/// that does not exist, not a sensitive header that is not text, not a URL's password.
#[test]
fn errors_never_quote_credentials() {
    for (var, key) in [
        (
            "ROCKETMQ_SUBSCRIPTIONS__1__WEBHOOK__BEARER_TOKEN",
            "bearer_token",
        ),
        (
            "ROCKETMQ_SUBSCRIPTIONS__1__WEBHOOK__HEADERS__AUTHORIZATION",
            "authorization",
        ),
    ] {
        let e = fail(Some(&one_sub("")), &[(var, "s3cr3t-value")]);
        let text = e.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains(key) && text.contains("***"), "{text}");
    }
    let e = fail(
        Some(&one_sub(
            "      headers:\n        X-Api-Key: 12345678901234\n",
        )),
        &[],
    );
    let text = e.to_string();
    assert!(!text.contains("12345678901234"), "{text}");
    assert!(text.contains("X-Api-Key"), "{text}");
    // A mapping that holds credentials, given as text by mistake.
    for var in [
        "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__HEADERS",
        "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK",
    ] {
        let e = fail(Some(&one_sub("")), &[(var, "Authorization: Bearer s3cr3t")]);
        let text = e.to_string();
        assert!(!text.contains("s3cr3t"), "{var}: {text}");
    }
    for url in ["ftp://user:pw-secret@h/x", "http://user:pw-secret@"] {
        let yaml =
            format!("subscriptions:\n  - group: g\n    topic: t\n    webhook:\n      url: {url}\n");
        let text = fail(Some(&yaml), &[]).to_string();
        assert!(!text.contains("pw-secret"), "{text}");
        assert!(text.contains("user:***@"), "{text}");
    }
}

/// A signing secret without its `whsec_` prefix is decoded as base64 (the Standard Webhooks
/// reading); the operator is told, since a receiver using the text as the key would refuse it.
#[test]
fn a_signing_secret_without_its_prefix_is_flagged() {
    let bare = ok(
        None,
        &[
            IDENTITY,
            &[(
                "ROCKETMQ_WEBHOOK_SECRET",
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )],
        ]
        .concat(),
    );
    let text: Vec<String> = bare.warnings().iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|w| w.contains("signing_secret") && w.contains("no `whsec_` prefix")),
        "{text:?}"
    );
    assert!(!text.iter().any(|w| w.contains("MfKQ9r8G")), "{text:?}");
    let prefixed = ok(
        None,
        &[
            IDENTITY,
            &[(
                "ROCKETMQ_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )],
        ]
        .concat(),
    );
    assert!(prefixed.warnings().is_empty(), "{:?}", prefixed.warnings());
}

/// `check-config` shows where requests go without the URL's credentials.
#[test]
fn the_redacted_output_masks_url_credentials() {
    let config = ok(
        None,
        &[
            ("ROCKETMQ_CONSUMER_GROUP", "g"),
            ("ROCKETMQ_TOPIC", "t"),
            (
                "ROCKETMQ_WEBHOOK_URL",
                "https://app:pw-secret@h:8443/hook?tenant=acme&api_key=k-secret",
            ),
        ],
    );
    let yaml = config.redacted_yaml();
    assert!(
        !yaml.contains("pw-secret") && !yaml.contains("k-secret"),
        "{yaml}"
    );
    assert!(
        yaml.contains("https://app:***@h:8443/hook?tenant=***&api_key=***"),
        "{yaml}"
    );
    // The configuration itself keeps them.
    assert!(config.subscriptions[0].webhook.url.contains("pw-secret"));
    // A user name without a password is a token.
    assert_eq!(shown_url("https://tok-secret@h/x"), "https://***@h/x");
    // Every query value (keys hide under many names: Azure's `code`, SAS `sig`), and a
    // parameter without `=` (it may be a token); names stay as written.
    assert_eq!(
        shown_url("http://h/x?code=k1&sig=k2&s3cr3t&a%20b=c"),
        "http://h/x?code=***&sig=***&***&a%20b=***"
    );
    // A URL that parses is shown as the parser normalises it.
    assert_eq!(shown_url("http://h"), "http://h/");
    assert_eq!(shown_url("http://h?k=v"), "http://h/?k=***");
    assert_eq!(shown_url("http://[::1]:8080/x"), "http://[::1]:8080/x");
    assert_eq!(shown_url("HTTPS://U:PW@H/X#frag"), "https://U:***@h/X#frag");
    // ... which reads through slashes, spaces and tabs the text would hide behind.
    assert_eq!(shown_url("http:/u:pw@h/x"), "http://u:***@h/x");
    assert_eq!(shown_url("http:///u:pw@h/x"), "http://u:***@h/x");
    assert_eq!(shown_url(" http://u:pw@h/x"), "http://u:***@h/x");
    assert_eq!(shown_url("ht\ttp:/\t/u:pw@h/x"), "http://u:***@h/x");
    // An `@` in the query of a URL without a path is no user info.
    assert_eq!(
        shown_url("https://h?sig=abc:def&to=a@b.c"),
        "https://h/?sig=***&to=***"
    );
    // An `@` in the path: user info whose `/` was not escaped, read as host and path.
    assert_eq!(shown_url("https://tok/en@h/x"), "https://***@h/x");
    assert_eq!(shown_url("http://u:123/w@h/x"), "http://***@h/x");
    assert_eq!(shown_url("u:pw@h/x?cb=http://y"), "u:***@h/x?cb=***");
    // Text that does not parse: everything up to the last `@` is user info.
    assert_eq!(shown_url("not a url"), "not a url");
    assert_eq!(
        shown_url("http://u:pw@h:99999/hook?api_key=s3cr3t"),
        "http://u:***@h:99999/hook?api_key=***"
    );
    assert_eq!(
        shown_url("http://user:pa?ss@host/hook"),
        "http://user:***@host/hook"
    );
    assert_eq!(shown_url("http://u:p/w@h/x"), "http://u:***@h/x");
    for odd in [
        "",
        ":",
        "://",
        "http:",
        "http://",
        "\u{e9}://\u{e9}:\u{e9}@\u{e9}",
    ] {
        let _ = shown_url(odd);
    }
}

#[test]
fn redacted_output_loads_back_to_the_same_configuration() {
    let config = ok(Some(FULL), &[("HOME", "/home/app")]);
    let yaml = config.redacted_yaml();
    // Secrets come back as "***", which is not a valid signing secret; drop them.
    let reloadable: String = yaml
        .lines()
        .filter(|l| !l.contains("signing_secret") && !l.contains("bearer_token: '***'"))
        .map(|l| format!("{l}\n"))
        .collect();
    let again = ok(Some(&reloadable), &[]);
    let strip = |s: String| {
        s.lines()
            .filter(|l| !l.contains("signing_secret") && !l.contains("bearer_token"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(again.redacted_yaml()), strip(yaml));
}

#[test]
fn every_file_in_the_config_directory_loads() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let reference = Config::load(&Sources::default().with_file(root.join("reference.yaml")))
        .unwrap_or_else(|e| panic!("reference.yaml: {e}"));
    assert!(!reference.subscriptions.is_empty());
    assert!(
        reference.warnings().is_empty(),
        "reference.yaml writes defaults only: {:?}",
        reference.warnings()
    );

    let mut count = 0;
    let profiles = std::fs::read_dir(root.join("profiles")).expect("config/profiles exists");
    for entry in profiles {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let mut sources = Sources::default().with_file(&path);
        for (k, v) in IDENTITY {
            sources = sources.with_env(*k, *v);
        }
        let config = Config::load(&sources).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(config.subscriptions.len(), 1);
        // The file is the same data as the built-in profile of that name.
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let profile: Profile = name.parse().expect("file named after a profile");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(profile.yaml(), text);
        count += 1;
    }
    assert_eq!(count, 3);
}

#[test]
fn reference_file_lists_every_key_with_its_default() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = std::fs::read_to_string(root.join("reference.yaml")).expect("reference.yaml");
    // Every key of the default tree (one subscription) appears in the reference.
    let defaults = ok(None, IDENTITY);
    let value: serde_yaml::Value = serde_yaml::from_str(&defaults.redacted_yaml()).expect("yaml");
    let mut keys = Vec::new();
    collect_keys(&value, &mut keys);
    for key in keys {
        assert!(
            text.contains(&format!("{key}:")),
            "config/reference.yaml does not mention `{key}`"
        );
    }
    assert!(text.contains("subscription_defaults:"));

    // And with its default: the reference loads to the tree the defaults give for the same
    // identity (group, topic, URL), apart from the subscription's name.
    let reference = ok(Some(&text), &[]);
    let same_identity = ok(
        None,
        &[
            ("ROCKETMQ_CONSUMER_GROUP", "GID_example"),
            ("ROCKETMQ_TOPIC", "example"),
            ("ROCKETMQ_WEBHOOK_URL", "http://127.0.0.1:8080/rocketmq"),
        ],
    );
    let tree = |c: &Config| -> serde_yaml::Value {
        let mut v: serde_yaml::Value = serde_yaml::from_str(&c.redacted_yaml()).expect("yaml");
        if let Some(sub) = v["subscriptions"][0].as_mapping_mut() {
            sub.remove("name");
        }
        v
    };
    let (got, want) = (tree(&reference), tree(&same_identity));
    if got != want {
        let (got, want) = (
            serde_yaml::to_string(&got).expect("yaml"),
            serde_yaml::to_string(&want).expect("yaml"),
        );
        let differ: Vec<String> = got
            .lines()
            .zip(want.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("reference: {a}\n default:   {b}"))
            .collect();
        panic!(
            "config/reference.yaml differs from the defaults:\n{}",
            differ.join("\n")
        );
    }
}

fn collect_keys(value: &serde_yaml::Value, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map {
                if let Some(k) = k.as_str() {
                    out.push(k.to_owned());
                }
                collect_keys(v, out);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for item in items {
                collect_keys(item, out);
            }
        }
        _ => {}
    }
}

#[test]
fn sources_from_process_reads_the_environment() {
    let sources = Sources::from_process(Some(PathBuf::from("x.yaml")));
    assert_eq!(sources.file, Some(PathBuf::from("x.yaml")));
    // PATH is set in every test environment we run in; no variable is set by this test.
    assert!(sources.env.iter().any(|(k, _)| k == "PATH"));
}

#[test]
fn nested_variables_reach_subscription_defaults() {
    let yaml = format!(
        "subscription_defaults:\n  pull_interval: 1s\n{}",
        one_sub("")
    );
    let config = ok(
        Some(&yaml),
        &[("ROCKETMQ_SUBSCRIPTION_DEFAULTS__PULL_INTERVAL", "250ms")],
    );
    assert_eq!(
        config.subscriptions[0].pull_interval,
        Duration::from_millis(250)
    );
    let config = ok(Some(&yaml), &[]);
    assert_eq!(
        config.subscriptions[0].pull_interval,
        Duration::from_secs(1)
    );
    assert!(matches!(
        config.origin("subscriptions.0.pull_interval"),
        Origin::File {
            line: Some(2),
            written: Some(_),
            ..
        }
    ));
}

proptest::proptest! {
    #[test]
    fn group_names_from_the_environment_stay_verbatim(
        group in "[0-9]{1,12}|[A-Za-z0-9_%|-]{1,40}",
    ) {
        let config = ok(
            None,
            &[
                ("ROCKETMQ_CONSUMER_GROUP", group.as_str()),
                IDENTITY[1],
                IDENTITY[2],
            ],
        );
        proptest::prop_assert_eq!(&config.subscriptions[0].group, &group);
    }
}

#[test]
fn a_timestamp_ending_in_multibyte_text_is_an_error_not_a_panic() {
    // Regression: tests/fuzz.rs found a panic splitting inside a multi-byte character.
    for text in [
        "\u{11350}aA!",
        "2024-05-01T08:00:00+0\u{e9}00",
        "\u{e9}\u{e9}\u{e9}\u{e9}",
    ] {
        assert!(text.parse::<ConsumeTimestamp>().is_err(), "{text}");
    }
}

// === keys set by path (`ROCKETMQ_<KEY>__<KEY>...`) ===

#[test]
fn list_keys_take_comma_separated_lists_from_path_variables() {
    let config = ok(
        Some(&one_sub("    allocate_strategy: CONFIG\n")),
        &[
            (
                "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__RETRY_CODES",
                " 429 , 5xx",
            ),
            ("ROCKETMQ_SUBSCRIPTION_DEFAULTS__WEBHOOK__DROP_CODES", "410"),
            (
                "ROCKETMQ_SUBSCRIPTIONS__0__ALLOCATE_QUEUES",
                "broker-a:0, broker-b:3",
            ),
        ],
    );
    let sub = &config.subscriptions[0];
    let codes = |list: &[StatusClass]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(codes(&sub.webhook.retry_codes), ["429", "5xx"]);
    assert_eq!(codes(&sub.webhook.drop_codes), ["410"]);
    // `[]` empties a list whose default is not empty.
    let emptied = ok(
        Some(&one_sub("")),
        &[("ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__DROP_CODES", "[]")],
    );
    assert!(emptied.subscriptions[0].webhook.drop_codes.is_empty());
    assert_eq!(
        sub.allocate_queues,
        [
            AllocateQueue {
                broker_name: "broker-a".to_owned(),
                queue_id: 0
            },
            AllocateQueue {
                broker_name: "broker-b".to_owned(),
                queue_id: 3
            },
        ]
    );
    assert!(matches!(
        config.origin("subscriptions.0.webhook.retry_codes"),
        Origin::Env { variable } if variable == "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__RETRY_CODES"
    ));
    // The mapping form of a queue is as strict as before.
    let e = fail(
        Some(&one_sub(
            "    allocate_strategy: CONFIG\n    allocate_queues: [{broker_name: b, queue: 0}]\n",
        )),
        &[],
    );
    assert_error(&e, "subscriptions[0].allocate_queues[0].queue", &["line 7"]);
}

#[test]
fn an_empty_item_of_a_list_variable_names_the_variable() {
    assert_variable_error(
        "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__RETRY_CODES",
        "429,,5xx",
        "subscriptions[0].webhook.retry_codes",
        &["empty"],
    );
    assert_variable_error(
        "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__DROP_CODES__0",
        "404",
        "subscriptions[0].webhook.drop_codes",
        &["comma-separated"],
    );
}

#[test]
fn a_whole_subscription_cannot_be_set_by_one_variable() {
    assert_variable_error(
        "ROCKETMQ_SUBSCRIPTIONS__0",
        "x",
        "subscriptions[0]",
        &["set its keys"],
    );
}

#[test]
fn header_names_set_by_path_take_dashes_for_underscores() {
    const VARIABLES: &[(&str, &str)] = &[
        (
            "ROCKETMQ_SUBSCRIPTIONS__0__WEBHOOK__HEADERS__X_API_KEY",
            "k1",
        ),
        (
            "ROCKETMQ_SUBSCRIPTION_DEFAULTS__WEBHOOK__HEADERS__X_TENANT",
            "t1",
        ),
    ];
    let config = ok(Some(&one_sub("")), VARIABLES);
    let headers = &config.subscriptions[0].webhook.headers;
    assert_eq!(headers.get("x-api-key").map(String::as_str), Some("k1"));
    assert_eq!(headers.get("x-tenant").map(String::as_str), Some("t1"));
    assert_eq!(headers.len(), 2, "{headers:?}");

    // Names equal but for case are one header: the layer with precedence keeps it.
    let file = one_sub("      headers: {X-Api-Key: from-file, X-Tenant: from-file}\n");
    let config = ok(Some(&file), VARIABLES);
    let headers = &config.subscriptions[0].webhook.headers;
    assert_eq!(headers.get("x-api-key").map(String::as_str), Some("k1"));
    assert_eq!(
        headers.get("X-Tenant").map(String::as_str),
        Some("from-file"),
        "the file's entry beats the defaults of every subscription"
    );
    assert_eq!(headers.len(), 2, "{headers:?}");
}

#[test]
fn sizes_set_by_path_take_the_yaml_unit_and_flat_variables_mib() {
    // The path variable reads its text as the YAML key does: a bare number is bytes.
    assert_variable_error(
        "ROCKETMQ_SUBSCRIPTIONS__0__MAX_CACHE_SIZE_PER_QUEUE",
        "100",
        "subscriptions[0].max_cache_size_per_queue",
        &["a bare number is bytes"],
    );
    let config = ok(
        Some(&one_sub("")),
        &[(
            "ROCKETMQ_SUBSCRIPTIONS__0__MAX_CACHE_SIZE_PER_QUEUE",
            "8MiB",
        )],
    );
    assert_eq!(
        config.subscriptions[0].max_cache_size_per_queue,
        ByteSize::mib(8)
    );
    // Likewise a duration needs its unit, as in YAML: no seed minutes here.
    assert_variable_error(
        "ROCKETMQ_SUBSCRIPTIONS__0__CONSUME_TIMEOUT",
        "15",
        "subscriptions[0].consume_timeout",
        &["unit"],
    );
    // The seed's flat variable keeps the seed's unit, MiB.
    let config = ok(
        Some(&one_sub("")),
        &[("ROCKETMQ_MAX_CACHE_SIZE_PER_QUEUE", "100")],
    );
    assert_eq!(
        config.subscriptions[0].max_cache_size_per_queue,
        ByteSize::mib(100)
    );
}

// === warnings ===

#[test]
fn enable_auto_recovery_false_is_a_warning_naming_its_source() {
    let config = ok(Some(&one_sub("    enable_auto_recovery: false\n")), &[]);
    let warnings: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("subscriptions[0].enable_auto_recovery")
                && w.contains("line 6")
                && w.contains("no effect")),
        "{warnings:?}"
    );
    let config = ok(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_ENABLE_AUTO_RECOVERY", "false"),
        ],
    );
    let warnings: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("environment ROCKETMQ_ENABLE_AUTO_RECOVERY")),
        "{warnings:?}"
    );
    assert!(ok(Some(&one_sub("")), &[]).warnings().is_empty());
}

/// A setting the subscription's modes never read, changed for that subscription, is a warning
/// naming it; a default written out, or a default for several subscriptions that only some of
/// them read, is not.
#[test]
fn settings_a_subscription_never_reads_are_warnings_when_changed() {
    let warnings = |yaml: Option<&str>, vars: &[(&str, &str)]| -> Vec<String> {
        ok(yaml, vars)
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let warned = |w: &[String], key: &str| {
        w.iter()
            .any(|w| w.contains(&format!("subscriptions[0].{key}`")) && w.contains("no effect"))
    };
    let w = warnings(
        Some(&one_sub(
            "    lock_expire_time: 20s\n    orderly_dlq_policy: BLOCK\n    \
             suspend_current_queue_time: 3s\n    offset_store_path: /tmp/offsets\n    \
             consume_timestamp: \"20260101000000\"\n",
        )),
        &[],
    );
    for key in [
        "lock_expire_time",
        "orderly_dlq_policy",
        "suspend_current_queue_time",
        "offset_store_path",
        "consume_timestamp",
    ] {
        assert!(warned(&w, key), "{key}: {w:?}");
    }
    assert_eq!(w.len(), 5, "{w:?}");
    let w = warnings(
        Some(&one_sub(
            "    consume_mode: ORDERLY\n    lock_expire_time: 20s\n    \
             orderly_dlq_policy: BLOCK\n    max_span: 10\n",
        )),
        &[],
    );
    assert!(warned(&w, "max_span") && w.len() == 1, "{w:?}");
    let w = warnings(
        Some(&one_sub(
            "    message_model: BROADCASTING\n    consume_mode: ORDERLY\n    \
             allocate_strategy: CONSISTENT_HASH\n    lock_expire_time: 20s\n    \
             offset_store_path: /tmp/offsets\n",
        )),
        &[],
    );
    assert!(
        warned(&w, "allocate_strategy") && warned(&w, "lock_expire_time") && w.len() == 2,
        "{w:?}"
    );
    let home = [("HOME", "/home/app")];
    assert!(
        warnings(
            Some(&one_sub(
                "    lock_expire_time: 30s\n    orderly_dlq_policy: DLQ\n    \
                 offset_store_path: ~/.rocketmq_offsets\n"
            )),
            &home
        )
        .is_empty(),
        "a default written out, `~` expanded or not"
    );
    assert!(
        warnings(Some(&one_sub("")), &home).is_empty(),
        "a key not written takes no warning from its subscription's origin"
    );
    let two = "subscription_defaults:\n  lock_expire_time: 20s\nsubscriptions:\n  - group: g\n    \
               topic: t\n    webhook:\n      url: http://h/x\n  - group: g2\n    topic: t\n    \
               consume_mode: ORDERLY\n    webhook:\n      url: http://h/x\n";
    assert!(
        warnings(Some(two), &[]).is_empty(),
        "a default the second reads"
    );
    let one = "subscription_defaults:\n  lock_expire_time: 20s\n".to_owned() + &one_sub("");
    assert!(warned(&warnings(Some(&one), &[]), "lock_expire_time"));
    let w = warnings(
        None,
        &[
            IDENTITY[0],
            IDENTITY[1],
            IDENTITY[2],
            ("ROCKETMQ_LOCK_EXPIRE_TIME", "20000"),
        ],
    );
    assert!(
        warned(&w, "lock_expire_time") && w.iter().any(|w| w.contains("ROCKETMQ_LOCK_EXPIRE_TIME")),
        "{w:?}"
    );
    // An index written `00` is subscription 0's.
    let w = warnings(
        Some(&one_sub("")),
        &[("ROCKETMQ_SUBSCRIPTIONS__00__LOCK_EXPIRE_TIME", "20s")],
    );
    assert!(warned(&w, "lock_expire_time"), "{w:?}");
}

#[test]
fn a_heartbeat_interval_the_broker_expiry_cannot_absorb_is_a_warning() {
    let yaml = |interval: &str| {
        format!(
            "client:\n  heartbeat_interval: {interval}\nsubscriptions:\n  - group: g\n    \
             topic: t\n    webhook:\n      url: http://h/x\n"
        )
    };
    let warnings: Vec<String> = ok(Some(&yaml("90s")), &[])
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        warnings.len() == 1
            && warnings[0].contains("`client.heartbeat_interval` = 1m 30s")
            && warnings[0].contains("line 2")
            && warnings[0].contains("at most 1m"),
        "{warnings:?}"
    );
    assert!(ok(Some(&yaml("60s")), &[]).warnings().is_empty());
}

/// The consume_timeout warnings of `tail` (subscription keys, then webhook keys) under a
/// one-subscription file.
fn deadline_warnings(subscription: &str, webhook: &str) -> Vec<String> {
    let yaml = format!(
        "subscriptions:\n  - group: g\n    topic: t\n{subscription}    webhook:\n      \
         url: http://h/x\n{webhook}"
    );
    ok(Some(&yaml), &[])
        .warnings()
        .iter()
        .map(ToString::to_string)
        .filter(|w| w.contains("consume_timeout"))
        .collect()
}

#[test]
fn requests_in_a_row_that_can_outlast_consume_timeout_are_a_warning() {
    // Orderly, one message per request: the batch's requests go one after another.
    let orderly =
        "    consume_mode: ORDERLY\n    consume_batch_size: 32\n    consume_timeout: 1m\n";
    let warnings = deadline_warnings(orderly, "      format: raw\n");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    for needle in [
        "`subscriptions[0].consume_timeout` = 1m",
        "line 6",
        "32 requests, sent one after another (ORDERLY)",
        "webhook.timeout = 10s: 5m 20s",
        "delivered again",
    ] {
        assert!(warning.contains(needle), "{needle:?} not in {warning}");
    }
    assert_eq!(
        deadline_warnings(orderly, "      format: cloudevents\n").len(),
        1
    );
    // Exactly the deadline is too long; just under it is not.
    let six = "    consume_mode: ORDERLY\n    consume_batch_size: 6\n    consume_timeout: 1m\n";
    assert_eq!(deadline_warnings(six, "      format: raw\n").len(), 1);
    let five = "    consume_mode: ORDERLY\n    consume_batch_size: 5\n    consume_timeout: 1m\n";
    assert!(deadline_warnings(five, "      format: raw\n").is_empty());

    // Concurrent: webhook.concurrency requests at a time.
    let concurrent = "    consume_batch_size: 64\n    consume_timeout: 2m\n";
    let warnings = deadline_warnings(concurrent, "      format: raw\n      concurrency: 4\n");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("4 at a time (webhook.concurrency)")
            && warnings[0].contains("2m 40s for 16 in a row"),
        "{warnings:?}"
    );
    assert!(deadline_warnings(concurrent, "      format: raw\n      concurrency: 8\n").is_empty());

    // One request per batch: the error's rule covers it.
    assert!(deadline_warnings(orderly, "      format: json\n").is_empty());
    assert!(deadline_warnings(orderly, "      format: cloudevents_batch\n").is_empty());
}
