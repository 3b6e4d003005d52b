//! The engine's view of the cluster: the few pod fields it acts on ([`PodView`]), and
//! TrafficBindings checked against the gateway's adapter instances ([`Binding`]).
//!
//! Names written on pods are part of the product contract (see ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_adapter::Adapter;

use crate::binding::{OnDeadline, TrafficBinding};

pub const DOMAIN: &str = "sluice.dev";
/// Readiness-gate condition type.
pub const GATE: &str = "sluice.dev/traffic-ready";
/// Rollout controllers (and the gRPC API) ask for a drain with `drained`.
pub const DESIRED_ANNOTATION: &str = "sluice.dev/desired";
/// Small JSON status summary written by the gateway.
pub const STATUS_ANNOTATION: &str = "sluice.dev/status";
/// Set by the gateway when a blocking preStop call arrives: `{"at": <time>, "restarts": N}`,
/// N the pod's container restarts at that moment. The mark stands for those containers
/// only: once one restarts (a liveness-probe restart also runs preStop), it no longer
/// drains the pod.
pub const PRESTOP_ANNOTATION: &str = "sluice.dev/prestop";
/// OpenKruise lifecycle state label.
pub const KRUISE_STATE: &str = "lifecycle.apps.kruise.io/state";

/// The preStop mark's value for containers that have restarted `restarts` times.
pub fn prestop_mark(restarts: i64) -> String {
    let at = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    serde_json::json!({"at": at, "restarts": restarts}).to_string()
}

/// The restart count a preStop mark was taken at (`None`: a mark without one, honoured).
fn prestop_mark_restarts(mark: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(mark).ok()?["restarts"].as_i64()
}

/// The finalizer of a traffic kind.
pub fn finalizer(kind: &str) -> String {
    format!("{DOMAIN}/{kind}")
}

/// What the engine knows of a pod. Tracked by UID, never by name or IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub labels: BTreeMap<String, String>,
    pub desired_drained: bool,
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
}

impl PodView {
    pub fn from_pod(cluster: &str, pod: &Pod) -> Option<PodView> {
        let m = &pod.metadata;
        let annotations = m.annotations.clone().unwrap_or_default();
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
        let prestop = annotations
            .get(PRESTOP_ANNOTATION)
            .is_some_and(|mark| prestop_mark_restarts(mark).is_none_or(|at| at == restarts));
        Some(PodView {
            cluster: cluster.to_string(),
            namespace: m.namespace.clone()?,
            name: m.name.clone()?,
            uid: m.uid.clone()?,
            resource_version: m.resource_version.clone().unwrap_or_default(),
            kruise_state: labels.get(KRUISE_STATE).cloned(),
            labels,
            desired_drained: annotations.get(DESIRED_ANNOTATION).map(String::as_str) == Some("drained"),
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
            status_annotation: annotations.get(STATUS_ANNOTATION).cloned(),
        })
    }

    /// The gateway's status annotation, parsed.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.status_annotation.as_deref()?).ok()
    }

    pub fn key(&self) -> PodKey {
        PodKey {
            cluster: self.cluster.clone(),
            uid: self.uid.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub cluster: String,
    pub uid: String,
}

/// A TrafficBinding resolved against the gateway's adapters.
#[derive(Debug, Clone)]
pub struct Binding {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub selector: Selector,
    pub port: u16,
    pub targets: Vec<ResolvedTarget>,
    pub deadline_seconds: u64,
    pub on_deadline: OnDeadline,
    pub settle_seconds: u64,
    pub max_draining: IntOrString,
}

impl Binding {
    /// Bindings of the same namespace/name in several clusters share one budget.
    pub fn budget_key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn matches(&self, pod: &PodView) -> bool {
        pod.cluster == self.cluster && pod.namespace == self.namespace && self.selector.matches(&pod.labels)
    }

    /// The budget as a number of pods (at least 1). `matched` counts the pods the budget
    /// spans; it is only called for a percentage (counting scans every pod).
    pub fn max_draining(&self, matched: impl FnOnce() -> usize) -> usize {
        match &self.max_draining {
            IntOrString::Int(n) => (*n).max(1) as usize,
            IntOrString::String(s) => {
                let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
                ((matched() as f64 * pct / 100.0).floor() as usize).max(1)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResolvedTarget {
    pub adapter: Arc<dyn Adapter>,
    pub kind: String,
    pub params: BTreeMap<String, String>,
}

/// A compiled `LabelSelector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<(String, SelOp)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SelOp {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// Compiles a selector; the error says what is wrong, for the binding's status.
    pub fn compile(s: &LabelSelector) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for (k, v) in s.match_labels.clone().unwrap_or_default() {
            reqs.push((k, SelOp::In(vec![v])));
        }
        for (i, e) in s.match_expressions.clone().unwrap_or_default().into_iter().enumerate() {
            let values = e.values.unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "selector.matchExpressions[{i}]: operator {} needs values",
                        e.operator
                    ))
                }
                "In" => SelOp::In(values),
                "NotIn" => SelOp::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "selector.matchExpressions[{i}]: operator {} takes no values",
                        e.operator
                    ))
                }
                "Exists" => SelOp::Exists,
                "DoesNotExist" => SelOp::DoesNotExist,
                other => {
                    return Err(format!(
                        "selector.matchExpressions[{i}]: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                    ))
                }
            };
            reqs.push((e.key, op));
        }
        if reqs.is_empty() {
            return Err("selector: an empty selector would match every pod in the namespace; name labels".into());
        }
        Ok(Selector { reqs })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|(k, op)| {
            let v = labels.get(k);
            match op {
                SelOp::In(vs) => v.is_some_and(|v| vs.contains(v)),
                SelOp::NotIn(vs) => v.is_none_or(|v| !vs.contains(v)),
                SelOp::Exists => v.is_some(),
                SelOp::DoesNotExist => v.is_none(),
            }
        })
    }
}

