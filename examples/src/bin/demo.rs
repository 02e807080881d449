//! The suite end to end, in one command:
//!
//! ```text
//! cargo run -p examples --bin demo
//! ```
//!
//! Starts the axum receiver and the actix receiver (the same apps as `axum-receiver` and
//! `actix-receiver`) in this process on 127.0.0.1:0 with a freshly generated secret, sends each
//! of them real HTTP deliveries signed the way AIRMY signs them, and prints what each answered
//! (status, and the error code of a refusal) and whether its handler ran. Then a second act:
//! the handler's database is down for longer than AIRMY retries, without and with the durable
//! inbox. Exits 0 only if every row is as expected.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{App, HttpServer};
use airmy_verify::event::EVENT_TYPES;
use airmy_verify::testing::{self, Delivery, EventBuilder};
use airmy_verify::time::OffsetDateTime;
use airmy_verify::{DEFAULT_MAX_BODY_SIZE, Secret, Verifier};
use bytes::Bytes;
use examples::apps::{self, Handling};

/// One delivery of the demo and what both receivers must answer.
struct Row {
    case: String,
    body: Bytes,
    signature: Option<String>,
    chunked: bool,
    expected: u16,
}

fn generated_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(format!("whsec_{}", hex::encode(bytes)))
}

fn rows(secret: &str, previous: &str) -> Vec<Row> {
    let now = OffsetDateTime::now_utc();
    let event = |event_type: &str| testing::sample_event(event_type).created_at(now);
    let signed = |case: String, builder: &EventBuilder, secret: &str, expected: u16| {
        let Delivery { body, signature } = builder.signed(secret);
        Row {
            case,
            body,
            signature: Some(signature),
            chunked: false,
            expected,
        }
    };
    let mut rows: Vec<Row> = EVENT_TYPES
        .iter()
        .map(|t| signed(format!("valid {t}"), &event(t), secret, 200))
        .collect();
    rows.push(signed(
        "a type AIRMY adds later (agent.deleted)".into(),
        &event("agent.deleted"),
        secret,
        200,
    ));
    rows.push(signed(
        "signed with the previous secret (rotation)".into(),
        &event("run.completed"),
        previous,
        200,
    ));
    let good = event("run.completed").signed(secret);
    let mut tampered = good.body.to_vec();
    tampered[good.body.len() / 2] ^= 0x01;
    rows.push(Row {
        case: "tampered body (one bit flipped)".into(),
        body: Bytes::from(tampered),
        signature: Some(good.signature.clone()),
        chunked: false,
        expected: 401,
    });
    rows.push(signed(
        "signed with a wrong secret".into(),
        &event("run.completed"),
        "whsec_not_the_secret",
        401,
    ));
    rows.push(Row {
        case: "no X-AIRMY-Signature header".into(),
        body: good.body.clone(),
        signature: None,
        chunked: false,
        expected: 401,
    });
    let stale = event("alert.triggered").created_at(now - Duration::from_secs(6 * 60));
    rows.push(signed(
        "stale created_at (6 minutes old)".into(),
        &stale,
        secret,
        401,
    ));
    let over = event("run.completed")
        .padded_to(DEFAULT_MAX_BODY_SIZE + 1)
        .signed(secret);
    rows.push(Row {
        case: "body over the 2 MiB limit, sent chunked".into(),
        body: over.body,
        signature: Some(over.signature),
        chunked: true,
        expected: 413,
    });
    let not_json = Delivery::sign(Bytes::from_static(b"{\"id\": oops"), secret);
    rows.push(Row {
        case: "signed, but not JSON".into(),
        body: not_json.body,
        signature: Some(not_json.signature),
        chunked: false,
        expected: 400,
    });
    let not_envelope = Delivery::sign(Bytes::from_static(br#"{"hello":"world"}"#), secret);
    rows.push(Row {
        case: "signed JSON that is not an envelope".into(),
        body: not_envelope.body,
        signature: Some(not_envelope.signature),
        chunked: false,
        expected: 422,
    });
    rows
}

/// Sends a row; answers the status (0 when no response came) and the error code, if any.
async fn send(client: &reqwest::Client, url: &str, row: &Row) -> (u16, String) {
    let body = if row.chunked {
        let chunks: Vec<Result<Bytes, std::convert::Infallible>> = row
            .body
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    } else {
        reqwest::Body::from(row.body.clone())
    };
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = &row.signature {
        request = request.header("x-airmy-signature", signature);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let bytes = response.bytes().await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            (
                status,
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        }
        Err(err) => {
            eprintln!("{}: no response from {url}: {err}", row.case);
            (0, String::new())
        }
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let (secret, previous) = (generated_secret()?, generated_secret()?);
    let verifier = Verifier::builder(Secret::new(secret.as_str())?)
        .previous_secret(Secret::new(previous.as_str())?)
        .build();

    let axum_handling = Handling::default();
    let axum_ran = axum_handling.completed.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let axum_url = format!("http://{}{}", listener.local_addr()?, apps::PATH);
    let app = apps::axum_app(verifier.clone(), axum_handling, None, None);
    actix_web::rt::spawn(async move { axum::serve(listener, app).await });

    let actix_handling = Handling::default();
    let actix_ran = actix_handling.completed.clone();
    let routes = apps::actix_app(verifier, actix_handling, None, None);
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
    let actix_url = format!("http://{}{}", server.addrs()[0], apps::PATH);
    let handle = server.run();
    let stop = handle.handle();
    actix_web::rt::spawn(handle);

    println!("axum receiver:  {axum_url}");
    println!("actix receiver: {actix_url}");
    println!(
        "secret: generated for this run (whsec_…, {} characters)\n",
        secret.len()
    );
    println!(
        "{:<44} {:>8}  {:<24} {:<24} result",
        "delivery", "expected", "axum (handler / error)", "actix (handler / error)"
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()?;
    let rows = rows(&secret, &previous);
    let mut good = 0;
    for row in &rows {
        let mut cells = Vec::new();
        let mut ok = true;
        for (url, ran) in [(&axum_url, &axum_ran), (&actix_url, &actix_ran)] {
            let before = ran.load(Ordering::SeqCst);
            let (status, code) = send(&client, url, row).await;
            let handler_ran = ran.load(Ordering::SeqCst) > before;
            ok &= status == row.expected && handler_ran == (row.expected == 200);
            cells.push(match (handler_ran, code.is_empty()) {
                (true, _) => format!("{status} handler ran"),
                (false, false) => format!("{status} {code}"),
                (false, true) => format!("{status} handler not run"),
            });
        }
        good += usize::from(ok);
        println!(
            "{:<44} {:>8}  {:<24} {:<24} {}",
            row.case,
            row.expected,
            cells[0],
            cells[1],
            if ok { "ok" } else { "UNEXPECTED" }
        );
    }
    println!(
        "\n{good} of {} deliveries answered as expected by both receivers",
        rows.len()
    );
    stop.stop(true).await;
    let outage = outage_act(&secret).await?;
    Ok(good == rows.len() && outage)
}

/// AIRMY's retry schedule (attempts at 0, +1 s, +5 s, +30 s), 15 times faster.
const AIRMY_SCHEDULE: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(67),
    Duration::from_millis(333),
    Duration::from_secs(2),
];

/// The second act: the handler's database is down for longer than AIRMY retries (3 s against
/// AIRMY's schedule, scaled down 15 times to 2 s). Without an inbox every delivery is lost;
/// with one (SQLite, in a temporary directory) every delivery is acknowledged at once and
/// handled when the database is back.
async fn outage_act(secret: &str) -> Result<bool, Box<dyn std::error::Error>> {
    const EVENTS: usize = 5;
    let outage = Duration::from_secs(3);
    println!(
        "\nSecond act: the handler's database is down for {} s, longer than AIRMY retries \
         (its 1 s, 5 s, 30 s schedule, 15 times faster here)",
        outage.as_secs()
    );
    let verifier = Verifier::new(Secret::new(secret)?);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?;
    let deliveries: Vec<Delivery> = (0..EVENTS)
        .map(|i| {
            testing::sample_event("run.completed")
                .id(format!("evt_outage_{i}_{}", std::process::id()))
                .created_at(OffsetDateTime::now_utc())
                .signed(secret)
        })
        .collect();

    let mut results = Vec::new();
    for with_inbox in [false, true] {
        let dir = std::env::temp_dir().join(format!(
            "airmy-demo-{}-{}",
            std::process::id(),
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        std::fs::create_dir_all(&dir)?;
        let handling = Handling {
            fail_until: Some(std::time::Instant::now() + outage),
            ..Handling::default()
        };
        let inbox = if with_inbox {
            let backend = airmy_verify_inbox::SqliteBackend::open(
                dir.join("inbox.db"),
                airmy_verify_inbox::SqliteOptions::default(),
            )?;
            Some(airmy_verify_inbox::Inbox::new(backend))
        } else {
            None
        };
        let opened = inbox.clone().map(|inbox| examples::ReceiverInbox {
            inbox,
            postgres: None,
        });
        let (workers, worker) = examples::start_workers(
            opened.as_ref(),
            &verifier,
            &handling,
            (4, airmy_verify::lease::DEFAULT_LEASE, None),
            "axum",
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}{}", listener.local_addr()?, apps::PATH);
        let app = apps::axum_app(verifier.clone(), handling.clone(), None, inbox.clone());
        let server = actix_web::rt::spawn(async move { axum::serve(listener, app).await });

        // AIRMY delivers every event at once, each with its retry schedule; a 2xx
        // acknowledges.
        let start = tokio::time::Instant::now();
        let attempts = deliveries.iter().map(|d| {
            let (client, url) = (&client, &url);
            async move {
                for at in AIRMY_SCHEDULE {
                    tokio::time::sleep_until(start + at).await;
                    let answer = client
                        .post(url)
                        .header("x-airmy-signature", &d.signature)
                        .body(d.body.clone())
                        .send()
                        .await;
                    if answer.is_ok_and(|r| r.status().is_success()) {
                        return true;
                    }
                }
                false
            }
        });
        let acknowledged = futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        // Give the inbox's retries time to run once the database is back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while with_inbox
            && handling.completed.load(Ordering::SeqCst) < EVENTS
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let handled = handling.completed.load(Ordering::SeqCst);
        let failed = handling.failed.load(Ordering::SeqCst);
        workers.cancel();
        if let Some(worker) = worker {
            worker.await?;
        }
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
        let (label, ok) = if with_inbox {
            (
                "with AIRMY_INBOX=sqlite:…",
                acknowledged == EVENTS && handled == EVENTS,
            )
        } else {
            ("without an inbox", acknowledged == 0 && handled == 0)
        };
        println!(
            "{label:<28} acknowledged {acknowledged} of {EVENTS}, handled {handled} of {EVENTS} \
             ({failed} failed attempts): {}",
            match (with_inbox, ok) {
                (false, true) => "every event lost, as expected without an inbox",
                (true, true) => "nothing lost",
                _ => "UNEXPECTED",
            }
        );
        results.push(ok);
    }
    Ok(results.iter().all(|ok| *ok))
}
