//! One simulated cluster: its state, its listener (TLS or plain HTTP, with offline/online
//! switching), its background controllers (namespace and CRD cleanup, kubelet-lite) and the
//! handle tests hold.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::crd::CLEANUP_FINALIZER;
use crate::faults::Faults;
use crate::kubelet::{Kubelet, KubeletConfig};
use crate::object::{meta_str, Obj};
use crate::ops::{self, DeleteOpts, Sub};
use crate::patch::PatchType;
use crate::read::{self, ListParams, Selection};
use crate::resources::ResourceDef;
use crate::status::{ApiError, ApiResult};
use crate::store::{EventType, Store};

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Stable name: the kubeconfig's cluster, context and user are named after it.
    pub name: String,
    /// Listen address; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Serve HTTPS with a generated certificate (the default) or plain HTTP.
    pub tls: bool,
    /// Accepted bearer tokens → user name. Empty: one random token is generated.
    pub tokens: HashMap<String, String>,
    /// Watch events kept for replay; older resourceVersions answer `410 Expired`.
    pub history: usize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    pub kubelet: Option<KubeletConfig>,
    /// More bearer tokens → user names, besides the admin one (e.g. a service account
    /// whose requests [`Faults::request_log`] tells apart).
    pub extra_tokens: Vec<(String, String)>,
    /// The client certificate presented to admission webhooks (none: anonymous TLS, the
    /// API server's default).
    pub webhook_client_cert: Option<crate::admission::ClientCert>,
}

impl ClusterConfig {
    pub fn new(name: &str) -> Self {
        ClusterConfig {
            name: name.to_string(),
            addr: "127.0.0.1:0".parse().expect("literal address"),
            tls: true,
            tokens: HashMap::new(),
            history: 10_000,
            bookmark_interval: Duration::from_secs(10),
            kubelet: None,
            extra_tokens: Vec::new(),
            webhook_client_cert: None,
        }
    }

    /// Reads a kube-apiserver static token file (`token,user,uid[,"group1,group2"]`).
    pub fn token_file(mut self, path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading token file {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut cols = line.splitn(3, ',');
            let (token, user) = (cols.next().unwrap_or(""), cols.next().unwrap_or(""));
            if token.is_empty() || user.is_empty() {
                anyhow::bail!("{}:{}: expected `token,user,uid[,groups]`", path.display(), i + 1);
            }
            self.tokens.insert(token.to_string(), user.to_string());
        }
        Ok(self)
    }
}

/// Shared state of one cluster, used by the HTTP front and the background controllers.
pub struct ClusterState {
    pub name: String,
    store: Mutex<Store>,
    pub faults: Faults,
    pub bookmark_interval: Duration,
    pub server_address: String,
    tokens: HashMap<String, String>,
    pub webhook_client: Option<crate::admission::ClientCert>,
    /// ServiceAccount tokens issued, for TokenReview.
    pub service_account_tokens: crate::tokenreview::ServiceAccountTokens,
}

impl ClusterState {
    /// The store, locked. Never held across an `.await`.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn authenticate(&self, header: Option<&str>) -> bool {
        self.user_of(header).is_some()
    }

    /// The user a bearer token authenticates as.
    pub fn user_of(&self, header: Option<&str>) -> Option<&str> {
        header
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|t| self.tokens.get(t.trim()))
            .map(String::as_str)
    }
}

