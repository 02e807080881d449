//! The console's pause and resume forms and its audit, on real SQLite and Redis inboxes
//! through `Console::handle`: an operator pauses a type and everything and resumes, a
//! read-only operator sees the pauses and is refused (403), a form without its token is
//! refused; every action (pause, resume, replay, replay every dead letter, purge, login, failed
//! login) is one audit event with the actor the application named, and the overview lists it.

use std::time::Duration;

use airmy_verify_inbox::console::{
    Actor, Console, ConsoleRequest, ConsoleResponse, Login, Role, Token,
};
use airmy_verify_inbox::{Backend, Inbox, PauseScope, SqliteBackend, SqliteOptions};
use test_support::spans::{CapturedEvent, SpanCapture};

fn text(response: &ConsoleResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The form token in a page.
fn form_token(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a token field") + 19;
    let len = html[start..].find('"').expect("the value's end");
    html[start..start + len].to_owned()
}

/// A SQLite inbox in a temp dir, removed on drop.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sqlite(name: &str) -> (Inbox, Dir) {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let dir = std::env::temp_dir().join(format!(
        "airmy-console-pause-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    (inbox, Dir(dir))
}

/// One dead letter (`evt_dead`, `run.started`), then three pending `run.failed` entries
/// (`evt_failed_0..2`) and one pending `run.completed` (`evt_completed`).
async fn fill(b: &dyn Backend) {
    b.accept(&airmy_verify_inbox::conformance::delivery(
        "evt_dead",
        "run.started",
    ))
    .await
    .expect("accept");
    let leased = b.take(1, Duration::from_secs(60)).await.expect("take");
    assert_eq!(leased.len(), 1);
    b.bury("evt_dead", &leased[0].token, "downstream 500")
        .await
        .expect("bury");
    for i in 0..3 {
        b.accept(&airmy_verify_inbox::conformance::delivery(
            &format!("evt_failed_{i}"),
            "run.failed",
        ))
        .await
        .expect("accept");
    }
    b.accept(&airmy_verify_inbox::conformance::delivery(
        "evt_completed",
        "run.completed",
    ))
    .await
    .expect("accept");
}

/// The audit events captured, as (actor, action, subject, count).
fn audited(capture: &SpanCapture) -> Vec<(String, String, String, String)> {
    capture
        .events()
        .into_iter()
        .filter(|e: &CapturedEvent| e.message == "inbox action")
        .map(|e| {
            let f = |name: &str| e.fields.get(name).cloned().unwrap_or_default();
            (f("actor"), f("action"), f("subject"), f("count"))
        })
        .collect()
}

fn operator(
    method: &'static str,
    path: &'static str,
    alice: &'static Actor,
) -> ConsoleRequest<'static> {
    ConsoleRequest::new(method, path).actor(alice)
}

