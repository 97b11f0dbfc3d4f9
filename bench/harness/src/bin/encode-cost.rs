//! Encodes webhook requests for pulled messages over and over: a fixed, I/O-free workload for
//! `valgrind --tool=callgrind`, like `decode-cost`.
//!
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     bench/harness/target/release/encode-cost N [BATCH [plain|json]]
//!
//! Each iteration builds one JSON-format request (headers and envelope) for BATCH messages
//! (default 1, the one-message-per-request case) of the synthetic pull response (bodies of plain
//! text by default; `json` gives JSON text, which has a quote to escape every few bytes), with the two
//! properties the consumer adds to every pulled message, allocating through mimalloc like the
//! daemon. Instructions per message =
//! (total at N iterations - total at 0 iterations) / (N x BATCH).

#[path = "../synthetic.rs"]
mod synthetic;

// The daemon's allocator: a request is mostly small allocations.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rocketmq_webhook::remoting::message::decode_messages;
use rocketmq_webhook::webhook::encode::{Context, Encoder, MessageView};
use rocketmq_webhook::webhook::Format;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| args.get(i).map_or(Ok(default), |a| a.parse());
    let body = match args.get(2).map(String::as_str) {
        None | Some("plain") => Some(synthetic::Body::Plain),
        Some("json") => Some(synthetic::Body::Json),
        Some(_) => None,
    };
    let (iterations, batch, body) = match (number(0, 2000), number(1, 1), body) {
        (Ok(n), Ok(b), Some(body)) if (1..=32).contains(&b) => (n, b, body),
        _ => {
            eprintln!("usage: encode-cost [ITERATIONS [BATCH 1..=32 [plain|json]]]");
            return std::process::ExitCode::from(2);
        }
    };
    let mut messages = match decode_messages(&synthetic::response_with(0, body)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("decode failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    synthetic::as_pulled(&mut messages);
    let encoder = Encoder::new(Format::Json, "com.example", None);
    let ctx = Context {
        group: "BenchGroup",
        topic: "BenchTopic",
    };
    let mut bytes = 0usize;
    for i in 0..iterations {
        let first = (i * batch) % (messages.len() - batch + 1);
        let views: Vec<MessageView<'_>> = messages[first..first + batch]
            .iter()
            .map(|m| MessageView::new(m, "broker-a"))
            .collect();
        match encoder.encode(ctx, &views) {
            Ok(request) => bytes += request.body.len() + request.headers.len(),
            Err(e) => {
                eprintln!("encode failed: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    println!("encoded {iterations} requests of {batch} messages ({bytes} bytes and headers)");
    std::process::ExitCode::SUCCESS
}
