//! Decodes one synthetic pull response over and over: a fixed, I/O-free workload whose
//! instruction count `valgrind --tool=callgrind` measures the same way on every run, where the
//! broker-backed scenarios vary by ±30 % on a shared machine.
//!
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     bench/harness/target/release/decode-cost 2000
//!
//! The response holds 32 records of 1 KiB with the properties the broker under test stores for a
//! member of a batch, like the scenarios' preloaded messages (see synthetic.rs).
//! Instructions per message = (total at N iterations - total at 0 iterations) / (N x 32):
//! the run with 0 iterations measures the setup alone.

use rocketmq_webhook::remoting::message::decode_messages;

#[path = "../synthetic.rs"]
mod synthetic;

use synthetic::{response, RECORDS};

fn main() -> std::process::ExitCode {
    let iterations: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 2000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("usage: decode-cost [ITERATIONS]: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let body = response(0);
    let mut properties = 0usize;
    for _ in 0..iterations {
        match decode_messages(&body) {
            Ok(messages) => {
                properties += messages.iter().map(|m| m.properties.len()).sum::<usize>()
            }
            Err(e) => {
                eprintln!("decode failed: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    println!(
        "decoded {} messages ({properties} properties)",
        iterations * RECORDS as usize
    );
    std::process::ExitCode::SUCCESS
}
