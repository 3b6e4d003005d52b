//! The write semantics of kube-apiserver's generic registry: create, update (main resource
//! and `/status`), patch and delete, with optimistic concurrency, finalizers, graceful
//! deletion and the per-resource strategies (pods, namespaces, CRDs, custom resources).
//!
//! Every function runs under the cluster lock and either commits exactly the events a real
//! server would emit or returns the `Status` error it would answer with.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::crd;
use crate::events;
use crate::object::{
    dns1123_label_errors, dns1123_subdomain_errors, finalizers, meta_mut, meta_str, now_rfc3339, rfc3339_in,
    storage_key, Obj,
};
use crate::patch::{self, PatchType};
use crate::pods;
use crate::resources::{Flavor, ResourceDef};
use crate::status::{ApiError, ApiResult, FieldError};
use crate::store::{EventType, Store};
use crate::zero;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
    /// `pods/eviction` (POST only).
    Eviction,
}

/// The parts of `DeleteOptions` the simulator honours.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| NAME_CHARS[rng.random_range(0..NAME_CHARS.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// The label kube-apiserver keeps on every namespace (defaulting and `Canonicalize`).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The group and kind that `Invalid` and `BeforeDelete` errors name: the kind of the stored
/// object (`Event` of the core group for both event APIs).
fn group_kind(def: &ResourceDef) -> (&str, &str) {
    if def.flavor == Flavor::EventsV1 {
        ("", "Event")
    } else {
        (&def.group, &def.kind)
    }
}

/// `AllowUnconditionalUpdate`: whether a PUT without `metadata.resourceVersion` overwrites
/// (pods, namespaces, events, leases) or is refused (custom resources, CRDs).
fn allows_unconditional_update(def: &ResourceDef) -> bool {
    !matches!(def.flavor, Flavor::Custom | Flavor::Crd)
}

fn set_namespace_label(v: &mut Value, name: &str) {
    let meta = meta_mut(v);
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[NAMESPACE_NAME_LABEL] = json!(name);
}

/// Converts an incoming body to the storage format of `def`'s table.
fn to_storage(def: &ResourceDef, v: Value) -> Value {
    if def.flavor == Flavor::EventsV1 {
        events::v1_to_core(v)
    } else {
        v
    }
}

/// The stored object as `def` presents it.
pub fn present(def: &ResourceDef, storage_def: &ResourceDef, obj: &Obj) -> Value {
    let v = obj.value(storage_def);
    if def.flavor == Flavor::EventsV1 {
        let mut out = events::core_to_v1(v);
        out["kind"] = json!("Event");
        out
    } else {
        let mut v = v;
        v["apiVersion"] = json!(def.api_version());
        v
    }
}

fn storage_def(store: &Store, def: &ResourceDef) -> Arc<ResourceDef> {
    store
        .storage_def(&def.storage_key())
        .expect("every served resource has a storage definition")
}

pub fn get(store: &Store, def: &ResourceDef, ns: &str, name: &str) -> ApiResult<Arc<Obj>> {
    store
        .get(&def.storage_key(), &storage_key(ns, name))
        .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
}

/// The `NamespaceLifecycle` admission plugin (mutating, so it runs before the store): a
/// missing namespace is `404`, a terminating one refuses new content with `403`, naming the
/// object as `admission.NewForbidden` does (`name` is the name, the generateName prefix or
/// "Unknown").
fn check_namespace_open(store: &Store, def: &ResourceDef, ns: &str, name: &str) -> ApiResult<()> {
    let key = (String::new(), "namespaces".to_string());
    let Some(nsobj) = store.get(&key, ns) else {
        return Err(ApiError::not_found("", "namespaces", ns));
    };
    let v: Value = serde_json::from_slice(&nsobj.json).unwrap_or_default();
    if v["status"]["phase"] == "Terminating" {
        let mut details = json!({"name": name, "kind": def.plural, "causes": [{
            "reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"),
            "field": "metadata.namespace"}]});
        if !def.group.is_empty() {
            details["group"] = json!(def.group);
        }
        return Err(ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            crate::status::qualified_resource(&def.group, &def.plural)
        ))
        .with_details(details));
    }
    Ok(())
}

