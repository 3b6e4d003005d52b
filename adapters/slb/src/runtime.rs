//! A client for the HAProxy runtime API (the "stats socket").
//!
//! Writes go over a few connections kept open in HAProxy's prompt mode and reused, at
//! most `connections − 1` of them: a command line (one command, or several joined with `;`)
//! is written and its answer read up to the prompt that follows each command, all under a
//! per-call timeout. A pool, not a connection per command: with thousands of pods drained
//! together, a connection each overflows the socket's accept backlog (HAProxy refuses with
//! `Resource temporarily unavailable`), and HAProxy serves one connection's commands in
//! turn anyway.
//!
//! Reads — the evidence a drain is verified on — never reuse a connection: each is one
//! command on a connection of its own, read to its end, one read at a time. A connection
//! opened before a reload keeps talking to the old, stopping HAProxy process (whose
//! frontends are closed, so its servers show no sessions); evidence from it could verify a
//! drain the new process never saw. Reads are few — one per backend per poll serves every
//! target in it — so a connection each costs little. So at most `connections` are open.
//!
//! A pooled connection that fails, times out, is abandoned mid-answer, or has bytes waiting
//! after its answer is closed, never reused (its next answer would belong to the wrong
//! command). HAProxy may close a connection (its `stats timeout`, which HAProxy 2.6 applies
//! to prompt-mode connections only at times, a reload, `shutdown session`): idle ones older
//! than [`IDLE_REUSE`] and any older than [`MAX_AGE`] are not reused, and a command whose
//! reused connection turns out closed before any answer is sent once more on a fresh one
//! (HAProxy read nothing from it then). The socket is spoken to directly with tokio —
//! measured here, one `set server` takes ~0.1 ms on a unix socket, against ~5.7 ms through
//! a `socat` subprocess.
//!
//! HAProxy answers in free text; [`crate::error`] maps the texts HAProxy 2.6 prints to a
//! typed [`RuntimeError`] that says whether retrying can help.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;

use crate::error::{check_command, check_query, validate_name, Call, RuntimeError};
use crate::parse::{self, ServerConn, ServerState, StatRow};

/// Default per-call timeout (waiting for a connection, connect, write, read the answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// An idle connection older than this is closed instead of reused (HAProxy's default
/// `stats timeout` is 10 s).
pub const IDLE_REUSE: Duration = Duration::from_secs(5);

/// A pooled connection is not reused past this age, however busy: after a reload, writes
/// reach the new HAProxy process within this long.
pub const MAX_AGE: Duration = Duration::from_secs(2);

/// What ends each command's answer in prompt mode (the answer text itself ends in `\n`,
/// and no answer of the commands sent here has a line starting with `> `).
const PROMPT: &[u8] = b"\n> ";

/// Where the runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A unix stream socket (`stats socket /path ...`).
    Unix(PathBuf),
    /// A TCP socket (`stats socket ipv4@127.0.0.1:PORT ...`).
    Tcp(SocketAddr),
}

impl FromStr for Endpoint {
    type Err = String;

    /// Parses `unix:/path`, `tcp:127.0.0.1:9999` (`tcp:[::1]:9999`) or a bare absolute path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` endpoint needs a socket path, e.g. unix:/run/haproxy/admin.sock".into());
            }
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            addr.parse::<SocketAddr>()
                .map(Endpoint::Tcp)
                .map_err(|e| format!("bad tcp endpoint '{s}': {e} (expected tcp:127.0.0.1:9999)"))
        } else if s.starts_with('/') {
            Ok(Endpoint::Unix(PathBuf::from(s)))
        } else {
            Err(format!(
                "bad endpoint '{s}': expected unix:/path, tcp:HOST_IP:PORT or an absolute socket path"
            ))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Administrative state for `set server BE/SRV state ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCommand {
    /// `ready`: leave drain/maintenance.
    Ready,
    /// `drain`: no new (non-persistent) traffic; existing sessions carry on.
    Drain,
    /// `maint`: no traffic at all, not even persistent; existing sessions still carry on.
    Maint,
}

impl AdminCommand {
    /// The word HAProxy expects.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminCommand::Ready => "ready",
            AdminCommand::Drain => "drain",
            AdminCommand::Maint => "maint",
        }
    }
}

/// Forced health for `set server BE/SRV health ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// `up`: mark the server's health check as passing.
    Up,
    /// `down`: mark it failing; a running health check needs `rise` passes to bring it back.
    Down,
}

impl Health {
    /// The word HAProxy expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A HAProxy runtime API client; cheap to clone (clones share the connections).
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    endpoint: Endpoint,
    timeout: Duration,
    pool: Arc<Pool>,
}

