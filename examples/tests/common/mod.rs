//! What the black-box tests of the receivers share: a receiver process whose stdout is kept,
//! signed deliveries, a client.
#![allow(dead_code, reason = "each test file uses part of it")]

pub(crate) mod browser;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airmy_verify::testing::{self, Delivery};
use airmy_verify::time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const AXUM: &str = env!("CARGO_BIN_EXE_axum-receiver");
pub(crate) const ACTIX: &str = env!("CARGO_BIN_EXE_actix-receiver");
pub(crate) const HYPER: &str = env!("CARGO_BIN_EXE_hyper-receiver");

/// A receiver process (secret `testing::SECRET`, a free loopback port) whose stdout lines and
/// stderr lines (its logs) are all kept.
pub(crate) struct Receiver {
    pub(crate) child: Child,
    /// The `listening on http://HOST:PORT` line.
    pub(crate) first: String,
    /// Its stderr lines (its logs), so far.
    logs: Arc<Mutex<Vec<String>>>,
    /// `http://HOST:PORT`.
    pub(crate) base: String,
    /// `http://HOST:PORT/hooks/airmy`.
    pub(crate) url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    /// Starts `bin` with `envs` (after the secret and the listen address, which they may
    /// override; no `AIRMY_WEBHOOK_SECRET` when they name an `AIRMY_WEBHOOK_SECRET_FILE`) and
    /// waits for its `listening on` line.
    pub(crate) async fn start(bin: &str, envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(bin);
        command.env_clear();
        if !envs.iter().any(|(k, _)| *k == "AIRMY_WEBHOOK_SECRET_FILE") {
            command.env("AIRMY_WEBHOOK_SECRET", testing::SECRET);
        }
        let mut child = command
            .env("AIRMY_LISTEN", "127.0.0.1:0")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("receiver starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().expect("logs").push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
            .await
            .expect("announced within 20 s")
            .expect("readable")
            .expect("a first line");
        let addr = first
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().expect("lines").push(line);
            }
        });
        Self {
            child,
            first,
            logs,
            base: format!("http://{addr}"),
            url: format!("http://{addr}/hooks/airmy"),
            lines,
        }
    }

    /// The stdout lines after the `listening on` line, so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Its stderr lines (its logs) so far.
    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// The `/metrics` URL of the `metrics on http://HOST:PORT/metrics` line, which must be the
    /// line right after `listening on`.
    pub(crate) async fn metrics_url(&self) -> String {
        for _ in 0..200 {
            if let Some(first) = self.lines().first() {
                return first
                    .strip_prefix("metrics on ")
                    .unwrap_or_else(|| panic!("unexpected second line {first:?}"))
                    .to_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no `metrics on` line");
    }

    /// The console's URL (`http://HOST:PORT/`) of the `console on http://HOST:PORT/` line,
    /// which must be the line right after `listening on`.
    pub(crate) async fn console_url(&self) -> String {
        for _ in 0..200 {
            if let Some(first) = self.lines().first() {
                return first
                    .strip_prefix("console on ")
                    .unwrap_or_else(|| panic!("unexpected second line {first:?}"))
                    .to_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no `console on` line");
    }

    /// The status `GET /healthz` answers.
    pub(crate) async fn health(&self) -> u16 {
        client()
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .expect("healthz answered")
            .status()
            .as_u16()
    }

    /// Sends the process a signal (`-TERM`, `-9`, …).
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }
}

/// A `run.completed` delivery with `id`, created now, signed with `testing::SECRET`.
pub(crate) fn delivery(id: &str) -> Delivery {
    testing::sample_event("run.completed")
        .id(id)
        .created_at(OffsetDateTime::now_utc())
        .signed(testing::SECRET)
}

/// A client that never uses a proxy.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Runs `bin` with `envs` only (and a free port): it must exit 2, print nothing on stdout and
/// one line on stderr, which is returned.
pub(crate) async fn exit_2_line(bin: &str, envs: &[(&str, &str)]) -> String {
    let out = Command::new(bin)
        .env_clear()
        .env("AIRMY_LISTEN", "127.0.0.1:0")
        .envs(envs.iter().copied())
        .output()
        .await
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{bin} {envs:?}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{bin}: nothing listens: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{bin}: one line: {stderr}");
    stderr
}
