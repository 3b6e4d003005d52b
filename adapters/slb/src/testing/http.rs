//! Simulated pods and a test client: a tokio HTTP/1.1 server per pod address that answers
//! `200 OK` with keep-alive (and can hold a request to simulate in-flight work), and a
//! minimal keep-alive client that can pin itself to a server with the `SRV` cookie.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::WAIT;

/// A simulated pod: answers `HTTP/1.1 200 OK` with its name as body, keep-alive;
/// `GET /hold/<ms>` holds the request that long first. Stops (every connection) on drop.
pub struct Pod {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Pod {
    /// Starts a pod; panics when `ip:port` cannot be bound.
    pub async fn start(name: &str, ip: Ipv4Addr, port: u16) -> Pod {
        Pod::try_start(name, ip, port)
            .await
            .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"))
    }

    /// Starts a pod, or says why `ip:port` cannot be bound.
    pub async fn try_start(name: &str, ip: Ipv4Addr, port: u16) -> std::io::Result<Pod> {
        let listener = TcpListener::bind((ip, port)).await?;
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
        Ok(Pod {
            name: name.to_string(),
            addr: SocketAddr::from((ip, port)),
            hits,
            task,
        })
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