/// Resolves a TrafficBinding, or says why it is invalid (reported on its status and as an
/// Event — never a crash, never silently ignored).
pub fn resolve(
    cluster: &str,
    tb: &TrafficBinding,
    adapters: &BTreeMap<String, Arc<dyn Adapter>>,
    default_deadline: u64,
) -> Result<Binding, String> {
    let spec = &tb.spec;
    let selector = Selector::compile(&spec.selector)?;
    if !(1..=65535).contains(&spec.port) {
        return Err(format!("port: {} is not a port number (1-65535)", spec.port));
    }
    if spec.targets.is_empty() {
        return Err("targets: at least one target is required".into());
    }
    let mut targets = Vec::new();
    for (i, t) in spec.targets.iter().enumerate() {
        let Some(adapter) = adapters.get(&t.adapter) else {
            let known: Vec<&str> = adapters.keys().map(String::as_str).collect();
            return Err(format!(
                "targets[{i}].adapter: no adapter instance {:?} in the gateway configuration (known: {})",
                t.adapter,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        let caps = adapter.capabilities();
        for p in &caps.required_params {
            if !t.params.contains_key(p) {
                return Err(format!(
                    "targets[{i}].params.{p}: required by {} adapter {:?}",
                    caps.kind, t.adapter
                ));
            }
        }
        targets.push(ResolvedTarget {
            adapter: adapter.clone(),
            kind: caps.kind,
            params: t.params.clone(),
        });
    }
    if let IntOrString::String(s) = &spec.disruption_budget.max_draining {
        if !s.ends_with('%') || s.trim_end_matches('%').parse::<f64>().is_err() {
            return Err(format!(
                "disruptionBudget.maxDraining: {s:?} is neither a number nor a percentage"
            ));
        }
    }
    let deadline = spec
        .drain_policy
        .deadline_seconds
        .filter(|d| *d > 0)
        .map(|d| d as u64)
        .unwrap_or(default_deadline);
    Ok(Binding {
        cluster: cluster.to_string(),
        namespace: tb.metadata.namespace.clone().unwrap_or_default(),
        name: tb.metadata.name.clone().unwrap_or_default(),
        selector,
        port: spec.port as u16,
        targets,
        deadline_seconds: deadline,
        on_deadline: spec.drain_policy.on_deadline,
        settle_seconds: spec.drain_policy.settle_seconds.max(0) as u64,
        max_draining: spec.disruption_budget.max_draining.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(max: IntOrString) -> Binding {
        Binding {
            cluster: "c".into(),
            namespace: "n".into(),
            name: "b".into(),
            selector: Selector::compile(&LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            })
            .unwrap(),
            port: 80,
            targets: vec![],
            deadline_seconds: 60,
            on_deadline: OnDeadline::Block,
            settle_seconds: 0,
            max_draining: max,
        }
    }

    #[test]
    fn budget_counts_pods_only_for_percentages() {
        let count = binding(IntOrString::Int(2)).max_draining(|| panic!("a count needs no pod scan"));
        assert_eq!(count, 2);
        assert_eq!(binding(IntOrString::Int(0)).max_draining(|| 0), 1, "at least one");
        assert_eq!(binding(IntOrString::String("25%".into())).max_draining(|| 10), 2);
        assert_eq!(
            binding(IntOrString::String("25%".into())).max_draining(|| 2),
            1,
            "at least one"
        );
    }

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
}
