//! The services users write (`examples::service`, binaries `axum-service` and `actix-service`):
//! their routers with no database (an inbox in memory, deliveries signed for the fixed test
//! clock), and the whole service on a throwaway PostgreSQL over real HTTP.

use std::time::{Duration, Instant};

use airmy_verify::testing::{self, Delivery};
use airmy_verify::time::OffsetDateTime;
use airmy_verify::{SIGNATURE_HEADER, Verifier};
use airmy_verify_inbox::{Inbox, MemoryBackend, MemoryOptions};
use examples::service::{self, AppState, CONSOLE_PATH, Config, Database, OpsToken, WEBHOOK_PATH};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const OPS: &str = "ops-token-for-the-service-tests";

/// What one request to the app is: method, path, `Authorization`, a delivery to post.
struct Call<'a> {
    method: &'a str,
    path: &'a str,
    authorization: Option<&'a str>,
    delivery: Option<&'a Delivery>,
}

fn get<'a>(path: &'a str) -> Call<'a> {
    Call {
        method: "GET",
        path,
        authorization: None,
        delivery: None,
    }
}

fn deliver(delivery: &Delivery) -> Call<'_> {
    Call {
        method: "POST",
        path: WEBHOOK_PATH,
        authorization: None,
        delivery: Some(delivery),
    }
}

/// A pool that is never connected: the router test needs no database (a route that queries it
/// answers 503).
fn pool_of_no_database() -> PgPool {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("a well-formed URL")
}

fn memory_inbox(verifier: &Verifier) -> Inbox {
    Inbox::new(MemoryBackend::new(MemoryOptions::default())).dedupe_for(verifier)
}

