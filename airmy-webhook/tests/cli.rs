//! The `airmy-webhook` tool as a process: `send` against receivers on loopback (accepted,
//! rejected, retried after a 500 then acknowledged, timed out), `sign`, its usage errors, the
//! `inbox` commands on SQLite and Redis, the completion scripts (sourced in a real bash) and the
//! man page.

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airmy_verify::testing;
use airmy_verify_axum::{AirmyDelivery, AirmyEvent, AirmyVerifyLayer};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::process::Command;

const TOOL: &str = env!("CARGO_BIN_EXE_airmy-webhook");

async fn tool(args: &[&str]) -> (i32, String, String) {
    tool_with(args, &[]).await
}

/// The tool with only `envs` in its environment.
async fn tool_with(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(TOOL)
        .env_clear()
        .envs(envs.iter().copied())
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

/// `handler` at `POST /hooks/airmy` behind the verify layer (the test secret), served on a
/// loopback port; its address.
async fn serve<H, T>(handler: H) -> SocketAddr
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
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
    addr
}

/// A receiver answering 200 `{"id":…,"type":…}` as the example receivers do; its URL.
async fn receiver() -> ((), String) {
    async fn handle(AirmyEvent(event): AirmyEvent) -> String {
        serde_json::json!({ "id": event.id, "type": event.event_type() }).to_string()
    }
    let addr = serve(handle).await;
    ((), format!("http://{addr}/hooks/airmy"))
}

/// A receiver whose handler answers `statuses` in turn (then 200), after `delay`; counts the
/// calls that reached the handler.
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
    (serve(handler).await, calls)
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

