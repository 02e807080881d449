//! The console across replicas, in a real browser: two receivers (`axum-receiver` and
//! `actix-receiver`, the same configuration and console token) on one Redis inbox, behind a
//! real round-robin `nginx` on loopback (Debian's; its configuration written here into a temp
//! dir, run in the foreground), driven in headless Chromium (`chromedriver`).
//!
//! nginx alternates the replicas request by request; its access log names the replica that
//! answered each. The stylesheet (the same on both) and the favicon stay out of the rotation,
//! so that pages and actions alternate: the login posted to one replica opens a session the
//! other accepts; each entry page is rendered by one replica and its replay answered by the
//! other (both ways), and so are "replay every dead letter", a purge and the logout; every
//! action is answered as on one process. An entry whose id holds a right-to-left override
//! (U+202E) shows it escaped, in a marked span, and replays. Screenshots of the overview and
//! of that entry go to `target/console-screenshots/replicas-*.png`.
//!
//! Needs `/usr/sbin/nginx`, `/usr/bin/chromium`, `/usr/bin/chromedriver` and `redis-server`
//! (Debian's `nginx`, `chromium`, `chromium-driver`, `redis-server`, which `scripts/test`
//! installs): without them the test fails, saying so.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use airmy_verify::time::OffsetDateTime;
use airmy_verify_inbox::InboxUrl;
use fantoccini::{Client, Locator};

mod common;

use common::browser::{Chromedriver, Deadline, TempDir};
use common::{ACTIX, AXUM, Receiver, client, delivery};

