//! Decodes one synthetic pull response over and over: a fixed, I/O-free workload whose
//! instruction count `valgrind --tool=callgrind` measures the same way on every run, where the
//! broker-backed scenarios vary by ±30 % on a shared machine.
//!
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     bench/harness/target/release/decode-cost 2000 [records|pull]
//!
//! The response holds 32 records of 1 KiB with the properties the broker under test stores for a
//! member of a batch, like the scenarios' preloaded messages (see synthetic.rs).
//! `records` (the default) decodes the records alone; `pull` maps a whole PULL_MESSAGE response
//! as the consumer does (the body copied out of the frame, the queue id and the consumer's
//! MIN_OFFSET/MAX_OFFSET properties set on every message), then looks up the message's tag, as
//! the tag filter does.
//! Instructions per message = (total at N iterations - total at 0 iterations) / (N x 32):
//! the run with 0 iterations measures the setup alone.

use rocketmq_webhook::remoting::message::decode_messages;
use rocketmq_webhook::remoting::rpc::{PullMessage, Rpc};
use rocketmq_webhook::remoting::{ExtFields, RemotingCommand, ResponseCode};

#[path = "../synthetic.rs"]
mod synthetic;

use synthetic::{response, RECORDS};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let iterations: usize = match args.next().map(|a| a.parse()) {
        None => 2000,
        Some(Ok(n)) => n,
        Some(Err(e)) => return usage(&e.to_string()),
    };
    let pull = match args.next().as_deref() {
        None | Some("records") => false,
        Some("pull") => true,
        Some(other) => return usage(&format!("unknown mode {other:?}")),
    };
    let body = response(0);
    let request = PullMessage::all_tags("bench-group", "bench-topic", 3, 0, RECORDS as i32);
    let answer = RemotingCommand::response_to(&request.command(), ResponseCode::Success, None)
        .with_ext_fields(
            ExtFields::new()
                .with("nextBeginOffset", RECORDS)
                .with("minOffset", 0)
                .with("maxOffset", 1_000_000)
                .with("suggestWhichBrokerId", 0),
        )
        .with_body(body.clone());
    let mut properties = 0usize;
    for _ in 0..iterations {
        let decoded = if pull {
            request.parse(answer.clone()).map(|r| r.messages)
        } else {
            decode_messages(&body)
        };
        match decoded {
            Ok(messages) => {
                properties += messages
                    .iter()
                    .map(|m| m.properties.len() + usize::from(m.tags().is_some()))
                    .sum::<usize>()
            }
            Err(e) => {
                eprintln!("decode failed: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    println!(
        "decoded {} messages ({properties} properties and tags)",
        iterations * RECORDS as usize
    );
    std::process::ExitCode::SUCCESS
}

fn usage(why: &str) -> std::process::ExitCode {
    eprintln!("usage: decode-cost [ITERATIONS] [records|pull]: {why}");
    std::process::ExitCode::from(2)
}
