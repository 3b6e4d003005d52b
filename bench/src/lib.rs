//! What the benchmarks share: the `sluice` process they start, waiting, medians.

use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// How long [`until`] waits.
pub const WAIT: Duration = Duration::from_secs(60);

/// A child process, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The release `sluice` binary next to this benchmark's.
pub fn sluice_bin() -> Result<std::path::PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("sluice");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release -p sluice-gateway --bin sluice)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Polls `f` every 5 ms until it answers, for at most [`WAIT`].
pub async fn until<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > WAIT {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The whole HTTP/1.1 answer (status line, headers, body) of `GET path` on the gateway's
/// health listener at `health`; empty when it cannot be reached.
pub async fn health_get(health: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(health).await else {
        return String::new();
    };
    let _ = s
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    buf
}

/// Whether the gateway's `/readyz` at `health` answers 200.
pub async fn ready(health: std::net::SocketAddr) -> bool {
    health_get(health, "/readyz").await.starts_with("HTTP/1.1 200")
}

/// Resident memory of a process (`pid`, or `"self"`), from `/proc/<pid>/status`.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// The `p` quantile (0 to 1) of `v`, nearest rank.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median (the upper one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Holds one request of `ms` through the load balancer at `front` (it lands on some pod);
/// the task answers whether it got a 200.
pub fn hold(front: std::net::SocketAddr, ms: u64) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        let Ok(stream) = tokio::net::TcpStream::connect(front).await else {
            return false;
        };
        let Ok((mut s, conn)) = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        else {
            return false;
        };
        tokio::spawn(conn);
        let req = http::Request::get(format!("/work?ms={ms}"))
            .header("host", "x")
            .body(http_body_util::Empty::new())
            .expect("request literal");
        matches!(s.send_request(req).await, Ok(r) if r.status() == 200)
    })
}

/// Waits until HAProxy counts a session on `server` of backend `web`, then samples it every
/// millisecond: the task answers the instant its last session was gone.
pub async fn session_end(stage: &sluice::demo::Stage, server: &str) -> Result<tokio::task::JoinHandle<Instant>> {
    let haproxy = stage.haproxy();
    let t = Instant::now();
    loop {
        let rows = haproxy.show_stat_servers("web").await?;
        if rows.iter().any(|r| r.svname() == server && r.scur() > 0) {
            break;
        }
        if t.elapsed() > WAIT {
            bail!("HAProxy never counted a session on {server}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let haproxy = stage.haproxy();
    let server = server.to_string();
    Ok(tokio::spawn(async move {
        loop {
            if let Ok(rows) = haproxy.show_stat_servers("web").await {
                if rows.iter().any(|r| r.svname() == server && r.scur() == 0) {
                    return Instant::now();
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }))
}
