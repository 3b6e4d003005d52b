//! The demo's load: keep-alive HTTP clients through HAProxy, with a mix of short and long
//! requests (90 % 5–50 ms, 10 % 200–800 ms). Failures are counted at the client — a
//! request cut on a keep-alive connection is mostly a silent close, which HAProxy's own
//! counters miss.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rand::Rng;

fn next_duration_ms() -> u64 {
    let mut rng = rand::rng();
    if rng.random_bool(0.9) {
        rng.random_range(5..=50)
    } else {
        rng.random_range(200..=800)
    }
}

/// A request unanswered this long counts as failed (the longest one the demo sends takes
/// 800 ms).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(front: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(front).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One client: sends requests back to back until `stop`.
pub async fn client(
    front: SocketAddr,
    id: u64,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    longest: Arc<AtomicU64>,
) {
    let mut sender: Option<Sender> = None;
    while !stop.load(Ordering::SeqCst) {
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(front).await {
                Ok(s) => sender.insert(s),
                Err(_) => {
                    requests.fetch_add(1, Ordering::SeqCst);
                    failed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let ms = next_duration_ms();
        let req = http::Request::get(format!("/work?ms={ms}&client={id}"))
            .header(http::header::HOST, "demo.local")
            .body(Empty::<Bytes>::new())
            .expect("request literal");
        // The longest request takes 800 ms: one still unanswered after REQUEST_TIMEOUT hung,
        // and a hung request is a failed one.
        let exchange = async {
            match s.send_request(req).await {
                Ok(resp) if resp.status() == http::StatusCode::OK => match resp.into_body().collect().await {
                    Ok(b) => b.to_bytes().as_ref() == b"ok",
                    Err(_) => false,
                },
                _ => false,
            }
        };
        let started = std::time::Instant::now();
        let ok = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.unwrap_or(false);
        if ok {
            longest.fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
        }
        requests.fetch_add(1, Ordering::SeqCst);
        if !ok {
            failed.fetch_add(1, Ordering::SeqCst);
            sender = None;
        }
    }
}

/// A set of clients running until [`Load::finish`], counting requests and failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    /// The longest request answered, in ms (its time in flight, at the client).
    pub longest_ms: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` keep-alive clients through `front`.
    pub fn start(front: SocketAddr, clients: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let longest_ms = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|id| {
                tokio::spawn(client(
                    front,
                    id,
                    stop.clone(),
                    requests.clone(),
                    failed.clone(),
                    longest_ms.clone(),
                ))
            })
            .collect();
        Load {
            stop,
            requests,
            failed,
            longest_ms,
            tasks,
        }
    }

    /// (requests, failed) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.requests.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }

    /// Stops the clients and answers (requests, failed). Every client finishes its last
    /// request within [`REQUEST_TIMEOUT`] (it gives up on a request by then, counting it
    /// failed); a client that does not is hung, and its request counts as failed too —
    /// nothing in flight is dropped from the count.
    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for mut t in self.tasks {
            if tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                t.abort();
                self.requests.fetch_add(1, Ordering::SeqCst);
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
        (self.requests.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}
