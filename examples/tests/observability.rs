//! The receivers seen from outside: exact metric counts scraped from `GET /metrics` after a
//! known mix of deliveries (a process per adapter: the `metrics` recorder is process-wide), the
//! secret file rotated under load, and the new settings' configuration errors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airmy_verify::testing::{self, Delivery};
use airmy_verify::time::OffsetDateTime;
use common::{ACTIX, AXUM, Receiver, client};
use tokio::process::Command;

async fn post(url: &str, delivery: &Delivery) -> u16 {
    client()
        .post(url)
        .header("x-airmy-signature", &delivery.signature)
        .body(delivery.body.clone())
        .send()
        .await
        .expect("answered")
        .status()
        .as_u16()
}

fn event(event_type: &str, id: &str, secret: &str) -> Delivery {
    testing::sample_event(event_type)
        .id(id)
        .created_at(OffsetDateTime::now_utc())
        .signed(secret)
}

/// The samples of a Prometheus text exposition: `name{k="v",…}` with the labels sorted, to
/// the value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        out.insert(key, value.parse().expect("a number"));
    }
    out
}

/// `bin` with `AIRMY_METRICS_LISTEN` and `env`, and its `/metrics` URL.
async fn with_metrics(bin: &str, env: (&str, &str)) -> (Receiver, String) {
    let r = Receiver::start(bin, &[("AIRMY_METRICS_LISTEN", "127.0.0.1:0"), env]).await;
    let metrics = r.metrics_url().await;
    (r, metrics)
}

/// The samples `GET metrics` answers, and its text.
async fn scrape(metrics: &str) -> (BTreeMap<String, f64>, String) {
    let text = client()
        .get(metrics)
        .send()
        .await
        .expect("scraped")
        .text()
        .await
        .expect("text");
    (samples(&text), text)
}

/// The `airmy_webhook_deliveries_total` series with these labels.
fn deliveries_series(outcome: &str, code: &str, event_type: &str) -> String {
    format!(
        "airmy_webhook_deliveries_total{{code=\"{code}\",event_type=\"{event_type}\",outcome=\"{outcome}\"}}"
    )
}

/// The sum of every `airmy_webhook_deliveries_total` series.
fn deliveries_total(got: &BTreeMap<String, f64>) -> f64 {
    got.iter()
        .filter(|(k, _)| k.starts_with("airmy_webhook_deliveries_total{"))
        .map(|(_, v)| v)
        .sum()
}

/// The counts a known mix of deliveries must leave, through either receiver.
async fn metrics_count_a_known_mix_exactly(bin: &str) {
    let (r, metrics) = with_metrics(bin, ("AIRMY_IDEMPOTENCY", "memory")).await;
    let secret = testing::SECRET;
    let mut accepted = Vec::new();
    for n in 0..3 {
        accepted.push(event("run.completed", &format!("evt_run_{n}"), secret));
    }
    accepted.push(event("alert.triggered", "evt_alert", secret));
    accepted.push(event("billing.paid", "evt_future_type", secret));
    for delivery in &accepted {
        assert_eq!(post(&r.url, delivery).await, 200, "{bin}");
    }
    // AIRMY's retries of two processed events.
    for delivery in &accepted[..2] {
        assert_eq!(post(&r.url, delivery).await, 200, "{bin}");
    }
    let forged = event("run.completed", "evt_forged", "whsec_wrong");
    assert_eq!(post(&r.url, &forged).await, 401);
    assert_eq!(post(&r.url, &forged).await, 401);
    let stale = testing::sample_event("test")
        .id("evt_stale")
        .created_at(OffsetDateTime::now_utc() - Duration::from_secs(3600))
        .signed(secret);
    assert_eq!(post(&r.url, &stale).await, 401);
    let unsigned = client()
        .post(&r.url)
        .body(accepted[0].body.clone())
        .send()
        .await
        .expect("answered");
    assert_eq!(unsigned.status().as_u16(), 401);

    let (got, text) = scrape(&metrics).await;
    let delivery = deliveries_series;
    let want: Vec<(String, f64)> = vec![
        (delivery("accepted", "none", "run.completed"), 3.0),
        (delivery("accepted", "none", "alert.triggered"), 1.0),
        (delivery("accepted", "none", "unknown"), 1.0),
        (delivery("duplicate", "none", "run.completed"), 2.0),
        (delivery("rejected", "invalid_signature", "none"), 2.0),
        (delivery("rejected", "stale_event", "none"), 1.0),
        (delivery("rejected", "missing_signature", "none"), 1.0),
        (
            "airmy_webhook_idempotency_claims_total{result=\"claimed\"}".to_owned(),
            5.0,
        ),
        (
            "airmy_webhook_idempotency_claims_total{result=\"duplicate\"}".to_owned(),
            2.0,
        ),
        // Every complete body checked: 7 verified, 2 forged, 1 stale (the unsigned one is
        // refused before its body is read); a lag for each whose signature matched.
        ("airmy_webhook_body_bytes_count".to_owned(), 10.0),
        ("airmy_webhook_verification_seconds_count".to_owned(), 10.0),
        ("airmy_webhook_delivery_lag_seconds_count".to_owned(), 8.0),
    ];
    for (series, value) in &want {
        assert_eq!(got.get(series), Some(value), "{bin}: {series} in\n{text}");
    }
    assert_eq!(
        deliveries_total(&got),
        11.0,
        "{bin}: every delivery counted once\n{text}"
    );
    assert!(!text.contains(secret) && !text.contains("evt_"), "{text}");
}

