//! [`ZooKeeperServer`]: a standalone ZooKeeper 3.8 (Debian's `zookeeper` package) run
//! directly on the JVM — `java -Xmx256m -cp /usr/share/java/zookeeper.jar
//! org.apache.zookeeper.server.ZooKeeperServerMain zoo.cfg` — on 127.0.0.1, with the admin
//! server off and the `srvr` four-letter word allowed. Debian's `zookeeper.jar` carries a
//! manifest `Class-Path` naming its dependencies in /usr/share/java, so the one jar is the
//! whole classpath. Ready once `srvr` shows `Mode:` (`ruok` answers too early).
//!
//! Sessions can be made to expire for real ([`ZooKeeperServer::expire`]): a detached
//! client is dropped without closing its session, its pings stop, and the server expires
//! the session after its timeout — what happens to a provider that hangs or is cut off.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zookeeper_client as zk;

use sluice_adapter::testing::ServerProcess;

use super::{free_port, temp_dir};

const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// A running ZooKeeper; killed (by PID) and its directory removed on drop.
pub struct ZooKeeperServer {
    process: ServerProcess,
    /// Client port on 127.0.0.1.
    pub port: u16,
}

impl ZooKeeperServer {
    /// Starts ZooKeeper and waits (up to 30 s) until `srvr` shows `Mode:`. `tickTime` is
    /// 200 ms, so sessions may be negotiated between 400 ms and 10 s.
    pub async fn start() -> Result<ZooKeeperServer, String> {
        if !std::path::Path::new(ZOOKEEPER_JAR).exists() {
            return Err(format!(
                "{ZOOKEEPER_JAR} is missing: these tests need a real ZooKeeper 3.8 \
                 (apt-get install -y --no-install-recommends zookeeper)"
            ));
        }
        sluice_adapter::testing::start_with_retries(Self::try_start).await
    }

    async fn try_start() -> Result<ZooKeeperServer, String> {
        let dir = temp_dir("rpc-zookeeper");
        let port = free_port();
        let cfg = format!(
            "tickTime=200\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat,mntr,dump\nmaxClientCnxns=0\n\
             minSessionTimeout=400\nmaxSessionTimeout=10000\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("zoo.cfg"), cfg).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("zookeeper.log")).map_err(|e| e.to_string())?;
        let child = Command::new("java")
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                ZOOKEEPER_JAR,
            ])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("`java` is not installed: ZooKeeper needs a JRE \
                            (apt-get install -y --no-install-recommends default-jre-headless zookeeper)"
                    .into())
            }
            Err(e) => return Err(format!("cannot start ZooKeeper: {e}")),
        };
        let mut server = ZooKeeperServer {
            process: ServerProcess::new(child, dir, "zookeeper.log"),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.process.exited() {
                return Err(format!("ZooKeeper exited at start ({status}):\n{}", server.log()));
            }
            if server
                .four_letter("srvr")
                .await
                .is_some_and(|out| out.contains("Mode:"))
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ZooKeeper never reported `Mode:` within 30 s:\n{}",
                    server.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends a four-letter word (`srvr`, `stat`, `mntr`, `ruok`) and returns the answer.
    pub async fn four_letter(&self, word: &str) -> Option<String> {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream.write_all(word.as_bytes()).await.ok()?;
            let mut out = String::new();
            stream.read_to_string(&mut out).await.ok()?;
            Some(out)
        };
        tokio::time::timeout(Duration::from_secs(1), exchange)
            .await
            .ok()
            .flatten()
    }

    /// A new client session (`session_timeout` as asked; the server clamps it to 0.4–10 s).
    pub async fn client(&self, session_timeout: Duration) -> zk::Client {
        zk::Client::connector()
            .with_session_timeout(session_timeout)
            .connect(&self.connect_string())
            .await
            .expect("connect to the test ZooKeeper")
    }

    /// A client whose session is *not* closed when the client is dropped (for
    /// [`Self::expire`]).
    pub async fn detached_client(&self, session_timeout: Duration) -> zk::Client {
        zk::Client::connector()
            .with_session_timeout(session_timeout)
            .with_detached()
            .connect(&self.connect_string())
            .await
            .expect("connect to the test ZooKeeper")
    }

    /// Lets the session of `client` (from [`Self::detached_client`]) expire: the client is
    /// dropped without closing its session, so its pings stop and ZooKeeper expires it after
    /// its timeout, deleting its ephemeral nodes. Returns once `dump` no longer lists the
    /// session, with how long that took.
    pub async fn expire(&self, client: zk::Client) -> Result<Duration, String> {
        let id = client.session_id().to_string();
        let timeout = client.session_timeout();
        drop(client);
        let start = Instant::now();
        let deadline = start + timeout + Duration::from_secs(10);
        loop {
            let dump = self.four_letter("dump").await.unwrap_or_default();
            if dump.contains("Session") && !dump.contains(&id) {
                return Ok(start.elapsed());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "session {id} still listed {:?} after its client went:\n{dump}",
                    start.elapsed()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
