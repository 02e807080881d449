//! [`PgBouncer`]: Debian's `pgbouncer` in transaction pooling mode in front of a
//! [`PostgresServer`], as production often runs PostgreSQL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::PostgresServer;

/// Where Debian's `pgbouncer` package installs the program.
const PROGRAM: &str = "/usr/sbin/pgbouncer";

/// A PgBouncer for tests: `pool_mode = transaction` (server connections change between
/// transactions, so named prepared statements and `LISTEN` do not survive), on a free
/// 127.0.0.1 port, no Unix socket, `auth_type = any` (every client logs in as the server's
/// user), the server's database under the same name; as the `postgres` user when the tests run
/// as root (which pgbouncer refuses). Killed and its directory removed on drop.
#[derive(Debug)]
pub struct PgBouncer {
    url: String,
    child: Child,
    dir: PathBuf,
}

/// The parts of a `postgres://user[:password]@host[:port]/database` URL PgBouncer needs.
struct Target {
    user: String,
    password: Option<String>,
    host: String,
    port: u16,
    database: String,
}

fn target(url: &str) -> Target {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or_else(|| panic!("not a postgres:// URL: {url}"));
    let rest = rest.split('?').next().unwrap_or(rest);
    let (auth, rest) = rest.rsplit_once('@').expect("a user in the URL");
    let (user, password) = match auth.split_once(':') {
        Some((user, password)) => (user.to_owned(), Some(password.to_owned())),
        None => (auth.to_owned(), None),
    };
    let (host_port, database) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().expect("a port")),
        None => (host_port.to_owned(), 5432),
    };
    Target {
        user,
        password,
        host,
        port,
        database: database.to_owned(),
    }
}

impl PgBouncer {
    /// Starts PgBouncer in front of `server`, and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When `/usr/sbin/pgbouncer` is missing (install it with `apt-get install -y pgbouncer`,
    /// as `scripts/test` does) or does not listen within 10 s (its log is in the message).
    #[must_use]
    pub fn start(server: &PostgresServer) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        assert!(
            std::path::Path::new(PROGRAM).is_file(),
            "no {PROGRAM}: install it with `apt-get install -y pgbouncer` (scripts/test does)"
        );
        let t = target(server.url());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("airmy-pgb-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let password = t
            .password
            .as_deref()
            .map(|p| format!(" password={p}"))
            .unwrap_or_default();
        let ini = format!(
            "[databases]\n\
             {db} = host={host} port={pgport} dbname={db} user={user}{password}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             pool_mode = transaction\n\
             max_client_conn = 500\n\
             default_pool_size = 20\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {log}\n\
             pidfile = {pid}\n",
            db = t.database,
            host = t.host,
            pgport = t.port,
            user = t.user,
            log = dir.join("pgbouncer.log").display(),
            pid = dir.join("pgbouncer.pid").display(),
        );
        let config = dir.join("pgbouncer.ini");
        std::fs::write(&config, ini).expect("pgbouncer.ini written");
        let mut command = Command::new(PROGRAM);
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown of {} failed", dir.display());
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg("-q")
            .arg(&config)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PROGRAM}: {e}"));
        let mut bouncer = Self {
            url: format!("postgres://{}@127.0.0.1:{port}/{}", t.user, t.database),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline || bouncer.child.try_wait().ok().flatten().is_some() {
                let log =
                    std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default();
                panic!("pgbouncer did not listen on 127.0.0.1:{port} within 10 s: {log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// PgBouncer's URL (`postgres://USER@127.0.0.1:PORT/DATABASE`: the server's user and
    /// database, its password left to PgBouncer).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