/// The open connections of a client and its clones.
#[derive(Debug)]
struct Pool {
    /// One permit per pooled connection in use (`connections − 1`, at least 1).
    write_slots: Semaphore,
    /// Reads, one at a time on a connection of their own: they never queue behind
    /// thousands of writes.
    read_slot: Semaphore,
    connections: usize,
    idle: Mutex<Vec<Conn>>,
    /// Command lines sent, for figures and tests.
    sent: AtomicU64,
    /// Pooled (write) connections opened, for figures and tests.
    opened: AtomicU64,
}

/// One connection in prompt mode.
struct Conn {
    stream: Box<dyn Io>,
    opened: Instant,
    idle_since: Instant,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("idle_since", &self.idle_since).finish()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// How one attempt of a command line failed.
enum Failure {
    /// The connection was closed before any byte of the answer: HAProxy did not read the
    /// line (its idle timeout closed a pooled connection).
    ClosedBeforeAnswer(io::Error),
    Other(io::Error),
}

impl Failure {
    fn into_io(self) -> io::Error {
        match self {
            Failure::ClosedBeforeAnswer(e) | Failure::Other(e) => e,
        }
    }
}

impl RuntimeClient {
    /// A client for `endpoint` with [`crate::config::DEFAULT_CONNECTIONS`] connections;
    /// every call is bounded by `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Self::with_connections(endpoint, timeout, crate::config::DEFAULT_CONNECTIONS)
    }

    /// A client that keeps at most `connections` (at least 1) connections open at once.
    pub fn with_connections(endpoint: Endpoint, timeout: Duration, connections: usize) -> Self {
        let connections = connections.max(1);
        RuntimeClient {
            endpoint,
            timeout,
            pool: Arc::new(Pool {
                write_slots: Semaphore::new(connections.saturating_sub(1).max(1)),
                read_slot: Semaphore::new(1),
                connections,
                idle: Mutex::new(Vec::new()),
                sent: AtomicU64::new(0),
                opened: AtomicU64::new(0),
            }),
        }
    }

    /// How many command lines this client (and its clones) has sent.
    pub fn sent(&self) -> u64 {
        self.pool.sent.load(Ordering::Relaxed)
    }

    /// How many pooled (write) connections this client (and its clones) has opened.
    pub fn opened(&self) -> u64 {
        self.pool.opened.load(Ordering::Relaxed)
    }