#[tokio::test]
async fn axum_receiver_metrics_count_a_known_mix_exactly() {
    metrics_count_a_known_mix_exactly(AXUM).await;
}

#[tokio::test]
async fn actix_receiver_metrics_count_a_known_mix_exactly() {
    metrics_count_a_known_mix_exactly(ACTIX).await;
}

/// A client that hangs up while its handler runs, and one that sends half a body then leaves,
/// are counted once each, like every other delivery: `accepted` (the handler had it) and
/// `rejected`/`body_unreadable`. (hyper drops the request's future when its client leaves; actix
/// runs the handler to its end.)
async fn deliveries_whose_client_hangs_up_are_counted(bin: &str) {
    use tokio::io::AsyncWriteExt;
    let (r, metrics) = with_metrics(bin, ("AIRMY_HANDLER_DELAY_MS", "1000")).await;
    let addr = r.base.strip_prefix("http://").expect("http");
    let d = event("run.completed", "evt_gone", testing::SECRET);
    let head = format!(
        "POST /hooks/airmy HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-airmy-signature: {}\r\ncontent-length: {}\r\n\r\n",
        d.signature,
        d.body.len()
    );
    // The whole delivery, then gone while the handler sleeps.
    let mut whole = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    whole.write_all(head.as_bytes()).await.expect("sent");
    whole.write_all(&d.body).await.expect("sent");
    // Half of the body, then gone.
    let mut half = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    half.write_all(head.as_bytes()).await.expect("sent");
    half.write_all(&d.body[..d.body.len() / 2])
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop((whole, half));

    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries_total(&scrape(&metrics).await.0) < 2.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the handler's end: nothing counted twice.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (got, text) = scrape(&metrics).await;
    let accepted = deliveries_series("accepted", "none", "run.completed");
    assert_eq!(got.get(&accepted), Some(&1.0), "{bin}: {text}");
    let cut = deliveries_series("rejected", "body_unreadable", "none");
    assert_eq!(got.get(&cut), Some(&1.0), "{bin}: {text}");
    assert_eq!(
        deliveries_total(&got),
        2.0,
        "{bin}: each counted once\n{text}"
    );
}

#[tokio::test]
async fn axum_receiver_counts_deliveries_whose_client_hangs_up() {
    deliveries_whose_client_hangs_up_are_counted(AXUM).await;
}

#[tokio::test]
async fn actix_receiver_counts_deliveries_whose_client_hangs_up() {
    deliveries_whose_client_hangs_up_are_counted(ACTIX).await;
}

/// Replaces the secret file the way Kubernetes does: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("written");
    std::fs::rename(&next, path).expect("renamed");
}

