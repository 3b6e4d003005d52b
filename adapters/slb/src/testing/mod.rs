//! Test harness: a real HAProxy started on 127.0.0.1 for each test, tokio HTTP backends
//! standing in for pods (each on its own 127.0.83.x address, all on the same port, as real
//! pods are), and a minimal keep-alive HTTP/1.1 client.
//!
//! The `haproxy` binary is required: without it the tests fail with a clear message, they
//! never skip.

mod http;

pub use http::*;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Endpoint, RuntimeClient};
use sluice_adapter::{Adapter, Observation, Target, TrafficState};

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(5);

/// A port free on 127.0.0.1 and on every address in `ips`, below the ephemeral range, never
/// handed out twice per process: a simulated pod must be able to bind its port again after
/// a restart.
pub use sluice_adapter::testing::free_port_on as free_port;

/// Picks one port free on every pod address (and on `reserve`, for pods started later)
/// and starts `pods` on it, trying another port if some other process took one meanwhile.
pub async fn start_pods(pods: &[(&str, Ipv4Addr)], reserve: &[Ipv4Addr]) -> (u16, Vec<Pod>) {
    let ips: Vec<Ipv4Addr> = pods.iter().map(|(_, ip)| *ip).chain(reserve.iter().copied()).collect();
    for _ in 0..20 {
        let port = free_port(&ips);
        let mut started = Vec::new();
        for (name, ip) in pods {
            match Pod::try_start(name, *ip, port).await {
                Ok(pod) => started.push(pod),
                Err(_) => break,
            }
        }
        if started.len() == pods.len() {
            return (port, started);
        }
    }
    panic!("could not bind pods {pods:?} on a common port");
}

/// A server line in backend `web`.
pub struct WebServer {
    pub name: &'static str,
    pub ip: Ipv4Addr,
}

/// A running HAProxy child; killed (by PID) on drop.
pub struct Haproxy {
    child: Child,
    pub dir: PathBuf,
    pub admin_sock: PathBuf,
    pub user_sock: PathBuf,
    pub api_tcp: SocketAddr,
    /// Frontend for backend `web` (static servers, cookie `SRV` persistence).
    pub frontend: SocketAddr,
    /// Frontend for backend `dyn` (no servers at start).
    pub frontend_dyn: SocketAddr,
    /// The port every pod (backend server) listens on.
    pub pod_port: u16,
}

impl Haproxy {
    /// Starts HAProxy with backend `web` = `servers` (at `<ip>:pod_port`, `check inter 100
    /// rise 1 fall 1`, `cookie <name>`) and an empty backend `dyn`; waits until the
    /// runtime API answers `show info`.
    pub async fn start(servers: &[WebServer], pod_port: u16) -> Haproxy {
        Self::start_with_options(servers, pod_port, &[]).await
    }

