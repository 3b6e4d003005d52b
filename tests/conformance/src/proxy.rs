//! A TCP forwarder on 127.0.0.1 that a conformance subject puts between an adapter and its
//! backend, to take the backend "down" (connections refused, live ones cut) or make it
//! slow (every chunk sent towards the backend waits first — on new and live connections).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultyProxy {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
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
        let task = tokio::spawn(serve(listener, addr, backend, delay_ms.clone(), up_rx));
        Ok(FaultyProxy {
            addr,
            delay_ms,
            up,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Down: the listener closes (connections refused) and live connections are cut.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
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
        let mut down = up.clone();
        loop {
            tokio::select! {
                Ok((client, _)) = l.accept() => {
                    let delay = delay.clone();
                    let mut up = up.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(backend).await else { return };
                        let (c_read, c_write) = client.into_split();
                        let (s_read, s_write) = server.into_split();
                        tokio::select! {
                            _ = pump(c_read, s_write, Some(delay)) => {}
                            _ = pump(s_read, c_write, None) => {}
                            _ = up.wait_for(|u| !*u) => {}
                        }
                    });
                }
                _ = down.wait_for(|u| !*u) => break,
            }
        }
        drop(l);
        if up.wait_for(|u| *u).await.is_err() {
            return;
        }
    }
}