/// Sends deliveries signed with `secret` until the first answer is `want`, for at most
/// `within`; how long it took.
async fn until_answered(url: &str, secret: &str, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < within {
        n += 1;
        if post(url, &event("test", &format!("evt_probe_{n}"), secret)).await == want {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no {want} for {secret} within {within:?}");
}

async fn secret_file_rotates_under_load(bin: &'static str) {
    let dir = std::env::temp_dir().join(format!(
        "airmy-rotation-{}-{}",
        std::process::id(),
        bin.rsplit('/').next().unwrap_or("bin")
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("secret");
    replace(&file, "# the secret AIRMY signs with\nwhsec_old\n");
    let file_setting = file.to_str().expect("utf-8 path").to_owned();
    let r = Receiver::start(bin, &[("AIRMY_WEBHOOK_SECRET_FILE", &file_setting)]).await;
    assert_eq!(
        post(&r.url, &event("test", "evt_0", "whsec_old")).await,
        200
    );
    assert_eq!(
        post(&r.url, &event("test", "evt_1", "whsec_new")).await,
        401
    );

    // Load signed with the old secret, which stays listed throughout the first swap.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for task in 0..4 {
        let (url, stop, sent) = (r.url.clone(), stop.clone(), sent.clone());
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            // Bounded: at most 5,000 requests per task, or until stopped.
            for n in 0..5_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let status = post(
                    &url,
                    &event("test", &format!("evt_{task}_{n}"), "whsec_old"),
                )
                .await;
                sent.fetch_add(1, Ordering::SeqCst);
                if status != 200 {
                    failures.push(status);
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    replace(
        &file,
        "whsec_new\r\n\n# kept until every sender has the new one\nwhsec_old\n",
    );
    let seen = until_answered(&r.url, "whsec_new", 200, Duration::from_secs(3)).await;
    assert!(
        seen < Duration::from_secs(2),
        "{bin}: the new secret after {seen:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        let failures = task.await.expect("load task");
        assert!(
            failures.is_empty(),
            "{bin}: failed during the swap: {failures:?}"
        );
    }
    assert!(sent.load(Ordering::SeqCst) > 20, "{bin}: the load ran");

    // The old secret removed, then SIGHUP: refused at once (well within the 500 ms poll).
    for round in 0..3 {
        let (current, removed) = if round % 2 == 0 {
            ("whsec_new", "whsec_old")
        } else {
            ("whsec_old", "whsec_new")
        };
        std::fs::write(&file, format!("{current}\n")).expect("rewritten in place");
        r.signal("-HUP");
        let refused = until_answered(&r.url, removed, 401, Duration::from_secs(2)).await;
        assert!(
            refused < Duration::from_millis(150),
            "{bin}: refused after {refused:?}"
        );
        assert_eq!(
            post(&r.url, &event("test", &format!("evt_cur_{round}"), current)).await,
            200
        );
    }
    // A file emptied or removed later keeps the secrets in use.
    std::fs::write(&file, "# emptied by a broken rotation\n").expect("emptied");
    r.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        post(&r.url, &event("test", "evt_kept_1", "whsec_new")).await,
        200
    );
    std::fs::remove_file(&file).expect("removed");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        post(&r.url, &event("test", "evt_kept_2", "whsec_new")).await,
        200
    );
    assert_eq!(
        post(&r.url, &event("test", "evt_kept_3", "whsec_old")).await,
        401
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn axum_receiver_rotates_its_secret_file_under_load() {
    secret_file_rotates_under_load(AXUM).await;
}

#[tokio::test]
async fn actix_receiver_rotates_its_secret_file_under_load() {
    secret_file_rotates_under_load(ACTIX).await;
}

/// Runs `bin` with `envs` only; it must exit 2 with one line on stderr naming `names`.
async fn exits_2(bin: &str, envs: &[(&str, &str)], names: &str) {
    let stderr = common::exit_2_line(bin, envs).await;
    assert!(stderr.contains(names), "{bin}: {stderr}");
}

#[tokio::test]
async fn receivers_exit_2_on_bad_observability_or_secret_file_settings() {
    let dir = std::env::temp_dir().join(format!("airmy-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let empty = dir.join("empty");
    std::fs::write(&empty, "# nothing yet\n\n").expect("written");
    let good = dir.join("good");
    std::fs::write(&good, "whsec_x\n").expect("written");
    // What an editor saves as an "empty" UTF-8 file with a byte-order mark.
    let bom = dir.join("bom");
    std::fs::write(&bom, "\u{feff}\r\n").expect("written");
    let invisible = dir.join("invisible");
    std::fs::write(&invisible, "whsec_\u{200b}x\n").expect("written");
    let (empty, good, bom, invisible) = (
        empty.to_str().expect("utf-8").to_owned(),
        good.to_str().expect("utf-8").to_owned(),
        bom.to_str().expect("utf-8").to_owned(),
        invisible.to_str().expect("utf-8").to_owned(),
    );
    let missing = dir.join("missing").to_str().expect("utf-8").to_owned();
    for bin in [AXUM, ACTIX] {
        let secret = ("AIRMY_WEBHOOK_SECRET", "whsec_x");
        exits_2(
            bin,
            &[secret, ("AIRMY_LOG_FORMAT", "xml")],
            "AIRMY_LOG_FORMAT",
        )
        .await;
        exits_2(
            bin,
            &[secret, ("AIRMY_METRICS_LISTEN", "9090")],
            "AIRMY_METRICS_LISTEN",
        )
        .await;
        exits_2(
            bin,
            &[secret, ("AIRMY_WEBHOOK_SECRET_FILE", &good)],
            "cannot both be set",
        )
        .await;
        exits_2(
            bin,
            &[("AIRMY_WEBHOOK_SECRET_FILE", &empty)],
            "holds no secret",
        )
        .await;
        exits_2(
            bin,
            &[("AIRMY_WEBHOOK_SECRET_FILE", &missing)],
            "cannot read",
        )
        .await;
        exits_2(
            bin,
            &[("AIRMY_WEBHOOK_SECRET_FILE", &bom)],
            "holds no secret",
        )
        .await;
        exits_2(
            bin,
            &[("AIRMY_WEBHOOK_SECRET_FILE", &invisible)],
            "invisible",
        )
        .await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn json_logs_carry_the_delivery_span_and_never_the_secret() {
    let output = {
        let mut child = Command::new(AXUM)
            .env_clear()
            .env("AIRMY_WEBHOOK_SECRET", testing::SECRET)
            .env("AIRMY_LISTEN", "127.0.0.1:0")
            .env("AIRMY_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,airmy_verify=info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let first = lines.next_line().await.expect("read").expect("a line");
        let base = first
            .strip_prefix("listening on ")
            .expect("listening")
            .to_owned();
        let url = format!("{base}/hooks/airmy");
        assert_eq!(
            post(&url, &event("test", "evt_ok", testing::SECRET)).await,
            200
        );
        let forged = event("test", "evt_forged", "whsec_wrong");
        assert_eq!(post(&url, &forged).await, 401);
        let pid = child.id().expect("running").to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        child.wait_with_output().await.expect("exits")
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    // One JSON object per line; RUST_LOG leaves out the receiver's INFO `event handled` and
    // keeps the rejection's WARN, in its delivery span (INFO spans of `airmy_verify` enabled).
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert!(
        lines.iter().all(|l| l["target"] != "airmy_receiver"),
        "filtered by RUST_LOG: {stderr}"
    );
    let warnings: Vec<_> = lines.iter().filter(|l| l["level"] == "WARN").collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let line = warnings[0];
    assert_eq!(line["span"]["name"], "airmy_delivery", "{line}");
    assert_eq!(line["fields"]["code"], "invalid_signature", "{line}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colours off a terminal: {stderr}"
    );
    assert!(!stderr.contains(testing::SECRET), "{stderr}");
}

/// `SIGHUP` (a `systemctl reload`) does not stop a receiver whose secret comes from the
/// environment.
#[tokio::test]
async fn sighup_without_a_secret_file_changes_nothing() {
    for bin in [AXUM, ACTIX] {
        let r = common::Receiver::start(bin, &[]).await;
        r.signal("-HUP");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(r.health().await, 200, "{bin}: still serving after SIGHUP");
    }
}

/// An inbox receiver accounts for every accept's time, by stage (issue 29): each accept, the
/// duplicate included, is counted once in `queue`, `batch` and `total` (and, on SQLite, in
/// `commit`), the batch sizes add up to the accepts, and the stages are no longer than the
/// whole.
async fn inbox_accepts_are_accounted_by_stage(bin: &str, inbox: &str, backend: &str) {
    let (r, metrics) = with_metrics(bin, ("AIRMY_INBOX", inbox)).await;
    let secret = testing::SECRET;
    let run = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let deliveries: Vec<Delivery> = (0..12)
        .map(|i| event("run.completed", &format!("evt_stage_{run}_{i}"), secret))
        .collect();
    let posts = deliveries.iter().map(|d| post(&r.url, d));
    for status in futures_util::future::join_all(posts).await {
        assert_eq!(status, 200, "{bin} {backend}");
    }
    assert_eq!(
        post(&r.url, &deliveries[0]).await,
        200,
        "{bin}: the duplicate"
    );
    let (got, text) = scrape(&metrics).await;
    let series = |stage: &str, part: &str| {
        format!(
            "airmy_webhook_inbox_accept_seconds_{part}{{backend=\"{backend}\",stage=\"{stage}\"}}"
        )
    };
    let mut stages = vec!["queue", "batch", "total"];
    if backend == "sqlite" {
        stages.push("commit");
    }
    for stage in &stages {
        assert_eq!(
            got.get(&series(stage, "count")),
            Some(&13.0),
            "{bin} {backend}: {stage} in\n{text}"
        );
    }
    let sum = |stage: &str| got.get(&series(stage, "sum")).copied().unwrap_or(f64::NAN);
    let parts: f64 = stages
        .iter()
        .filter(|s| **s != "total")
        .map(|s| sum(s))
        .sum();
    assert!(
        parts > 0.0 && parts <= sum("total"),
        "{bin} {backend}: {text}"
    );
    let batches = format!("airmy_webhook_inbox_accept_batch_size_sum{{backend=\"{backend}\"}}");
    assert_eq!(got.get(&batches), Some(&13.0), "{bin} {backend}: {text}");
}

#[tokio::test]
async fn receivers_account_for_each_sqlite_accept_by_stage() {
    for bin in [AXUM, ACTIX] {
        let dir = test_support::temp_dir();
        let inbox = format!("sqlite:{}", dir.0.join("inbox.db").display());
        inbox_accepts_are_accounted_by_stage(bin, &inbox, "sqlite").await;
    }
}

#[tokio::test]
async fn receivers_account_for_each_redis_accept_by_stage() {
    let redis = test_support::RedisServer::start();
    inbox_accepts_are_accounted_by_stage(AXUM, redis.url(), "redis").await;
}
