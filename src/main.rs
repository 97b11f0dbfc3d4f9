//! The `rocketmq-webhook` command line.

fn main() {
    println!("rocketmq-webhook");
}
