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
        .handle(ConsoleRequest {
            method: "GET",
            base,
            path,
            query,
            fetch_site: None,
            body: b"",
        })
        .await
}

async fn post(
    console: &Console,
    path: &str,
    form: &str,
    fetch_site: Option<&str>,
) -> ConsoleResponse {
    console
        .handle(ConsoleRequest {
            method: "POST",
            base: "",
            path,
            query: "",
            fetch_site,
            body: form.as_bytes(),
        })
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
    page[start..start + 64].to_owned()
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
            let response = f.console.handle(ConsoleRequest {
                method, base: "", path: &path, query: &query, fetch_site: None, body: &body,
            }).await;
            prop_assert!(response.status < 500, "{} {path}?{query}: {}", method, response.status);
            Ok(())
        })?;
    }
}
