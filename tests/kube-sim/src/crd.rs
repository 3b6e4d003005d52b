//! CustomResourceDefinitions: validating and accepting a CRD, turning its served versions
//! into [`ResourceDef`]s, and the structural-schema work the apiserver does on every custom
//! resource write (pruning unknown fields, dropping non-nullable nulls, defaulting, type /
//! required / enum / bounds checks).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::object::now_rfc3339;
use crate::resources::{Flavor, ResourceDef};
use crate::status::{ApiError, ApiResult, FieldError};

pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn crd_invalid(name: &str, field: &str, kind: &'static str, detail: &str) -> ApiError {
    ApiError::invalid(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        name,
        field,
        kind,
        detail,
    )
}

/// Checks a new or updated CRD and fills in what the apiextensions server sets: the
/// cleanup finalizer and an accepted, established status on create; on update (`old` is the
/// stored CRD) the stored status is kept (PrepareForUpdate), with the names the naming
/// controller accepts and the storage version added to `storedVersions`.
pub fn prepare(v: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    let creating = old.is_none();
    let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
    let spec = v["spec"].clone();
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    let kind = spec["names"]["kind"].as_str().unwrap_or("");
    if group.is_empty() {
        return Err(crd_invalid(&name, "spec.group", "Required value", ""));
    }
    if plural.is_empty() {
        return Err(crd_invalid(&name, "spec.names.plural", "Required value", ""));
    }
    if kind.is_empty() {
        return Err(crd_invalid(&name, "spec.names.kind", "Required value", ""));
    }
    if name != format!("{plural}.{group}") {
        return Err(crd_invalid(
            &name,
            "metadata.name",
            "Invalid value",
            &format!("{name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        other => {
            return Err(crd_invalid(
                &name,
                "spec.scope",
                "Unsupported value",
                &format!(
                    "{:?}: supported values: \"Cluster\", \"Namespaced\"",
                    other.unwrap_or("")
                ),
            ))
        }
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        return Err(crd_invalid(
            &name,
            "spec.versions",
            "Invalid value",
            "must have exactly one version marked as storage version",
        ));
    }
    let storage: Vec<&Value> = versions.iter().filter(|v| v["storage"] == true).collect();
    if storage.len() != 1 {
        return Err(crd_invalid(
            &name,
            "spec.versions",
            "Invalid value",
            "must have exactly one version marked as storage version",
        ));
    }
    let storage_version = storage[0]["name"].as_str().unwrap_or("").to_string();
    if creating {
        let fins = v["metadata"]
            .as_object_mut()
            .expect("metadata")
            .entry("finalizers")
            .or_insert_with(|| json!([]));
        if let Some(a) = fins.as_array_mut() {
            if !a.iter().any(|f| f == CLEANUP_FINALIZER) {
                a.push(json!(CLEANUP_FINALIZER));
            }
        }
    }
    let now = now_rfc3339();
    let mut names = v["spec"]["names"].clone();
    if names.get("singular").is_none() {
        names["singular"] = json!(kind.to_lowercase());
    }
    if names.get("listKind").is_none() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    match old.map(|o| o["status"].clone()).filter(Value::is_object) {
        Some(mut status) => {
            status["acceptedNames"] = names;
            let stored = status
                .as_object_mut()
                .expect("status is an object")
                .entry("storedVersions")
                .or_insert_with(|| json!([]));
            if let Some(a) = stored.as_array_mut() {
                if !a.iter().any(|s| *s == storage_version) {
                    a.push(json!(storage_version));
                }
            }
            v["status"] = status;
        }
        None => {
            v["status"] = json!({
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
                     "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": now,
                     "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
                ],
                "acceptedNames": names,
                "storedVersions": [storage_version],
            });
        }
    }
    Ok(())
}

/// What the CRD REST's first DELETE writes instead of the generic deletion update: a
/// deletion timestamp (no grace period, no generation bump), the cleanup finalizer (again,
/// if it had been removed) and the `Terminating` condition.
pub fn mark_deleted(v: &mut Value) {
    let now = now_rfc3339();
    let meta = crate::object::meta_mut(v);
    meta.insert("deletionTimestamp".into(), json!(now));
    let fins = meta.entry("finalizers").or_insert_with(|| json!([]));
    if !fins.is_array() {
        *fins = json!([]);
    }
    let fins = fins.as_array_mut().expect("finalizers is an array");
    if !fins.iter().any(|f| f == CLEANUP_FINALIZER) {
        fins.push(json!(CLEANUP_FINALIZER));
    }
    if !v["status"].is_object() {
        v["status"] = json!({});
    }
    if !v["status"]["conditions"].is_array() {
        v["status"]["conditions"] = json!([]);
    }
    let conds = v["status"]["conditions"]
        .as_array_mut()
        .expect("conditions is an array");
    let (reason, message) = (
        "InstanceDeletionPending",
        "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
    );
    match conds.iter_mut().find(|c| c["type"] == "Terminating") {
        Some(c) => {
            if c["status"] != "True" || c.get("lastTransitionTime").is_none_or(Value::is_null) {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!("True");
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conds.push(
            json!({"type": "Terminating", "status": "True", "lastTransitionTime": now,
                                  "reason": reason, "message": message}),
        ),
    }
}

/// One [`ResourceDef`] per served version of the CRD.
pub fn defs_for(v: &Value) -> Vec<Arc<ResourceDef>> {
    let spec = &v["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or("");
    let kind = names["kind"].as_str().unwrap_or("");
    let singular = names["singular"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| kind.to_lowercase());
    let short: Vec<&str> = names["shortNames"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let namespaced = spec["scope"] == "Namespaced";
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ver| ver["served"] == true)
        .map(|ver| {
            let selectable: Vec<String> = ver["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["jsonPath"].as_str())
                .map(|p| p.trim_start_matches('.').to_string())
                .collect();
            let selectable: Vec<&str> = selectable.iter().map(String::as_str).collect();
            ResourceDef::new(
                group,
                ver["name"].as_str().unwrap_or(""),
                plural,
                &singular,
                kind,
                namespaced,
                ver["subresources"].get("status").is_some(),
                &short,
                Flavor::Custom,
                &selectable,
                ver["schema"].get("openAPIV3Schema").cloned(),
            )
        })
        .collect()
}

/// Prunes, defaults and validates a custom resource against its version's schema.
pub fn apply_schema(def: &ResourceDef, name: &str, v: &mut Value) -> ApiResult<()> {
    let errors = schema_errors(def, v);
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid_fields(&def.group, &def.kind, name, &errors))
}

/// Prunes and defaults a custom resource; answers what its schema finds wrong.
pub fn schema_errors(def: &ResourceDef, v: &mut Value) -> Vec<FieldError> {
    let Some(schema) = &def.schema else { return Vec::new() };
    let mut errors = Vec::new();
    if let (Some(obj), Some(props)) = (v.as_object_mut(), schema.get("properties").and_then(Value::as_object)) {
        let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
        for (k, child) in obj.iter_mut() {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = props.get(k) {
                walk(s, child, k, &mut errors);
            }
        }
        if !preserve {
            obj.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata") || props.contains_key(k));
        }
        apply_defaults(props, obj);
        check_required(schema, obj, "", &mut errors);
    }
    errors
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, errors: &mut Vec<FieldError>) {
    if v.is_null() && schema["nullable"] == true {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    if let Some(want) = schema["type"].as_str() {
        let got = type_name(v);
        let ok = got == want
            || (want == "number" && got == "integer")
            || (int_or_string && matches!(got, "integer" | "string"));
        if !ok {
            errors.push((
                path.to_string(),
                "Invalid value",
                format!("{got:?}: {path} in body must be of type {want}: {got:?}"),
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            errors.push((
                path.to_string(),
                "Unsupported value",
                format!("{v}: supported values: {}", list.join(", ")),
            ));
        }
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema["minimum"].as_f64() {
            if n < min {
                errors.push((
                    path.to_string(),
                    "Invalid value",
                    format!("{v}: {path} in body should be greater than or equal to {min}"),
                ));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            if n > max {
                errors.push((
                    path.to_string(),
                    "Invalid value",
                    format!("{v}: {path} in body should be less than or equal to {max}"),
                ));
            }
        }
    }
    match v {
        Value::Object(obj) => {
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            if let Some(props) = schema["properties"].as_object() {
                obj.retain(|k, val| !(val.is_null() && props.get(k).is_some_and(|s| s["nullable"] != true)));
                for (k, child) in obj.iter_mut() {
                    if let Some(s) = props.get(k) {
                        walk(s, child, &format!("{path}.{k}"), errors);
                    }
                }
                if !preserve {
                    obj.retain(|k, _| props.contains_key(k));
                }
                apply_defaults(props, obj);
                check_required(schema, obj, path, errors);
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in obj.iter_mut() {
                    walk(ap, child, &format!("{path}.{k}"), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, child) in items.iter_mut().enumerate() {
                    walk(s, child, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn apply_defaults(props: &Map<String, Value>, obj: &mut Map<String, Value>) {
    for (k, s) in props {
        if let Some(d) = s.get("default") {
            obj.entry(k.clone()).or_insert_with(|| d.clone());
        }
    }
}

fn check_required(schema: &Value, obj: &Map<String, Value>, path: &str, errors: &mut Vec<FieldError>) {
    for r in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !obj.contains_key(r) {
            let field = if path.is_empty() {
                r.to_string()
            } else {
                format!("{path}.{r}")
            };
            errors.push((field, "Required value", String::new()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(schema: Value) -> Arc<ResourceDef> {
        ResourceDef::new(
            "ex.dev",
            "v1",
            "things",
            "thing",
            "Thing",
            true,
            true,
            &[],
            Flavor::Custom,
            &[],
            Some(schema),
        )
    }

    #[test]
    fn prunes_defaults_and_checks_types() {
        let d = def(json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["port"], "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "opt": {"type": "string", "nullable": true},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}));
        let mut v = json!({"metadata": {"name": "t"}, "spec": {"port": 80, "junk": 1, "opt": null,
                           "free": {"anything": [1]}}, "other": 2});
        apply_schema(&d, "t", &mut v).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "t"}, "spec": {"port": 80, "opt": null,
                                 "free": {"anything": [1]}, "mode": "a"}})
        );
        let mut bad = json!({"spec": {"port": "x"}});
        let e = apply_schema(&d, "t", &mut bad).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            r#"Thing.ex.dev "t" is invalid: spec.port: Invalid value: "string": spec.port in body must be of type integer: "string""#
        );
        let mut missing = json!({"spec": {"mode": "c"}});
        let e = apply_schema(&d, "t", &mut missing).unwrap_err();
        assert!(e.message.contains("spec.mode: Unsupported value"), "{}", e.message);
        assert!(e.message.contains("spec.port: Required value"), "{}", e.message);
    }
}
