//! Writes to pods: the ledger and finalizers (one metadata edit), the readiness-gate
//! condition, the status annotation and Events.
//!
//! Every write is a JSON patch built from a fresh read and guarded by `test` ops on
//! exactly what it changes plus the pod's UID, so another controller's finalizers and
//! conditions are never clobbered and a write meant for one pod never lands on a
//! successor that took its name. A failed guard (422) or conflict (409) is read and tried
//! again. Each write answers the pod as written (`None`: nothing needed writing), so the
//! engine's view moves on without waiting for the watch — and an Event is sent only for
//! a write that really happened.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::authority::Authority;
use crate::model::ledger::{self, LedgerEntry, LedgerError, TargetId};
use crate::model::{GATE, LEDGER_ANNOTATION, PRESTOP_ANNOTATION, STATUS_ANNOTATION};

/// Attempts of a guarded write before giving up (each on a fresh read).
const GUARDED_ATTEMPTS: usize = 5;

/// A pod write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The ledger on the pod cannot be read: it is never overwritten.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// This replica may not write now (a standby, past its renew deadline, shadow mode).
    #[error("not written: this gateway is {0}")]
    NotLeader(String),
    /// The caller's precondition (an etag) does not hold: nothing written.
    #[error("{0}")]
    Precondition(String),
}

/// The pod must be at `etag` (its resourceVersion), when one is given.
fn check_etag(pod: &Pod, etag: Option<&str>) -> Result<(), WriteError> {
    match etag {
        Some(e) if pod.metadata.resource_version.as_deref() != Some(e) => Err(WriteError::Precondition(format!(
            "etag {e:?} is stale: the pod is at {:?} now; read it again",
            pod.metadata.resource_version.as_deref().unwrap_or("")
        ))),
        _ => Ok(()),
    }
}

impl WriteError {
    /// The API server answered 404: the pod is gone.
    pub fn is_not_found(&self) -> bool {
        matches!(self, WriteError::Kube(kube::Error::Api(s)) if s.code == 404)
    }

    /// Retrying soon can help (a conflict, throttling, the server briefly failing).
    pub fn is_retryable(&self) -> bool {
        match self {
            WriteError::Kube(kube::Error::Api(s)) => matches!(s.code, 409 | 422 | 429 | 500..=599),
            WriteError::Kube(_) => true,
            WriteError::Ledger(_) | WriteError::Precondition(_) => false,
            WriteError::NotLeader(_) => true,
        }
    }
}

/// One edit of a pod's metadata: ledger entries recorded and forgotten, finalizers added
/// and removed, written as one patch (so the last entry and the guard go together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaEdit {
    pub record: Vec<LedgerEntry>,
    pub forget: Vec<TargetId>,
    pub add_finalizers: BTreeSet<String>,
    pub remove_finalizers: BTreeSet<String>,
}

impl MetaEdit {
    pub fn is_empty(&self) -> bool {
        *self == MetaEdit::default()
    }

    /// In words, for the write's span: `record 1 ledger entry; remove finalizer sluice.dev/slb`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let entries = |n: usize| {
            if n == 1 {
                "1 ledger entry".to_string()
            } else {
                format!("{n} ledger entries")
            }
        };
        if !self.record.is_empty() {
            parts.push(format!("record {}", entries(self.record.len())));
        }
        if !self.forget.is_empty() {
            parts.push(format!("forget {}", entries(self.forget.len())));
        }
        for f in &self.add_finalizers {
            parts.push(format!("add finalizer {f}"));
        }
        for f in &self.remove_finalizers {
            parts.push(format!("remove finalizer {f}"));
        }
        parts.join("; ")
    }
}

/// What a guarded write found: the pod as it answered the patch, or — when it already
/// held what was asked — as it was read. Either is at least as new as any watch event
/// the engine has, so the engine takes it into its view (a lagging watch must not make
/// it ask again for what is done).
#[derive(Debug, Clone)]
pub enum Written {
    Changed(Pod),
    Unchanged(Pod),
}

impl Written {
    pub fn pod(&self) -> &Pod {
        match self {
            Written::Changed(p) | Written::Unchanged(p) => p,
        }
    }

    pub fn changed(&self) -> bool {
        matches!(self, Written::Changed(_))
    }
}

#[derive(Clone)]
pub struct PodWriter {
    client: Client,
    recorder: Recorder,
    authority: Arc<Authority>,
    /// `fieldManager` of every write: which replica wrote (the instance name).
    params: PatchParams,
}

