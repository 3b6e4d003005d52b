//! The adapter contract: how Sluice's engine asks a traffic component (a load balancer, a
//! DNS zone, an RPC registry) to take a pod's address out or put it back, and how the
//! component reports *evidence* of where that traffic stands.
//!
//! Adapters report evidence; the engine decides. An adapter never decides that a drain is
//! "done enough": it says what it sees ([`Observation`]) and the engine ends the drain only
//! on [`TrafficState::Drained`].
//!
//! # Flow (driven by the engine)
//!
//! Drain:
//! 1. [`Adapter::deregister`] — ask the component to stop sending *new* work to the target.
//! 2. [`Adapter::observe`] until it reports [`TrafficState::Drained`] (existing work gone,
//!    caches expired, the registry stable) — the engine polls, with a deadline.
//! 3. Whenever an observation says [`Observation::advance`] (the drain has a next step
//!    due, e.g. HAProxy's DRAIN → MAINT once idle), or the target is seen serving or
//!    registered again, or cannot be observed at all, the engine calls `deregister` again:
//!    every step that changes the component lives in `register` and `deregister`.
//!
//! Restore:
//! 1. [`Adapter::register`] — put the target back (only once the pod itself serves).
//! 2. [`Adapter::observe`] until it reports [`TrafficState::Serving`] (the component's own
//!    health check passes, every authoritative server answers, the registry lists it).
//!
//! # Guarantees an adapter must give
//!
//! - **Idempotent**: calling `register` on a registered target, or `deregister` on a
//!   drained one, succeeds and changes nothing.
//! - **Safe to retry after cancellation**: the engine may drop a call's future at any
//!   await point (deadline, shutdown) and call again later, possibly from another process
//!   after a restart. No call may leave the component in a state a retry cannot finish.
//! - **`deregister` tolerates never-registered**: a target the component never knew is
//!   already drained; that is success, not an error.
//! - **`observe` has no side effects** and is cheap enough to poll every few milliseconds.
//! - **Only the target is touched**: other servers, records or instances are never
//!   modified.
//!
//! # Assumptions
//!
//! - The engine serialises calls per target; calls for different targets may run
//!   concurrently.
//! - Connection details and credentials come from the gateway's own configuration, never
//!   from a namespace user: [`Target::params`] only *select* within what the instance was
//!   configured to manage.
//!
//! # Errors
//!
//! [`AdapterError`] says whether retrying can help ([`AdapterError::is_retryable`]): an
//! unreachable socket is retryable, an unknown backend or a permission error is permanent
//! and must be fixed by a person.

#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Which pod a target belongs to (for logs, events and traces; adapters do not need it
/// to act).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.cluster, self.namespace, self.name)
    }
}

/// One pod address in one traffic component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub pod: PodRef,
    pub ip: IpAddr,
    pub port: u16,
    /// Kind-specific selection from the TrafficBinding target (e.g. `backend` for an LB,
    /// `name` for DNS, `service` for a registry).
    pub params: BTreeMap<String, String>,
}

impl Target {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// `ip:port`, with brackets for IPv6.
    pub fn addr(&self) -> String {
        match self.ip {
            IpAddr::V4(ip) => format!("{ip}:{}", self.port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.port),
        }
    }
}

/// Where a target's traffic stands, as the component shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficState {
    /// Registered and verified serving (health check up, answered everywhere, listed).
    Serving,
    /// Registered, but not (yet) verified serving — e.g. a health check still failing.
    Registered,
    /// Deregistered, but traffic or copies remain (active sessions, a lagging secondary,
    /// a TTL not yet expired, a registry that may re-add it).
    Draining,
    /// Verified gone: nothing sends it work any more.
    Drained,
}

/// What an adapter saw: a state plus the evidence behind it, in words an SRE can check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub state: TrafficState,
    /// e.g. `status=DRAIN scur=3 used_cur=1`.
    pub evidence: String,
    /// When known, how long until the state can change (remaining TTL, settle window).
    pub remaining: Option<Duration>,
    /// [`TrafficState::Draining`], and [`Adapter::deregister`] has a step to take *now* to
    /// move the drain on (HAProxy: the server is idle in DRAIN and can go to MAINT, or its
    /// escalation is due). The engine calls `deregister` again at once; without it, it only
    /// observes until the state changes.
    pub advance: bool,
    /// The state was reached by force, not by the traffic ending (e.g. sessions cut at an
    /// escalation deadline): the engine reports it like a release (Warning Event), never
    /// as a verified drain. The text says what was forced.
    pub forced: Option<String>,
}

