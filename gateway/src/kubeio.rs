//! Writes to pods: finalizers, the readiness-gate condition, the status annotation and
//! Events. Every finalizer and condition write is a JSON patch guarded by `test` ops on
//! exactly what it changes, so another controller's finalizers and conditions are never
//! clobbered; a failed guard (422) or conflict (409) is retried on a fresh read.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use serde_json::{json, Value};

use crate::model::{finalizer, GATE, STATUS_ANNOTATION};

/// Attempts of a guarded write before giving up (each on a fresh read).
const GUARDED_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct PodWriter {
    client: Client,
    recorder: Recorder,
}

impl std::fmt::Debug for PodWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodWriter")
    }
}

fn retryable(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 422)
}

impl PodWriter {
    pub fn new(client: Client, instance: &str) -> PodWriter {
        let reporter = Reporter {
            controller: "sluice.dev/gateway".into(),
            instance: Some(instance.to_string()),
        };
        PodWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    fn api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Adds `sluice.dev/<kind>`; no-op when present. Refused by the API server for a pod
    /// being deleted (the engine never asks for that).
    pub async fn add_finalizer(&self, ns: &str, name: &str, uid: &str, kind: &str) -> kube::Result<()> {
        let f = finalizer(kind);
        self.guarded(
            ns,
            name,
            uid,
            |pod| {
                let current = pod.metadata.finalizers.clone().unwrap_or_default();
                if current.contains(&f) {
                    return None;
                }
                Some(match pod.metadata.finalizers {
                    Some(_) => json!([
                        {"op": "test", "path": "/metadata/finalizers", "value": current},
                        {"op": "add", "path": "/metadata/finalizers/-", "value": f},
                    ]),
                    None => json!([
                        {"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version},
                        {"op": "add", "path": "/metadata/finalizers", "value": [f]},
                    ]),
                })
            },
            false,
        )
        .await
    }

    /// Removes `sluice.dev/<kind>` — only that entry, checked by index and value.
    pub async fn remove_finalizer(&self, ns: &str, name: &str, uid: &str, kind: &str) -> kube::Result<()> {
        let f = finalizer(kind);
        self.guarded(
            ns,
            name,
            uid,
            |pod| {
                let current = pod.metadata.finalizers.clone().unwrap_or_default();
                let i = current.iter().position(|x| *x == f)?;
                Some(json!([
                    {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": f},
                    {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
                ]))
            },
            false,
        )
        .await
    }

    /// Sets the `sluice.dev/traffic-ready` condition through `/status`.
    pub async fn set_gate(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        ready: bool,
        reason: &str,
        message: &str,
    ) -> kube::Result<()> {
        let status = if ready { "True" } else { "False" };
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        self.guarded(
            ns,
            name,
            uid,
            |pod| {
                let conds = pod.status.as_ref().and_then(|s| s.conditions.clone());
                let cond = json!({"type": GATE, "status": status, "reason": reason, "message": message,
                              "lastProbeTime": null, "lastTransitionTime": now});
                match &conds {
                    Some(cs) => match cs.iter().position(|c| c.type_ == GATE) {
                        Some(i) if cs[i].status == status => None,
                        Some(i) => Some(json!([
                            {"op": "test", "path": format!("/status/conditions/{i}/type"), "value": GATE},
                            {"op": "replace", "path": format!("/status/conditions/{i}"), "value": cond},
                        ])),
                        // Appending: guard on the whole object's version (a typed round trip of the
                        // other conditions is not byte-exact, e.g. `lastProbeTime: null`).
                        None => Some(json!([
                            {"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version},
                            {"op": "add", "path": "/status/conditions/-", "value": cond},
                        ])),
                    },
                    None => Some(json!([
                        {"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version},
                        {"op": "add", "path": "/status/conditions", "value": [cond]},
                    ])),
                }
            },
            true,
        )
        .await
    }

    /// Writes the status summary annotation (only Sluice's own key).
    pub async fn set_status_annotation(&self, ns: &str, name: &str, uid: &str, value: &str) -> kube::Result<()> {
        self.set_annotation(ns, name, uid, STATUS_ANNOTATION, value).await
    }

    /// Marks the pod as asked to drain by a blocking preStop call, for the containers that
    /// have restarted `restarts` times (see [`crate::model::PRESTOP_ANNOTATION`]).
    pub async fn mark_prestop(&self, ns: &str, name: &str, uid: &str, restarts: i64) -> kube::Result<()> {
        let mark = crate::model::prestop_mark(restarts);
        self.set_annotation(ns, name, uid, crate::model::PRESTOP_ANNOTATION, &mark)
            .await
    }

    /// Sets one annotation of this pod (this UID), touching no other.
    async fn set_annotation(&self, ns: &str, name: &str, uid: &str, key: &str, value: &str) -> kube::Result<()> {
        let path = format!("/metadata/annotations/{}", key.replace('~', "~0").replace('/', "~1"));
        self.guarded(
            ns,
            name,
            uid,
            |pod| {
                if pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(key))
                    .map(String::as_str)
                    == Some(value)
                {
                    return None;
                }
                Some(match pod.metadata.annotations {
                    Some(_) => json!([{"op": "add", "path": path, "value": value}]),
                    None => json!([
                        {"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version},
                        {"op": "add", "path": "/metadata/annotations", "value": {key: value}},
                    ]),
                })
            },
            false,
        )
        .await
    }

    /// Publishes an Event about a pod (or any object).
    pub async fn event(&self, reference: &ObjectReference, warning: bool, reason: &str, action: &str, note: String) {
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            tracing::warn!(error = %e, reason, "Could not publish an event.");
        }
    }

    /// Reads the pod, builds a JSON patch from what it holds, and applies it guarded by the
    /// patch's own `test` ops plus one on the pod's UID: a write meant for one pod never
    /// lands on a successor that took its name. A failed test (someone wrote in between)
    /// is read and tried again.
    async fn guarded(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        build: impl Fn(&Pod) -> Option<Value>,
        status: bool,
    ) -> kube::Result<()> {
        let api = self.api(ns);
        let mut last = None;
        for _ in 0..GUARDED_ATTEMPTS {
            let pod = api.get(name).await?;
            if pod.metadata.uid.as_deref() != Some(uid) {
                return Err(replaced(ns, name, uid, pod.metadata.uid.as_deref()));
            }
            let Some(mut ops) = build(&pod) else { return Ok(()) };
            if let Some(list) = ops.as_array_mut() {
                list.insert(0, json!({"op": "test", "path": "/metadata/uid", "value": uid}));
            }
            let patch: json_patch::Patch = serde_json::from_value(ops).expect("patch literal is a JSON patch");
            let p = Patch::Json::<()>(patch);
            let res = if status {
                api.patch_status(name, &PatchParams::default(), &p).await
            } else {
                api.patch(name, &PatchParams::default(), &p).await
            };
            match res {
                Ok(_) => return Ok(()),
                Err(e) if retryable(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

/// The pod by this name is not the one (UID) the write was for.
fn replaced(ns: &str, name: &str, uid: &str, now: Option<&str>) -> kube::Error {
    let message = format!(
        "pod {ns}/{name} is no longer the pod with UID {uid} (now {}): nothing written",
        now.unwrap_or("none")
    );
    kube::Error::Api(Box::new(
        kube::core::Status::failure(&message, "NotFound").with_code(404),
    ))
}

/// An `ObjectReference` to a pod, for Events.
pub fn pod_reference(ns: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}
