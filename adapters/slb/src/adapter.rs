//! [`HaproxyAdapter`]: the `slb` adapter, driving HAProxy 2.6+ through its runtime API.
//!
//! The target's `backend` parameter names the backend. In [`Mode::Static`] the pod's server
//! is the one whose `srv_addr:srv_port` (from `show servers state`) equals the pod's
//! `ip:port`; in [`Mode::Dynamic`] it is `sluice-<ip>-<port>`, added on register and
//! deleted once drained.
//!
//! **Restore** (`register`), for a server in `maint`:
//! `set server B/S state drain; set server B/S health down; set server B/S state ready`,
//! sent as one line. Leaving `maint` makes HAProxy 2.6 mark a checked server UP at once
//! (it resets the check to `rise` "start OK but check immediately"), and `health down`
//! sent *while in maint* is overwritten by that reset. Leaving `maint` for `drain` instead
//! puts the server UP/DRAIN (weight 0: only sticky clients could reach it) for the
//! instant until `health down` marks it DOWN; leaving `drain` keeps it DOWN, so it only
//! turns UP after its health check passes `rise` times. A server in `drain` only gets
//! `state ready` (its check kept running); a server already `ready` is left alone, even
//! when DOWN (its check is running). Servers without an enabled health check get a plain
//! `state ready` and `observe` says in its evidence that UP is unverified.
//!
//! **Drain** (`deregister`): `set server B/S state drain`. The drain completes inside
//! [`Adapter::observe`] (and `deregister` when called again): once `scur == 0 &&
//! used_cur == 0` it sets `maint`, reads the counters again and only then reports
//! `Drained` (dynamic: then `del server`). When the drain has lasted `escalate_after`
//! with sessions left, the same calls escalate to `maint` (+ `shutdown sessions server`).
//! These are the only writes `observe` ever makes, and only on a server that a
//! `deregister` already put in drain: on a ready server `observe` is read-only.
//!
//! The drain start is remembered in memory per target; after a gateway restart the clock
//! starts again at the first call that sees the drain, so escalation can only come later,
//! never earlier.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, AdapterError, Capabilities, Observation, Result, Target, TrafficState};
use tracing::{info, warn};

use crate::assess::{assess, Escalation, ServerView, Step};
use crate::config::{dynamic_server_name, HaproxyConfig, Mode};
use crate::error::{validate_name, RuntimeError};
use crate::parse::ServerState;
use crate::runtime::{AdminCommand, RuntimeClient};

/// The HAProxy (`slb`) adapter.
#[derive(Debug)]
pub struct HaproxyAdapter {
    config: HaproxyConfig,
    client: RuntimeClient,
    drains: Mutex<HashMap<String, Instant>>,
}

