//! A TCP forwarder on 127.0.0.1 that a conformance subject puts between an adapter and its
//! backend, to take the backend "down" (connections refused, live ones cut) or make it
//! slow (every chunk sent towards the backend waits first — on new and live connections).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultyProxy {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    applied: Arc<Applied>,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultyProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `backend`.
    pub async fn start(backend: SocketAddr) -> std::io::Result<FaultyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (up, up_rx) = watch::channel(true);
        let applied = Arc::new(Applied {
            listening: AtomicBool::new(true),
            live: AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(listener, addr, backend, delay_ms.clone(), up_rx, applied.clone()));
        Ok(FaultyProxy {
            addr,
            delay_ms,
            applied,
            up,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Down: the listener closes (connections refused) and live connections are cut. Returns
    /// once that has happened (up: once the listener accepts again), so a call made right
    /// after cannot slip through a connection that was about to be cut.
    pub async fn set_up(&self, up: bool) {
        self.up.send_replace(up);
        let start = std::time::Instant::now();
        while !self.applied.is(up) {
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "the proxy on {} did not go {} within 10 s",
                    self.addr,
                    if up { "up" } else { "down" }
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

/// What the serving task has really done, as opposed to what it was asked.
struct Applied {
    listening: AtomicBool,
    live: AtomicUsize,
}

impl Applied {
    fn is(&self, up: bool) -> bool {
        if up {
            self.listening.load(Ordering::SeqCst)
        } else {
            !self.listening.load(Ordering::SeqCst) && self.live.load(Ordering::SeqCst) == 0
        }
    }
}

/// Counts a live forwarded connection until it is dropped (both sockets closed).
struct Live(Arc<Applied>);

impl Live {
    fn new(applied: &Arc<Applied>) -> Live {
        applied.live.fetch_add(1, Ordering::SeqCst);
        Live(applied.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Copies one direction; towards the backend, each chunk first waits the current delay.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Option<Arc<AtomicU64>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(d) = &delay {
            let ms = d.load(Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn serve(
    first: TcpListener,
    addr: SocketAddr,
    backend: SocketAddr,
    delay: Arc<AtomicU64>,
    mut up: watch::Receiver<bool>,
    applied: Arc<Applied>,
) {
    let mut listener = Some(first);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        applied.listening.store(true, Ordering::SeqCst);
        let mut down = up.clone();
        loop {
            tokio::select! {
                biased;
                _ = down.wait_for(|u| !*u) => break,
                Ok((client, _)) = l.accept() => {
                    let delay = delay.clone();
                    let mut up = up.clone();
                    // Counted from accept, so "down" also waits for connections still dialling.
                    let live = Live::new(&applied);
                    tokio::spawn(async move {
                        let _live = live;
                        let Ok(server) = TcpStream::connect(backend).await else { return };
                        let (c_read, c_write) = client.into_split();
                        let (s_read, s_write) = server.into_split();
                        tokio::select! {
                            _ = up.wait_for(|u| !*u) => {}
                            _ = pump(c_read, s_write, Some(delay)) => {}
                            _ = pump(s_read, c_write, None) => {}
                        }
                    });
                }
            }
        }
        drop(l);
        applied.listening.store(false, Ordering::SeqCst);
        if up.wait_for(|u| *u).await.is_err() {
            return;
        }
    }
}