/// The custom resource handler's check before any create: a terminating CRD refuses it.
pub fn check_crd_not_terminating(store: &Store, def: &ResourceDef) -> ApiResult<()> {
    let key = (
        "apiextensions.k8s.io".to_string(),
        "customresourcedefinitions".to_string(),
    );
    let Some(crd) = store.get(&key, &format!("{}.{}", def.plural, def.group)) else {
        return Ok(());
    };
    let v: Value = serde_json::from_slice(&crd.json).unwrap_or_default();
    let terminating = v["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Terminating" && c["status"] == "True"));
    if terminating {
        return Err(
            ApiError::method_not_allowed("create not allowed while custom resource definition is terminating")
                .with_details(json!({"group": def.group, "kind": def.plural})),
        );
    }
    Ok(())
}

/// `maskTrailingDash`: how a generateName prefix is validated as a name.
fn mask_trailing_dash(name: &str) -> String {
    match name.strip_suffix('-') {
        Some(_) if name.len() > 1 => format!("{}a", &name[..name.len() - 2]),
        _ => name.to_string(),
    }
}

/// The name part of `ValidateObjectMeta`: the generateName prefix, then the name.
fn name_errors(def: &ResourceDef, name: &str, generate_name: &str) -> Vec<FieldError> {
    let check = |s: &str| {
        if def.flavor == Flavor::Namespace {
            dns1123_label_errors(s)
        } else {
            dns1123_subdomain_errors(s)
        }
    };
    let mut errors: Vec<FieldError> = Vec::new();
    if !generate_name.is_empty() {
        for msg in check(&mask_trailing_dash(generate_name)) {
            errors.push((
                "metadata.generateName".into(),
                "Invalid value",
                format!("{generate_name:?}: {msg}"),
            ));
        }
    }
    if name.is_empty() {
        errors.push((
            "metadata.name".into(),
            "Required value",
            "name or generateName is required".into(),
        ));
    }
    for msg in check(name).into_iter().filter(|_| !name.is_empty()) {
        errors.push(("metadata.name".into(), "Invalid value", format!("{name:?}: {msg}")));
    }
    errors
}

/// The handler chain of a create: the request's checks, `NamespaceLifecycle` admission, then
/// `Store.Create` (name generation, `BeforeCreate`: PrepareForCreate and the strategy's
/// validation), and last the storage, which finds a name taken.
pub fn create(store: &mut Store, def: &ResourceDef, ns: &str, body: Value) -> ApiResult<Arc<Obj>> {
    let sdef = storage_def(store, def);
    let mut v = to_storage(def, body);
    if !v.is_object() {
        return Err(ApiError::bad_request("the body of the request is not a JSON object"));
    }
    let (group, kind) = group_kind(def);
    let meta = meta_mut(&mut v);
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if def.namespaced {
        let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.shift_remove("namespace");
    }
    let text = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (mut name, generate) = (text("name"), text("generateName"));
    if def.namespaced {
        let admitted = [name.as_str(), generate.as_str(), "Unknown"]
            .into_iter()
            .find(|n| !n.is_empty())
            .unwrap_or_default();
        check_namespace_open(store, def, ns, admitted)?;
    }
    let meta = meta_mut(&mut v);
    if name.is_empty() && !generate.is_empty() {
        name = generate_name(&generate);
        meta.insert("name".into(), json!(name));
    }
    for k in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "managedFields",
        "selfLink",
    ] {
        meta.shift_remove(k);
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    if matches!(def.flavor, Flavor::Pod | Flavor::Custom | Flavor::Crd) {
        meta.insert("generation".into(), json!(1));
    }
    let mut errors = name_errors(def, &name, &generate);
    match def.flavor {
        Flavor::Pod => {
            pods::prepare_for_create(&mut v);
            errors.extend(pods::validate_create(&v));
        }
        Flavor::Namespace => {
            // PrepareForCreate: the kubernetes finalizer is appended to the requested ones.
            let mut fins: Vec<Value> = v["spec"]["finalizers"].as_array().cloned().unwrap_or_default();
            if !fins.iter().any(|f| f == "kubernetes") {
                fins.push(json!("kubernetes"));
            }
            if !v["spec"].is_object() {
                v["spec"] = json!({});
            }
            v["spec"]["finalizers"] = json!(fins);
            v["status"] = json!({"phase": "Active"});
            set_namespace_label(&mut v, &name);
        }
        Flavor::Crd => {
            if errors.is_empty() {
                crd::prepare(&mut v, None)?;
            }
        }
        Flavor::Custom => {
            if def.status_subresource {
                if let Some(m) = v.as_object_mut() {
                    m.shift_remove("status");
                }
            }
            errors.extend(crd::schema_errors(def, &mut v));
        }
        Flavor::Webhook => errors.extend(crate::admission::prepare(&mut v)),
        Flavor::CoreEvent | Flavor::EventsV1 | Flavor::Lease | Flavor::Pdb => {}
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(group, kind, &name, &errors));
    }
    if let Some(existing) = store.get(&def.storage_key(), &storage_key(ns, &name)) {
        let mut e = ApiError::already_exists(&def.group, &def.plural, &name);
        let existing: Value = serde_json::from_slice(&existing.json).unwrap_or_default();
        if meta_str(&existing, "deletionTimestamp").is_some() {
            e.message = format!("object is being deleted: {}", e.message);
        }
        return Err(e);
    }
    zero::normalize(sdef.flavor, &mut v);
    let rv = store.next_rv();
    meta_mut(&mut v).insert("resourceVersion".into(), json!(rv.to_string()));
    let obj = Arc::new(Obj::from_value(&sdef, v.clone())?);
    store.commit(def.storage_key(), EventType::Added, obj.clone(), None);
    if def.flavor == Flavor::Crd {
        register_crd(store, &v);
    }
    Ok(obj)
}

