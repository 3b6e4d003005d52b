//! Pod strategy: what kube-apiserver's `pkg/registry/core/pod` does on create, update and
//! delete (defaults, status reset, spec immutability, graceful deletion), and the kubelet's
//! rule for the `Ready` condition.

use serde_json::{json, Map, Value};

use crate::object::now_rfc3339;
use crate::status::FieldError;

/// Defaults the apiserver fills in, and the status reset of `PrepareForCreate`.
pub fn prepare_for_create(v: &mut Value) {
    let spec = v
        .as_object_mut()
        .expect("pod is an object")
        .entry("spec")
        .or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        let defaults = [
            ("restartPolicy", json!("Always")),
            ("terminationGracePeriodSeconds", json!(30)),
            ("dnsPolicy", json!("ClusterFirst")),
            ("serviceAccountName", json!("default")),
            ("serviceAccount", json!("default")),
            ("securityContext", json!({})),
            ("schedulerName", json!("default-scheduler")),
            ("enableServiceLinks", json!(true)),
            ("priority", json!(0)),
            ("preemptionPolicy", json!("PreemptLowerPriority")),
        ];
        for (k, d) in defaults {
            spec.entry(k).or_insert(d);
        }
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = spec.get_mut(list) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    container_defaults(c);
                }
            }
        }
    }
    let qos = qos_class(v);
    v["status"] = json!({ "phase": "Pending", "qosClass": qos });
}

fn container_defaults(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let tag = image.rsplit('/').next().unwrap_or("");
    let pull = if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
        "IfNotPresent"
    } else {
        "Always"
    };
    c.entry("imagePullPolicy").or_insert(json!(pull));
    c.entry("terminationMessagePath")
        .or_insert(json!("/dev/termination-log"));
    c.entry("terminationMessagePolicy").or_insert(json!("File"));
    c.entry("resources").or_insert(json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
        }
    }
}

/// `Guaranteed` when every container has equal cpu and memory requests and limits,
/// `BestEffort` when none has any, `Burstable` otherwise.
fn qos_class(v: &Value) -> &'static str {
    let containers = v["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let (req, lim) = (&c["resources"]["requests"], &c["resources"]["limits"]);
        if req.as_object().is_some_and(|m| !m.is_empty()) || lim.as_object().is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.get(r);
            let q = req.get(r).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Minimal create validation: a pod needs at least one container with a name and image.
/// Answers the `field.ErrorList` (empty when valid).
pub fn validate_create(v: &Value) -> Vec<FieldError> {
    let containers = v["spec"]["containers"].as_array();
    if containers.is_none_or(|c| c.is_empty()) {
        return vec![("spec.containers".into(), "Required value", String::new())];
    }
    let mut errors = Vec::new();
    for (i, c) in containers.into_iter().flatten().enumerate() {
        for field in ["name", "image"] {
            if c.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                errors.push((format!("spec.containers[{i}].{field}"), "Required value", String::new()));
            }
        }
    }
    errors
}

/// Spec fields an update may change; anything else is forbidden, as in `ValidatePodUpdate`.
pub fn validate_update(old: &Value, new: &Value) -> Vec<FieldError> {
    let mask = |spec: &Value| {
        let mut s = spec.clone();
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = s.get_mut(list) {
                for c in cs.iter_mut() {
                    c["image"] = Value::Null;
                }
            }
        }
        if let Some(m) = s.as_object_mut() {
            for k in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
                "schedulingGates",
            ] {
                m.shift_remove(k);
            }
        }
        s
    };
    if mask(&old["spec"]) == mask(&new["spec"]) {
        return Vec::new();
    }
    vec![(
        "spec".into(),
        "Forbidden",
        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,\
         `spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),\
         `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
            .into(),
    )]
}

/// `CheckGracefulDelete`: the grace period a delete gets.
pub fn grace_period(v: &Value, requested: Option<i64>) -> i64 {
    let mut g = requested
        .or_else(|| v["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(0);
    let node = v["spec"]["nodeName"].as_str().unwrap_or("");
    let phase = v["status"]["phase"].as_str().unwrap_or("");
    if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
        g = 0;
    }
    if g < 0 {
        g = 1;
    }
    g
}

pub fn condition_status<'a>(v: &'a Value, ctype: &str) -> Option<&'a str> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ctype)
        .and_then(|c| c["status"].as_str())
}

/// Sets a condition in `.status.conditions`, keeping `lastTransitionTime` when the status
/// does not change. Answers whether anything changed.
pub fn set_condition(v: &mut Value, ctype: &str, status: bool, reason: Option<&str>) -> bool {
    let status_s = if status { "True" } else { "False" };
    if !v["status"]["conditions"].is_array() {
        v["status"]["conditions"] = json!([]);
    }
    let conds = v["status"]["conditions"]
        .as_array_mut()
        .expect("conditions is an array");
    let now = now_rfc3339();
    match conds.iter_mut().find(|c| c["type"] == ctype) {
        Some(c) if c["status"] == status_s && c.get("reason").and_then(Value::as_str) == reason => false,
        Some(c) => {
            if c["status"] != status_s {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(status_s);
            match reason {
                Some(r) => c["reason"] = json!(r),
                None => {
                    if let Some(m) = c.as_object_mut() {
                        m.shift_remove("reason");
                    }
                }
            }
            true
        }
        None => {
            let mut c = json!({ "type": ctype, "status": status_s, "lastProbeTime": null, "lastTransitionTime": now });
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            conds.push(c);
            true
        }
    }
}

/// The kubelet's `Ready`: `ContainersReady` and every readiness gate's condition True.
/// Answers the value and, when False, the reason the kubelet would give.
pub fn computed_ready(v: &Value) -> (bool, Option<&'static str>) {
    if condition_status(v, "ContainersReady") != Some("True") {
        return (false, Some("ContainersNotReady"));
    }
    let gates = v["spec"]["readinessGates"].as_array().cloned().unwrap_or_default();
    for g in gates {
        let ctype = g["conditionType"].as_str().unwrap_or("");
        if condition_status(v, ctype) != Some("True") {
            return (false, Some("ReadinessGatesNotReady"));
        }
    }
    (true, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_gate() {
        let mut p = json!({"spec": {"readinessGates": [{"conditionType": "sluice.dev/traffic-ready"}]},
                           "status": {}});
        set_condition(&mut p, "ContainersReady", true, None);
        assert_eq!(computed_ready(&p), (false, Some("ReadinessGatesNotReady")));
        set_condition(&mut p, "sluice.dev/traffic-ready", true, None);
        assert_eq!(computed_ready(&p), (true, None));
        set_condition(&mut p, "ContainersReady", false, None);
        assert!(!computed_ready(&p).0);
    }

    #[test]
    fn grace_rules() {
        let scheduled =
            json!({"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
        assert_eq!(grace_period(&scheduled, None), 30);
        assert_eq!(grace_period(&scheduled, Some(0)), 0);
        assert_eq!(grace_period(&scheduled, Some(-5)), 1);
        let unscheduled = json!({"spec": {"terminationGracePeriodSeconds": 30}});
        assert_eq!(grace_period(&unscheduled, None), 0);
    }

    #[test]
    fn qos() {
        let mut p = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        prepare_for_create(&mut p);
        assert_eq!(p["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
    }
}