const NGINX: &str = "/usr/sbin/nginx";
const TOKEN: &str = "the-fleets-console-token-0123";
/// How long every handling attempt fails after the receivers start: the deliveries become
/// dead letters (one attempt each), replayed once it is over.
const FAIL_FOR_SECS: u64 = 8;
/// How many ordinary dead letters: three replayed one by one, two by "replay every dead
/// letter".
const ORDINARY: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_round_robin_nginx_answer_every_action_as_one() {
    let begun = Instant::now();
    let dir = TempDir::new("replicas");
    let redis = test_support::RedisServer::start();
    let stamp = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let sep = if redis.url().contains('?') { '&' } else { '?' };
    let inbox_url = format!("{}{sep}prefix=airmy:replicas:{stamp}:", redis.url());
    let env = [
        ("AIRMY_INBOX", inbox_url.as_str()),
        ("AIRMY_CONSOLE_LISTEN", "127.0.0.1:0"),
        ("AIRMY_CONSOLE_TOKEN", TOKEN),
        ("AIRMY_HANDLER_FAIL_FOR_SECS", &FAIL_FOR_SECS.to_string()),
        ("AIRMY_INBOX_MAX_ATTEMPTS", "1"),
        ("AIRMY_INBOX_WORKERS", "2"),
    ];
    let axum = Receiver::start(AXUM, &env).await;
    let actix = Receiver::start(ACTIX, &env).await;
    let outage_over = Instant::now() + Duration::from_secs(FAIL_FOR_SECS);
    let mut replicas = HashMap::new();
    for (receiver, name) in [(&axum, "axum"), (&actix, "actix")] {
        let url = receiver.console_url().await;
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        replicas.insert(addr, name);
    }
    let addrs: Vec<&str> = replicas.keys().map(String::as_str).collect();
    let nginx = Nginx::start(&dir.0, &addrs, &replicas).await;

    // Dead letters, and one whose id holds a right-to-left override and a zero-width space.
    let http = client();
    let mut ids: Vec<String> = (0..ORDINARY)
        .map(|i| format!("evt_replica_{i}_{stamp}"))
        .collect();
    let bidi = format!("evt_{stamp}_\u{202e}gpj.exe\u{200b}");
    ids.push(bidi.clone());
    for (i, id) in ids.iter().enumerate() {
        let to = if i % 2 == 0 { &axum.url } else { &actix.url };
        let d = delivery(id);
        let sent = http
            .post(to)
            .header("x-airmy-signature", &d.signature)
            .body(d.body.clone())
            .send()
            .await
            .expect("the delivery is answered");
        assert_eq!(sent.status().as_u16(), 200, "{id}");
    }
    let url: InboxUrl = inbox_url.parse().expect("an inbox URL");
    let inbox = url.open(true).await.expect("the inbox opens");
    let wait = Deadline::new("every entry to become a dead letter", 30);
    loop {
        let stats = inbox.admin().stats().await.expect("stats");
        if stats.dead == ids.len() as u64 {
            break;
        }
        wait.tick(&format!("{stats:?}")).await;
    }

    let driver = Chromedriver::start().await;
    let browser = driver.session(&dir.0.join("profile")).await;
    let b = Browsing {
        client: &browser,
        nginx: &nginx,
    };

    // 1. The login: the form from one replica, posted to the other, the overview from the
    //    first again with the session the second opened.
    let mark = nginx.lines().len();
    b.goto("/").await;
    b.client
        .find(Locator::Id("token"))
        .await
        .expect("the login form")
        .send_keys(TOKEN)
        .await
        .expect("typed");
    b.click("login").await;
    b.wait_for("count-dead").await;
    let served = nginx.since(mark);
    let login_by = nginx.one(&served, "POST", "/login");
    assert_eq!(served.last().map(|s| s.status), Some(200), "{served:?}");
    let overview_by = served.last().expect("the overview").replica;
    assert_ne!(login_by, overview_by, "{served:?}");
    assert_eq!(
        b.text("count-dead").await,
        ids.len().to_string(),
        "the overview's count"
    );
    b.shot("replicas-overview").await;

    // 2. The entry whose id holds U+202E: the escaped form, in marked spans, on the list and
    //    on its page; never the character itself.
    let entry_of = |id: &str| format!("/entry?id={}", enc(id));
    let shown_bidi = bidi
        .replace('\u{202e}', r"\u{202e}")
        .replace('\u{200b}', r"\u{200b}");
    b.goto("/entries?state=dead").await;
    let listed = b.text_of(Locator::Css("table#entries")).await;
    assert!(listed.contains(&shown_bidi), "{listed}");
    b.goto(&entry_of(&bidi)).await;
    assert_eq!(b.text("id").await, shown_bidi, "#id shows the escape");
    let marks = b
        .client
        .find_all(Locator::Css("dd#id span.esc"))
        .await
        .expect("spans");
    let mut titles = Vec::new();
    for mark in &marks {
        titles.push(mark.attr("title").await.expect("title").unwrap_or_default());
    }
    assert_eq!(titles, ["U+202E", "U+200B"], "the marked characters");
    let text = b
        .client
        .execute(
            "return document.title + document.body.innerText",
            Vec::new(),
        )
        .await
        .expect("the page's text");
    let text = text.as_str().expect("a string");
    assert!(
        !text.contains('\u{202e}') && !text.contains('\u{200b}'),
        "never shown as it is: {text}"
    );
    // Nor served as it is (the replay form's hidden id holds it as `&#x202e;`, which the
    // browser sends back as the character).
    let cookie = b
        .client
        .get_named_cookie("airmy_console")
        .await
        .expect("the session cookie");
    let served = http
        .get(format!("{}{}", nginx.base, entry_of(&bidi)))
        .header("cookie", format!("airmy_console={}", cookie.value()))
        .send()
        .await
        .expect("the page");
    assert_eq!(served.status().as_u16(), 200);
    let html = served.text().await.expect("html");
    assert!(
        !html.contains('\u{202e}') && !html.contains('\u{200b}') && html.contains("&#x202e;"),
        "{html}"
    );
    b.shot("replicas-entry-bidi").await;

    // 3. Once the outage is over: each entry page from one replica, its replay answered by
    //    the other; both ways.
    tokio::time::sleep_until(outage_over.into()).await;
    let mut ways = Vec::new();
    for id in ids[..3].iter().chain([&bidi]) {
        let path = entry_of(id);
        let mark = nginx.lines().len();
        b.goto(&path).await;
        b.click("replay").await;
        let notice = b.text("replayed").await;
        assert!(notice.contains("due again"), "{id}: {notice}");
        let served = nginx.since(mark);
        let page_by = nginx.one(&served, "GET", "/entry");
        let replay_by = nginx.one_status(&served, "POST", "/replay", 303);
        assert_ne!(page_by, replay_by, "{id}: {served:?}");
        ways.push((page_by, replay_by));
    }
    assert!(
        ways.contains(&("axum", "actix")) && ways.contains(&("actix", "axum")),
        "pages and replays both ways: {ways:?}"
    );

    // 4. "Replay every dead letter": the confirmation from one, the replay by the other.
    let mark = nginx.lines().len();
    b.goto("/replay-dead").await;
    let left = ORDINARY - 3;
    let ask = b.text_of(Locator::Css("main")).await;
    assert!(
        ask.contains(&format!("makes {left} dead letter(s)")),
        "{ask}"
    );
    b.click("confirm").await;
    let done = b.text_of(Locator::Css("p.notice")).await;
    assert!(
        done.contains(&format!("Replayed {left} dead letter(s)")),
        "{done}"
    );
    let served = nginx.since(mark);
    assert_ne!(
        nginx.one(&served, "GET", "/replay-dead"),
        nginx.one_status(&served, "POST", "/replay-dead", 200),
        "{served:?}"
    );
    let wait = Deadline::new("every replayed entry to be done", 40);
    loop {
        let stats = inbox.admin().stats().await.expect("stats");
        if stats.done == ids.len() as u64 {
            break;
        }
        wait.tick(&format!("{stats:?}")).await;
    }

    // 5. A purge from the overview, posted to the other replica.
    let mark = nginx.lines().len();
    b.goto("/").await;
    assert_eq!(b.text("count-done").await, ids.len().to_string());
    b.client
        .find(Locator::Css("section.actions button[type=submit]"))
        .await
        .expect("the purge button")
        .click()
        .await
        .expect("purge clicks");
    let purged = b.text_of(Locator::Css("p.notice")).await;
    assert!(purged.starts_with("Purged 0 processed entries"), "{purged}");
    let served = nginx.since(mark);
    assert_ne!(
        nginx.one(&served, "GET", "/"),
        nginx.one_status(&served, "POST", "/purge", 200),
        "{served:?}"
    );
    b.goto("/").await;
    b.shot("replicas-overview-done").await;

    // 6. The logout, posted to the other replica: the session is gone for both.
    let mark = nginx.lines().len();
    b.goto("/entries?state=done").await;
    b.click("logout").await;
    b.wait_for("token").await;
    let served = nginx.since(mark);
    assert_ne!(
        nginx.one(&served, "GET", "/entries"),
        nginx.one_status(&served, "POST", "/logout", 303),
        "{served:?}"
    );
    for _ in 0..2 {
        b.goto("/").await;
        b.wait_for("token").await;
    }
    let served = nginx.since(mark);
    let after: Vec<_> = served.iter().filter(|s| s.path == "/").collect();
    assert!(
        after.len() >= 2 && after.iter().all(|s| s.status == 401),
        "{served:?}"
    );

    browser.close().await.expect("the session closes");
    drop(driver);
    drop(nginx);
    for receiver in [&axum, &actix] {
        receiver.signal("-TERM");
    }
    eprintln!("two replicas behind nginx took {:?}", begun.elapsed());
}

