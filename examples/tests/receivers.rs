//! Black-box tests of the example receivers: each binary is started as a process on
//! 127.0.0.1:0 and sent real HTTP deliveries signed the way AIRMY signs them.

use std::process::Stdio;
use std::time::Duration;

mod common;

use airmy_verify::testing;
use airmy_verify::time::OffsetDateTime;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const RECEIVERS: &[&str] = &[
    env!("CARGO_BIN_EXE_axum-receiver"),
    env!("CARGO_BIN_EXE_actix-receiver"),
];

struct Receiver {
    _child: Child,
    url: String,
}

async fn start(bin: &str, envs: &[(&str, &str)]) -> Receiver {
    let mut child = Command::new(bin)
        .env_clear()
        .env("AIRMY_LISTEN", "127.0.0.1:0")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("receiver starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the receiver announces itself within 20 s")
    .expect("stdout is readable");
    let addr = line
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    Receiver {
        _child: child,
        url: format!("http://{addr}/hooks/airmy"),
    }
}

async fn post(url: &str, body: &[u8], signature: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("x-airmy-signature", signature)
        .body(body.to_vec())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON body"))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[tokio::test]
async fn receivers_accept_valid_events_and_refuse_bad_ones() {
    for bin in RECEIVERS {
        let r = start(
            bin,
            &[
                ("AIRMY_WEBHOOK_SECRET", testing::SECRET),
                ("AIRMY_WEBHOOK_SECRET_PREVIOUS", testing::PREVIOUS_SECRET),
            ],
        )
        .await;
        for event_type in airmy_verify::event::EVENT_TYPES
            .iter()
            .chain(&["brand.new"])
        {
            let d = testing::sample_event(event_type)
                .created_at(now())
                .signed(testing::SECRET);
            let id = format!("evt_test_{}", event_type.replace('.', "_"));
            assert_eq!(
                post(&r.url, &d.body, &d.signature).await,
                (200, json!({ "id": id, "type": event_type })),
                "{bin} {event_type}"
            );
        }
        let event = testing::sample_event("run.completed").created_at(now());
        let rotated = event.signed(testing::PREVIOUS_SECRET);
        assert_eq!(post(&r.url, &rotated.body, &rotated.signature).await.0, 200);
        let wrong = event.signed(testing::WRONG_SECRET);
        assert_eq!(
            post(&r.url, &wrong.body, &wrong.signature).await,
            (401, json!({ "error": "invalid_signature" }))
        );
        let mut tampered = event.signed(testing::SECRET).body.to_vec();
        tampered[20] ^= 1;
        assert_eq!(
            post(&r.url, &tampered, &event.signed(testing::SECRET).signature).await,
            (401, json!({ "error": "invalid_signature" }))
        );
        let stale = testing::sample_event("test")
            .created_at(now() - Duration::from_secs(301))
            .signed(testing::SECRET);
        assert_eq!(
            post(&r.url, &stale.body, &stale.signature).await,
            (401, json!({ "error": "stale_event" }))
        );
        let garbage = airmy_verify::testing::Delivery::sign(&b"{nope"[..], testing::SECRET);
        assert_eq!(
            post(&r.url, &garbage.body, &garbage.signature).await,
            (400, json!({ "error": "invalid_json" }))
        );
    }
}

#[tokio::test]
async fn receivers_honour_the_tolerance_setting() {
    for bin in RECEIVERS {
        let r = start(
            bin,
            &[
                ("AIRMY_WEBHOOK_SECRET", "whsec_tol"),
                ("AIRMY_TOLERANCE_SECS", "3600"),
            ],
        )
        .await;
        let old = testing::sample_event("test")
            .created_at(now() - Duration::from_secs(1800))
            .signed("whsec_tol");
        assert_eq!(
            post(&r.url, &old.body, &old.signature).await.0,
            200,
            "{bin}"
        );
    }
}

#[tokio::test]
async fn receivers_exit_2_without_a_secret() {
    for bin in RECEIVERS {
        for envs in [&[][..], &[("AIRMY_WEBHOOK_SECRET", "")][..]] {
            let stderr = common::exit_2_line(bin, envs).await;
            assert!(
                stderr.contains("AIRMY_WEBHOOK_SECRET is missing or empty"),
                "{stderr}"
            );
        }
        common::exit_2_line(
            bin,
            &[
                ("AIRMY_WEBHOOK_SECRET", "s"),
                ("AIRMY_TOLERANCE_SECS", "five"),
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn receivers_answer_repeated_deliveries_as_duplicates_with_idempotency_on() {
    for bin in RECEIVERS {
        let r = start(
            bin,
            &[
                ("AIRMY_WEBHOOK_SECRET", testing::SECRET),
                ("AIRMY_IDEMPOTENCY", "memory"),
            ],
        )
        .await;
        let d = testing::sample_event("run.completed")
            .id("evt_receiver_dup")
            .created_at(now())
            .signed(testing::SECRET);
        assert_eq!(
            post(&r.url, &d.body, &d.signature).await,
            (
                200,
                json!({ "id": "evt_receiver_dup", "type": "run.completed" })
            ),
            "{bin}"
        );
        assert_eq!(
            post(&r.url, &d.body, &d.signature).await,
            (
                200,
                json!({ "status": "duplicate", "id": "evt_receiver_dup" })
            ),
            "{bin}"
        );
    }
}

#[tokio::test]
async fn an_axum_and_an_actix_receiver_sharing_redis_process_an_event_once() {
    let redis = test_support::RedisServer::start_private();
    let envs = [
        ("AIRMY_WEBHOOK_SECRET", testing::SECRET),
        ("AIRMY_IDEMPOTENCY", redis.url()),
    ];
    let (axum, actix) = (
        start(RECEIVERS[0], &envs).await,
        start(RECEIVERS[1], &envs).await,
    );
    let d = testing::sample_event("alert.triggered")
        .id("evt_shared_by_replicas")
        .created_at(now())
        .signed(testing::SECRET);
    assert_eq!(post(&axum.url, &d.body, &d.signature).await.0, 200);
    assert_eq!(
        post(&actix.url, &d.body, &d.signature).await,
        (
            200,
            json!({ "status": "duplicate", "id": "evt_shared_by_replicas" })
        )
    );
    drop(redis);
}

/// `AIRMY_IDEMPOTENCY` on a Redis Cluster, in the forms of a Redis `AIRMY_INBOX`: several seed
/// nodes, `?cluster=true`, `?prefix=…`. An axum and an actix receiver started from it share
/// the claims: 12 events, whose keys spread over the primaries, each run once (on one) and
/// answered as duplicates by the other. Several hosts without `cluster=true` exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_share_idempotency_on_a_redis_cluster_given_several_seeds() {
    let cluster = test_support::RedisCluster::start();
    let hosts: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.trim_start_matches("redis://").to_owned())
        .collect();
    let seeds = format!("redis://{}", hosts.join(","));
    let setting = format!("{seeds}?cluster=true&prefix=receivers:cluster:");
    let envs = [
        ("AIRMY_WEBHOOK_SECRET", testing::SECRET),
        ("AIRMY_IDEMPOTENCY", setting.as_str()),
    ];
    let (axum, actix) = (
        start(RECEIVERS[0], &envs).await,
        start(RECEIVERS[1], &envs).await,
    );
    let mut primaries = std::collections::BTreeSet::new();
    for i in 0..12 {
        let id = format!("evt_cluster_{i}");
        primaries.insert(cluster.primary_of(&format!("receivers:cluster:{id}")));
        let d = testing::sample_event("alert.triggered")
            .id(&id)
            .created_at(now())
            .signed(testing::SECRET);
        let (first, second) = if i % 2 == 0 {
            (&axum, &actix)
        } else {
            (&actix, &axum)
        };
        let (status, body) = post(&first.url, &d.body, &d.signature).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_ne!(body["status"], "duplicate", "{id} runs once: {body}");
        assert_eq!(
            post(&second.url, &d.body, &d.signature).await,
            (200, json!({ "status": "duplicate", "id": id }))
        );
    }
    assert!(
        primaries.len() > 1,
        "the ids' keys are on several primaries"
    );
    for bin in RECEIVERS {
        let stderr = exits_2_with_idempotency(bin, &seeds).await;
        assert!(
            stderr.contains("AIRMY_IDEMPOTENCY") && stderr.contains("cluster"),
            "{stderr}"
        );
    }
}

/// Runs `bin` with `AIRMY_IDEMPOTENCY=setting`, asserts it exits 2, and returns its standard
/// error.
async fn exits_2_with_idempotency(bin: &str, setting: &str) -> String {
    let output = Command::new(bin)
        .env_clear()
        .env("AIRMY_WEBHOOK_SECRET", "s")
        .env("AIRMY_LISTEN", "127.0.0.1:0")
        .env("AIRMY_IDEMPOTENCY", setting)
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "{bin}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn receivers_exit_2_when_redis_cannot_be_reached() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    for bin in RECEIVERS {
        let stderr = exits_2_with_idempotency(bin, &url).await;
        assert!(stderr.contains("AIRMY_IDEMPOTENCY: cannot use"), "{stderr}");
    }
}
