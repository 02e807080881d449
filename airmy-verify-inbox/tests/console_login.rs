//! The console's built-in login (feature `console`), through `Console::handle` on a real
//! SQLite inbox: a session and its expiry, logout, a rotated token ending old sessions, wrong
//! tokens (of the right length and of others) refused, slowed and counted (the
//! `airmy_webhook_console_logins_total` counter, a `tracing` event without the token), the
//! read-only token's sessions refused on every action, and two consoles with the same tokens
//! (two replicas) accepting each other's sessions and forms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use airmy_verify_inbox::console::{Console, ConsoleRequest, ConsoleResponse, Login, Token};
use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions};
use test_support::spans::SpanCapture;

const OPERATOR: &str = "the-operators-token-0123";
const READ_ONLY: &str = "the-read-only-token-4567";
/// The failure delay of these tests' logins.
const DELAY: Duration = Duration::from_millis(300);

/// One test at a time: the login counter is the process's, and each test counts logins.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn token(text: &str) -> Token {
    Token::new(text).expect("long enough")
}

/// A console at `/ops` on an inbox in a temp dir holding one dead letter, `evt_dead`.
struct Fixture {
    console: Console,
    login: Login,
    inbox: Inbox,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture(name: &str, login: Login) -> Fixture {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let dir = std::env::temp_dir().join(format!(
        "airmy-console-login-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let b = inbox.backend();
    b.accept(&airmy_verify_inbox::conformance::delivery(
        "evt_dead",
        "run.failed",
    ))
    .await
    .expect("accept");
    let leased = b.take(1, Duration::from_secs(60)).await.expect("take");
    b.bury("evt_dead", &leased[0].token, "downstream 500")
        .await
        .expect("bury");
    Fixture {
        console: Console::new(inbox.clone()).login(login.clone()),
        login,
        inbox,
        dir,
    }
}

fn login() -> Login {
    Login::new(token(OPERATOR))
        .read_only(token(READ_ONLY))
        .failure_delay(DELAY)
}

fn text(response: &ConsoleResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

fn header<'r>(response: &'r ConsoleResponse, name: &str) -> Option<&'r str> {
    response
        .headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

async fn get(console: &Console, path_and_query: &str, cookie: Option<&str>) -> ConsoleResponse {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    console
        .handle(
            ConsoleRequest::new("GET", path)
                .base("/ops")
                .query(query)
                .cookie(cookie),
        )
        .await
}

async fn post(console: &Console, path: &str, form: &str, cookie: Option<&str>) -> ConsoleResponse {
    console
        .handle(
            ConsoleRequest::new("POST", path)
                .base("/ops")
                .body(form.as_bytes())
                .fetch_site(Some("same-origin"))
                .cookie(cookie),
        )
        .await
}

/// `POST /login` with `given`: the `name=value` pair of the session cookie set.
async fn log_in(console: &Console, given: &str) -> String {
    let form = format!("token={}", enc(given));
    let answer = post(console, "/login", &form, None).await;
    assert_eq!(answer.status, 303, "{}", text(&answer));
    assert_eq!(header(&answer, "location"), Some("/ops"));
    let set = header(&answer, "set-cookie").expect("a session cookie");
    set.split(';').next().expect("name=value").to_owned()
}

/// The form token in a page.
fn form_token(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a token field") + 19;
    let len = html[start..].find('"').expect("the value's end");
    html[start..start + len].to_owned()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_login_opens_a_session_until_it_expires() {
    let _one = ONE_AT_A_TIME.lock().await;
    let f = fixture(
        "expiry",
        login().session_lifetime(Duration::from_millis(1500)),
    )
    .await;
    for path in [
        "/",
        "/entries?state=dead",
        "/entry?id=evt_dead",
        "/replay-dead",
    ] {
        let page = get(&f.console, path, None).await;
        assert_eq!(page.status, 401, "{path}");
        let html = text(&page);
        assert!(
            html.contains("name=\"token\"") && html.contains("action=\"/ops/login\""),
            "{html}"
        );
        assert!(!html.contains("csrf"), "no form token before a login");
    }
    let refused = post(&f.console, "/replay", "id=evt_dead", None).await;
    assert_eq!(refused.status, 401, "no action without a session");
    let page = get(&f.console, "/login", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(get(&f.console, "/console.css", None).await.status, 200);

    let answer = post(&f.console, "/login", &format!("token={OPERATOR}"), None).await;
    let set = header(&answer, "set-cookie").expect("a cookie").to_owned();
    assert!(
        set.starts_with("airmy_console=")
            && set.contains("; Path=/ops;")
            && set.contains("; Max-Age=1;")
            && set.contains("; HttpOnly")
            && set.contains("; SameSite=Strict")
            && !set.contains("Secure"),
        "{set}"
    );
    assert!(!set.contains(OPERATOR), "never the token: {set}");
    let cookie = set.split(';').next().expect("pair").to_owned();
    let started = Instant::now();
    let page = get(&f.console, "/", Some(&cookie)).await;
    assert_eq!(page.status, 200, "{}", text(&page));
    assert!(text(&page).contains("id=\"logout\""), "a logout button");
    // Among other cookies, in any order.
    let among = format!("theme=dark; {cookie}; other=1");
    assert_eq!(
        get(&f.console, "/entries?state=dead", Some(&among))
            .await
            .status,
        200
    );
    assert_eq!(
        get(
            &f.console,
            "/",
            Some("airmy_console=o.99999999999999.00.00")
        )
        .await
        .status,
        401,
        "a forged cookie"
    );
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(started.elapsed())).await;
    let expired = get(&f.console, "/", Some(&cookie)).await;
    assert_eq!(expired.status, 401, "expired after its lifetime");
    assert!(text(&expired).contains("name=\"token\""));

    let secure = fixture("secure", login().secure_cookie(true)).await;
    let answer = post(
        &secure.console,
        "/login",
        &format!("token={OPERATOR}"),
        None,
    )
    .await;
    let set = header(&answer, "set-cookie").expect("a cookie");
    assert!(
        set.ends_with("; Secure") && set.contains("Max-Age=43200"),
        "12 h by default: {set}"
    );
}

#[tokio::test]
async fn logout_expires_the_cookie_and_needs_the_form_token() {
    let _one = ONE_AT_A_TIME.lock().await;
    let f = fixture("logout", login()).await;
    let cookie = log_in(&f.console, OPERATOR).await;
    let page = text(&get(&f.console, "/", Some(&cookie)).await);
    let csrf = form_token(&page);
    assert_eq!(
        post(&f.console, "/logout", "", Some(&cookie)).await.status,
        403,
        "no form token"
    );
    let out = post(
        &f.console,
        "/logout",
        &format!("csrf={csrf}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(out.status, 303);
    assert_eq!(header(&out, "location"), Some("/ops/login"));
    let set = header(&out, "set-cookie").expect("the cookie expired");
    assert!(
        set.starts_with("airmy_console=;")
            && set.contains("Max-Age=0")
            && set.contains("Path=/ops"),
        "{set}"
    );
    // The browser drops the cookie: the next page asks for a login.
    assert_eq!(get(&f.console, "/", None).await.status, 401);
}

#[tokio::test]
async fn a_rotated_token_ends_the_sessions_and_forms_of_the_old_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let f = fixture("rotate", login()).await;
    let operator = log_in(&f.console, OPERATOR).await;
    let viewer = log_in(&f.console, READ_ONLY).await;
    let csrf = form_token(&text(&get(&f.console, "/", Some(&operator)).await));

    // From the application's own clone of the login (a reload handler), not the console's.
    f.login.rotate(token("the-new-operators-token-89"), None);
    assert_eq!(get(&f.console, "/", Some(&operator)).await.status, 401);
    assert_eq!(get(&f.console, "/", Some(&viewer)).await.status, 401);
    let old = post(&f.console, "/login", &format!("token={OPERATOR}"), None).await;
    assert_eq!(old.status, 401, "the old token no longer logs in");
    let old = post(&f.console, "/login", &format!("token={READ_ONLY}"), None).await;
    assert_eq!(old.status, 401, "nor the dropped read-only one");
    let fresh = log_in(&f.console, "the-new-operators-token-89").await;
    assert_eq!(get(&f.console, "/", Some(&fresh)).await.status, 200);
    // A form rendered before the rotation, sent with the new session: refused.
    let stale = post(
        &f.console,
        "/replay",
        &format!("id=evt_dead&csrf={csrf}"),
        Some(&fresh),
    )
    .await;
    assert_eq!(stale.status, 403);
    assert_eq!(f.inbox.admin().stats().await.expect("stats").dead, 1);
}

/// The counts of `airmy_webhook_console_logins_total` by label set, from a recorder installed
/// once for this test binary.
fn logins() -> BTreeMap<String, u64> {
    counting().0.lock().expect("counts").clone()
}

#[derive(Clone, Default)]
struct Counting(Arc<Mutex<BTreeMap<String, u64>>>);

struct Count(Arc<Mutex<BTreeMap<String, u64>>>, String);

impl metrics::CounterFn for Count {
    fn increment(&self, value: u64) {
        *self
            .0
            .lock()
            .expect("counts")
            .entry(self.1.clone())
            .or_default() += value;
    }

    fn absolute(&self, value: u64) {
        self.0.lock().expect("counts").insert(self.1.clone(), value);
    }
}

impl metrics::Recorder for Counting {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        metrics::Counter::from_arc(Arc::new(Count(self.0.clone(), name)))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

fn counting() -> &'static Counting {
    static RECORDER: OnceLock<Counting> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = Counting::default();
        metrics::set_global_recorder(recorder.clone()).expect("the only recorder");
        recorder
    })
}

#[tokio::test]
async fn wrong_tokens_are_refused_slowed_and_counted_without_the_token() {
    let _one = ONE_AT_A_TIME.lock().await;
    const FAILURE: &str = "airmy_webhook_console_logins_total{result=failure}";
    const SUCCESS: &str = "airmy_webhook_console_logins_total{result=success}";
    counting();
    let f = fixture("wrong", login()).await;
    let (capture, _guard) = SpanCapture::install();
    let before = logins();
    let wrong = [
        // The right length, one character off; a prefix; longer; empty; no field at all.
        "token=the-operators-token-0124".to_owned(),
        "token=the-operators-token-012".to_owned(),
        format!("token={OPERATOR}{OPERATOR}"),
        "token=".to_owned(),
        "other=x".to_owned(),
        format!("token={}", enc(&OPERATOR.to_uppercase())),
    ];
    for form in &wrong {
        let started = Instant::now();
        let answer = post(&f.console, "/login", form, None).await;
        assert_eq!(answer.status, 401, "{form}");
        assert!(header(&answer, "set-cookie").is_none(), "{form}");
        assert!(text(&answer).contains("id=\"login-failed\""), "{form}");
        assert!(
            started.elapsed() >= DELAY,
            "{form}: answered after the delay"
        );
    }
    // Failures wait one at a time: two at once take two delays.
    let started = Instant::now();
    let (a, b) = tokio::join!(
        post(&f.console, "/login", "token=guess-number-one-000", None),
        post(&f.console, "/login", "token=guess-number-two-000", None),
    );
    assert_eq!((a.status, b.status), (401, 401));
    assert!(started.elapsed() >= 2 * DELAY, "{:?}", started.elapsed());
    let _ = log_in(&f.console, OPERATOR).await;

    let after = logins();
    let delta =
        |key: &str| after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0);
    assert_eq!(delta(FAILURE), wrong.len() as u64 + 2, "{after:?}");
    assert_eq!(delta(SUCCESS), 1, "{after:?}");
    let events = capture.events();
    let refused = events
        .iter()
        .filter(|e| e.message.contains("console login refused"))
        .count();
    assert_eq!(refused, wrong.len() + 2, "{events:?}");
    let logged = format!("{events:?}");
    for secret in [OPERATOR, "the-operators-token-0124", "guess-number-one"] {
        assert!(!logged.contains(secret), "a token in the logs: {logged}");
    }
    // From another site: refused at once, not a guess.
    let cross = f
        .console
        .handle(
            ConsoleRequest::new("POST", "/login")
                .base("/ops")
                .body(format!("token={OPERATOR}").as_bytes())
                .fetch_site(Some("cross-site")),
        )
        .await;
    assert_eq!(cross.status, 403);
}

#[tokio::test]
async fn a_read_only_session_sees_every_page_and_is_refused_on_every_action() {
    let _one = ONE_AT_A_TIME.lock().await;
    let f = fixture("viewer", login()).await;
    let viewer = log_in(&f.console, READ_ONLY).await;
    let mut csrf = String::new();
    for path in [
        "/",
        "/entries?state=dead",
        "/entry?id=evt_dead",
        "/replay-dead",
    ] {
        let page = get(&f.console, path, Some(&viewer)).await;
        assert_eq!(page.status, 200, "{path}");
        let html = text(&page);
        assert!(html.contains("id=\"role\""), "{path}: says read-only");
        // One form: the logout.
        assert_eq!(
            html.matches("<form method=\"post\"").count(),
            0,
            "{path}: {html}"
        );
        assert_eq!(html.matches("method=\"post\"").count(), 1, "{path}: {html}");
        assert!(html.contains("action=\"/ops/logout\""), "{path}");
        for action in [
            "id=\"replay\"",
            "id=\"confirm\"",
            ">Purge<",
            "Replay every dead letter…",
        ] {
            assert!(!html.contains(action), "{path}: {action}");
        }
        csrf = form_token(&html);
    }
    for (path, form) in [
        ("/replay", format!("id=evt_dead&csrf={csrf}")),
        ("/replay-dead", format!("confirm=yes&csrf={csrf}")),
        (
            "/purge",
            format!("before=2999-01-01T00:00:00Z&force=yes&csrf={csrf}"),
        ),
        ("/replay", "id=evt_dead".to_owned()),
    ] {
        let refused = post(&f.console, path, &form, Some(&viewer)).await;
        assert_eq!(refused.status, 403, "{path} {form}");
    }
    let stats = f.inbox.admin().stats().await.expect("stats");
    assert_eq!(stats.dead, 1, "nothing replayed");
    // The operator's session acts; the viewer may still log out.
    let operator = log_in(&f.console, OPERATOR).await;
    let csrf = form_token(&text(
        &get(&f.console, "/entry?id=evt_dead", Some(&operator)).await,
    ));
    let replayed = post(
        &f.console,
        "/replay",
        &format!("id=evt_dead&csrf={csrf}"),
        Some(&operator),
    )
    .await;
    assert_eq!(replayed.status, 303, "{}", text(&replayed));
    let viewer_csrf = form_token(&text(&get(&f.console, "/", Some(&viewer)).await));
    let out = post(
        &f.console,
        "/logout",
        &format!("csrf={viewer_csrf}"),
        Some(&viewer),
    )
    .await;
    assert_eq!(out.status, 303);
    // A form token is bound to its session: the viewer's does not work in the operator's.
    let crossed = post(
        &f.console,
        "/purge",
        &format!("before=2001-01-01T00:00:00Z&csrf={viewer_csrf}"),
        Some(&operator),
    )
    .await;
    assert_eq!(crossed.status, 403);
}

/// Two consoles (two replicas) with the same tokens and no secret: a session opened on one
/// and a form rendered by one are good on the other.
#[tokio::test]
async fn replicas_with_the_same_tokens_share_sessions_and_forms() {
    let _one = ONE_AT_A_TIME.lock().await;
    let f = fixture("replicas", login()).await;
    let other = Console::new(f.inbox.clone()).login(login());
    let cookie = log_in(&f.console, OPERATOR).await;
    let page = get(&other, "/entry?id=evt_dead", Some(&cookie)).await;
    assert_eq!(page.status, 200);
    let csrf = form_token(&text(&page));
    let replayed = post(
        &f.console,
        "/replay",
        &format!("id=evt_dead&csrf={csrf}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(replayed.status, 303, "{}", text(&replayed));
    let elsewhere =
        Console::new(f.inbox.clone()).login(Login::new(token("another-fleets-token-000")));
    assert_eq!(get(&elsewhere, "/", Some(&cookie)).await.status, 401);
}
