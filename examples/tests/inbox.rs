//! Black-box tests of the receivers with `AIRMY_INBOX=sqlite:…` and `AIRMY_INBOX=redis://…`: a
//! process killed with `kill -9` under load (restarted on the same file; or beside a second
//! replica on the same Redis), Redis itself killed and restarted mid-load, a handler outage
//! longer than AIRMY's retries, configuration errors and `/healthz` (the `airmy-webhook inbox`
//! commands have their tests in the `airmy-webhook` crate).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airmy_verify::testing::{self, Delivery};
use airmy_verify::time::OffsetDateTime;
use test_support::postgres::Stop;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::task::JoinSet;

mod common;

use common::{ACTIX, AXUM, Receiver, client, delivery};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let dir = std::env::temp_dir().join(format!(
            "airmy-inbox-e2e-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
    fn db(&self) -> PathBuf {
        self.0.join("inbox.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A receiver with its inbox in `db`.
async fn start(bin: &str, db: &Path, envs: &[(&str, &str)]) -> Receiver {
    start_on(bin, &format!("sqlite:{}", db.display()), envs).await
}

/// A receiver with `AIRMY_INBOX=inbox`.
async fn start_on(bin: &str, inbox: &str, envs: &[(&str, &str)]) -> Receiver {
    let mut all = vec![("AIRMY_INBOX", inbox)];
    all.extend_from_slice(envs);
    Receiver::start(bin, &all).await
}

/// `handled <id> <type> attempt=<n>` lines, as (id, attempt).
fn handled(lines: &[String]) -> Vec<(String, u32)> {
    lines
        .iter()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(words.len(), 4, "unexpected stdout line {line:?}");
            assert_eq!(words[0], "handled", "{line:?}");
            let attempt = words[3]
                .strip_prefix("attempt=")
                .expect("attempt=")
                .parse()
                .expect("n");
            (words[1].to_owned(), attempt)
        })
        .collect()
}

async fn post(client: &reqwest::Client, url: &str, d: &Delivery) -> Option<(u16, String)> {
    let response = client
        .post(url)
        .header("x-airmy-signature", &d.signature)
        .body(d.body.clone())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kill -9` under load, then a restart on the same file: every delivery that got a 2xx is
/// handled; an id is handled twice only if its handler was running at the kill (at most the
/// number of workers), and then its second line is a takeover (a later attempt).
async fn crash_and_restart(bin: &str) {
    let dir = TempDir::new("crash");
    let envs = [
        ("AIRMY_HANDLER_DELAY_MS", "40"),
        ("AIRMY_INBOX_WORKERS", "4"),
        ("AIRMY_INBOX_LEASE_SECS", "2"),
    ];
    let first = start(bin, &dir.db(), &envs).await;
    let prefix = format!(
        "evt_crash_{}",
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let (load, acknowledged) = load_lanes(std::slice::from_ref(&first.url), &prefix);
    // Kill it while deliveries arrive and handlers run.
    wait_for("some deliveries handled", Duration::from_secs(30), || {
        first.lines().len() >= 20
    })
    .await;
    first.signal("-9");
    join_lanes(load).await;
    let acknowledged = acknowledged.lock().expect("set").clone();
    assert!(
        acknowledged.len() > 20,
        "{} acknowledged",
        acknowledged.len()
    );

    let second = start(bin, &dir.db(), &envs).await;
    handled_once_except_takeovers(bin, &first, &second, &acknowledged).await;
}

/// After `killed` was killed with `kill -9` and `survivor` went on: waits until every
/// acknowledged id was handled by one of them, then (after a lease, for takeovers to show)
/// checks that an id was handled twice only when its handler was running at the kill (at most
/// the 4 workers), and then the second time as a later attempt. Returns both processes'
/// `handled` lines as (id, attempt).
async fn handled_once_except_takeovers(
    label: &str,
    killed: &Receiver,
    survivor: &Receiver,
    acknowledged: &HashSet<String>,
) -> (Vec<(String, u32)>, Vec<(String, u32)>) {
    wait_for(
        "every acknowledged delivery handled",
        Duration::from_secs(60),
        || {
            let seen: HashSet<String> = handled(&killed.lines())
                .into_iter()
                .chain(handled(&survivor.lines()))
                .map(|(id, _)| id)
                .collect();
            acknowledged.iter().all(|id| seen.contains(id))
        },
    )
    .await;
    // Takeovers wait for the 2 s lease; give them time to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, after) = (handled(&killed.lines()), handled(&survivor.lines()));
    let mut count: HashMap<&str, Vec<u32>> = HashMap::new();
    for (id, attempt) in before.iter().chain(&after) {
        count.entry(id).or_default().push(*attempt);
    }
    let twice: Vec<_> = count.iter().filter(|(_, a)| a.len() > 1).collect();
    assert!(twice.len() <= 4, "{label}: handled twice: {twice:?}");
    for (id, attempts) in &twice {
        assert_eq!(attempts.len(), 2, "{label}: {id}: {attempts:?}");
        assert!(
            attempts[1] > attempts[0],
            "{label}: {id}: the second is a takeover: {attempts:?}"
        );
    }
    (before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_killed_mid_load_loses_no_acknowledged_delivery() {
    crash_and_restart(AXUM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_killed_mid_load_loses_no_acknowledged_delivery() {
    crash_and_restart(ACTIX).await;
}

/// The handler fails for 4 s, longer than AIRMY's whole retry schedule scaled down: every
/// delivery is acknowledged at its first attempt and handled once the handler recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_airmys_retries_loses_nothing() {
    for bin in [AXUM, ACTIX] {
        let dir = TempDir::new("outage");
        let r = start(bin, &dir.db(), &[("AIRMY_HANDLER_FAIL_FOR_SECS", "4")]).await;
        let client = client();
        let ids: Vec<String> = (0..10)
            .map(|i| {
                format!(
                    "evt_outage_{i}_{}",
                    OffsetDateTime::now_utc().unix_timestamp_nanos()
                )
            })
            .collect();
        for id in &ids {
            let (status, body) = post(&client, &r.url, &delivery(id))
                .await
                .expect("answered");
            assert_eq!(status, 200, "{bin}: {body}");
            assert_eq!(body, format!(r#"{{"id":"{id}","status":"accepted"}}"#));
            let (status, body) = post(&client, &r.url, &delivery(id))
                .await
                .expect("answered");
            assert_eq!(
                (status, body.contains("duplicate")),
                (200, true),
                "{bin}: {body}"
            );
        }
        wait_for(
            "every event handled after the outage",
            Duration::from_secs(40),
            || handled(&r.lines()).len() >= ids.len(),
        )
        .await;
        let lines = handled(&r.lines());
        for id in &ids {
            let attempts: Vec<u32> = lines
                .iter()
                .filter(|(i, _)| i == id)
                .map(|(_, a)| *a)
                .collect();
            assert_eq!(attempts.len(), 1, "{bin}: {id}: {attempts:?}");
            assert!(
                attempts[0] >= 2,
                "{bin}: {id} failed first, during the outage"
            );
        }
        let stats = stats(&format!("sqlite:{}", dir.db().display())).await;
        assert_eq!((stats.done, stats.dead), (10, 0), "{bin}: {stats:?}");
        assert_eq!(r.health().await, 200);
    }
}

/// The inbox's counts, read as `airmy-webhook inbox stats` reads them (an existing inbox only).
async fn stats(inbox: &str) -> airmy_verify_inbox::Stats {
    let url: airmy_verify_inbox::InboxUrl = inbox.parse().expect("an inbox URL");
    let inbox = url.open(true).await.expect("the inbox opens");
    inbox.admin().stats().await.expect("stats")
}

/// With the test secret: exit 2 and one line on stderr, returned.
async fn exits_2(bin: &str, envs: &[(&str, &str)]) -> String {
    let mut all = vec![("AIRMY_WEBHOOK_SECRET", testing::SECRET)];
    all.extend_from_slice(envs);
    common::exit_2_line(bin, &all).await
}

#[tokio::test]
async fn inbox_configuration_errors_exit_2_naming_the_problem() {
    let dir = TempDir::new("config");
    let garbage = dir.0.join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 8192]).expect("write");
    let garbage = format!("sqlite:{}", garbage.display());
    for bin in [AXUM, ACTIX] {
        let err = exits_2(bin, &[("AIRMY_INBOX", "sqlite:/nonexistent/dir/inbox.db")]).await;
        assert!(err.contains("/nonexistent/dir/inbox.db"), "{err}");
        let err = exits_2(bin, &[("AIRMY_INBOX", &garbage)]).await;
        assert!(err.contains("garbage.db"), "{err}");
        let err = exits_2(
            bin,
            &[
                ("AIRMY_INBOX", "sqlite:x.db"),
                ("AIRMY_IDEMPOTENCY", "memory"),
            ],
        )
        .await;
        assert!(err.contains("cannot both be set"), "{err}");
        let err = exits_2(bin, &[("AIRMY_INBOX", "inbox.db")]).await;
        assert!(err.contains("sqlite:PATH"), "{err}");
        let err = exits_2(bin, &[("AIRMY_INBOX_WORKERS", "0")]).await;
        assert!(err.contains("AIRMY_INBOX_WORKERS"), "{err}");
    }
}

/// A full disk (a real `SQLITE_FULL`, through `max_page_count`) answers 503
/// `{"error":"inbox_unavailable"}`, never a 2xx, through both adapters; what got a 2xx is
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_answers_503_and_never_2xx() {
    use actix_web::{App, HttpServer};
    use airmy_verify::{Secret, Verifier};
    use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions};
    use examples::apps::{Handling, actix_app, axum_app};

    let dir = TempDir::new("full");
    let verifier = Verifier::new(Secret::new(testing::SECRET).expect("secret"));
    let open = |name: &str| {
        Inbox::new(
            SqliteBackend::open(dir.0.join(name), SqliteOptions::default().max_pages(40))
                .expect("opens"),
        )
    };
    let (axum_inbox, actix_inbox) = (open("axum.db"), open("actix.db"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let axum_url = format!(
        "http://{}/hooks/airmy",
        listener.local_addr().expect("addr")
    );
    let app = axum_app(
        verifier.clone(),
        Handling::default(),
        None,
        Some(axum_inbox.clone()),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let routes = actix_app(
        verifier,
        Handling::default(),
        None,
        Some(actix_inbox.clone()),
    );
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind");
    let actix_url = format!("http://{}/hooks/airmy", server.addrs()[0]);
    let running = server.run();
    let stop = running.handle();
    let server = std::thread::spawn(move || actix_web::rt::System::new().block_on(running));

    let client = client();
    for (url, inbox) in [(&axum_url, &axum_inbox), (&actix_url, &actix_inbox)] {
        let (mut accepted, mut refused) = (0u64, 0u64);
        for i in 0..300 {
            let d = testing::sample_event("run.completed")
                .id(format!("evt_full_{i}"))
                .created_at(OffsetDateTime::now_utc())
                .padded_to(2000)
                .signed(testing::SECRET);
            match post(&client, url, &d).await.expect("answered") {
                (200, body) if body.contains("accepted") => accepted += 1,
                (503, body) => {
                    assert_eq!(body, r#"{"error":"inbox_unavailable"}"#);
                    refused += 1;
                }
                other => panic!("{url}: unexpected {other:?}"),
            }
        }
        assert!(
            accepted > 0 && refused > 0,
            "{url}: {accepted} accepted, {refused} refused"
        );
        let stats = inbox.admin().stats().await.expect("stats");
        assert_eq!(stats.pending, accepted, "{url}: every 2xx is stored");
    }
    stop.stop(false).await;
    let _ = server.join();
}

/// The same `Handlers` run synchronously behind one route, without an inbox: 200 when
/// handled, 500 `{"error":"handler_failed"}` when the handler fails (AIRMY retries), in both
/// adapters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_also_run_synchronously_behind_one_route() {
    use actix_web::{App, test as actix_test, web};
    use airmy_verify::event::RunCompleted;
    use airmy_verify::{Envelope, Secret, Verifier};
    use airmy_verify_actix::AirmyVerify;
    use airmy_verify_axum::AirmyVerifyLayer;
    use airmy_verify_axum::inbox::AirmyHandlers;
    use airmy_verify_inbox::{Context, HandlerError, Handlers};
    use tower::ServiceExt;

    let handlers = Handlers::new().on(|run: Envelope<RunCompleted>, ctx: Context| async move {
        assert_eq!(ctx.attempt, 1);
        if run.id.ends_with("_fails") {
            return Err(HandlerError::from("the database is down"));
        }
        Ok(())
    });
    let verifier = Verifier::new(Secret::new(testing::SECRET).expect("secret"));
    let ok = delivery("evt_sync_ok");
    let fails = delivery("evt_sync_fails");
    let other = testing::sample_event("alert.triggered")
        .id("evt_sync_other")
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET);

    let app = axum::Router::new()
        .route_service("/hooks/airmy", AirmyHandlers::new(handlers.clone()))
        .layer(AirmyVerifyLayer::new(verifier.clone()));
    for (d, status, body) in [
        (&ok, 200, r#"{"id":"evt_sync_ok","status":"handled"}"#),
        (&fails, 500, r#"{"error":"handler_failed"}"#),
        // No handler and no fallback for this type: answered, not retried forever.
        (&other, 200, r#"{"id":"evt_sync_other","status":"handled"}"#),
    ] {
        let request = axum::http::Request::post("/hooks/airmy")
            .header("x-airmy-signature", &d.signature)
            .body(axum::body::Body::from(d.body.clone()))
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("response");
        assert_eq!(response.status(), status);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        assert_eq!(bytes, body);
    }

    let actix = actix_test::init_service(App::new().app_data(web::Data::new(handlers)).service(
        web::scope("/hooks").wrap(AirmyVerify::new(verifier)).route(
            "/airmy",
            web::post().to(airmy_verify_actix::inbox::dispatch),
        ),
    ))
    .await;
    for (d, status, body) in [
        (&ok, 200, r#"{"id":"evt_sync_ok","status":"handled"}"#),
        (&fails, 500, r#"{"error":"handler_failed"}"#),
    ] {
        let request = actix_test::TestRequest::post()
            .uri("/hooks/airmy")
            .insert_header(("x-airmy-signature", d.signature.clone()))
            .set_payload(d.body.clone())
            .to_request();
        let response = actix_test::call_service(&actix, request).await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(actix_test::read_body(response).await, body);
    }
}

/// Without an inbox, a handler failing during the simulated outage answers 500
/// `{"error":"handler_failed"}` (AIRMY retries) and prints no `handled` line.
#[tokio::test]
async fn without_an_inbox_a_failing_handler_answers_500() {
    for bin in [AXUM, ACTIX] {
        let mut child = Command::new(bin)
            .env_clear()
            .env("AIRMY_WEBHOOK_SECRET", testing::SECRET)
            .env("AIRMY_LISTEN", "127.0.0.1:0")
            .env("AIRMY_HANDLER_FAIL_FOR_SECS", "60")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next_line().await.expect("readable").expect("a line");
        let addr = first
            .strip_prefix("listening on http://")
            .expect("address")
            .to_owned();
        let d = delivery("evt_sync_outage");
        let answer = post(&client(), &format!("http://{addr}/hooks/airmy"), &d).await;
        assert_eq!(
            answer,
            Some((500, r#"{"error":"handler_failed"}"#.to_owned())),
            "{bin}"
        );
        let next = tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await;
        assert!(next.is_err(), "{bin}: no handled line: {next:?}");
    }
}

/// The database file removed under a running receiver: accepts answer 503, never a 2xx that
/// SQLite would write to the unlinked file, and `/healthz` answers 503.
#[tokio::test]
async fn a_removed_database_file_answers_503_not_2xx() {
    for bin in [AXUM, ACTIX] {
        let dir = TempDir::new("removed");
        let r = start(bin, &dir.db(), &[("AIRMY_HANDLER_FAIL_FOR_SECS", "3600")]).await;
        let client = client();
        let before = post(&client, &r.url, &delivery("evt_removed_1"))
            .await
            .expect("answered");
        assert_eq!(before.0, 200, "{bin}: {before:?}");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", dir.db().display()));
        }
        let after = post(&client, &r.url, &delivery("evt_removed_2"))
            .await
            .expect("answered");
        assert_eq!(
            after,
            (503, r#"{"error":"inbox_unavailable"}"#.to_owned()),
            "{bin}"
        );
        assert_eq!(r.health().await, 503, "{bin}");
    }
}

// ---------------------------------------------------------------------------------------------
// The Redis inbox: several replicas on one queue.

/// Posts `d` to the `urls` in turn from `lane`'s, as a load balancer that fails over does:
/// the first answer, `None` when none answered.
async fn post_balanced(
    client: &reqwest::Client,
    urls: &[String],
    lane: usize,
    d: &Delivery,
) -> Option<(u16, String)> {
    for k in 0..urls.len() {
        if let Some(answer) = post(client, &urls[(lane + k) % urls.len()], d).await {
            return Some(answer);
        }
    }
    None
}

/// 16 load lanes of 25 signed deliveries each (ids `{prefix}_{lane}_{i}`), spread over `urls`
/// with failover; an id answered 200 goes in the set. A 200 must say `accepted`, or, with
/// several replicas, `duplicate` (a replica stored it, then died before answering, and the
/// retry found it in the shared inbox). Join every lane (`expect`ing each) before reading the
/// set.
fn load_lanes(urls: &[String], prefix: &str) -> (JoinSet<()>, Arc<Mutex<HashSet<String>>>) {
    let (load, acknowledged, _) = load_lanes_answers(urls, prefix);
    (load, acknowledged)
}

/// Every answer that was not a 200, as (status, body).
type OtherAnswers = Arc<Mutex<Vec<(u16, String)>>>;

/// [`load_lanes`], also keeping the answers that were not a 200.
fn load_lanes_answers(
    urls: &[String],
    prefix: &str,
) -> (JoinSet<()>, Arc<Mutex<HashSet<String>>>, OtherAnswers) {
    let others = OtherAnswers::default();
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let client = client();
    let shared = urls.len() > 1;
    let mut load = JoinSet::new();
    for lane in 0..16 {
        let (client, urls, prefix, acknowledged, others) = (
            client.clone(),
            urls.to_vec(),
            prefix.to_owned(),
            acknowledged.clone(),
            others.clone(),
        );
        load.spawn(async move {
            for i in 0..25 {
                let id = format!("{prefix}_{lane}_{i}");
                match post_balanced(&client, &urls, lane + i, &delivery(&id)).await {
                    Some((200, body)) => {
                        assert!(
                            body.contains("\"accepted\"")
                                || (shared && body.contains("\"duplicate\"")),
                            "{body}"
                        );
                        acknowledged.lock().expect("set").insert(id);
                    }
                    Some(other) => others.lock().expect("answers").push(other),
                    None => {}
                }
            }
        });
    }
    (load, acknowledged, others)
}

/// Waits for every lane, failing if one did.
async fn join_lanes(mut load: JoinSet<()>) {
    while let Some(lane) = load.join_next().await {
        lane.expect("a load lane");
    }
}

/// Two replicas (axum and actix) on one Redis under load, one killed with `kill -9` part-way:
/// every delivery that got a 2xx is handled by one of them (the survivor takes over what the
/// dead one had leased); an id is handled twice only when its handler was running at the kill,
/// and then the second is a later attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_lose_nothing_when_one_is_killed() {
    let redis = test_support::RedisServer::start_durable();
    let envs = [
        ("AIRMY_HANDLER_DELAY_MS", "40"),
        ("AIRMY_INBOX_WORKERS", "4"),
        ("AIRMY_INBOX_LEASE_SECS", "2"),
    ];
    let victim = start_on(AXUM, redis.url(), &envs).await;
    let survivor = start_on(ACTIX, redis.url(), &envs).await;
    let urls = [victim.url.clone(), survivor.url.clone()];
    let prefix = format!(
        "evt_rr_{}",
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let (load, acknowledged) = load_lanes(&urls, &prefix);
    wait_for("some deliveries handled", Duration::from_secs(30), || {
        victim.lines().len() + survivor.lines().len() >= 30 && !victim.lines().is_empty()
    })
    .await;
    victim.signal("-9");
    join_lanes(load).await;
    let acknowledged = acknowledged.lock().expect("set").clone();
    assert_eq!(
        acknowledged.len(),
        400,
        "every delivery reached a live replica"
    );
    let (dead_lines, live_lines) =
        handled_once_except_takeovers("replicas", &victim, &survivor, &acknowledged).await;
    assert!(
        !live_lines.is_empty() && !dead_lines.is_empty(),
        "both handled some"
    );
    let stats = stats(redis.url()).await;
    assert_eq!(
        (stats.done, stats.pending, stats.processing),
        (400, 0, 0),
        "{stats:?}"
    );
}

/// Redis killed (`SIGKILL`) mid-load and restarted with AOF `appendfsync always`: while it is
/// down, deliveries get 503 `{"error":"inbox_unavailable"}` and `/healthz` says so, never a 2xx;
/// every delivery that got a 2xx, before or after, is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_loses_nothing_acknowledged() {
    for bin in [AXUM, ACTIX] {
        let mut redis = test_support::RedisServer::start_durable();
        let r = start_on(bin, redis.url(), &[("AIRMY_INBOX_WORKERS", "4")]).await;
        let prefix = format!(
            "evt_rk_{}",
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let acknowledged = Arc::new(Mutex::new(HashSet::new()));
        let refused = Arc::new(Mutex::new(0_usize));
        let client = client();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = JoinSet::new();
        for lane in 0..8 {
            let (client, url, prefix, acknowledged, refused, stop) = (
                client.clone(),
                r.url.clone(),
                prefix.clone(),
                acknowledged.clone(),
                refused.clone(),
                stop.clone(),
            );
            load.spawn(async move {
                for i in 0..400 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let id = format!("{prefix}_{lane}_{i}");
                    match post(&client, &url, &delivery(&id)).await {
                        Some((200, body)) => {
                            assert!(body.contains("\"accepted\""), "{body}");
                            acknowledged.lock().expect("set").insert(id);
                        }
                        Some((503, body)) => {
                            assert_eq!(body, r#"{"error":"inbox_unavailable"}"#);
                            *refused.lock().expect("n") += 1;
                        }
                        other => panic!("unexpected answer {other:?}"),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        wait_for("some acknowledged", Duration::from_secs(30), || {
            acknowledged.lock().expect("set").len() >= 100
        })
        .await;
        redis.stop();
        wait_for("a 503 while Redis is down", Duration::from_secs(20), || {
            *refused.lock().expect("n") > 0
        })
        .await;
        assert_eq!(r.health().await, 503, "{bin}");
        // Down for a while: the workers' takes and the blocked reads fail too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.restart();
        let before = acknowledged.lock().expect("set").len();
        wait_for("acknowledged again", Duration::from_secs(30), || {
            acknowledged.lock().expect("set").len() >= before + 100
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        while let Some(lane) = load.join_next().await {
            lane.expect("a load lane");
        }
        let acknowledged = acknowledged.lock().expect("set").clone();
        wait_for(
            "every acknowledged delivery handled",
            Duration::from_secs(60),
            || {
                let seen: HashSet<String> =
                    handled(&r.lines()).into_iter().map(|(id, _)| id).collect();
                acknowledged.iter().all(|id| seen.contains(id))
            },
        )
        .await;
        assert_eq!(r.health().await, 200, "{bin}");
    }
}

#[tokio::test]
async fn an_unreachable_redis_inbox_exits_2_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    for bin in [AXUM, ACTIX] {
        let err = exits_2(bin, &[("AIRMY_INBOX", &url)]).await;
        assert!(err.contains("AIRMY_INBOX"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = exits_2(bin, &[("AIRMY_INBOX", "redis:/x")]).await;
        assert!(
            err.contains("a redis://") && err.contains("postgres://"),
            "{err}"
        );
    }
}

/// Both receivers on one PostgreSQL inbox (`AIRMY_INBOX=postgres://…`): deliveries posted to
/// either are acknowledged, handled once each by one of them, and counted done; `/healthz`
/// answers 200. A database that cannot be reached at start is exit 2, its password unshown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_share_one_postgres_inbox() {
    let server = test_support::PostgresServer::start_private();
    let axum = start_on(AXUM, server.url(), &[]).await;
    let actix = start_on(ACTIX, server.url(), &[]).await;
    let client = client();
    let mut ids = Vec::new();
    for i in 0..60 {
        let id = format!("evt_pg_rx_{i}");
        let url = if i % 2 == 0 { &axum.url } else { &actix.url };
        let answer = post(&client, url, &delivery(&id)).await;
        assert!(
            matches!(&answer, Some((200, body)) if body.contains("\"accepted\"")),
            "{id}: {answer:?}"
        );
        ids.push(id);
    }
    wait_for("all handled", Duration::from_secs(30), || {
        handled(&axum.lines()).len() + handled(&actix.lines()).len() >= ids.len()
    })
    .await;
    let mut seen: Vec<String> = handled(&axum.lines())
        .into_iter()
        .chain(handled(&actix.lines()))
        .map(|(id, _)| id)
        .collect();
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected, "each handled once, by one receiver");
    assert_eq!(stats(server.url()).await.done, 60);
    assert_eq!((axum.health().await, actix.health().await), (200, 200));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/app");
    for bin in [AXUM, ACTIX] {
        let err = exits_2(bin, &[("AIRMY_INBOX", &url)]).await;
        assert!(err.contains("AIRMY_INBOX"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// `AIRMY_INBOX=postgres://…?schema=S`: the receivers keep their inbox in the schema S (the
/// default schema stays empty); a parameter that neither the inbox nor sqlx reads, or a
/// database that does not exist, is exit 2 with one line naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_inbox_in_the_schema_asked_for() {
    let server = test_support::PostgresServer::start_private();
    let in_schema = format!("{}?schema=rx_billing", server.url());
    for (n, bin) in [AXUM, ACTIX].into_iter().enumerate() {
        let r = start_on(bin, &in_schema, &[]).await;
        let id = format!("evt_pg_schema_{n}");
        let answer = post(&client(), &r.url, &delivery(&id)).await;
        assert!(matches!(&answer, Some((200, _))), "{id}: {answer:?}");
        wait_for("handled", Duration::from_secs(30), || {
            !handled(&r.lines()).is_empty()
        })
        .await;
    }
    assert_eq!(stats(&in_schema).await.done, 2);
    assert_eq!(stats(server.url()).await.done, 0);
    let unknown = format!("{}?schem=rx_billing", server.url());
    let missing = server.url().replace("/postgres", "/no_such_db");
    for bin in [AXUM, ACTIX] {
        let err = exits_2(bin, &[("AIRMY_INBOX", &unknown)]).await;
        assert!(err.contains("unknown parameter \"schem\""), "{err}");
        let err = exits_2(bin, &[("AIRMY_INBOX", &missing)]).await;
        assert!(
            err.contains(r#"database "no_such_db" does not exist"#),
            "{err}"
        );
        assert!(!err.contains("at line"), "{err}");
    }
}

/// Both receivers through PgBouncer in transaction pooling mode (`AIRMY_INBOX=…?pooler=true`
/// pointing at PgBouncer): the axum one listening for wake-ups on the server's direct URL
/// (`AIRMY_INBOX_LISTEN_URL`), the actix one polling. Deliveries posted to either are
/// acknowledged and handled once each, with exactly one effect row; `/healthz` answers 200.
/// An `AIRMY_INBOX_LISTEN_URL` without a PostgreSQL inbox is exit 2. (Without `?pooler=true`
/// the prepared statements break only when PgBouncer hands a client a server connection
/// another client prepared on: not every start shows it, so no test asserts it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_receivers_work_through_pgbouncer_in_transaction_mode() {
    let server = test_support::PostgresServer::start_private();
    let bouncer = test_support::PgBouncer::start(&server);
    let inbox = format!("{}?pooler=true", bouncer.url());
    let axum = start_on(AXUM, &inbox, &[("AIRMY_INBOX_LISTEN_URL", server.url())]).await;
    let actix = start_on(ACTIX, &inbox, &[]).await;
    let client = client();
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = format!("evt_pgb_rx_{i}");
        let url = if i % 2 == 0 { &axum.url } else { &actix.url };
        let answer = post(&client, url, &delivery(&id)).await;
        assert!(
            matches!(&answer, Some((200, body)) if body.contains("\"accepted\"")),
            "{id}: {answer:?}"
        );
        ids.push(id);
    }
    wait_for("all handled", Duration::from_secs(30), || {
        handled(&axum.lines()).len() + handled(&actix.lines()).len() >= ids.len()
    })
    .await;
    let mut seen: Vec<String> = handled(&axum.lines())
        .into_iter()
        .chain(handled(&actix.lines()))
        .map(|(id, _)| id)
        .collect();
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected, "each handled once, by one receiver");
    let acknowledged: HashSet<String> = ids.into_iter().collect();
    exactly_one_effect_each("through PgBouncer", server.url(), &acknowledged).await;
    assert_eq!(stats(&inbox).await.done, 40);
    assert_eq!((axum.health().await, actix.health().await), (200, 200));

    for bin in [AXUM, ACTIX] {
        let err = exits_2(
            bin,
            &[
                ("AIRMY_INBOX", "sqlite:/tmp/x.db"),
                ("AIRMY_INBOX_LISTEN_URL", server.url()),
            ],
        )
        .await;
        assert!(err.contains("AIRMY_INBOX_LISTEN_URL"), "{err}");
    }
}

/// Rows of `airmy_receiver_effects` per event id.
async fn effect_rows(url: &str) -> HashMap<String, usize> {
    let pool = sqlx::PgPool::connect(url).await.expect("pool");
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, count(*) FROM airmy_receiver_effects GROUP BY event_id")
            .fetch_all(&pool)
            .await
            .expect("effects");
    rows.into_iter()
        .map(|(id, n)| (id, usize::try_from(n).unwrap_or(0)))
        .collect()
}

/// Waits until every acknowledged id has an effect row, then (after a lease, for takeovers to
/// show) checks that each has **exactly one**: the handlers were inside their transactions
/// (`AIRMY_HANDLER_DELAY_MS`) at the kill, so at-least-once handling would show here as two.
async fn exactly_one_effect_each(label: &str, url: &str, acknowledged: &HashSet<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = effect_rows(url).await;
        if acknowledged.iter().all(|id| rows.contains_key(id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{label}: {} of {} acknowledged ids have an effect",
            acknowledged
                .iter()
                .filter(|id| rows.contains_key(*id))
                .count(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = effect_rows(url).await;
    let doubled: Vec<_> = rows.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "{label}: effects not exactly once: {doubled:?}"
    );
    for id in acknowledged {
        assert_eq!(rows.get(id), Some(&1), "{label}: {id}");
    }
}

/// `kill -9` of `bin` on the PostgreSQL inbox `inbox` under load, once it handled 12
/// deliveries (its handlers inside their transactions, `AIRMY_HANDLER_DELAY_MS`), then a second
/// process on the same inbox: every acknowledged id has exactly one row in
/// `airmy_receiver_effects`, counted on the server at `server_url`.
async fn killed_mid_transaction_and_restarted(
    bin: &str,
    inbox: &str,
    envs: &[(&str, &str)],
    server_url: &str,
) {
    let first = start_on(bin, inbox, envs).await;
    let prefix = format!(
        "evt_pgk_{}",
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let (load, acknowledged) = load_lanes(std::slice::from_ref(&first.url), &prefix);
    wait_for("some deliveries handled", Duration::from_secs(30), || {
        first.lines().len() >= 12
    })
    .await;
    first.signal("-9");
    join_lanes(load).await;
    let acknowledged = acknowledged.lock().expect("set").clone();
    assert!(
        acknowledged.len() > 12,
        "{} acknowledged",
        acknowledged.len()
    );
    let second = start_on(bin, inbox, envs).await;
    exactly_one_effect_each(bin, server_url, &acknowledged).await;
    assert_eq!(second.health().await, 200);
}

/// The receivers' settings for the PostgreSQL tests that stop them or the server mid-transaction:
/// handlers 150 ms inside their transactions, four at once, leases of 2 s.
const PG_TX_ENVS: [(&str, &str); 3] = [
    ("AIRMY_HANDLER_DELAY_MS", "150"),
    ("AIRMY_INBOX_WORKERS", "4"),
    ("AIRMY_INBOX_LEASE_SECS", "2"),
];

/// `kill -9` of a receiver on a PostgreSQL inbox under load, while its handlers are inside
/// their transactions, then a restart on the same database: every acknowledged id has exactly
/// one row in `airmy_receiver_effects` (rows counted, not stdout lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_receivers_killed_mid_transaction_make_each_effect_exactly_once() {
    let server = test_support::PostgresServer::start_private();
    for bin in [AXUM, ACTIX] {
        killed_mid_transaction_and_restarted(bin, server.url(), &PG_TX_ENVS, server.url()).await;
    }
}

/// Two receivers (axum and actix) on one PostgreSQL inbox under load, one killed with
/// `kill -9` mid-transaction: the survivor takes over what the dead one held, and every
/// acknowledged id has exactly one effect row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_make_each_effect_once_when_one_is_killed() {
    let server = test_support::PostgresServer::start_private();
    let victim = start_on(AXUM, server.url(), &PG_TX_ENVS).await;
    let survivor = start_on(ACTIX, server.url(), &PG_TX_ENVS).await;
    let urls = [victim.url.clone(), survivor.url.clone()];
    let prefix = format!(
        "evt_pgr_{}",
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let (load, acknowledged) = load_lanes(&urls, &prefix);
    wait_for("some deliveries handled", Duration::from_secs(30), || {
        victim.lines().len() >= 6 && !survivor.lines().is_empty()
    })
    .await;
    victim.signal("-9");
    join_lanes(load).await;
    let acknowledged = acknowledged.lock().expect("set").clone();
    exactly_one_effect_each("replicas", server.url(), &acknowledged).await;
}

/// PostgreSQL stopped at once (`pg_ctl stop -m immediate`) under load and started again: while
/// it is down the receivers answer 503 `{"error":"inbox_unavailable"}` and `/healthz` 503,
/// never a 2xx; afterwards every acknowledged id has exactly one effect row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_load_answers_503_and_keeps_effects_exactly_once() {
    let server = test_support::PostgresServer::start_private();
    let envs = [
        ("AIRMY_HANDLER_DELAY_MS", "20"),
        ("AIRMY_INBOX_WORKERS", "4"),
    ];
    let r = start_on(AXUM, server.url(), &envs).await;
    let client = client();
    let mut acknowledged = HashSet::new();
    let mut refused = 0;
    // While it is down each delivery waits for a connection (3 s, PgOptions' default
    // acquire timeout, well within AIRMY's 10 s): ten of them.
    for i in 0..70 {
        if i == 30 {
            server.stop_immediately();
            assert_eq!(r.health().await, 503, "healthz while down");
        }
        if i == 40 {
            server.start_again();
        }
        let id = format!("evt_pgs_{i}");
        match post(&client, &r.url, &delivery(&id)).await {
            Some((200, body)) => {
                assert!(body.contains("\"accepted\""), "{body}");
                acknowledged.insert(id);
            }
            Some((503, body)) => {
                assert_eq!(body, r#"{"error":"inbox_unavailable"}"#);
                refused += 1;
            }
            other => panic!("{id}: unexpected answer {other:?}"),
        }
    }
    assert!(refused >= 10, "refused while down: {refused}");
    assert!(
        acknowledged.len() >= 50,
        "{} acknowledged",
        acknowledged.len()
    );
    exactly_one_effect_each("outage", server.url(), &acknowledged).await;
    assert_eq!(r.health().await, 200);
}

/// PostgreSQL restarted under load (`pg_ctl restart -m fast`, then `-m immediate`), both
/// receivers on it, their handlers inside their transactions (`AIRMY_HANDLER_DELAY_MS`): every
/// answer is a 200 `accepted` or a 503 `{"error":"inbox_unavailable"}`, never another; right
/// after each restart a burst of 32 deliveries is acknowledged in full; the receivers, never
/// restarted, handle everything (some on a later attempt: the restart rolled back their
/// transactions), and every acknowledged id has exactly one effect row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_keeps_effects_exactly_once() {
    let server = Arc::new(test_support::PostgresServer::start_private());
    let axum = start_on(AXUM, server.url(), &PG_TX_ENVS).await;
    let actix = start_on(ACTIX, server.url(), &PG_TX_ENVS).await;
    let urls = [axum.url.clone(), actix.url.clone()];
    let client = client();
    let mut acknowledged = HashSet::new();
    let mut refused = 0;
    for mode in [Stop::Fast, Stop::Immediate] {
        let prefix = format!(
            "evt_pgre_{mode:?}_{}",
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let handled_before = axum.lines().len() + actix.lines().len();
        let (load, acked, others) = load_lanes_answers(&urls, &prefix);
        wait_for("handlers at work", Duration::from_secs(30), || {
            axum.lines().len() + actix.lines().len() >= handled_before + 8
        })
        .await;
        let restarting = Arc::clone(&server);
        tokio::task::spawn_blocking(move || restarting.restart(mode))
            .await
            .expect("restart");
        let burst = (0..32).map(|i| {
            let (client, url, id) = (
                client.clone(),
                urls[i % 2].clone(),
                format!("{prefix}_burst_{i}"),
            );
            async move { (post(&client, &url, &delivery(&id)).await, id) }
        });
        for (answer, id) in futures_util::future::join_all(burst).await {
            assert!(
                matches!(&answer, Some((200, body)) if body.contains("\"accepted\"")),
                "{mode:?}: {id} right after the restart: {answer:?}"
            );
            acknowledged.insert(id);
        }
        join_lanes(load).await;
        acknowledged.extend(acked.lock().expect("set").iter().cloned());
        for (status, body) in others.lock().expect("answers").iter() {
            assert_eq!(
                (*status, body.as_str()),
                (503, r#"{"error":"inbox_unavailable"}"#),
                "{mode:?}"
            );
            refused += 1;
        }
    }
    exactly_one_effect_each("restarts", server.url(), &acknowledged).await;
    let retried = handled(&axum.lines())
        .into_iter()
        .chain(handled(&actix.lines()))
        .filter(|(_, attempt)| *attempt > 1)
        .count();
    eprintln!(
        "{} acknowledged, {refused} answered 503, {retried} handled on a later attempt",
        acknowledged.len()
    );
    assert!(retried > 0, "no transaction was cut by the restarts");
    assert_eq!((axum.health().await, actix.health().await), (200, 200));
}

/// Both receivers through PgBouncer in transaction pooling mode (`AIRMY_INBOX=…?pooler=true`;
/// the axum one listening on the server's direct URL, the actix one polling), `kill -9` under
/// load while their handlers are inside their transactions, then restarted: every acknowledged
/// id has exactly one row in `airmy_receiver_effects` (rows counted on the server itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_through_pgbouncer_killed_mid_transaction_make_each_effect_exactly_once() {
    let server = test_support::PostgresServer::start_private();
    let bouncer = test_support::PgBouncer::start(&server);
    let inbox = format!("{}?pooler=true", bouncer.url());
    let mut listening = PG_TX_ENVS.to_vec();
    listening.push(("AIRMY_INBOX_LISTEN_URL", server.url()));
    killed_mid_transaction_and_restarted(AXUM, &inbox, &listening, server.url()).await;
    killed_mid_transaction_and_restarted(ACTIX, &inbox, &PG_TX_ENVS, server.url()).await;
}

// Pause and resume, through `airmy-webhook inbox`.

/// `airmy-webhook inbox --inbox INBOX --actor e2e ARGS…`: its exit code and standard output.
async fn inbox_tool(inbox: &str, args: &[&str]) -> (i32, String) {
    let tool = test_support::workspace_binary("airmy-webhook", "airmy-webhook");
    let output = Command::new(tool)
        .env_clear()
        .args(["inbox", "--inbox", inbox, "--actor", "e2e"])
        .args(args)
        .output()
        .await
        .expect("airmy-webhook runs");
    let err = String::from_utf8_lossy(&output.stderr);
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let code = output.status.code().unwrap_or(-1);
    assert_eq!(code, 0, "airmy-webhook inbox {args:?}: {out}{err}");
    (code, out)
}

/// The ids of `lines`' `handled` lines of `event_type`, with their attempts.
fn handled_of(lines: &[String], event_type: &str) -> Vec<(String, u32)> {
    lines
        .iter()
        .filter(|line| line.split(' ').nth(2) == Some(event_type))
        .map(|line| handled(std::slice::from_ref(line))[0].clone())
        .collect()
}

/// A type paused with `airmy-webhook inbox pause` before its deliveries arrive: they are
/// accepted (200) and wait, paused, while another type is handled; the receiver killed and
/// started again, they still wait (no `handled` line, `stats` and `list` show them paused);
/// `airmy-webhook inbox resume` and each is handled once, as its first attempt.
async fn a_pause_holds_across_a_restart_and_a_resume_drains(bin: &str, inbox: &str) {
    let label = format!("{bin} on {inbox}");
    let first = start_on(bin, inbox, &[]).await;
    let (_, out) = inbox_tool(inbox, &["pause", "--type", "run.completed"]).await;
    assert!(
        out.starts_with("paused event type run.completed"),
        "{label}: {out}"
    );
    let client = client();
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let held: Vec<String> = (0..5).map(|i| format!("evt_held_{i}_{nanos}")).collect();
    for id in &held {
        let (status, body) = post(&client, &first.url, &delivery(id))
            .await
            .expect("answered");
        assert_eq!(
            (status, body.contains("\"accepted\"")),
            (200, true),
            "{label}: {body}"
        );
    }
    let other_id = format!("evt_other_{nanos}");
    let other = testing::sample_event("alert.triggered")
        .id(&other_id)
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET);
    let (status, _) = post(&client, &first.url, &other).await.expect("answered");
    assert_eq!(status, 200);
    wait_for("the other type handled", Duration::from_secs(20), || {
        !handled_of(&first.lines(), "alert.triggered").is_empty()
    })
    .await;
    // A worker looks at least once a second: two seconds more, and still nothing paused ran.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        handled_of(&first.lines(), "run.completed").is_empty(),
        "{label}: {:?}",
        first.lines()
    );
    let (_, out) = inbox_tool(inbox, &["--json", "stats"]).await;
    let stats: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(stats["paused"], 5, "{label}: {stats}");
    assert_eq!(
        stats["pauses"][0]["event_type"], "run.completed",
        "{label}: {stats}"
    );

    first.signal("-9");
    drop(first);
    let second = start_on(bin, inbox, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        second.lines().is_empty(),
        "{label}: nothing handled: {:?}",
        second.lines()
    );
    let (_, out) = inbox_tool(inbox, &["--json", "list", "--state", "paused"]).await;
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let mut paused: Vec<(String, u64)> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().expect("id").to_owned(),
                e["attempts"].as_u64().expect("n"),
            )
        })
        .collect();
    paused.sort();
    assert_eq!(
        paused,
        held.iter().map(|id| (id.clone(), 0)).collect::<Vec<_>>(),
        "{label}"
    );

    let (_, out) = inbox_tool(inbox, &["resume", "--type", "run.completed"]).await;
    assert_eq!(
        out.trim(),
        "resumed event type run.completed: 5 entries released",
        "{label}"
    );
    wait_for("the held entries handled", Duration::from_secs(30), || {
        handled_of(&second.lines(), "run.completed").len() >= held.len()
    })
    .await;
    let mut drained = handled_of(&second.lines(), "run.completed");
    drained.sort();
    assert_eq!(
        drained,
        held.iter().map(|id| (id.clone(), 1)).collect::<Vec<_>>(),
        "{label}"
    );
    let (_, out) = inbox_tool(inbox, &["--json", "actions", "--limit", "2"]).await;
    let actions: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (
            actions[0]["kind"].as_str(),
            actions[0]["count"].as_u64(),
            actions[1]["kind"].as_str()
        ),
        (Some("resume"), Some(5), Some("pause")),
        "{label}: {actions}"
    );
    assert_eq!(actions[0]["actor"], "e2e", "{label}: {actions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_entries_across_a_restart_on_sqlite_and_a_resume_drains_them() {
    let dir = TempDir::new("pause");
    let inbox = format!("sqlite:{}", dir.db().display());
    a_pause_holds_across_a_restart_and_a_resume_drains(AXUM, &inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_entries_across_a_restart_on_redis_and_a_resume_drains_them() {
    let redis = test_support::RedisServer::start_private();
    a_pause_holds_across_a_restart_and_a_resume_drains(ACTIX, redis.url()).await;
}
