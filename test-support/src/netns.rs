//! [`NetNamespace`]: a network namespace of the test's own, joined to this one by a veth pair,
//! whose path can be cut by dropping packets (a network partition) and healed.
//!
//! A server started inside it ([`PostgresServer::start_in`](crate::PostgresServer::start_in))
//! is reached from the test's own namespace at [`NetNamespace::addr`]; while
//! [`drop_packets`](NetNamespace::drop_packets) is on, every packet on that path is dropped
//! (never refused: nothing answers, nothing fails fast), as on a real partition. The rules
//! live in the namespace's own firewall, so the machine's is never touched, and the addresses
//! are a free /30 of `10.213.0.0/16`.
//!
//! Needs root, iproute2 (`ip`) and iptables (`scripts/test` installs them): without them
//! [`NetNamespace::new`] panics saying so, and a test using it fails rather than skips.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace and a veth pair, made for one test: the test's side of the pair is in
/// the test's namespace with [`host_addr`](Self::host_addr), the other side in the new
/// namespace with [`addr`](Self::addr). Names carry the process id
/// (`airmy-PID-N`, interfaces `amPIDhN` / `amPIDnN`), so parallel runs never collide; the
/// namespace (its end of the pair, the other end with it, its firewall rules) is deleted on
/// drop, a panic included. Namespaces left by a process that died without dropping its own
/// (`kill -9`) are deleted by the next one made.
#[derive(Debug)]
pub struct NetNamespace {
    name: String,
    host_if: String,
    ns_if: String,
    host_addr: Ipv4Addr,
    addr: Ipv4Addr,
}

impl NetNamespace {
    /// Makes the namespace and the pair, addresses on both ends, links up (`lo` too).
    ///
    /// # Panics
    ///
    /// When `ip netns add` is not permitted or `ip` is missing (with the reason: run as root,
    /// install `iproute2`, as `scripts/test` does), or a later step fails.
    #[must_use]
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        remove_stale();
        let name = format!("airmy-{pid}-{n}");
        let (host_if, ns_if) = (format!("am{pid}h{n}"), format!("am{pid}n{n}"));
        let made = Command::new("ip").args(["netns", "add", &name]).output();
        match made {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "cannot make a network namespace (`ip netns add {name}`: {}): the partition \
                 tests need root, iproute2 and iptables (scripts/test installs them); they \
                 never skip",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!(
                "cannot run `ip` ({e}): the partition tests need iproute2 and iptables \
                 (`apt-get install -y iproute2 iptables`, as scripts/test does) and root"
            ),
        }
        // Owned from here: a failure below deletes the namespace (and the pair with it).
        let (host_addr, addr) = free_subnet(pid.wrapping_mul(7).wrapping_add(n));
        let net = Self {
            name,
            host_if,
            ns_if,
            host_addr,
            addr,
        };
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.ns_if,
        ]);
        ip(&["link", "set", &net.ns_if, "netns", &net.name]);
        ip(&[
            "addr",
            "add",
            &format!("{host_addr}/30"),
            "dev",
            &net.host_if,
        ]);
        ip(&["link", "set", &net.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &net.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{addr}/30"), "dev", &net.ns_if]);
        inside(&["link", "set", &net.ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        net
    }

    /// The namespace's name (`airmy-PID-N`), for `ip netns exec`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address of the namespace's end of the pair: where a server inside it listens.
    #[must_use]
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The address of the test's end of the pair: where connections from this side come from
    /// (what a server inside sees as `client_addr`).
    #[must_use]
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`); what
    /// it starts (a server's daemon too) stays inside.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program.as_ref());
        command
    }

    /// Cuts the path: every packet in or out of the namespace's end of the pair is dropped
    /// (`iptables -A INPUT -i IF -j DROP` and `-A OUTPUT -o IF -j DROP` in the namespace's own
    /// firewall). Connections stay open on both sides; nothing is refused or reset.
    ///
    /// # Panics
    ///
    /// When `iptables` is missing or refuses (the message says so).
    pub fn drop_packets(&self) {
        self.iptables("-A");
    }

    /// Heals the path cut by [`drop_packets`](Self::drop_packets): the rules are removed,
    /// and what TCP retransmits gets through again.
    ///
    /// # Panics
    ///
    /// When the rules cannot be removed (not added before, or `iptables` failing).
    pub fn heal(&self) {
        self.iptables("-D");
    }

    /// The TCP sockets of the test's namespace (this process's and its children's, any
    /// other's on the machine too) connected to [`addr`](Self::addr) at `port`, from
    /// `/proc/net/tcp`: how many are established, and how many are in another state but
    /// `TIME_WAIT` (closing, or half-open). A test compares them with what the server
    /// inside counts (`pg_stat_activity`) to find a connection left on one side only.
    ///
    /// # Panics
    ///
    /// When `/proc/net/tcp` cannot be read.
    #[must_use]
    pub fn sockets_to(&self, port: u16) -> (usize, usize) {
        // An address shows as the hex of its bytes read as a native integer.
        let remote = format!("{:08X}:{port:04X}", u32::from_ne_bytes(self.addr.octets()));
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        let (mut established, mut other) = (0, 0);
        for line in table.lines().skip(1) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.get(2..4) {
                Some([to, "01"]) if *to == remote => established += 1,
                Some([to, "06"]) if *to == remote => {}
                Some([to, _]) if *to == remote => other += 1,
                _ => {}
            }
        }
        (established, other)
    }

    fn iptables(&self, action: &str) {
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            let out = self
                .command("iptables")
                .args(["-w", action, chain, dir, &self.ns_if, "-j", "DROP"])
                .output()
                .unwrap_or_else(|e| panic!("cannot run `ip netns exec … iptables`: {e}"));
            assert!(
                out.status.success(),
                "iptables {action} {chain} in {} failed ({}): the partition tests need \
                 iptables (`apt-get install -y iptables`, as scripts/test does) and root",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

impl Default for NetNamespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        // The pair goes with it: deleting the namespace deletes its end, and a veth's two
        // ends go together.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        // Made but never moved (a failure half-way): this end is ours to delete.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// Runs `ip ARGS`, panicking with its error when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip`: {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A /30 of `10.213.0.0/16` (its two usable addresses) that no interface of this namespace
/// uses, starting the search at `seed`.
fn free_subnet(seed: u32) -> (Ipv4Addr, Ipv4Addr) {
    let used = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for k in 0..16_384u32 {
        let i = (seed.wrapping_add(k)) % 16_384;
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + i * 4;
        let (host, ns) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        if !used.contains(&format!(" {host}/")) && !used.contains(&format!(" {ns}/")) {
            return (host, ns);
        }
    }
    panic!("no free /30 left in 10.213.0.0/16");
}

/// Deletes the namespaces (`airmy-PID-N`) of processes that are gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("airmy-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
