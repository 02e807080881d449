//! The console scope in an application of the shape users write: its own data and routes,
//! the console under a path of its choosing behind its own auth (`wrap_fn`); a real server on
//! loopback and a real client.

use std::time::Duration;

use actix_web::dev::Service as _;
use actix_web::{App, HttpMessage as _, HttpServer, web};
use airmy_verify_inbox::console::{Console, Role};
use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[actix_web::test]
async fn the_console_mounts_under_any_path_behind_the_applications_auth() {
    let dir = std::env::temp_dir().join(format!("airmy-actix-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let b = inbox.backend();
    b.accept(&airmy_verify_inbox::conformance::delivery(
        "evt_actix_dead",
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

    let console = Console::new(inbox.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new("eu-west-1"))
            .route(
                "/region",
                web::get().to(|region: web::Data<&'static str>| async move { region.to_string() }),
            )
            .service(
                airmy_verify_actix::console::scope("/ops/console", console.clone()).wrap_fn(
                    |req, srv| {
                        // The application's own auth: an operator, a viewer, or nobody.
                        let role = match req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                        {
                            Some("Bearer operator") => Some(Role::Operator),
                            Some("Bearer viewer") => Some(Role::ReadOnly),
                            _ => None,
                        };
                        if let Some(role) = role {
                            req.extensions_mut().insert(role);
                        }
                        let call = role.map(|_| srv.call(req));
                        async move {
                            match call {
                                Some(call) => call.await,
                                None => Err(actix_web::error::ErrorUnauthorized("unauthorized")),
                            }
                        }
                    },
                ),
            )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let base = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
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
    assert_eq!(
        c.get(format!("{base}/ops/console"))
            .send()
            .await
            .expect("sent")
            .status(),
        401
    );
    for path in ["/ops/console", "/ops/console/"] {
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
        assert!(html.contains("id=\"count-dead\">1<"), "{html}");
    }
    let dead = auth(c.get(format!("{base}/ops/console/entries?state=dead")))
        .send()
        .await
        .expect("sent");
    let html = dead.text().await.expect("body");
    assert!(
        html.contains("href=\"/ops/console/entry?id=evt_actix_dead\""),
        "{html}"
    );
    let entry = auth(c.get(format!("{base}/ops/console/entry?id=evt_actix_dead")))
        .send()
        .await
        .expect("sent");
    let html = entry.text().await.expect("body");
    let start = html.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    let csrf = html[start..start + html[start..].find('"').expect("the token's end")].to_owned();
    // A read-only operator (the role the application's auth put in the extensions): the page
    // without its form, the action refused.
    let viewer = |r: reqwest::RequestBuilder| r.header("authorization", "Bearer viewer");
    let page = viewer(c.get(format!("{base}/ops/console/entry?id=evt_actix_dead")))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    assert!(!page.text().await.expect("body").contains("id=\"replay\""));
    let refused = viewer(c.post(format!("{base}/ops/console/replay")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id=evt_actix_dead&csrf={csrf}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 403);
    let forged = auth(c.post(format!("{base}/ops/console/replay")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id=evt_actix_dead")
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 403);
    let replayed = auth(c.post(format!("{base}/ops/console/replay")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("id=evt_actix_dead&csrf={}", csrf.as_str()))
        .send()
        .await
        .expect("sent");
    assert_eq!(replayed.status(), 303);
    assert_eq!(
        replayed.headers()["location"],
        "/ops/console/entry?id=evt_actix_dead&replayed=1"
    );
    assert_eq!(b.stats().await.expect("stats").pending, 1);
    let huge = auth(c.post(format!("{base}/ops/console/purge")))
        .body(vec![b'a'; 100 * 1024])
        .send()
        .await
        .expect("sent");
    assert_eq!(huge.status(), 413);
    handle.stop(true).await;
    std::fs::remove_dir_all(&dir).ok();
}
