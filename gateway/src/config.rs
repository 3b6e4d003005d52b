//! The gateway's own configuration (YAML): which clusters to watch, which adapter instances
//! exist (with their connection settings and secrets), and where to listen.
//!
//! Loading validates everything before any port is bound or any cluster is contacted; a
//! bad file yields one line naming the field and the problem ([`ConfigError`]), and the
//! CLI exits with code 64 (`EX_USAGE`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem: `field` is a path like `adapters[1].endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config {file}: {field}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub problem: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub adapters: Vec<AdapterConfig>,
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    /// Several replicas, one leader: only the holder of this Lease writes. Absent: this
    /// gateway is the only writer (run one replica).
    #[serde(default)]
    pub leader_election: Option<LeaderElectionConfig>,
    /// Watch, plan and report what would be done — log lines, never a write — so a new
    /// version can run beside the current one before it is trusted with the lease.
    #[serde(default)]
    pub shadow: bool,
    /// Trace export; off unless an endpoint is named here or in `OTEL_EXPORTER_OTLP_*`.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The validating admission webhook for pod deletes and evictions (absent: off).
    #[serde(default)]
    pub admission: Option<AdmissionConfig>,
    /// The gRPC drain/restore API (`sluice.v1.Sluice`; absent: off).
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// Tenant isolation, by adapter instance: which namespaces may use it and which
    /// backends / DNS names / services each may name. An adapter without an entry is open
    /// to every namespace.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, Vec<TenantRule>>,
}

/// Namespaces (a trailing `*` matches a prefix) and the resources they may name through
/// one adapter instance: backends (HAProxy), DNS names (RFC 2136, PowerDNS), services or
/// interfaces (registries), matched against `param` — the adapter's first required
/// target parameter unless set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TenantRule {
    pub namespaces: Vec<String>,
    /// Resource names: exact, a prefix ending in `*`, or a suffix starting with `*`
    /// (`*.shop.example.com`).
    pub names: Vec<String>,
    #[serde(default)]
    pub param: Option<String>,
    /// Other target parameters these namespaces may set (any other is refused: a
    /// parameter can change what the adapter touches, e.g. an etcd `key` or a Nacos
    /// `namespace`).
    #[serde(default)]
    pub params: Vec<String>,
    /// Addresses outside Kubernetes these namespaces may drain and restore through the
    /// adapter (EndpointDrain), as CIDRs (`10.2.0.0/16`, `2001:db8::/48`). None: no
    /// endpoint (an adapter without a tenants entry takes no endpoint at all).
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// The gRPC API: where it listens, how callers prove who they are, and what each may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// TLS for the listener. Required unless `listen` is a loopback address and
    /// `insecure: true` (tests, a sidecar on the same host).
    #[serde(default)]
    pub tls: Option<ApiTlsConfig>,
    /// Serve plaintext HTTP/2 on a loopback address (no TLS): bearer tokens then travel in
    /// the clear on the host.
    #[serde(default)]
    pub insecure: bool,
    /// Bearer tokens, each read from a file (a mounted Secret) and naming the identity it
    /// stands for.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// Verify bearer tokens that are not in `tokens` with a `TokenReview` in this cluster
    /// (Kubernetes ServiceAccount tokens): the identity is the reviewed user name and groups.
    #[serde(default)]
    pub token_review: Option<TokenReviewConfig>,
    /// Who may do what where; a call no rule allows is refused (deny by default).
    #[serde(default)]
    pub rules: Vec<ApiRule>,
    /// Calls per second per identity (token bucket; `burst` calls at once).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Largest request message accepted, in bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Watch streams open at once (all callers); beyond, RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_watches")]
    pub max_watches: usize,
    /// Pods one Drain or Restore may name through a selector.
    #[serde(default = "default_max_selected")]
    pub max_selected_pods: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Clients presenting a certificate signed by this CA are identified by it (subject CN
    /// = user, O = groups, as kube-apiserver does). A client without one may still present a
    /// bearer token.
    #[serde(default, rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiToken {
    /// The identity (user name) the token stands for.
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// A file holding the token (surrounding whitespace ignored).
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenReviewConfig {
    /// The cluster (by name) whose API server reviews tokens; the first cluster when unset.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Audiences the token must be valid for (empty: the API server's default).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// How long a review's answer is reused for the same token.
    #[serde(default = "default_review_cache_seconds")]
    pub cache_seconds: u64,
}

/// One authorization rule: `users` or `groups` (a trailing `*` matches a prefix, `*`
/// anyone authenticated) may perform `verbs` in `clusters` / `namespaces` (`*`: all).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiRule {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub verbs: Vec<ApiVerb>,
    #[serde(default = "star")]
    pub clusters: Vec<String>,
    pub namespaces: Vec<String>,
}

