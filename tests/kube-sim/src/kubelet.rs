//! Kubelet-lite: runs the pod lifecycle a kubelet would for pods bound to a node
//! (`spec.nodeName` set), without containers.
//!
//! - Start: after `start_delay`, phase `Running`, `podIP` (the `kube-sim.dev/pod-ip`
//!   annotation, else the next address of 127.1.0.0/16 — loopback, so nothing outside this
//!   machine is ever addressed), `PodScheduled` / `Initialized` True.
//! - `ContainersReady`: True after `ready_delay` when set, else driven by the test through
//!   [`Kubelet::set_containers_ready`].
//! - `Ready` is recomputed as the kubelet does: `ContainersReady` and every
//!   `spec.readinessGates` condition True — as a separate status write, after the write
//!   that changed its inputs.
//! - Deletion: on `deletionTimestamp`, containers stop (`ContainersReady`/`Ready` False),
//!   then after `terminate_delay` (capped by the grace period) the pod is deleted with
//!   grace period 0; finalizers still hold it.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::cluster::{patch_status, ClusterState};
use crate::object::{meta_str, now_rfc3339};
use crate::ops::{self, DeleteOpts};
use crate::pods::{computed_ready, set_condition};
use crate::store::EventType;

/// Annotation a test or the demo sets to choose a pod's IP.
pub const POD_IP_ANNOTATION: &str = "kube-sim.dev/pod-ip";

#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub start_delay: Duration,
    /// `Some`: containers become ready this long after start. `None`: only the test sets it.
    pub ready_delay: Option<Duration>,
    pub terminate_delay: Duration,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            start_delay: Duration::from_millis(50),
            ready_delay: Some(Duration::from_millis(100)),
            terminate_delay: Duration::from_millis(50),
        }
    }
}

#[derive(Default)]
struct Tracked {
    started: HashSet<String>,
    terminating: HashSet<String>,
    /// Test overrides of `ContainersReady`, by pod UID.
    ready_override: HashMap<String, bool>,
    next_ip: u32,
}

/// Handle to a cluster's kubelet-lite.
pub struct Kubelet {
    state: Arc<ClusterState>,
    tracked: Arc<Mutex<Tracked>>,
}

impl Kubelet {
    /// Starts the kubelet; the cluster owns the returned task and aborts it on shutdown.
    pub(crate) fn start(state: Arc<ClusterState>, cfg: KubeletConfig) -> (Kubelet, JoinHandle<()>) {
        let tracked = Arc::new(Mutex::new(Tracked {
            next_ip: 1,
            ..Default::default()
        }));
        let task = tokio::spawn(run(state.clone(), cfg, tracked.clone()));
        (Kubelet { state, tracked }, task)
    }

    /// Sets `ContainersReady` of a pod (and so, with its gates, `Ready`), overriding
    /// `ready_delay` for that pod from now on.
    pub fn set_containers_ready(&self, ns: &str, name: &str, ready: bool) -> crate::status::ApiResult<()> {
        let uid = {
            let store = self.state.store();
            let def = store.find_def("", "v1", "pods").expect("pods");
            ops::get(&store, &def, ns, name)?.uid.clone()
        };
        self.tracked
            .lock()
            .expect("kubelet lock")
            .ready_override
            .insert(uid, ready);
        patch_status(&self.state, ns, name, |v| {
            let mut changed = set_condition(v, "ContainersReady", ready, (!ready).then_some("ContainersNotReady"));
            changed |= apply_ready(v);
            changed
        })
    }
}

fn apply_ready(v: &mut Value) -> bool {
    let (ready, reason) = computed_ready(v);
    set_condition(v, "Ready", ready, reason)
}