impl std::fmt::Debug for PodWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodWriter")
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl PodWriter {
    pub fn new(client: Client, instance: &str, authority: Arc<Authority>) -> PodWriter {
        let reporter = Reporter {
            controller: "sluice.dev/gateway".into(),
            instance: Some(instance.to_string()),
        };
        PodWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            authority,
            params: PatchParams {
                field_manager: Some(instance.to_string()),
                ..Default::default()
            },
        }
    }

    fn api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Applies a [`MetaEdit`]: the ledger annotation (read from the pod as it is now, so an
    /// entry recorded meanwhile is kept) and the finalizers, in one guarded patch. Adding a
    /// finalizer to a pod being deleted is refused by the API server (the engine never
    /// asks for that).
    pub async fn edit(&self, ns: &str, name: &str, uid: &str, edit: &MetaEdit) -> Result<Written, WriteError> {
        self.guarded(
            &edit.describe(),
            ns,
            name,
            uid,
            |pod| {
                let mut ops = Vec::new();
                let annotations = pod.metadata.annotations.as_ref();
                let raw = annotations.and_then(|a| a.get(LEDGER_ANNOTATION));
                let current = ledger::parse(raw.map(String::as_str))?;
                let next = ledger::apply(&current, &edit.record, &edit.forget);
                if next != current || (raw.is_none() && !edit.record.is_empty()) {
                    let value = ledger::render(&next);
                    let path = format!("/metadata/annotations/{}", escape(LEDGER_ANNOTATION));
                    match (annotations, raw) {
                        (Some(_), Some(old)) => {
                            ops.push(json!({"op": "test", "path": path, "value": old}));
                            ops.push(json!({"op": "replace", "path": path, "value": value}));
                        }
                        (Some(_), None) => {
                            ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version}));
                            ops.push(json!({"op": "add", "path": path, "value": value}));
                        }
                        (None, _) => {
                            ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version}));
                            ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {LEDGER_ANNOTATION: value}}));
                        }
                    }
                }
                let current_f = pod.metadata.finalizers.clone().unwrap_or_default();
                let mut next_f: Vec<String> = current_f
                    .iter()
                    .filter(|f| !edit.remove_finalizers.contains(*f))
                    .cloned()
                    .collect();
                for f in &edit.add_finalizers {
                    if !next_f.contains(f) {
                        next_f.push(f.clone());
                    }
                }
                if next_f != current_f {
                    match pod.metadata.finalizers {
                        Some(_) => {
                            ops.push(json!({"op": "test", "path": "/metadata/finalizers", "value": current_f}));
                            ops.push(json!({"op": "replace", "path": "/metadata/finalizers", "value": next_f}));
                        }
                        None => {
                            ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version}));
                            ops.push(json!({"op": "add", "path": "/metadata/finalizers", "value": next_f}));
                        }
                    }
                }
                Ok((!ops.is_empty()).then(|| Value::Array(ops)))
            },
            false,
            false,
        )
        .await
    }

    /// Adds `sluice.dev/<kind>`; no-op when present.
    pub async fn add_finalizer(&self, ns: &str, name: &str, uid: &str, kind: &str) -> Result<Written, WriteError> {
        let edit = MetaEdit {
            add_finalizers: [crate::model::finalizer(kind)].into(),
            ..Default::default()
        };
        self.edit(ns, name, uid, &edit).await
    }

    /// Removes `sluice.dev/<kind>` — only that entry.
    pub async fn remove_finalizer(&self, ns: &str, name: &str, uid: &str, kind: &str) -> Result<Written, WriteError> {
        let edit = MetaEdit {
            remove_finalizers: [crate::model::finalizer(kind)].into(),
            ..Default::default()
        };
        self.edit(ns, name, uid, &edit).await
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
    ) -> Result<Written, WriteError> {
        let status = if ready { "True" } else { "False" };
        let now = crate::model::status::now_text();
        self.guarded(
            &format!("condition {GATE}={status}"),
            ns,
            name,
            uid,
            |pod| {
                let conds = pod.status.as_ref().and_then(|s| s.conditions.clone());
                let cond = json!({"type": GATE, "status": status, "reason": reason, "message": message,
                              "lastProbeTime": null, "lastTransitionTime": now});
                Ok(match &conds {
                    Some(cs) => match cs.iter().position(|c| c.type_ == GATE) {
                        Some(i) if cs[i].status == status => None,
                        Some(i) => Some(json!([
                            {"op": "test", "path": format!("/status/conditions/{i}/type"), "value": GATE},
                            {"op": "test", "path": format!("/status/conditions/{i}/status"), "value": cs[i].status},
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
                })
            },
            true,
            false,
        )
        .await
    }

    /// Writes the status summary annotation (only Sluice's own key).
    pub async fn set_status_annotation(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        value: &str,
    ) -> Result<Written, WriteError> {
        self.set_annotation(ns, name, uid, STATUS_ANNOTATION, value).await
    }

    /// Marks the pod as asked to drain by a blocking preStop call, for the containers that
    /// have restarted `restarts` times (see [`crate::model::PRESTOP_ANNOTATION`]).
    pub async fn mark_prestop(&self, ns: &str, name: &str, uid: &str, restarts: i64) -> Result<Written, WriteError> {
        let mark = crate::model::prestop_mark(restarts);
        self.set_annotation_as(ns, name, uid, PRESTOP_ANNOTATION, &mark, true)
            .await
    }

    /// The client this writer uses (for the few reads the admission webhook makes).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Records a drain request (`sluice.dev/drain-request`) from the admission webhook: a
    /// request, like the preStop mark (a standby writes it; the leader acts on it).
    pub async fn request_drain(&self, ns: &str, name: &str, uid: &str, value: &str) -> Result<Written, WriteError> {
        self.set_annotation_as(ns, name, uid, crate::model::DRAIN_REQUEST_ANNOTATION, value, true)
            .await
    }

    /// Records a drain asked through the API: `sluice.dev/desired: drained` and who asked
    /// (`sluice.dev/desired-by`), plus the caller's trace (`sluice.dev/traceparent`) when
    /// given, in one patch. A request (a standby writes it too). `etag`: the pod must still
    /// be at that resourceVersion ([`WriteError::Precondition`] otherwise). A drain already
    /// asked for keeps its first requester.
    pub async fn request_desired(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        etag: Option<&str>,
        desired_by: &str,
        traceparent: Option<&str>,
    ) -> Result<Written, WriteError> {
        use crate::model::{DESIRED_ANNOTATION, DESIRED_BY_ANNOTATION};
        self.guarded(
            "annotation sluice.dev/desired=drained",
            ns,
            name,
            uid,
            |pod| {
                check_etag(pod, etag)?;
                let annotations = pod.metadata.annotations.as_ref();
                let has = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
                if has(DESIRED_ANNOTATION) == Some("drained") {
                    return Ok(None);
                }
                let mut set = vec![
                    (DESIRED_ANNOTATION, "drained".to_string()),
                    (DESIRED_BY_ANNOTATION, desired_by.to_string()),
                ];
                if let Some(tp) = traceparent {
                    set.push((crate::telemetry::TRACEPARENT_ANNOTATION, tp.to_string()));
                }
                Ok(Some(match annotations {
                    Some(_) => {
                        let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version})];
                        for (k, v) in set {
                            ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(k)), "value": v}));
                        }
                        Value::Array(ops)
                    }
                    None => {
                        let map: serde_json::Map<String, Value> =
                            set.into_iter().map(|(k, v)| (k.to_string(), Value::String(v))).collect();
                        json!([
                            {"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version},
                            {"op": "add", "path": "/metadata/annotations", "value": map},
                        ])
                    }
                }))
            },
            false,
            true,
        )
        .await
    }

    /// Withdraws a drain asked through the API or `sluice.dev/desired`: removes that
    /// annotation and `sluice.dev/desired-by`. A request, like [`PodWriter::request_desired`].
    pub async fn withdraw_desired(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        etag: Option<&str>,
        traceparent: Option<&str>,
    ) -> Result<Written, WriteError> {
        use crate::model::{DESIRED_ANNOTATION, DESIRED_BY_ANNOTATION};
        self.guarded(
            "annotation sluice.dev/desired removed",
            ns,
            name,
            uid,
            |pod| {
                check_etag(pod, etag)?;
                let Some(annotations) = pod.metadata.annotations.as_ref() else {
                    return Ok(None);
                };
                let mut ops = Vec::new();
                for k in [DESIRED_ANNOTATION, DESIRED_BY_ANNOTATION] {
                    if let Some(v) = annotations.get(k) {
                        let path = format!("/metadata/annotations/{}", escape(k));
                        ops.push(json!({"op": "test", "path": path, "value": v}));
                        ops.push(json!({"op": "remove", "path": path}));
                    }
                }
                // The restore joins the caller's trace (only with something to withdraw).
                if let (Some(tp), false) = (traceparent, ops.is_empty()) {
                    let path = format!(
                        "/metadata/annotations/{}",
                        escape(crate::telemetry::TRACEPARENT_ANNOTATION)
                    );
                    ops.push(json!({"op": "add", "path": path, "value": tp}));
                }
                Ok((!ops.is_empty()).then(|| Value::Array(ops)))
            },
            false,
            true,
        )
        .await
    }

    /// Sets one annotation of this pod (this UID), touching no other.
    async fn set_annotation(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        key: &str,
        value: &str,
    ) -> Result<Written, WriteError> {
        self.set_annotation_as(ns, name, uid, key, value, false).await
    }

    /// `request`: the write records what a caller asks for (the preStop mark), like a
    /// rollout controller's annotation, not an action of the gateway's: a standby writes it
    /// too (the leader acts on it); a shadow never does.
    async fn set_annotation_as(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        key: &str,
        value: &str,
        request: bool,
    ) -> Result<Written, WriteError> {
        let path = format!("/metadata/annotations/{}", escape(key));
        self.guarded(
            &format!("annotation {key}"),
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
                    return Ok(None);
                }
                Ok(Some(match pod.metadata.annotations {
                    Some(_) => json!([{"op": "add", "path": path, "value": value}]),
                    None => json!([
                        {"op": "test", "path": "/metadata/resourceVersion", "value": pod.metadata.resource_version},
                        {"op": "add", "path": "/metadata/annotations", "value": {key: value}},
                    ]),
                }))
            },
            false,
            request,
        )
        .await
    }

    /// Publishes an Event about a pod (or any object).
    pub async fn event(&self, reference: &ObjectReference, warning: bool, reason: &str, action: &str, note: String) {
        if !self.authority.may_write() {
            tracing::info!(reason, %note, authority = %self.authority.describe(), "Event not published.");
            return;
        }
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

    /// [`PodWriter::guarded_write`] in a span of its own (`patch`, with `sluice.patch` =
    /// `what` and its outcome).
    #[allow(clippy::too_many_arguments)]
    async fn guarded(
        &self,
        what: &str,
        ns: &str,
        name: &str,
        uid: &str,
        build: impl Fn(&Pod) -> Result<Option<Value>, WriteError>,
        status: bool,
        request: bool,
    ) -> Result<Written, WriteError> {
        let span = tracing::info_span!("patch", "sluice.patch" = what, "sluice.outcome" = tracing::field::Empty);
        let result = self
            .guarded_write(ns, name, uid, build, status, request)
            .instrument(span.clone())
            .await;
        span.record(
            "sluice.outcome",
            match &result {
                Ok(Written::Changed(_)) => "written".to_string(),
                Ok(Written::Unchanged(_)) => "unchanged".to_string(),
                Err(e) => e.to_string(),
            },
        );
        result
    }

    /// Reads the pod, builds a JSON patch from what it holds, and applies it guarded by the
    /// patch's own `test` ops plus one on the pod's UID. A failed test (someone wrote in
    /// between) is read and tried again.
    async fn guarded_write(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        build: impl Fn(&Pod) -> Result<Option<Value>, WriteError>,
        status: bool,
        request: bool,
    ) -> Result<Written, WriteError> {
        let api = self.api(ns);
        let mut last = None;
        for _ in 0..GUARDED_ATTEMPTS {
            let pod = api.get(name).await?;
            if pod.metadata.uid.as_deref() != Some(uid) {
                return Err(replaced(ns, name, uid, pod.metadata.uid.as_deref()).into());
            }
            let Some(mut ops) = build(&pod)? else {
                return Ok(Written::Unchanged(pod));
            };
            // Asked last, right before the write: a leader past its renew deadline stops here.
            let allowed = if request {
                self.authority.role() != crate::authority::Role::Shadow
            } else {
                self.authority.may_write()
            };
            if !allowed {
                return Err(WriteError::NotLeader(self.authority.describe()));
            }
            if let Some(list) = ops.as_array_mut() {
                list.insert(0, json!({"op": "test", "path": "/metadata/uid", "value": uid}));
            }
            let patch: json_patch::Patch = serde_json::from_value(ops).expect("patch literal is a JSON patch");
            let p = Patch::Json::<()>(patch);
            let write = async {
                if status {
                    api.patch_status(name, &self.params, &p).await
                } else {
                    api.patch(name, &self.params, &p).await
                }
            };
            // A leader's write never outlives its renew deadline (a request's does not
            // need to: a standby records it too).
            let res = match self.authority.remaining().filter(|_| !request) {
                Some(left) => match tokio::time::timeout(left, write).await {
                    Ok(r) => r,
                    Err(_) => return Err(WriteError::NotLeader(self.authority.describe())),
                },
                None => write.await,
            };
            match res {
                Ok(written) => return Ok(Written::Changed(written)),
                Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409 || s.code == 422) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.expect("at least one attempt").into())
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
