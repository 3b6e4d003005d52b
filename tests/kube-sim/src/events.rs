//! `events.k8s.io/v1` is a view of the `core/v1` Event storage, as on a real cluster: an event
//! written through one API is read through the other (kube-rs's recorder writes
//! `events.k8s.io/v1`, `kubectl describe` reads `core/v1`).

use serde_json::{Map, Value};

/// (`core/v1` field, `events.k8s.io/v1` field)
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(v: Value, to_v1: bool) -> Value {
    let Value::Object(m) = v else { return v };
    let mut out = Map::new();
    for (k, val) in m {
        let new_key = RENAMES
            .iter()
            .find(|(core, v1)| if to_v1 { core == &k } else { v1 == &k })
            .map(|(core, v1)| if to_v1 { *v1 } else { *core })
            .unwrap_or(&k)
            .to_string();
        out.insert(new_key, val);
    }
    Value::Object(out)
}

/// A stored `core/v1` Event as `events.k8s.io/v1`, in the shape of that Go type.
pub fn core_to_v1(v: Value) -> Value {
    let mut out = rename(v, true);
    out["apiVersion"] = Value::String("events.k8s.io/v1".into());
    crate::zero::normalize(crate::resources::Flavor::EventsV1, &mut out);
    out
}

/// An `events.k8s.io/v1` Event in the `core/v1` storage format. As the real conversion
/// does, the core `count` is `deprecatedCount` (not the series' count).
pub fn v1_to_core(v: Value) -> Value {
    let mut out = rename(v, false);
    out["apiVersion"] = Value::String("v1".into());
    out
}

/// Field-selector labels of the v1 API in terms of the storage's labels.
pub fn v1_field_to_core(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("regarding.") {
        return format!("involvedObject.{rest}");
    }
    if field == "reportingController" {
        return "reportingComponent".into();
    }
    field.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
                        "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "reason": "R",
                        "reportingController": "sluice.dev/gateway", "reportingInstance": "g-1"});
        let core = v1_to_core(v1.clone());
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hi");
        assert_eq!(core["reportingComponent"], "sluice.dev/gateway");
        let mut want = v1;
        crate::zero::normalize(crate::resources::Flavor::EventsV1, &mut want);
        assert_eq!(want["deprecatedSource"], json!({}));
        assert_eq!(core_to_v1(core), want);
    }
}
