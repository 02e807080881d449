//! Helpers for the workspace's own tests, never published: [`RedisServer`], which starts a
//! `redis-server` process on a free loopback port, [`RedisCluster`], a Redis Cluster of six,
//! [`TlsRedis`], one with TLS only, [`PostgresServer`], a throwaway PostgreSQL server,
//! [`PgBouncer`], PgBouncer in transaction pooling mode in front of one, [`NetNamespace`], a
//! network namespace whose path to the test can drop packets (a partition),
//! [`spans::SpanCapture`], which keeps the spans and events a test produced, and
//! [`workspace_binary`], another package's binary built for a test.
//!
//! For the adapters' tests, behind features: `fixtures` (deliveries, verifiers, counters and
//! idempotency guards on top of `airmy_verify::testing`; `redis` adds a guard on a
//! [`RedisServer`]), and `http` (raw HTTP/1.1 over a loopback socket, a `reqwest` client for
//! the conformance cases, and the detached idempotent handler's scenarios).

pub mod binary;
pub mod cluster;
#[cfg(feature = "http")]
pub mod detached;
#[cfg(feature = "fixtures")]
pub mod fixtures;
#[cfg(feature = "http")]
pub mod http;
pub mod netns;
pub mod pgbouncer;
pub mod postgres;
pub mod spans;

pub use binary::workspace_binary;
pub use cluster::RedisCluster;
pub use netns::NetNamespace;
pub use pgbouncer::PgBouncer;
pub use postgres::PostgresServer;

/// A Redis server for tests: the one at `AIRMY_REDIS_URL` when that is set,
/// otherwise a `redis-server` started on a free 127.0.0.1 port and stopped when this is
/// dropped.
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    port: u16,
    child: Option<std::process::Child>,
    args: Vec<String>,
    _dir: Option<TempDir>,
}

impl RedisServer {
    /// Uses `AIRMY_REDIS_URL`, or starts `redis-server`.
    ///
    /// # Panics
    ///
    /// When neither is possible, with a message naming the fix (install `redis-server`, as
    /// `scripts/test` does, or set `AIRMY_REDIS_URL`): Redis tests never skip silently.
    #[must_use]
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("AIRMY_REDIS_URL") {
            return Self {
                url,
                port: 0,
                child: None,
                args: Vec::new(),
                _dir: None,
            };
        }
        Self::start_private()
    }

    /// Starts a `redis-server` of its own on a free 127.0.0.1 port, even when
    /// `AIRMY_REDIS_URL` is set (for tests that stop and restart it).
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started, with a message naming the fix.
    #[must_use]
    pub fn start_private() -> Self {
        Self::start_with(&[])
    }

    /// Starts a `redis-server` of its own, as [`start_private`](Self::start_private) does,
    /// with further configuration `args` (such as `["--appendonly", "yes", "--appendfsync",
    /// "always", "--dir", "/tmp/x"]`), kept for [`restart`](Self::restart).
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started, with a message naming the fix.
    #[must_use]
    pub fn start_with(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut server = Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            _dir: None,
        };
        server.spawn();
        server
    }

    /// Starts a `redis-server` of its own with AOF `appendonly yes`, `appendfsync always`, in a
    /// fresh directory removed on drop: what it acknowledged survives [`stop`](Self::stop)
    /// (a `SIGKILL`) and [`restart`](Self::restart).
    ///
    /// # Panics
    ///
    /// When `redis-server` cannot be started.
    #[must_use]
    pub fn start_durable() -> Self {
        let dir = temp_dir();
        let path = dir.0.to_string_lossy().into_owned();
        let mut server = Self::start_with(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            &path,
        ]);
        server._dir = Some(dir);
        server
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start redis-server ({err}): install it with \
                     `apt-get install -y redis-server` (scripts/test does), or point \
                     AIRMY_REDIS_URL at a Redis server"
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if ping(self.port) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!(
            "redis-server did not answer PING on port {} within 10 s",
            self.port
        );
    }

    /// The server's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server this started (for outage tests): `SIGKILL`, as a crash would.
    ///
    /// # Panics
    ///
    /// When the server is an external one (`AIRMY_REDIS_URL`): use [`RedisServer::start_private`]
    /// for a server that can be stopped.
    pub fn stop(&mut self) {
        let mut child = self
            .child
            .take()
            .expect("only a redis-server started by the test can be stopped");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes the server this started (`SIGSTOP`): connections stay open, commands wait,
    /// replies time out, until [`resume`](Self::resume).
    ///
    /// # Panics
    ///
    /// When the server is an external one.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (`SIGCONT`); the commands that waited run now.
    ///
    /// # Panics
    ///
    /// When the server is an external one.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self
            .child
            .as_ref()
            .expect("only a redis-server started by the test can be signalled");
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&mut self) {
        self.spawn();
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------
// TLS

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` listening only on a TLS port, with a certificate for 127.0.0.1 signed by a
/// throwaway CA made by `openssl`; killed on drop.
#[derive(Debug)]
pub struct TlsRedis {
    child: Child,
    /// The TLS port.
    pub port: u16,
    /// The PEM of the CA that signed the server's certificate.
    pub ca_pem: Vec<u8>,
    _dir: TempDir,
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian package openssl) makes the test certificates");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A fresh directory for one server's files.
///
/// # Panics
///
/// When it cannot be created.
#[must_use]
pub fn temp_dir() -> TempDir {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("airmy-redis-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

/// Makes `ca.key` and `ca.pem`, a self-signed CA, in `dir`; returns the PEM.
///
/// # Panics
///
/// When `openssl` fails.
#[must_use]
pub fn make_ca(dir: &Path) -> Vec<u8> {
    run(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=airmy test CA",
        ],
    );
    std::fs::read(dir.join("ca.pem")).expect("ca.pem")
}

impl TlsRedis {
    /// Makes the certificates and starts the server.
    ///
    /// # Panics
    ///
    /// When `openssl` or `redis-server` cannot run (scripts/test installs both).
    #[must_use]
    pub fn start() -> Self {
        let dir = temp_dir();
        let d = dir.0.as_path();
        let ca_pem = make_ca(d);
        // A server certificate the CA signs for 127.0.0.1.
        run(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext.cnf");
        run(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            ca_pem,
            _dir: dir,
        }
    }

    /// `rediss://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