/// What a rule allows: `read` (Get, List, Watch), `drain`, `restore`, `release`, or `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVerb {
    Read,
    Drain,
    Restore,
    Release,
    #[serde(rename = "*")]
    All,
}

impl ApiVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVerb::Read => "read",
            ApiVerb::Drain => "drain",
            ApiVerb::Restore => "restore",
            ApiVerb::Release => "release",
            ApiVerb::All => "*",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitConfig {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 20.0,
            burst: 40,
        }
    }
}

fn star() -> Vec<String> {
    vec!["*".into()]
}

fn default_max_request_bytes() -> usize {
    64 * 1024
}

fn default_max_watches() -> usize {
    4096
}

fn default_max_selected() -> usize {
    1000
}

fn default_review_cache_seconds() -> u64 {
    10
}

fn r_ok(per_second: f64) -> bool {
    per_second > 0.0 && per_second <= 100_000.0
}

/// The admission webhook: `POST /validate/<cluster>` over HTTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdmissionConfig {
    /// Where the HTTPS listener binds (the webhook Service targets it).
    pub listen: SocketAddr,
    /// The serving certificate chain and key (PEM), e.g. cert-manager's `tls.crt` /
    /// `tls.key`; re-read when the certificate file changes.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, only callers presenting a client certificate signed by this CA (PEM) are
    /// answered: the API server, given one in its AdmissionConfiguration. Without it anyone
    /// who reaches the port can ask for drains (bounded by the disruption budgets, and
    /// lapsing after `requestSeconds`): restrict the port with a NetworkPolicy.
    #[serde(default, rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
    /// How long a request is held while the pod drains: keep it below the webhook's
    /// `timeoutSeconds` (at most 30), or the API server gives up first.
    #[serde(default = "default_hold_seconds")]
    pub hold_seconds: u64,
    /// A plain delete whose drain did not finish within `holdSeconds`: `Deny` (refused with
    /// 429, the drain goes on; delete again once drained) or `Allow` (admitted with a
    /// warning, requests may be lost). Evictions are always refused with 429 (their clients
    /// retry).
    #[serde(default)]
    pub on_delete_timeout: OnDeleteTimeout,
    /// How long the drain a held request asked for stands: a pod not deleted by then (an
    /// eviction refused and never retried) is restored.
    #[serde(default = "default_request_seconds")]
    pub request_seconds: u64,
    /// Requests held at once; beyond, 429 at once.
    #[serde(default = "default_admission_concurrency")]
    pub max_concurrent: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum OnDeleteTimeout {
    #[default]
    Deny,
    Allow,
}

fn default_hold_seconds() -> u64 {
    25
}

fn default_request_seconds() -> u64 {
    300
}

fn default_admission_concurrency() -> usize {
    256
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://otel-collector.observability:4317`.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: default_service_name(),
        }
    }
}

fn default_service_name() -> String {
    "sluice".into()
}

/// The `coordination.k8s.io/v1` Lease the replicas elect a leader with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaderElectionConfig {
    /// The cluster (by name) that holds the Lease; the first cluster when unset.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default = "default_lease_namespace")]
    pub namespace: String,
    #[serde(default = "default_lease_name")]
    pub name: String,
    /// How long a Lease stays valid without renewal (what a standby waits after the leader
    /// vanishes without releasing it).
    #[serde(default = "default_lease_s")]
    pub lease_seconds: u64,
    /// The leader stops writing when it could not renew for this long (shorter than the
    /// lease, so it has stopped before a standby may take over).
    #[serde(default = "default_renew_deadline_ms")]
    pub renew_deadline_ms: u64,
    /// How often the Lease is renewed, or tried by a standby.
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
}

