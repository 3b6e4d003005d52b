//! PATCH bodies: RFC 6902 JSON patch (with `test`), RFC 7386 JSON merge patch, and strategic
//! merge patch for the built-in fields a controller touches.
//!
//! Strategic merge patch knows the merge keys of the lists that carry a `patchStrategy` in
//! the Kubernetes types (`metadata.finalizers`, `status.conditions` by `type`, containers by
//! `name`, …) and the `$patch`, `$deleteFromPrimitiveList`, `$setElementOrder` and
//! `$retainKeys` directives. Merged lists of primitives come out in the order apimachinery's
//! `mergeSlice` gives them (see [`merge_primitives`]). Custom resources have no strategic
//! merge patch, as on a real cluster.

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

pub const JSON_PATCH: &str = "application/json-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

impl PatchType {
    /// The patch type of a Content-Type (parameters after `;` are ignored).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or("") {
            JSON_PATCH => Some(PatchType::Json),
            MERGE_PATCH => Some(PatchType::Merge),
            STRATEGIC_PATCH => Some(PatchType::Strategic),
            APPLY_PATCH => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// The patch types a resource accepts, in the order kube-apiserver lists them in its `415`:
/// built-in resources also take strategic merge patch, custom resources do not.
pub fn accepted_types(strategic_allowed: bool) -> &'static [&'static str] {
    if strategic_allowed {
        &[JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH]
    } else {
        &[JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
    }
}

/// Server-side apply is a patch type kube-apiserver accepts and kube-sim does not implement.
pub fn apply_not_implemented() -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        "server-side apply (application/apply-patch+yaml) is not implemented by kube-sim; \
         use application/merge-patch+json, application/json-patch+json or \
         application/strategic-merge-patch+json",
    )
}

/// Applies a patch to `doc` (the full current object, with `kind`/`apiVersion`).
pub fn apply(kind: PatchType, doc: &Value, body: &[u8], strategic_allowed: bool) -> ApiResult<Value> {
    let accepted = accepted_types(strategic_allowed);
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut out = doc.clone();
            json_patch::patch(&mut out, &ops).map_err(json_patch_error)?;
            Ok(out)
        }
        PatchType::Merge => {
            let p: Value = decode(body)?;
            let mut out = doc.clone();
            json_patch::merge(&mut out, &p);
            Ok(out)
        }
        PatchType::Strategic if strategic_allowed => {
            let p: Value = decode(body)?;
            let mut out = doc.clone();
            strategic_merge(&mut out, &p, "")?;
            Ok(out)
        }
        PatchType::Strategic => Err(ApiError::unsupported_media_type(accepted)),
        PatchType::Apply => Err(apply_not_implemented()),
    }
}

fn decode(body: &[u8]) -> ApiResult<Value> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "error decoding patch: patch is not a JSON object",
        ));
    }
    Ok(v)
}

/// A failed JSON patch operation (including a failed `test`) is answered as the apiserver
/// answers it: `422 Invalid` with the jsonpatch error text.
fn json_patch_error(e: json_patch::PatchError) -> ApiError {
    // kube-apiserver replaces the jsonpatch text with this generic message
    // (NewGenericServerResponse); the cause is only in its logs.
    tracing::debug!(error = %e, "JSON patch rejected");
    ApiError::new(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
    )
    .with_empty_details()
}