/// The whole round on one backend: an operator named by the application's auth pauses, a
/// read-only one is refused, the overview shows the pauses, the held entries and the audit.
async fn pause_resume_and_audit(inbox: Inbox) {
    static ALICE: std::sync::LazyLock<Actor> =
        std::sync::LazyLock::new(|| Actor::new("alice@example.com", Role::Operator));
    static VIEWER: std::sync::LazyLock<Actor> =
        std::sync::LazyLock::new(|| Actor::new("victor@example.com", Role::ReadOnly));
    fill(inbox.backend()).await;
    let console = Console::new(inbox.clone());
    let (capture, _guard) = SpanCapture::install();

    let overview = text(&console.handle(operator("GET", "/", &ALICE)).await);
    assert!(overview.contains("id=\"no-pause\""), "{overview}");
    assert!(
        overview.contains("id=\"pause-type\""),
        "an operator has the pause forms"
    );
    let csrf = form_token(&overview);

    // Without the token, or sent from another site: refused, nothing paused.
    for (form, site) in [
        ("type=run.failed".to_owned(), None),
        ("type=run.failed&csrf=forged".to_owned(), None),
        (format!("type=run.failed&csrf={csrf}"), Some("cross-site")),
    ] {
        let refused = console
            .handle(
                operator("POST", "/pause", &ALICE)
                    .body(form.as_bytes())
                    .fetch_site(site),
            )
            .await;
        assert_eq!(refused.status, 403, "{form} {site:?}");
    }
    assert!(inbox.admin().paused().await.expect("paused").is_empty());

    // A read-only operator: the state, no form, 403 on both actions.
    let pause_form = format!("type=run.failed&csrf={csrf}");
    let refused = console
        .handle(operator("POST", "/pause", &VIEWER).body(pause_form.as_bytes()))
        .await;
    assert_eq!(refused.status, 403);

    // The operator pauses run.failed: its three pending entries held.
    let paused = console
        .handle(operator("POST", "/pause", &ALICE).body(pause_form.as_bytes()))
        .await;
    assert_eq!(paused.status, 303, "{}", text(&paused));
    let stats = inbox.admin().stats().await.expect("stats");
    assert_eq!((stats.paused, stats.pending), (3, 1));
    let pauses = inbox.admin().paused().await.expect("paused");
    assert_eq!(pauses.len(), 1);
    assert_eq!(pauses[0].scope, PauseScope::event_type("run.failed"));

    let resume_form = format!("scope={}&csrf={csrf}", enc("type:run.failed"));
    let refused = console
        .handle(operator("POST", "/resume", &VIEWER).body(resume_form.as_bytes()))
        .await;
    assert_eq!(refused.status, 403);
    let seen = text(&console.handle(operator("GET", "/", &VIEWER)).await);
    assert!(seen.contains("id=\"paused-count\""), "{seen}");
    assert!(
        seen.contains("<strong>3</strong> entries held by a pause"),
        "{seen}"
    );
    assert!(
        seen.contains("<strong class=\"type\">run.failed</strong>"),
        "{seen}"
    );
    assert!(
        !seen.contains("method=\"post\""),
        "a read-only operator sees no form: {seen}"
    );
    assert!(!seen.contains("id=\"pause-type\""));

    // The paused entries are listed as paused.
    let listed = text(
        &console
            .handle(operator("GET", "/entries", &ALICE).query("state=paused"))
            .await,
    );
    for id in ["evt_failed_0", "evt_failed_1", "evt_failed_2"] {
        assert!(listed.contains(id), "{id}: {listed}");
    }
    assert!(!listed.contains("evt_completed"));

    // Everything paused too, then both resumed.
    let all = format!("all=yes&csrf={csrf}");
    let paused = console
        .handle(operator("POST", "/pause", &ALICE).body(all.as_bytes()))
        .await;
    assert_eq!(paused.status, 303);
    assert_eq!(inbox.admin().stats().await.expect("stats").paused, 4);
    let overview = text(&console.handle(operator("GET", "/", &ALICE)).await);
    assert!(
        overview.contains("<strong>everything</strong>"),
        "{overview}"
    );
    assert!(
        overview.contains("value=\"*\""),
        "a resume form for everything"
    );
    for scope in ["*", "type:run.failed"] {
        let form = format!("scope={}&csrf={csrf}", enc(scope));
        let resumed = console
            .handle(operator("POST", "/resume", &ALICE).body(form.as_bytes()))
            .await;
        assert_eq!(resumed.status, 303, "{scope}: {}", text(&resumed));
    }
    let stats = inbox.admin().stats().await.expect("stats");
    assert_eq!((stats.paused, stats.pending), (0, 4));
    assert!(inbox.admin().paused().await.expect("paused").is_empty());

    // A replay and a replay of every dead letter, and a purge.
    let replay = format!("id=evt_dead&csrf={csrf}");
    let replayed = console
        .handle(operator("POST", "/replay", &ALICE).body(replay.as_bytes()))
        .await;
    assert_eq!(replayed.status, 303, "{}", text(&replayed));
    let purge = format!("before=2000-01-01T00:00:00Z&csrf={csrf}");
    let purged = console
        .handle(operator("POST", "/purge", &ALICE).body(purge.as_bytes()))
        .await;
    assert_eq!(purged.status, 200, "{}", text(&purged));

    let events = audited(&capture);
    let alice = "alice@example.com".to_owned();
    assert_eq!(
        events,
        vec![
            (
                alice.clone(),
                "pause".into(),
                "event type run.failed".into(),
                "3".into()
            ),
            (
                alice.clone(),
                "pause".into(),
                "every event type".into(),
                "1".into()
            ),
            (
                alice.clone(),
                "resume".into(),
                "every event type".into(),
                "1".into()
            ),
            (
                alice.clone(),
                "resume".into(),
                "event type run.failed".into(),
                "3".into()
            ),
            (
                alice.clone(),
                "replay".into(),
                "evt_dead".into(),
                "1".into()
            ),
            (
                alice.clone(),
                "purge".into(),
                "done entries processed before 2000-01-01T00:00:00Z".into(),
                "0".into()
            ),
        ],
        "one audit event per action, none for the refused ones"
    );

    // The overview lists them, newest first, for both roles.
    let seen = text(&console.handle(operator("GET", "/", &VIEWER)).await);
    let table = &seen[seen.find("id=\"actions\"").expect("the recent actions")..];
    let order: Vec<usize> = ["purge", "replay", "resume", "pause"]
        .iter()
        .map(|kind| table.find(&format!("class=\"action {kind}\"")).expect(kind))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "newest first: {order:?}"
    );
    assert_eq!(table.matches("alice@example.com").count(), 6);
    let kept = inbox.admin().recent_actions(10).await.expect("recent");
    assert_eq!(kept.len(), 6);
    assert_eq!(kept[0].actor, "alice@example.com");
}

