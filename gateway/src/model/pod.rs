//! The engine's view of a pod ([`PodView`]): the few fields it acts on, and the names the
//! product writes on pods (part of the contract, see ARCHITECTURE.md).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::api::core::v1::Pod;

use super::ledger::{LedgerEntry, LedgerError, LEDGER_ANNOTATION, LEDGER_FINALIZER};
use super::status::{StatusSummary, STATUS_ANNOTATION};

pub const DOMAIN: &str = "sluice.dev";
/// Readiness-gate condition type.
pub const GATE: &str = "sluice.dev/traffic-ready";
/// Rollout controllers (and the gRPC API) ask for a drain with `drained`.
pub const DESIRED_ANNOTATION: &str = "sluice.dev/desired";
/// Who asked for `sluice.dev/desired: drained` through the API, and why:
/// `{"by": <identity>, "why": <reason>, "at": <time>, "requestId": <id>}`.
pub const DESIRED_BY_ANNOTATION: &str = "sluice.dev/desired-by";
/// Set by the gateway when a blocking preStop call arrives: `{"at": <time>, "restarts": N}`,
/// N the pod's container restarts at that moment. The mark stands for those containers
/// only: once one restarts (a liveness-probe restart also runs preStop), it no longer
/// drains the pod.
pub const PRESTOP_ANNOTATION: &str = "sluice.dev/prestop";
/// A drain asked for a while, by the admission webhook before it admits a pod's eviction
/// or deletion: `{"by": <user>, "why": <operation>, "until": <RFC 3339>}`. It drains the pod
/// until `until`; then, if the pod was not deleted meanwhile (a refused eviction that was
/// never retried), the pod is restored.
pub const DRAIN_REQUEST_ANNOTATION: &str = "sluice.dev/drain-request";

/// The value of a drain request by `by` for `why`, standing until `until`.
pub fn drain_request(by: &str, why: &str, until: jiff::Timestamp) -> String {
    serde_json::json!({"by": by, "why": why, "until": super::status::time_text(until)}).to_string()
}

/// When a drain request stands until (`None`: unreadable, ignored).
fn drain_request_until(value: &str) -> Option<jiff::Timestamp> {
    serde_json::from_str::<serde_json::Value>(value).ok()?["until"]
        .as_str()?
        .parse()
        .ok()
}

/// OpenKruise lifecycle state label.
pub const KRUISE_STATE: &str = "lifecycle.apps.kruise.io/state";

/// The preStop mark's value for containers that have restarted `restarts` times.
pub fn prestop_mark(restarts: i64) -> String {
    serde_json::json!({"at": super::status::now_text(), "restarts": restarts}).to_string()
}

/// The restart count a preStop mark was taken at (`None`: a mark without one, honoured).
fn prestop_mark_restarts(mark: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(mark).ok()?["restarts"].as_i64()
}

/// The finalizer of a traffic kind.
pub fn finalizer(kind: &str) -> String {
    format!("{DOMAIN}/{kind}")
}

/// The traffic kind a finalizer of Sluice's stands for (`None`: another controller's, or
/// the ledger guard).
pub fn finalizer_kind(finalizer: &str) -> Option<&str> {
    if finalizer == LEDGER_FINALIZER {
        return None;
    }
    finalizer.strip_prefix(DOMAIN)?.strip_prefix('/')
}

/// A pod's labels, one copy per distinct set: the pods of a ReplicaSet carry the same
/// labels, and a cluster of 100,000 pods has a few thousand sets, so a pod holds a pointer
/// instead of a map of its own (about 900 bytes for five labels).
#[derive(Clone, PartialEq, Eq)]
pub struct Labels(Arc<BTreeMap<String, String>>);

/// The label sets in use, each once.
struct LabelSets {
    sets: HashSet<Arc<BTreeMap<String, String>>>,
    /// When the set count reaches this, sets no pod holds any more are dropped.
    sweep_at: usize,
}

static LABEL_SETS: LazyLock<Mutex<LabelSets>> = LazyLock::new(|| {
    Mutex::new(LabelSets {
        sets: HashSet::new(),
        sweep_at: 1024,
    })
});