fn register_crd(store: &mut Store, v: &Value) {
    let group = v["spec"]["group"].as_str().unwrap_or("");
    let plural = v["spec"]["names"]["plural"].as_str().unwrap_or("");
    store.set_custom_defs(group, plural, crd::defs_for(v));
}

fn unregister_crd(store: &mut Store, v: &Value) {
    let group = v["spec"]["group"].as_str().unwrap_or("");
    let plural = v["spec"]["names"]["plural"].as_str().unwrap_or("");
    store.set_custom_defs(group, plural, Vec::new());
}

/// `PUT`: replaces the object (or its status).
pub fn update(
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Sub,
    body: Value,
) -> ApiResult<Arc<Obj>> {
    let new_v = to_storage(def, body);
    if !new_v.is_object() {
        return Err(ApiError::bad_request("the body of the request is not a JSON object"));
    }
    let body_name = meta_str(&new_v, "name").unwrap_or("");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if def.namespaced {
        let body_ns = meta_str(&new_v, "namespace").unwrap_or("");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let Some(old) = store.get(&def.storage_key(), &storage_key(ns, name)) else {
        // Leases and events may be created by PUT (AllowCreateOnUpdate).
        if sub == Sub::Main && matches!(def.flavor, Flavor::Lease | Flavor::CoreEvent | Flavor::EventsV1) {
            let mut v = new_v;
            meta_mut(&mut v).shift_remove("resourceVersion");
            let v = if def.flavor == Flavor::EventsV1 {
                events::core_to_v1(v)
            } else {
                v
            };
            return create(store, def, ns, v);
        }
        return Err(ApiError::not_found(&def.group, &def.plural, name));
    };
    // A PUT's uid is a storage precondition (`DefaultUpdatedObjectInfo.Preconditions`), which
    // etcd's GuaranteedUpdate checks before anything else and answers as a Conflict.
    if let Some(uid) = meta_str(&new_v, "uid").filter(|u| !u.is_empty() && *u != old.uid) {
        return Err(ApiError::conflict(
            &def.group,
            &def.plural,
            name,
            &format!(
                "StorageError: invalid object, Code: 4, Key: {}, ResourceVersion: 0, AdditionalErrorMsg: \
                 Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                etcd_key(def, ns, name),
                old.uid
            ),
        ));
    }
    finish_update(store, def, &old, new_v, sub)
}

/// The etcd key kube-apiserver stores an object under (`--etcd-prefix=/registry`).
fn etcd_key(def: &ResourceDef, ns: &str, name: &str) -> String {
    let resource = match def.flavor {
        Flavor::Custom | Flavor::Crd => format!("{}/{}", def.group, def.plural),
        Flavor::EventsV1 => "events".to_string(),
        _ => def.plural.clone(),
    };
    format!("/registry/{resource}/{}", storage_key(ns, name))
}

/// `PATCH`: applies the patch to the current object, then updates as `PUT` would.
pub fn patch(
    store: &mut Store,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    sub: Sub,
    kind: PatchType,
    body: &[u8],
) -> ApiResult<Arc<Obj>> {
    let old = get(store, def, ns, name)?;
    let sdef = storage_def(store, def);
    let current = present(def, &sdef, &old);
    let strategic = def.flavor != Flavor::Custom;
    let patched = patch::apply(kind, &current, body, strategic)?;
    if meta_str(&patched, "name").unwrap_or(name) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&patched, "name").unwrap_or("")
        )));
    }
    finish_update(store, def, &old, to_storage(def, patched), sub)
}

