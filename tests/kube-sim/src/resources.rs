//! The resource types the simulator serves and the discovery documents built from them.
//!
//! Built-ins are fixed (`core/v1` pods, namespaces, events; `events.k8s.io/v1` events;
//! `coordination.k8s.io/v1` leases; `apiextensions.k8s.io/v1` CRDs). Every served version of
//! a registered CRD adds one more [`ResourceDef`] backed by generic JSON storage.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

/// How the store treats a resource beyond generic JSON storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Pod,
    Namespace,
    /// `core/v1` Event: the storage format of both event APIs.
    CoreEvent,
    /// `events.k8s.io/v1` Event: a converted view of the `core/v1` storage.
    EventsV1,
    Lease,
    /// `admissionregistration.k8s.io/v1` ValidatingWebhookConfiguration (see `admission`).
    Webhook,
    /// `policy/v1` PodDisruptionBudget: stored as sent (no disruption controller: tests
    /// write its status), read by evictions.
    Pdb,
    Crd,
    /// A custom resource served because a CRD declares it.
    Custom,
}

/// One served `group/version/resource`.
#[derive(Debug)]
pub struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub short_names: Vec<String>,
    pub flavor: Flavor,
    /// Field-selector labels the resource accepts besides `metadata.name` / `metadata.namespace`.
    pub extra_fields: Vec<String>,
    /// The CRD's `openAPIV3Schema` for this version (pruning, defaulting, type checks).
    pub schema: Option<Value>,
    /// `{"apiVersion":"…","kind":"…",` — prepended to stored bytes (which hold no type meta).
    pub type_prefix: Bytes,
}

/// Where objects live: one table per `(group, plural)`, shared by every version.
/// `events.k8s.io` events share the `core/v1` table.
pub type StorageKey = (String, String);

impl ResourceDef {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        group: &str,
        version: &str,
        plural: &str,
        singular: &str,
        kind: &str,
        namespaced: bool,
        status_subresource: bool,
        short_names: &[&str],
        flavor: Flavor,
        extra_fields: &[&str],
        schema: Option<Value>,
    ) -> Arc<Self> {
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let type_prefix = Bytes::from(format!(r#"{{"kind":"{kind}","apiVersion":"{api_version}","#));
        Arc::new(ResourceDef {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: singular.into(),
            kind: kind.into(),
            namespaced,
            status_subresource,
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            flavor,
            extra_fields: extra_fields.iter().map(|s| s.to_string()).collect(),
            schema,
            type_prefix,
        })
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn storage_key(&self) -> StorageKey {
        match self.flavor {
            Flavor::EventsV1 => (String::new(), "events".into()),
            _ => (self.group.clone(), self.plural.clone()),
        }
    }

    /// Every label a field selector may name for this resource.
    pub fn selectable_fields(&self) -> Vec<&str> {
        let mut v = vec!["metadata.name"];
        if self.namespaced {
            v.push("metadata.namespace");
        }
        v.extend(self.extra_fields.iter().map(String::as_str));
        v
    }

    /// Whether items in a list of this resource carry `kind`/`apiVersion` (custom resources
    /// do, built-ins do not — as the real server encodes them).
    pub fn list_items_typed(&self) -> bool {
        self.flavor == Flavor::Custom
    }

    fn verbs(&self) -> Vec<&'static str> {
        let mut v = vec!["create", "delete", "get", "list", "patch", "update", "watch"];
        if self.flavor != Flavor::Namespace {
            v.insert(1, "deletecollection");
        }
        v
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
        })];
        if !self.short_names.is_empty() {
            out[0]["shortNames"] = json!(self.short_names);
        }
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

/// The resource types every simulated cluster serves from the start.
pub fn builtins() -> Vec<Arc<ResourceDef>> {
    let event_fields = [
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ];
    vec![
        ResourceDef::new(
            "",
            "v1",
            "pods",
            "pod",
            "Pod",
            true,
            true,
            &["po"],
            Flavor::Pod,
            &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            None,
        ),
        ResourceDef::new(
            "",
            "v1",
            "namespaces",
            "namespace",
            "Namespace",
            false,
            true,
            &["ns"],
            Flavor::Namespace,
            &["status.phase"],
            None,
        ),
        ResourceDef::new(
            "",
            "v1",
            "events",
            "event",
            "Event",
            true,
            false,
            &["ev"],
            Flavor::CoreEvent,
            &event_fields,
            None,
        ),
        ResourceDef::new(
            "events.k8s.io",
            "v1",
            "events",
            "event",
            "Event",
            true,
            false,
            &["ev"],
            Flavor::EventsV1,
            &[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "regarding.apiVersion",
                "regarding.resourceVersion",
                "regarding.fieldPath",
                "reason",
                "reportingController",
                "type",
            ],
            None,
        ),
        ResourceDef::new(
            "coordination.k8s.io",
            "v1",
            "leases",
            "lease",
            "Lease",
            true,
            false,
            &[],
            Flavor::Lease,
            &[],
            None,
        ),
        ResourceDef::new(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            true,
            &["crd", "crds"],
            Flavor::Crd,
            &[],
            None,
        ),
        crate::admission::def(),
        ResourceDef::new(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            true,
            true,
            &["pdb"],
            Flavor::Pdb,
            &[],
            None,
        ),
    ]
}

/// `GET /version`.
pub fn version_doc() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "gitVersion": "v1.33.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`.
pub fn resource_list(defs: &[Arc<ResourceDef>], group: &str, version: &str) -> Option<Value> {
    let matching: Vec<&Arc<ResourceDef>> = defs
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if matching.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = matching.iter().flat_map(|d| d.discovery_entries()).collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn group_doc(defs: &[Arc<ResourceDef>], group: &str) -> Option<Value> {
    let mut versions: Vec<&str> = Vec::new();
    for d in defs.iter().filter(|d| d.group == group) {
        if !versions.contains(&d.version.as_str()) {
            versions.push(&d.version);
        }
    }
    let first = *versions.first()?;
    let gv = |v: &str| json!({ "groupVersion": format!("{group}/{v}"), "version": v });
    Some(json!({
        "name": group,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(first),
    }))
}

/// `GET /apis`.
pub fn group_list(defs: &[Arc<ResourceDef>]) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for d in defs.iter().filter(|d| !d.group.is_empty()) {
        if !groups.contains(&d.group.as_str()) {
            groups.push(&d.group);
        }
    }
    let groups: Vec<Value> = groups.iter().filter_map(|g| group_doc(defs, g)).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `GET /apis/{group}`.
pub fn api_group(defs: &[Arc<ResourceDef>], group: &str) -> Option<Value> {
    let mut doc = group_doc(defs, group)?;
    let obj = doc.as_object_mut()?;
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), json!("APIGroup"));
    out.insert("apiVersion".into(), json!("v1"));
    out.append(obj);
    Some(Value::Object(out))
}
