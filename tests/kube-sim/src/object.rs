//! Stored objects: compact JSON bytes plus the few fields lists and watches filter on.
//!
//! Objects are kept serialized (without `kind`/`apiVersion`) so that a list of 100,000 pods
//! is a concatenation of shared byte buffers and a watch event is three slices, with no
//! re-encoding on the read path.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::resources::{Flavor, ResourceDef};
use crate::status::{ApiError, ApiResult};

/// One stored version of one object.
#[derive(Debug)]
pub struct Obj {
    /// Storage key, ordered as etcd orders `/registry/<resource>/<ns>/<name>`.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub rv: u64,
    pub labels: BTreeMap<String, String>,
    /// Values of the resource's extra selectable fields, in `ResourceDef::extra_fields` order.
    pub fields: Vec<String>,
    /// The object as JSON, without `kind` and `apiVersion`.
    pub json: Bytes,
}

pub fn storage_key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

impl Obj {
    /// Builds the stored form. `v` must be an object; `kind`/`apiVersion` are dropped.
    pub fn from_value(def: &ResourceDef, mut v: Value) -> ApiResult<Obj> {
        let map = v
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("object is not a JSON object"))?;
        map.shift_remove("kind");
        map.shift_remove("apiVersion");
        let meta = map.get("metadata").and_then(Value::as_object);
        let s = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (namespace, name, uid) = (s("namespace"), s("name"), s("uid"));
        let rv = meta
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let fields = def
            .extra_fields
            .iter()
            .map(|f| field_value(def.flavor, &v, f))
            .collect();
        let json = Bytes::from(serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))?);
        Ok(Obj {
            key: storage_key(&namespace, &name),
            namespace,
            name,
            uid,
            rv,
            labels,
            fields,
            json,
        })
    }

    /// The stored object parsed back, with `kind`/`apiVersion` of `def`.
    pub fn value(&self, def: &ResourceDef) -> Value {
        let mut out = Map::new();
        out.insert("kind".into(), Value::String(def.kind.clone()));
        out.insert("apiVersion".into(), Value::String(def.api_version()));
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&self.json) {
            out.extend(m);
        }
        Value::Object(out)
    }

    /// The value of a selectable field ("" when unset).
    pub fn field<'a>(&'a self, def: &ResourceDef, name: &str) -> &'a str {
        match name {
            "metadata.name" => &self.name,
            "metadata.namespace" => &self.namespace,
            _ => def
                .extra_fields
                .iter()
                .position(|f| f == name)
                .map(|i| self.fields[i].as_str())
                .unwrap_or(""),
        }
    }
}

/// Reads a dotted field path the way the field-label converters do (`source` of a core
/// Event is `source.component`; booleans render as `true`/`false`).
fn field_value(flavor: Flavor, v: &Value, path: &str) -> String {
    let path = match (flavor, path) {
        (Flavor::CoreEvent | Flavor::EventsV1, "source") => "source.component",
        _ => path,
    };
    let mut cur = v;
    for part in path.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// `metadata` of a JSON object, created if missing.
pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = Value::Object(Map::new());
    }
    v["metadata"].as_object_mut().expect("metadata is an object")
}

/// Drops what Go's `omitempty` drops from `ObjectMeta` on the way out of a real apiserver:
/// empty or null `finalizers`, `labels`, `annotations`, `ownerReferences`, and nulls.
pub fn normalize_meta(v: &mut Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, val| match val {
            Value::Null => false,
            Value::Array(a) => !(a.is_empty() && matches!(k.as_str(), "finalizers" | "ownerReferences")),
            Value::Object(o) => !(o.is_empty() && matches!(k.as_str(), "labels" | "annotations")),
            _ => true,
        });
    }
}

pub fn meta_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("metadata").and_then(|m| m.get(key)).and_then(Value::as_str)
}

pub fn finalizers(v: &Value) -> Vec<String> {
    v.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn rfc3339_in(seconds: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
fn matches_label_regex(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn matches_subdomain_regex(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(matches_label_regex)
}

/// `validation.IsDNS1123Subdomain` (the rule for `metadata.name` of most resources): its
/// messages, none when the name is valid.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !matches_subdomain_regex(s) {
        errs.push(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
             start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '{DNS1123_SUBDOMAIN_FMT}')"
        ));
    }
    errs
}

/// `validation.IsDNS1123Label` (namespace names): its messages, none when the name is valid.
/// The examples are joined as `RegexError` joins them (hence the double space).
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !matches_label_regex(s) {
        if matches_subdomain_regex(s) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(format!(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start \
                 and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
                 '{DNS1123_LABEL_FMT}')"
            ));
        }
    }
    errs
}