/// The router checks both frameworks share: `call` answers (status, body).
async fn check_router<F, Fut>(inbox: &Inbox, call: F)
where
    F: Fn(Call<'_>) -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let signed = testing::sample_event("run.completed")
        .id("evt_service_router")
        .signed(testing::SECRET);
    let (status, body) = call(deliver(&signed)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"accepted""#), "{body}");
    let entry = inbox.admin().entry("evt_service_router").await;
    assert!(entry.expect("the inbox answers").is_some(), "stored");
    let (status, body) = call(deliver(&signed)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"duplicate""#), "{body}");

    let forged = testing::sample_event("run.completed")
        .id("evt_service_forged")
        .signed(testing::WRONG_SECRET);
    let (status, body) = call(deliver(&forged)).await;
    assert_eq!(status, 401, "{body}");
    let entry = inbox.admin().entry("evt_service_forged").await;
    assert!(entry.expect("the inbox answers").is_none(), "not stored");

    // The application's own routes and 404s never see the verifier.
    for path in ["/nope", "/hooks", "/hooks/airmy/more"] {
        let (status, body) = call(get(path)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body, r#"{"error":"not_found"}"#, "{path}");
    }
    let (status, body) = call(get("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, body) = call(get("/runs/run_1")).await;
    assert_eq!(status, 503, "the pool has no database: {body}");
    assert!(body.contains("database_unavailable"), "{body}");

    // The console, behind the application's own token.
    // The console's overview is at `/ops/inbox` (axum's `nest` answers that and what is under
    // it, not `/ops/inbox/`), its pages under it.
    let console = CONSOLE_PATH;
    for authorization in [None, Some("Bearer wrong-token-of-enough-length"), Some(OPS)] {
        let (status, _) = call(Call {
            authorization,
            ..get(console)
        })
        .await;
        assert_eq!(status, 401, "{authorization:?}");
    }
    let bearer = format!("Bearer {OPS}");
    let (status, body) = call(Call {
        authorization: Some(&bearer),
        ..get(console)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<html"), "the console's overview: {body}");
}

#[tokio::test]
async fn axum_router_verifies_the_webhook_only_with_an_inbox_in_memory() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    let verifier = testing::conformance_verifier();
    let inbox = memory_inbox(&verifier);
    let state = AppState {
        pool: pool_of_no_database(),
    };
    let token = OpsToken::new(OPS).expect("long enough");
    let app = service::axum::router(state, inbox.clone(), &verifier, Some(token));
    check_router(&inbox, |call| {
        let app = app.clone();
        let mut request = Request::builder().method(call.method).uri(call.path);
        if let Some(value) = call.authorization {
            request = request.header("authorization", value);
        }
        let body = match call.delivery {
            Some(delivery) => {
                request = request.header(SIGNATURE_HEADER, &delivery.signature);
                Body::from(delivery.body.clone())
            }
            None => Body::empty(),
        };
        let request = request.body(body).expect("a request");
        async move {
            let response = app.oneshot(request).await.expect("infallible");
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("a body");
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    })
    .await;
}

#[actix_web::test]
async fn actix_app_verifies_the_webhook_only_with_an_inbox_in_memory() {
    use actix_web::{App, test};

    let verifier = testing::conformance_verifier();
    let inbox = memory_inbox(&verifier);
    let state = AppState {
        pool: pool_of_no_database(),
    };
    let token = OpsToken::new(OPS).expect("long enough");
    let routes = service::actix::configure(state, inbox.clone(), &verifier, Some(token));
    let app = test::init_service(App::new().configure(routes)).await;
    let app = &app;
    check_router(&inbox, |call| {
        let mut request = test::TestRequest::default()
            .method(call.method.parse().expect("a method"))
            .uri(call.path);
        if let Some(value) = call.authorization {
            request = request.insert_header(("authorization", value));
        }
        if let Some(delivery) = call.delivery {
            request = request
                .insert_header((SIGNATURE_HEADER, delivery.signature.as_str()))
                .set_payload(delivery.body.clone());
        }
        let request = request.to_request();
        async move {
            // An error from a middleware (the console's 401) is a response on a real server.
            match test::try_call_service(app, request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = test::read_body(response).await;
                    (status, String::from_utf8_lossy(&body).into_owned())
                }
                Err(err) => (
                    err.as_response_error().status_code().as_u16(),
                    err.to_string(),
                ),
            }
        }
    })
    .await;
}

/// The configuration a deployment would give, for the server at `url`.
fn config_for(url: &str) -> Config {
    Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some(url.to_owned()),
        "AIRMY_WEBHOOK_SECRET" => Some(testing::SECRET.to_owned()),
        "OPS_TOKEN" => Some(OPS.to_owned()),
        _ => None,
    })
    .expect("a valid configuration")
}

async fn effect_rows(pool: &PgPool, event_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM completed_runs WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(pool)
        .await
        .expect("the count")
}

/// Over real HTTP to the service at `base`: a signed `run.completed` is accepted, handled once
/// (its row written in the entry's transaction), served by `GET /runs/{id}`; sent again, a
/// duplicate, still one row.
async fn check_service_on_postgres(base: &str, pool: &PgPool, tag: &str) {
    let unique = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let (event_id, run_id) = (
        format!("evt_service_{tag}_{unique}"),
        format!("run_service_{tag}_{unique}"),
    );
    let delivery = testing::sample_event("run.completed")
        .id(&event_id)
        .created_at(OffsetDateTime::now_utc())
        .data(json!({ "id": run_id, "status": "completed", "tokens_used": 1247 }))
        .signed(testing::SECRET);
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(format!("{base}{WEBHOOK_PATH}"))
            .header(SIGNATURE_HEADER, &delivery.signature)
            .body(delivery.body.clone())
            .send()
    };
    let response = send().await.expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.expect("a body");
    assert!(body.contains(r#""status":"accepted""#), "{body}");

    let deadline = Instant::now() + Duration::from_secs(20);
    while effect_rows(pool, &event_id).await == 0 {
        assert!(Instant::now() < deadline, "handled within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(effect_rows(pool, &event_id).await, 1);
    let run = client
        .get(format!("{base}/runs/{run_id}"))
        .send()
        .await
        .expect("an answer")
        .text()
        .await
        .expect("a body");
    let run: Value = serde_json::from_str(&run).expect("JSON");
    assert_eq!(
        run,
        json!({ "run_id": run_id, "event_id": event_id, "tokens_used": 1247 })
    );

    let response = send().await.expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.expect("a body");
    assert!(body.contains(r#""status":"duplicate""#), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(effect_rows(pool, &event_id).await, 1, "still one row");

    let response = client
        .get(format!("{base}/no-such-page"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_service_handles_a_delivery_once_on_postgres() {
    let server = test_support::PostgresServer::start();
    let config = config_for(server.url());
    let database = Database::open(&config.database_url)
        .await
        .expect("the database");
    let pool = database.pool.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(service::axum::serve(config, database, listener, async {
        let _ = stopped.await;
    }));
    check_service_on_postgres(&base, &pool, "axum").await;
    stop.send(()).expect("still serving");
    served.await.expect("no panic").expect("served");
    assert!(pool.is_closed(), "the pool is closed last");
}

#[actix_web::test]
async fn actix_service_handles_a_delivery_once_on_postgres() {
    let server = test_support::PostgresServer::start();
    let config = config_for(server.url());
    let database = Database::open(&config.database_url)
        .await
        .expect("the database");
    let pool = database.pool.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = actix_web::rt::spawn(service::actix::serve(config, database, listener, async {
        let _ = stopped.await;
    }));
    check_service_on_postgres(&base, &pool, "actix").await;
    stop.send(()).expect("still serving");
    served.await.expect("no panic").expect("served");
    assert!(pool.is_closed(), "the pool is closed last");
}

#[test]
fn missing_configuration_is_named_in_one_line() {
    let err = Config::from_lookup(|_| None).expect_err("refused");
    assert!(
        err.to_string().starts_with("DATABASE_URL is missing"),
        "{err}"
    );
    let err = Config::from_lookup(|name| (name == "DATABASE_URL").then(|| "postgres://x".into()))
        .expect_err("refused");
    assert!(
        err.to_string()
            .starts_with("AIRMY_WEBHOOK_SECRET is missing"),
        "{err}"
    );
    let err = OpsToken::new("short").expect_err("refused");
    assert!(err.to_string().contains("OPS_TOKEN"), "{err}");
    let config = config_for("postgres://app:hunter2@db/app");
    assert_eq!(config.listen, "127.0.0.1:3000");
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(!format!("{config:?}").contains(OPS));
}
