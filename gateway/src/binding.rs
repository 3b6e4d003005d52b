//! `TrafficBinding` (`sluice.dev/v1alpha1`): the opt-in. A label selector picks pods, a port,
//! the targets (adapter instance + kind-specific parameters), a drain policy and a
//! disruption budget. The CRD is generated from these types (`sluice crd`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which pods, on which port, are registered in which traffic components.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "TrafficBinding",
    namespaced,
    status = "TrafficBindingStatus",
    shortname = "tb",
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.matchedPods"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficBindingSpec {
    /// Pods in this namespace that carry these labels.
    pub selector: LabelSelector,
    /// The container port the traffic components send to.
    pub port: i32,
    /// Where the pods' `ip:port` is registered.
    pub targets: Vec<BindingTarget>,
    #[serde(default)]
    pub drain_policy: DrainPolicy,
    #[serde(default)]
    pub disruption_budget: DisruptionBudget,
}

/// One traffic component instance and what to select in it.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BindingTarget {
    /// The adapter instance name from the gateway configuration.
    pub adapter: String,
    /// Kind-specific selection, e.g. `backend: web` for a load balancer.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DrainPolicy {
    /// How long a drain may take before `onDeadline` applies (gateway default when unset;
    /// 1 to 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<i64>,
    /// `Block` (default): keep the finalizer and keep waiting — the release stops.
    /// `Release`: remove the finalizer without verified drain, loudly.
    #[serde(default)]
    pub on_deadline: OnDeadline,
    /// Extra time a target must stay drained before its ledger entry (and, with the last
    /// of its kind, the finalizer) goes (0 to 3600).
    #[serde(default)]
    pub settle_seconds: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq, Default)]
pub enum OnDeadline {
    #[default]
    Block,
    Release,
}

/// How many of the binding's pods may be out of traffic at once, counted across clusters.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudget {
    /// Pods out of traffic at once: a pod takes a slot when its drain starts and gives it
    /// back once it serves again (or is gone). A number (at least `1`) or a percentage of
    /// the matched pods (`"25%"`, `1%`–`100%`, at least one pod). Default `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// The former name of `maxUnavailable`, still accepted (setting both to different
    /// values is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_draining: Option<IntOrString>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficBindingStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub matched_pods: i64,
    /// Pods that match but lack the `sluice.dev/traffic-ready` readiness gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods_missing_gate: Vec<String>,
}

/// The CRDs as YAML (`sluice crd`): TrafficBinding, then EndpointDrain.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    format!(
        "{}---\n{}",
        serde_yaml::to_string(&TrafficBinding::crd()).expect("CRD serializes"),
        serde_yaml::to_string(&crate::endpoint::EndpointDrain::crd()).expect("CRD serializes")
    )
}
