//! PowerDNS Authoritative for tests: the gsqlite3 backend (a fresh database from the
//! Debian schema), zones loaded with `pdnsutil load-zone`, the HTTP API on its own port,
//! `security-poll-suffix=` (else it tries the outside network), in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::bind::{start_secondary, Named, Zone};
use super::{free_port, require, run, temp_dir, token, wait_ready, Proc, WAIT};
use crate::pdns::api::PdnsApi;

/// The sqlite schema shipped by pdns-backend-sqlite3.
pub const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";

/// A running `pdns_server`.
#[derive(Debug)]
pub struct PowerDns {
    /// Its DNS listener (UDP and TCP).
    pub dns: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub api_url: String,
    /// A file holding the API key (for `apiKeyFile`).
    pub api_key_file: PathBuf,
    /// The API key itself.
    pub api_key: String,
    /// The directory (config, database, zone files).
    pub dir: PathBuf,
    /// The process.
    pub proc_: Proc,
    /// A BIND secondary fed by PowerDNS (NOTIFY + AXFR), when asked for.
    pub secondary: Option<Named>,
    /// Zone names and the readiness marker, for [`PowerDns::restart`].
    zones: Vec<String>,
    marker: String,
}

impl PowerDns {
    /// Creates the database, loads `zones` and starts the server; returns once every zone
    /// answers and the API accepts the key.
    pub async fn start(zones: &[Zone]) -> PowerDns {
        Self::start_with(zones, false).await
    }

    /// Like [`PowerDns::start`], with PowerDNS as a primary (`primary=yes`, zones of kind
    /// primary with `SOA-EDIT-API INCREASE`, so API changes bump the serial) feeding a BIND
    /// secondary through NOTIFY + zone transfer.
    pub async fn start_with_secondary(zones: &[Zone]) -> PowerDns {
        Self::start_with(zones, true).await
    }

    async fn start_with(zones: &[Zone], with_secondary: bool) -> PowerDns {
        for binary in ["pdns_server", "pdnsutil", "sqlite3"] {
            require(binary);
        }
        assert!(
            std::path::Path::new(SCHEMA).is_file(),
            "{SCHEMA} is missing: install pdns-backend-sqlite3 ({})",
            super::APT_HINT
        );
        let dir = temp_dir("dns-pdns");
        let db = dir.join("pdns.db");
        let schema = std::fs::File::open(SCHEMA).expect("open the schema");
        let out = Command::new("sqlite3")
            .arg(&db)
            .stdin(Stdio::from(schema))
            .output()
            .expect("run sqlite3");
        assert!(
            out.status.success(),
            "sqlite3 schema load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (dns_port, api_port, secondary_port) = (free_port(), free_port(), free_port());
        let api_key = token();
        let api_key_file = dir.join("api.key");
        std::fs::write(&api_key_file, format!("{api_key}\n")).expect("write the API key file");
        let conf = format!(
            "launch=gsqlite3\ngsqlite3-database={db}\ndaemon=no\nguardian=no\nsecurity-poll-suffix=\n\
             local-address=127.0.0.1\nlocal-port={dns_port}\nsocket-dir={d}\napi=yes\napi-key={api_key}\n\
             webserver=yes\nwebserver-address=127.0.0.1\nwebserver-port={api_port}\nwebserver-allow-from=127.0.0.0/8\n\
             loglevel=4\n",
            db = db.display(),
            d = dir.display()
        );
        let conf = if with_secondary {
            format!("{conf}primary=yes\nalso-notify=127.0.0.1:{secondary_port}\nallow-axfr-ips=127.0.0.0/8\n")
        } else {
            conf
        };
        std::fs::write(dir.join("pdns.conf"), conf).expect("write pdns.conf");
        let marker = token();
        for z in zones {
            let file = dir.join(format!("{}.zone", z.name));
            std::fs::write(&file, zone_file(z, &marker)).expect("write the zone file");
            run(
                Command::new("pdnsutil")
                    .arg(format!("--config-dir={}", dir.display()))
                    .args(["load-zone", &z.name])
                    .arg(&file),
                "pdnsutil load-zone",
            );
            if with_secondary {
                let pdnsutil = |args: &[&str]| {
                    let mut cmd = Command::new("pdnsutil");
                    cmd.arg(format!("--config-dir={}", dir.display())).args(args);
                    run(&mut cmd, "pdnsutil");
                };
                pdnsutil(&["set-kind", &z.name, "primary"]);
                pdnsutil(&["set-meta", &z.name, "SOA-EDIT-API", "INCREASE"]);
            }
        }
        let mut cmd = Command::new("pdns_server");
        cmd.arg(format!("--config-dir={}", dir.display()));
        let mut proc_ = Proc::spawn(cmd, dir.join("pdns.log"), "pdns_server");
        let dns = SocketAddr::from(([127, 0, 0, 1], dns_port));
        for z in zones {
            wait_ready(dns, &z.name, &marker, &mut proc_, "pdns_server").await;
        }
        let api_url = format!("http://127.0.0.1:{api_port}");
        let api = PdnsApi::new(&api_url, "localhost", api_key.clone(), Duration::from_secs(1));
        let deadline = tokio::time::Instant::now() + WAIT;
        while api.server().await.is_err() {
            proc_.assert_running("pdns_server");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the PowerDNS API at {api_url} never answered:\n{}",
                proc_.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secondary = if with_secondary {
            let names: Vec<String> = zones.iter().map(|z| z.name.clone()).collect();
            Some(start_secondary(dns, &names, &marker, &dir.join("secondary"), Some(secondary_port)).await)
        } else {
            None
        };
        PowerDns {
            dns,
            api_url,
            api_key_file,
            api_key,
            dir,
            proc_,
            secondary,
            zones: zones.iter().map(|z| z.name.clone()).collect(),
            marker,
        }
    }

    /// Stops `pdns_server` (SIGKILL); its database stays.
    pub fn kill(&mut self) {
        self.proc_.kill();
    }

    /// Starts `pdns_server` again with the same configuration and database, and waits until
    /// every zone answers.
    pub async fn restart(&mut self) {
        self.proc_.kill();
        let mut cmd = Command::new("pdns_server");
        cmd.arg(format!("--config-dir={}", self.dir.display()));
        self.proc_ = Proc::spawn(cmd, self.dir.join("pdns.restarted.log"), "pdns_server");
        for z in &self.zones {
            wait_ready(self.dns, z, &self.marker, &mut self.proc_, "pdns_server (restarted)").await;
        }
    }

    /// An API client with the right key.
    pub fn api(&self) -> PdnsApi {
        PdnsApi::new(&self.api_url, "localhost", self.api_key.clone(), Duration::from_secs(2))
    }
}

impl Drop for PowerDns {
    fn drop(&mut self) {
        if let Some(s) = self.secondary.as_mut() {
            s.kill();
        }
        self.proc_.kill();
        if std::thread::panicking() {
            eprintln!("PowerDNS harness files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn zone_file(z: &Zone, marker: &str) -> String {
    let mut out = format!(
        "$ORIGIN {n}.\n$TTL {ttl}\n@ {soa_ttl} IN SOA ns1.{n}. admin.{n}. 1 60 10 600 {neg}\n@ IN NS ns1\n\
         ns1 IN A 127.0.0.1\n_sluice-test IN TXT \"{marker}\"\n",
        n = z.name,
        ttl = z.ttl,
        soa_ttl = z.soa_ttl(),
        neg = z.negative_ttl
    );
    for r in &z.records {
        out.push_str(r);
        out.push('\n');
    }
    out
}