fn default_lease_namespace() -> String {
    "sluice".into()
}
fn default_lease_name() -> String {
    "sluice-gateway".into()
}
fn default_lease_s() -> u64 {
    15
}
fn default_renew_deadline_ms() -> u64 {
    10_000
}
fn default_retry_ms() -> u64 {
    2_000
}

/// One cluster to watch. Its `name` is stable: it appears in pod status, events and
/// traces, and keys the per-cluster state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    pub name: String,
    /// Path to a kubeconfig file (relative paths are relative to the config file).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context within the kubeconfig; its current context when unset.
    #[serde(default)]
    pub context: Option<String>,
    /// Use the pod's service account instead of a kubeconfig.
    #[serde(default)]
    pub in_cluster: bool,
}

/// One adapter instance: a traffic component the gateway may act on. Bindings refer to it
/// by `name`; only the gateway's operator decides where it points.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AdapterConfig {
    /// HAProxy through its runtime API.
    Haproxy(sluice_adapter_slb::HaproxyConfig),
    /// An out-of-process plugin speaking `sluice.adapter.v1`.
    Remote(sluice_adapter_remote::RemoteConfig),
    /// DNS through RFC 2136 dynamic UPDATE with TSIG, verified on every authoritative server.
    Rfc2136(sluice_adapter_dns::Rfc2136Config),
    /// DNS through the PowerDNS HTTP API (records disabled / enabled).
    #[serde(rename = "powerdns")]
    PowerDns(sluice_adapter_dns::PowerDnsConfig),
    /// An etcd v3 service registry (gRPC-go naming, go-micro, Kratos or custom layouts).
    Etcd(sluice_adapter_rpc::etcd::EtcdConfig),
    /// Dubbo providers in ZooKeeper (override configurator).
    #[serde(rename = "zookeeper-dubbo")]
    ZookeeperDubbo(sluice_adapter_rpc::zookeeper::ZookeeperDubboConfig),
    /// A Nacos 2.x naming service (Open API v2).
    Nacos(sluice_adapter_rpc::nacos::NacosConfig),
}

