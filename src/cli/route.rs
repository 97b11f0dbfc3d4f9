//! `rocketmq-webhook route`: show which brokers and queues serve a topic.

use std::fmt::Write as _;

use rocketmq_webhook::remoting::body::route::TopicRouteData;

use super::{describe, print_out, tool_client, validate_topic, CliError, NamesrvArg};

/// Arguments of `route`.
#[derive(Debug, clap::Args)]
pub(crate) struct RouteArgs {
    #[command(flatten)]
    pub(crate) namesrv: NamesrvArg,
    /// Topic name.
    #[arg(long)]
    pub(crate) topic: String,
    /// Print the route as the name server's JSON (standard JSON) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `route`.
pub(crate) async fn run(args: RouteArgs) -> Result<(), CliError> {
    super::init_tool_logging();
    let addrs = args.namesrv.addrs()?;
    validate_topic(&args.topic)?;
    let client = tool_client(&addrs)?;
    let route = client
        .namesrv()
        .route(&args.topic)
        .await
        .map_err(|e| describe(&e, &addrs))?;
    if args.json {
        let json = route.to_json();
        // Pretty-printed for people; `jq -c` restores one line.
        let text = serde_json::from_slice::<serde_json::Value>(&json)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| String::from_utf8_lossy(&json).into_owned());
        print_out(&format!("{text}\n"))
    } else {
        print_out(&render(&args.topic, &route))
    }
}

/// The readable form: one line per broker address, then one per queue set, then a summary.
pub(crate) fn render(topic: &str, route: &TopicRouteData) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "topic {topic}");
    let _ = writeln!(out, "brokers:");
    for broker in &route.broker_datas {
        for (id, addr) in &broker.broker_addrs {
            let role = if *id == 0 { "master" } else { "slave" };
            let _ = writeln!(
                out,
                "  {:<24} cluster={} id={id} ({role}) {addr}",
                broker.broker_name, broker.cluster
            );
        }
    }
    let _ = writeln!(out, "queues:");
    let (mut read, mut write) = (0, 0);
    for q in &route.queue_datas {
        let _ = writeln!(
            out,
            "  {:<24} read={} write={} perm={}",
            q.broker_name,
            q.read_queue_nums,
            q.write_queue_nums,
            perm(q.perm)
        );
        if q.perm & 4 != 0 {
            read += q.read_queue_nums;
        }
        if q.perm & 2 != 0 {
            write += q.write_queue_nums;
        }
    }
    let _ = writeln!(
        out,
        "total: {read} readable and {write} writable queues on {} broker(s)",
        route.broker_datas.len()
    );
    out
}

/// `rw` notation of the permission bits (4 read, 2 write).
fn perm(bits: i32) -> String {
    let r = if bits & 4 != 0 { 'r' } else { '-' };
    let w = if bits & 2 != 0 { 'w' } else { '-' };
    format!("{r}{w} ({bits})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_brokers_and_queues() {
        let route = TopicRouteData::parse(
            br#"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:10911"},"brokerName":"broker-a","cluster":"C"}],
                "queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#,
        )
        .expect("route");
        let text = render("T", &route);
        assert!(text.contains("broker-a"), "{text}");
        assert!(text.contains("id=0 (master) 127.0.0.1:10911"), "{text}");
        assert!(text.contains("read=4 write=4 perm=rw (6)"), "{text}");
        assert!(
            text.contains("total: 4 readable and 4 writable queues on 1 broker(s)"),
            "{text}"
        );
    }
}
