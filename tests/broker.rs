//! Integration tests against the real RocketMQ name server and broker (tests/support), run in
//! every test run and never skipped (style.md rule 9c).

mod support;

use std::time::Duration;

use support::{raw, RocketMq};

/// The harness itself: the broker's route is on the name server and the broker answers.
#[tokio::test]
async fn harness_starts_a_registered_broker() {
    let mq = RocketMq::start().await;
    let resp = raw::request(&mq.namesrv_addr(), 105, &[("topic", "TBW102")], Duration::from_secs(3))
        .await
        .expect("route request");
    assert_eq!(resp.code, 0, "{:?}", resp.remark);
    let body = String::from_utf8_lossy(&resp.body);
    assert!(body.contains(&mq.broker_addr()), "route {body} lacks {}", mq.broker_addr());
}
