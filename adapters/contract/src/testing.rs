//! Helpers shared by the adapters' real-server test harnesses (cargo feature `testing`):
//! free ports below the ephemeral range, temporary directories, log tails, targets, a
//! bounded wait for an observed state, and a bounded drain driven as the engine drives it
//! ([`drive_drain`]: `deregister` again whenever an observation says `advance`). Nothing here talks to a backend; each adapter crate
//! starts its own servers.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Adapter, Observation, PodRef, Target, TrafficState};

/// A port free for TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    pick("127.0.0.1", |port| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
    })
}

/// A port free for TCP on 127.0.0.1 and on every address in `ips` (simulated pods that
/// must be able to bind it again after a restart).
pub fn free_port_on(ips: &[Ipv4Addr]) -> u16 {
    pick(&format!("127.0.0.1 and {ips:?}"), |port| {
        std::iter::once(Ipv4Addr::LOCALHOST)
            .chain(ips.iter().copied())
            .all(|ip| TcpListener::bind((ip, port)).is_ok())
    })
}

/// A port free for both UDP and TCP on 127.0.0.1 (DNS servers).
pub fn free_udp_tcp_port() -> u16 {
    pick("127.0.0.1 (UDP and TCP)", |port| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
    })
}

/// Picks a port below the kernel's ephemeral range (an ephemeral port can be taken by any
/// outgoing connection between the check and the server's start), never handed out twice
/// per process, free by `probe` and by `ss` (which also sees SO_REUSEPORT sockets a bind
/// probe would share).
fn pick(what: &str, probe: impl Fn(u16) -> bool) -> u16 {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(|| Mutex::new(HashSet::new()));
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(12_000));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut candidate = low + (std::process::id().wrapping_mul(7919) ^ nanos) % (high - low);
    for _ in 0..5_000 {
        candidate = if candidate + 1 >= high { low } else { candidate + 1 };
        let port = candidate as u16;
        if taken.lock().unwrap_or_else(|e| e.into_inner()).contains(&port) || !probe(port) || port_in_use(port) {
            continue;
        }
        if taken.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("no free port on {what} below the ephemeral range");
}

/// `ss` view: anything bound to the port on any address.
fn port_in_use(port: u16) -> bool {
    Command::new("ss")
        .args(["-Hlntu", &format!("sport = :{port}")])
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
        .unwrap_or(false)
}

