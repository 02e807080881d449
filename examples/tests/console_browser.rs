//! The inbox web console in a real browser: headless Debian Chromium driven over WebDriver
//! (`chromedriver`, started here on a free loopback port) with `fantoccini`, against the
//! example receivers (`axum-receiver`, `actix-receiver`) on a SQLite inbox with
//! `AIRMY_CONSOLE_LISTEN`.
//!
//! The handler fails for the first [`FAIL_FOR_SECS`] seconds (`AIRMY_HANDLER_FAIL_FOR_SECS`)
//! and each entry gets two attempts (`AIRMY_INBOX_MAX_ATTEMPTS=2`), so the deliveries, a
//! hostile one among them (HTML and script in its id, type and data), become dead letters with
//! their last error within about two seconds.
//!
//! Checked: the overview's counts are the inbox's (`Backend::stats`, as `airmy-webhook inbox
//! stats` reads them); the hostile dead letter shows its id, type and body as text (no element,
//! no script from them: nothing ran, no alert), with its last error, and the page carries a
//! `Content-Security-Policy`; no page overflows a phone's width; once the outage is over,
//! replaying it from its page makes it pending, then done; "replay every dead letter", after
//! its confirmation, brings the others back and they are handled.
//! Screenshots of each page, at a desktop's and a phone's width, go to
//! `target/console-screenshots/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test` installs): without them the test fails, saying so.

use std::path::Path;
use std::time::{Duration, Instant};

use airmy_verify::testing;
use airmy_verify::time::OffsetDateTime;
use airmy_verify_inbox::{Inbox, InboxUrl, Stats};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

mod common;

use common::browser::{Chromedriver, Deadline, TempDir};
use common::{ACTIX, AXUM, Receiver, client};

/// How long every handling attempt fails after the receiver starts.
const FAIL_FOR_SECS: u64 = 10;

/// The hostile event: HTML and script in its id, its type and its data.
const HOSTILE_ID: &str = "evt_<script>window.__pwned=1</script>";
const HOSTILE_TYPE: &str = r#"x.<img src=x onerror="window.__pwned=2">"#;
const HOSTILE_NOTE: &str = "</pre><script>window.__pwned=3</script><b>bold</b>";

/// How many ordinary events are delivered beside the hostile one.
const ORDINARY: usize = 3;

const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// The states, in the order of [`counts`].
const STATES: [&str; 5] = ["pending", "scheduled", "processing", "dead", "done"];

/// One browser at a time: two Chromiums and two receivers on a 2-core machine would slow the
/// pages down past the outage window.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_console_in_a_browser() {
    let _one = ONE_AT_A_TIME.lock().await;
    scenario(AXUM, "axum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_console_in_a_browser() {
    let _one = ONE_AT_A_TIME.lock().await;
    scenario(ACTIX, "actix").await;
}