/// A running simulated cluster. Dropping it stops it.
pub struct Cluster {
    state: Arc<ClusterState>,
    addr: SocketAddr,
    tls: bool,
    ca_pem: Option<String>,
    token: String,
    tasks: Vec<JoinHandle<()>>,
    kubelet: Option<Kubelet>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.state.faults.set_offline(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Cluster {
    pub async fn start(cfg: ClusterConfig) -> anyhow::Result<Cluster> {
        let listener = TcpListener::bind(cfg.addr)
            .await
            .with_context(|| format!("binding {}", cfg.addr))?;
        let addr = listener.local_addr()?;
        let mut tokens = cfg.tokens.clone();
        let token = match tokens.keys().next() {
            Some(t) => t.clone(),
            None => {
                let t = format!("kube-sim-{}", uuid::Uuid::new_v4().simple());
                tokens.insert(t.clone(), "kube-sim-admin".into());
                t
            }
        };
        tokens.extend(cfg.extra_tokens.iter().cloned());
        let state = Arc::new(ClusterState {
            name: cfg.name.clone(),
            store: Mutex::new(Store::new(cfg.history)),
            faults: Faults::default(),
            bookmark_interval: cfg.bookmark_interval,
            server_address: addr.to_string(),
            tokens,
            webhook_client: cfg.webhook_client_cert.clone(),
            service_account_tokens: Default::default(),
        });
        {
            let mut store = state.store();
            let def = store.find_def("", "v1", "namespaces").expect("namespaces are built in");
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                ops::create(&mut store, &def, "", json!({"metadata": {"name": ns}})).map_err(anyhow::Error::new)?;
            }
        }
        let tls = if cfg.tls {
            Some(crate::tls::generate(&cfg.name)?)
        } else {
            None
        };
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
        let mut tasks = vec![tokio::spawn(accept_loop(state.clone(), listener, addr, acceptor))];
        tasks.push(tokio::spawn(reaper(state.clone())));
        let kubelet = cfg.kubelet.clone().map(|k| {
            let (kubelet, task) = Kubelet::start(state.clone(), k);
            tasks.push(task);
            kubelet
        });
        Ok(Cluster {
            state,
            addr,
            tls: cfg.tls,
            ca_pem,
            token,
            tasks,
            kubelet,
        })
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Issues a ServiceAccount token (what the TokenRequest API gives a pod), valid for
    /// `audiences` (none: the API server's own); TokenReview authenticates it.
    pub fn issue_service_account_token(&self, namespace: &str, service_account: &str, audiences: &[&str]) -> String {
        self.state
            .service_account_tokens
            .issue(namespace, service_account, audiences)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    pub fn kubelet(&self) -> Option<&Kubelet> {
        self.kubelet.as_ref()
    }

    pub fn state(&self) -> &Arc<ClusterState> {
        &self.state
    }

    /// A kubeconfig (YAML) with this cluster as its only and current context.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&[self], &self.state.name)
    }

    /// Direct access to one resource, bypassing HTTP (tests, demo harness).
    pub fn api(&self, group: &str, version: &str, plural: &str) -> ApiResult<ObjectApi> {
        let def = self
            .state
            .store()
            .find_def(group, version, plural)
            .ok_or_else(ApiError::path_not_found)?;
        Ok(ObjectApi {
            state: self.state.clone(),
            def,
        })
    }
}

/// One kubeconfig holding several clusters, each with its own context.
pub fn kubeconfig(clusters: &[&Cluster], current: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let cluster_entries: Vec<Value> = clusters
        .iter()
        .map(|c| {
            let mut cluster = json!({"server": c.url()});
            if let Some(ca) = &c.ca_pem {
                cluster["certificate-authority-data"] = json!(b64.encode(ca));
            }
            json!({"name": c.name(), "cluster": cluster})
        })
        .collect();
    let contexts: Vec<Value> = clusters
        .iter()
        .map(|c| json!({"name": c.name(), "context": {"cluster": c.name(), "user": format!("{}-admin", c.name()), "namespace": "default"}}))
        .collect();
    let users: Vec<Value> = clusters
        .iter()
        .map(|c| json!({"name": format!("{}-admin", c.name()), "user": {"token": c.token}}))
        .collect();
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": cluster_entries,
        "contexts": contexts,
        "current-context": current,
        "users": users,
        "preferences": {},
    });
    serde_yaml::to_string(&doc).expect("kubeconfig serializes")
}

/// In-process access to one resource with the same semantics as the HTTP API.
#[derive(Clone)]
pub struct ObjectApi {
    state: Arc<ClusterState>,
    def: Arc<ResourceDef>,
}

impl ObjectApi {
    fn present(&self, obj: &Obj) -> Value {
        let store = self.state.store();
        let sdef = store.storage_def(&self.def.storage_key()).expect("storage definition");
        ops::present(&self.def, &sdef, obj)
    }

    pub fn create(&self, ns: &str, body: Value) -> ApiResult<Value> {
        let obj = ops::create(&mut self.state.store(), &self.def, ns, body)?;
        Ok(self.present(&obj))
    }

    pub fn get(&self, ns: &str, name: &str) -> ApiResult<Value> {
        let obj = ops::get(&self.state.store(), &self.def, ns, name)?;
        Ok(self.present(&obj))
    }

    pub fn update(&self, ns: &str, name: &str, body: Value) -> ApiResult<Value> {
        let obj = ops::update(&mut self.state.store(), &self.def, ns, name, Sub::Main, body)?;
        Ok(self.present(&obj))
    }

    pub fn update_status(&self, ns: &str, name: &str, body: Value) -> ApiResult<Value> {
        let obj = ops::update(&mut self.state.store(), &self.def, ns, name, Sub::Status, body)?;
        Ok(self.present(&obj))
    }

    pub fn patch(&self, ns: &str, name: &str, kind: PatchType, patch: &Value) -> ApiResult<Value> {
        let body = patch.to_string();
        let obj = ops::patch(
            &mut self.state.store(),
            &self.def,
            ns,
            name,
            Sub::Main,
            kind,
            body.as_bytes(),
        )?;
        Ok(self.present(&obj))
    }

    pub fn delete(&self, ns: &str, name: &str, opts: &DeleteOpts) -> ApiResult<Option<Value>> {
        let d = ops::delete(&mut self.state.store(), &self.def, ns, name, opts)?;
        Ok((!d.gone).then(|| self.present(&d.obj)))
    }