#[tokio::test(flavor = "current_thread")]
async fn pause_resume_and_audit_on_sqlite() {
    let (inbox, _dir) = sqlite("round");
    pause_resume_and_audit(inbox).await;
}

#[tokio::test(flavor = "current_thread")]
async fn pause_resume_and_audit_on_redis() {
    let server = test_support::RedisServer::start();
    let backend = airmy_verify_inbox::RedisBackend::connect(
        server.url(),
        airmy_verify_inbox::RedisOptions::default().prefix(format!(
            "console-pause-{}",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        )),
    )
    .await
    .expect("connects");
    pause_resume_and_audit(Inbox::new(backend)).await;
}

/// With the built-in login: a login and a failed login are audited (the session's actor is
/// its token's role; the failed one's actor unknown, and the token nowhere), and a read-only
/// session's actions are refused without an audit event; an operator session's replay of
/// every dead letter is audited with its role's name.
#[tokio::test(flavor = "current_thread")]
async fn the_built_in_login_names_its_sessions_in_the_audit() {
    let (inbox, _dir) = sqlite("login");
    fill(inbox.backend()).await;
    let login = Login::new(Token::new("the-operators-token-0123").expect("token"))
        .read_only(Token::new("the-read-only-token-4567").expect("token"))
        .failure_delay(Duration::from_millis(50));
    let console = Console::new(inbox.clone()).login(login);
    let (capture, _guard) = SpanCapture::install();
    let post = |path: &'static str, form: String, cookie: Option<String>| {
        let console = console.clone();
        async move {
            console
                .handle(
                    ConsoleRequest::new("POST", path)
                        .body(form.as_bytes())
                        .fetch_site(Some("same-origin"))
                        .cookie(cookie.as_deref()),
                )
                .await
        }
    };
    let wrong = post("/login", "token=not-the-token-at-all-000".into(), None).await;
    assert_eq!(wrong.status, 401);
    let mut cookies = Vec::new();
    for given in ["the-read-only-token-4567", "the-operators-token-0123"] {
        let answer = post("/login", format!("token={given}"), None).await;
        assert_eq!(answer.status, 303);
        let set = answer
            .headers
            .iter()
            .find(|(k, _)| *k == "set-cookie")
            .map(|(_, v)| v.split(';').next().expect("pair").to_owned())
            .expect("a session cookie");
        cookies.push(set);
    }
    let page = |cookie: &str| {
        let console = console.clone();
        let cookie = cookie.to_owned();
        async move {
            text(
                &console
                    .handle(ConsoleRequest::new("GET", "/").cookie(Some(&cookie)))
                    .await,
            )
        }
    };
    let viewer_csrf = form_token(&page(&cookies[0]).await);
    let refused = post(
        "/replay-dead",
        format!("confirm=yes&csrf={viewer_csrf}"),
        Some(cookies[0].clone()),
    )
    .await;
    assert_eq!(refused.status, 403);
    let operator_csrf = form_token(&page(&cookies[1]).await);
    let done = post(
        "/replay-dead",
        format!("confirm=yes&csrf={operator_csrf}"),
        Some(cookies[1].clone()),
    )
    .await;
    assert_eq!(done.status, 200, "{}", text(&done));

    let events = audited(&capture);
    assert_eq!(
        events,
        vec![
            (
                "unknown".into(),
                "login_failed".into(),
                "the console".into(),
                "0".into()
            ),
            (
                "read-only".into(),
                "login".into(),
                "the console".into(),
                "0".into()
            ),
            (
                "operator".into(),
                "login".into(),
                "the console".into(),
                "0".into()
            ),
            (
                "operator".into(),
                "replay_dead".into(),
                "every dead letter".into(),
                "1".into()
            ),
        ]
    );
    let everything = format!("{:?}", capture.events());
    assert!(
        !everything.contains("not-the-token-at-all"),
        "the wrong token is never logged"
    );
    let seen = page(&cookies[0]).await;
    for kind in ["login_failed", "login", "replay_dead"] {
        assert!(
            seen.contains(&format!("class=\"action {kind}\"")),
            "{kind}: {seen}"
        );
    }
}