fn finish_update(
    store: &mut Store,
    def: &ResourceDef,
    old: &Arc<Obj>,
    mut new_v: Value,
    sub: Sub,
) -> ApiResult<Arc<Obj>> {
    let sdef = storage_def(store, def);
    let mut old_v = old.value(&sdef);
    let name = old.name.clone();
    let body_rv = meta_str(&new_v, "resourceVersion").unwrap_or("").to_string();
    if body_rv.is_empty() && !allows_unconditional_update(def) {
        // Store.Update names the resource here, not the kind (`widgets.example.dev "w"`), and
        // prints the version as Go's %#v prints a uint64 zero.
        return Err(ApiError::invalid(
            &def.group,
            &def.plural,
            &name,
            "metadata.resourceVersion",
            "Invalid value",
            "0x0: must be specified for an update",
        ));
    }
    if !body_rv.is_empty() && body_rv != old.rv.to_string() {
        return Err(ApiError::conflict_modified(&def.group, &def.plural, &name));
    }
    let mut next = match (sub, def.flavor) {
        (Sub::Status, Flavor::Pod | Flavor::Namespace) => {
            // podStatusStrategy / namespaceStatusStrategy reset the spec (and a pod's
            // ownerReferences, and an emptied qosClass); metadata changes are kept.
            copy_field(&old_v, &mut new_v, "spec");
            if def.flavor == Flavor::Pod {
                let owners = old_v["metadata"].get("ownerReferences").cloned();
                let meta = meta_mut(&mut new_v);
                match owners {
                    Some(o) => meta.insert("ownerReferences".into(), o),
                    None => meta.shift_remove("ownerReferences"),
                };
                if new_v["status"]["qosClass"].as_str().unwrap_or("").is_empty() {
                    if let Some(q) = old_v["status"].get("qosClass").cloned() {
                        if !new_v["status"].is_object() {
                            new_v["status"] = json!({});
                        }
                        new_v["status"]["qosClass"] = q;
                    }
                }
            }
            let errors = update_meta(def, old, &old_v, &mut new_v);
            reject_update(def, &name, errors, Vec::new())?;
            new_v
        }
        (Sub::Status, _) => {
            // Custom resources (their status strategy starts from the stored object and takes
            // only `.status`), and CRDs likewise here.
            let mut r = old_v.clone();
            match new_v.get("status") {
                Some(s) => r["status"] = s.clone(),
                None => {
                    r.as_object_mut().expect("object").shift_remove("status");
                }
            }
            r
        }
        (Sub::Eviction, _) => {
            return Err(
                ApiError::method_not_allowed("the server does not allow this method on the requested resource")
                    .with_empty_details(),
            )
        }
        (Sub::Main, _) => {
            if def.status_subresource {
                copy_field(&old_v, &mut new_v, "status");
            }
            if def.flavor == Flavor::Namespace {
                new_v["spec"] = old_v["spec"].clone();
            }
            let errors = update_meta(def, old, &old_v, &mut new_v);
            let strategy = match def.flavor {
                Flavor::Pod => pods::validate_update(&old_v, &new_v),
                Flavor::Custom => crd::schema_errors(def, &mut new_v),
                Flavor::Webhook => crate::admission::prepare(&mut new_v),
                _ => Vec::new(),
            };
            reject_update(def, &name, errors, strategy)?;
            if def.flavor == Flavor::Crd {
                crd::prepare(&mut new_v, Some(&old_v))?;
            }
            if generation_changes(def.flavor, &old_v, &new_v) {
                let g = old_v["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                meta_mut(&mut new_v).insert("generation".into(), json!(g));
            }
            new_v
        }
    };
    zero::normalize(sdef.flavor, &mut next);
    // Compare without type meta or resourceVersion: an update that changes nothing is not
    // written (no new resourceVersion, no watch event), as etcd3's GuaranteedUpdate does.
    for v in [&mut next, &mut old_v] {
        if let Some(m) = v.as_object_mut() {
            m.shift_remove("kind");
            m.shift_remove("apiVersion");
        }
        meta_mut(v).insert("resourceVersion".into(), json!(old.rv.to_string()));
    }
    if next == old_v {
        return Ok(old.clone());
    }
    // Namespaces are removed by the namespace controller (the reaper), never by an update.
    let delete_now = def.flavor != Flavor::Namespace
        && meta_str(&next, "deletionTimestamp").is_some()
        && finalizers(&next).is_empty()
        && next["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) == 0;
    let rv = store.next_rv();
    if delete_now {
        // Store.Update → deleteWithoutFinalizers: the update is never stored. The object is
        // deleted as it was last stored (what DELETED carries, at the deletion's version) and
        // the caller gets the updated object at the version it replaced.
        let mut last = old.value(&sdef);
        meta_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
        let gone = Arc::new(Obj::from_value(&sdef, last.clone())?);
        store.commit(def.storage_key(), EventType::Deleted, gone, Some(old.clone()));
        if def.flavor == Flavor::Crd {
            unregister_crd(store, &last);
        }
        return Ok(Arc::new(Obj::from_value(&sdef, next)?));
    }
    meta_mut(&mut next).insert("resourceVersion".into(), json!(rv.to_string()));
    let obj = Arc::new(Obj::from_value(&sdef, next.clone())?);
    store.commit(def.storage_key(), EventType::Modified, obj.clone(), Some(old.clone()));
    if def.flavor == Flavor::Crd {
        register_crd(store, &next);
    }
    Ok(obj)
}

/// `to[key] = from[key]`, or no `key` in `to` when `from` has none.
fn copy_field(from: &Value, to: &mut Value, key: &str) {
    match from.get(key) {
        Some(v) => to[key] = v.clone(),
        None => {
            if let Some(m) = to.as_object_mut() {
                m.shift_remove(key);
            }
        }
    }
}

/// `BeforeUpdate`'s `Invalid`: the metadata errors are found by the common checks and again
/// by the strategy (every strategy here calls `ValidateObjectMetaUpdate`), then come the
/// strategy's own. The message aggregates repeats once; the causes keep them.
fn reject_update(def: &ResourceDef, name: &str, meta: Vec<FieldError>, strategy: Vec<FieldError>) -> ApiResult<()> {
    if meta.is_empty() && strategy.is_empty() {
        return Ok(());
    }
    let (group, kind) = group_kind(def);
    let errors = [meta.clone(), meta, strategy].concat();
    Err(ApiError::invalid_fields(group, kind, name, &errors))
}

/// A `metav1.Time` as `field.Error` prints it (`time.Time.String()`, in the server's UTC).
fn go_time(v: &Value) -> String {
    let text = v.as_str().map(String::from).unwrap_or_else(|| v.to_string());
    match text.parse::<jiff::Timestamp>() {
        Ok(t) => format!("{} +0000 UTC", t.strftime("%Y-%m-%d %H:%M:%S%.f")),
        Err(_) => text,
    }
}

/// The metadata rules of every update (`rest.BeforeUpdate`, `ValidateObjectMetaUpdate`,
/// namespace `Canonicalize`): generation, creationTimestamp, an unset uid, a set deletion
/// timestamp and a dropped grace period come from the stored object; a different uid, a new
/// deletion timestamp or grace period, and finalizers added to an object being deleted are
/// errors (answered in `ValidateObjectMetaAccessorUpdate`'s order); a namespace keeps its name
/// label.
fn update_meta(def: &ResourceDef, old: &Obj, old_v: &Value, new_v: &mut Value) -> Vec<FieldError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let name = old.name.as_str();
    if meta_str(old_v, "deletionTimestamp").is_some() {
        let before = finalizers(old_v);
        let mut added: Vec<String> = finalizers(new_v).into_iter().filter(|f| !before.contains(f)).collect();
        if !added.is_empty() {
            added.sort();
            let list: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
            errors.push((
                "metadata.finalizers".into(),
                "Forbidden",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    list.join(", ")
                ),
            ));
        }
    }
    let old_meta = &old_v["metadata"];
    let meta = meta_mut(new_v);
    let set = |meta: &mut serde_json::Map<String, Value>, k: &str, from: Option<&Value>| match from {
        Some(val) => {
            meta.insert(k.into(), val.clone());
        }
        None => {
            meta.shift_remove(k);
        }
    };
    for k in ["generation", "namespace", "name", "creationTimestamp"] {
        set(meta, k, old_meta.get(k));
    }
    match meta.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
        None => set(meta, "uid", old_meta.get("uid")),
        Some(uid) if uid != old.uid => {
            errors.push((
                "metadata.uid".into(),
                "Invalid value",
                format!("{uid:?}: field is immutable"),
            ));
        }
        Some(_) => {}
    }
    let present = |m: &serde_json::Map<String, Value>, k: &str| m.get(k).filter(|v| !v.is_null()).cloned();
    match (old_meta.get("deletionTimestamp"), present(meta, "deletionTimestamp")) {
        (Some(t), _) => set(meta, "deletionTimestamp", Some(t)),
        (None, Some(t)) => errors.push((
            "metadata.deletionTimestamp".into(),
            "Invalid value",
            format!("{}: field is immutable", go_time(&t)),
        )),
        (None, None) => set(meta, "deletionTimestamp", None),
    }
    match (
        old_meta.get("deletionGracePeriodSeconds"),
        present(meta, "deletionGracePeriodSeconds"),
    ) {
        (Some(g), None) => set(meta, "deletionGracePeriodSeconds", Some(g)),
        (g, Some(new)) if g != Some(&new) => errors.push((
            "metadata.deletionGracePeriodSeconds".into(),
            "Invalid value",
            format!("{new}: field is immutable"),
        )),
        (None, None) => set(meta, "deletionGracePeriodSeconds", None),
        _ => {}
    }
    if def.flavor == Flavor::Namespace {
        set_namespace_label(new_v, name);
    }
    errors
}

