//! The hyper receiver (`hyper-receiver`: the verify layer on a plain hyper 1 server, no axum)
//! on a real socket: valid, tampered, oversized and unknown-type deliveries.

use std::time::Duration;

mod common;

use airmy_verify::testing;
use common::{HYPER, Receiver, client, delivery};
use serde_json::{Value, json};

async fn post(url: &str, body: &[u8], signature: &str) -> (u16, Value) {
    let response = client()
        .post(url)
        .header("X-Airmy-Signature", signature)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON body"))
}

#[tokio::test]
async fn the_hyper_receiver_answers_as_the_axum_receiver() {
    let hyper = Receiver::start(HYPER, &[]).await;
    let valid = delivery("evt_hyper_1");
    assert_eq!(
        post(&hyper.url, &valid.body, &valid.signature).await,
        (200, json!({ "id": "evt_hyper_1", "type": "run.completed" })),
        "valid: the handler's answer"
    );

    let mut tampered = valid.body.to_vec();
    tampered[20] ^= 1;
    assert_eq!(
        post(&hyper.url, &tampered, &valid.signature).await,
        (401, json!({ "error": "invalid_signature" })),
        "tampered"
    );

    let oversized = testing::Delivery::sign(
        testing::run_completed_of_len(airmy_verify::DEFAULT_MAX_BODY_SIZE + 1),
        testing::SECRET,
    );
    assert_eq!(
        post(&hyper.url, &oversized.body, &oversized.signature).await,
        (413, json!({ "error": "body_too_large" })),
        "oversized"
    );

    let unknown = testing::sample_event("agent.deleted")
        .id("evt_hyper_unknown")
        .created_now()
        .signed(testing::SECRET);
    assert_eq!(
        post(&hyper.url, &unknown.body, &unknown.signature).await,
        (
            200,
            json!({ "id": "evt_hyper_unknown", "type": "agent.deleted" })
        ),
        "unknown type: handled as Event::Unknown"
    );

    // The handler ran for the two accepted deliveries, and only for them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hyper.lines(),
        [
            "handled evt_hyper_1 run.completed",
            "handled evt_hyper_unknown agent.deleted"
        ]
    );
}
