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
//! **Drain**: every write is made by `deregister`, which the engine calls again whenever
//! an observation says [`Observation::advance`]. Each call takes the one step the
//! server's current state calls for (see [`crate::assess`]):
//!
//! - `ready` → `set server B/S state drain`, and the drain clock starts;
//! - `drain` with `scur == 0 && used_cur == 0` → `set server B/S state maint`, then it
//!   reads the counters again (dynamic: and, still idle, `del server B/S`);
//! - `drain` with sessions, once the drain has lasted `escalate_after` → `set server B/S
//!   state maint`, plus `shutdown sessions server B/S` when configured (sent on the same
//!   command line);
//! - dynamic, `maint` with `scur == 0 && used_cur == 0` → `del server B/S`;
//! - anything else (`maint` with sessions, `drain` with sessions before the deadline, a
//!   server that does not exist) → nothing: it is idempotent and succeeds on a target
//!   HAProxy never knew.
//!
//! [`Adapter::observe`] never writes to HAProxy: it reports what the three `show` commands
//! (read once per backend for every call waiting on it: see `Flights`) say and sets `advance` when one of the steps above is due now (`drain` and idle: MAINT
//! due; escalation age reached: escalation due; dynamic `maint` and idle: `del server`
//! due). `Drained` is only ever reported for a server in `maint` (or absent): once in
//! `maint` HAProxy sends it nothing, not even sticky clients, so a zero reading there is
//! final. A dynamic server in `maint` stays `Draining` (delete due) until `deregister`
//! has deleted it.
//!
//! **Memory** (in this process only; a gateway restart forgets it, and an entry nobody
//! asked about for an hour is dropped):
//! - the drain clock per target: it starts when `deregister` sets `drain`, or at the
//!   first call that sees the server in `drain` (after a restart), so escalation can only
//!   come later than configured, never earlier;
//! - what `deregister` did (set MAINT, escalated, deleted), repeated in the evidence of
//!   later `Draining` / `Drained` observations;
//! - when an escalation cut sessions (`shutdown sessions server`), every later `Draining` /
//!   `Drained` observation of the target carries [`Observation::forced`] with a sentence
//!   saying so, until the target is registered again (or drained again from `ready`). An
//!   escalation to `maint` without the shutdown is not forced: the sessions end on their
//!   own. A gateway restart forgets that sessions were cut: observations after it no
//!   longer carry `forced`.
//!
//! [`Adapter::list`] (dynamic mode only) reports the backend's `sluice-<ip>-<port>`
//! servers; static mode answers `None`, since servers declared in haproxy.cfg are not the
//! adapter's to sweep.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, AdapterError, Capabilities, Listed, Observation, Result, Target, TrafficState};
use tracing::{info, warn};

use crate::assess::{assess, Assessment, Escalation, ServerView, Step};
use crate::config::{dynamic_server_name, HaproxyConfig, Mode};
use crate::error::{validate_name, RuntimeError};
use crate::parse::{AdminFlags, ServerState};
use crate::runtime::{AdminCommand, RuntimeClient};

/// How long a target's memory is kept after the last call about it.
const RETAIN: Duration = Duration::from_secs(3600);

/// What this process remembers about one target's drain (see the module docs).
#[derive(Debug)]
struct Memory {
    /// The escalation clock: when the drain was first seen.
    started: Option<Instant>,
    /// What `deregister` did, for the evidence.
    notes: Vec<String>,
    /// Sessions were cut: the sentence for [`Observation::forced`].
    forced: Option<String>,
    /// The last call about this target.
    touched: Instant,
}

/// The HAProxy (`slb`) adapter.
#[derive(Debug)]
pub struct HaproxyAdapter {
    config: HaproxyConfig,
    client: RuntimeClient,
    memory: Mutex<HashMap<String, Memory>>,
    /// When `memory` was last swept of entries nobody asked about.
    swept: Mutex<Instant>,
    flights: Mutex<HashMap<String, Flights>>,
}

