//! Helpers for the workspace's own tests, never published: [`RedisServer`], which starts a
//! `redis-server` process on a free loopback port, and [`spans::SpanCapture`], which keeps
//! the spans and events a test produced.

pub mod spans;

/// A Redis server for tests: the one at `AIRMY_REDIS_URL` when that is set,
/// otherwise a `redis-server` started on a free 127.0.0.1 port and stopped when this is
/// dropped.
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    port: u16,
    child: Option<std::process::Child>,
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut server = Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
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

    /// Stops the server this started (for outage tests).
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
