//! The web console (feature `console`) on a real SQLite inbox, through its framework-free
//! `Console::handle`: hostile content escaped, a GET never changes anything, POSTs need the
//! CSRF token, the purge window rule, links under the mount path, and no panic on odd input.

use std::time::Duration;

use airmy_verify::testing::{self, FixedClock};
use airmy_verify::{Verified, Verifier};
use airmy_verify_inbox::console::{Console, ConsoleRequest, ConsoleResponse};
use airmy_verify_inbox::{Inbox, SqliteBackend, SqliteOptions, Stats};
use proptest::prelude::*;
use time::OffsetDateTime;

const HOSTILE_ID: &str = "evt_<script>alert(1)</script>\"'&";
const HOSTILE_TYPE: &str = "x.<img src=x onerror=alert(2)>";

fn hostile() -> Verified {
    let signed = testing::sample_event(HOSTILE_TYPE)
        .id(HOSTILE_ID)
        .created_at(testing::fixed_now())
        .data(serde_json::json!({"note": "</pre><script>alert(3)</script><b>bold</b>"}))
        .signed(testing::SECRET);
    Verifier::builder(airmy_verify::Secret::new(testing::SECRET).expect("secret"))
        .clock(FixedClock(testing::fixed_now()))
        .build()
        .verify(&signed.signature, signed.body)
        .expect("verifies")
}

