//! BIND 9 for tests: a primary whose zones accept UPDATEs signed with key `sluice`, and
//! optionally a secondary fed by NOTIFY + IXFR (`notify explicit`, `also-notify`,
//! `notify-delay 0`, `max-ixfr-ratio unlimited` so small zones really use IXFR).
//!
//! Zones with [`Notify::Manual`] are `notify no` on the primary: the secondary keeps the
//! old data until the test calls [`Bind::notify_secondary`] — a lag the test controls.
//!
//! Key files written next to the configs: `sluice.key` (allowed to update),
//! `wrong-secret.key` (same name, other secret → BADSIG), `unknown.key` (a name the
//! server does not know → BADKEY), `intruder.key` (known, not in `allow-update` → REFUSED).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::Name;

use super::{free_port, run, temp_dir, token, wait_ready, Proc};
use crate::secret::{parse_key_file, TsigKey};
use crate::wire::{exchange_raw, notify_message, Wire};

/// How a zone reaches the secondary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// NOTIFY at once on every change (`notify-delay 0`).
    Immediate,
    /// No NOTIFY from the primary: the secondary lags until [`Bind::notify_secondary`].
    Manual,
}

/// A zone to serve.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Zone name without the trailing dot (`example.test`).
    pub name: String,
    /// Default TTL of the records (and of the SOA).
    pub ttl: u32,
    /// SOA minimum, and the negative-caching TTL (the SOA record's TTL is raised to match).
    pub negative_ttl: u32,
    /// Zone-file lines relative to the apex, e.g. `www IN A 10.1.0.1`.
    pub records: Vec<String>,
    /// Which key may update it: `Some("sluice")`, `Some("intruder")`, or `None` (no updates).
    pub update_key: Option<&'static str>,
    /// Whether the secondary serves it, and how it learns about changes.
    pub secondary: Option<Notify>,
}

impl Zone {
    /// A zone updatable with `sluice`, served by the secondary with immediate NOTIFY.
    pub fn new(name: &str, ttl: u32, records: &[&str]) -> Zone {
        Zone {
            name: name.to_string(),
            ttl,
            negative_ttl: ttl,
            records: records.iter().map(|r| r.to_string()).collect(),
            update_key: Some("sluice"),
            secondary: Some(Notify::Immediate),
        }
    }

    /// The SOA record's own TTL: large enough that the negative TTL, min(SOA TTL, SOA
    /// minimum), is `negative_ttl`.
    pub fn soa_ttl(&self) -> u32 {
        self.ttl.max(self.negative_ttl)
    }

    pub(crate) fn file(&self, token: &str) -> String {
        let mut out = format!(
            "$TTL {ttl}\n@ {soa_ttl} IN SOA ns1.{z}. admin.{z}. 1 60 10 600 {neg}\n@ IN NS ns1\nns1 IN A 127.0.0.1\n\
             _sluice-test IN TXT \"{token}\"\n",
            ttl = self.ttl,
            soa_ttl = self.soa_ttl(),
            z = self.name,
            neg = self.negative_ttl
        );
        for r in &self.records {
            let _ = writeln!(out, "{r}");
        }
        out
    }
}

/// One `named` process.
#[derive(Debug)]
pub struct Named {
    /// Its DNS address (UDP and TCP).
    pub addr: SocketAddr,
    /// The process.
    pub proc_: Proc,
    conf: PathBuf,
}

impl Named {
    fn start(conf: PathBuf, addr: SocketAddr, log: PathBuf) -> Named {
        let mut cmd = Command::new("named");
        cmd.arg("-g").arg("-c").arg(&conf);
        Named {
            addr,
            proc_: Proc::spawn(cmd, log, "named"),
            conf,
        }
    }

    /// Stops it (SIGKILL).
    pub fn kill(&mut self) {
        self.proc_.kill();
    }

