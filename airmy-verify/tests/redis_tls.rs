//! The Redis store over TLS (`rediss://`, feature `redis-tls`) against a real `redis-server`
//! listening only on a TLS port, with a certificate from a throwaway CA made by `openssl`.
#![cfg(feature = "redis-tls")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airmy_verify::idempotency::{Claim, Commit, IdempotencyStore, RedisStore};

const TIMEOUT: Duration = Duration::from_secs(2);

/// A `redis-server` with TLS only, killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    ca_pem: Vec<u8>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

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
fn temp_dir() -> TempDir {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("airmy-redis-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

/// Makes `ca.key` and `ca.pem`, a self-signed CA, in `dir`; returns the PEM.
fn make_ca(dir: &Path) -> Vec<u8> {
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
    fn start() -> Self {
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

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn claims_and_commits_over_tls_with_a_private_ca() {
    let redis = TlsRedis::start();
    let store = RedisStore::connect_tls(&redis.url(), &redis.ca_pem, TIMEOUT)
        .await
        .expect("TLS connection trusting the test CA");
    let lease = Duration::from_secs(30);
    let id = "evt_tls_1";
    assert_eq!(
        store.claim(id, "t1", lease).await.expect("claim"),
        Claim::Claimed
    );
    assert_eq!(
        store.claim(id, "t2", lease).await.expect("claim"),
        Claim::InFlight
    );
    assert_eq!(
        store
            .commit(id, "t1", Duration::from_secs(60))
            .await
            .expect("commit"),
        Commit::Committed
    );
    assert_eq!(
        store.claim(id, "t3", lease).await.expect("claim"),
        Claim::Done
    );
}

#[tokio::test]
async fn refuses_a_certificate_the_system_does_not_trust() {
    let redis = TlsRedis::start();
    // `connect` verifies against the system's trust store, which does not hold the test CA.
    let err = RedisStore::connect_with_timeout(&redis.url(), TIMEOUT)
        .await
        .expect_err("an untrusted certificate must not connect");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn refuses_another_ca() {
    let redis = TlsRedis::start();
    let other_dir = temp_dir();
    let other = make_ca(&other_dir.0);
    let err = RedisStore::connect_tls(&redis.url(), &other, TIMEOUT)
        .await
        .expect_err("a certificate signed by another CA must not connect");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn plain_redis_url_to_a_tls_port_fails_cleanly() {
    let redis = TlsRedis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    assert!(
        RedisStore::connect_with_timeout(&url, TIMEOUT)
            .await
            .is_err()
    );
}