struct Fixture {
    console: Console,
    inbox: Inbox,
    _dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// An inbox holding the hostile entry as a dead letter (error text hostile too), and one
/// processed entry.
async fn fixture(name: &str) -> Fixture {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let dir = std::env::temp_dir().join(format!(
        "airmy-console-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let inbox = Inbox::new(
        SqliteBackend::open(dir.join("inbox.db"), SqliteOptions::default()).expect("opens"),
    );
    let b = inbox.backend();
    b.accept(&hostile()).await.expect("accept");
    b.accept(&airmy_verify_inbox::conformance::delivery(
        "evt_done",
        "run.completed",
    ))
    .await
    .expect("accept");
    for leased in b.take(10, Duration::from_secs(60)).await.expect("take") {
        if leased.id == HOSTILE_ID {
            b.bury(
                &leased.id,
                &leased.token,
                "<script>alert(4)</script> from the pager",
            )
            .await
            .expect("bury");
        } else {
            b.complete(&leased.id, &leased.token)
                .await
                .expect("complete");
        }
    }
    Fixture {
        console: Console::new(inbox.clone()),
        inbox,
        _dir: dir,
    }
}

async fn get(console: &Console, base: &str, path_and_query: &str) -> ConsoleResponse {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    console
        .handle(ConsoleRequest::new("GET", path).base(base).query(query))
        .await
}

async fn post(
    console: &Console,
    path: &str,
    form: &str,
    fetch_site: Option<&str>,
) -> ConsoleResponse {
    console
        .handle(
            ConsoleRequest::new("POST", path)
                .body(form.as_bytes())
                .fetch_site(fetch_site),
        )
        .await
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

/// The CSRF token written into the overview's forms.
async fn token(console: &Console) -> String {
    let page = text(&get(console, "", "/").await);
    let start = page.find("name=\"csrf\" value=\"").expect("a token field") + 19;
    let len = page[start..].find('"').expect("the value's end");
    page[start..start + len].to_owned()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn hostile_ids_types_errors_and_bodies_are_escaped_everywhere() {
    let f = fixture("hostile").await;
    let pages = [
        get(&f.console, "", "/entries?state=dead").await,
        get(&f.console, "", &format!("/entry?id={}", enc(HOSTILE_ID))).await,
    ];
    for page in &pages {
        assert_eq!(page.status, 200, "{}", text(page));
        let html = text(page);
        assert!(!html.contains("<script"), "no raw script tag: {html}");
        assert!(!html.contains("<img"), "no raw img tag: {html}");
        assert!(!html.contains("<b>"), "{html}");
        let csp = header(page, "content-security-policy").expect("a CSP");
        assert!(
            csp.contains("script-src 'none'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert_eq!(header(page, "x-content-type-options"), Some("nosniff"));
    }
    let entry = text(&pages[1]);
    assert!(
        entry.contains("evt_&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"),
        "{entry}"
    );
    assert!(
        entry.contains("&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;"),
        "the body as text: {entry}"
    );
    assert!(
        entry.contains("&lt;script&gt;alert(4)&lt;/script&gt; from the pager"),
        "{entry}"
    );
    assert!(
        entry.contains("<pre id=\"body\">{\n  &quot;id&quot;: "),
        "the body indented, in its own key order (id first): {entry}"
    );
}

#[tokio::test]
async fn a_get_never_changes_anything() {
    let f = fixture("get").await;
    let before: Stats = f.inbox.admin().stats().await.expect("stats");
    for path in [
        "/",
        "/entries?state=dead",
        "/entries?state=done&order=newest",
        "/replay-dead",
        &format!("/entry?id={}", enc(HOSTILE_ID)),
        "/replay?id=evt_done",
        "/purge?before=2999-01-01T00:00:00Z&force=yes",
    ] {
        let response = get(&f.console, "", path).await;
        assert!(response.status < 500, "{path}: {}", response.status);
    }
    assert_eq!(
        f.inbox.admin().stats().await.expect("stats").dead,
        before.dead
    );
    assert_eq!(
        f.inbox.admin().stats().await.expect("stats").done,
        before.done
    );
    let refused = get(&f.console, "", "/replay?id=evt_done").await;
    assert_eq!(refused.status, 405, "an action is a POST");
}

#[tokio::test]
async fn actions_need_the_csrf_token_and_a_same_origin_request() {
    let f = fixture("csrf").await;
    let id = enc(HOSTILE_ID);
    for (form, site) in [
        (format!("id={id}"), None),
        (format!("id={id}&csrf=00"), None),
        (format!("id={id}&csrf={}", "0".repeat(64)), None),
        (
            format!("id={id}&csrf={}", token(&f.console).await),
            Some("cross-site"),
        ),
    ] {
        let response = post(&f.console, "/replay", &form, site).await;
        assert_eq!(response.status, 403, "{form} {site:?}");
    }
    assert_eq!(
        f.inbox.admin().stats().await.expect("stats").dead,
        1,
        "nothing replayed"
    );

    let csrf = token(&f.console).await;
    let replayed = post(
        &f.console,
        "/replay",
        &format!("id={id}&csrf={csrf}"),
        Some("same-origin"),
    )
    .await;
    assert_eq!(replayed.status, 303, "{}", text(&replayed));
    let location = header(&replayed, "location").expect("to the entry");
    assert!(
        location.starts_with("/entry?id=evt_%3Cscript") && location.ends_with("&replayed=1"),
        "{location}"
    );
    let stats = f.inbox.admin().stats().await.expect("stats");
    assert_eq!((stats.dead, stats.pending), (0, 1), "replayed");
    let again = post(
        &f.console,
        "/replay",
        &format!("id=evt_unknown&csrf={csrf}"),
        None,
    )
    .await;
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn replay_every_dead_letter_needs_the_confirmation() {
    let f = fixture("replay-dead").await;
    let csrf = token(&f.console).await;
    let unconfirmed = post(&f.console, "/replay-dead", &format!("csrf={csrf}"), None).await;
    assert_eq!(unconfirmed.status, 303, "to the confirmation page");
    assert_eq!(f.inbox.admin().stats().await.expect("stats").dead, 1);
    let confirm = text(&get(&f.console, "", "/replay-dead").await);
    assert!(
        confirm.contains("<strong>1</strong> dead letter"),
        "{confirm}"
    );
    let done = post(
        &f.console,
        "/replay-dead",
        &format!("csrf={csrf}&confirm=yes"),
        None,
    )
    .await;
    assert_eq!(done.status, 200);
    assert!(
        text(&done).contains("Replayed 1 dead letter"),
        "{}",
        text(&done)
    );
    assert_eq!(f.inbox.admin().stats().await.expect("stats").dead, 0);
}

#[tokio::test]
async fn purge_keeps_the_deduplication_window_unless_forced() {
    let f = fixture("purge").await;
    let csrf = token(&f.console).await;
    let soon = "2999-01-01T00:00:00Z";
    let refused = post(
        &f.console,
        "/purge",
        &format!("csrf={csrf}&before={soon}"),
        None,
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(
        text(&refused).contains("deduplication window"),
        "{}",
        text(&refused)
    );
    let bad = post(
        &f.console,
        "/purge",
        &format!("csrf={csrf}&before=yesterday"),
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    let old = post(
        &f.console,
        "/purge",
        &format!("csrf={csrf}&before=2001-01-01T00:00:00Z"),
        None,
    )
    .await;
    assert!(
        text(&old).contains("Purged 0 processed entries"),
        "{}",
        text(&old)
    );
    let forced = post(
        &f.console,
        "/purge",
        &format!("csrf={csrf}&before={soon}&force=yes"),
        None,
    )
    .await;
    assert!(
        text(&forced).contains("Purged 1 processed entry."),
        "{}",
        text(&forced)
    );
    assert_eq!(f.inbox.admin().stats().await.expect("stats").done, 0);
}

#[tokio::test]
async fn links_follow_the_mount_path_and_pages_follow_cursors() {
    let f = fixture("links").await;
    for i in 0..120 {
        let d =
            airmy_verify_inbox::conformance::delivery(&format!("evt_page_{i:03}"), "run.completed");
        f.inbox.accept(&d).await.expect("accept");
    }
    let first = text(&get(&f.console, "/ops/inbox", "/entries?state=pending").await);
    assert!(first.contains("href=\"/ops/inbox/console.css\""), "{first}");
    assert!(
        first.contains("href=\"/ops/inbox/entry?id=evt_page_000\""),
        "{first}"
    );
    assert!(!first.contains("evt_page_050"), "50 a page");
    let next = first
        .split("id=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a next page")
        .replace("&amp;", "&");
    let next = next.strip_prefix("/ops/inbox").expect("under the mount");
    let second = text(&get(&f.console, "/ops/inbox", next).await);
    assert!(
        second.contains("evt_page_050") && !second.contains("evt_page_049\""),
        "{second}"
    );
    let bad = get(&f.console, "", "/entries?state=pending&after=nonsense").await;
    assert_eq!(bad.status, 400);
    assert_eq!(get(&f.console, "", "/entries?state=lost").await.status, 400);
    assert_eq!(
        get(&f.console, "", "/entry?id=evt_unknown").await.status,
        404
    );
    assert_eq!(get(&f.console, "", "/entry").await.status, 400);
    assert_eq!(get(&f.console, "", "/nothing/here").await.status, 404);
    let css = get(&f.console, "", "/console.css").await;
    assert_eq!(
        header(&css, "content-type"),
        Some("text/css; charset=utf-8")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Any method, path, query and body: an answer, never a panic, never a 5xx on a sound inbox.
    #[test]
    fn any_request_gets_an_answer(
        method in prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "DELETE", "\u{0}"]),
        path in "(/|/entries|/entry|/replay|/replay-dead|/purge|/[a-z%]{0,8})",
        query in "[a-z=&%0-9<>\"]{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let f = fixture("prop").await;
            let response = f.console.handle(
                ConsoleRequest::new(method, &path).query(&query).body(&body),
            ).await;
            prop_assert!(response.status < 500, "{} {path}?{query}: {}", method, response.status);
            Ok(())
        })?;
    }
}

/// Two consoles (two replicas) on one inbox with the same `Console::secret`: a form one
/// rendered is accepted by the other. Without the secret, or with another, it is refused.
#[tokio::test]
async fn a_form_rendered_by_one_replica_is_accepted_by_another_with_the_same_secret() {
    use airmy_verify_inbox::console::Token;
    let f = fixture("replicas").await;
    let secret = || Token::new("the-fleets-console-secret-0123").expect("long enough");
    let first = Console::new(f.inbox.clone()).secret(secret());
    let second = Console::new(f.inbox.clone()).secret(secret());
    let stranger = Console::new(f.inbox.clone())
        .secret(Token::new("another-fleets-console-secret").expect("long enough"));
    let alone = Console::new(f.inbox.clone());
    let id = enc(HOSTILE_ID);
    let csrf = token(&first).await;
    for other in [&stranger, &alone] {
        let refused = post(other, "/replay", &format!("id={id}&csrf={csrf}"), None).await;
        assert_eq!(refused.status, 403, "{}", text(&refused));
        assert!(
            text(&refused).contains("Console::secret"),
            "{}",
            text(&refused)
        );
    }
    let replayed = post(&second, "/replay", &format!("id={id}&csrf={csrf}"), None).await;
    assert_eq!(replayed.status, 303, "{}", text(&replayed));
    assert_eq!(f.inbox.admin().stats().await.expect("stats").dead, 0);
    // And back: the second's form on the first.
    let csrf = token(&second).await;
    let purged = post(
        &first,
        "/purge",
        &format!("csrf={csrf}&before=2001-01-01T00:00:00Z"),
        None,
    )
    .await;
    assert_eq!(purged.status, 200, "{}", text(&purged));
}

/// A read-only operator (a role from the application's auth) sees every page, no form, and
/// every action is refused with 403, the form token notwithstanding; nothing changes.
#[tokio::test]
async fn a_read_only_operator_sees_every_page_and_no_form_and_cannot_act() {
    use airmy_verify_inbox::console::Role;
    let f = fixture("read-only").await;
    let read_only = |method: &'static str, path: &'static str| {
        ConsoleRequest::new(method, path).role(Role::ReadOnly)
    };
    for (path, query) in [
        ("/", ""),
        ("/entries", "state=dead"),
        ("/entries", "state=done"),
        ("/replay-dead", ""),
        ("/entry", "id=evt_done"),
    ] {
        let page = f.console.handle(read_only("GET", path).query(query)).await;
        assert_eq!(page.status, 200, "{path}?{query}");
        let html = text(&page);
        assert!(!html.contains("method=\"post\""), "{path}: a form: {html}");
        assert!(!html.contains("<button type=\"submit\">Purge"), "{path}");
        assert!(!html.contains("id=\"replay\""), "{path}");
        assert!(html.contains("id=\"role\""), "{path}: says read-only");
    }
    let hostile = format!("/entry?id={}", enc(HOSTILE_ID));
    let page = text(&get(&f.console, "", &hostile).await);
    assert!(
        page.contains("id=\"replay\""),
        "an operator's page has the form"
    );
    let csrf = token(&f.console).await;
    let before = f.inbox.admin().stats().await.expect("stats");
    for (path, form) in [
        ("/replay", format!("id={}&csrf={csrf}", enc(HOSTILE_ID))),
        ("/replay", format!("id=evt_done&csrf={csrf}")),
        ("/replay-dead", format!("confirm=yes&csrf={csrf}")),
        (
            "/purge",
            format!("before=2999-01-01T00:00:00Z&force=yes&csrf={csrf}"),
        ),
        ("/replay", String::new()),
    ] {
        let refused = f
            .console
            .handle(read_only("POST", path).body(form.as_bytes()))
            .await;
        assert_eq!(refused.status, 403, "{path} {form}");
    }
    let after = f.inbox.admin().stats().await.expect("stats");
    assert_eq!(
        (after.dead, after.done, after.pending),
        (before.dead, before.done, before.pending)
    );
}

/// An id, a type and an error holding a right-to-left override, zero-width characters and
/// isolates are shown escaped in marked spans on every page, never served as they are; the
/// replay form still sends the exact id back.
#[tokio::test]
async fn bidi_overrides_and_zero_width_characters_are_shown_escaped() {
    const ID: &str = "evt_\u{202e}gpj.exe\u{200b}\u{feff}";
    const TYPE: &str = "alert.\u{2066}triggered\u{2069}\u{202d}";
    let f = fixture("bidi").await;
    let b = f.inbox.backend();
    b.accept(&airmy_verify_inbox::conformance::delivery(ID, TYPE))
        .await
        .expect("accept");
    let leased = b.take(1, Duration::from_secs(60)).await.expect("take");
    assert_eq!(leased[0].id, ID);
    b.bury(ID, &leased[0].token, "upstream said \u{202e}005 \u{200f}")
        .await
        .expect("bury");
    let entry = format!("/entry?id={}", enc(ID));
    for path in [
        "/entries?state=dead".to_owned(),
        entry.clone(),
        format!("/entries?state=dead&prefix={}", enc("evt_\u{202e}")),
        "/entry?id=evt_%E2%80%AEnothing".to_owned(),
    ] {
        let page = get(&f.console, "", &path).await;
        let html = text(&page);
        let raw: Vec<String> = html
            .chars()
            .filter(|&c| c != '\n' && airmy_verify::text::disguises(c))
            .map(|c| format!("U+{:04X}", u32::from(c)))
            .collect();
        assert!(raw.is_empty(), "{path}: served as they are: {raw:?}");
        assert!(
            html.contains(r#"<span class="esc" title="U+202E">\u{202e}</span>"#),
            "{path}: {html}"
        );
    }
    let html = text(&get(&f.console, "", &entry).await);
    for shown in [
        r#"evt_<span class="esc" title="U+202E">\u{202e}</span>gpj.exe<span class="esc" title="U+200B">\u{200b}</span><span class="esc" title="U+FEFF">\u{feff}</span>"#,
        r#"alert.<span class="esc" title="U+2066">\u{2066}</span>triggered<span class="esc" title="U+2069">\u{2069}</span><span class="esc" title="U+202D">\u{202d}</span>"#,
        r#"upstream said <span class="esc" title="U+202E">\u{202e}</span>005 <span class="esc" title="U+200F">\u{200f}</span>"#,
    ] {
        assert!(html.contains(shown), "{shown}: {html}");
    }
    assert!(
        html.contains(r#"name="id" value="evt_&#x202e;gpj.exe&#x200b;&#xfeff;""#),
        "the hidden field, as character references: {html}"
    );
    // What a browser sends back from that field: the exact id.
    let csrf = token(&f.console).await;
    let replayed = post(
        &f.console,
        "/replay",
        &format!("id={}&csrf={csrf}", enc(ID)),
        None,
    )
    .await;
    assert_eq!(replayed.status, 303, "{}", text(&replayed));
    let summary = f
        .inbox
        .admin()
        .entry(ID)
        .await
        .expect("entry")
        .expect("there");
    assert_eq!(
        summary.summary.state,
        airmy_verify_inbox::EntryState::Pending
    );
}

/// A console with `loopback_only` (no login, on a loopback address) answers only a loopback
/// `Host`: a page whose name was rebound to 127.0.0.1 gets 421, reads nothing, replays nothing.
#[tokio::test]
async fn a_loopback_only_console_answers_a_loopback_host_only() {
    let f = fixture("loopback").await;
    let console = Console::new(f.inbox.clone()).loopback_only(true);
    for host in [
        "127.0.0.1:4000",
        "localhost",
        "LOCALHOST:80",
        "[::1]:4000",
        "[::1]",
    ] {
        let page = console
            .handle(ConsoleRequest::new("GET", "/").host(Some(host)))
            .await;
        assert_eq!(page.status, 200, "{host}");
    }
    for host in [
        None,
        Some("attacker.example:4000"),
        Some("127.0.0.1.attacker.example"),
        Some("[::2]:1"),
        Some(""),
    ] {
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/replay-dead"),
            ("POST", "/replay-dead"),
        ] {
            let refused = console
                .handle(
                    ConsoleRequest::new(method, path)
                        .host(host)
                        .body(b"confirm=yes"),
                )
                .await;
            assert_eq!(refused.status, 421, "{host:?} {method} {path}");
            assert!(!text(&refused).contains("csrf"), "no form token");
            assert_eq!(header(&refused, "x-frame-options"), Some("DENY"));
        }
    }
    assert_eq!(f.inbox.admin().stats().await.expect("stats").dead, 1);
}