impl AdapterConfig {
    pub fn name(&self) -> &str {
        match self {
            AdapterConfig::Haproxy(c) => &c.name,
            AdapterConfig::Remote(c) => &c.name,
            AdapterConfig::Rfc2136(c) => &c.name,
            AdapterConfig::PowerDns(c) => &c.name,
            AdapterConfig::Etcd(c) => &c.name,
            AdapterConfig::ZookeeperDubbo(c) => &c.name,
            AdapterConfig::Nacos(c) => &c.name,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenConfig {
    /// Health / readiness / preStop HTTP endpoint.
    #[serde(default = "default_health_addr")]
    pub health: SocketAddr,
    /// `/metrics` on a listener of its own (e.g. `0.0.0.0:9798` for Prometheus while
    /// `health` stays on the pod's loopback or behind a NetworkPolicy). Unset: `/metrics`
    /// is served on the `health` listener.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// The preStop endpoint (`GET /prestop`), which identifies the calling pod by the
    /// connection's source address. Unset: no preStop endpoint.
    #[serde(default)]
    pub prestop: Option<SocketAddr>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            health: default_health_addr(),
            metrics: None,
            prestop: None,
        }
    }
}

fn default_health_addr() -> SocketAddr {
    "127.0.0.1:9797".parse().expect("literal address")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EngineConfig {
    /// How often a target is observed while a drain or restore is being verified.
    /// 10 ms: HAProxy's `scur` falls to 0 within ~2 ms of the last client closing, so a
    /// drain is confirmed at most ~10 ms after the traffic is really gone.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Per adapter call.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Deadline of a drain when the binding does not set one.
    #[serde(default = "default_deadline_s")]
    pub default_deadline_seconds: u64,
    /// A drain resumed by a gateway that was not running (restart, failover) gets at least
    /// this long (or its whole deadline, when shorter) to be verified before its deadline
    /// applies: an outage of the gateway never turns into a release by itself.
    #[serde(default = "default_resume_grace_s")]
    pub resume_grace_seconds: u64,
    /// Pods worked on at once (a relist of 100,000 pods, or a binding change, queues the
    /// rest instead of flooding the API server and the backends).
    #[serde(default = "default_max_workers")]
    pub max_workers: usize,
    /// Calls in flight to one adapter instance at once (HAProxy's runtime socket serves
    /// one command at a time per connection; a flood of them only queues in the kernel).
    #[serde(default = "default_adapter_concurrency")]
    pub adapter_concurrency: usize,
    /// Every bound pod is observed again about this often (jittered, spread over the
    /// interval), so what a backend lost (a reload, a hand edit) is put back and what
    /// should not be there is taken out. 0: off.
    #[serde(default = "default_resync_s")]
    pub resync_seconds: u64,
    /// How often each adapter's health is checked; when it recovers, its pods are observed
    /// again at once.
    #[serde(default = "default_health_s")]
    pub adapter_health_seconds: u64,
    /// How often adapters that can list what they manage are swept for addresses whose pod
    /// no longer exists (a finalizer removed by hand, a drain released at its deadline).
    /// An address is taken out only when two sweeps in a row find it orphaned, and only
    /// while every cluster is synced and healthy. 0: off.
    #[serde(default = "default_orphan_sweep_s")]
    pub orphan_sweep_seconds: u64,
    /// How long a failure a person must fix (a permission, an unknown backend) waits before
    /// it is tried again.
    #[serde(default = "default_permanent_retry_s")]
    pub permanent_retry_seconds: u64,
    /// Identity written into events (`reportingInstance`), the Lease's holder and the
    /// field manager of every pod write: unique per replica (the pod name by default).
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Start paused: no new drain or restore starts (one under way finishes). SIGUSR1
    /// pauses, SIGUSR2 resumes; `/healthz` says which.
    #[serde(default)]
    pub paused: bool,
    /// On SIGTERM, how long in-flight work may take to finish before the process exits
    /// (keep it under the pod's `terminationGracePeriodSeconds`).
    #[serde(default = "default_shutdown_s")]
    pub shutdown_seconds: u64,
}

fn default_shutdown_s() -> u64 {
    20
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            poll_interval_ms: default_poll_ms(),
            call_timeout_ms: default_call_timeout_ms(),
            default_deadline_seconds: default_deadline_s(),
            resume_grace_seconds: default_resume_grace_s(),
            max_workers: default_max_workers(),
            adapter_concurrency: default_adapter_concurrency(),
            resync_seconds: default_resync_s(),
            adapter_health_seconds: default_health_s(),
            orphan_sweep_seconds: default_orphan_sweep_s(),
            permanent_retry_seconds: default_permanent_retry_s(),
            instance: default_instance(),
            paused: false,
            shutdown_seconds: default_shutdown_s(),
        }
    }
}

fn default_poll_ms() -> u64 {
    10
}
fn default_call_timeout_ms() -> u64 {
    2000
}
fn default_deadline_s() -> u64 {
    300
}
fn default_resume_grace_s() -> u64 {
    30
}
fn default_max_workers() -> usize {
    256
}
fn default_adapter_concurrency() -> usize {
    16
}
fn default_resync_s() -> u64 {
    300
}
fn default_health_s() -> u64 {
    10
}
fn default_orphan_sweep_s() -> u64 {
    600
}
fn default_permanent_retry_s() -> u64 {
    30
}
fn default_instance() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "sluice-gateway".into())
}

