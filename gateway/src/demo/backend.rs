//! A pod's workload in the demo: a real HTTP/1.1 keep-alive server on the pod's own
//! loopback address. `/healthz` answers at once; `/work?ms=N` answers after N ms. Dropping
//! it stops the process the way a container stops: listener closed, every connection cut.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Backend {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// The response header naming the pod address that served a request (tests tell apart the
/// requests a drained pod held).
pub const SERVED_BY: &str = "x-served-by";

async fn handle(req: Request<hyper::body::Incoming>, addr: SocketAddr) -> Result<Response<Full<Bytes>>, Infallible> {
    let ms: u64 = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if req.uri().path() == "/work" && ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
    if let Ok(v) = http::HeaderValue::from_str(&addr.ip().to_string()) {
        resp.headers_mut().insert(SERVED_BY, v);
    }
    Ok(resp)
}

impl Backend {
    pub async fn start(addr: SocketAddr) -> anyhow::Result<Backend> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let mut stop_rx = stop_rx.clone();
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(
                            TokioIo::new(stream),
                            hyper::service::service_fn(move |req| handle(req, addr)),
                        );
                    tokio::select! {
                        _ = conn => {}
                        _ = stop_rx.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        Ok(Backend { stop, task })
    }
}