    /// The most connections open at once (pooled ones for writes, plus one read).
    pub fn connections(&self) -> usize {
        self.pool.connections
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one command line on a pooled connection and returns HAProxy's raw answer,
    /// without interpreting it: the answers of its `;`-separated commands one after the
    /// other, as HAProxy prints them outside prompt mode.
    pub async fn raw(&self, line: &str) -> Result<String, RuntimeError> {
        self.pool.sent.fetch_add(1, Ordering::Relaxed);
        let endpoint = self.endpoint.to_string();
        let call = async {
            let _slot = self
                .pool
                .write_slots
                .acquire()
                .await
                .expect("the pool's semaphore is never closed");
            // Commands are separated by `;` (names and options never contain one).
            let commands = line.split(';').count();
            let mut reused = self.take_idle();
            let answer = loop {
                let was_reused = reused.is_some();
                let mut conn = match reused.take() {
                    Some(conn) => conn,
                    None => self.connect().await.map_err(|e| self.io_error(&endpoint, e))?,
                };
                match exchange(&mut conn.stream, line, commands).await {
                    Ok(answer) => {
                        // Pooled again only when nothing follows the answer: a byte, or
                        // the end of the stream, waiting there means the connection is
                        // out of step (or closing), and it is dropped.
                        let mut probe = [0u8; 1];
                        if conn.stream.read(&mut probe).now_or_never().is_none() {
                            conn.idle_since = Instant::now();
                            self.pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
                        }
                        break answer;
                    }
                    // A pooled connection HAProxy had closed: once more on a fresh one.
                    Err(Failure::ClosedBeforeAnswer(_)) if was_reused => continue,
                    Err(Failure::ClosedBeforeAnswer(e) | Failure::Other(e)) => {
                        return Err(self.io_error(&endpoint, e));
                    }
                }
            };
            String::from_utf8(answer).map_err(|_| self.malformed(line, "the answer is not UTF-8".into()))
        };
        // A call cut short drops the connection it held: it is never reused.
        self.bounded(line, call).await
    }

    /// `call` within the client's timeout.
    async fn bounded<T>(
        &self,
        command: &str,
        call: impl std::future::Future<Output = Result<T, RuntimeError>>,
    ) -> Result<T, RuntimeError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(RuntimeError::Timeout {
                endpoint: self.endpoint.to_string(),
                command: command.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    /// A read-only command line on a connection of its own, read to its end (see the
    /// module docs: evidence never comes from a connection opened before a reload).
    async fn raw_read(&self, line: &str) -> Result<String, RuntimeError> {
        self.pool.sent.fetch_add(1, Ordering::Relaxed);
        let endpoint = self.endpoint.to_string();
        let call = async {
            let _slot = self
                .pool
                .read_slot
                .acquire()
                .await
                .expect("the pool's semaphore is never closed");
            let answer = roundtrip(self.open_stream().await, line)
                .await
                .map_err(|e| self.io_error(&endpoint, e))?;
            String::from_utf8(answer).map_err(|_| self.malformed(line, "the answer is not UTF-8".into()))
        };
        self.bounded(line, call).await
    }

    /// An idle connection young enough to reuse; older ones are closed.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|c| c.idle_since.elapsed() < IDLE_REUSE && c.opened.elapsed() < MAX_AGE);
        idle.pop()
    }

    /// A new connection to the endpoint.
    async fn open_stream(&self) -> io::Result<Box<dyn Io>> {
        Ok(match &self.endpoint {
            Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                let _ = stream.set_nodelay(true);
                Box::new(stream)
            }
        })
    }

    /// A new connection in prompt mode, not counted as pooled.
    async fn open_prompt(&self) -> io::Result<Box<dyn Io>> {
        let mut stream = self.open_stream().await?;
        exchange(&mut stream, "prompt", 1).await.map_err(Failure::into_io)?;
        Ok(stream)
    }

    /// A new pooled connection, switched to prompt mode.
    async fn connect(&self) -> io::Result<Conn> {
        let stream = self.open_prompt().await?;
        self.pool.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            stream,
            opened: Instant::now(),
            idle_since: Instant::now(),
        })
    }

    fn io_error(&self, endpoint: &str, e: io::Error) -> RuntimeError {
        if e.kind() == io::ErrorKind::PermissionDenied {
            return RuntimeError::AccessDenied {
                endpoint: endpoint.to_string(),
            };
        }
        RuntimeError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        }
    }

    /// The three reads of a backend's servers (`show servers state`, `show stat`, `show
    /// servers conn`) on one connection of their own, closed after them: one process's
    /// answers, never a pooled connection's (see the module docs).
    pub async fn backend_snapshot(
        &self,
        backend: &str,
    ) -> Result<(Vec<ServerState>, Vec<StatRow>, Vec<ServerConn>), RuntimeError> {
        validate_name("backend", backend)?;
        let lines = [
            format!("show servers state {backend}"),
            stat_command(backend),
            format!("show servers conn {backend}"),
        ];
        self.pool.sent.fetch_add(lines.len() as u64, Ordering::Relaxed);
        let endpoint = self.endpoint.to_string();
        let call = async {
            let _slot = self.pool.read_slot.acquire().await.expect("never closed");
            let mut stream = self.open_prompt().await.map_err(|e| self.io_error(&endpoint, e))?;
            let mut answers = Vec::with_capacity(lines.len());
            for line in &lines {
                let answer = exchange(&mut stream, line, 1)
                    .await
                    .map_err(|f| self.io_error(&endpoint, f.into_io()))?;
                let answer =
                    String::from_utf8(answer).map_err(|_| self.malformed(line, "the answer is not UTF-8".into()))?;
                check_query(
                    &answer,
                    Call {
                        endpoint: &endpoint,
                        command: line,
                        backend: Some(backend),
                        server: None,
                    },
                )?;
                answers.push(answer);
            }
            Ok::<_, RuntimeError>(answers)
        };
        let answers = self.bounded(&lines.join("; "), call).await?;
        let servers = parse::parse_servers_state(&answers[0]).map_err(|r| self.malformed(&lines[0], r))?;
        let stats = servers_of(
            backend,
            parse::parse_stat_csv(&answers[1]).map_err(|r| self.malformed(&lines[1], r))?,
        );
        let conns = parse::parse_servers_conn(&answers[2]).map_err(|r| self.malformed(&lines[2], r))?;
        Ok((servers, stats, conns))
    }

    /// A read-only command: known error texts become errors, anything else is returned.
    async fn query(&self, line: &str, backend: Option<&str>) -> Result<String, RuntimeError> {
        let answer = self.raw_read(line).await?;
        let endpoint = self.endpoint.to_string();
        check_query(
            &answer,
            Call {
                endpoint: &endpoint,
                command: line,
                backend,
                server: None,
            },
        )?;
        Ok(answer)
    }

    fn malformed(&self, command: &str, reason: String) -> RuntimeError {
        RuntimeError::Malformed {
            endpoint: self.endpoint.to_string(),
            command: command.to_string(),
            reason,
        }
    }

    /// `show info` as `Name: value` pairs.
    pub async fn show_info(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        let out = self.query("show info", None).await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect())
    }

    /// `show cli level`: `admin`, `operator` or `user`.
    pub async fn cli_level(&self) -> Result<String, RuntimeError> {
        let out = self.query("show cli level", None).await?;
        Ok(out.trim().to_string())
    }

    /// `show stat`: every proxy's CSV row, keyed by column name.
    pub async fn show_stat(&self) -> Result<Vec<StatRow>, RuntimeError> {
        let cmd = "show stat";
        let out = self.query(cmd, None).await?;
        parse::parse_stat_csv(&out).map_err(|r| self.malformed(cmd, r))
    }

    /// `show stat BACKEND 4 -1`: the server rows of one backend only. (HAProxy may read an
    /// all-digit name there as a proxy id, so such backends are filtered from `show stat`.)
    pub async fn show_stat_servers(&self, backend: &str) -> Result<Vec<StatRow>, RuntimeError> {
        validate_name("backend", backend)?;
        let cmd = stat_command(backend);
        let out = self.query(&cmd, Some(backend)).await?;
        let rows = parse::parse_stat_csv(&out).map_err(|r| self.malformed(&cmd, r))?;
        Ok(servers_of(backend, rows))
    }

    /// `show servers state BACKEND`.
    pub async fn show_servers_state(&self, backend: &str) -> Result<Vec<ServerState>, RuntimeError> {
        validate_name("backend", backend)?;
        let cmd = format!("show servers state {backend}");
        let out = self.query(&cmd, Some(backend)).await?;
        parse::parse_servers_state(&out).map_err(|r| self.malformed(&cmd, r))
    }

    /// `show servers conn BACKEND` (`used_cur`, `idle_cur` per server).
    pub async fn show_servers_conn(&self, backend: &str) -> Result<Vec<ServerConn>, RuntimeError> {
        validate_name("backend", backend)?;
        let cmd = format!("show servers conn {backend}");
        let out = self.query(&cmd, Some(backend)).await?;
        parse::parse_servers_conn(&out).map_err(|r| self.malformed(&cmd, r))
    }

    /// Runs several write commands for one server on one connection (`a; b; c`), so they
    /// reach HAProxy together; any output but known success texts is an error.
    pub async fn server_commands(&self, backend: &str, server: &str, commands: &[String]) -> Result<(), RuntimeError> {
        validate_name("backend", backend)?;
        validate_name("server", server)?;
        let line = commands.join("; ");
        let answer = self.raw(&line).await?;
        let endpoint = self.endpoint.to_string();
        check_command(
            &answer,
            Call {
                endpoint: &endpoint,
                command: &line,
                backend: Some(backend),
                server: Some(server),
            },
        )
    }

    /// `set server BE/SRV state ready|drain|maint`.
    pub async fn set_server_state(&self, backend: &str, server: &str, state: AdminCommand) -> Result<(), RuntimeError> {
        let cmd = format!("set server {backend}/{server} state {}", state.as_str());
        self.server_commands(backend, server, &[cmd]).await
    }

    /// `set server BE/SRV health up|down`.
    pub async fn set_server_health(&self, backend: &str, server: &str, health: Health) -> Result<(), RuntimeError> {
        let cmd = format!("set server {backend}/{server} health {}", health.as_str());
        self.server_commands(backend, server, &[cmd]).await
    }

    /// `add server BE/NAME ADDR [options...]` (e.g. `["check", "inter", "1s"]`). The new
    /// server starts in maintenance.
    pub async fn add_server(
        &self,
        backend: &str,
        name: &str,
        addr: &str,
        options: &[&str],
    ) -> Result<(), RuntimeError> {
        let mut cmd = format!("add server {backend}/{name} {addr}");
        for opt in options {
            cmd.push(' ');
            cmd.push_str(opt);
        }
        self.server_commands(backend, name, &[cmd]).await
    }

    /// `del server BE/NAME` (HAProxy only deletes servers in maintenance with no connection).
    pub async fn del_server(&self, backend: &str, name: &str) -> Result<(), RuntimeError> {
        let cmd = format!("del server {backend}/{name}");
        self.server_commands(backend, name, &[cmd]).await
    }

    /// `enable health BE/SRV` (dynamic servers start with their check disabled).
    pub async fn enable_health(&self, backend: &str, server: &str) -> Result<(), RuntimeError> {
        let cmd = format!("enable health {backend}/{server}");
        self.server_commands(backend, server, &[cmd]).await
    }

    /// `shutdown sessions server BE/SRV`: cuts every session on the server at once.
    pub async fn shutdown_sessions(&self, backend: &str, server: &str) -> Result<(), RuntimeError> {
        let cmd = format!("shutdown sessions server {backend}/{server}");
        self.server_commands(backend, server, &[cmd]).await
    }
}