impl HaproxyAdapter {
    /// An adapter for one configured HAProxy; fails (permanently) on an invalid config.
    pub fn new(config: HaproxyConfig) -> Result<Self> {
        config
            .validate()
            .map_err(|e| AdapterError::permanent(format!("slb adapter '{}': {e}", config.name)))?;
        let client = RuntimeClient::new(config.endpoint.clone(), config.timeout);
        Ok(HaproxyAdapter {
            config,
            client,
            drains: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HaproxyConfig {
        &self.config
    }

    /// The runtime API client (for diagnostics and tests).
    pub fn client(&self) -> &RuntimeClient {
        &self.client
    }

    fn dynamic(&self) -> bool {
        matches!(self.config.mode, Mode::Dynamic { .. })
    }

    /// The target's backend: present, a valid HAProxy name, and allowed by the config.
    fn backend<'t>(&self, target: &'t Target) -> Result<&'t str> {
        let backend = target.param("backend").ok_or_else(|| {
            AdapterError::permanent(format!("slb target for pod {} has no `backend` parameter", target.pod))
        })?;
        validate_name("backend", backend)?;
        if !self.config.backend_allowed(backend) {
            return Err(AdapterError::permanent(format!(
                "backend '{backend}' is not in allowedBackends of slb adapter '{}'",
                self.config.name
            )));
        }
        Ok(backend)
    }

    fn key(backend: &str, target: &Target) -> String {
        format!("{backend} {}", target.addr())
    }

    /// How long the target has been draining, starting the clock now if unknown.
    fn drain_age(&self, key: &str) -> Duration {
        let mut drains = self.drains.lock().unwrap_or_else(|e| e.into_inner());
        drains.entry(key.to_string()).or_insert_with(Instant::now).elapsed()
    }

    fn forget_drain(&self, key: &str) {
        self.drains.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Finds the target's server in the backend (`None`: absent).
    async fn locate(&self, backend: &str, target: &Target) -> Result<Option<ServerState>> {
        let servers = self.client.show_servers_state(backend).await?;
        if self.dynamic() {
            let name = dynamic_server_name(target.ip, target.port);
            let Some(srv) = servers.into_iter().find(|s| s.name == name) else {
                return Ok(None);
            };
            if !same_addr(&srv, target) {
                return Err(AdapterError::permanent(format!(
                    "server '{backend}/{name}' has address {}:{}, not the pod's {}; it was changed outside Sluice",
                    srv.addr,
                    srv.port,
                    target.addr()
                )));
            }
            return Ok(Some(srv));
        }
        let mut matching = servers.into_iter().filter(|s| same_addr(s, target));
        let first = matching.next();
        if let Some(second) = matching.next() {
            return Err(AdapterError::permanent(format!(
                "backend '{backend}' has several servers with address {} ({}, {}, ...); Sluice needs exactly one",
                target.addr(),
                first.map(|s| s.name).unwrap_or_default(),
                second.name
            )));
        }
        Ok(first)
    }

    /// Reads the counters for a located server.
    async fn view(&self, backend: &str, state: ServerState) -> Result<ServerView> {
        let stats = self.client.show_stat_servers(backend).await?;
        let conns = self.client.show_servers_conn(backend).await?;
        let row = stats.into_iter().find(|r| r.svname() == state.name);
        let conn = conns.into_iter().find(|c| c.server == state.name);
        Ok(ServerView {
            status: row
                .as_ref()
                .map(|r| r.status().to_string())
                .unwrap_or_else(|| "?".into()),
            check_status: row
                .as_ref()
                .and_then(|r| r.get("check_status"))
                .unwrap_or_default()
                .to_string(),
            scur: row.as_ref().map(|r| r.scur()).unwrap_or(0),
            used_cur: conn.as_ref().map(|c| c.used_cur).unwrap_or(0),
            idle_cur: conn.as_ref().map(|c| c.idle_cur).unwrap_or(0),
            state,
        })
    }

    fn absent(&self, backend: &str, target: &Target, key: &str) -> Observation {
        self.forget_drain(key);
        Observation::new(
            TrafficState::Drained,
            format!("server absent: backend '{backend}' has no server for {}", target.addr()),
        )
    }

    /// Observe, and take the drain's next step (maint / escalate / delete) when due.
    async fn observe_and_advance(&self, backend: &str, target: &Target) -> Result<Observation> {
        let key = Self::key(backend, target);
        let escalation = Escalation {
            after: self.config.escalate_after,
            shutdown_sessions: self.config.shutdown_sessions_on_escalate,
        };
        let mut notes: Vec<String> = Vec::new();
        for _ in 0..3 {
            let Some(srv) = self.locate(backend, target).await? else {
                return Ok(self.absent(backend, target, &key));
            };
            let name = srv.name.clone();
            let draining = srv.admin.is_drain() && !srv.admin.is_maint();
            let view = self.view(backend, srv).await?;
            let age = if draining { self.drain_age(&key) } else { Duration::ZERO };
            let a = assess(&view, self.dynamic(), age, escalation);
            let mut evidence = view.evidence();
            for note in &notes {
                evidence.push_str("; ");
                evidence.push_str(note);
            }
            match a.step {
                Step::Nothing => {
                    if matches!(
                        a.state,
                        TrafficState::Drained | TrafficState::Serving | TrafficState::Registered
                    ) {
                        self.forget_drain(&key);
                    }
                    return Ok(Observation::new(a.state, evidence).with_remaining(a.remaining));
                }
                Step::Maint => {
                    self.client
                        .set_server_state(backend, &name, AdminCommand::Maint)
                        .await?;
                    info!(backend, server = %name, "drain verified (scur=0 used_cur=0): server set to MAINT");
                    notes.push(format!("drain verified, set MAINT after {:.3}s", age.as_secs_f64()));
                }
                Step::Escalate { shutdown } => {
                    self.client
                        .set_server_state(backend, &name, AdminCommand::Maint)
                        .await?;
                    if shutdown {
                        self.client.shutdown_sessions(backend, &name).await?;
                    }
                    warn!(backend, server = %name, scur = view.scur, used_cur = view.used_cur, shutdown,
                        "drain escalated to MAINT after {:.3}s", age.as_secs_f64());
                    notes.push(format!(
                        "escalated to MAINT{} after {:.3}s with scur={} used_cur={}",
                        if shutdown { " + shutdown sessions" } else { "" },
                        age.as_secs_f64(),
                        view.scur,
                        view.used_cur
                    ));
                }
                Step::Delete => match self.client.del_server(backend, &name).await {
                    Ok(()) | Err(RuntimeError::NoSuchServer { .. }) => {
                        info!(backend, server = %name, "dynamic server drained and deleted");
                        self.forget_drain(&key);
                        return Ok(Observation::new(
                            TrafficState::Drained,
                            format!("{evidence}; server deleted"),
                        ));
                    }
                    Err(RuntimeError::ServerBusy { message, .. }) => {
                        return Ok(Observation::new(
                            TrafficState::Draining,
                            format!("{evidence}; del server refused: {message}"),
                        ));
                    }
                    Err(e) => return Err(e.into()),
                },
            }
        }
        Err(AdapterError::retryable(format!(
            "server for {} in backend '{backend}' kept changing state while observed",
            target.addr()
        )))
    }
}

/// Whether a server's address is the target's `ip:port`.
fn same_addr(srv: &ServerState, target: &Target) -> bool {
    srv.port == target.port && srv.addr.parse::<std::net::IpAddr>().is_ok_and(|ip| ip == target.ip)
}

/// The commands that put a located server back, or none when it already is.
fn restore_commands(srv: &ServerState, dynamic: bool) -> Vec<String> {
    let set = |what: &str| format!("set server {}/{} {what}", srv.backend, srv.name);
    if srv.admin.is_maint() {
        let mut cmds = Vec::new();
        let mut checked = srv.check_enabled();
        if dynamic && srv.check_configured() && !checked {
            cmds.push(format!("enable health {}/{}", srv.backend, srv.name));
            checked = true;
        }
        if checked {
            cmds.extend([set("state drain"), set("health down"), set("state ready")]);
        } else {
            cmds.push(set("state ready"));
        }
        cmds
    } else if srv.admin.is_drain() {
        vec![set("state ready")]
    } else {
        Vec::new()
    }
}

#[async_trait::async_trait]
impl Adapter for HaproxyAdapter {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: "slb".into(),
            required_params: vec!["backend".into()],
        }
    }

