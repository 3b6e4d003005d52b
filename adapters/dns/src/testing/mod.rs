//! Test harness (feature `testing`): real BIND 9 and PowerDNS servers started as child
//! processes on 127.0.0.1, each on its own free high port, in a temporary directory;
//! killed (by PID) on drop. Used by this crate's tests and by `bench`'s `dns-drain`.
//!
//! - [`bind`]: a BIND primary (zones open to a TSIG key) and a secondary fed by
//!   NOTIFY/IXFR, with zones that can be made to lag on the secondary.
//! - [`pdns`]: PowerDNS with the sqlite backend and its HTTP API.
//!
//! A missing binary is a test failure with an install hint, never a skip. Readiness is a
//! real answer: each zone carries a TXT record `_sluice-test` with a random token, and a
//! server is ready when it returns that token over UDP *and* TCP — which also catches the
//! BIND pitfall of a second `named` silently sharing a busy UDP port (SO_REUSEPORT).

pub mod bind;
pub mod pdns;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use sluice_adapter::Target;

use crate::wire::Wire;

/// Upper bound for any single wait in the harness.
pub const WAIT: Duration = Duration::from_secs(10);

/// The apt packages the harness needs.
pub const APT_HINT: &str =
    "apt-get install -y --no-install-recommends bind9 bind9-dnsutils pdns-server pdns-backend-sqlite3 sqlite3";

/// A port free for both UDP and TCP on 127.0.0.1, below the ephemeral range, never handed
/// out twice per process.
pub use sluice_adapter::testing::free_udp_tcp_port as free_port;
pub use sluice_adapter::testing::{temp_dir, token};

/// Fails the test with an install hint when `binary` is missing.
pub fn require(binary: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(binary).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/usr/bin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(binary).is_file());
    assert!(
        found,
        "`{binary}` is not installed: these tests need real BIND 9 / PowerDNS servers ({APT_HINT})"
    );
}

/// Runs a setup command; panics with its output on failure.
pub fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child server process; killed on drop (by PID).
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    /// Its combined stdout/stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with output to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf, binary: &str) -> Proc {
        require(binary);
        let file = std::fs::File::create(&log).expect("create the server log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e} ({APT_HINT})"));
        Proc {
            child: Some(child),
            log,
        }
    }

    /// Whether it still runs (panics with its log if it died).
    pub fn assert_running(&mut self, what: &str) {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait().expect("poll the server") {
                panic!("{what} exited ({status}):\n{}", self.log_text());
            }
        }
    }

    /// The server's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `server` answers `_sluice-test.<zone>` TXT with `token` over UDP and TCP.
pub async fn wait_ready(server: SocketAddr, zone: &str, token: &str, proc_: &mut Proc, what: &str) {
    let name = Name::from_ascii(format!("_sluice-test.{zone}.")).expect("marker name");
    let wire = Wire::new(Duration::from_millis(300));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        proc_.assert_running(what);
        let udp = wire.query(server, &name, RecordType::TXT).await;
        let ok = udp.is_ok_and(|m| m.answers.iter().any(|r| r.data.to_string().contains(token)))
            && tcp_dig(server, &format!("_sluice-test.{zone}"), "TXT").contains(token);
        if ok {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} at {server} never answered its readiness marker for {zone}:\n{}",
            proc_.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tcp_dig(server: SocketAddr, name: &str, rtype: &str) -> String {
    dig_args(server, name, rtype, &["+tcp"]).join("\n")
}

fn dig_args(server: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Vec<String> {
    require("dig");
    let out = Command::new("dig")
        .args(["+short", "+norecurse", "+time=1", "+tries=1"])
        .args(extra)
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), name, rtype])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(";;"))
        .map(String::from)
        .collect()
}

/// What `dig +short` shows for `name`/`rtype` on `server`: an independent client's view.
pub fn dig(server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let mut out = dig_args(server, name, rtype, &[]);
    out.sort();
    out
}

/// The zone serial `server` holds, via dig.
pub fn dig_serial(server: SocketAddr, zone: &str) -> u32 {
    let soa = dig_args(server, zone, "SOA", &[]);
    soa.first()
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or_else(|| panic!("no SOA for {zone} on {server}: {soa:?}"))
}

/// A target for `ip:8080` with DNS parameters.
pub fn target(ip: IpAddr, params: &[(&str, &str)]) -> Target {
    sluice_adapter::testing::target(ip, 8080, params)
}