impl Observation {
    pub fn new(state: TrafficState, evidence: impl Into<String>) -> Self {
        Observation {
            state,
            evidence: evidence.into(),
            remaining: None,
            advance: false,
            forced: None,
        }
    }

    /// The same observation, with how long until the state can change.
    pub fn with_remaining(mut self, remaining: Option<Duration>) -> Self {
        self.remaining = remaining;
        self
    }

    /// The same observation, asking the engine to call `deregister` again now.
    pub fn advancing(mut self) -> Self {
        self.advance = true;
        self
    }

    /// The same observation, reached by force (see [`Observation::forced`]).
    pub fn forced_by(mut self, what: impl Into<String>) -> Self {
        self.forced = Some(what.into());
        self
    }
}

/// One entry an adapter instance manages, as [`Adapter::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listed {
    pub ip: IpAddr,
    pub port: u16,
    /// The target parameters that select it (the same keys a binding target gives).
    pub params: BTreeMap<String, String>,
    /// What the component shows for it, e.g. `server=web/sluice-10.0.0.1-80 status=UP`.
    pub evidence: String,
}

/// What the adapter can do, for the engine and for `sluice adapter` listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The traffic kind: `slb`, `dns`, `rpc` or a custom one; names the pod finalizer
    /// `sluice.dev/<kind>`.
    pub kind: String,
    /// Target parameters the adapter requires, e.g. `["backend"]`.
    pub required_params: Vec<String>,
    /// Calls made at the same time share the adapter's reads (one read of a backend
    /// answers every target in it, and `register`/`deregister` locate their target in such
    /// a read too), and the adapter bounds what it sends on its own (a connection pool):
    /// the engine then holds none of the instance's call slots (`adapterConcurrency`) for
    /// them, since a slot held through the wait for a shared read lets only a few calls at
    /// a time make progress. `false` for an adapter whose every call is a request of its
    /// own, which the engine bounds.
    pub shared_reads: bool,
}

/// Whether retrying a failed call can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: the component was unreachable, busy or timed out.
    Retryable,
    /// Needs a person: unknown backend, permission denied, bad configuration.
    Permanent,
}

/// An adapter call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct AdapterError {
    pub class: ErrorClass,
    pub message: String,
}

impl AdapterError {
    pub fn retryable(message: impl Into<String>) -> Self {
        AdapterError {
            class: ErrorClass::Retryable,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        AdapterError {
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }

    /// Retrying later may succeed; the engine backs off and tries again.
    pub fn is_retryable(&self) -> bool {
        self.class == ErrorClass::Retryable
    }
}

pub type Result<T, E = AdapterError> = std::result::Result<T, E>;

/// A traffic component Sluice can drain a pod from and restore it to.
///
/// Object-safe: the engine holds `Arc<dyn Adapter>` per configured instance, whether the
/// implementation is built in or reached over the out-of-process protocol.
#[async_trait::async_trait]
pub trait Adapter: Send + Sync + fmt::Debug {
    /// The instance name from the gateway configuration.
    fn name(&self) -> &str;

    fn capabilities(&self) -> Capabilities;

    /// Puts the target back in (or adds it). Idempotent.
    async fn register(&self, target: &Target) -> Result<()>;

    /// Takes the target out for new work. Idempotent; succeeds for a target never
    /// registered.
    async fn deregister(&self, target: &Target) -> Result<()>;

    /// Reports where the target's traffic stands, with evidence. No side effects.
    async fn observe(&self, target: &Target) -> Result<Observation>;

    /// Whether the component is reachable and usable at all.
    async fn health(&self) -> Result<()>;

    /// Optional: the entries this instance manages within `scope` (the parameters of a
    /// binding target, e.g. one backend), for the gateway's orphan sweep — addresses left
    /// registered by a pod that no longer exists (its finalizers removed by hand, or a
    /// drain released at its deadline). Only entries the adapter itself created may be
    /// listed (HAProxy's dynamic `sluice-*` servers, not servers declared in its
    /// configuration). `Ok(None)`: this adapter cannot list; the sweep skips it.
    async fn list(&self, scope: &BTreeMap<String, String>) -> Result<Option<Vec<Listed>>> {
        let _ = scope;
        Ok(None)
    }
}