/// `--data` replaces the sample's data, each `--set` changes one field of it (JSON when the
/// value parses as JSON, a string otherwise); the event id is fresh each time. Bad JSON, a bad
/// path or `--file` together with either: exit 2 with one line, nothing sent.
#[tokio::test]
async fn data_and_set_send_the_fields_asked_for() {
    async fn echo(AirmyDelivery(delivery): AirmyDelivery) -> String {
        let body: serde_json::Value = serde_json::from_slice(delivery.bytes()).expect("JSON");
        serde_json::json!({ "id": body["id"], "data": body["data"] }).to_string()
    }
    let url = format!("http://{}/hooks/airmy", serve(echo).await);
    let send = |extra: &[&str]| {
        let mut args = vec![
            "send",
            "--url",
            &url,
            "--secret",
            testing::SECRET,
            "--no-retry",
        ];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, out, err) = tool(&args).await;
            assert_eq!(code, 0, "{out}{err}");
            let answer = out
                .lines()
                .find_map(|line| line.split_once("acknowledged ").map(|(_, json)| json))
                .expect("acknowledged");
            serde_json::from_str::<serde_json::Value>(answer).expect("the receiver's JSON")
        }
    };
    let answer = send(&[
        "--type",
        "run.completed",
        "--set",
        "data.id=run_7",
        "--set",
        "data.tokens_used=1200",
        "--set",
        "data.output.result=\"42\"",
    ])
    .await;
    let data = &answer["data"];
    assert_eq!(data["id"], "run_7");
    assert_eq!(data["tokens_used"], 1200);
    assert_eq!(data["output"]["result"], "42");
    assert_eq!(
        data["agent_id"], "ag_01HXYZ",
        "the rest of the sample is kept"
    );
    let again = send(&["--type", "run.completed"]).await;
    assert_ne!(again["id"], answer["id"], "a fresh event id each time");
    assert_eq!(again["data"]["id"], "run_01HXYZ123");

    let answer = send(&[
        "--type",
        "run.completed",
        "--data",
        r#"{"id":"run_8","tokens_used":5}"#,
        "--set",
        "data.meta.team=billing",
    ])
    .await;
    assert_eq!(
        answer["data"],
        serde_json::json!({ "id": "run_8", "tokens_used": 5, "meta": { "team": "billing" } })
    );

    for (extra, expected) in [
        (&["--data", "{not json"][..], "--data is not JSON"),
        (&["--data", "[1]"][..], "--data must be a JSON object"),
        (&["--set", "data.id"][..], "must be PATH=VALUE"),
        (&["--set", "id=evt_1"][..], "PATH must start with data."),
        (&["--set", "data..id=1"][..], "PATH has an empty key"),
        (
            &["--set", "data.tokens_used.x=1"][..],
            "data.tokens_used is not an object",
        ),
        (
            &["--file", "body.json", "--set", "data.id=1"][..],
            "cannot be used with",
        ),
        (
            &["--file", "body.json", "--data", "{}"][..],
            "cannot be used with",
        ),
    ] {
        let mut args = vec![
            "send",
            "--url",
            &url,
            "--secret",
            testing::SECRET,
            "--type",
            "run.completed",
        ];
        if extra[0] == "--file" {
            args.truncate(5);
        }
        args.extend_from_slice(extra);
        let (code, out, err) = tool(&args).await;
        assert_eq!(code, 2, "{extra:?}: {out}{err}");
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(out.is_empty(), "{extra:?}: nothing sent: {out}");
        if extra[0] != "--file" {
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
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

/// The inbox commands on a file with a dead letter: stats, dead, replay (dry run, one id, an
/// unknown id), purge; a missing inbox is a usage error.
#[tokio::test]
async fn the_inbox_commands_inspect_and_replay() {
    use airmy_verify_inbox::{SqliteBackend, SqliteOptions};
    let dir = std::env::temp_dir().join(format!("airmy-webhook-inbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("inbox.db");
    let inbox = format!("sqlite:{}", db.display());
    {
        let backend = SqliteBackend::open(&db, SqliteOptions::default()).expect("opens");
        inbox_commands_setup(&backend).await;
    }
    inbox_commands(&inbox).await;
    {
        let backend = SqliteBackend::open(&db, SqliteOptions::default()).expect("opens");
        replay_dry_run_agrees(&backend, &inbox).await;
        pause_resume_and_the_audit(&backend, &inbox).await;
    }
    let (code, _, err) = tool(&["inbox", "--inbox", "sqlite:/nonexistent/inbox.db", "stats"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no inbox at /nonexistent/inbox.db"), "{err}");
    assert!(!std::path::Path::new("/nonexistent/inbox.db").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// An id, a type and an error holding a right-to-left override, zero-width and isolate
/// characters and a terminal escape: `dead`, `list` and `show` print each of them as `\u{…}`,
/// never as it is (the dead list would show such an id reversed).
#[tokio::test]
async fn disguising_characters_are_shown_escaped_in_every_table() {
    use airmy_verify_inbox::{Queue as _, SqliteBackend, SqliteOptions, Store as _};
    const ID: &str = "evt_\u{202e}gpj.exe\u{200b}";
    const TYPE: &str = "alert.\u{2066}triggered\u{2069}";
    let dir = std::env::temp_dir().join(format!("airmy-webhook-bidi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("inbox.db");
    {
        let backend = SqliteBackend::open(&db, SqliteOptions::default()).expect("opens");
        let d = airmy_verify_inbox::conformance::delivery(ID, TYPE);
        backend.accept(&d).await.expect("accept");
        let leased = backend
            .take(1, Duration::from_secs(60))
            .await
            .expect("take");
        assert!(
            backend
                .bury(
                    &leased[0].id,
                    &leased[0].token,
                    "pager \u{202e}005\u{1b}[2J said no"
                )
                .await
                .expect("bury")
        );
    }
    let inbox = format!("sqlite:{}", db.display());
    let escaped_id = r"evt_\u{202e}gpj.exe\u{200b}";
    for args in [
        &["inbox", "--inbox", &inbox, "dead"][..],
        &["inbox", "--inbox", &inbox, "list", "--state", "dead"],
        &["inbox", "--inbox", &inbox, "show", ID],
    ] {
        let (code, out, err) = tool(args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        let raw: Vec<String> = out
            .chars()
            .filter(|&c| c != '\n' && airmy_verify::text::disguises(c))
            .map(|c| format!("U+{:04X}", u32::from(c)))
            .collect();
        assert!(
            raw.is_empty(),
            "{args:?}: printed as they are: {raw:?}\n{out}"
        );
        assert!(out.contains(escaped_id), "{args:?}: {out}");
        assert!(
            out.contains(r"alert.\u{2066}triggered\u{2069}"),
            "{args:?}: {out}"
        );
        assert!(
            out.contains(r"pager \u{202e}005\u{1b}[2J said no"),
            "{args:?}: {out}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// One dead letter and one processed entry.
async fn inbox_commands_setup(backend: &dyn airmy_verify_inbox::Backend) {
    {
        for id in ["evt_cli_dead", "evt_cli_done"] {
            let d = airmy_verify_inbox::conformance::delivery(id, "alert.triggered");
            backend.accept(&d).await.expect("accept");
        }
        for entry in backend
            .take(2, Duration::from_secs(60))
            .await
            .expect("take")
        {
            if entry.id == "evt_cli_dead" {
                assert!(
                    backend
                        .bury(&entry.id, &entry.token, "pager returned 500")
                        .await
                        .expect("bury")
                );
            } else {
                assert!(
                    backend
                        .complete(&entry.id, &entry.token)
                        .await
                        .expect("complete")
                );
            }
        }
    }
}

/// The commands on an inbox prepared by `inbox_commands_setup`.
async fn inbox_commands(inbox: &str) {
    let inbox = inbox.to_owned();
    let (code, out, _) = tool(&["inbox", "--inbox", &inbox, "stats"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("dead") && out.contains("done"), "{out}");
    let (code, out, _) = tool(&["inbox", "--inbox", &inbox, "dead"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("evt_cli_dead") && out.contains("pager returned 500"),
        "{out}"
    );
    let (code, out, _) = tool(&["inbox", "--inbox", &inbox, "--json", "dead"]).await;
    assert_eq!(code, 0);
    let dead: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(dead[0]["attempts"], 1);
    inbox_list_and_show(&inbox).await;
    let (code, out, _) = tool(&[
        "inbox",
        "--inbox",
        &inbox,
        "replay",
        "--all-dead",
        "--dry-run",
    ])
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("would replay evt_cli_dead"), "{out}");
    let (code, _, err) = tool(&["inbox", "--inbox", &inbox, "replay", "evt_unknown"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("evt_unknown"), "{err}");
    let (code, out, err) = tool(&["inbox", "--inbox", &inbox, "replay", "evt_cli_dead"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("replayed evt_cli_dead"), "{out}");
    assert_audited(&err, "unknown", "replay", 1, "evt_cli_dead");
    let (code, out, _) = tool(&["inbox", "--inbox", &inbox, "--json", "stats"]).await;
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (stats["pending"].as_u64(), stats["dead"].as_u64()),
        (Some(1), Some(0)),
        "{stats}"
    );
    let future = "2999-01-01T00:00:00Z";
    let purge = [
        "inbox",
        "--inbox",
        &inbox,
        "purge",
        "--processed-before",
        future,
    ];
    let (code, _, err) = tool(&purge).await;
    assert_eq!(code, 2, "inside the deduplication window: {err}");
    assert!(err.contains("deduplication window"), "{err}");
    // The window follows the receiver's tolerance: 20 minutes ago is outside the default
    // window (11 minutes) and inside that of a 10-minute tolerance (21 minutes).
    let twenty_minutes_ago = (airmy_verify::time::OffsetDateTime::now_utc()
        - Duration::from_secs(20 * 60))
    .format(&airmy_verify::time::format_description::well_known::Rfc3339)
    .expect("format");
    let (code, _, err) = tool(&[
        "inbox",
        "--inbox",
        &inbox,
        "purge",
        "--processed-before",
        &twenty_minutes_ago,
        "--tolerance-secs",
        "600",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("later than 21 minutes ago"), "{err}");
    let (code, out, err) = tool(&[
        "inbox",
        "--inbox",
        &inbox,
        "purge",
        "--processed-before",
        &twenty_minutes_ago,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("purged 0 processed entries"), "{out}");
    let (code, out, err) =
        tool_with(&[&purge[..], &["--force"]].concat(), &[("USER", "carol")]).await;
    assert_eq!(code, 0);
    assert!(out.contains("purged 1 processed entry"), "{out}");
    assert_audited(&err, "carol", "purge", 1, "");
    let (code, _, err) = tool(&[
        "inbox",
        "--inbox",
        &inbox,
        "purge",
        "--processed-before",
        "yesterday",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
}

/// `replay --dry-run ID` answers exactly what `replay ID` then does, for an unknown id and an
/// entry in each state (pending, scheduled, processing, done, dead), and changes nothing.
async fn replay_dry_run_agrees(backend: &dyn airmy_verify_inbox::Backend, inbox: &str) {
    let states = ["pending", "scheduled", "processing", "done", "dead"];
    for state in &states[1..] {
        let d = airmy_verify_inbox::conformance::delivery(&format!("evt_dry_{state}"), "test");
        backend.accept(&d).await.expect("accept");
    }
    let later = airmy_verify::time::OffsetDateTime::now_utc() + Duration::from_secs(3600);
    for entry in backend
        .take(100, Duration::from_secs(600))
        .await
        .expect("take")
    {
        let (id, token) = (entry.id.as_str(), entry.token.as_str());
        let recorded = match id {
            "evt_dry_scheduled" => backend.retry(id, token, "later", later).await,
            "evt_dry_processing" => Ok(true),
            "evt_dry_done" => backend.complete(id, token).await,
            "evt_dry_dead" => backend.bury(id, token, "gave up").await,
            _ => backend.release(id, token).await,
        };
        assert!(recorded.expect("recorded"), "{id}");
    }
    let d = airmy_verify_inbox::conformance::delivery("evt_dry_pending", "test");
    backend.accept(&d).await.expect("accept");
    let stats = async || {
        let (code, out, _) = tool(&["inbox", "--inbox", inbox, "--json", "stats"]).await;
        assert_eq!(code, 0);
        let mut stats: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        stats["oldest_pending_age_secs"] = serde_json::Value::Null;
        stats
    };
    let ids: Vec<String> = std::iter::once("evt_dry_unknown".to_owned())
        .chain(states.iter().map(|state| format!("evt_dry_{state}")))
        .collect();
    let before = stats().await;
    let mut dry = Vec::new();
    for id in &ids {
        dry.push(tool(&["inbox", "--inbox", inbox, "replay", "--dry-run", id]).await);
    }
    assert_eq!(stats().await, before, "a dry run changes nothing");
    for (id, (dry_code, dry_out, dry_err)) in ids.iter().zip(dry) {
        let (code, out, err) = tool(&["inbox", "--inbox", inbox, "replay", id]).await;
        assert_eq!(dry_code, code, "{id}: dry run {dry_err} / replay {err}");
        let expected = !matches!(id.as_str(), "evt_dry_unknown" | "evt_dry_processing");
        assert_eq!(code == 0, expected, "{id}: {err}");
        if code == 0 {
            assert_eq!(dry_out.trim(), format!("would replay {id}"));
            assert_eq!(out.trim(), format!("replayed {id}"));
        } else {
            assert_eq!(dry_err, err, "{id}: the same refusal");
            assert!(err.contains(id.as_str()), "{err}");
        }
    }
    // The replayed ones are pending again (the processing one still holds its lease).
    let after = stats().await;
    assert_eq!(after["processing"].as_u64(), before["processing"].as_u64());
    assert_eq!(
        after["dead"].as_u64(),
        Some(before["dead"].as_u64().unwrap_or(0) - 1)
    );
    assert_eq!(
        after["done"].as_u64(),
        Some(before["done"].as_u64().unwrap_or(0) - 1)
    );
}

/// `list` and `show` on the inbox of `inbox_commands_setup`.
async fn inbox_list_and_show(inbox: &str) {
    let (code, out, err) = tool(&["inbox", "--inbox", inbox, "list", "--state", "dead"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("id "), "a table: {out}");
    assert!(
        out.contains("evt_cli_dead") && out.contains("pager returned 500"),
        "{out}"
    );
    assert!(!out.contains("evt_cli_done"), "{out}");
    let (code, out, _) = tool(&["inbox", "--inbox", inbox, "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("evt_cli_dead") && out.contains("evt_cli_done"),
        "every state: {out}"
    );
    let (code, out, _) = tool(&[
        "inbox", "--inbox", inbox, "--json", "list", "--state", "done", "--limit", "1",
    ])
    .await;
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["entries"][0]["id"], "evt_cli_done", "{listed}");
    assert_eq!(listed["entries"][0]["state"], "done", "{listed}");
    assert!(listed["next"].is_null(), "{listed}");
    let (code, out, _) = tool(&["inbox", "--inbox", inbox, "list", "--type", "run.failed"]).await;
    assert_eq!((code, out.trim()), (0, "no entries"));
    let (code, _, err) = tool(&["inbox", "--inbox", inbox, "list", "--state", "lost"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pending, scheduled, paused, processing, dead, done"),
        "{err}"
    );
    let (code, _, err) = tool(&[
        "inbox", "--inbox", inbox, "list", "--state", "dead", "--after", "nonsense",
    ])
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cursor"), "{err}");

    let (code, out, err) = tool(&["inbox", "--inbox", inbox, "show", "evt_cli_dead"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state:       dead"), "{out}");
    assert!(out.contains("attempts:    1"), "{out}");
    assert!(
        out.contains("died at:") && out.contains("last error:  pager returned 500"),
        "{out}"
    );
    assert!(
        out.contains("\n  \"type\": \"alert.triggered\""),
        "the body indented: {out}"
    );
    let (code, out, _) = tool(&["inbox", "--inbox", inbox, "--json", "show", "evt_cli_dead"]).await;
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["state"], "dead", "{shown}");
    assert_eq!(shown["body"]["id"], "evt_cli_dead", "{shown}");
    let (code, _, err) = tool(&["inbox", "--inbox", inbox, "show", "evt_unknown"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such entry: evt_unknown"), "{err}");
}

#[tokio::test]
async fn the_inbox_commands_work_on_a_redis_url() {
    use airmy_verify_inbox::{RedisBackend, RedisOptions};
    let redis = test_support::RedisServer::start_private();
    let backend = RedisBackend::connect(redis.url(), RedisOptions::default())
        .await
        .expect("connects");
    inbox_commands_setup(&backend).await;
    inbox_commands(redis.url()).await;
    replay_dry_run_agrees(&backend, redis.url()).await;
    pause_resume_and_the_audit(&backend, redis.url()).await;

    // `?prefix=` reads the inbox under that prefix: there, nothing yet.
    let prefixed = format!("{}?prefix=billing:", redis.url());
    let (code, out, err) = tool(&["inbox", "--inbox", &prefixed, "--json", "stats"]).await;
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (stats["dead"].clone(), stats["done"].clone()),
        (0.into(), 0.into())
    );
    let (code, _, err) = tool(&[
        "inbox",
        "--inbox",
        &format!("{}?prefx=a", redis.url()),
        "stats",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown parameter \"prefx\""), "{err}");
}

/// `?cluster=true` reaches an inbox on a Redis Cluster through a node that does not own its
/// slot; without it, that node refuses the inbox's commands.
#[tokio::test]
async fn the_inbox_commands_reach_a_redis_cluster_with_cluster_true() {
    use airmy_verify_inbox::{RedisBackend, RedisOptions};
    let cluster = test_support::RedisCluster::start();
    let backend = RedisBackend::connect(&cluster.seed_url(), RedisOptions::default().cluster(true))
        .await
        .expect("connects");
    inbox_commands_setup(&backend).await;
    let owner = cluster.primary_of("{airmy:inbox:}stream");
    let other = cluster
        .primaries()
        .into_iter()
        .find(|port| *port != owner)
        .expect("another primary");
    let node = format!("redis://127.0.0.1:{other}");

    let (code, out, err) = tool(&[
        "inbox",
        "--inbox",
        &format!("{node}?cluster=true"),
        "--json",
        "stats",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (stats["dead"].as_u64(), stats["done"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    let (code, _, err) = tool(&["inbox", "--inbox", &node, "stats"]).await;
    assert_eq!(code, 2, "{err}");
}

/// A Redis inbox that does not answer: exit 2, the password never shown.
#[tokio::test]
async fn an_unreachable_redis_inbox_exits_2_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    let (code, _, err) = tool(&["inbox", "--inbox", &url, "stats"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--inbox: cannot use redis://[redacted]@127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let (code, _, err) = tool(&["inbox", "--inbox", "inbox.db", "stats"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sqlite:PATH"), "{err}");
}

/// `--version` prints the crate's version.
#[tokio::test]
async fn version_is_the_crates() {
    let (code, out, _) = tool(&["--version"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("airmy-webhook {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Runs `script` in a clean bash (no rc files) with `$TOOL` set, and returns its stdout.
async fn bash(script: &str) -> String {
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script])
        .env_clear()
        .env("TOOL", TOOL)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bash script, sourced in a real bash: it registers the completion, and completing after
/// `airmy-webhook ` and `airmy-webhook inbox ` offers the commands and the inbox's subcommands.
#[tokio::test]
async fn bash_completion_completes_commands_and_subcommands() {
    let complete = |words: &str| {
        format!(
            r#"source <("$TOOL" completions bash) || exit 1
spec=$(complete -p airmy-webhook) || exit 1
function=$(sed -E 's/.* -F ([^ ]+) .*/\1/' <<<"$spec")
COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
"$function" airmy-webhook "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
        )
    };
    let top = bash(&complete(r#"airmy-webhook """#)).await;
    let offered: Vec<&str> = top.lines().collect();
    for command in ["send", "sign", "inbox", "completions", "man"] {
        assert!(offered.contains(&command), "{command} not offered: {top}");
    }
    let inbox = bash(&complete(r#"airmy-webhook inbox """#)).await;
    let offered: Vec<&str> = inbox.lines().collect();
    for command in ["stats", "dead", "replay", "purge", "--inbox", "--json"] {
        assert!(offered.contains(&command), "{command} not offered: {inbox}");
    }
    let shells = bash(&complete(r#"airmy-webhook completions """#)).await;
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.lines().any(|l| l == shell), "{shells}");
    }
}

/// Every shell gets a script naming the tool and its commands; an unknown shell is a usage
/// error.
#[tokio::test]
async fn every_shell_gets_a_script() {
    for (shell, marker) in [
        ("bash", "complete -F _airmy__webhook"),
        ("zsh", "#compdef airmy-webhook"),
        ("fish", "complete -c airmy-webhook"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let (code, out, err) = tool(&["completions", shell]).await;
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("replay"), "{shell}");
    }
    let (code, _, err) = tool(&["completions", "tcsh"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("tcsh"), "{err}");
}

/// The man page: roff with the title, the version and every command; `--dir` writes one page
/// per command.
#[tokio::test]
async fn the_man_page_is_written() {
    let (code, out, err) = tool(&["man"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH airmy-webhook 1"), "{out}");
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    for command in ["send", "sign", "inbox", "completions"] {
        assert!(out.contains(command), "{command}");
    }
    let dir = std::env::temp_dir().join(format!("airmy-webhook-man-{}", std::process::id()));
    let shown = dir.to_string_lossy().into_owned();
    let (code, _, err) = tool(&["man", "--dir", &shown]).await;
    assert_eq!(code, 0, "{err}");
    for page in [
        "airmy-webhook.1",
        "airmy-webhook-send.1",
        "airmy-webhook-inbox.1",
        "airmy-webhook-inbox-replay.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).expect(page);
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_inbox_commands_work_on_a_postgres_url() {
    use airmy_verify_inbox::{PgBackend, PgOptions};
    let server = test_support::PostgresServer::start_private();
    let backend = PgBackend::connect(server.url(), PgOptions::default())
        .await
        .expect("connects");
    inbox_commands_setup(&backend).await;
    inbox_commands(server.url()).await;
    replay_dry_run_agrees(&backend, server.url()).await;
    pause_resume_and_the_audit(&backend, server.url()).await;
}

/// `?schema=S` reads the inbox in the schema S, not the default one; a parameter that neither
/// the inbox nor sqlx reads is refused by name; a database that does not exist is one line a
/// person reads, without the server's source position.
#[tokio::test]
async fn a_postgres_url_chooses_its_schema_and_nothing_is_ignored() {
    use airmy_verify_inbox::{PgBackend, PgOptions, Store};
    let server = test_support::PostgresServer::start_private();
    let billing = PgBackend::connect(server.url(), PgOptions::default().schema("billing_inbox"))
        .await
        .expect("connects");
    inbox_commands_setup(&billing).await;
    let default = PgBackend::connect(server.url(), PgOptions::default())
        .await
        .expect("connects");
    let pending = airmy_verify_inbox::conformance::delivery("evt_cli_default", "run.completed");
    default.accept(&pending).await.expect("accept");
    let stats = |url: String| async move {
        let (code, out, err) = tool(&["inbox", "--inbox", &url, "--json", "stats"]).await;
        assert_eq!(code, 0, "{url}: {err}");
        let stats: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        (
            stats["pending"].clone(),
            stats["dead"].clone(),
            stats["done"].clone(),
        )
    };
    let json = |n: u64| serde_json::Value::from(n);
    assert_eq!(
        stats(format!("{}?schema=billing_inbox", server.url())).await,
        (json(0), json(1), json(1))
    );
    assert_eq!(
        stats(server.url().to_owned()).await,
        (json(1), json(0), json(0))
    );

    for (query, named) in [
        ("?schem=billing_inbox", "\"schem\""),
        ("?sslmode=disable&foo=1", "\"foo\""),
    ] {
        let url = format!("{}{query}", server.url());
        let (code, out, err) = tool(&["inbox", "--inbox", &url, "stats"]).await;
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains(&format!("unknown parameter {named}")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    let missing = server.url().replace("/postgres", "/no_such_db");
    let (code, _, err) = tool(&["inbox", "--inbox", &missing, "stats"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(r#"database "no_such_db" does not exist"#),
        "{err}"
    );
    assert!(!err.contains("at line"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A receiver that answers a redirect is not followed (AIRMY follows none): the 3xx is the
/// attempt's answer, the target never called. The URL's password is never printed, and a body
/// holding a newline and an escape sequence cannot forge a line of the tool's output.
#[tokio::test]
async fn a_redirect_is_not_followed_and_nothing_is_forged_or_leaked() {
    let (target, target_calls) = scripted(vec![], Duration::ZERO).await;
    let location = format!("http://{target}/hooks/airmy");
    let app = Router::new().route(
        "/hooks/airmy",
        post(move || {
            let location = location.clone();
            async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, location)],
                    "moved\nattempt 2/2: 200 OK in 1 ms: acknowledged\x1b[2J",
                )
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://ops:hunter2@{addr}/hooks/airmy");
    let (code, out, err) = tool(&[
        "send",
        "--url",
        &url,
        "--secret",
        testing::SECRET,
        "--attempts",
        "2",
        "--backoff-scale",
        "0.01",
    ])
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(target_calls.load(Ordering::SeqCst), 0, "redirect followed");
    assert!(out.contains("307 Temporary Redirect"), "{out}");
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}{err}"
    );
    assert!(!out.contains('\x1b'), "{out:?}");
    let lines: Vec<&str> = out.lines().collect();
    // The POST line, two attempts, the verdict: the body's newline made no line of its own.
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines.iter().all(|l| !l.starts_with("attempt 2/2: 200")),
        "{out}"
    );
}

/// With its standard output a pipe nobody reads any more (`| head -1` once `head` is gone),
/// the tool stops quietly: no panic message, the status of a process ended by SIGPIPE.
#[tokio::test]
async fn a_closed_standard_output_is_a_quiet_stop() {
    let (_child, url) = receiver().await;
    let script = format!(
        "(sleep 0.5; {TOOL} send --url {url} --secret {}) | true; echo \"status=${{PIPESTATUS[0]}}\"",
        testing::SECRET
    );
    let output = Command::new("bash")
        .args(["-c", &script])
        .output()
        .await
        .expect("bash");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.contains("status=141"), "{out}{err}");
}

/// `err` holds exactly one audit line (the text form): by `actor`, `action`, `count` entries,
/// its ids `ids` (space-separated).
fn assert_audited(err: &str, actor: &str, action: &str, count: u64, ids: &str) {
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("airmy_verify_inbox::audit"))
        .collect();
    assert_eq!(lines.len(), 1, "one audit line: {err}");
    let line = lines[0];
    for field in [
        format!("actor=\"{actor}\""),
        format!("action=\"{action}\""),
        format!("count={count}"),
        format!("ids=\"{ids}\""),
        "at=\"".to_owned(),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }
}

/// `pause` and `resume` (a type, everything), the paused state in `stats` and `list`, each
/// action audited on standard error (text and JSON) and kept among the recent actions; a dead
/// letter replayed with `--all-dead` audited with its id.
async fn pause_resume_and_the_audit(backend: &dyn airmy_verify_inbox::Backend, inbox: &str) {
    use airmy_verify_inbox::conformance::delivery;
    for id in ["evt_pause_1", "evt_pause_2"] {
        backend
            .accept(&delivery(id, "run.failed"))
            .await
            .expect("accept");
    }
    backend
        .accept(&delivery("evt_pause_other", "alert.triggered"))
        .await
        .expect("accept");
    let with = |args: &[&'static str]| -> Vec<String> {
        ["inbox", "--inbox", inbox, "--actor", "ops"]
            .iter()
            .chain(args)
            .map(|a| (*a).to_owned())
            .collect()
    };
    let run = async |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tool(&args).await
    };

    let (code, out, err) = run(with(&["pause", "--type", "run.failed"])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "paused event type run.failed: 2 entries held");
    assert_audited(&err, "ops", "pause", 2, "");
    assert!(err.contains("subject=\"event type run.failed\""), "{err}");
    let (code, out, _) = run(with(&["pause", "--type", "run.failed"])).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("event type run.failed was paused already (since "),
        "{out}"
    );
    assert!(out.trim().ends_with(')'), "nothing more held: {out}");

    let (code, out, _) = run(with(&["--json", "stats"])).await;
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(stats["paused"], 2, "{stats}");
    assert_eq!(stats["pauses"].as_array().map(Vec::len), Some(1), "{stats}");
    assert_eq!(stats["pauses"][0]["event_type"], "run.failed", "{stats}");
    assert!(stats["pauses"][0]["since"].is_string(), "{stats}");
    let (code, out, _) = run(with(&["stats"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("\npaused              2\n"), "{out}");
    assert!(
        out.contains("paused: event type run.failed since "),
        "{out}"
    );
    let (code, out, _) = run(with(&["--json", "list", "--state", "paused"])).await;
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let ids: Vec<&str> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            assert_eq!(e["state"], "paused", "{e}");
            e["id"].as_str().expect("id")
        })
        .collect();
    assert_eq!(ids, ["evt_pause_1", "evt_pause_2"]);

    // A worker takes the other type only; its failure becomes a dead letter.
    let taken = backend
        .take(64, Duration::from_secs(60))
        .await
        .expect("take");
    assert!(
        taken.iter().all(|e| e.event_type != "run.failed"),
        "{taken:?}"
    );
    let other = taken
        .iter()
        .find(|e| e.id == "evt_pause_other")
        .expect("taken");
    assert!(
        backend
            .bury(&other.id, &other.token, "no pager")
            .await
            .expect("bury")
    );
    for e in taken.iter().filter(|e| e.id != "evt_pause_other") {
        assert!(backend.complete(&e.id, &e.token).await.expect("complete"));
    }
    let (code, out, err) = run(with(&["replay", "--all-dead"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed evt_pause_other"), "{out}");
    assert_audited(&err, "ops", "replay_dead", 1, "evt_pause_other");

    // Resumed, with the JSON forms.
    let (code, out, err) = run(with(&["--json", "resume", "--type", "run.failed"])).await;
    assert_eq!(code, 0, "{err}");
    let resumed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (
            resumed["released"].as_u64(),
            resumed["was_paused"].as_bool()
        ),
        (Some(2), Some(true)),
        "{resumed}"
    );
    assert_eq!(resumed["resumed"]["event_type"], "run.failed", "{resumed}");
    let audit: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(audit.len(), 1, "{err}");
    assert_eq!(audit[0]["target"], "airmy_verify_inbox::audit", "{err}");
    assert_eq!(audit[0]["actor"], "ops", "{err}");
    assert_eq!(audit[0]["action"], "resume", "{err}");
    assert_eq!(audit[0]["count"], 2, "{err}");
    let (code, out, _) = run(with(&["resume", "--type", "run.failed"])).await;
    assert_eq!(
        (code, out.trim()),
        (0, "event type run.failed was not paused")
    );
    let (code, out, err) = run(with(&["pause", "--all"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("paused every event type: "), "{out}");
    let (code, out, err) = run(with(&["resume", "--all"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("resumed every event type: "), "{out}");
    for wrong in [
        &["pause"][..],
        &["pause", "--all", "--type", "x"],
        &["resume"],
    ] {
        let (code, _, err) = run(with(wrong)).await;
        assert_eq!(code, 2, "{wrong:?}: {err}");
    }
    let (code, _, err) = tool(&["inbox", "--inbox", inbox, "--actor", "a\u{7}b", "stats"]).await;
    assert_eq!(code, 2, "{err}");

    // The recent actions, newest first, in the inbox for every replica's console to show.
    let (code, out, _) = run(with(&["--json", "actions", "--limit", "6"])).await;
    assert_eq!(code, 0);
    let actions: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| a["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "resume",
            "pause",
            "resume",
            "resume",
            "replay_dead",
            "pause"
        ]
    );
    assert!(actions.iter().all(|a| a["actor"] == "ops"), "{out}");
    assert_eq!(actions[4]["ids"][0], "evt_pause_other", "{out}");
    let (code, out, _) = run(with(&["actions"])).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("at (UTC) "), "a table: {out}");
    assert!(
        out.contains("replay_dead") && out.contains("(evt_pause_other)"),
        "{out}"
    );

    // Leave nothing due behind.
    for e in backend
        .take(64, Duration::from_secs(60))
        .await
        .expect("take")
    {
        assert!(backend.complete(&e.id, &e.token).await.expect("complete"));
    }
}
