//! [`PostgresServer`]: a throwaway PostgreSQL server from Debian's `postgresql` package, or the
//! one at `AIRMY_POSTGRES_URL`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Where Debian's `postgresql` package puts the server programs (`initdb`, `pg_ctl`).
const BIN_DIRS: [&str; 4] = [
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/14/bin",
];

/// A PostgreSQL server for tests: the one at `AIRMY_POSTGRES_URL` when that is set (each test
/// then uses a schema of its own), otherwise a server of its own: `initdb` into a fresh temp
/// directory, `pg_ctl start` on a free 127.0.0.1 port (as the `postgres` user when the tests
/// run as root, which `initdb` refuses), with `fsync` and `synchronous_commit` on; stopped and
/// removed on drop.
#[derive(Debug)]
pub struct PostgresServer {
    url: String,
    own: Option<Own>,
}

#[derive(Debug)]
struct Own {
    bin: PathBuf,
    dir: PathBuf,
    /// The address it listens on: 127.0.0.1, or a namespace's.
    host: String,
    port: u16,
    as_postgres: bool,
    /// The network namespace it runs in (`ip netns exec`), if not the test's.
    netns: Option<String>,
}

impl PostgresServer {
    /// Uses `AIRMY_POSTGRES_URL`, or starts a server of its own.
    ///
    /// # Panics
    ///
    /// When neither is possible, with a message naming the fix (install `postgresql`, as
    /// `scripts/test` does, or set `AIRMY_POSTGRES_URL`): Postgres tests never skip silently.
    #[must_use]
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("AIRMY_POSTGRES_URL") {
            return Self { url, own: None };
        }
        Self::start_private()
    }

    /// Starts a server of its own even when `AIRMY_POSTGRES_URL` is set (for tests that stop
    /// and restart it).
    ///
    /// # Panics
    ///
    /// When `initdb` or `pg_ctl` cannot be found or fail.
    #[must_use]
    pub fn start_private() -> Self {
        Self::start_own(None)
    }

    /// Starts a server of its own inside `net` (as [`start_private`](Self::start_private)
    /// does, but run through `ip netns exec`), listening on the namespace's address only, port
    /// 5432, and letting in the test's side of the pair (`host … trust` for
    /// [`NetNamespace::host_addr`](crate::NetNamespace::host_addr)): its [`url`](Self::url)
    /// goes through the veth pair, so [`NetNamespace::drop_packets`](crate::NetNamespace::drop_packets)
    /// cuts it off; its [`socket_url`](Self::socket_url) does not. Drop it before `net`.
    ///
    /// # Panics
    ///
    /// As [`start_private`](Self::start_private).
    #[must_use]
    pub fn start_in(net: &crate::NetNamespace) -> Self {
        Self::start_own(Some(net))
    }

    fn start_own(net: Option<&crate::NetNamespace>) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let bin = BIN_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|dir| dir.join("initdb").is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no PostgreSQL server programs under /usr/lib/postgresql/*/bin: install them \
                     with `apt-get install -y postgresql` (scripts/test does), or point \
                     AIRMY_POSTGRES_URL at a server"
                )
            });
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("airmy-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown of {} failed", dir.display());
        }
        // In a namespace of its own every port is free.
        let (host, port) = match net {
            Some(net) => (net.addr().to_string(), 5432),
            None => (
                "127.0.0.1".to_owned(),
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .expect("a free loopback port"),
            ),
        };
        let own = Own {
            bin,
            dir,
            host,
            port,
            as_postgres,
            netns: net.map(|net| net.name().to_owned()),
        };
        own.run(
            "initdb",
            &[
                "-D",
                &own.data().to_string_lossy(),
                "-U",
                "airmy",
                "--auth=trust",
                "--no-instructions",
                "--encoding=UTF8",
            ],
        );
        if let Some(net) = net {
            let hba = own.data().join("pg_hba.conf");
            let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            rules.push_str(&format!("host all all {}/32 trust\n", net.host_addr()));
            std::fs::write(&hba, rules).expect("pg_hba.conf written");
        }
        let server = Self {
            url: format!("postgres://airmy@{}:{port}/postgres", own.host),
            own: Some(own),
        };
        server.start_again();
        server
    }

    /// The server's URL (`postgres://airmy@127.0.0.1:PORT/postgres` for one of its own,
    /// the namespace's address for one [`start_in`](Self::start_in) a namespace).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A URL of the server through its Unix socket
    /// (`postgres://airmy@localhost/postgres?host=DIR&port=PORT`, `host` naming its directory),
    /// which no network partition cuts: a test counts through it while the path of
    /// [`url`](Self::url) drops packets.
    ///
    /// # Panics
    ///
    /// On a server of `AIRMY_POSTGRES_URL`.
    #[must_use]
    pub fn socket_url(&self) -> String {
        let own = self.own.as_ref().expect("a server of its own");
        format!(
            "postgres://airmy@localhost/postgres?host={}&port={}",
            own.dir.display(),
            own.port
        )
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: no checkpoint, as a crash), for
    /// tests of an outage. What was committed survives [`start_again`](Self::start_again).
    ///
    /// # Panics
    ///
    /// On a server of `AIRMY_POSTGRES_URL`, which a test may not stop.
    pub fn stop_immediately(&self) {
        let own = self.own.as_ref().expect("a server of its own");
        own.run(
            "pg_ctl",
            &[
                "-D",
                &own.data().to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Restarts the server (`pg_ctl restart -m fast|immediate`): every session ends (a fast
    /// restart terminates them with `57P01` and checkpoints; an immediate one kills them, as a
    /// crash, and the server recovers from its WAL), open transactions are rolled back, and the
    /// server comes back on the same port with the same options. Returns once it accepts
    /// connections again. Blocking: from async code, call it in `spawn_blocking`, so that the
    /// load the test runs meanwhile goes on.
    ///
    /// # Panics
    ///
    /// On a server of `AIRMY_POSTGRES_URL`, or when it does not come back within 30 s.
    pub fn restart(&self, mode: Stop) {
        let own = self.own.as_ref().expect("a server of its own");
        own.pg_ctl_until_listening("restart", ["-m", mode.as_arg()]);
    }

    /// Starts the server (again) on its port, and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// On a server of `AIRMY_POSTGRES_URL`, or when it does not start within 30 s.
    pub fn start_again(&self) {
        let own = self.own.as_ref().expect("a server of its own");
        let options = format!(
            "-p {} -c listen_addresses={} -c unix_socket_directories={} -c fsync=on \
             -c synchronous_commit=on -c max_connections=200",
            own.port,
            own.host,
            own.dir.display()
        );
        own.pg_ctl_until_listening("start", ["-o", &options]);
    }
}

/// How [`PostgresServer::restart`] stops the server (`pg_ctl -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `-m fast`: sessions terminated (`57P01`), their transactions rolled back, a checkpoint.
    Fast,
    /// `-m immediate`: every process killed at once, recovery from the WAL at start (a crash).
    Immediate,
}

impl Stop {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        }
    }
}

impl Own {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `pg_ctl ACTION` with `option` (its log to `server.log`, waiting up to 30 s), then waits
    /// until the server's port takes connections.
    fn pg_ctl_until_listening(&self, action: &str, option: [&str; 2]) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &self.dir.join("server.log").to_string_lossy(),
                option[0],
                option[1],
                "-w",
                "-t",
                "30",
                action,
            ],
        );
        self.wait_listening();
    }

    /// Waits until the server's port takes connections (30 s at most).
    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((self.host.as_str(), self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "postgres did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `path` as a command: as the `postgres` user when we are root, inside the server's
    /// network namespace when it has one.
    fn command(&self, path: &std::path::Path) -> Command {
        let mut words: Vec<&std::ffi::OsStr> = Vec::new();
        if let Some(name) = &self.netns {
            words.extend(["ip", "netns", "exec", name.as_str()].map(std::ffi::OsStr::new));
        }
        if self.as_postgres {
            words.extend(["runuser", "-u", "postgres", "--"].map(std::ffi::OsStr::new));
        }
        words.push(path.as_os_str());
        let mut command = Command::new(words[0]);
        command.args(&words[1..]);
        command
    }

    /// Runs one of the server programs, as the `postgres` user when we are root; panics with
    /// its output when it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let output = self
            .command(&path)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            // Quietly: the server may be stopped already.
            let data = own.data();
            let _ = own
                .command(&own.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&own.dir);
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A schema name no other test of this process (or another) uses, for tests sharing one server.
#[must_use]
pub fn unique_schema(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("t_{clean}_{}_{n}_{nanos}", std::process::id())
}
