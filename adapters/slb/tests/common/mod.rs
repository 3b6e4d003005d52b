//! Test harness: a real HAProxy started on 127.0.0.1 for each test, tokio HTTP backends
//! standing in for pods (each on its own 127.0.0.x address, all on the same port, as real
//! pods are), and a minimal keep-alive HTTP/1.1 client.
//!
//! The `haproxy` binary is required: without it the tests fail with a clear message, they
//! never skip.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, Observation, PodRef, Target, TrafficState};
use sluice_adapter_slb::{Endpoint, RuntimeClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(5);

/// A port free on 127.0.0.1 and on every address in `ips`, never handed out twice per
/// process. Ports come from below the kernel's ephemeral range: an ephemeral port can be
/// taken at any moment by an outgoing connection (HAProxy's checks, test clients), and a
/// simulated pod must be able to bind its port again after a restart.
pub fn free_port(ips: &[Ipv4Addr]) -> u16 {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(|| Mutex::new(HashSet::new()));
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(12_000));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut candidate = low + (std::process::id().wrapping_mul(7919) ^ nanos) % (high - low);
    for _ in 0..2_000 {
        candidate = if candidate + 1 >= high { low } else { candidate + 1 };
        let port = candidate as u16;
        let free = std::iter::once(Ipv4Addr::LOCALHOST)
            .chain(ips.iter().copied())
            .all(|ip| StdListener::bind((ip, port)).is_ok());
        if free && taken.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no free port below the ephemeral range on 127.0.0.1 and {ips:?}");
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
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-slb-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
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
                "  server {n} {ip}:{pod_port} check inter 100 rise 1 fall 1 cookie {n}\n",
                n = s.name,
                ip = s.ip
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
        rows.into_iter().find(|r| r.svname() == server).map(|r| r.fields)
    }

    /// The `status` column of `backend/server` (`""` when absent).
    pub async fn status(&self, backend: &str, server: &str) -> String {
        self.stat(backend, server)
            .await
            .and_then(|r| r.get("status").cloned())
            .unwrap_or_default()
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

/// A simulated pod: answers `HTTP/1.1 200 OK` with its name as body, keep-alive;
/// `GET /hold/<ms>` holds the request that long first. Stops (every connection) on drop.
pub struct Pod {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Pod {
    pub async fn start(name: &str, ip: Ipv4Addr, port: u16) -> Pod {
        let listener = TcpListener::bind((ip, port))
            .await
            .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
        let hits = Arc::new(AtomicU64::new(0));
        let (body, counter) = (name.to_string(), hits.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                conns.spawn(serve(stream, body.clone(), counter.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        Pod {
            name: name.to_string(),
            addr: SocketAddr::from((ip, port)),
            hits,
            task,
        }
    }

    /// Requests answered (or being held) so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, body: String, hits: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        hits.fetch_add(1, Ordering::SeqCst);
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        if let Some(ms) = path.strip_prefix("/hold/").and_then(|ms| ms.parse::<u64>().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads until `\r\n\r\n`; returns the head's length, or `None` at EOF / error.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(pos + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An HTTP response as the test client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect to the frontend")
            .expect("connect to the frontend");
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// `GET path`, with `Cookie: SRV=<sticky>` when given. Errors when the connection is cut.
    pub async fn get(&mut self, path: &str, sticky: Option<&str>) -> std::io::Result<Response> {
        let cookie = sticky.map(|s| format!("Cookie: SRV={s}\r\n")).unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{cookie}\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-response");
        let end = read_head(&mut self.stream, &mut self.buf).await.ok_or_else(eof)?;
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        self.buf.drain(..end);
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while self.buf.len() < len {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await? {
                0 => return Err(eof()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&self.buf[..len]).to_string();
        self.buf.drain(..len);
        Ok(Response { status, body })
    }
}

/// One request on a fresh connection.
pub async fn get_once(addr: SocketAddr, path: &str, sticky: Option<&str>) -> Response {
    let mut c = Client::connect(addr).await;
    tokio::time::timeout(WAIT, c.get(path, sticky))
        .await
        .expect("a response")
        .expect("a response")
}

/// A target for `ip:port` in `backend`.
pub fn target(ip: Ipv4Addr, port: u16, backend: &str) -> Target {
    Target {
        pod: PodRef {
            cluster: "test".into(),
            namespace: "default".into(),
            name: format!("pod-{ip}"),
            uid: ip.to_string(),
        },
        ip: IpAddr::V4(ip),
        port,
        params: BTreeMap::from([("backend".to_string(), backend.to_string())]),
    }
}

/// Polls `observe` every 5 ms until it reports `state`; returns that observation.
pub async fn wait_state(adapter: &dyn Adapter, t: &Target, state: TrafficState, what: &str) -> Observation {
    tokio::time::timeout(WAIT, async {
        loop {
            let obs = adapter.observe(t).await.expect("observe");
            if obs.state == state {
                return obs;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect(what)
}

pub const IP1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
pub const IP2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);
pub const IP3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 13);

/// The usual backend `web`: s1, s2, s3 at 127.0.0.11-13.
pub fn three_servers() -> [WebServer; 3] {
    [
        WebServer { name: "s1", ip: IP1 },
        WebServer { name: "s2", ip: IP2 },
        WebServer { name: "s3", ip: IP3 },
    ]
}