impl EngineConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms.max(1))
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: "(file)".into(),
            problem: format!("cannot be read: {e}"),
        })?;
        let mut cfg = Config::parse(&text, &file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for c in &mut cfg.clusters {
            if let Some(k) = &c.kubeconfig {
                if k.is_relative() {
                    c.kubeconfig = Some(base.join(k));
                }
            }
        }
        if let Some(api) = &mut cfg.api {
            let files = api.tls.iter_mut().flat_map(|t| {
                [&mut t.cert_file, &mut t.key_file]
                    .into_iter()
                    .chain(t.client_ca_file.as_mut())
            });
            for f in files.chain(api.tokens.iter_mut().map(|t| &mut t.file)) {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        if let Some(a) = &mut cfg.admission {
            for f in [&mut a.cert_file, &mut a.key_file]
                .into_iter()
                .chain(a.client_ca_file.as_mut())
            {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        Ok(cfg)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let err = |field: String, problem: String| ConfigError {
            file: file.to_string(),
            field,
            problem,
        };
        let de = serde_yaml::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde_yaml appends " at line L column C"; keep it, it helps.
            err(if path == "." { "(top level)".into() } else { path }, inner)
        })?;
        cfg.validate().map_err(|(f, p)| err(f, p))?;
        Ok(cfg)
    }

    fn validate_api(&self, api: &ApiConfig) -> Result<(), (String, String)> {
        match (&api.tls, api.insecure) {
            (Some(_), true) => return Err(("api.insecure".into(), "set either tls or insecure, not both".into())),
            (None, false) => {
                return Err((
                    "api.tls".into(),
                    "required (certFile, keyFile, optional clientCAFile) unless insecure: true on a loopback address"
                        .into(),
                ))
            }
            (None, true) if !api.listen.ip().is_loopback() => {
                return Err((
                    "api.insecure".into(),
                    format!(
                        "plaintext is allowed only on a loopback address, not {}: configure api.tls",
                        api.listen
                    ),
                ))
            }
            _ => {}
        }
        let client_certs = api.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
        if !client_certs && api.tokens.is_empty() && api.token_review.is_none() {
            return Err((
                "api".into(),
                "no way to authenticate a caller: set tls.clientCAFile, tokens or tokenReview".into(),
            ));
        }
        for (i, t) in api.tokens.iter().enumerate() {
            if t.user.trim().is_empty() {
                return Err((format!("api.tokens[{i}].user"), "must not be empty".into()));
            }
        }
        if let Some(c) = api.token_review.as_ref().and_then(|r| r.cluster.as_ref()) {
            if !self.clusters.iter().any(|x| &x.name == c) {
                return Err((
                    "api.tokenReview.cluster".into(),
                    format!("{c:?} is not one of the clusters"),
                ));
            }
        }
        for (i, r) in api.rules.iter().enumerate() {
            let f = |x: &str| format!("api.rules[{i}].{x}");
            if r.users.is_empty() && r.groups.is_empty() {
                return Err((
                    f("users"),
                    "name at least one user or group (\"*\": anyone authenticated)".into(),
                ));
            }
            if r.verbs.is_empty() {
                return Err((
                    f("verbs"),
                    "name at least one of read, drain, restore, release, *".into(),
                ));
            }
            if r.namespaces.is_empty() {
                return Err((f("namespaces"), "name at least one namespace (\"*\": all)".into()));
            }
            for c in &r.clusters {
                if c != "*" && !self.clusters.iter().any(|x| &x.name == c) {
                    return Err((f("clusters"), format!("{c:?} is not one of the clusters")));
                }
            }
        }
        if !(r_ok(api.rate_limit.per_second) && api.rate_limit.burst >= 1) {
            return Err((
                "api.rateLimit".into(),
                "perSecond must be above 0 (at most 100000) and burst at least 1".into(),
            ));
        }
        for (field, value, min, max) in [
            ("api.maxRequestBytes", api.max_request_bytes, 1024, 4 * 1024 * 1024),
            ("api.maxWatches", api.max_watches, 1, 100_000),
            ("api.maxSelectedPods", api.max_selected_pods, 1, 100_000),
        ] {
            if !(min..=max).contains(&value) {
                return Err((field.into(), format!("{value} is out of range ({min} to {max})")));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.clusters.is_empty() {
            return Err(("clusters".into(), "at least one cluster is required".into()));
        }
        let mut names = BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let f = |x: &str| format!("clusters[{i}].{x}");
            if !is_name(&c.name) {
                return Err((
                    f("name"),
                    format!("{:?} must be a DNS label (lowercase letters, digits, '-')", c.name),
                ));
            }
            if !names.insert(c.name.clone()) {
                return Err((
                    f("name"),
                    format!("{:?} is used by two clusters; names must be unique", c.name),
                ));
            }
            match (&c.kubeconfig, c.in_cluster) {
                (Some(_), true) => return Err((f("inCluster"), "set either kubeconfig or inCluster, not both".into())),
                (None, false) => return Err((f("kubeconfig"), "required unless inCluster is true".into())),
                _ => {}
            }
        }
        let mut adapters = BTreeSet::new();
        for (i, a) in self.adapters.iter().enumerate() {
            if !is_name(a.name()) {
                return Err((
                    format!("adapters[{i}].name"),
                    format!("{:?} must be a DNS label", a.name()),
                ));
            }
            if !adapters.insert(a.name().to_string()) {
                return Err((
                    format!("adapters[{i}].name"),
                    format!("{:?} is used by two adapters", a.name()),
                ));
            }
        }
        let e = &self.engine;
        for (field, value, min, max) in [
            ("engine.pollIntervalMs", e.poll_interval_ms, 1, 60_000),
            ("engine.callTimeoutMs", e.call_timeout_ms, 1, 600_000),
            ("engine.defaultDeadlineSeconds", e.default_deadline_seconds, 1, 86_400),
            ("engine.resumeGraceSeconds", e.resume_grace_seconds, 0, 3_600),
            ("engine.maxWorkers", e.max_workers as u64, 1, 100_000),
            ("engine.adapterConcurrency", e.adapter_concurrency as u64, 1, 10_000),
            ("engine.resyncSeconds", e.resync_seconds, 0, 86_400),
            ("engine.adapterHealthSeconds", e.adapter_health_seconds, 1, 3_600),
            ("engine.orphanSweepSeconds", e.orphan_sweep_seconds, 0, 86_400),
            ("engine.permanentRetrySeconds", e.permanent_retry_seconds, 1, 3_600),
            ("engine.shutdownSeconds", e.shutdown_seconds, 1, 3_600),
        ] {
            if !(min..=max).contains(&value) {
                return Err((field.into(), format!("{value} is out of range ({min} to {max})")));
            }
        }
        if let Some(a) = &self.admission {
            if !(1..=29).contains(&a.hold_seconds) {
                return Err((
                    "admission.holdSeconds".into(),
                    format!(
                        "{} is out of range (1 to 29): it must stay below the webhook's timeoutSeconds (at most 30)",
                        a.hold_seconds
                    ),
                ));
            }
            if !(a.hold_seconds..=86_400).contains(&a.request_seconds) {
                return Err((
                    "admission.requestSeconds".into(),
                    format!(
                        "{} is out of range ({} to 86400): a drain request must outlast the hold",
                        a.request_seconds, a.hold_seconds
                    ),
                ));
            }
            if !(1..=100_000).contains(&a.max_concurrent) {
                return Err((
                    "admission.maxConcurrent".into(),
                    format!("{} is out of range (1 to 100000)", a.max_concurrent),
                ));
            }
        }
        if let Some(api) = &self.api {
            self.validate_api(api)?;
        }
        for (name, rules) in &self.tenants {
            if !self.adapters.iter().any(|a| a.name() == name) {
                return Err((
                    format!("tenants.{name}"),
                    format!("{name:?} is not one of the adapters"),
                ));
            }
            if rules.is_empty() {
                return Err((
                    format!("tenants.{name}"),
                    "name at least one rule (namespaces and names), or remove the entry to leave the adapter open"
                        .into(),
                ));
            }
            for (i, r) in rules.iter().enumerate() {
                for c in &r.endpoints {
                    if crate::tenancy::Cidr::parse(c).is_none() {
                        return Err((
                            format!("tenants.{name}[{i}].endpoints"),
                            format!("{c:?} is not a CIDR (e.g. 10.2.0.0/16 or 2001:db8::/48)"),
                        ));
                    }
                }
                if r.namespaces.is_empty()
                    || r.names.is_empty()
                    || r.namespaces.iter().chain(&r.names).any(|x| x.is_empty())
                {
                    return Err((
                        format!("tenants.{name}[{i}]"),
                        "namespaces and names must each list at least one non-empty pattern (a trailing * matches a prefix)"
                            .into(),
                    ));
                }
            }
        }
        if let Some(e) = &self.telemetry.otlp_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err((
                    "telemetry.otlpEndpoint".into(),
                    format!("{e:?} must be an http:// or https:// URL (OTLP over gRPC, usually port 4317)"),
                ));
            }
        }
        if let Some(l) = &self.leader_election {
            if self.shadow {
                return Err((
                    "shadow".into(),
                    "a shadow gateway never takes the lease: remove leaderElection, or set shadow: false".into(),
                ));
            }
            if let Some(c) = &l.cluster {
                if !self.clusters.iter().any(|x| &x.name == c) {
                    return Err((
                        "leaderElection.cluster".into(),
                        format!("{c:?} is not one of the clusters"),
                    ));
                }
            }
            if !is_name(&l.namespace) || !is_name(&l.name) {
                return Err((
                    "leaderElection.name".into(),
                    "namespace and name must be DNS labels".into(),
                ));
            }
            if !(1..=300).contains(&l.lease_seconds) {
                return Err((
                    "leaderElection.leaseSeconds".into(),
                    format!("{} is out of range (1 to 300)", l.lease_seconds),
                ));
            }
            if l.renew_deadline_ms == 0 || l.renew_deadline_ms >= l.lease_seconds * 1000 {
                return Err((
                    "leaderElection.renewDeadlineMs".into(),
                    format!(
                        "{} must be above 0 and below the lease ({} ms): a leader must stop writing before a \
                         standby may take over",
                        l.renew_deadline_ms,
                        l.lease_seconds * 1000
                    ),
                ));
            }
            if l.retry_ms < 50 || l.retry_ms >= l.renew_deadline_ms {
                return Err((
                    "leaderElection.retryMs".into(),
                    format!(
                        "{} must be at least 50 and below renewDeadlineMs ({}): the leader renews several times \
                         before its deadline",
                        l.retry_ms, l.renew_deadline_ms
                    ),
                ));
            }
            if !is_field_manager(&self.engine.instance) {
                return Err((
                    "engine.instance".into(),
                    format!("{:?} must be 1 to 100 printable characters", self.engine.instance),
                ));
            }
        }
        Ok(())
    }
}

