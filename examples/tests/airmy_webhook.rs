//! The `airmy-webhook` tool against receivers on loopback: accepted, rejected, retried after a
//! 500 then acknowledged, timed out, and its usage errors.

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airmy_verify::testing;
use airmy_verify_axum::AirmyVerifyLayer;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

const TOOL: &str = env!("CARGO_BIN_EXE_airmy-webhook");

async fn tool(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(TOOL)
        .env_clear()
        .args(args)
        .output()
        .await
        .expect("runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The axum example receiver, as a process.
async fn receiver() -> (tokio::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_axum-receiver"))
        .env_clear()
        .env("AIRMY_WEBHOOK_SECRET", testing::SECRET)
        .env("AIRMY_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("receiver starts");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("announced")
    .expect("readable");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_owned();
    (child, format!("{addr}/hooks/airmy"))
}

/// An in-test server behind the layer whose handler answers `statuses` in turn (then 200),
/// after `delay`; counts the calls that reached the handler.
async fn scripted(statuses: Vec<u16>, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let status = statuses.get(n).copied().unwrap_or(200);
        async move {
            tokio::time::sleep(delay).await;
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
        }
    };
    let app = Router::new()
        .route("/hooks/airmy", post(handler))
        .layer(AirmyVerifyLayer::new(airmy_verify::Verifier::new(
            airmy_verify::Secret::new(testing::SECRET).expect("secret"),
        )));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, calls)
}

#[tokio::test]
async fn an_accepted_event_exits_0_after_one_attempt() {
    let (_child, url) = receiver().await;
    let (code, out, err) = tool(&[
        "send",
        "--url",
        &url,
        "--secret",
        testing::SECRET,
        "--type",
        "run.completed",
        "--id",
        "evt_cli_1",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("attempt 1/3: 200 OK"), "{out}");
    assert!(
        out.contains(r#"{"id":"evt_cli_1","type":"run.completed"}"#),
        "{out}"
    );
}

#[tokio::test]
async fn a_file_is_sent_byte_for_byte() {
    let (_child, url) = receiver().await;
    let body = testing::sample_event("deployment.rollback")
        .created_at(airmy_verify::time::OffsetDateTime::now_utc())
        .body();
    let dir = std::env::temp_dir().join(format!("airmy-webhook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("body.json");
    std::fs::write(&file, &body).expect("write");
    let path = file.to_string_lossy().into_owned();
    let (code, out, _) = tool(&[
        "send",
        "--url",
        &url,
        "--secret",
        testing::SECRET,
        "--file",
        &path,
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("({} bytes", body.len())), "{out}");
    assert!(out.contains("deployment.rollback"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_rejected_event_is_retried_and_exits_1() {
    let (_child, url) = receiver().await;
    let (code, out, _) = tool(&[
        "send",
        "--url",
        &url,
        "--secret",
        testing::WRONG_SECRET,
        "--backoff-scale",
        "0.01",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("401 Unauthorized").count(), 3, "{out}");
    assert!(out.contains(r#"{"error":"invalid_signature"}"#), "{out}");
    assert!(out.contains("not acknowledged after 3 attempt(s)"), "{out}");
    let (code, out, _) = tool(&[
        "send",
        "--url",
        &url,
        "--secret",
        testing::WRONG_SECRET,
        "--no-retry",
    ])
    .await;
    assert_eq!(code, 1);
    assert_eq!(out.matches("attempt ").count(), 1, "{out}");
}

#[tokio::test]
async fn a_500_is_retried_then_acknowledged() {
    let (addr, calls) = scripted(vec![500], Duration::ZERO).await;
    let url = format!("http://{addr}/hooks/airmy");
    let (code, out, _) = tool(&[
        "send",
        "--url",
        &url,
        "--secret",
        testing::SECRET,
        "--backoff-scale",
        "0.01",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("attempt 1/3: 500 Internal Server Error"),
        "{out}"
    );
    assert!(out.contains("retrying in 0.01 s"), "{out}");
    assert!(out.contains("attempt 2/3: 200 OK"), "{out}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_slow_endpoint_times_out() {
    let (addr, calls) = scripted(vec![], Duration::from_secs(5)).await;
    let url = format!("http://{addr}/hooks/airmy");
    let (code, out, _) = tool(&[
        "send",
        "--url",
        &url,
        "--secret",
        testing::SECRET,
        "--timeout",
        "0.3",
        "--attempts",
        "2",
        "--backoff-scale",
        "0.01",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("timed out after").count(), 2, "{out}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connection_is_reported_and_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = format!("http://{addr}/hooks/airmy");
    let (code, out, _) = tool(&[
        "send",
        "--url",
        &url,
        "--secret",
        "s",
        "--backoff-scale",
        "0",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("connection failed").count(), 3, "{out}");
}

#[tokio::test]
async fn usage_errors_exit_2_with_a_clear_message() {
    let (code, _, err) = tool(&["send", "--url", "not a url", "--secret", "s"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("invalid --url \"not a url\""), "{err}");
    let (code, _, err) = tool(&["send", "--url", "ftp://127.0.0.1/x", "--secret", "s"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("only http and https"), "{err}");
    let (code, _, err) = tool(&[
        "send",
        "--url",
        "http://127.0.0.1:9/x",
        "--secret",
        "s",
        "--file",
        "/nonexistent/body.json",
    ])
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/body.json"), "{err}");
    let (code, _, err) = tool(&["send", "--url", "http://127.0.0.1:9/x"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("--secret"), "{err}");
    let (code, _, err) = tool(&["send", "--url", "http://127.0.0.1:9/x", "--secret", ""]).await;
    assert_eq!(code, 2);
    assert!(err.contains("the secret is empty"), "{err}");
    let url = "http://127.0.0.1:9/x";
    for (flag, value, expected) in [
        ("--timeout", "1e20", "--timeout must be"),
        ("--timeout", "0", "--timeout must be"),
        ("--timeout", "NaN", "--timeout must be"),
        ("--backoff-scale", "1e300", "--backoff-scale must be"),
        ("--backoff-scale", "-1", "--backoff-scale must be"),
        ("--backoff-scale", "inf", "--backoff-scale must be"),
    ] {
        let arg = format!("{flag}={value}");
        let (code, _, err) = tool(&["send", "--url", url, "--secret", "s", &arg]).await;
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(expected), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{flag} {value}: {err}");
    }
}

#[tokio::test]
async fn sign_prints_the_signature_of_a_file_or_standard_input() {
    let dir = std::env::temp_dir().join(format!("airmy-sign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("body.json");
    std::fs::write(&file, b"{\"exact\": \"bytes\"}\n").expect("write");
    let (code, out, _) = tool(&["sign", "--secret", "whsec_x", &file.to_string_lossy()]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        airmy_verify::sign(b"{\"exact\": \"bytes\"}\n", "whsec_x")
    );
    std::fs::remove_dir_all(&dir).ok();

    let mut child = Command::new(TOOL)
        .env_clear()
        .args(["sign", "--secret", "whsec_x", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"piped body").await.expect("write");
    drop(stdin);
    let output = child.wait_with_output().await.expect("exits");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        airmy_verify::sign(b"piped body", "whsec_x")
    );
}