    /// Starts it again on the same port with the same files, and waits until ready.
    pub async fn restart(&mut self, zones: &[String], token: &str) {
        self.kill();
        let log = self.proc_.log.with_extension("restarted.log");
        *self = Named::start(self.conf.clone(), self.addr, log);
        for z in zones {
            wait_ready(self.addr, z, token, &mut self.proc_, "named (restarted)").await;
        }
    }
}

/// A BIND primary and, when any zone asks for it, a secondary.
#[derive(Debug)]
pub struct Bind {
    /// The primary.
    pub primary: Named,
    /// The secondary.
    pub secondary: Option<Named>,
    /// The directory holding configs, zones and keys.
    pub dir: PathBuf,
    /// The zones served.
    pub zones: Vec<Zone>,
    /// The readiness token in every zone.
    pub token: String,
}

impl Bind {
    /// Writes the configs and starts the servers; returns once every zone answers on
    /// every server.
    pub async fn start(zones: Vec<Zone>) -> Bind {
        super::require("named");
        super::require("tsig-keygen");
        let dir = temp_dir("dns-bind");
        for key in ["sluice", "intruder", "unknown"] {
            let text = run(
                Command::new("tsig-keygen").args(["-a", "hmac-sha256", key]),
                "tsig-keygen",
            );
            std::fs::write(dir.join(format!("{key}.key")), text).expect("write key file");
        }
        let wrong = run(
            Command::new("tsig-keygen").args(["-a", "hmac-sha256", "sluice"]),
            "tsig-keygen",
        );
        std::fs::write(dir.join("wrong-secret.key"), wrong).expect("write key file");
        let token = token();
        let (p_port, s_port) = (free_port(), free_port());
        let want_secondary = zones.iter().any(|z| z.secondary.is_some());
        let (pdir, sdir) = (dir.join("primary"), dir.join("secondary"));
        std::fs::create_dir_all(&pdir).expect("primary dir");
        std::fs::create_dir_all(&sdir).expect("secondary dir");
        let mut pconf = format!(
            "include \"{d}/sluice.key\";\ninclude \"{d}/intruder.key\";\n{}",
            options(&pdir, p_port),
            d = dir.display()
        );
        let mut sconf = options(&sdir, s_port);
        for z in &zones {
            std::fs::write(pdir.join(format!("{}.zone", z.name)), z.file(&token)).expect("write zone file");
            let update = match z.update_key {
                Some(k) => format!("allow-update {{ key \"{k}\"; }};"),
                None => "allow-update { none; };".into(),
            };
            let notify = match z.secondary {
                Some(Notify::Immediate) => {
                    format!("notify explicit; also-notify {{ 127.0.0.1 port {s_port}; }}; notify-delay 0;")
                }
                Some(Notify::Manual) | None => "notify no;".into(),
            };
            let _ = writeln!(
                pconf,
                "zone \"{n}\" {{ type primary; file \"{f}\"; {update} {notify} allow-transfer {{ 127.0.0.1; }}; \
                 max-ixfr-ratio unlimited; }};",
                n = z.name,
                f = pdir.join(format!("{}.zone", z.name)).display()
            );
            if z.secondary.is_some() {
                let _ = writeln!(
                    sconf,
                    "zone \"{n}\" {{ type secondary; file \"{f}\"; primaries {{ 127.0.0.1 port {p_port}; }}; \
                     allow-notify {{ 127.0.0.1; }}; }};",
                    n = z.name,
                    f = sdir.join(format!("{}.zone", z.name)).display()
                );
            }
        }
        std::fs::write(pdir.join("named.conf"), pconf).expect("write named.conf");
        std::fs::write(sdir.join("named.conf"), sconf).expect("write named.conf");
        let p_addr = SocketAddr::from(([127, 0, 0, 1], p_port));
        let mut primary = Named::start(pdir.join("named.conf"), p_addr, pdir.join("named.log"));
        for z in &zones {
            wait_ready(p_addr, &z.name, &token, &mut primary.proc_, "BIND primary").await;
        }
        let secondary = if want_secondary {
            let s_addr = SocketAddr::from(([127, 0, 0, 1], s_port));
            let mut s = Named::start(sdir.join("named.conf"), s_addr, sdir.join("named.log"));
            for z in zones.iter().filter(|z| z.secondary.is_some()) {
                wait_ready(s_addr, &z.name, &token, &mut s.proc_, "BIND secondary").await;
            }
            Some(s)
        } else {
            None
        };
        Bind {
            primary,
            secondary,
            dir,
            zones,
            token,
        }
    }

