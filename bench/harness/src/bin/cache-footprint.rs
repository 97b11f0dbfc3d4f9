//! Heap held per cached message: decodes pull responses the way the daemon receives them and
//! keeps every message, as a process queue at its limit does, then reports the live heap
//! (a counting global allocator) per message, beside the wire bytes of a record.
//!
//!   bench/harness/target/release/cache-footprint [RESPONSES]
//!
//! Each response is a separate, exactly sized allocation holding 32 records of 1 KiB with the
//! properties of the scenarios' preloaded messages (see synthetic.rs), so the figure is the
//! decoded form's own cost plus the bytes it keeps alive, without any read-buffer slack.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use rocketmq_webhook::remoting::message::{decode_messages, MessageExt};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[path = "../synthetic.rs"]
mod synthetic;

use synthetic::{response, RECORDS};

fn main() -> std::process::ExitCode {
    let responses: i64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("usage: cache-footprint [RESPONSES]: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut held: Vec<MessageExt> = Vec::with_capacity((responses * RECORDS) as usize);
    let mut wire = 0usize;
    let before = LIVE.load(Ordering::Relaxed);
    for r in 0..responses {
        let body = response(r * RECORDS);
        wire += body.len();
        match decode_messages(&body) {
            Ok(messages) => held.extend(messages),
            Err(e) => {
                eprintln!("decode failed: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let live = (LIVE.load(Ordering::Relaxed) - before) as f64;
    let n = held.len() as f64;
    println!(
        "{} messages held: {:.0} heap bytes per message ({:.0} of them the wire record, {} the \
         message struct)",
        held.len(),
        live / n,
        wire as f64 / n,
        std::mem::size_of::<MessageExt>()
    );
    std::process::ExitCode::SUCCESS
}