/// The `show stat` line for one backend's servers. HAProxy reads an all-digits name as a
/// proxy id, so such a backend is read whole and filtered ([`servers_of`]).
fn stat_command(backend: &str) -> String {
    if backend.bytes().all(|b| b.is_ascii_digit()) {
        "show stat".to_string()
    } else {
        format!("show stat {backend} 4 -1")
    }
}

/// The server rows of `backend` in an answer of [`stat_command`].
fn servers_of(backend: &str, mut rows: Vec<StatRow>) -> Vec<StatRow> {
    rows.retain(|r| r.pxname() == backend && r.svname() != "BACKEND" && r.svname() != "FRONTEND");
    rows
}

/// Writes `line` on a new connection outside prompt mode and reads the answer to its end.
async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(stream: io::Result<S>, line: &str) -> io::Result<Vec<u8>> {
    let mut stream = stream?;
    let mut request = String::with_capacity(line.len() + 1);
    request.push_str(line);
    request.push('\n');
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(64 * 1024);
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// Writes `line` on a connection in prompt mode and reads the answers of its `commands`
/// commands, each ended by a prompt; returns them without the prompts.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    line: &str,
    commands: usize,
) -> Result<Vec<u8>, Failure> {
    let mut request = String::with_capacity(line.len() + 1);
    request.push_str(line);
    request.push('\n');
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Err(match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Failure::ClosedBeforeAnswer(e),
            _ => Failure::Other(e),
        });
    }
    let mut answer = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut prompts = 0;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            Err(e) if answer.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Failure::ClosedBeforeAnswer(e))
            }
            Err(e) => return Err(Failure::Other(e)),
        };
        if n == 0 {
            let e = io::Error::new(io::ErrorKind::UnexpectedEof, "HAProxy closed the connection mid-answer");
            return Err(if answer.is_empty() {
                Failure::ClosedBeforeAnswer(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "HAProxy closed the connection",
                ))
            } else {
                Failure::Other(e)
            });
        }
        let from = answer.len().saturating_sub(PROMPT.len() - 1);
        answer.extend_from_slice(&buf[..n]);
        prompts += count_prompts(&answer[from..]);
        // A prompt can only end the stream of answers: nothing follows the last one.
        if prompts >= commands && answer.ends_with(PROMPT) {
            return Ok(strip_prompts(&answer));
        }
    }
}