/// The chart of the last hour after a known set: seven accepts (and a duplicate), three
/// handled, two failed (a retry and a dead letter), one released (not counted). The overview
/// draws each line with sixty points, one per minute, and states the totals.
async fn the_chart_counts_the_last_hour(inbox: Inbox) {
    let b = inbox.backend();
    for i in 0..7 {
        b.accept(&airmy_verify_inbox::conformance::delivery(
            &format!("evt_chart_{i}"),
            "run.completed",
        ))
        .await
        .expect("accept");
    }
    b.accept(&airmy_verify_inbox::conformance::delivery(
        "evt_chart_0",
        "run.completed",
    ))
    .await
    .expect("a duplicate");
    let mut leased = b.take(6, Duration::from_secs(60)).await.expect("take");
    assert_eq!(leased.len(), 6);
    leased.sort_by(|a, b| a.id.cmp(&b.id));
    for l in &leased[..3] {
        assert!(b.complete(&l.id, &l.token).await.expect("complete"));
    }
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert!(
        b.retry(&leased[3].id, &leased[3].token, "503", later)
            .await
            .expect("retry")
    );
    assert!(
        b.bury(&leased[4].id, &leased[4].token, "400")
            .await
            .expect("bury")
    );
    assert!(
        b.release(&leased[5].id, &leased[5].token)
            .await
            .expect("release")
    );

    let activity = inbox.admin().activity().await.expect("activity");
    assert_eq!(activity.minutes.len(), 60);
    assert_eq!(activity.totals(), (7, 3, 2));

    let console = Console::new(inbox.clone());
    let page = console.handle(ConsoleRequest::new("GET", "/")).await;
    assert_eq!(page.status, 200);
    let html = text(&page);
    assert!(
        html.contains("<svg id=\"chart\""),
        "an inline SVG chart: {html}"
    );
    for (line, total) in [("accepted", 7), ("handled", 3), ("failed", 2)] {
        assert!(
            html.contains(&format!("<strong id=\"total-{line}\">{total}</strong>")),
            "{line} {total}: {html}"
        );
        let start = html
            .find(&format!("id=\"line-{line}\""))
            .unwrap_or_else(|| panic!("the {line} line"));
        let points_at = html[start..].find("points=\"").expect("points") + start + 8;
        let end = html[points_at..].find('"').expect("end") + points_at;
        let points: Vec<(f64, f64)> = html[points_at..end]
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect();
        assert_eq!(points.len(), 60, "{line}: one point per minute");
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "left to right");
        // The baseline is the lowest point; the count of this hour lifts at least one above it.
        let baseline = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        assert!(
            points.iter().any(|p| p.1 < baseline),
            "{line}: a point above zero"
        );
    }
    assert!(!html.contains("<script"), "no script");
    let csp = page
        .headers
        .iter()
        .find(|(k, _)| *k == "content-security-policy")
        .map(|(_, v)| v.as_str())
        .expect("a CSP");
    assert!(csp.contains("script-src 'none'"), "{csp}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_chart_counts_the_last_hour_on_sqlite() {
    let (inbox, _dir) = sqlite("chart");
    the_chart_counts_the_last_hour(inbox).await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_chart_counts_the_last_hour_on_redis() {
    let server = test_support::RedisServer::start();
    let backend = airmy_verify_inbox::RedisBackend::connect(
        server.url(),
        airmy_verify_inbox::RedisOptions::default().prefix(format!(
            "console-chart-{}",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        )),
    )
    .await
    .expect("connects");
    the_chart_counts_the_last_hour(Inbox::new(backend)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_counts_the_last_hour_on_postgres() {
    let server = test_support::PostgresServer::start();
    let schema = format!(
        "console_chart_{}",
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let backend = airmy_verify_inbox::PgBackend::connect(
        server.url(),
        airmy_verify_inbox::PgOptions::default().schema(schema),
    )
    .await
    .expect("connects");
    the_chart_counts_the_last_hour(Inbox::new(backend)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_chart_counts_the_last_hour_in_memory() {
    let backend =
        airmy_verify_inbox::MemoryBackend::new(airmy_verify_inbox::MemoryOptions::default());
    the_chart_counts_the_last_hour(Inbox::new(backend)).await;
}