/// `text` for a URL's query.
fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// One request as nginx's access log says it was answered.
#[derive(Debug, Clone)]
struct Served {
    method: String,
    path: String,
    replica: &'static str,
    status: u16,
}

/// A foreground `nginx` on a free loopback port, round-robin over the consoles, its
/// configuration and logs in a temp dir; killed when dropped.
struct Nginx {
    child: std::process::Child,
    base: String,
    log: std::path::PathBuf,
    replicas: HashMap<String, &'static str>,
}

impl Nginx {
    async fn start(dir: &Path, addrs: &[&str], replicas: &HashMap<String, &'static str>) -> Self {
        assert!(
            Path::new(NGINX).is_file(),
            "{NGINX} is missing (Debian's `nginx`): this test puts two receivers behind it; \
             `apt-get install nginx` (scripts/test does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let root = dir.join("nginx");
        std::fs::create_dir_all(&root).expect("nginx dir");
        let servers: String = addrs
            .iter()
            .map(|a| format!("        server {a};\n"))
            .collect();
        let log = root.join("access.log");
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    log_format replicas '$request_method $uri $upstream_addr $status';
    # Round robin (nginx's default) over both consoles.
    upstream consoles {{
{servers}    }}
    # The stylesheet, the same on both, from the first: out of the rotation.
    upstream stylesheet {{
        server {first};
    }}
    server {{
        listen 127.0.0.1:{port};
        access_log {log} replicas;
        proxy_set_header Host $http_host;
        location = /favicon.ico {{ return 404; }}
        location = /console.css {{ proxy_pass http://stylesheet; }}
        location / {{ proxy_pass http://consoles; }}
    }}
}}
"#,
            root = root.display(),
            first = addrs[0],
            log = log.display(),
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let child = std::process::Command::new(NGINX)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(root.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            replicas: replicas.clone(),
        };
        let wait = Deadline::new("nginx to listen", 20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return nginx;
            }
            if let Ok(Some(exit)) = nginx.child.try_wait() {
                let errors = std::fs::read_to_string(root.join("error.log")).unwrap_or_default();
                panic!("nginx exited before it listened: {exit}: {errors}");
            }
            wait.tick("not yet").await;
        }
    }

    /// The access log's lines so far.
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The requests answered since the log had `mark` lines.
    fn since(&self, mark: usize) -> Vec<Served> {
        self.lines()[mark..]
            .iter()
            .filter_map(|line| {
                let mut words = line.split(' ');
                let (method, path, upstream, status) =
                    (words.next()?, words.next()?, words.next()?, words.next()?);
                Some(Served {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    replica: self.replicas.get(upstream).copied().unwrap_or("nginx"),
                    status: status.parse().ok()?,
                })
            })
            .collect()
    }

    /// The replica that answered the one `method path` among `served`.
    fn one(&self, served: &[Served], method: &str, path: &str) -> &'static str {
        let found: Vec<&Served> = served
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .collect();
        assert!(!found.is_empty(), "no {method} {path} in {served:?}");
        found[0].replica
    }

    /// As [`one`](Self::one), and it answered `status`.
    fn one_status(&self, served: &[Served], method: &str, path: &str, status: u16) -> &'static str {
        let replica = self.one(served, method, path);
        let first = served
            .iter()
            .find(|s| s.method == method && s.path == path)
            .expect("found");
        assert_eq!(first.status, status, "{method} {path}: {served:?}");
        replica
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser on the console behind nginx.
struct Browsing<'a> {
    client: &'a Client,
    nginx: &'a Nginx,
}

impl Browsing<'_> {
    async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.nginx.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    }

    /// Waits up to 10 s for the element with this id (a click's navigation may still be
    /// loading).
    async fn wait_for(&self, id: &str) -> fantoccini::elements::Element {
        let url = self.client.current_url().await.expect("url");
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id} on {url}: {e}"))
    }

    async fn click(&self, id: &str) {
        self.wait_for(id)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("#{id} clicks: {e}"));
    }

    async fn text_of(&self, locator: Locator<'_>) -> String {
        let url = self.client.current_url().await.expect("url");
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(locator)
            .await
            .unwrap_or_else(|e| panic!("{locator:?} on {url}: {e}"))
            .text()
            .await
            .expect("text")
    }

    async fn text(&self, id: &str) -> String {
        self.wait_for(id).await.text().await.expect("text")
    }

    /// Saves a screenshot of the viewport as `target/console-screenshots/<what>.png`.
    async fn shot(&self, what: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(dir.join(format!("{what}.png")), png).expect("saved");
    }
}