/// Whether an update bumps `generation`: a spec change for pods and CRDs; for custom
/// resources any change outside `metadata` (status included: with a status subresource it
/// was already reset to the stored one).
fn generation_changes(flavor: Flavor, old: &Value, new: &Value) -> bool {
    let ignored: &[&str] = match flavor {
        Flavor::Pod | Flavor::Crd => &["metadata", "status", "kind", "apiVersion"],
        Flavor::Custom => &["metadata", "kind", "apiVersion"],
        _ => return false,
    };
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in ignored {
                m.shift_remove(*k);
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Result of a delete: the object as last stored, and whether it is gone.
pub struct Deleted {
    pub obj: Arc<Obj>,
    pub gone: bool,
}

pub fn delete(store: &mut Store, def: &ResourceDef, ns: &str, name: &str, opts: &DeleteOpts) -> ApiResult<Deleted> {
    let old = get(store, def, ns, name)?;
    let sdef = storage_def(store, def);
    check_delete_preconditions(def, &old, opts)?;
    let mut v = old.value(&sdef);
    let fins = finalizers(&v);
    let deleting = meta_str(&v, "deletionTimestamp").is_some();
    let graceful = def.flavor == Flavor::Pod;
    let grace = if graceful {
        pods::grace_period(&v, opts.grace_period_seconds)
    } else {
        0
    };

    if def.flavor == Flavor::Namespace {
        // The namespace REST's first DELETE sets the deletion timestamp and the Terminating
        // phase, nothing else; the namespace controller (the reaper) empties it, then
        // removes it.
        if deleting {
            return Ok(Deleted { obj: old, gone: false });
        }
        meta_mut(&mut v).insert("deletionTimestamp".into(), json!(now_rfc3339()));
        v["status"]["phase"] = json!("Terminating");
        return write_deleting(store, def, &old, v).map(|obj| Deleted { obj, gone: false });
    }
    if def.flavor == Flavor::Crd && !deleting {
        // The CRD REST's first DELETE; later ones go through the generic store.
        crd::mark_deleted(&mut v);
        return write_deleting(store, def, &old, v).map(|obj| Deleted { obj, gone: false });
    }

    if deleting {
        let current = v["metadata"]["deletionGracePeriodSeconds"].as_i64();
        if graceful && grace < current.unwrap_or(0) {
            // A shorter grace period moves the deadline earlier.
            let meta = meta_mut(&mut v);
            meta.insert("deletionTimestamp".into(), json!(rfc3339_in(grace)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if grace == 0 && fins.is_empty() {
                let obj = write_deleting(store, def, &old, v)?;
                return remove(store, def, &obj, &sdef);
            }
            return write_deleting(store, def, &old, v).map(|obj| Deleted { obj, gone: false });
        }
        if current.unwrap_or(0) == 0 && fins.is_empty() {
            return remove(store, def, &old, &sdef);
        }
        if current.is_none() && !fins.is_empty() {
            // markAsDeleting: a deletion marked without a grace period (a CRD's) gets 0.
            meta_mut(&mut v).insert("deletionGracePeriodSeconds".into(), json!(0));
            return write_deleting(store, def, &old, v).map(|obj| Deleted { obj, gone: false });
        }
        return Ok(Deleted { obj: old, gone: false });
    }

    if !graceful && fins.is_empty() {
        return remove(store, def, &old, &sdef);
    }
    // Graceful (pods) or held by finalizers: mark as deleting first.
    let meta = meta_mut(&mut v);
    meta.insert("deletionTimestamp".into(), json!(rfc3339_in(grace)));
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if let Some(g) = meta.get("generation").and_then(Value::as_i64).filter(|g| *g > 0) {
        meta.insert("generation".into(), json!(g + 1));
    }
    let obj = write_deleting(store, def, &old, v)?;
    if grace == 0 && fins.is_empty() {
        return remove(store, def, &obj, &sdef);
    }
    Ok(Deleted { obj, gone: false })
}

fn write_deleting(store: &mut Store, def: &ResourceDef, old: &Arc<Obj>, mut v: Value) -> ApiResult<Arc<Obj>> {
    let sdef = storage_def(store, def);
    let rv = store.next_rv();
    meta_mut(&mut v).insert("resourceVersion".into(), json!(rv.to_string()));
    let obj = Arc::new(Obj::from_value(&sdef, v)?);
    store.commit(def.storage_key(), EventType::Modified, obj.clone(), Some(old.clone()));
    Ok(obj)
}

/// Delete preconditions. Namespaces and CRDs check them in their own REST `Delete`, with
/// their own words and resource; everything else in `rest.BeforeDelete`, which names the
/// object's kind (`Pod "p"`, `Lease.coordination.k8s.io "l"`).
fn check_delete_preconditions(def: &ResourceDef, old: &Obj, opts: &DeleteOpts) -> ApiResult<()> {
    let name = old.name.as_str();
    let own_rest = matches!(def.flavor, Flavor::Namespace | Flavor::Crd);
    let (group, kind) = group_kind(def);
    let (group, resource) = if own_rest {
        (def.group.as_str(), def.plural.as_str())
    } else {
        (group, kind)
    };
    if let Some(uid) = opts.precondition_uid.as_ref().filter(|u| **u != old.uid) {
        let why = if own_rest {
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                old.uid
            )
        } else {
            format!(
                "the UID in the precondition ({uid}) does not match the UID in record ({}). \
                 The object might have been deleted and then recreated",
                old.uid
            )
        };
        return Err(ApiError::conflict(group, resource, name, &why));
    }
    if let Some(rv) = opts.precondition_rv.as_ref().filter(|rv| **rv != old.rv.to_string()) {
        let why = if own_rest {
            format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                old.rv
            )
        } else {
            format!(
                "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). \
                 The object might have been modified",
                old.rv
            )
        };
        return Err(ApiError::conflict(group, resource, name, &why));
    }
    Ok(())
}

/// Removes the object now: DELETED carries the last stored object at the deletion's
/// resourceVersion.
fn remove(store: &mut Store, def: &ResourceDef, old: &Arc<Obj>, sdef: &ResourceDef) -> ApiResult<Deleted> {
    let mut v = old.value(sdef);
    let rv = store.next_rv();
    meta_mut(&mut v).insert("resourceVersion".into(), json!(rv.to_string()));
    let obj = Arc::new(Obj::from_value(sdef, v.clone())?);
    store.commit(def.storage_key(), EventType::Deleted, obj.clone(), Some(old.clone()));
    if def.flavor == Flavor::Crd {
        unregister_crd(store, &v);
    }
    Ok(Deleted { obj, gone: true })
}
