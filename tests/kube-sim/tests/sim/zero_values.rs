//! Go zero values a real kube-apiserver always writes: fields without `omitempty`, structs
//! (which `omitempty` never drops) and `metav1.Time`s (`null` when unset) — on every path an
//! object comes back by, as encoding/json writes the Go types.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::Resource;
use serde_json::{json, Value};

use crate::common::{client, pod, raw, start, within};

fn dynamic<K: Resource<DynamicType = ()>>(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()))
}

fn object(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("object literal")
}

/// A cluster, a client, and the objects of `K` in `default` as dynamic objects.
async fn cluster_with<K: Resource<DynamicType = ()>>(
    name: &str,
) -> (kube_sim::Cluster, kube::Client, Api<DynamicObject>) {
    let c = start(name).await;
    let client = client(&c).await;
    let api = dynamic::<K>(&client, "default");
    (c, client, api)
}

async fn create(api: &Api<DynamicObject>, v: Value) -> DynamicObject {
    api.create(&PostParams::default(), &object(v)).await.expect("created")
}

/// The object `name` as every path answers it: the write that produced it, get, list, and a
/// watch from "0" (its synthetic ADDED).
async fn every_path(api: &Api<DynamicObject>, name: &str, written: DynamicObject) -> Vec<(&'static str, Value)> {
    let got = api.get(name).await.expect("get");
    let listed = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .find(|o| o.metadata.name.as_deref() == Some(name))
        .expect("listed");
    let mut events = api
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .expect("watch")
        .boxed();
    let watched = within("the watch's ADDED", async {
        loop {
            match events.try_next().await.expect("watch event") {
                Some(WatchEvent::Added(o)) if o.metadata.name.as_deref() == Some(name) => return o,
                Some(_) => continue,
                None => panic!("the watch ended before {name} was sent"),
            }
        }
    })
    .await;
    [("write", written), ("get", got), ("list", listed), ("watch", watched)]
        .into_iter()
        .map(|(path, o)| (path, o.data))
        .collect()
}

/// `v` holds every field of `present` with its value, and none of `absent`.
fn assert_fields(path: &str, v: &Value, present: &Value, absent: &[&str]) {
    for (k, want) in present.as_object().expect("an object of expected fields") {
        assert_eq!(v.get(k), Some(want), "{path}: {k} in {v}");
    }
    for k in absent {
        assert!(v.get(*k).is_none(), "{path}: no {k} in {v}");
    }
}

#[tokio::test]
async fn events_carry_go_zero_values_through_both_apis() {
    let (_c, client, core) = cluster_with::<CoreEvent>("zero-events").await;
    let created = create(
        &core,
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
                "involvedObject": {"kind": "Pod", "name": "p", "uid": ""},
                "reason": "", "count": 0, "type": "Normal"}),
    )
    .await;
    // involvedObject, source and reportingComponent/Instance have no omitempty (source is a
    // struct), the times are metav1.Time; reason, count and an empty uid are omitempty.
    let present = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "source": {}, "firstTimestamp": null,
        "lastTimestamp": null, "eventTime": null, "reportingComponent": "", "reportingInstance": "", "type": "Normal"});
    for (path, ev) in every_path(&core, "e1", created).await {
        assert_fields(path, &ev, &present, &["reason", "count"]);
    }
    let updated = core
        .patch(
            "e1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"source": null, "message": "m"})),
        )
        .await
        .expect("patch");
    assert_fields("patch", &updated.data, &present, &["reason", "count"]);

    // The events.k8s.io/v1 view: its own Go type (reportingController and reportingInstance
    // are omitempty there; regarding and deprecatedSource are structs).
    let v1 = dynamic::<EventsV1>(&client, "default");
    let seen = v1.get("e1").await.expect("events.k8s.io get");
    assert_fields(
        "events.k8s.io",
        &seen.data,
        &json!({"regarding": {"kind": "Pod", "name": "p"}, "deprecatedSource": {}, "deprecatedFirstTimestamp": null,
            "deprecatedLastTimestamp": null, "eventTime": null, "note": "m"}),
        &[
            "reportingController",
            "reportingInstance",
            "deprecatedCount",
            "involvedObject",
            "source",
            "message",
        ],
    );
    // Built-in lists do not type their items, events.k8s.io included.
    let (code, _, list) = raw(
        &client,
        "GET",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        None,
        "",
    )
    .await;
    assert_eq!(code, 200);
    let item = &list["items"][0];
    assert!(item.get("kind").is_none() && item.get("apiVersion").is_none(), "{list}");
    assert_eq!(item["deprecatedSource"], json!({}), "{list}");

    // A v1 write stores deprecatedCount as the core count (series.count is not copied).
    let v1_written = v1
        .create(
            &PostParams::default(),
            &object(
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e2"},
                "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "c", "reportingInstance": "c-1",
                "action": "A", "reason": "R", "type": "Normal",
                "series": {"count": 3, "lastObservedTime": "2025-01-01T00:00:01.000000Z"}}),
            ),
        )
        .await
        .expect("v1 create");
    assert_fields(
        "v1 write",
        &v1_written.data,
        &json!({"reportingController": "c", "regarding": {}}),
        &["deprecatedCount"],
    );
    let as_core = core.get("e2").await.expect("core get").data;
    assert_fields(
        "core view of a v1 write",
        &as_core,
        &json!({"reportingComponent": "c", "involvedObject": {},
            "series": {"count": 3, "lastObservedTime": "2025-01-01T00:00:01.000000Z"}}),
        &["count"],
    );
}

#[tokio::test]
async fn leases_and_pods_carry_go_zero_values() {
    let (_c, client, leases) = cluster_with::<Lease>("zero-lease").await;
    let created = create(
        &leases,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}}),
    )
    .await;
    for (path, l) in every_path(&leases, "l", created).await {
        assert_fields(path, &l, &json!({"spec": {}}), &[]);
    }
    // holderIdentity is a pointer: an empty string is kept, a null dropped.
    let replaced = leases
        .replace(
            "l",
            &PostParams::default(),
            &object(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
                "spec": {"holderIdentity": "", "leaseDurationSeconds": null}}),
            ),
        )
        .await
        .expect("replace");
    assert_eq!(replaced.data["spec"], json!({"holderIdentity": ""}));

    // The watch-list bookmark carries an empty Lease as Go writes one.
    let (code, _, bookmark) = raw(
        &client,
        "GET",
        "/apis/coordination.k8s.io/v1/namespaces/kube-public/leases?watch=1&sendInitialEvents=true\
         &allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
        None,
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark}");
    assert_eq!(bookmark["object"]["spec"], json!({}), "{bookmark}");

    // Pod conditions always carry both times; container statuses their states and counters.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("p")).await.expect("pod");
    let raw_pods = dynamic::<Pod>(&client, "default");
    let status = json!({"status": {
        "conditions": [{"type": "example.com/gate", "status": "True"}],
        "containerStatuses": [{"name": "app", "ready": true, "image": "registry.local/app:1.0"}]}});
    let patched = raw_pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    for (path, p) in [("patch", patched.data), ("get", raw_pods.get("p").await.unwrap().data)] {
        assert_eq!(
            p["status"]["conditions"][0],
            json!({"type": "example.com/gate", "status": "True", "lastProbeTime": null, "lastTransitionTime": null}),
            "{path}"
        );
        let cs = &p["status"]["containerStatuses"][0];
        assert_fields(
            path,
            cs,
            &json!({"state": {}, "lastState": {}, "ready": true, "restartCount": 0, "imageID": ""}),
            &[],
        );
    }
}
