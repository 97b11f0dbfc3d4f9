//! `rocketmq-webhook topic ...`: topic administration for tests and demos.

use rocketmq_webhook::client::producer::{create_topic, ProducerError, TOPIC_ROUTE_WAIT};

use super::{describe, print_out, tool_client, validate_topic, CliError, NamesrvArg};

/// Topic subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TopicCommand {
    /// Create (or update) a topic on every master broker of the cluster and wait for its route.
    Create(CreateArgs),
}

/// Arguments of `topic create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    pub(crate) namesrv: NamesrvArg,
    /// Topic name.
    #[arg(long)]
    pub(crate) topic: String,
    /// Read and write queues per broker.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) queues: u16,
    /// Mark the topic as ordered (for orderly consumers).
    #[arg(long)]
    pub(crate) order: bool,
}

/// Runs a topic subcommand.
pub(crate) async fn run(cmd: TopicCommand) -> Result<(), CliError> {
    super::init_tool_logging();
    match cmd {
        TopicCommand::Create(args) => create(args).await,
    }
}

async fn create(args: CreateArgs) -> Result<(), CliError> {
    let addrs = args.namesrv.addrs()?;
    validate_topic(&args.topic)?;
    let client = tool_client(&addrs)?;
    let route = create_topic(
        &client,
        &args.topic,
        args.queues,
        args.order,
        TOPIC_ROUTE_WAIT,
    )
    .await
    .map_err(|e| match e {
        ProducerError::Client(e) => describe(&e, &addrs),
        other => CliError::runtime(other),
    })?;
    for q in &route.queue_datas {
        let addr = route.master_addr(&q.broker_name).unwrap_or("-");
        print_out(&format!(
            "topic {} ready on {} ({addr}): {} read / {} write queues{}\n",
            args.topic,
            q.broker_name,
            q.read_queue_nums,
            q.write_queue_nums,
            if args.order { ", ordered" } else { "" }
        ))?;
    }
    Ok(())
}