/// How many prompts (`\n> `) a slice holds.
fn count_prompts(bytes: &[u8]) -> usize {
    bytes.windows(PROMPT.len()).filter(|w| *w == PROMPT).count()
}

/// The answers without their prompts: `\n> ` becomes `\n`, which is what HAProxy prints
/// between answers outside prompt mode.
fn strip_prompts(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(PROMPT) {
            out.push(b'\n');
            i += PROMPT.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_counted_and_stripped() {
        let answer = b"\n> No such server.\n\n> # bkname/svname\ndyn/a 2/1\n\n> ";
        assert_eq!(count_prompts(answer), 3);
        assert_eq!(
            strip_prompts(answer),
            b"\nNo such server.\n\n# bkname/svname\ndyn/a 2/1\n\n".to_vec()
        );
        assert_eq!(strip_prompts(b"Server deleted.\n> "), b"Server deleted.\n".to_vec());
    }

    #[test]
    fn endpoints_parse_and_display() {
        assert_eq!(
            "unix:/run/h.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/run/h.sock".into())
        );
        assert_eq!(
            "/run/h.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/run/h.sock".into())
        );
        let tcp: Endpoint = "tcp:127.0.0.1:9999".parse().unwrap();
        assert_eq!(tcp, Endpoint::Tcp("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(tcp.to_string(), "tcp:127.0.0.1:9999");
        assert!("tcp:localhost:9999".parse::<Endpoint>().is_err());
        assert!("unix:".parse::<Endpoint>().is_err());
        assert!("relative.sock".parse::<Endpoint>().is_err());
    }
}