    pub async fn list(&self, ns: Option<&str>) -> ApiResult<Vec<Value>> {
        let sel = Selection {
            namespace: ns.map(String::from),
            ..Default::default()
        };
        let r = read::list(&self.state, &self.def, &sel, &ListParams::default()).await?;
        Ok(r.items.iter().map(|o| self.present(o)).collect())
    }
}

async fn accept_loop(
    state: Arc<ClusterState>,
    first: TcpListener,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut online = state.faults.online_signal();
    let mut listener = Some(first);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "re-binding the simulator listener");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                accepted = l.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(state.clone(), stream, tls.clone()));
                }
                _ = online.wait_for(|on| !*on) => break,
            }
        }
        drop(l);
        if online.wait_for(|on| *on).await.is_err() {
            return;
        }
    }
}

async fn serve_connection(
    state: Arc<ClusterState>,
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut online = state.faults.online_signal();
    let service = hyper::service::service_fn(move |req| crate::server::handle(state.clone(), req));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let serve = async {
        match tls {
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(s) => {
                    let _ = builder.serve_connection(TokioIo::new(s), service).await;
                }
                Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
            },
            None => {
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            }
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = online.wait_for(|on| !*on) => {}
    }
}

/// The namespace controller and the CRD cleanup controller: empties terminating namespaces
/// and deleted CRDs, then removes them.
async fn reaper(state: Arc<ClusterState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let mut store = state.store();
        let ns_key = (String::new(), "namespaces".to_string());
        let crd_key = (
            "apiextensions.k8s.io".to_string(),
            "customresourcedefinitions".to_string(),
        );
        let ns_def = store.storage_def(&ns_key).expect("namespaces");
        let crd_def = store.storage_def(&crd_key).expect("crds");
        let terminating: Vec<Arc<Obj>> = store
            .table(&ns_key)
            .values()
            .filter(|o| {
                serde_json::from_slice::<Value>(&o.json).is_ok_and(|v| meta_str(&v, "deletionTimestamp").is_some())
            })
            .cloned()
            .collect();
        for ns in terminating {
            let contents = store.objects_in_namespace(&ns.name);
            if contents.is_empty() {
                // The controller's finalize (spec.finalizers emptied) deletes it during that
                // update, which is never stored: DELETED carries the last stored namespace.
                let mut v = ns.value(&ns_def);
                let rv = store.next_rv();
                v["metadata"]["resourceVersion"] = json!(rv.to_string());
                if let Ok(obj) = Obj::from_value(&ns_def, v) {
                    store.commit(ns_key.clone(), EventType::Deleted, Arc::new(obj), Some(ns.clone()));
                }
                continue;
            }
            for (key, obj) in contents {
                let deleting = serde_json::from_slice::<Value>(&obj.json)
                    .is_ok_and(|v| meta_str(&v, "deletionTimestamp").is_some());
                if deleting {
                    continue;
                }
                if let Some(def) = store.storage_def(&key) {
                    let _ = ops::delete(&mut store, &def, &obj.namespace, &obj.name, &DeleteOpts::default());
                }
            }
        }
        let deleted_crds: Vec<Value> = store
            .table(&crd_key)
            .values()
            .map(|o| o.value(&crd_def))
            .filter(|v| meta_str(v, "deletionTimestamp").is_some())
            .collect();
        for crd in deleted_crds {
            let group = crd["spec"]["group"].as_str().unwrap_or("").to_string();
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or("").to_string();
            let key = (group, plural);
            let items: Vec<Arc<Obj>> = store.table(&key).values().cloned().collect();
            if items.is_empty() {
                let name = meta_str(&crd, "name").unwrap_or("").to_string();
                let fins: Vec<Value> = crd["metadata"]["finalizers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| *f != CLEANUP_FINALIZER)
                    .cloned()
                    .collect();
                let mut next = crd.clone();
                next["metadata"]["finalizers"] = json!(fins);
                let _ = ops::update(&mut store, &crd_def, "", &name, Sub::Main, next);
                continue;
            }
            if let Some(def) = store.storage_def(&key) {
                for obj in items {
                    let _ = ops::delete(&mut store, &def, &obj.namespace, &obj.name, &DeleteOpts::default());
                }
            }
        }
    }
}

/// Patch helper for callers that hold a [`ClusterState`] (kubelet-lite).
pub(crate) fn patch_status(
    state: &ClusterState,
    ns: &str,
    name: &str,
    f: impl FnOnce(&mut Value) -> bool,
) -> ApiResult<()> {
    let mut store = state.store();
    let def = store.find_def("", "v1", "pods").expect("pods are built in");
    let obj = ops::get(&store, &def, ns, name)?;
    let mut v = obj.value(&def);
    if !f(&mut v) {
        return Ok(());
    }
    ops::update(&mut store, &def, ns, name, Sub::Status, v).map(|_| ())
}
