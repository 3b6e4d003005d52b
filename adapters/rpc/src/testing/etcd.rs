//! [`EtcdServer`]: a single-member etcd 3.4 on 127.0.0.1, fresh data directory, started in
//! the foreground as a child process (as `backends.md` describes), ready once a `get`
//! through `etcd-client` succeeds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_adapter::testing::ServerProcess;

use super::{free_port, temp_dir};

/// A running etcd; killed (by PID) and its directory removed on drop.
pub struct EtcdServer {
    process: ServerProcess,
    /// Client port on 127.0.0.1.
    pub port: u16,
}

impl EtcdServer {
    /// Starts etcd and waits (up to 15 s) until it serves a `get`. Retries on other ports
    /// if a port was taken meanwhile.
    pub async fn start() -> Result<EtcdServer, String> {
        sluice_adapter::testing::start_with_retries(Self::try_start).await
    }

    async fn try_start() -> Result<EtcdServer, String> {
        let dir = temp_dir("rpc-etcd");
        let (port, peer) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("etcd.log")).map_err(|e| e.to_string())?;
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "sluice-test", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("sluice-test={peer_url}")])
            .args(["--initial-cluster-state", "new", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("the `etcd` binary is not installed: these tests need a real etcd 3.4 \
                            (apt-get install -y --no-install-recommends etcd-server etcd-client)"
                    .into())
            }
            Err(e) => return Err(format!("cannot start etcd: {e}")),
        };
        let mut server = EtcdServer {
            process: ServerProcess::new(child, dir, "etcd.log"),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = server.process.exited() {
                return Err(format!("etcd exited at start ({status}):\n{}", server.log()));
            }
            if server.ready().await {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("etcd never answered a get within 15 s:\n{}", server.log()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ready(&self) -> bool {
        let attempt = async {
            let mut client = etcd_client::Client::connect([self.endpoint()], None).await.ok()?;
            client.get("sluice-readiness", None).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), attempt).await,
            Ok(Some(_))
        )
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new `etcd-client` connected to this server.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("connect to the test etcd")
    }

    /// The server's log.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Kills the server now (the port then refuses connections); dropping it also removes
    /// its directory.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