    /// Like [`Haproxy::start`], with extra keywords on some server lines (`("s2",
    /// "disabled")`).
    pub async fn start_with_options(servers: &[WebServer], pod_port: u16, extra: &[(&str, &str)]) -> Haproxy {
        let dir = sluice_adapter::testing::temp_dir("slb-test");
        let [api, fe, fe_dyn] = [(); 3].map(|_| free_port(&[]));
        let admin_sock = dir.join("admin.sock");
        let user_sock = dir.join("user.sock");
        let mut cfg = format!(
            "global\n  stats socket {admin} mode 600 level admin\n  stats socket {user} mode 600 level user\n  \
             stats socket ipv4@127.0.0.1:{api} level admin\n\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n\n\
             frontend fe\n  bind 127.0.0.1:{fe}\n  default_backend web\n\n\
             frontend fe_dyn\n  bind 127.0.0.1:{fe_dyn}\n  default_backend dyn\n\n\
             backend dyn\n  balance roundrobin\n\n\
             backend web\n  balance roundrobin\n  cookie SRV insert indirect nocache\n",
            admin = admin_sock.display(),
            user = user_sock.display(),
        );
        for s in servers {
            cfg.push_str(&format!(
                "  server {n} {ip}:{pod_port} check inter 100 rise 1 fall 1 cookie {n}{more}\n",
                n = s.name,
                ip = s.ip,
                more = extra
                    .iter()
                    .filter(|(n, _)| *n == s.name)
                    .map(|(_, o)| format!(" {o}"))
                    .collect::<String>()
            ));
        }
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("create haproxy.log");
        let child = match Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "the `haproxy` binary is not installed: these tests need a real HAProxy 2.6+ \
                 (apt-get install -y --no-install-recommends haproxy)"
            ),
            Err(e) => panic!("cannot start haproxy: {e}"),
        };
        let mut h = Haproxy {
            child,
            dir,
            admin_sock,
            user_sock,
            api_tcp: SocketAddr::from(([127, 0, 0, 1], api)),
            frontend: SocketAddr::from(([127, 0, 0, 1], fe)),
            frontend_dyn: SocketAddr::from(([127, 0, 0, 1], fe_dyn)),
            pod_port,
        };
        let client = RuntimeClient::new(h.unix_endpoint(), Duration::from_millis(500));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = h.child.try_wait().expect("poll haproxy") {
                panic!("haproxy exited at start ({status}):\n{}", h.log());
            }
            if client
                .raw("show info")
                .await
                .is_ok_and(|out| out.contains("Name: HAProxy"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy runtime API never answered `show info`:\n{}",
                h.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        h
    }

    pub fn unix_endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.admin_sock.clone())
    }

    pub fn tcp_endpoint(&self) -> Endpoint {
        Endpoint::Tcp(self.api_tcp)
    }

    pub fn user_endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.user_sock.clone())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// A raw runtime-API command on the admin socket.
    pub async fn cmd(&self, line: &str) -> String {
        RuntimeClient::new(self.unix_endpoint(), Duration::from_secs(2))
            .raw(line)
            .await
            .expect(line)
    }

    /// The `show stat` row of `backend/server` (`status`, `scur`, ...), or `None`.
    pub async fn stat(&self, backend: &str, server: &str) -> Option<BTreeMap<String, String>> {
        let client = RuntimeClient::new(self.unix_endpoint(), Duration::from_secs(2));
        let rows = client.show_stat_servers(backend).await.expect("show stat");
        rows.into_iter().find(|r| r.svname() == server).map(|r| r.fields())
    }

    /// The `status` column of `backend/server` (`""` when absent).
    pub async fn status(&self, backend: &str, server: &str) -> String {
        self.stat(backend, server)
            .await
            .and_then(|r| r.get("status").cloned())
            .unwrap_or_default()
    }

    /// `show servers state <backend>` without what changes on its own (see
    /// [`stable_servers_state`]): equal snapshots mean nothing was changed.
    pub async fn servers_state_snapshot(&self, backend: &str) -> String {
        let out = self.cmd(&format!("show servers state {backend}")).await;
        stable_servers_state(&out).unwrap_or_else(|e| panic!("show servers state {backend}: {e}\n{out}"))
    }

    /// Waits until `backend/server` has at least `n` current sessions.
    pub async fn wait_scur(&self, backend: &str, server: &str, n: u64) {
        tokio::time::timeout(WAIT, async {
            loop {
                let scur = self
                    .stat(backend, server)
                    .await
                    .and_then(|r| r.get("scur")?.parse::<u64>().ok());
                if scur.unwrap_or(0) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("haproxy to show the in-flight session (scur)");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Columns of `show servers state` that change on their own: the time since the last
/// change ticks, and the last health check's outcome (`srv_check_status`,
/// `srv_check_result`, `srv_check_health`) moves with every check that runs (e.g. `INI`
/// → `L4OK` after a server's first check). A forced `health up|down` still shows in
/// `srv_op_state`, which is kept.
pub const VOLATILE_STATE_COLUMNS: [&str; 4] = [
    "srv_time_since_last_change",
    "srv_check_status",
    "srv_check_result",
    "srv_check_health",
];

/// `show servers state` output reduced to what only a runtime-API write changes: one line
/// per server, `column=value` for every column but [`VOLATILE_STATE_COLUMNS`], with the
/// "check in progress" bit (`0x1`) of `srv_check_state` and `srv_agent_state` cleared (it
/// flips while a check runs).
pub fn stable_servers_state(text: &str) -> Result<String, String> {
    let rows = crate::parse::parse_servers_state(text)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.row
                .fields()
                .iter()
                .filter(|(column, _)| !VOLATILE_STATE_COLUMNS.contains(&column.as_str()))
                .map(|(column, value)| match column.as_str() {
                    "srv_check_state" | "srv_agent_state" => {
                        let masked = value
                            .parse::<u32>()
                            .map_or_else(|_| value.clone(), |v| (v & !1).to_string());
                        format!("{column}={masked}")
                    }
                    _ => format!("{column}={value}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A target for `ip:port` in `backend`.
pub fn target(ip: Ipv4Addr, port: u16, backend: &str) -> Target {
    sluice_adapter::testing::target(ip, port, &[("backend", backend)])
}

/// Polls `observe` every 5 ms until it reports `state`; returns that observation. It never
/// calls `deregister`: a drain needs [`drive_drain`].
pub async fn wait_state(adapter: &dyn Adapter, t: &Target, state: TrafficState, what: &str) -> Observation {
    sluice_adapter::testing::wait_state(adapter, t, state, WAIT, what)
        .await
        .observation
}

/// Drives a drain as the engine does (observe every 5 ms, `deregister` again on `advance`)
/// until `Drained`, within [`WAIT`]; returns that observation.
pub async fn drive_drain(adapter: &dyn Adapter, t: &Target, what: &str) -> Observation {
    sluice_adapter::testing::drive_drain(adapter, t, WAIT, what).await
}

// Pod addresses: all of 127.0.0.0/8 is loopback on Linux. A block of their own keeps these
// tests clear of other harnesses on this machine that use 127.0.0.11 and up.
pub const IP1: Ipv4Addr = Ipv4Addr::new(127, 0, 83, 11);
pub const IP2: Ipv4Addr = Ipv4Addr::new(127, 0, 83, 12);
pub const IP3: Ipv4Addr = Ipv4Addr::new(127, 0, 83, 13);

/// The usual backend `web`: s1, s2, s3 at 127.0.83.11-13.
pub fn three_servers() -> [WebServer; 3] {
    [
        WebServer { name: "s1", ip: IP1 },
        WebServer { name: "s2", ip: IP2 },
        WebServer { name: "s3", ip: IP3 },
    ]
}