fn is_field_manager(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_graphic())
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_and_tenants_mistakes_name_the_field_and_what_to_do() {
        let base = "clusters:\n- name: east\n  kubeconfig: /k\nadapters:\n- kind: haproxy\n  name: lb\n  endpoint: unix:/run/haproxy.sock\n";
        for (extra, field, says) in [
            ("api:\n  listen: 0.0.0.0:7443\n  insecure: true\n  tokens: [{user: a, file: /t}]\n", "api.insecure", "only on a loopback"),
            ("api:\n  listen: 127.0.0.1:7443\n  tokens: [{user: a, file: /t}]\n", "api.tls", "required"),
            ("api:\n  listen: 127.0.0.1:7443\n  insecure: true\n", "api", "no way to authenticate"),
            (
                "api:\n  listen: 127.0.0.1:7443\n  insecure: true\n  tokens: [{user: a, file: /t}]\n  rules: [{users: [a], verbs: [drain], namespaces: [x], clusters: [west]}]\n",
                "api.rules[0].clusters",
                "\"west\" is not one of the clusters",
            ),
            (
                "api:\n  listen: 127.0.0.1:7443\n  insecure: true\n  tokens: [{user: a, file: /t}]\n  rules: [{verbs: [drain], namespaces: [x]}]\n",
                "api.rules[0].users",
                "at least one user or group",
            ),
            ("tenants:\n  dns: [{namespaces: [a], names: [b]}]\n", "tenants.dns", "not one of the adapters"),
            ("tenants:\n  lb: [{namespaces: [], names: [b]}]\n", "tenants.lb[0]", "at least one"),
        ] {
            let e = Config::parse(&format!("{base}{extra}"), "t.yaml").unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
            assert!(e.problem.contains(says), "{extra}: {e}");
        }
        let ok = Config::parse(
            &format!("{base}api:\n  listen: 127.0.0.1:7443\n  insecure: true\n  tokens: [{{user: a, file: /t}}]\ntenants:\n  lb: [{{namespaces: [shop], names: [web]}}]\n"),
            "t.yaml",
        )
        .unwrap();
        assert_eq!(ok.tenants["lb"][0].names, ["web"]);
    }

    #[test]
    fn valid_config_parses() {
        let cfg = Config::parse(
            "clusters:\n- name: east\n  kubeconfig: /k\n  context: e\nadapters:\n- kind: haproxy\n  name: lb\n  endpoint: unix:/run/haproxy.sock\n",
            "t.yaml",
        )
        .expect("valid");
        assert_eq!(cfg.clusters[0].name, "east");
        assert_eq!(cfg.adapters[0].name(), "lb");
        assert_eq!(cfg.engine.poll_interval_ms, 10);
    }

    #[test]
    fn every_adapter_kind_parses_and_inline_secrets_are_refused() {
        let base = "clusters:\n- name: a\n  kubeconfig: /k\nadapters:\n";
        let kinds = [
            "- kind: haproxy\n  name: lb\n  endpoint: unix:/run/haproxy.sock\n",
            "- kind: remote\n  name: plug\n  endpoint: http://127.0.0.1:7070\n  adapterKind: rpc\n",
            "- kind: rfc2136\n  name: dns\n  primary: 127.0.0.1:53\n  zones: [example.com]\n  tsigKeyFile: /etc/key\n",
            "- kind: powerdns\n  name: pdns\n  apiUrl: http://127.0.0.1:8081\n  apiKeyEnv: PDNS_KEY\n  dns: 127.0.0.1:53\n  zones: [example.com]\n",
            "- kind: etcd\n  name: reg\n  endpoints: [http://127.0.0.1:2379]\n  preset: grpc-go\n",
            "- kind: zookeeper-dubbo\n  name: zk\n  connect: 127.0.0.1:2181\n",
            "- kind: nacos\n  name: nacos\n  serverAddr: http://127.0.0.1:8848\n",
        ];
        for k in kinds {
            let cfg = Config::parse(&format!("{base}{k}"), "t.yaml").unwrap_or_else(|e| panic!("{k}: {e}"));
            assert_eq!(cfg.adapters.len(), 1);
        }
        for inline in [
            "- kind: rfc2136\n  name: dns\n  primary: 127.0.0.1:53\n  zones: [example.com]\n  tsigSecret: c2VjcmV0\n",
            "- kind: etcd\n  name: reg\n  endpoints: [http://127.0.0.1:2379]\n  preset: grpc-go\n  password: hunter2\n",
            "- kind: nacos\n  name: nacos\n  serverAddr: http://127.0.0.1:8848\n  password: hunter2\n",
        ] {
            let e = Config::parse(&format!("{base}{inline}"), "t.yaml").expect_err(inline);
            assert!(e.field.starts_with("adapters[0]"), "{e}");
            assert!(e.problem.contains("unknown field"), "an inline secret is refused: {e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("clusters: []\n", "clusters", "at least one cluster"),
            (
                "clusters:\n- name: East\n  kubeconfig: /k\n",
                "clusters[0].name",
                "DNS label",
            ),
            ("clusters:\n- name: a\n", "clusters[0].kubeconfig", "required"),
            (
                "clusters:\n- name: a\n  kubeconfig: /k\n  inCluster: true\n",
                "clusters[0].inCluster",
                "not both",
            ),
            (
                "clusters:\n- name: a\n  kubeconfig: /k\n- name: a\n  kubeconfig: /k\n",
                "clusters[1].name",
                "unique",
            ),
            (
                "clusters:\n- name: a\n  kubeconfig: /k\n  bogus: 1\n",
                "clusters[0]",
                "unknown field `bogus`",
            ),
            (
                "clusters:\n- name: a\n  kubeconfig: /k\nadapters:\n- kind: f5\n  name: x\n",
                "adapters[0]",
                "unknown variant `f5`",
            ),
            (
                "clusters:\n- name: a\n  kubeconfig: /k\nlisten:\n  health: nowhere\n",
                "listen.health",
                "invalid socket address",
            ),
        ];
        for (text, field, problem) in cases {
            let e = Config::parse(text, "t.yaml").expect_err(text);
            assert!(e.field.starts_with(field), "{text}: field {:?} (want {field})", e.field);
            assert!(
                e.problem.contains(problem),
                "{text}: problem {:?} (want {problem})",
                e.problem
            );
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }
}