async fn run(state: Arc<ClusterState>, cfg: KubeletConfig, tracked: Arc<Mutex<Tracked>>) {
    let key = (String::new(), "pods".to_string());
    loop {
        let (initial, mut rx) = {
            let store = state.store();
            let rv = store.rv();
            let initial: Vec<String> = store.table(&key).values().map(|o| o.key.clone()).collect();
            let (_, rx) = store.subscribe_from(rv).expect("current version is always retained");
            (initial, rx)
        };
        for k in initial {
            reconcile(&state, &cfg, &tracked, &k);
        }
        loop {
            match rx.recv().await {
                Ok(ev) if ev.storage == key && ev.kind != EventType::Deleted => {
                    reconcile(&state, &cfg, &tracked, &ev.obj.key)
                }
                Ok(ev) if ev.storage == key => {
                    let mut t = tracked.lock().expect("kubelet lock");
                    t.started.remove(&ev.obj.uid);
                    t.terminating.remove(&ev.obj.uid);
                    t.ready_override.remove(&ev.obj.uid);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn reconcile(state: &Arc<ClusterState>, cfg: &KubeletConfig, tracked: &Arc<Mutex<Tracked>>, key: &str) {
    let v = {
        let store = state.store();
        let def = store.find_def("", "v1", "pods").expect("pods");
        match store.get(&def.storage_key(), key) {
            Some(o) => o.value(&def),
            None => return,
        }
    };
    if v["spec"]["nodeName"].as_str().unwrap_or("").is_empty() {
        return;
    }
    let uid = meta_str(&v, "uid").unwrap_or("").to_string();
    let ns = meta_str(&v, "namespace").unwrap_or("").to_string();
    let name = meta_str(&v, "name").unwrap_or("").to_string();
    let deleting = meta_str(&v, "deletionTimestamp").is_some();
    let mut t = tracked.lock().expect("kubelet lock");
    if deleting {
        if t.terminating.insert(uid.clone()) {
            let grace = v["metadata"]["deletionGracePeriodSeconds"].as_u64().unwrap_or(0);
            let delay = cfg.terminate_delay.min(Duration::from_secs(grace));
            let state = state.clone();
            tokio::spawn(async move {
                let _ = patch_status(&state, &ns, &name, |v| {
                    let mut c = set_condition(v, "ContainersReady", false, Some("PodCompleted"));
                    c |= set_condition(v, "Ready", false, Some("PodCompleted"));
                    c
                });
                tokio::time::sleep(delay).await;
                let mut store = state.store();
                let def = store.find_def("", "v1", "pods").expect("pods");
                let opts = DeleteOpts {
                    grace_period_seconds: Some(0),
                    precondition_uid: Some(uid),
                    ..Default::default()
                };
                let _ = ops::delete(&mut store, &def, &ns, &name, &opts);
            });
        }
        return;
    }
    if t.started.insert(uid.clone()) {
        let ip = v["metadata"]["annotations"][POD_IP_ANNOTATION]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| {
                let n = t.next_ip;
                t.next_ip += 1;
                Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + n).to_string()
            });
        let (state, cfg, tracked) = (state.clone(), cfg.clone(), tracked.clone());
        tokio::spawn(async move {
            tokio::time::sleep(cfg.start_delay).await;
            let _ = patch_status(&state, &ns, &name, |v| {
                let now = now_rfc3339();
                v["status"]["phase"] = json!("Running");
                v["status"]["podIP"] = json!(ip);
                v["status"]["podIPs"] = json!([{"ip": ip}]);
                v["status"]["hostIP"] = json!("127.0.0.1");
                v["status"]["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
                v["status"]["startTime"] = json!(now);
                for c in ["PodReadyToStartContainers", "Initialized", "PodScheduled"] {
                    set_condition(v, c, true, None);
                }
                set_condition(v, "ContainersReady", false, Some("ContainersNotReady"));
                let statuses: Vec<Value> = v["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false,
                                    "restartCount": 0, "started": true, "state": {"running": {"startedAt": now}}})
                    })
                    .collect();
                v["status"]["containerStatuses"] = json!(statuses);
                apply_ready(v);
                true
            });
            if let Some(d) = cfg.ready_delay {
                tokio::time::sleep(d).await;
                let overridden = tracked.lock().expect("kubelet lock").ready_override.contains_key(&uid);
                if !overridden {
                    let _ = patch_status(&state, &ns, &name, |v| {
                        let mut c = set_condition(v, "ContainersReady", true, None);
                        if let Some(cs) = v["status"]["containerStatuses"].as_array_mut() {
                            for s in cs {
                                s["ready"] = json!(true);
                            }
                        }
                        c |= apply_ready(v);
                        c
                    });
                }
            }
        });
        return;
    }
    drop(t);
    // Inputs of Ready may have changed (a readiness gate written by a controller).
    if v["status"]["phase"] == "Running" {
        let _ = patch_status(state, &ns, &name, apply_ready);
    }
}