enum ListStrategy {
    Replace,
    MergePrimitive,
    MergeKey(&'static str),
}

/// Merge strategies of the built-in lists, by dotted path without indices.
fn list_strategy(path: &str) -> ListStrategy {
    use ListStrategy::*;
    match path {
        "metadata.finalizers" => MergePrimitive,
        "metadata.ownerReferences" => MergeKey("uid"),
        "spec.containers" | "spec.initContainers" | "spec.ephemeralContainers" => MergeKey("name"),
        "spec.containers.ports" | "spec.initContainers.ports" => MergeKey("containerPort"),
        "spec.containers.env" | "spec.initContainers.env" => MergeKey("name"),
        "spec.containers.volumeMounts" | "spec.initContainers.volumeMounts" => MergeKey("mountPath"),
        "spec.volumes" | "spec.imagePullSecrets" => MergeKey("name"),
        "spec.hostAliases" => MergeKey("ip"),
        "status.conditions" => MergeKey("type"),
        "status.podIPs" | "status.hostIPs" => MergeKey("ip"),
        _ => Replace,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Removes directive keys (`$patch`, `$setElementOrder/...`, …) from a value being inserted.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn strategic_merge(orig: &mut Value, patch: &Value, path: &str) -> ApiResult<()> {
    let Some(pm) = patch.as_object() else {
        *orig = patch.clone();
        return Ok(());
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *orig = strip_directives(patch);
            return Ok(());
        }
        Some("delete") => {
            *orig = Value::Object(Map::new());
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!("Unknown patch type: {other}")));
        }
    }
    if !orig.is_object() {
        *orig = Value::Object(Map::new());
    }
    // mergePatchIntoOriginal: `$setElementOrder` lists (and the lists they order) are merged
    // first; those lists are then done.
    let ordered = set_element_orders(orig, pm, path)?;
    let mut retain: Option<Vec<String>> = None;
    for (k, pv) in pm {
        if k == "$patch" || k.starts_with("$setElementOrder/") || ordered.contains(k) {
            continue;
        }
        if k == "$retainKeys" {
            retain = pv
                .as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect());
            continue;
        }
        let om = orig.as_object_mut().expect("orig is an object");
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = om.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        let child_path = join(path, k);
        match pv {
            Value::Null => {
                om.shift_remove(k);
            }
            Value::Object(_) => {
                let entry = om.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
                strategic_merge(entry, pv, &child_path)?;
            }
            Value::Array(items) => {
                let merged = merge_list(om.get(k), items, &child_path)?;
                om.insert(k.clone(), merged);
            }
            other => {
                om.insert(k.clone(), other.clone());
            }
        }
    }
    if let (Some(keep), Some(om)) = (retain, orig.as_object_mut()) {
        om.retain(|k, _| keep.contains(k));
    }
    Ok(())
}

/// `mergeSlice` for a list of primitives with `patchStrategy:"merge"` (apimachinery
/// `strategicpatch`): the union of both lists without duplicates, in the order
/// `normalizeElementOrder` gives it — the patch's items in the patch's order, with the items
/// only the server has merged in by their order in the original (see [`enforce_order`]).
///
/// So items new to the list come *first* (`["a","b"]` + `["x"]` → `["x","a","b"]`), and a
/// patch that repeats items already present moves them into its own order
/// (`["a","b","c"]` + `["c","a"]` → `["b","c","a"]`; `["a","b"]` + `["b","x"]` →
/// `["a","b","x"]`).
pub fn merge_primitives(orig: &[Value], patch: &[Value]) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(orig.len() + patch.len());
    for v in orig.iter().chain(patch) {
        if !merged.contains(v) {
            merged.push(v.clone());
        }
    }
    enforce_order(merged, patch, orig)
}

/// `partitionPrimitivesByPresentInList` + `normalizeElementOrder`: the items of `merged`
/// that `patch_order` names, sorted by it, and the others ("server-only"), sorted by
/// `server_order`, merged by `mergeSortedSlice`: a server-only item goes before the next
/// patch item only when both are in `server_order` and it comes first there; otherwise the
/// patch item goes first.
fn enforce_order(merged: Vec<Value>, patch_order: &[Value], server_order: &[Value]) -> Vec<Value> {
    let index = |list: &[Value], v: &Value| list.iter().position(|x| x == v);
    let (mut patch_items, mut server_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| patch_order.contains(v));
    // Every item is found in the list it is sorted by (sort.SliceStable on the index).
    patch_items.sort_by_key(|v| index(patch_order, v));
    server_only.sort_by_key(|v| index(server_order, v));
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let (mut left, mut right) = (server_only.into_iter().peekable(), patch_items.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (index(server_order, l), index(server_order, r)) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// Go's `%v` of a JSON scalar inside a `[]interface{}` (strings bare, `<nil>` for null).
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".to_string(),
        other => other.to_string(),
    }
}

/// `reflect.TypeOf` of a value decoded by apimachinery's `json.Unmarshal` (integers as
/// `int64`), as `%s` prints it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "%!s(<nil>)",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() => "int64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn go_list(items: &[Value]) -> String {
    format!("[{}]", items.iter().map(go_value).collect::<Vec<_>>().join(" "))
}

