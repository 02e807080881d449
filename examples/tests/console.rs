//! The receivers' console listener as a black box: `AIRMY_CONSOLE_LISTEN` adds one
//! `console on http://HOST:PORT/` line right after `listening on`; an address off loopback
//! needs `AIRMY_CONSOLE_TOKEN` (else exit 2 before anything listens); with a token, every
//! page needs the login's cookie (`HttpOnly`, `SameSite=Strict`, never the token itself), and
//! `AIRMY_CONSOLE_READONLY_TOKEN`'s sessions see pages but no action.

mod common;

use common::{ACTIX, AXUM, Receiver, client, delivery, exit_2_line};

fn inbox_env(dir: &std::path::Path) -> String {
    format!("sqlite:{}", dir.join("inbox.db").display())
}

fn temp(name: &str) -> std::path::PathBuf {
    let nanos = airmy_verify::time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let dir = std::env::temp_dir().join(format!(
        "airmy-console-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_console_line_follows_the_listening_line_and_serves_the_inbox() {
    for bin in [AXUM, ACTIX] {
        let dir = temp("line");
        let inbox = inbox_env(&dir);
        let receiver = Receiver::start(
            bin,
            &[
                ("AIRMY_INBOX", &inbox),
                ("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0"),
                ("AIRMY_METRICS_LISTEN", "127.0.0.1:0"),
            ],
        )
        .await;
        let console = receiver.console_url().await;
        assert!(
            console.starts_with("http://127.0.0.1:") && console.ends_with('/'),
            "{console}"
        );
        let d = delivery("evt_console_line");
        let sent = client()
            .post(&receiver.url)
            .header("x-airmy-signature", &d.signature)
            .body(d.body.clone())
            .send()
            .await
            .expect("sent");
        assert_eq!(sent.status(), 200);
        let mut done = false;
        for _ in 0..200 {
            let page = client()
                .get(&console)
                .send()
                .await
                .expect("console")
                .text()
                .await
                .expect("body");
            if page.contains("id=\"count-done\">1<") {
                done = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(done, "{bin}: the overview counts the handled delivery");
        let page = client()
            .get(format!("{console}entry?id=evt_console_line"))
            .send()
            .await
            .expect("entry");
        assert_eq!(page.status(), 200);
        assert!(
            page.text()
                .await
                .expect("body")
                .contains("evt_console_line")
        );
        let lines = receiver.lines();
        assert!(
            lines[1].starts_with("metrics on http://"),
            "{bin}: then metrics: {lines:?}"
        );
        assert!(
            lines.iter().skip(2).all(|l| l.starts_with("handled ")),
            "{bin}: nothing else on stdout: {lines:?}"
        );
        receiver.signal("-TERM");
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[tokio::test]
async fn a_console_off_loopback_without_a_token_or_without_an_inbox_exits_2() {
    let dir = temp("exit2");
    let inbox = inbox_env(&dir);
    for bin in [AXUM, ACTIX] {
        let secret = ("AIRMY_WEBHOOK_SECRET", airmy_verify::testing::SECRET);
        let open = exit_2_line(
            bin,
            &[
                secret,
                ("AIRMY_INBOX", &inbox),
                ("AIRMY_CONSOLE_LISTEN", "0.0.0.0:0"),
            ],
        )
        .await;
        assert!(
            open.contains("AIRMY_CONSOLE_TOKEN") && open.contains("loopback"),
            "{open}"
        );
        let alone = exit_2_line(bin, &[secret, ("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0")]).await;
        assert!(alone.contains("needs AIRMY_INBOX"), "{alone}");
        let short = exit_2_line(
            bin,
            &[
                secret,
                ("AIRMY_INBOX", &inbox),
                ("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0"),
                ("AIRMY_CONSOLE_TOKEN", "short"),
            ],
        )
        .await;
        assert!(short.contains("at least 16"), "{short}");
        assert!(
            !short.contains("short\""),
            "the token is not echoed: {short}"
        );
        let bad = exit_2_line(
            bin,
            &[
                secret,
                ("AIRMY_INBOX", &inbox),
                ("AIRMY_CONSOLE_LISTEN", "nowhere"),
            ],
        )
        .await;
        assert!(bad.contains("HOST:PORT"), "{bad}");
        let viewer_alone = exit_2_line(
            bin,
            &[
                secret,
                ("AIRMY_INBOX", &inbox),
                ("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0"),
                ("AIRMY_CONSOLE_READONLY_TOKEN", "a-read-only-token-0123"),
            ],
        )
        .await;
        assert!(
            viewer_alone.contains("needs AIRMY_CONSOLE_TOKEN") && !viewer_alone.contains("0123"),
            "{viewer_alone}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn with_a_token_every_page_needs_the_login_cookie() {
    const TOKEN: &str = "console-token-for-the-test-0123";
    const VIEWER: &str = "console-viewer-for-the-test-4567";
    for bin in [AXUM, ACTIX] {
        let dir = temp("login");
        let inbox = inbox_env(&dir);
        let receiver = Receiver::start(
            bin,
            &[
                ("AIRMY_INBOX", &inbox),
                ("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0"),
                ("AIRMY_CONSOLE_TOKEN", TOKEN),
                ("AIRMY_CONSOLE_READONLY_TOKEN", VIEWER),
            ],
        )
        .await;
        let console = receiver.console_url().await;
        let c = no_redirects();
        for path in ["", "entries?state=dead", "entry?id=x"] {
            let page = c
                .get(format!("{console}{path}"))
                .send()
                .await
                .expect("sent");
            assert_eq!(page.status(), 401, "{bin} /{path}");
            assert!(
                page.text().await.expect("body").contains("name=\"token\""),
                "a login form"
            );
        }
        let replay = c
            .post(format!("{console}replay"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("id=x")
            .send()
            .await
            .expect("sent");
        assert_eq!(replay.status(), 401, "{bin}: no action without the cookie");
        let wrong = c
            .post(format!("{console}login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("token=not-the-token-at-all-000")
            .send()
            .await
            .expect("sent");
        assert_eq!(wrong.status(), 401);
        let login = c
            .post(format!("{console}login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={TOKEN}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(login.status(), 303, "{bin}");
        let cookie = login.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(
            !cookie.contains(TOKEN),
            "the cookie is not the token: {cookie}"
        );
        let pair = cookie.split(';').next().expect("name=value").to_owned();
        let page = c
            .get(&console)
            .header("cookie", &pair)
            .send()
            .await
            .expect("sent");
        assert_eq!(page.status(), 200, "{bin}");
        assert!(
            page.text()
                .await
                .expect("body")
                .contains("id=\"count-pending\"")
        );
        let forged = c
            .get(&console)
            .header("cookie", "airmy_console=00")
            .send()
            .await
            .expect("sent");
        assert_eq!(forged.status(), 401);
        // The read-only token: every page, no action form, every action refused.
        let login = c
            .post(format!("{console}login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={VIEWER}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(login.status(), 303, "{bin}");
        let viewer = login.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("name=value")
            .to_owned();
        let page = c
            .get(format!("{console}replay-dead"))
            .header("cookie", &viewer)
            .send()
            .await
            .expect("sent");
        assert_eq!(page.status(), 200, "{bin}");
        let html = page.text().await.expect("body");
        assert!(
            html.contains("id=\"role\"") && !html.contains("id=\"confirm\""),
            "{bin}: {html}"
        );
        let start = html
            .find("name=\"csrf\" value=\"")
            .expect("the logout's token")
            + 19;
        let csrf = &html[start..start + html[start..].find('"').expect("end")];
        for (path, form) in [
            ("replay-dead", format!("confirm=yes&csrf={csrf}")),
            ("purge", format!("before=2001-01-01T00:00:00Z&csrf={csrf}")),
            ("replay", format!("id=x&csrf={csrf}")),
        ] {
            let refused = c
                .post(format!("{console}{path}"))
                .header("cookie", &viewer)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .expect("sent");
            assert_eq!(refused.status(), 403, "{bin}: read-only {path}");
        }
        assert!(
            receiver
                .lines()
                .iter()
                .all(|l| !l.contains(TOKEN) && !l.contains(VIEWER)),
            "never on stdout"
        );
        receiver.signal("-TERM");
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// A console without a login answers only to a loopback `Host` (a page whose name was
/// rebound to 127.0.0.1 gets 421, reads nothing, replays nothing); and a client that trickles
/// its headers is cut off as on the webhook port, rather than holding a connection for ever.
#[tokio::test]
async fn a_loopback_console_refuses_other_hosts_and_slow_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for bin in [AXUM, ACTIX] {
        let dir = temp("rebind");
        let inbox = inbox_env(&dir);
        let receiver = Receiver::start(
            bin,
            &[
                ("AIRMY_INBOX", &inbox),
                ("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0"),
            ],
        )
        .await;
        let console = receiver.console_url().await;
        let port = console
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .expect("port")
            .to_owned();
        let c = no_redirects();
        let ok = c.get(&console).send().await.expect("sent");
        assert_eq!(ok.status(), 200, "{bin}");
        let ok = c
            .get(&console)
            .header("host", format!("localhost:{port}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(ok.status(), 200, "{bin}: localhost");
        for path in ["", "entries?state=dead", "replay-dead"] {
            let rebound = c
                .get(format!("{console}{path}"))
                .header("host", format!("attacker.example:{port}"))
                .send()
                .await
                .expect("sent");
            assert_eq!(rebound.status(), 421, "{bin} /{path}");
            assert!(
                !rebound.text().await.expect("body").contains("csrf"),
                "{bin}: no form token"
            );
        }
        let rebound = c
            .post(format!("{console}replay-dead"))
            .header("host", "attacker.example")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("confirm=yes")
            .send()
            .await
            .expect("sent");
        assert_eq!(rebound.status(), 421, "{bin}");

        let mut slow = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .expect("connects");
        slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .expect("half a request");
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            slow.read_to_end(&mut buf),
        )
        .await;
        assert!(
            closed.is_ok(),
            "{bin}: a client that never ends its headers is cut off"
        );
        receiver.signal("-TERM");
        std::fs::remove_dir_all(&dir).ok();
    }
}