async fn scenario(bin: &str, name: &'static str) {
    let begun = Instant::now();
    let dir = TempDir::new(name);
    let driver = Chromedriver::start().await;
    let mut browser = Browser::open(&driver, &dir.0.join("profile"), name).await;

    let inbox_url = format!("sqlite:{}", dir.0.join("inbox.db").display());
    let mut receiver = Receiver::start(
        bin,
        &[
            ("AIRMY_INBOX", &inbox_url),
            ("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0"),
            ("AIRMY_HANDLER_FAIL_FOR_SECS", &FAIL_FOR_SECS.to_string()),
            ("AIRMY_INBOX_WORKERS", "2"),
            ("AIRMY_INBOX_MAX_ATTEMPTS", "2"),
        ],
    )
    .await;
    // The receiver's outage began before its `listening on` line: it is over by then.
    let outage_over = Instant::now() + Duration::from_secs(FAIL_FOR_SECS);
    let console = receiver.console_url().await;
    browser.base = console.trim_end_matches('/').to_owned();

    // 1. Ordinary deliveries, and the hostile one: each accepted.
    let http = client();
    let stamp = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let mut ids: Vec<String> = (0..ORDINARY)
        .map(|i| format!("evt_console_{name}_{i}_{stamp}"))
        .collect();
    for id in &ids {
        accept(&http, &receiver.url, &common::delivery(id), id).await;
    }
    let hostile = testing::sample_event(HOSTILE_TYPE)
        .id(HOSTILE_ID)
        .created_at(OffsetDateTime::now_utc())
        .data(json!({ "note": HOSTILE_NOTE }))
        .signed(testing::SECRET);
    accept(&http, &receiver.url, &hostile, HOSTILE_ID).await;
    ids.push(HOSTILE_ID.to_owned());
    let total = ids.len() as u64;

    // 2. Every entry failed twice: a dead letter with its last error.
    let url: InboxUrl = inbox_url.parse().expect("an inbox URL");
    let inbox = url
        .open(true)
        .await
        .expect("the inbox opens beside the receiver");
    let wait = Deadline::new("every entry to become a dead letter", 20);
    loop {
        let stats = inbox.admin().stats().await.expect("stats");
        if stats.dead == total {
            break;
        }
        wait.tick(&format!("{stats:?}")).await;
    }

    // 3. The overview's counts are the inbox's.
    browser.size(DESKTOP).await;
    browser.counts_match(&inbox, "during the outage").await;
    browser.shot("desktop-overview").await;

    // 4. The dead letters, then the hostile one.
    let link = browser.hostile_link().await;
    browser.no_injected_markup("the dead letters").await;
    browser.shot("desktop-entries").await;
    link.click().await.expect("the hostile entry's link clicks");
    let entry_path = format!("/entry?id={}", enc(HOSTILE_ID));
    let current = browser.client.current_url().await.expect("url");
    assert!(
        current.as_str().ends_with(&entry_path),
        "{name}: the link leads to {current}"
    );
    assert_eq!(browser.text("id").await, HOSTILE_ID, "{name}: #id");
    assert_eq!(browser.text("type").await, HOSTILE_TYPE, "{name}: #type");
    let body = browser.text("body").await;
    assert!(body.contains(HOSTILE_NOTE), "{name}: pre#body: {body}");
    assert!(body.contains("<script>"), "{name}: pre#body: {body}");
    let error = browser.text("error").await;
    assert!(
        error.contains("simulated outage"),
        "{name}: #error shows the last error: {error:?}"
    );
    assert_eq!(browser.text("attempts").await, "2", "{name}: #attempts");
    assert_eq!(browser.text("state").await, "dead", "{name}: #state");
    let title = browser.client.title().await.expect("title");
    assert!(title.contains(HOSTILE_ID), "{name}: the title: {title:?}");
    browser.no_injected_markup("the hostile entry").await;
    browser.shot("desktop-entry").await;
    security_headers(&http, &format!("{}{entry_path}", browser.base), name).await;

    // 5. A phone's width: every page fits, nothing scrolls sideways.
    browser.size(PHONE).await;
    let inner = browser.script("return window.innerWidth").await;
    assert!(
        inner.as_u64().is_some_and(|w| w <= u64::from(PHONE.0)),
        "{name}: the viewport is a phone's: innerWidth {inner}"
    );
    for (path, shot) in [
        ("/".to_owned(), "phone-overview"),
        ("/entries?state=dead".to_owned(), "phone-entries"),
        (entry_path.clone(), "phone-entry"),
    ] {
        browser.goto(&path).await;
        browser.shot(shot).await;
        browser.fits(shot).await;
    }
    browser.size(DESKTOP).await;

    // 6. Once the outage is over, replaying the dead letter from its page: pending, then done.
    tokio::time::sleep_until(outage_over.into()).await;
    browser.replay_until_done(&entry_path).await;

    // 7. "Replay every dead letter", confirmed: the others come back and are handled.
    browser.goto("/replay-dead").await;
    let ask = browser.text_of(Locator::Css("main")).await;
    let others = total - 1;
    assert!(
        ask.contains(&format!("makes {others} dead letter(s)")),
        "{name}: {ask}"
    );
    browser.shot("desktop-replay-dead").await;
    browser
        .client
        .find(Locator::Id("confirm"))
        .await
        .expect("button#confirm")
        .click()
        .await
        .expect("confirm clicks");
    let done = browser.text_of(Locator::Css("p.notice")).await;
    assert!(
        done.contains(&format!("Replayed {others} dead letter(s)")),
        "{name}: {done}"
    );
    let wait = Deadline::new("every entry to be done", 40);
    loop {
        let stats = inbox.admin().stats().await.expect("stats");
        if stats.done == total {
            break;
        }
        wait.tick(&format!("{stats:?}")).await;
    }
    // A done entry replayed: pending again with its attempts reset, then done at its first.
    browser.replay_until_done(&entry_path).await;
    assert_eq!(
        browser.text("attempts").await,
        "1",
        "{name}: the replay of a done entry reset its attempts, and its first one succeeded"
    );
    browser.no_injected_markup("the replayed entry").await;
    browser.shot("desktop-entry-done").await;

    let overview = browser.counts_match(&inbox, "after the outage").await;
    assert_eq!(
        (overview[3], overview[4]),
        (0, total),
        "{name}: no dead letter left, every entry done: {overview:?}"
    );
    browser.shot("desktop-overview-done").await;

    // 8. Close the browser, stop the receiver.
    let overflows = std::mem::take(&mut browser.overflows);
    browser.client.close().await.expect("the session closes");
    drop(driver);
    receiver.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), receiver.child.wait())
        .await
        .expect("the receiver stops within 30 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "{name}: the receiver exits 0: {status}");
    assert!(
        overflows.is_empty(),
        "{name}: pages wider than a phone: {overflows:?}"
    );
    eprintln!(
        "{name}: the console in a browser took {:?}",
        begun.elapsed()
    );
}