/// What one round of the three `show` commands (`servers state`, `stat`, `servers conn`)
/// said about one backend.
struct Snapshot {
    servers: Vec<ServerState>,
    stats: Vec<crate::parse::StatRow>,
    conns: Vec<crate::parse::ServerConn>,
    /// Server name → its row in `servers`, `stats` and `conns`: thousands of targets look
    /// themselves up in one snapshot, so a lookup is not a scan.
    by_name: HashMap<String, Rows>,
    /// Address → rows in `servers` (static mode finds a server by address).
    by_addr: HashMap<(std::net::IpAddr, u16), Vec<usize>>,
}

#[derive(Default, Clone, Copy)]
struct Rows {
    server: Option<usize>,
    stat: Option<usize>,
    conn: Option<usize>,
}

impl Snapshot {
    fn new(servers: Vec<ServerState>, stats: Vec<crate::parse::StatRow>, conns: Vec<crate::parse::ServerConn>) -> Self {
        let mut by_name: HashMap<String, Rows> = HashMap::with_capacity(servers.len());
        let mut by_addr: HashMap<(std::net::IpAddr, u16), Vec<usize>> = HashMap::with_capacity(servers.len());
        for (i, s) in servers.iter().enumerate() {
            by_name.entry(s.name.clone()).or_default().server.get_or_insert(i);
            if let Ok(ip) = s.addr.parse() {
                by_addr.entry((ip, s.port)).or_default().push(i);
            }
        }
        for (i, r) in stats.iter().enumerate() {
            if let Some(rows) = by_name.get_mut(r.svname()) {
                rows.stat.get_or_insert(i);
            }
        }
        for (i, c) in conns.iter().enumerate() {
            if let Some(rows) = by_name.get_mut(c.server.as_str()) {
                rows.conn.get_or_insert(i);
            }
        }
        Snapshot {
            servers,
            stats,
            conns,
            by_name,
            by_addr,
        }
    }
}

/// The reads of one backend, shared: every call that asks while no read has started joins
/// the next one, which starts when the one under way ends. A read that started after a
/// call asked is evidence for it; one that started before is not, so a call never gets an
/// older picture than it asked for. With many pods in one backend, a poll costs three
/// commands for all of them instead of three each.
struct Flights {
    /// One read at a time per backend.
    turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The read that has not started yet, which new calls join.
    next: Option<std::sync::Arc<Flight>>,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").field("next", &self.next.is_some()).finish()
    }
}

#[derive(Default)]
struct Flight {
    result: tokio::sync::OnceCell<Result<std::sync::Arc<Snapshot>>>,
}

impl HaproxyAdapter {
    /// An adapter for one configured HAProxy; fails (permanently) on an invalid config.
    pub fn new(config: HaproxyConfig) -> Result<Self> {
        config
            .validate()
            .map_err(|e| AdapterError::permanent(format!("slb adapter '{}': {e}", config.name)))?;
        let client = RuntimeClient::with_connections(config.endpoint.clone(), config.timeout, config.connections);
        Ok(HaproxyAdapter {
            config,
            client,
            memory: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
            flights: Mutex::new(HashMap::new()),
        })
    }

    /// A snapshot of `backend` read after this call began (see [`Flights`]).
    async fn snapshot(&self, backend: &str) -> Result<std::sync::Arc<Snapshot>> {
        let (turn, flight) = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            let f = flights.entry(backend.to_string()).or_insert_with(|| Flights {
                turn: Default::default(),
                next: None,
            });
            let flight = f.next.get_or_insert_with(Default::default).clone();
            (f.turn.clone(), flight)
        };
        let _turn = turn.lock().await;
        if let Some(done) = flight.result.get() {
            return done.clone();
        }
        // This read starts now: calls from here on join the next one.
        {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = flights.get_mut(backend) {
                if f.next.as_ref().is_some_and(|n| std::sync::Arc::ptr_eq(n, &flight)) {
                    f.next = None;
                }
            }
        }
        let read = async {
            let (servers, stats, conns) = self.client.backend_snapshot(backend).await?;
            Ok::<_, AdapterError>(std::sync::Arc::new(Snapshot::new(servers, stats, conns)))
        };
        let result = read.await;
        let _ = flight.result.set(result.clone());
        result
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

    fn escalation(&self) -> Escalation {
        Escalation {
            after: self.config.escalate_after,
            shutdown_sessions: self.config.shutdown_sessions_on_escalate,
        }
    }

