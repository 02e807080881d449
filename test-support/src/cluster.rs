//! [`RedisCluster`]: a throwaway Redis Cluster of three primaries and three replicas, each a
//! `redis-server` on loopback ports with AOF `appendfsync always`, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{TempDir, temp_dir};

/// One node of a [`RedisCluster`].
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A local Redis Cluster for tests: six `redis-server` processes (`cluster-enabled yes`,
/// `appendonly yes`, `appendfsync always`) on free 127.0.0.1 ports in a temporary directory,
/// joined by `redis-cli --cluster create … --cluster-replicas 1`: three primaries, each with
/// one replica. Every process is killed (and the directory removed) on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// `requirepass` (and `masterauth`) of every node, if any.
    password: Option<String>,
    _dir: TempDir,
}

/// How long the cluster may take to form, or to settle after a failover.
const SETTLE: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Starts the six nodes, creates the cluster and waits (at most 30 s) until every node
    /// says `cluster_state:ok` and every replica's link to its primary is up.
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` cannot run (`apt-get install -y redis-server`, as
    /// `scripts/test` does), or the cluster does not form in time: cluster tests never skip.
    #[must_use]
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Starts a cluster as [`start`](Self::start) does, every node with `requirepass` (and
    /// `masterauth`, for its replica) set to `password`; [`urls`](Self::urls) and
    /// [`seed_url`](Self::seed_url) carry it.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    #[must_use]
    pub fn start_with_password(password: &str) -> Self {
        Self::launch(Some(password.to_owned()))
    }

    fn launch(password: Option<String>) -> Self {
        let dir = temp_dir();
        // Twelve distinct free ports, all held while choosing: six for clients, six for the
        // cluster bus (`cluster-port`; the default, port + 10000, may not exist).
        let listeners: Vec<_> = (0..12)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("a local address").port())
            .collect();
        drop(listeners);
        let mut nodes = Vec::with_capacity(6);
        for (port, bus) in ports[..6].iter().zip(&ports[6..]) {
            let node_dir = dir.0.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("a node's directory");
            let auth: Vec<&str> = match &password {
                Some(p) => vec!["--requirepass", p, "--masterauth", p],
                None => Vec::new(),
            };
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(&auth)
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"])
                .args([
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|err| {
                    panic!(
                        "cannot start redis-server ({err}): install it with \
                         `apt-get install -y redis-server` (scripts/test does)"
                    )
                });
            nodes.push(Node {
                port: *port,
                child: Some(child),
            });
        }
        let cluster = Self {
            nodes,
            password,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &cluster.nodes {
            while !cluster.cli(node.port, &["PING"]).contains("PONG") {
                assert!(
                    Instant::now() < deadline,
                    "redis-server did not answer PING on port {} within 10 s",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(cluster.auth())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (Debian package redis-tools, with redis-server) runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.wait_until_settled();
        cluster
    }

    /// Waits (at most 30 s) until every running node says `cluster_state:ok`, agrees on the
    /// owner of every slot, and every replica's link to its primary is up.
    ///
    /// # Panics
    ///
    /// When the cluster does not settle in time.
    pub fn wait_until_settled(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            if self.settled() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not reach cluster_state:ok within {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn settled(&self) -> bool {
        let running: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect();
        let mut views = Vec::new();
        for &port in &running {
            if !self
                .cli(port, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                return false;
            }
            let replication = self.cli(port, &["INFO", "replication"]);
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return false;
            }
            views.push(primaries(&self.cli(port, &["CLUSTER", "NODES"])));
        }
        views.windows(2).all(|w| w[0] == w[1])
    }

    /// `redis://127.0.0.1:PORT` of every node, primaries and replicas (with the password,
    /// `redis://:PASSWORD@…`, when the cluster has one).
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| self.url(n.port)).collect()
    }

    /// The URL of one node to start from (the first; the client discovers the others).
    #[must_use]
    pub fn seed_url(&self) -> String {
        self.url(self.nodes[0].port)
    }

    /// The URL of the node on `port` (with the password, when the cluster has one).
    #[must_use]
    pub fn url(&self, port: u16) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
            None => format!("redis://127.0.0.1:{port}"),
        }
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`; a hash tag `{…}` decides it).
    #[must_use]
    pub fn slot(&self, key: &str) -> u16 {
        self.cli(self.any_port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// The port of the primary that owns `key`'s slot now.
    ///
    /// # Panics
    ///
    /// When no node owns the slot.
    #[must_use]
    pub fn primary_of(&self, key: &str) -> u16 {
        let slot = self.slot(key);
        let nodes = self.cli(self.any_port(), &["CLUSTER", "NODES"]);
        parse_nodes(&nodes)
            .into_iter()
            .find(|n| n.primary.is_none() && n.slots.iter().any(|r| r.contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no primary owns slot {slot}:\n{nodes}"))
    }

    /// The port of a replica of the primary that owns `key`'s slot now.
    ///
    /// # Panics
    ///
    /// When that primary has no replica.
    #[must_use]
    pub fn replica_of(&self, key: &str) -> u16 {
        let primary = self.primary_of(key);
        let nodes = parse_nodes(&self.cli(self.any_port(), &["CLUSTER", "NODES"]));
        let id = nodes
            .iter()
            .find(|n| n.port == primary)
            .map(|n| n.id.clone())
            .expect("the primary is listed");
        nodes
            .into_iter()
            .find(|n| n.primary.as_deref() == Some(&id) && !n.failed)
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("the primary on port {primary} has no replica"))
    }

    /// `CLUSTER FAILOVER` on the replica of `key`'s slot's primary: the replica takes over
    /// (with the primary's agreement, nothing acknowledged lost); waits until the cluster has
    /// settled on the new primary. Returns the new primary's port.
    ///
    /// # Panics
    ///
    /// When the failover does not complete within 30 s.
    pub fn failover(&self, key: &str) -> u16 {
        let replica = self.replica_of(key);
        let answer = self.cli(replica, &["CLUSTER", "FAILOVER"]);
        assert!(answer.trim() == "OK", "CLUSTER FAILOVER answered {answer}");
        let deadline = Instant::now() + SETTLE;
        while !self.cli(replica, &["ROLE"]).starts_with("master") || self.primary_of(key) != replica
        {
            assert!(Instant::now() < deadline, "the failover did not complete");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_until_settled();
        replica
    }

    /// Moves `key`'s slot, with every key in it, to the primary on `to`, as resharding does:
    /// `CLUSTER SETSLOT … IMPORTING` / `MIGRATING`, `MIGRATE` in batches of 100 keys (clients
    /// get `ASK` and `TRYAGAIN` meanwhile), then `CLUSTER SETSLOT … NODE` on every primary;
    /// waits until the cluster has settled.
    ///
    /// # Panics
    ///
    /// When a step fails, or `to` already owns the slot.
    pub fn migrate(&self, key: &str, to: u16) {
        let slot = self.slot(key).to_string();
        let from = self.primary_of(key);
        assert_ne!(from, to, "the slot is on port {to} already");
        let nodes = parse_nodes(&self.cli(self.any_port(), &["CLUSTER", "NODES"]));
        let id = |port: u16| {
            nodes
                .iter()
                .find(|n| n.port == port)
                .map(|n| n.id.clone())
                .expect("a node of the cluster")
        };
        let (from_id, to_id) = (id(from), id(to));
        let ok = |port: u16, args: &[&str]| {
            let answer = self.cli(port, args);
            assert_eq!(answer.trim(), "OK", "{args:?} on {port}: {answer}");
        };
        ok(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        let to_port = to.to_string();
        loop {
            let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000"];
            if let Some(password) = &self.password {
                args.extend(["AUTH", password.as_str()]);
            }
            args.push("KEYS");
            args.extend(keys);
            let answer = self.cli(from, &args);
            assert!(
                matches!(answer.trim(), "OK" | "NOKEY"),
                "MIGRATE answered {answer}"
            );
        }
        ok(to, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        for node in nodes.iter().filter(|n| n.primary.is_none() && !n.failed) {
            if node.port != to && node.port != from {
                ok(node.port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
            }
        }
        let deadline = Instant::now() + SETTLE;
        while self.primary_of(key) != to {
            assert!(Instant::now() < deadline, "the slot did not move");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_until_settled();
    }

    /// The ports of the primaries, as the cluster sees them now.
    #[must_use]
    pub fn primaries(&self) -> Vec<u16> {
        primaries(&self.cli(self.any_port(), &["CLUSTER", "NODES"]))
            .into_iter()
            .map(|(port, _)| port)
            .collect()
    }

    /// Kills the node on `port` (`SIGKILL`, as a crash would); it stays down.
    ///
    /// # Panics
    ///
    /// When no running node of this cluster listens on `port`.
    pub fn kill(&mut self, port: u16) {
        let mut child = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .and_then(|n| n.child.take())
            .unwrap_or_else(|| panic!("no running node on port {port}"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes the node on `port` (`SIGSTOP`): its connections stay open, nothing it should
    /// read or answer is, until [`resume`](Self::resume). A frozen replica acknowledges no
    /// replication while its primary still counts it as attached.
    ///
    /// # Panics
    ///
    /// When no running node of this cluster listens on `port`.
    pub fn pause(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// Lets a node frozen by [`pause`](Self::pause) run again (`SIGCONT`).
    ///
    /// # Panics
    ///
    /// When no running node of this cluster listens on `port`.
    pub fn resume(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let pid = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
            .map(Child::id)
            .unwrap_or_else(|| panic!("no running node on port {port}"));
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// `redis-cli` on the node on `port` (with the cluster's password): its output, empty when
    /// the node does not answer.
    #[must_use]
    pub fn command(&self, port: u16, args: &[&str]) -> String {
        self.cli(port, args)
    }

    /// `-a PASSWORD --no-auth-warning` for `redis-cli`, when the cluster has a password.
    fn auth(&self) -> Vec<&str> {
        match &self.password {
            Some(password) => vec!["-a", password, "--no-auth-warning"],
            None => Vec::new(),
        }
    }

    /// `redis-cli -p PORT ARGS…`'s output (empty when the node does not answer).
    fn cli(&self, port: u16, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(self.auth())
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn any_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node")
            .port
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    port: u16,
    /// The primary's id, for a replica.
    primary: Option<String>,
    failed: bool,
    slots: Vec<std::ops::RangeInclusive<u16>>,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields[2];
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some(a.parse().ok()?..=b.parse().ok()?),
                    None => {
                        let n = s.parse().ok()?;
                        Some(n..=n)
                    }
                })
                .collect();
            Some(NodeLine {
                id: fields[0].to_owned(),
                port,
                primary: (fields[3] != "-").then(|| fields[3].to_owned()),
                failed: flags.contains("fail"),
                slots,
            })
        })
        .collect()
}

/// Who owns which slots, as one node sees it: `(primary port, slot ranges)`, sorted.
fn primaries(text: &str) -> Vec<(u16, Vec<(u16, u16)>)> {
    let mut owners: Vec<_> = parse_nodes(text)
        .into_iter()
        .filter(|n| n.primary.is_none() && !n.slots.is_empty())
        .map(|n| {
            (
                n.port,
                n.slots.iter().map(|r| (*r.start(), *r.end())).collect(),
            )
        })
        .collect();
    owners.sort();
    owners
}

#[cfg(test)]
mod tests {
    use super::parse_nodes;

    #[test]
    fn reads_cluster_nodes_lines() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
b2 127.0.0.1:7001@17001 slave a1 0 1 1 connected\n\
c3 127.0.0.1:7002@17002 master - 0 1 2 connected 5461 5462-10922 [5463->-d4]\n";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].port, 7000);
        assert!(nodes[0].slots[0].contains(&5460));
        assert_eq!(nodes[1].primary.as_deref(), Some("a1"));
        assert_eq!(nodes[2].slots.len(), 2);
        assert!(!nodes[1].failed);
    }
}
