//! The console router nested in an application of the shape users write: its own state, its
//! own routes, the console under a path of its choosing behind its own auth middleware; a
//! real server on loopback and a real client.

use std::time::Duration;

use airmy_verify_inbox::console::{Console, Role};
use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;

#[derive(Clone)]
struct AppState {
    region: &'static str,
}

/// The application's own auth: an operator, a viewer (read-only), or nobody.
async fn operators_only(mut request: Request, next: Next) -> Result<Response, StatusCode> {
    let role = match request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        Some("Bearer operator") => Role::Operator,
        Some("Bearer viewer") => Role::ReadOnly,
        _ => return Err(StatusCode::UNAUTHORIZED),
    };
    request.extensions_mut().insert(role);
    Ok(next.run(request).await)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_console_nests_under_any_path_behind_the_applications_auth() {
    let dir = std::env::temp_dir().join(format!("airmy-axum-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let b = inbox.backend();
    b.accept(&airmy_verify_inbox::conformance::delivery(
        "evt_axum_dead",
        "run.failed",
    ))
    .await
    .expect("accept");
    let leased = b
        .take(1, Duration::from_secs(60))
        .await
        .expect("take")
        .remove(0);
    b.bury(&leased.id, &leased.token, "downstream 500")
        .await
        .expect("bury");

    let app = Router::new()
        .route(
            "/region",
            get(|State(state): State<AppState>| async move { state.region }),
        )
        .nest(
            "/ops/console",
            airmy_verify_axum::console::router(Console::new(inbox.clone()))
                .layer(middleware::from_fn(operators_only)),
        )
        .with_state(AppState {
            region: "eu-west-1",
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = client();
    let auth = |r: reqwest::RequestBuilder| r.header("authorization", "Bearer operator");

    assert_eq!(
        c.get(format!("{base}/region"))
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("body"),
        "eu-west-1"
    );
    let anonymous = c
        .get(format!("{base}/ops/console"))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401, "the application's auth runs first");

    // axum's `nest` answers the path itself and what is under it (`/ops/console/…`), not
    // `/ops/console/`: the console's links name the former.
    for path in ["/ops/console", "/ops/console/entries"] {
        let overview = auth(c.get(format!("{base}{path}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(overview.status(), 200, "{path}");
        assert!(
            overview.headers()["content-security-policy"]
                .to_str()
                .expect("ascii")
                .contains("script-src 'none'")
        );
        let html = overview.text().await.expect("body");
        assert!(
            html.contains("href=\"/ops/console/console.css\""),
            "{path}: {html}"
        );
        assert!(html.contains("href=\"/ops/console\""), "home: {html}");
    }
    let css = auth(c.get(format!("{base}/ops/console/console.css")))
        .send()
        .await
        .expect("sent");
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let dead = auth(c.get(format!("{base}/ops/console/entries?state=dead")))
        .send()
        .await
        .expect("sent");
    let html = dead.text().await.expect("body");
    assert!(
        html.contains("href=\"/ops/console/entry?id=evt_axum_dead\""),
        "{html}"
    );
    assert!(html.contains("downstream 500"), "{html}");

    let entry = auth(c.get(format!("{base}/ops/console/entry?id=evt_axum_dead")))
        .send()
        .await
        .expect("sent");
    let html = entry.text().await.expect("body");
    let start = html.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    let csrf = &html[start..start + html[start..].find('"').expect("the token's end")];
    // A read-only operator (the role the application's auth put in the extensions): the page
    // without its form, the action refused.
    let viewer = |r: reqwest::RequestBuilder| r.header("authorization", "Bearer viewer");
    let page = viewer(c.get(format!("{base}/ops/console/entry?id=evt_axum_dead")))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    assert!(!page.text().await.expect("body").contains("id=\"replay\""));
    let refused = viewer(c.post(format!("{base}/ops/console/replay")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id=evt_axum_dead&csrf={csrf}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 403);
    let forged = auth(c.post(format!("{base}/ops/console/replay")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id=evt_axum_dead")
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 403);
    let replayed = auth(c.post(format!("{base}/ops/console/replay")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id=evt_axum_dead&csrf={}", csrf))
        .send()
        .await
        .expect("sent");
    assert_eq!(replayed.status(), 303);
    assert_eq!(
        replayed.headers()["location"],
        "/ops/console/entry?id=evt_axum_dead&replayed=1"
    );
    assert_eq!(b.stats().await.expect("stats").pending, 1);
    let head = auth(c.head(format!("{base}/ops/console")))
        .send()
        .await
        .expect("sent");
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.expect("body").is_empty());
    let huge = auth(c.post(format!("{base}/ops/console/purge")))
        .body(vec![b'a'; 100 * 1024])
        .send()
        .await
        .expect("sent");
    assert_eq!(huge.status(), 413);
    std::fs::remove_dir_all(&dir).ok();
}