/// `mergePatchIntoOriginal` for the primitive merge lists of `pm` that carry a
/// `$setElementOrder/<field>` directive: the list is merged as [`merge_primitives`] does,
/// then ordered with the directive's list standing for the patch's order — the precedence is
/// `$setElementOrder`, then the patch, then the live list. Answers the fields done.
///
/// A patch list whose order contradicts the directive's is refused as the apiserver refuses
/// it: the plain error of `validatePatchWithSetOrderList`, which it answers as a `500`
/// without a reason.
fn set_element_orders(orig: &mut Value, pm: &Map<String, Value>, path: &str) -> ApiResult<Vec<String>> {
    let mut done = Vec::new();
    for (k, order) in pm {
        let Some(field) = k.strip_prefix("$setElementOrder/") else {
            continue;
        };
        // Ordering of lists with merge keys (or replaced lists) is not modelled: the directive
        // is ignored there.
        if !matches!(list_strategy(&join(path, field)), ListStrategy::MergePrimitive) {
            continue;
        }
        let Some(order) = order.as_array() else {
            // mergepatch.ErrBadArgType, a plain error (500, no reason).
            return Err(ApiError::new(
                500,
                "",
                format!("expected a []interface {{}}, but received a {}", go_type(order)),
            ));
        };
        let patch_list = match pm.get(field) {
            None => None,
            Some(Value::Array(items)) => Some(items),
            // A null or a scalar: left to the ordinary merge.
            Some(_) => continue,
        };
        // validatePatchWithSetOrderList: the patch's items must appear in the directive's
        // list, in the same relative order.
        if let Some(items) = patch_list.filter(|p| !p.is_empty() && !order.is_empty()) {
            let mut i = 0;
            for o in order {
                if i < items.len() && &items[i] == o {
                    i += 1;
                }
            }
            if i < items.len() {
                return Err(ApiError::new(
                    500,
                    "",
                    format!(
                        "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
                        go_list(items),
                        go_list(order)
                    ),
                ));
            }
        }
        let om = orig.as_object_mut().expect("orig is an object");
        let original: Option<Vec<Value>> = om.get(field).and_then(Value::as_array).cloned();
        let merged = match (&original, patch_list) {
            (Some(o), Some(p)) => merge_primitives(o, p),
            (Some(o), None) => o.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => continue,
        };
        let both = enforce_order(merged, order, original.as_deref().unwrap_or_default());
        om.insert(field.to_string(), Value::Array(both));
        done.push(field.to_string());
    }
    Ok(done)
}