impl Labels {
    /// The shared copy of this set (made when it is the first).
    pub fn new(labels: BTreeMap<String, String>) -> Labels {
        let mut interned = LABEL_SETS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = interned.sets.get(&labels) {
            return Labels(set.clone());
        }
        if interned.sets.len() >= interned.sweep_at {
            // Amortised: a sweep at every doubling of the sets still held.
            interned.sets.retain(|set| Arc::strong_count(set) > 1);
            interned.sweep_at = (interned.sets.len() * 2).max(1024);
        }
        let set = Arc::new(labels);
        interned.sets.insert(set.clone());
        Labels(set)
    }
}

impl Default for Labels {
    fn default() -> Labels {
        Labels::new(BTreeMap::new())
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(labels: BTreeMap<String, String>) -> Labels {
        Labels::new(labels)
    }
}

impl std::ops::Deref for Labels {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What the engine knows of a pod. Tracked by UID, never by name or IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub labels: Labels,
    /// The `sluice.dev/desired` annotation, as written.
    pub desired: Option<String>,
    /// `sluice.dev/desired-by`, as written (who asked through the API).
    pub desired_by: Option<String>,
    pub kruise_state: Option<String>,
    pub deleting: bool,
    /// A preStop mark for the containers running now.
    pub prestop: bool,
    /// Restarts of all the pod's containers (`status.containerStatuses[].restartCount`).
    pub restarts: i64,
    pub containers_ready: bool,
    pub ip: Option<IpAddr>,
    pub finalizers: Vec<String>,
    /// Status of the `sluice.dev/traffic-ready` condition, if present.
    pub gate: Option<bool>,
    /// Whether `spec.readinessGates` names the gate.
    pub has_gate: bool,
    pub status_annotation: Option<String>,
    pub ledger_annotation: Option<String>,
    /// `sluice.dev/traceparent`: the release's trace (W3C), set by a rollout controller.
    pub traceparent: Option<String>,
    /// Until when a drain request (`sluice.dev/drain-request`) stands.
    pub drain_request: Option<jiff::Timestamp>,
    /// `spec.hostNetwork`: the pod's IP is its node's, shared with every process there.
    pub host_network: bool,
    /// A container runs (or the kubelet has not reported any): a pod whose containers all
    /// ended no longer owns its address, which a new pod may have been given.
    pub running: bool,
}

impl PodView {
    pub fn from_pod(cluster: &str, pod: &Pod) -> Option<PodView> {
        let m = &pod.metadata;
        let annotations = m.annotations.as_ref();
        let annotation = |k: &str| annotations.and_then(|a| a.get(k)).cloned();
        let status = pod.status.as_ref();
        let cond = |t: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == t))
                .map(|c| c.status == "True")
        };
        let labels = m.labels.clone().unwrap_or_default();
        let restarts: i64 = status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
            .unwrap_or(0);
        let prestop = annotation(PRESTOP_ANNOTATION)
            .is_some_and(|mark| prestop_mark_restarts(&mark).is_none_or(|at| at == restarts));
        Some(PodView {
            cluster: cluster.to_string(),
            namespace: m.namespace.clone()?,
            name: m.name.clone()?,
            uid: m.uid.clone()?,
            resource_version: m.resource_version.clone().unwrap_or_default(),
            kruise_state: labels.get(KRUISE_STATE).cloned(),
            labels: Labels::new(labels),
            desired: annotation(DESIRED_ANNOTATION),
            desired_by: annotation(DESIRED_BY_ANNOTATION),
            deleting: m.deletion_timestamp.is_some(),
            prestop,
            restarts,
            containers_ready: cond("ContainersReady") == Some(true),
            ip: status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()),
            finalizers: m.finalizers.clone().unwrap_or_default(),
            gate: cond(GATE),
            has_gate: pod
                .spec
                .as_ref()
                .and_then(|s| s.readiness_gates.as_ref())
                .is_some_and(|g| g.iter().any(|g| g.condition_type == GATE)),
            status_annotation: annotation(STATUS_ANNOTATION),
            ledger_annotation: annotation(LEDGER_ANNOTATION),
            traceparent: annotation(crate::telemetry::TRACEPARENT_ANNOTATION),
            drain_request: annotation(DRAIN_REQUEST_ANNOTATION).and_then(|v| drain_request_until(&v)),
            host_network: pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false),
            running: status
                .and_then(|s| s.container_statuses.as_ref())
                .filter(|cs| !cs.is_empty())
                .is_none_or(|cs| cs.iter().any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))),
        })
    }

    /// The gateway's status annotation, parsed.
    pub fn status(&self) -> Option<StatusSummary> {
        StatusSummary::parse(self.status_annotation.as_deref())
    }

    /// The registration ledger.
    pub fn ledger(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        super::ledger::parse(self.ledger_annotation.as_deref())
    }

    /// The traffic kinds whose `sluice.dev/<kind>` finalizer the pod carries.
    pub fn kind_finalizers(&self) -> std::collections::BTreeSet<String> {
        self.finalizers
            .iter()
            .filter_map(|f| finalizer_kind(f).map(String::from))
            .collect()
    }

    /// The ledger guard finalizer is present.
    pub fn guarded(&self) -> bool {
        self.finalizers.iter().any(|f| f == LEDGER_FINALIZER)
    }

    /// Any finalizer of Sluice's (a kind's, or the ledger guard).
    pub fn holds_sluice_finalizer(&self) -> bool {
        self.guarded() || !self.kind_finalizers().is_empty()
    }

    pub fn key(&self) -> PodKey {
        PodKey {
            cluster: self.cluster.clone(),
            uid: self.uid.clone(),
        }
    }

    /// `cluster/namespace/name`, for logs and messages.
    pub fn display(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.namespace, self.name)
    }

    /// Whether `other` is a later state of the same object than `self`. Resource versions
    /// are opaque strings in the API, but every etcd-backed API server (and the simulator)
    /// writes the store's revision, so a numeric comparison orders them; anything else
    /// counts as newer (the last arrival wins).
    pub fn is_older_than(&self, other: &PodView) -> bool {
        match (
            self.resource_version.parse::<u64>(),
            other.resource_version.parse::<u64>(),
        ) {
            (Ok(a), Ok(b)) => a < b,
            _ => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub cluster: String,
    pub uid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prestop_mark_stands_for_the_containers_it_was_taken_for() {
        let pod = |mark: Option<String>, restarts: i32| -> PodView {
            let p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "n", "uid": "u",
                             "annotations": mark.map(|m| serde_json::json!({PRESTOP_ANNOTATION: m}))},
                "status": {"containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": restarts, "image": "i", "imageID": ""},
                    {"name": "b", "ready": true, "restartCount": 1, "image": "i", "imageID": ""}
                ]}
            }))
            .unwrap();
            PodView::from_pod("c", &p).unwrap()
        };
        assert!(!pod(None, 0).prestop);
        assert_eq!(pod(None, 2).restarts, 3);
        assert!(pod(Some(prestop_mark(1)), 0).prestop, "taken for these containers");
        assert!(!pod(Some(prestop_mark(1)), 1).prestop, "a container restarted since");
        assert!(
            pod(Some("2026-01-01T00:00:00Z".into()), 5).prestop,
            "a mark without a count is honoured"
        );
    }

    #[test]
    fn equal_label_sets_share_one_copy() {
        let set = |app: &str| -> BTreeMap<String, String> {
            [
                ("app".to_string(), app.to_string()),
                ("tier".to_string(), "web".to_string()),
            ]
            .into()
        };
        let (a, b) = (Labels::new(set("interned-a")), Labels::new(set("interned-a")));
        assert!(Arc::ptr_eq(&a.0, &b.0), "one copy for equal sets");
        assert_eq!(a.get("tier").map(String::as_str), Some("web"));
        let c = Labels::new(set("interned-c"));
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        assert_ne!(a, c);
    }

    #[test]
    fn finalizer_kinds_exclude_the_guard_and_other_controllers() {
        assert_eq!(finalizer_kind("sluice.dev/slb"), Some("slb"));
        assert_eq!(finalizer_kind(LEDGER_FINALIZER), None);
        assert_eq!(finalizer_kind("sluice.devx/slb"), None);
        assert_eq!(finalizer_kind("example.com/keep"), None);
    }
}
