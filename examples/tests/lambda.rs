//! The Lambda receiver (`lambda-receiver`) through a real Lambda runtime emulator: cargo-lambda's
//! (`cargo lambda watch --only-lambda-apis`), which runs the Lambda runtime API the function
//! polls, turns HTTP requests to its function URL into function URL events, and takes API
//! Gateway events with `cargo lambda invoke --data-file`. Each delivery goes to the function
//! three ways (function URL, API Gateway REST (v1) event, HTTP API (v2) event, from the files
//! in `tests/lambda-events/`) and must get the answer the axum receiver gives it.
//!
//! Skipped, with `skipped: cargo-lambda not installed` on standard output, when `cargo-lambda`
//! is missing; `scripts/test` installs it (`pip install cargo-lambda`).

use std::process::Stdio;
use std::time::Duration;

mod common;

use airmy_verify::testing::{self, Delivery};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{AXUM, Receiver, client, delivery};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const LAMBDA: &str = env!("CARGO_BIN_EXE_lambda-receiver");

fn cargo_lambda_installed() -> bool {
    std::process::Command::new("cargo-lambda")
        .args(["lambda", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The emulator on a free loopback port and the function polling it.
struct Emulator {
    _watch: Child,
    _function: Child,
    port: u16,
}

impl Emulator {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let watch = Command::new("cargo-lambda")
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1"])
            .args(["-P", &port.to_string()])
            // It reads the package's metadata: run it in the package.
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cargo lambda watch starts");
        let mut up = false;
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "the emulator listens within 30 s");
        let function = Command::new(LAMBDA)
            .env_clear()
            .env("AIRMY_WEBHOOK_SECRET", testing::SECRET)
            // What `cargo lambda watch --only-lambda-apis` says the function needs.
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096")
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the function starts");
        Self {
            _watch: watch,
            _function: function,
            port,
        }
    }

    /// A request to the function URL (a function URL event).
    async fn url(&self, delivery: &Delivery, content_type: &str) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}/lambda-url/_/hooks/airmy", self.port);
        post(&url, delivery, content_type).await
    }

    /// `cargo lambda invoke --data-file` with `file` (an API Gateway event from
    /// `tests/lambda-events/`), its body and signature replaced; base64 when `binary`.
    async fn invoke(&self, file: &str, delivery: &Delivery, binary: bool) -> (u16, Value) {
        let path = format!("{}/tests/lambda-events/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path)
            .expect("event file")
            .replace("SIGNATURE", &delivery.signature);
        let mut event: Value = serde_json::from_str(&text).expect("event JSON");
        if binary {
            event["body"] = json!(STANDARD.encode(&delivery.body));
            event["isBase64Encoded"] = json!(true);
            set_header(&mut event, "application/octet-stream");
        } else {
            event["body"] = json!(std::str::from_utf8(&delivery.body).expect("a text body"));
        }
        let data = std::env::temp_dir().join(format!(
            "airmy-lambda-{}-{}-{file}",
            std::process::id(),
            self.port
        ));
        std::fs::write(&data, serde_json::to_vec(&event).expect("JSON")).expect("written");
        let out = Command::new("cargo-lambda")
            .args(["lambda", "invoke", "-A", "127.0.0.1", "-o", "json"])
            .args(["-P", &self.port.to_string()])
            .arg("--data-file")
            .arg(&data)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .await
            .expect("cargo lambda invoke runs");
        let _ = std::fs::remove_file(&data);
        assert!(
            out.status.success(),
            "invoke {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let response: Value = serde_json::from_slice(&out.stdout).expect("the response event");
        let body = response["body"].as_str().unwrap_or_default();
        let body = if response["isBase64Encoded"] == json!(true) {
            STANDARD.decode(body).expect("base64")
        } else {
            body.as_bytes().to_vec()
        };
        let status = response["statusCode"].as_u64().expect("statusCode");
        (
            u16::try_from(status).expect("a status"),
            serde_json::from_slice(&body).expect("a JSON body"),
        )
    }
}

/// Sets the event's content type, in `headers` and, on a v1 event, `multiValueHeaders`.
fn set_header(event: &mut Value, content_type: &str) {
    for (map, value) in [
        ("headers", json!(content_type)),
        ("multiValueHeaders", json!([content_type])),
    ] {
        if let Some(headers) = event[map].as_object_mut() {
            let name = headers
                .keys()
                .find(|k| k.eq_ignore_ascii_case("content-type"))
                .cloned()
                .unwrap_or_else(|| "content-type".to_owned());
            headers.insert(name, value);
        }
    }
}

async fn post(url: &str, delivery: &Delivery, content_type: &str) -> (u16, Value) {
    let response = client()
        .post(url)
        .header("X-AIRMY-Signature", &delivery.signature)
        .header("content-type", content_type)
        .body(delivery.body.to_vec())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("response");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON body"))
}

#[tokio::test]
async fn the_lambda_receiver_answers_as_the_axum_receiver() {
    if !cargo_lambda_installed() {
        println!("skipped: cargo-lambda not installed");
        return;
    }
    let axum = Receiver::start(AXUM, &[]).await;
    let lambda = Emulator::start().await;

    let valid = delivery("evt_lambda_1");
    let mut tampered = valid.clone();
    let mut body = valid.body.to_vec();
    body[20] ^= 1;
    tampered.body = body.into();
    // Not ASCII: a body decoded from base64 and read as anything but the exact bytes fails.
    let mut data = testing::sample_data("run.completed");
    data["note"] = json!("naïve café ✓ 😀");
    let binary = testing::sample_event("run.completed")
        .id("evt_lambda_binary")
        .data(data)
        .created_now()
        .signed(testing::SECRET);
    let oversized = Delivery::sign(
        testing::run_completed_of_len(airmy_verify::DEFAULT_MAX_BODY_SIZE + 1),
        testing::SECRET,
    );
    let unknown = testing::sample_event("agent.deleted")
        .id("evt_lambda_unknown")
        .created_now()
        .signed(testing::SECRET);

    let cases = [
        (
            "valid",
            &valid,
            false,
            (
                200,
                json!({ "id": "evt_lambda_1", "type": "run.completed" }),
            ),
        ),
        (
            "tampered",
            &tampered,
            false,
            (401, json!({ "error": "invalid_signature" })),
        ),
        (
            "base64 binary body",
            &binary,
            true,
            (
                200,
                json!({ "id": "evt_lambda_binary", "type": "run.completed" }),
            ),
        ),
        (
            "oversized",
            &oversized,
            false,
            (413, json!({ "error": "body_too_large" })),
        ),
        (
            "unknown type",
            &unknown,
            false,
            (
                200,
                json!({ "id": "evt_lambda_unknown", "type": "agent.deleted" }),
            ),
        ),
    ];
    for (name, delivery, binary, expected) in cases {
        let content_type = if binary {
            "application/octet-stream"
        } else {
            "application/json"
        };
        let from_axum = post(&axum.url, delivery, content_type).await;
        assert_eq!(from_axum, expected, "{name}: the axum receiver");
        assert_eq!(
            lambda.url(delivery, content_type).await,
            from_axum,
            "{name}: function URL"
        );
        assert_eq!(
            lambda.invoke("apigw-rest-v1.json", delivery, binary).await,
            from_axum,
            "{name}: API Gateway REST (v1) event"
        );
        assert_eq!(
            lambda.invoke("apigw-http-v2.json", delivery, binary).await,
            from_axum,
            "{name}: API Gateway HTTP (v2) event"
        );
    }
}