fn merge_list(orig: Option<&Value>, items: &[Value], path: &str) -> ApiResult<Value> {
    let orig_missing = !orig.is_some_and(Value::is_array);
    let orig: Vec<Value> = orig.and_then(Value::as_array).cloned().unwrap_or_default();
    match list_strategy(path) {
        ListStrategy::Replace => Ok(strip_directives(&Value::Array(items.to_vec()))),
        // A list the original does not have is the patch's, as sent (mergeMap).
        ListStrategy::MergePrimitive if orig_missing => Ok(Value::Array(items.to_vec())),
        ListStrategy::MergePrimitive => Ok(Value::Array(merge_primitives(&orig, items))),
        ListStrategy::MergeKey(key) => {
            let mut out = orig;
            for it in items {
                if it.get("$patch").and_then(Value::as_str) == Some("replace") {
                    return Ok(strip_directives(&Value::Array(
                        items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect(),
                    )));
                }
                let Some(kv) = it.get(key) else {
                    return Err(ApiError::bad_request(format!(
                        "map: {it} does not contain declared merge key: {key}"
                    )));
                };
                let pos = out.iter().position(|o| o.get(key) == Some(kv));
                if it.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(p) = pos {
                        out.remove(p);
                    }
                    continue;
                }
                match pos {
                    Some(p) => strategic_merge(&mut out[p], it, path)?,
                    None => out.push(strip_directives(it)),
                }
            }
            Ok(Value::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(doc: Value, patch: Value) -> Value {
        apply(PatchType::Strategic, &doc, patch.to_string().as_bytes(), true).unwrap()
    }

    #[test]
    fn conditions_merge_by_type() {
        let doc = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
        let out = smp(
            doc,
            json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "sluice.dev/traffic-ready", "status": "True"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"},
                   {"type": "sluice.dev/traffic-ready", "status": "True"}])
        );
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = smp(doc.clone(), json!({"metadata": {"finalizers": ["c", "a"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
        let out = smp(doc, json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    fn strs(v: &[&str]) -> Vec<Value> {
        v.iter().map(|s| json!(s)).collect()
    }

    #[test]
    fn merged_primitives_follow_merge_slice_order() {
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&["a", "b"], &["x"], &["x", "a", "b"]),
            (&["a", "b"], &["x", "y"], &["x", "y", "a", "b"]),
            (&["a", "b"], &["a"], &["a", "b"]),
            (&["a", "b"], &["b"], &["a", "b"]),
            (&["a", "b"], &["b", "a"], &["b", "a"]),
            (&["a", "b"], &["b", "x"], &["a", "b", "x"]),
            (&["a", "b"], &["x", "a"], &["x", "a", "b"]),
            (&["a", "b", "c"], &["c", "a"], &["b", "c", "a"]),
            (&["a", "b", "c"], &["b", "x"], &["a", "b", "x", "c"]),
            (&["a", "a", "b"], &["x", "x"], &["x", "a", "b"]),
            (&["a"], &[], &["a"]),
        ];
        for (orig, patch, want) in cases {
            assert_eq!(
                merge_primitives(&strs(orig), &strs(patch)),
                strs(want),
                "{orig:?} + {patch:?}"
            );
        }
        // A list the original lacks is taken as sent, duplicates included (mergeMap).
        let out = smp(json!({"metadata": {}}), json!({"metadata": {"finalizers": ["x", "x"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "x"]));
    }

    #[test]
    fn set_element_order_orders_primitive_lists() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
        // What kubectl sends when it inserts `x` between `a` and `b`.
        let out = smp(
            doc.clone(),
            json!({"metadata": {"$setElementOrder/finalizers": ["a", "x", "b"], "finalizers": ["x"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "x", "b"]));
        // Items the directive does not name are server-only items.
        let out = smp(
            doc.clone(),
            json!({"metadata": {"$setElementOrder/finalizers": ["x", "a"], "finalizers": ["x"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "a", "b"]));
        // Without a patch list the directive only reorders.
        let out = smp(
            doc.clone(),
            json!({"metadata": {"$setElementOrder/finalizers": ["b", "a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
        // Deletions apply after the ordering.
        let out = smp(
            doc.clone(),
            json!({"metadata": {"$setElementOrder/finalizers": ["b", "x"], "finalizers": ["x"],
                                "$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "x"]));
        // A patch list out of the directive's order is refused.
        let body = json!({"metadata": {"$setElementOrder/finalizers": ["a", "x"], "finalizers": ["x", "a"]}});
        let e = apply(PatchType::Strategic, &doc, body.to_string().as_bytes(), true).unwrap_err();
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (
                500,
                "",
                "The order in patch list:\n[x a]\n doesn't match $setElementOrder list:\n[a x]\n"
            )
        );
        assert!(e.to_status().get("reason").is_none(), "reason is omitempty");
    }

    #[test]
    fn delete_directive_and_null() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
                         "status": {"conditions": [{"type": "X"}, {"type": "Y"}]}});
        let out = smp(
            doc,
            json!({"metadata": {"labels": {"a": null}},
                                  "status": {"conditions": [{"type": "X", "$patch": "delete"}]}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["status"]["conditions"], json!([{"type": "Y"}]));
    }

    #[test]
    fn custom_resources_refuse_strategic() {
        let e = apply(PatchType::Strategic, &json!({}), b"{}", false).unwrap_err();
        assert_eq!(e.code, 415);
    }

    #[test]
    fn json_patch_test_failure_is_invalid() {
        let doc = json!({"metadata": {"resourceVersion": "5"}});
        let body = br#"[{"op":"test","path":"/metadata/resourceVersion","value":"4"}]"#;
        let e = apply(PatchType::Json, &doc, body, true).unwrap_err();
        assert_eq!(e.code, 422);
    }
}
