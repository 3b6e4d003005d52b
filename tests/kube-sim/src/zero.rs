//! The shape encoding/json gives the built-in Go types on the way out of a real
//! kube-apiserver: a field without `omitempty` is always written (its zero value when unset),
//! a struct is always written (`omitempty` never drops a struct), a zero `metav1.Time` is
//! `null`, and an empty `omitempty` value is dropped.
//!
//! Objects are put in that shape when they are stored (and the `events.k8s.io/v1` view when
//! it is converted), so every read path serves the stored bytes as they are. Only the fields
//! the simulator's objects carry are described; anything else is kept as written.

use serde_json::{Map, Value};

use crate::object::normalize_meta;
use crate::resources::Flavor;

/// A Go type's fields, grouped by how encoding/json writes them.
type Fields = &'static [(&'static [&'static str], F)];

/// How encoding/json writes a field of a Go type.
#[derive(Clone, Copy)]
enum F {
    /// `omitempty` on a string, number, bool, slice or map: dropped when null or empty.
    Omit,
    /// `omitempty` on a pointer: dropped when null only (a pointer to `""` or `0` is written).
    Ptr,
    /// A string, integer or bool without `omitempty`: its zero value when unset.
    Str,
    Int,
    Bool,
    /// A `metav1.Time` / `MicroTime`: `null` when unset.
    Time,
    /// A struct: `{}` when unset, its own fields as listed.
    Struct(Fields),
    /// A pointer to a struct (`omitempty`): dropped when null, its fields as listed otherwise.
    PtrStruct(Fields),
    /// A slice of structs, each item's fields as listed. With `omitempty` (`true`) an empty or
    /// null slice is dropped; without, an unset one is `null`.
    Items(Fields, bool),
}

const OBJECT_REFERENCE: Fields = &[(
    &[
        "kind",
        "namespace",
        "name",
        "uid",
        "apiVersion",
        "resourceVersion",
        "fieldPath",
    ],
    F::Omit,
)];

const EVENT_SOURCE: Fields = &[(&["component", "host"], F::Omit)];

/// `core/v1` Event (`k8s.io/api/core/v1/types.go`).
const CORE_EVENT: Fields = &[
    (&["involvedObject"], F::Struct(OBJECT_REFERENCE)),
    (&["source"], F::Struct(EVENT_SOURCE)),
    (&["reason", "message", "count", "type", "action"], F::Omit),
    (&["firstTimestamp", "lastTimestamp", "eventTime"], F::Time),
    (
        &["series"],
        F::PtrStruct(&[(&["count"], F::Omit), (&["lastObservedTime"], F::Time)]),
    ),
    (&["related"], F::PtrStruct(OBJECT_REFERENCE)),
    (&["reportingComponent", "reportingInstance"], F::Str),
];

/// `events.k8s.io/v1` Event (`k8s.io/api/events/v1/types.go`).
const EVENTS_V1_EVENT: Fields = &[
    (&["regarding"], F::Struct(OBJECT_REFERENCE)),
    (&["deprecatedSource"], F::Struct(EVENT_SOURCE)),
    (
        &[
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "note",
            "type",
            "deprecatedCount",
        ],
        F::Omit,
    ),
    (
        &["eventTime", "deprecatedFirstTimestamp", "deprecatedLastTimestamp"],
        F::Time,
    ),
    (
        &["series"],
        F::PtrStruct(&[(&["count"], F::Int), (&["lastObservedTime"], F::Time)]),
    ),
    (&["related"], F::PtrStruct(OBJECT_REFERENCE)),
];

/// `coordination.k8s.io/v1` Lease: every spec field is a pointer.
const LEASE: Fields = &[(
    &["spec"],
    F::Struct(&[(
        &[
            "holderIdentity",
            "leaseDurationSeconds",
            "acquireTime",
            "renewTime",
            "leaseTransitions",
            "strategy",
            "preferredHolder",
        ],
        F::Ptr,
    )]),
)];

const CONTAINER: Fields = &[
    (&["name"], F::Str),
    (
        &["resources"],
        F::Struct(&[(&["limits", "requests", "claims"], F::Omit)]),
    ),
];

const CONTAINER_STATUS: Fields = &[
    (&["name", "image", "imageID"], F::Str),
    (&["state", "lastState"], F::Struct(&[])),
    (&["ready"], F::Bool),
    (&["restartCount"], F::Int),
];

const POD: Fields = &[
    (
        &["spec"],
        F::Struct(&[
            (&["containers"], F::Items(CONTAINER, false)),
            (&["initContainers"], F::Items(CONTAINER, true)),
        ]),
    ),
    (
        &["status"],
        F::Struct(&[
            (
                &["conditions"],
                F::Items(
                    &[
                        (&["type", "status"], F::Str),
                        (&["lastProbeTime", "lastTransitionTime"], F::Time),
                    ],
                    true,
                ),
            ),
            (
                &[
                    "initContainerStatuses",
                    "containerStatuses",
                    "ephemeralContainerStatuses",
                ],
                F::Items(CONTAINER_STATUS, true),
            ),
        ]),
    ),
];

const NAMESPACE: Fields = &[
    (&["spec"], F::Struct(&[(&["finalizers"], F::Omit)])),
    (
        &["status"],
        F::Struct(&[
            (&["phase"], F::Omit),
            (
                &["conditions"],
                F::Items(
                    &[(&["type", "status"], F::Str), (&["lastTransitionTime"], F::Time)],
                    true,
                ),
            ),
        ]),
    ),
];

/// Puts `v` (an object of `flavor`, in that flavor's own format) in the shape a real server
/// writes it: `ObjectMeta`'s rules, then the type's.
pub fn normalize(flavor: Flavor, v: &mut Value) {
    normalize_meta(v);
    let Some(m) = v.as_object_mut() else { return };
    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        // ObjectMeta.CreationTimestamp is a metav1.Time.
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
    let fields = match flavor {
        Flavor::Pod => POD,
        Flavor::Namespace => NAMESPACE,
        Flavor::CoreEvent => CORE_EVENT,
        Flavor::EventsV1 => EVENTS_V1_EVENT,
        Flavor::Lease => LEASE,
        // Custom resources are unstructured; CRDs are written whole by `crd::prepare`.
        Flavor::Crd | Flavor::Custom | Flavor::Webhook | Flavor::Pdb => &[],
    };
    apply(fields, m);
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn apply(fields: Fields, m: &mut Map<String, Value>) {
    for (name, f) in fields.iter().flat_map(|(names, f)| names.iter().map(move |n| (*n, *f))) {
        let zero = match f {
            F::Str => Some(Value::String(String::new())),
            F::Int => Some(Value::from(0)),
            F::Bool => Some(Value::Bool(false)),
            F::Time => Some(Value::Null),
            F::Struct(_) => Some(Value::Object(Map::new())),
            F::Items(_, false) => Some(Value::Null),
            F::Omit | F::Ptr | F::PtrStruct(_) | F::Items(_, true) => None,
        };
        let drop = match (f, m.get(name)) {
            (F::Omit, Some(v)) | (F::Items(_, true), Some(v)) => is_empty(v),
            (F::Ptr | F::PtrStruct(_), Some(v)) => v.is_null(),
            _ => false,
        };
        if drop {
            m.shift_remove(name);
            continue;
        }
        if let Some(zero) = zero {
            let slot = m.entry(name).or_insert(Value::Null);
            if slot.is_null() {
                *slot = zero;
            }
        }
        match (f, m.get_mut(name)) {
            (F::Struct(sub) | F::PtrStruct(sub), Some(Value::Object(o))) => apply(sub, o),
            (F::Items(sub, _), Some(Value::Array(items))) => {
                for o in items.iter_mut().filter_map(Value::as_object_mut) {
                    apply(sub, o);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn core_event_zero_values() {
        let mut v = json!({"metadata": {"name": "e", "labels": {}}, "involvedObject": {"kind": "Pod", "uid": ""},
                           "reason": "", "count": 0, "series": {"count": 2}, "related": null});
        normalize(Flavor::CoreEvent, &mut v);
        assert_eq!(
            v,
            json!({"metadata": {"name": "e", "creationTimestamp": null}, "involvedObject": {"kind": "Pod"},
                   "series": {"count": 2, "lastObservedTime": null}, "source": {}, "firstTimestamp": null,
                   "lastTimestamp": null, "eventTime": null, "reportingComponent": "", "reportingInstance": ""})
        );
    }

    #[test]
    fn empty_objects_as_go_writes_them() {
        let mut pod = json!({"metadata": {}});
        normalize(Flavor::Pod, &mut pod);
        assert_eq!(
            pod,
            json!({"metadata": {"creationTimestamp": null}, "spec": {"containers": null}, "status": {}})
        );
        let mut v1 = json!({"metadata": {}, "series": {"lastObservedTime": "t"}, "reportingController": ""});
        normalize(Flavor::EventsV1, &mut v1);
        assert_eq!(
            v1,
            json!({"metadata": {"creationTimestamp": null}, "series": {"lastObservedTime": "t", "count": 0},
                   "eventTime": null, "regarding": {}, "deprecatedSource": {}, "deprecatedFirstTimestamp": null,
                   "deprecatedLastTimestamp": null})
        );
        let mut ns = json!({"metadata": {}, "spec": {"finalizers": []}, "status": {"conditions": [{"type": "X"}]}});
        normalize(Flavor::Namespace, &mut ns);
        assert_eq!(
            ns,
            json!({"metadata": {"creationTimestamp": null}, "spec": {},
                   "status": {"conditions": [{"type": "X", "status": "", "lastTransitionTime": null}]}})
        );
    }
}