    /// A key file written by `tsig-keygen`: `sluice`, `wrong-secret`, `unknown`, `intruder`.
    pub fn key_file(&self, which: &str) -> PathBuf {
        self.dir.join(format!("{which}.key"))
    }

    /// That key, parsed.
    pub fn key(&self, which: &str) -> TsigKey {
        let text = std::fs::read_to_string(self.key_file(which)).expect("read key file");
        parse_key_file(&text, None).expect("parse key file")
    }

    /// The secondary's address (panics without one).
    pub fn secondary_addr(&self) -> SocketAddr {
        self.secondary.as_ref().expect("a secondary").addr
    }

    /// Sends the secondary a NOTIFY for `zone`, as the primary would: it then asks the
    /// primary for the new serial and transfers the change (IXFR).
    pub async fn notify_secondary(&self, zone: &str) {
        let zone = Name::from_ascii(format!("{zone}.")).expect("zone name");
        let wire = Wire::new(Duration::from_secs(2));
        let answer = exchange_raw(&wire, self.secondary_addr(), &notify_message(&zone))
            .await
            .expect("the secondary answers a NOTIFY");
        assert_eq!(
            answer.metadata.response_code,
            hickory_proto::op::ResponseCode::NoError,
            "NOTIFY refused"
        );
    }

    /// The primary's log (transfers: `IXFR started`, `AXFR started`).
    pub fn primary_log(&self) -> String {
        self.primary.proc_.log_text()
    }
}

/// Starts a BIND secondary (in `dir`, on `port` or a free one) for `zones` of any
/// `primary` (e.g. PowerDNS); returns once it answers every zone's marker `token`.
pub async fn start_secondary(
    primary: SocketAddr,
    zones: &[String],
    token: &str,
    dir: &std::path::Path,
    port: Option<u16>,
) -> Named {
    super::require("named");
    std::fs::create_dir_all(dir).expect("secondary dir");
    let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or_else(free_port)));
    let mut conf = options(dir, addr.port());
    for z in zones {
        let _ = writeln!(
            conf,
            "zone \"{z}\" {{ type secondary; file \"{f}\"; primaries {{ {ip} port {port}; }}; \
             allow-notify {{ 127.0.0.1; }}; }};",
            f = dir.join(format!("{z}.zone")).display(),
            ip = primary.ip(),
            port = primary.port()
        );
    }
    std::fs::write(dir.join("named.conf"), conf).expect("write named.conf");
    let mut named = Named::start(dir.join("named.conf"), addr, dir.join("named.log"));
    for z in zones {
        wait_ready(addr, z, token, &mut named.proc_, "BIND secondary").await;
    }
    named
}

impl Drop for Bind {
    fn drop(&mut self) {
        self.primary.kill();
        if let Some(s) = self.secondary.as_mut() {
            s.kill();
        }
        if std::thread::panicking() {
            eprintln!("BIND harness files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn options(dir: &std::path::Path, port: u16) -> String {
    format!(
        "options {{\n  directory \"{d}\";\n  pid-file none;\n  session-keyfile \"{d}/session.key\";\n  \
         managed-keys-directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  \
         recursion no;\n  dnssec-validation no;\n  notify-delay 0;\n  minimal-responses no;\n}};\ncontrols {{ }};\n",
        d = dir.display()
    )
}