    async fn register(&self, target: &Target) -> Result<()> {
        let backend = self.backend(target)?;
        let key = Self::key(backend, target);
        let srv = match (self.locate(backend, target).await?, &self.config.mode) {
            (Some(srv), _) => srv,
            (None, Mode::Static) => {
                return Err(AdapterError::permanent(format!(
                    "backend '{backend}' in HAProxy at {} has no server with address {} (static mode only \
                     changes servers declared in haproxy.cfg)",
                    self.config.endpoint,
                    target.addr()
                )))
            }
            (None, Mode::Dynamic { check, check_options }) => {
                let name = dynamic_server_name(target.ip, target.port);
                let mut options: Vec<&str> = Vec::new();
                if *check {
                    options.push("check");
                    options.extend(check_options.iter().map(String::as_str));
                }
                match self.client.add_server(backend, &name, &target.addr(), &options).await {
                    Ok(()) | Err(RuntimeError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                info!(backend, server = %name, addr = %target.addr(), "dynamic server added (in MAINT)");
                self.locate(backend, target).await?.ok_or_else(|| {
                    AdapterError::retryable(format!("server '{backend}/{name}' vanished right after `add server`"))
                })?
            }
        };
        self.forget_drain(&key);
        let cmds = restore_commands(&srv, self.dynamic());
        if cmds.is_empty() {
            return Ok(());
        }
        self.client.server_commands(backend, &srv.name, &cmds).await?;
        info!(backend, server = %srv.name, commands = %cmds.join("; "), "server restored; UP only after its health check");
        Ok(())
    }

    async fn deregister(&self, target: &Target) -> Result<()> {
        let backend = self.backend(target)?;
        let key = Self::key(backend, target);
        let Some(srv) = self.locate(backend, target).await? else {
            self.forget_drain(&key);
            return Ok(());
        };
        if srv.admin.is_maint() {
            return Ok(());
        }
        if srv.admin.is_drain() {
            // Already draining: let a repeated call advance the drain (maint / escalation).
            return self.observe_and_advance(backend, target).await.map(drop);
        }
        self.client
            .set_server_state(backend, &srv.name, AdminCommand::Drain)
            .await?;
        self.forget_drain(&key);
        self.drain_age(&key);
        info!(backend, server = %srv.name, "server set to DRAIN");
        Ok(())
    }

    async fn observe(&self, target: &Target) -> Result<Observation> {
        let backend = self.backend(target)?;
        self.observe_and_advance(backend, target).await
    }

    async fn health(&self) -> Result<()> {
        self.client.show_info().await?;
        let level = self.client.cli_level().await?;
        if level != "admin" {
            return Err(AdapterError::permanent(format!(
                "HAProxy runtime API at {} has level '{level}'; Sluice needs `level admin` to change servers",
                self.config.endpoint
            )));
        }
        Ok(())
    }
}