/// A fresh, empty temporary directory named after `what` (its owner removes it on drop).
pub fn temp_dir(what: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// A random 64-bit token in hex (readiness markers, secrets of throwaway servers).
pub fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}", h.finish())
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A target for `ip:port` of pod `pod-<ip>` in cluster `test`, namespace `default`.
pub fn target(ip: impl Into<IpAddr>, port: u16, params: &[(&str, &str)]) -> Target {
    let ip = ip.into();
    Target {
        pod: PodRef {
            cluster: "test".into(),
            namespace: "default".into(),
            name: format!("pod-{ip}"),
            uid: ip.to_string(),
        },
        ip,
        port,
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// What [`wait_state`] saw.
#[derive(Debug)]
pub struct Reached {
    /// The observation that reported the wanted state.
    pub observation: Observation,
    /// When it was taken.
    pub at: Instant,
    /// Every earlier observation (other states), with when it was taken.
    pub before: Vec<(Instant, Observation)>,
}

/// Polls `observe` every 5 ms until it reports `state`, for at most `within`. A retryable
/// error (a query lost under load) is polled through, as the engine does; a permanent one,
/// or not reaching the state in time, panics with `what` and the last observation.
pub async fn wait_state(
    adapter: &dyn Adapter,
    t: &Target,
    state: TrafficState,
    within: Duration,
    what: &str,
) -> Reached {
    let mut before = Vec::new();
    let mut last_error = None;
    let reached = tokio::time::timeout(within, async {
        loop {
            match adapter.observe(t).await {
                Ok(obs) if obs.state == state => return obs,
                Ok(obs) => before.push((Instant::now(), obs)),
                Err(e) if e.is_retryable() => last_error = Some(e.to_string()),
                Err(e) => panic!("{what}: observe failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    match reached {
        Ok(observation) => Reached {
            observation,
            at: Instant::now(),
            before,
        },
        Err(_) => panic!(
            "{what}: {} not {state:?} within {within:?}; last observation: {:?}; last error: {:?}",
            t.addr(),
            before.last().map(|(_, o)| o),
            last_error
        ),
    }
}

/// Drives a drain the way the engine does, for at most `within`: observes every 5 ms; on
/// [`TrafficState::Drained`] returns that observation; calls `deregister` again whenever
/// an observation says [`Observation::advance`], reports the target `Serving` or
/// `Registered`, or observe failed with a retryable error. A permanent error, a call
/// that does not return, or no `Drained` in time is an `Err` naming `what`, with the last
/// observation and the last retryable error.
pub async fn try_drive_drain(
    adapter: &dyn Adapter,
    t: &Target,
    within: Duration,
    what: &str,
) -> Result<Observation, String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last: Option<Observation> = None;
    let mut last_error: Option<String> = None;
    let give_up = |why: String, last: &Option<Observation>, last_error: &Option<String>| {
        format!(
            "{what}: {} {why} (driving the drain for at most {within:?}); last observation: {last:?}; \
             last error: {last_error:?}",
            t.addr()
        )
    };
    loop {
        let observed = match tokio::time::timeout_at(deadline, adapter.observe(t)).await {
            Ok(r) => r,
            Err(_) => return Err(give_up("not Drained in time".into(), &last, &last_error)),
        };
        let step = match observed {
            Ok(obs) if obs.state == TrafficState::Drained => return Ok(obs),
            Ok(obs) => {
                let step = obs.advance || matches!(obs.state, TrafficState::Serving | TrafficState::Registered);
                last = Some(obs);
                step
            }
            Err(e) if e.is_retryable() => {
                last_error = Some(format!("observe: {e}"));
                true
            }
            Err(e) => return Err(give_up(format!("observe failed permanently: {e}"), &last, &last_error)),
        };
        if step {
            match tokio::time::timeout_at(deadline, adapter.deregister(t)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_retryable() => last_error = Some(format!("deregister: {e}")),
                Ok(Err(e)) => {
                    return Err(give_up(
                        format!("deregister failed permanently: {e}"),
                        &last,
                        &last_error,
                    ));
                }
                Err(_) => return Err(give_up("not Drained in time".into(), &last, &last_error)),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(give_up("not Drained in time".into(), &last, &last_error));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`try_drive_drain`] for tests: panics with its message instead of returning it.
pub async fn drive_drain(adapter: &dyn Adapter, t: &Target, within: Duration, what: &str) -> Observation {
    try_drive_drain(adapter, t, within, what)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A server started by a harness as a child process with its own directory and log file:
/// killed (by PID) and its directory removed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<std::process::Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl ServerProcess {
    /// Owns `child`, which runs in `dir` and writes `dir/<log>`.
    pub fn new(child: std::process::Child, dir: PathBuf, log: &str) -> ServerProcess {
        let log = dir.join(log);
        ServerProcess {
            child: Some(child),
            dir,
            log,
        }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last lines of its log, for error messages.
    pub fn log(&self) -> String {
        log_tail(&self.log, 25)
    }

    /// Kills it now (its port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a server with `try_start` up to three times (a free port can be taken by
/// another process between the check and the server's bind); an error saying the server
/// is "not installed" ends at once.
pub async fn start_with_retries<T, F, Fut>(mut try_start: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..3 {
        match try_start().await {
            Ok(server) => return Ok(server),
            Err(e) if e.contains("not installed") => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The Python interpreter with grpcio and grpcio-tools, for the example plugin:
/// `$SLUICE_PYTHON` (scripts/test.sh points it at the virtual environment it makes), else
/// `python3`. Panics, saying how to get one, when it cannot import them.
pub fn python_with_grpc() -> String {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let check = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (set SLUICE_PYTHON, or run scripts/test.sh)"));
    assert!(
        check.status.success(),
        "{python} cannot import grpc and grpc_tools: {} (scripts/test.sh makes a virtual environment with \
         them and sets SLUICE_PYTHON)",
        String::from_utf8_lossy(&check.stderr).trim()
    );
    python
}

/// Runs a child process to completion like [`Command::output`], killed (and the test
/// failed) if it has not finished within `limit`: a hung tool never hangs the suite.
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    // Read both pipes on their own threads, so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{:?} did not finish within {limit:?}: killed", cmd.get_program());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}