    /// The `backend` parameter of a target or a `list` scope: present, a valid HAProxy
    /// name, and allowed by the config.
    fn backend_param<'p>(
        &self,
        params: &'p BTreeMap<String, String>,
        whose: &dyn std::fmt::Display,
    ) -> Result<&'p str> {
        let backend = params
            .get("backend")
            .ok_or_else(|| AdapterError::permanent(format!("slb {whose} has no `backend` parameter")))?;
        validate_name("backend", backend)?;
        if !self.config.backend_allowed(backend) {
            return Err(AdapterError::permanent(format!(
                "backend '{backend}' is not in allowedBackends of slb adapter '{}'",
                self.config.name
            )));
        }
        Ok(backend)
    }

    /// The target's backend (see [`Self::backend_param`]).
    fn backend<'t>(&self, target: &'t Target) -> Result<&'t str> {
        self.backend_param(&target.params, &format_args!("target for pod {}", target.pod))
    }

    fn key(backend: &str, target: &Target) -> String {
        format!("{backend} {}", target.addr())
    }

    /// Runs `f` on the target's memory, creating it if needed (and then dropping entries
    /// nobody asked about for [`RETAIN`]).
    fn remember<R>(&self, key: &str, f: impl FnOnce(&mut Memory) -> R) -> R {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if !memory.contains_key(key) {
            // At most once a second: a sweep per new entry made thousands of targets
            // drained together cost a scan each.
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(*swept) >= Duration::from_secs(1) {
                *swept = now;
                memory.retain(|_, m| now.duration_since(m.touched) < RETAIN);
            }
        }
        let m = memory.entry(key.to_string()).or_insert_with(|| Memory {
            started: None,
            notes: Vec::new(),
            forced: None,
            touched: now,
        });
        m.touched = now;
        f(m)
    }

    /// Forgets everything about the target (it was registered, or a new drain starts).
    fn forget(&self, key: &str) {
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// How long the target has been draining, starting the clock now if unknown.
    fn drain_age(&self, key: &str) -> Duration {
        self.remember(key, |m| *m.started.get_or_insert_with(Instant::now))
            .elapsed()
    }

    fn note(&self, key: &str, note: String) {
        self.remember(key, |m| m.notes.push(note));
    }

    fn set_forced(&self, key: &str, forced: Option<String>) {
        self.remember(key, |m| m.forced = forced);
    }

    /// Adds what `deregister` did (and `forced`, when sessions were cut) to an observation
    /// of a target out of traffic. Changes nothing but the memory's "last asked" time.
    fn recall(&self, key: &str, mut obs: Observation) -> Observation {
        if !matches!(obs.state, TrafficState::Draining | TrafficState::Drained) {
            return obs;
        }
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = memory.get_mut(key) {
            m.touched = Instant::now();
            for note in &m.notes {
                obs.evidence.push_str("; ");
                obs.evidence.push_str(note);
            }
            if let Some(forced) = &m.forced {
                obs = obs.forced_by(forced.clone());
            }
        }
        obs
    }

    /// Reads the backend and finds the target's server in it (`None`: absent).
    async fn locate(&self, backend: &str, target: &Target) -> Result<Option<(ServerState, std::sync::Arc<Snapshot>)>> {
        let snap = self.snapshot(backend).await?;
        Ok(self.locate_in(&snap, backend, target)?.map(|srv| (srv, snap)))
    }

    /// Finds the target's server in a snapshot of the backend (`None`: absent).
    fn locate_in(&self, snap: &Snapshot, backend: &str, target: &Target) -> Result<Option<ServerState>> {
        // Through the snapshot's index: a backend of thousands of servers is not scanned
        // once per target.
        if self.dynamic() {
            let name = dynamic_server_name(target.ip, target.port);
            let Some(srv) = snap
                .by_name
                .get(&name)
                .and_then(|r| r.server)
                .map(|i| snap.servers[i].clone())
            else {
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
        let at = snap
            .by_addr
            .get(&(target.ip, target.port))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut matching = at.iter().map(|&i| &snap.servers[i]);
        let first = matching.next().cloned();
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
    fn view(snap: &Snapshot, state: ServerState) -> ServerView {
        let rows = snap.by_name.get(&state.name).copied().unwrap_or_default();
        let row = rows.stat.map(|i| &snap.stats[i]);
        let conn = rows.conn.map(|i| &snap.conns[i]);
        ServerView {
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
        }
    }

    /// Reads a located server and applies the evidence rules; the drain clock starts at
    /// the first sight of `drain` (memory only, nothing is written to HAProxy).
    fn assess(&self, snap: &Snapshot, key: &str, srv: ServerState) -> (ServerView, Duration, Assessment) {
        let draining = srv.admin.is_drain() && !srv.admin.is_maint();
        let view = Self::view(snap, srv);
        let age = if draining { self.drain_age(key) } else { Duration::ZERO };
        let a = assess(&view, self.dynamic(), age, self.escalation());
        (view, age, a)
    }

    /// One step of the drain for a server not in `ready` (see the module docs); `false`
    /// when nothing was due.
    async fn advance(&self, backend: &str, key: &str, srv: ServerState, snap: &Snapshot) -> Result<bool> {
        let name = srv.name.clone();
        let (view, age, a) = self.assess(snap, key, srv);
        let secs = age.as_secs_f64();
        match a.step {
            Step::Nothing => Ok(false),
            Step::Maint => {
                self.client
                    .set_server_state(backend, &name, AdminCommand::Maint)
                    .await?;
                info!(backend, server = %name, "drain verified (scur=0 used_cur=0): server set to MAINT");
                self.note(key, format!("drain verified, set MAINT after {secs:.3}s"));
                Ok(true)
            }
            Step::Escalate { shutdown } => {
                let (scur, used_cur) = (view.scur, view.used_cur);
                let maint = format!("set server {backend}/{name} state maint");
                if shutdown {
                    // Remembered before sending: if the call is cut short the sessions may
                    // be cut all the same, and "forced" must never be missing then.
                    self.set_forced(
                        key,
                        Some(format!(
                            "sessions were cut at the escalation deadline: `shutdown sessions server {backend}/{name}` \
                             after {secs:.3}s in DRAIN with scur={scur} used_cur={used_cur} left"
                        )),
                    );
                    let cmds = [maint, format!("shutdown sessions server {backend}/{name}")];
                    if let Err(e) = self.client.server_commands(backend, &name, &cmds).await {
                        if !e.is_retryable() {
                            // HAProxy answered with a refusal: the sessions were not cut.
                            self.set_forced(key, None);
                        }
                        return Err(e.into());
                    }
                } else {
                    self.client.server_commands(backend, &name, &[maint]).await?;
                }
                warn!(backend, server = %name, scur, used_cur, shutdown,
                    "drain escalated to MAINT after {secs:.3}s");
                self.note(
                    key,
                    format!(
                        "escalated to MAINT{} after {secs:.3}s with scur={scur} used_cur={used_cur}",
                        if shutdown { " + shutdown sessions" } else { "" },
                    ),
                );
                Ok(true)
            }
            Step::Delete => match self.client.del_server(backend, &name).await {
                Ok(()) | Err(RuntimeError::NoSuchServer { .. }) => {
                    info!(backend, server = %name, "dynamic server drained and deleted");
                    self.note(key, "server deleted after its drain was verified in MAINT".into());
                    Ok(true)
                }
                // `ServerBusy` (connections attached) is retryable: the next call tries again.
                Err(e) => Err(e.into()),
            },
        }
    }
}

/// Whether a server's address is the target's `ip:port`.
fn same_addr(srv: &ServerState, target: &Target) -> bool {
    srv.port == target.port && srv.addr.parse::<std::net::IpAddr>().is_ok_and(|ip| ip == target.ip)
}

/// What `observe` adds to the evidence when `deregister` has a step due.
fn due(step: Step, age: Duration) -> Option<String> {
    match step {
        Step::Nothing => None,
        Step::Maint => Some("idle in DRAIN: MAINT due (deregister)".into()),
        Step::Escalate { shutdown } => Some(format!(
            "in DRAIN for {:.3}s with sessions left: escalation to MAINT{} due (deregister)",
            age.as_secs_f64(),
            if shutdown { " + shutdown sessions" } else { "" }
        )),
        Step::Delete => Some("idle in MAINT: del server due (deregister)".into()),
    }
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
            shared_reads: true,
        }
    }

    async fn register(&self, target: &Target) -> Result<()> {
        let backend = self.backend(target)?;
        let key = Self::key(backend, target);
        let srv = match (self.locate(backend, target).await?, &self.config.mode) {
            (Some((srv, _)), _) => srv,
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
                self.locate(backend, target)
                    .await?
                    .ok_or_else(|| {
                        AdapterError::retryable(format!("server '{backend}/{name}' vanished right after `add server`"))
                    })?
                    .0
            }
        };
        // `state ready` lifts forced maintenance and `disabled` from haproxy.cfg (measured on
        // HAProxy 2.6), not maintenance inherited from a tracked server or a name that does
        // not resolve: sending it would change nothing, at every poll.
        let held = srv.admin.0 & (AdminFlags::IMAINT | AdminFlags::RMAINT);
        if held != 0 {
            return Err(AdapterError::permanent(format!(
                "server '{backend}/{}' is in maintenance the runtime API cannot lift ({}): fix what it {}",
                srv.name,
                if held & AdminFlags::IMAINT != 0 {
                    "inherited from the server it tracks"
                } else {
                    "its address does not resolve"
                },
                if held & AdminFlags::IMAINT != 0 {
                    "tracks (put the tracked server in service), or stop tracking it"
                } else {
                    "resolves (the DNS name of its `server` line)"
                }
            )));
        }
        self.forget(&key);
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
        // At most: DRAIN → MAINT, then (dynamic) MAINT → deleted, then one more look.
        for _ in 0..3 {
            let Some((srv, snap)) = self.locate(backend, target).await? else {
                return Ok(());
            };
            if srv.admin.is_ready() {
                self.client
                    .set_server_state(backend, &srv.name, AdminCommand::Drain)
                    .await?;
                self.forget(&key);
                self.drain_age(&key);
                info!(backend, server = %srv.name, "server set to DRAIN");
                return Ok(());
            }
            if !self.advance(backend, &key, srv, &snap).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn observe(&self, target: &Target) -> Result<Observation> {
        let backend = self.backend(target)?;
        let key = Self::key(backend, target);
        let Some((srv, snap)) = self.locate(backend, target).await? else {
            let obs = Observation::new(
                TrafficState::Drained,
                format!("server absent: backend '{backend}' has no server for {}", target.addr()),
            );
            return Ok(self.recall(&key, obs));
        };
        let (view, age, a) = self.assess(&snap, &key, srv);
        let mut obs = self.recall(
            &key,
            Observation::new(a.state, view.evidence()).with_remaining(a.remaining),
        );
        if let Some(due) = due(a.step, age) {
            obs.evidence.push_str("; ");
            obs.evidence.push_str(&due);
            obs = obs.advancing();
        }
        Ok(obs)
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

    /// Dynamic mode: the `sluice-<ip>-<port>` servers of the scope's `backend` (a server
    /// of that name whose address was changed outside Sluice is not listed). Static mode:
    /// `None` — servers declared in haproxy.cfg are not the adapter's to sweep.
    async fn list(&self, scope: &BTreeMap<String, String>) -> Result<Option<Vec<Listed>>> {
        if !self.dynamic() {
            return Ok(None);
        }
        let backend = self.backend_param(scope, &"list scope")?;
        let servers = self.client.show_servers_state(backend).await?;
        let stats = self.client.show_stat_servers(backend).await?;
        let mut listed = Vec::new();
        for srv in servers {
            let Ok(ip) = srv.addr.parse::<std::net::IpAddr>() else {
                continue;
            };
            if srv.name != dynamic_server_name(ip, srv.port) {
                continue;
            }
            let row = stats.iter().find(|r| r.svname() == srv.name);
            listed.push(Listed {
                ip,
                port: srv.port,
                params: BTreeMap::from([("backend".to_string(), backend.to_string())]),
                evidence: format!(
                    "server={backend}/{} status={} scur={}",
                    srv.name,
                    row.map(|r| r.status()).unwrap_or("?"),
                    row.map(|r| r.scur()).unwrap_or(0)
                ),
            });
        }
        Ok(Some(listed))
    }
}