/// POSTs `delivery` to `url`: 200 and accepted.
async fn accept(http: &reqwest::Client, url: &str, delivery: &testing::Delivery, id: &str) {
    let response = http
        .post(url)
        .header("x-airmy-signature", &delivery.signature)
        .body(delivery.body.clone())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the delivery is answered");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    assert_eq!(status, 200, "{id}: {text}");
    let answer: Value = serde_json::from_str(&text).expect("a JSON answer");
    assert_eq!(
        answer,
        json!({ "id": id, "status": "accepted" }),
        "{id}: {text}"
    );
}

/// The console's answer carries its security headers, and the hostile text only escaped.
async fn security_headers(http: &reqwest::Client, url: &str, name: &str) {
    let response = http.get(url).send().await.expect("the entry page answers");
    assert_eq!(response.status().as_u16(), 200, "{name}: {url}");
    let header = |h: &str| {
        response
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{name}: CSP {csp:?} lacks {directive}"
        );
    }
    assert_eq!(header("x-content-type-options"), "nosniff", "{name}");
    assert_eq!(header("x-frame-options"), "DENY", "{name}");
    let html = response.text().await.expect("the page");
    for raw in ["<script", "<img", "<b>"] {
        assert!(!html.contains(raw), "{name}: the page holds a raw {raw}");
    }
    assert!(
        html.contains("&lt;script&gt;window.__pwned=1"),
        "{name}: the id, escaped"
    );
}

/// `text` for a URL's query.
fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The five counts of `stats`, in the order of [`STATES`].
fn counts(stats: &Stats) -> [u64; 5] {
    [
        stats.pending,
        stats.scheduled,
        stats.processing,
        stats.dead,
        stats.done,
    ]
}

/// A WebDriver session in headless Chromium, on one receiver's console.
struct Browser {
    client: Client,
    /// The console's `http://HOST:PORT`, without a trailing slash.
    base: String,
    /// The receiver's name, first in each screenshot's name.
    name: &'static str,
    /// The pages wider than the viewport at a phone's width: (page, scrollWidth, innerWidth).
    overflows: Vec<String>,
}

impl Browser {
    async fn open(driver: &Chromedriver, profile: &Path, name: &'static str) -> Self {
        Self {
            client: driver.session(profile).await,
            base: String::new(),
            name,
            overflows: Vec::new(),
        }
    }

