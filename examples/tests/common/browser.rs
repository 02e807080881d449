//! What the browser tests share: a `chromedriver` of their own driving Debian's headless
//! Chromium, a bounded wait, a temp dir.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use airmy_verify::time::OffsetDateTime;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use super::client;

pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// A bounded wait: [`tick`](Self::tick) sleeps a little, or fails the test once the time is up.
pub(crate) struct Deadline {
    what: &'static str,
    limit: Duration,
    at: Instant,
}

impl Deadline {
    pub(crate) fn new(what: &'static str, secs: u64) -> Self {
        let limit = Duration::from_secs(secs);
        Self {
            what,
            limit,
            at: Instant::now() + limit,
        }
    }

    pub(crate) async fn tick(&self, last: &str) {
        assert!(
            Instant::now() < self.at,
            "timed out after {:?} waiting for {}; last seen: {last}",
            self.limit,
            self.what
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A directory under the system's temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let dir = std::env::temp_dir().join(format!(
            "airmy-console-browser-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `chromedriver` on a free loopback port, in a process group of its own: dropping it kills
/// the group (chromedriver and any Chromium it started).
pub(crate) struct Chromedriver {
    child: std::process::Child,
    url: String,
}

impl Chromedriver {
    pub(crate) async fn start() -> Self {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).is_file(),
                "{path} is missing (Debian's `{package}`): this test drives Debian's Chromium \
                 over WebDriver; `apt-get install chromium chromium-driver` (scripts/test does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let mut driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = client();
        let wait = Deadline::new("chromedriver to answer GET /status", 20);
        loop {
            let status = http
                .get(format!("{}/status", driver.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(response) = status
                && response.status().as_u16() == 200
                && let Ok(text) = response.text().await
                && serde_json::from_str::<Value>(&text)
                    .is_ok_and(|v| v["value"]["ready"] == Value::Bool(true))
            {
                return driver;
            }
            if let Ok(Some(exit)) = driver.child.try_wait() {
                panic!("chromedriver --port={port} exited before it answered: {exit}");
            }
            wait.tick("no answer").await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Chromedriver {
    /// A WebDriver session in headless Chromium (a desktop's window, 1280×900), its profile in
    /// `profile`.
    pub(crate) async fn session(&self, profile: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&self.url),
        )
        .await
        .expect("Chromium starts within 30 s")
        .unwrap_or_else(|e| panic!("a WebDriver session in {CHROMIUM}: {e}"))
    }
}