    async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("{}: GET {url}: {e}", self.name));
    }

    async fn size(&self, (width, height): (u32, u32)) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("the window resizes");
    }

    /// The text of the first element `locator` finds, waiting up to 10 s for it (a click's
    /// navigation may still be loading).
    async fn text_of(&self, locator: Locator<'_>) -> String {
        let url = self.client.current_url().await.expect("url");
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(locator)
            .await
            .unwrap_or_else(|e| panic!("{}: {locator:?} on {url}: {e}", self.name))
            .text()
            .await
            .expect("text")
    }

    /// The text of the element with this id.
    async fn text(&self, id: &str) -> String {
        self.text_of(Locator::Id(id)).await
    }

    async fn script(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{}: {script}: {e}", self.name))
    }

    /// The overview's counts, read until the inbox's are the same just before and just after
    /// the page was loaded (a retry moving an entry between states in between is read again);
    /// then they must be the page's.
    async fn counts_match(&self, inbox: &Inbox, when: &str) -> [u64; 5] {
        let mut last = String::new();
        for _ in 0..20 {
            let before = counts(&inbox.admin().stats().await.expect("stats"));
            self.goto("/").await;
            let mut shown = [0u64; 5];
            for (n, state) in shown.iter_mut().zip(STATES) {
                let text = self.text(&format!("count-{state}")).await;
                *n = text
                    .parse()
                    .unwrap_or_else(|_| panic!("#count-{state} {text:?}"));
            }
            let after = counts(&inbox.admin().stats().await.expect("stats"));
            if before == after && shown == before {
                return shown;
            }
            last = format!("inbox {before:?} then {after:?}, page {shown:?} ({STATES:?})");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        panic!(
            "{}: {when}: the overview never showed the inbox's counts: {last}",
            self.name
        );
    }

    /// Opens the entry at `path` (reloaded while it has no replay button: leased or pending),
    /// clicks `button#replay`, checks `#replayed`, then reloads until `#state` reads `done`.
    async fn replay_until_done(&self, path: &str) {
        let wait = Deadline::new("the entry's replay button", 30);
        loop {
            self.goto(path).await;
            if let Ok(button) = self.client.find(Locator::Id("replay")).await {
                button.click().await.expect("replay clicks");
                break;
            }
            wait.tick(&self.text("state").await).await;
        }
        let notice = self.text("replayed").await;
        assert!(
            notice.contains("due again"),
            "{}: #replayed {notice:?}",
            self.name
        );
        let wait = Deadline::new("the replayed entry to be done", 30);
        loop {
            let state = self.text("state").await;
            if state == "done" {
                return;
            }
            wait.tick(&state).await;
            self.client.refresh().await.expect("reload");
        }
    }

    /// The hostile entry's link on the list of dead letters.
    async fn hostile_link(&self) -> fantoccini::elements::Element {
        let wait = Deadline::new("the hostile entry among the dead letters", 10);
        loop {
            self.goto("/entries?state=dead").await;
            let links = self
                .client
                .find_all(Locator::Css("table#entries td.id a"))
                .await
                .expect("find links");
            let mut seen = Vec::new();
            for link in links {
                let text = link.text().await.expect("link text");
                if text == HOSTILE_ID {
                    return link;
                }
                seen.push(text);
            }
            wait.tick(&format!("{seen:?}")).await;
        }
    }

    /// Nothing from the hostile event became markup or ran: no script, image, `<b>` or event
    /// handler attribute in the page, `window.__pwned` unset, no alert open.
    async fn no_injected_markup(&self, page: &str) {
        let found = self
            .script(
                "return [document.scripts.length, document.images.length, \
                 document.querySelectorAll('b, [onerror]').length, \
                 window.__pwned === undefined]",
            )
            .await;
        assert_eq!(
            found,
            json!([0, 0, 0, true]),
            "{}: {page}: [scripts, images, <b> or onerror, __pwned unset]",
            self.name
        );
        match self.client.get_alert_text().await {
            Err(e) if e.is_no_such_alert() => {}
            other => panic!("{}: {page}: an alert is open: {other:?}", self.name),
        }
    }

    /// Saves a screenshot of the viewport as `target/console-screenshots/<name>-<what>.png`.
    async fn shot(&self, what: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(dir.join(format!("{}-{what}.png", self.name)), png).expect("saved");
    }

    /// Records the page when it is wider than the viewport.
    async fn fits(&mut self, what: &str) {
        let widths = self
            .script("return [document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        let fits = self
            .script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
            .await;
        if fits != Value::Bool(true) {
            self.overflows
                .push(format!("{what}: [scrollWidth, innerWidth] {widths}"));
        }
    }
}
