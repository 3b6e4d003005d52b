//! CRUD, errors, optimistic concurrency, selectors, pagination, patches, the status
//! subresource and deletion — each through kube-rs against the simulator.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{
    client, default_pods, fails, held, marked, named, pod, pod_on_node, preconditions, raw, start, summary,
    terminating_namespace,
};

#[tokio::test]
async fn discovery_and_version() {
    let c = start("disc").await;
    let client = client(&c).await;
    let v = client.apiserver_version().await.expect("version");
    assert_eq!(v.major, "1");
    let d = kube::Discovery::new(client.clone()).run().await.expect("discovery");
    let groups: Vec<String> = d.groups().map(|g| g.name().to_string()).collect();
    for g in ["", "events.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io"] {
        assert!(groups.contains(&g.to_string()), "group {g:?} missing from {groups:?}");
    }
    let core = d.get("").expect("core group");
    let kinds: Vec<String> = core
        .recommended_resources()
        .iter()
        .map(|(r, _)| r.kind.clone())
        .collect();
    assert!(
        kinds.contains(&"Pod".to_string()) && kinds.contains(&"Namespace".to_string()),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn create_get_replace_delete_with_real_errors() {
    let c = start("crud").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let created = pods.create(&PostParams::default(), &pod("p1")).await.expect("create");
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36), "uid {:?}", meta.uid);
    assert!(meta.creation_timestamp.is_some());
    let rv1: u64 = meta
        .resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("numeric rv");
    assert_eq!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert_eq!(
        created.spec.as_ref().and_then(|s| s.restart_policy.as_deref()),
        Some("Always")
    );

    let e = fails(pods.create(&PostParams::default(), &pod("p1"))).await;
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, r#"pods "p1" already exists"#);

    let e = fails(pods.get("nope")).await;
    assert_eq!(summary(&e), (404, "NotFound", r#"pods "nope" not found"#));
    assert_eq!(e.details.as_ref().map(|d| d.kind.as_str()), Some("pods"));

    let missing_ns: Api<Pod> = Api::namespaced(client(&c).await, "ghost");
    let e = fails(missing_ns.create(&PostParams::default(), &pod("p"))).await;
    assert_eq!((e.code, e.message.as_str()), (404, r#"namespaces "ghost" not found"#));

    let mut bad = pod("Bad_Name");
    bad.metadata.name = Some("Bad_Name".into());
    let e = fails(pods.create(&PostParams::default(), &bad)).await;
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .starts_with(r#"Pod "Bad_Name" is invalid: metadata.name: Invalid value"#),
        "{}",
        e.message
    );

    // generateName
    let mut g = pod("");
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = pods
        .create(&PostParams::default(), &g)
        .await
        .expect("generateName create");
    assert!(made
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("gen-") && n.len() == 9));

    // Replace: labels change, rv moves on; the cluster-wide counter is shared by all kinds.
    let mut cur = pods.get("p1").await.expect("get");
    cur.metadata
        .labels
        .get_or_insert_default()
        .insert("tier".into(), "front".into());
    let replaced = pods.replace("p1", &PostParams::default(), &cur).await.expect("replace");
    let rv2: u64 = replaced.metadata.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(rv2 > rv1);

    // A replace that changes nothing is not a write.
    let again = pods
        .replace("p1", &PostParams::default(), &replaced)
        .await
        .expect("no-op replace");
    assert_eq!(again.metadata.resource_version, replaced.metadata.resource_version);

    // Stale resourceVersion → 409 Conflict, for replace and for patch.
    let e = fails(pods.replace("p1", &PostParams::default(), &cur)).await;
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        r#"Operation cannot be fulfilled on pods "p1": the object has been modified; please apply your changes to the latest version and try again"#
    );
    let stale = json!({"metadata": {"resourceVersion": rv1.to_string(), "labels": {"x": "y"}}});
    let e = fails(pods.patch("p1", &PatchParams::default(), &Patch::Merge(&stale))).await;
    assert_eq!(e.code, 409);

    // Spec is immutable but for the image.
    let mut img = pods.get("p1").await.unwrap();
    img.spec.as_mut().unwrap().containers[0].image = Some("registry.local/app:2.0".into());
    pods.replace("p1", &PostParams::default(), &img)
        .await
        .expect("image update is allowed");
    img = pods.get("p1").await.unwrap();
    img.spec.as_mut().unwrap().containers[0].name = "renamed".into();
    let e = fails(pods.replace("p1", &PostParams::default(), &img)).await;
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec: Forbidden: pod updates may not change fields"),
        "{}",
        e.message
    );

    // An unscheduled pod without finalizers is removed at once.
    let gone = pods.delete("p1", &DeleteParams::default()).await.expect("delete");
    assert!(gone.is_left(), "pods return the deleted object");
    assert!(pods.get_opt("p1").await.unwrap().is_none());
}

#[tokio::test]
async fn label_and_field_selectors() {
    let c = start("sel").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    for (name, app, node) in [
        ("a", "web", "n1"),
        ("b", "web", "n2"),
        ("c", "db", "n1"),
        ("d", "cache", ""),
    ] {
        let mut p = if node.is_empty() {
            pod(name)
        } else {
            pod_on_node(name, node)
        };
        p.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        pods.create(&PostParams::default(), &p).await.expect("create");
    }
    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items.into_iter().map(|p| p.metadata.name.unwrap()).collect()
    };
    let cases: &[(&str, &str, &[&str])] = &[
        ("app=web", "", &["a", "b"]),
        ("app!=web", "", &["c", "d"]),
        ("app in (db,cache)", "", &["c", "d"]),
        ("app notin (web)", "", &["c", "d"]),
        ("app,app!=db", "", &["a", "b", "d"]),
        ("!app", "", &[]),
        ("", "spec.nodeName=n1", &["a", "c"]),
        ("", "spec.nodeName=", &["d"]),
        ("app=web", "spec.nodeName!=n1", &["b"]),
        ("", "metadata.name=b", &["b"]),
        ("", "status.phase=Pending", &["a", "b", "c", "d"]),
    ];
    for (labels, fields, want) in cases {
        let mut lp = ListParams::default();
        if !labels.is_empty() {
            lp = lp.labels(labels);
        }
        if !fields.is_empty() {
            lp = lp.fields(fields);
        }
        let got = names(
            pods.list(&lp)
                .await
                .unwrap_or_else(|e| panic!("{labels} / {fields}: {e}")),
        );
        assert_eq!(got, want.to_vec(), "labels {labels:?} fields {fields:?}");
    }
    let all: Api<Pod> = Api::all(client(&c).await);
    assert_eq!(
        all.list(&ListParams::default().fields("metadata.namespace=default"))
            .await
            .unwrap()
            .items
            .len(),
        4
    );

    let e = fails(pods.list(&ListParams::default().fields("spec.bogus=1"))).await;
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: spec.bogus")
    );
    let e = fails(pods.list(&ListParams::default().labels("app in ("))).await;
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn pagination_is_a_consistent_snapshot() {
    let c = start("page").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    for i in 0..25 {
        pods.create(&PostParams::default(), &pod(&format!("p{i:02}")))
            .await
            .expect("create");
    }
    let first = pods.list(&ListParams::default().limit(10)).await.expect("page 1");
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.metadata.remaining_item_count, Some(15));
    let token = first.metadata.continue_.clone().expect("continue token");
    // Written after the first page: not part of this list.
    pods.create(&PostParams::default(), &pod("p99"))
        .await
        .expect("create late");
    pods.delete("p24", &DeleteParams::default()).await.expect("delete late");
    let mut seen: Vec<String> = first.items.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    let mut next = Some(token);
    while let Some(t) = next {
        let page = pods
            .list(&ListParams::default().limit(10).continue_token(&t))
            .await
            .expect("next page");
        assert_eq!(
            page.metadata.resource_version, first.metadata.resource_version,
            "pages share the first page's rv"
        );
        seen.extend(page.items.iter().map(|p| p.metadata.name.clone().unwrap()));
        next = page.metadata.continue_.filter(|c| !c.is_empty());
    }
    let want: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, want);

    let e = fails(pods.list(&ListParams::default().continue_token("not-a-token"))).await;
    assert_eq!(e.code, 400);
}

/// As the etcd3 store: a page that fills up while more keys remain carries a continue token
/// even if no remaining object matches (the next page is then empty), and the token is
/// unpadded URL-safe base64 with the start key relative to the namespace.
#[tokio::test]
async fn filtered_pages_continue_while_keys_remain() {
    use base64::Engine as _;
    let c = start("page-filtered").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db"), ("d", "db")] {
        let mut p = pod(name);
        p.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        pods.create(&PostParams::default(), &p).await.expect("create");
    }
    let lp = ListParams::default().labels("app=web").limit(2);
    let first = pods.list(&lp).await.expect("page 1");
    assert_eq!(first.items.len(), 2);
    assert_eq!(
        first.metadata.remaining_item_count, None,
        "no count for a filtered list"
    );
    let token = first.metadata.continue_.clone().expect("keys c and d remain");
    assert!(!token.contains('='), "unpadded: {token}");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&token)
        .expect("base64");
    let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(v["start"], "b\u{0}", "relative to the namespace: {v}");
    let next = pods.list(&lp.clone().continue_token(&token)).await.expect("page 2");
    assert!(next.items.is_empty());
    assert_eq!(next.metadata.continue_.as_deref().unwrap_or(""), "");

    // Filled on the last key: nothing remains, no token.
    let all = pods.list(&ListParams::default().limit(4)).await.expect("all");
    assert_eq!(
        (all.items.len(), all.metadata.continue_.as_deref().unwrap_or("")),
        (4, "")
    );
}

#[tokio::test]
async fn patches_json_merge_strategic() {
    let c = start("patch").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let p = pods.create(&PostParams::default(), &pod("p")).await.unwrap();
    let rv = p.metadata.resource_version.clone().unwrap();
    let pp = PatchParams::default();

    // JSON patch guarded by a test op: applies when the guard holds...
    let ok: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["sluice.dev/slb"]}
    ]))
    .unwrap();
    let patched = pods
        .patch("p", &pp, &Patch::Json::<()>(ok.clone()))
        .await
        .expect("guarded patch");
    assert_eq!(patched.metadata.finalizers, Some(vec!["sluice.dev/slb".to_string()]));
    // ...and is refused, as kube-apiserver refuses it, when it does not.
    let e = fails(pods.patch("p", &pp, &Patch::Json::<()>(ok))).await;
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "the server rejected our request due to an error in our request"
    );

    // Strategic merge: finalizers are a set, not replaced (new items first, as mergeSlice
    // orders them).
    let smp = json!({"metadata": {"finalizers": ["sluice.dev/dns"]}});
    let p2 = pods.patch("p", &pp, &Patch::Strategic(&smp)).await.expect("strategic");
    assert_eq!(
        p2.metadata.finalizers,
        Some(vec!["sluice.dev/dns".to_string(), "sluice.dev/slb".to_string()])
    );
    let del = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["sluice.dev/slb"]}});
    let p3 = pods
        .patch("p", &pp, &Patch::Strategic(&del))
        .await
        .expect("delete from list");
    assert_eq!(p3.metadata.finalizers, Some(vec!["sluice.dev/dns".to_string()]));

    // Merge patch replaces lists wholesale.
    let mp = json!({"metadata": {"finalizers": ["only"], "annotations": {"a": "1"}}});
    let p4 = pods.patch("p", &pp, &Patch::Merge(&mp)).await.expect("merge");
    assert_eq!(p4.metadata.finalizers, Some(vec!["only".to_string()]));

    // Removing the last finalizer leaves no `finalizers: []` behind (Go's omitempty).
    let rm: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers/0"}])).unwrap();
    let p5 = pods
        .patch("p", &pp, &Patch::Json::<()>(rm))
        .await
        .expect("remove last finalizer");
    assert_eq!(p5.metadata.finalizers, None);
    let raw = pods.get("p").await.unwrap();
    assert!(raw.metadata.finalizers.is_none());

    // Server-side apply is not implemented: a clear 415, never a silent wrong answer.
    let e = fails(pods.patch("p", &PatchParams::apply("test"), &Patch::Apply(&json!({})))).await;
    assert_eq!(e.code, 415);
    assert!(e.message.contains("not implemented by kube-sim"), "{}", e.message);
}

/// The finalizers of pod `name` after a strategic merge patch of its metadata.
async fn finalizers_after(pods: &Api<Pod>, name: &str, metadata: serde_json::Value) -> Vec<String> {
    let patch = json!({ "metadata": metadata });
    pods.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("strategic merge patch")
        .metadata
        .finalizers
        .unwrap_or_default()
}

#[tokio::test]
async fn strategic_merge_orders_finalizers_as_merge_slice_does() {
    let c = start("smp-order").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let set = |pods: Api<Pod>, list: &'static [&'static str]| async move {
        // A merge patch replaces the list, to start each case from a known order.
        let mp = json!({"metadata": {"finalizers": list}});
        pods.patch("p", &PatchParams::default(), &Patch::Merge(&mp))
            .await
            .expect("merge patch");
    };
    pods.create(&PostParams::default(), &pod("p")).await.unwrap();

    // The patch's new items first, then the server's ("x" before "a", "b").
    set(pods.clone(), &["a", "b"]).await;
    assert_eq!(
        finalizers_after(&pods, "p", json!({"finalizers": ["x"]})).await,
        ["x", "a", "b"]
    );
    // Several new items keep the patch's order.
    set(pods.clone(), &["a", "b"]).await;
    assert_eq!(
        finalizers_after(&pods, "p", json!({"finalizers": ["y", "x"]})).await,
        ["y", "x", "a", "b"]
    );
    // Items already present that the patch repeats are placed in the patch's order; a
    // server-only item goes before a patch item only when it comes first in the live list.
    set(pods.clone(), &["a", "b", "c"]).await;
    assert_eq!(
        finalizers_after(&pods, "p", json!({"finalizers": ["c", "a"]})).await,
        ["b", "c", "a"]
    );
    set(pods.clone(), &["a", "b"]).await;
    assert_eq!(
        finalizers_after(&pods, "p", json!({"finalizers": ["b", "x"]})).await,
        ["a", "b", "x"]
    );
    set(pods.clone(), &["a", "b"]).await;
    assert_eq!(
        finalizers_after(&pods, "p", json!({"finalizers": ["a"]})).await,
        ["a", "b"]
    );
    // Nothing new and nothing moved: no write at all.
    let before = pods.get("p").await.unwrap().metadata.resource_version;
    assert_eq!(
        finalizers_after(&pods, "p", json!({"finalizers": ["a", "b"]})).await,
        ["a", "b"]
    );
    assert_eq!(pods.get("p").await.unwrap().metadata.resource_version, before);

    // $setElementOrder (what kubectl sends) takes precedence over the patch's order.
    set(pods.clone(), &["a", "b"]).await;
    assert_eq!(
        finalizers_after(
            &pods,
            "p",
            json!({"$setElementOrder/finalizers": ["a", "x", "b"], "finalizers": ["x"]})
        )
        .await,
        ["a", "x", "b"]
    );
    // A patch list contradicting the directive is refused with the apimachinery error.
    let bad = json!({"metadata": {"$setElementOrder/finalizers": ["a", "x"], "finalizers": ["x", "a"]}});
    let e = fails(pods.patch("p", &PatchParams::default(), &Patch::Strategic(&bad))).await;
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (
            500,
            "",
            "The order in patch list:\n[x a]\n doesn't match $setElementOrder list:\n[a x]\n"
        )
    );

    // The same order through /status, whose strategy keeps metadata changes.
    set(pods.clone(), &["a", "b"]).await;
    let st = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(&json!({"metadata": {"finalizers": ["x"]}})),
        )
        .await
        .unwrap();
    assert_eq!(st.metadata.finalizers.unwrap(), ["x", "a", "b"]);
    // And on a namespace (every built-in resource shares ObjectMeta's patch strategy).
    let nss: Api<Namespace> = Api::all(client(&c).await);
    let mut ns: Namespace = named("ordered");
    ns.metadata.finalizers = Some(vec!["a".into(), "b".into()]);
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let patched = nss
        .patch(
            "ordered",
            &PatchParams::default(),
            &Patch::Strategic(&json!({"metadata": {"finalizers": ["x"]}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.finalizers.unwrap(), ["x", "a", "b"]);
}

#[tokio::test]
async fn status_subresource_rules() {
    let c = start("status").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    pods.create(&PostParams::default(), &pod("p")).await.unwrap();
    let pp = PatchParams::default();

    // Status written through the main resource is ignored.
    let via_main = json!({"metadata": {"labels": {"l": "1"}}, "status": {"phase": "Running"}});
    let p = pods.patch("p", &pp, &Patch::Merge(&via_main)).await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(p.metadata.labels.unwrap().get("l").map(String::as_str), Some("1"));

    // /status writes status and metadata (podStatusStrategy resets only spec,
    // deletionTimestamp and ownerReferences): conditions merge by type, labels apply.
    let s1 = json!({"status": {"conditions": [{"type": "sluice.dev/traffic-ready", "status": "False"}]}});
    pods.patch_status("p", &pp, &Patch::Strategic(&s1)).await.unwrap();
    let s2 = json!({"metadata": {"labels": {"l": "2"}, "annotations": {"a": "1"},
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o",
                                                      "uid": "00000000-0000-0000-0000-000000000001"}]},
                    "spec": {"activeDeadlineSeconds": 5},
                    "status": {"conditions": [{"type": "Other", "status": "True"}]}});
    let p = pods.patch_status("p", &pp, &Patch::Strategic(&s2)).await.unwrap();
    let types: Vec<String> = p
        .status
        .clone()
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, vec!["sluice.dev/traffic-ready", "Other"]);
    assert_eq!(p.metadata.labels.unwrap().get("l").map(String::as_str), Some("2"));
    assert_eq!(p.metadata.annotations.unwrap().get("a").map(String::as_str), Some("1"));
    assert_eq!(p.metadata.owner_references, None, "ownerReferences are reset");
    assert_eq!(p.spec.unwrap().active_deadline_seconds, None, "spec is reset");
    // A finalizer added through /status is kept too.
    let f = json!({"metadata": {"finalizers": ["example.com/f"]}});
    let p = pods.patch_status("p", &pp, &Patch::Merge(&f)).await.unwrap();
    assert_eq!(p.metadata.finalizers, Some(vec!["example.com/f".to_string()]));

    // replace_status with a stale rv conflicts like any write.
    let mut stale = pods.get("p").await.unwrap();
    stale.metadata.resource_version = Some("1".into());
    let e = fails(pods.replace_status("p", &PostParams::default(), &stale)).await;
    assert_eq!(e.code, 409);
}

#[tokio::test]
async fn deletion_with_finalizers_and_grace() {
    let c = start("del").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let mut p = pod_on_node("held", "node-1");
    p.metadata.finalizers = Some(vec!["sluice.dev/slb".into()]);
    pods.create(&PostParams::default(), &p).await.unwrap();

    let d = pods.delete("held", &DeleteParams::default()).await.expect("delete");
    let marked = d.left().expect("object returned while finalizers hold it");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.deletion_grace_period_seconds,
        Some(30),
        "graceful delete of a scheduled pod"
    );

    // No new finalizer may be added while deleting.
    let add = json!({"metadata": {"finalizers": ["sluice.dev/slb", "sluice.dev/dns"]}});
    let e = fails(pods.patch("held", &PatchParams::default(), &Patch::Merge(&add))).await;
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        r#"Pod "held" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"sluice.dev/dns"}"#
    );

    // Force (grace 0) with the finalizer still there: stays.
    pods.delete("held", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let still = pods.get("held").await.expect("finalizer holds the pod");
    assert_eq!(still.metadata.deletion_grace_period_seconds, Some(0));
    // Removing the last finalizer deletes it.
    let rm = json!({"metadata": {"finalizers": null}});
    pods.patch("held", &PatchParams::default(), &Patch::Merge(&rm))
        .await
        .unwrap();
    assert!(pods.get_opt("held").await.unwrap().is_none());

    // Graceful pod with no finalizers: stays until deleted with grace 0 (by the kubelet).
    pods.create(&PostParams::default(), &pod_on_node("graceful", "node-1"))
        .await
        .unwrap();
    pods.delete("graceful", &DeleteParams::default()).await.unwrap();
    assert!(pods
        .get("graceful")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());
    pods.delete("graceful", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(pods.get_opt("graceful").await.unwrap().is_none());

    // Preconditions.
    pods.create(&PostParams::default(), &pod("pre")).await.unwrap();
    let e = fails(pods.delete("pre", &preconditions(Some("wrong"), None))).await;
    assert_eq!(e.code, 409);
    assert!(
        e.message
            .contains("the UID in the precondition (wrong) does not match the UID in record"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn namespace_termination_empties_then_removes() {
    let c = start("ns").await;
    let (nss, pods) = terminating_namespace(&client(&c).await, "team").await;
    let ns = nss.get("team").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let e = fails(pods.create(&PostParams::default(), &pod("late"))).await;
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(e
        .message
        .ends_with("unable to create new content in namespace team because it is being terminated"));
    crate::common::within("the pod to be marked deleted", async {
        while pods.get("held").await.unwrap().metadata.deletion_timestamp.is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        nss.get_opt("team").await.unwrap().is_some(),
        "a finalizer inside holds the namespace"
    );
    pods.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    crate::common::within("the namespace to go", async {
        while nss.get_opt("team").await.unwrap().is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn unimplemented_and_unknown_paths_answer_clearly() {
    let c = start("unknown").await;
    let client = client(&c).await;
    let req = |method: &str, path: &str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .body(Vec::new())
            .unwrap()
    };
    let e =
        fails(client.request::<serde_json::Value>(req("GET", "/apis/apps/v1/namespaces/default/deployments"))).await;
    assert_eq!(e.code, 404);
    let e = fails(client.request::<serde_json::Value>(req("POST", "/api/v1/namespaces/default/pods/p"))).await;
    assert_eq!(e.code, 405);
    let e = fails(client.request::<serde_json::Value>(req("GET", "/api/v1/namespaces/default/pods/p/exec"))).await;
    assert_eq!(e.code, 404);
    let mut wrong_ct = http::Request::builder()
        .method("POST")
        .uri("/api/v1/namespaces/default/pods")
        .header("content-type", "application/yaml")
        .body(b"metadata: {name: x}".to_vec())
        .unwrap();
    wrong_ct.headers_mut();
    let e = fails(client.request::<serde_json::Value>(wrong_ct)).await;
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
}

#[tokio::test]
async fn metadata_only_reads_and_not_acceptable() {
    let c = start("meta").await;
    let client = client(&c).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("m")).await.unwrap();
    let meta = pods.get_metadata("m").await.expect("PartialObjectMetadata get");
    assert_eq!(
        meta.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(meta.metadata.name.as_deref(), Some("m"));
    let list = pods
        .list_metadata(&ListParams::default())
        .await
        .expect("PartialObjectMetadataList");
    assert_eq!(list.items.len(), 1);
    let raw = http::Request::builder()
        .uri("/api/v1/namespaces/default/pods")
        .header(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .body(Vec::new())
        .unwrap();
    let v = client.request::<serde_json::Value>(raw).await.unwrap();
    assert_eq!(v["kind"], "PartialObjectMetadataList");
    assert_eq!(v["items"][0]["kind"], "PartialObjectMetadata");
    assert!(v["items"][0].get("spec").is_none(), "metadata only");

    let table = http::Request::builder()
        .uri("/api/v1/namespaces/default/pods")
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let e = fails(client.request::<serde_json::Value>(table)).await;
    assert_eq!((e.code, e.reason.as_str()), (406, "NotAcceptable"));
    // kubectl's Accept falls back to plain JSON, which is served.
    let kubectl = http::Request::builder()
        .uri("/api/v1/namespaces/default/pods")
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let v = client.request::<serde_json::Value>(kubectl).await.expect("fallback");
    assert_eq!(v["kind"], "PodList");
}

const NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn name_label(ns: &Namespace) -> Option<String> {
    ns.metadata.labels.as_ref().and_then(|l| l.get(NAME_LABEL).cloned())
}

#[tokio::test]
async fn namespaces_carry_their_name_label_and_terminate_as_upstream() {
    let c = start("ns-label").await;
    let nss: Api<Namespace> = Api::all(client(&c).await);
    let pp = PostParams::default();
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert_eq!(name_label(&nss.get(n).await.unwrap()).as_deref(), Some(n));
    }
    let spoofed: Namespace = serde_json::from_value(json!({"metadata": {"name": "team",
        "labels": {NAME_LABEL: "spoof", "a": "1"}}, "spec": {"finalizers": ["example.com/x"]}}))
    .unwrap();
    let created = nss.create(&pp, &spoofed).await.unwrap();
    assert_eq!(name_label(&created).as_deref(), Some("team"));
    assert_eq!(
        created.spec.unwrap().finalizers,
        Some(vec!["example.com/x".to_string(), "kubernetes".to_string()]),
        "PrepareForCreate appends the kubernetes finalizer"
    );
    let generated = nss
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(name_label(&generated), generated.metadata.name);

    // Forced back on update and patch.
    let mut cur = nss.get("team").await.unwrap();
    cur.metadata.labels.as_mut().unwrap().remove(NAME_LABEL);
    assert_eq!(
        name_label(&nss.replace("team", &pp, &cur).await.unwrap()).as_deref(),
        Some("team")
    );
    let patched = nss
        .patch(
            "team",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {NAME_LABEL: "other"}}})),
        )
        .await
        .unwrap();
    assert_eq!(name_label(&patched).as_deref(), Some("team"));
    let selected = nss
        .list(&ListParams::default().labels(&format!("{NAME_LABEL}=team")))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);

    // The namespace REST has no DeleteCollection.
    let e = fails(nss.delete_collection(&DeleteParams::default(), &ListParams::default())).await;
    assert_eq!(
        summary(&e),
        (
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource"
        )
    );
    assert!(nss.get_opt("default").await.unwrap().is_some());

    // Delete marks it: deletionTimestamp and phase Terminating, nothing else.
    let ns = nss
        .delete("team", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("namespaces return the object");
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(ns.metadata.deletion_grace_period_seconds, None);
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
}

#[tokio::test]
async fn delete_preconditions_conflict_as_before_delete_reports_them() {
    let c = start("preconditions").await;
    let client = client(&c).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = pods.create(&PostParams::default(), &pod("pre")).await.unwrap();
    let (uid, rv) = (p.metadata.uid.unwrap(), p.metadata.resource_version.unwrap());
    let e = fails(pods.delete("pre", &preconditions(Some("wrong"), None))).await;
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on Pod "pre": the UID in the precondition (wrong) does not match the UID in record ({uid}). The object might have been deleted and then recreated"#
        )
    );
    let d = e.details.unwrap();
    assert_eq!((d.name.as_str(), d.group.as_str(), d.kind.as_str()), ("pre", "", "Pod"));
    let e = fails(pods.delete("pre", &preconditions(None, Some("1")))).await;
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on Pod "pre": the ResourceVersion in the precondition (1) does not match the ResourceVersion in record ({rv}). The object might have been modified"#
        )
    );
    pods.delete("pre", &preconditions(Some(&uid), Some(&rv)))
        .await
        .expect("matching preconditions");

    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "default");
    let l = leases.create(&PostParams::default(), &named("l")).await.unwrap();
    let e = fails(leases.delete("l", &preconditions(Some("wrong"), None))).await;
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on Lease.coordination.k8s.io "l": the UID in the precondition (wrong) does not match the UID in record ({}). The object might have been deleted and then recreated"#,
            l.metadata.uid.unwrap()
        )
    );
    let d = e.details.unwrap();
    assert_eq!((d.group.as_str(), d.kind.as_str()), ("coordination.k8s.io", "Lease"));

    // Namespaces check their own preconditions, with their own words.
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = nss.create(&PostParams::default(), &named("team")).await.unwrap();
    let e = fails(nss.delete("team", &preconditions(Some("wrong"), None))).await;
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on namespaces "team": Precondition failed: UID in precondition: wrong, UID in object meta: {}"#,
            ns.metadata.uid.unwrap()
        )
    );
}

#[tokio::test]
async fn invalid_errors_qualify_the_kind_and_omit_empty_details() {
    let c = start("invalid").await;
    let client = client(&c).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "default");
    let e = fails(leases.create(&PostParams::default(), &named("Bad_Name"))).await;
    assert!(
        e.message.starts_with(
            r#"Lease.coordination.k8s.io "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#
        ),
        "{}",
        e.message
    );
    let d = e.details.unwrap();
    assert_eq!((d.group.as_str(), d.kind.as_str()), ("coordination.k8s.io", "Lease"));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut empty = pod("empty");
    empty.spec.as_mut().unwrap().containers.clear();
    let e = fails(pods.create(&PostParams::default(), &empty)).await;
    assert_eq!(e.message, r#"Pod "empty" is invalid: spec.containers: Required value"#);
    let d = e.details.unwrap();
    assert_eq!((d.group.as_str(), d.kind.as_str()), ("", "Pod"));
    assert_eq!(
        (d.causes[0].reason.as_str(), d.causes[0].message.as_str()),
        ("FieldValueRequired", "Required value")
    );

    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let bad_scope = serde_json::from_value(json!({"metadata": {"name": "things.example.dev"},
        "spec": {"group": "example.dev", "scope": "Bogus",
                 "names": {"plural": "things", "kind": "Thing"},
                 "versions": [{"name": "v1", "served": true, "storage": true}]}}))
    .unwrap();
    let e = fails(crds.create(&PostParams::default(), &bad_scope)).await;
    assert_eq!(
        e.message,
        r#"CustomResourceDefinition.apiextensions.k8s.io "things.example.dev" is invalid: spec.scope: Unsupported value: "Bogus": supported values: "Cluster", "Namespaced""#
    );
    let d = e.details.unwrap();
    assert_eq!(
        (d.group.as_str(), d.kind.as_str()),
        ("apiextensions.k8s.io", "CustomResourceDefinition")
    );

    // Namespace names are DNS-1123 labels, with the label's message.
    let nss: Api<Namespace> = Api::all(client.clone());
    let e = fails(nss.create(&PostParams::default(), &named("Bad_Name"))).await;
    assert_eq!(
        e.message,
        r#"Namespace "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#
    );
}

#[tokio::test]
async fn unsupported_media_types_are_refused_before_the_lookup() {
    let c = start("media").await;
    let client = client(&c).await;
    let (code, _, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some("application/yaml"),
        "metadata: {name: x}",
    )
    .await;
    assert_eq!(code, 415);
    assert_eq!(body["reason"], "UnsupportedMediaType");
    assert_eq!(
        body["message"],
        "the body of the request was in an unknown format - accepted media types include: application/json"
    );
    assert!(body.get("details").is_none(), "{body}");

    // PATCH checks its Content-Type first: a missing pod is not looked up.
    let (code, _, body) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/pods/missing",
        Some("application/json"),
        "{}",
    )
    .await;
    assert_eq!(code, 415);
    assert_eq!(
        body["message"],
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, \
         application/apply-patch+yaml"
    );
    assert!(body.get("details").is_none(), "{body}");
}

#[tokio::test]
async fn list_options_are_validated_as_kube_apiserver_validates_them() {
    let c = start("listopts").await;
    let client = client(&c).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .unwrap();
    }
    let first = pods.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    let base = "/api/v1/namespaces/default/pods";

    let (code, _, body) = raw(
        &client,
        "GET",
        &format!("{base}?limit=1&continue={token}&resourceVersion={rv}"),
        None,
        "",
    )
    .await;
    assert_eq!((code.as_u16(), &body["reason"]), (400, &json!("BadRequest")));
    assert_eq!(
        body["message"],
        "specifying resource version is not allowed when using continue"
    );
    let (code, _, _) = raw(
        &client,
        "GET",
        &format!("{base}?limit=1&continue={token}&resourceVersion=0"),
        None,
        "",
    )
    .await;
    assert_eq!(code, 200, "resourceVersion=0 is allowed with continue");

    let invalid = |q: &'static str| {
        let client = client.clone();
        async move {
            let (code, _, body) = raw(&client, "GET", &format!("{base}?{q}"), None, "").await;
            assert_eq!(
                (code.as_u16(), &body["reason"]),
                (422, &json!("Invalid")),
                "{q}: {body}"
            );
            assert_eq!(body["details"]["group"], "meta.k8s.io");
            assert_eq!(body["details"]["kind"], "ListOptions");
            body["message"].as_str().unwrap_or("").to_string()
        }
    };
    let prefix = r#"ListOptions.meta.k8s.io "" is invalid: "#;
    assert_eq!(
        invalid("resourceVersionMatch=NotOlderThan").await,
        format!("{prefix}resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided")
    );
    assert_eq!(
        invalid("resourceVersion=1&resourceVersionMatch=Bogus").await,
        format!(
            r#"{prefix}resourceVersionMatch: Unsupported value: "Bogus": supported values: "Exact", "NotOlderThan", """#
        )
    );
    assert_eq!(
        invalid("resourceVersion=0&resourceVersionMatch=Exact").await,
        format!(
            r#"{prefix}resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0""#
        )
    );
    assert_eq!(
        invalid("resourceVersionMatch=Bogus").await,
        format!(
            r#"{prefix}[resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided, resourceVersionMatch: Unsupported value: "Bogus": supported values: "Exact", "NotOlderThan", ""]"#
        )
    );
    assert_eq!(
        invalid("sendInitialEvents=true").await,
        format!("{prefix}sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list")
    );
    assert_eq!(
        invalid("watch=1&resourceVersionMatch=NotOlderThan").await,
        format!(
            "{prefix}resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
        )
    );
}

#[tokio::test]
async fn an_expired_continue_token_answers_410_with_a_token_to_go_on() {
    let c = start("expired-token").await;
    let client = client(&c).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .unwrap();
    }
    let first = pods.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    // Push the first snapshot out: the simulator keeps a bounded number of them.
    let events = c.api("", "v1", "events").unwrap();
    for i in 0..70 {
        events
            .create(
                "default",
                json!({"metadata": {"name": format!("e{i}")}, "involvedObject": {"kind": "Pod"}}),
            )
            .unwrap();
        pods.list(&ListParams::default().limit(1)).await.unwrap();
    }
    pods.create(&PostParams::default(), &pod("p3")).await.unwrap();

    let (code, _, body) = raw(
        &client,
        "GET",
        &format!("/api/v1/namespaces/default/pods?limit=10&continue={token}"),
        None,
        "",
    )
    .await;
    assert_eq!((code.as_u16(), &body["reason"]), (410, &json!("Expired")), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("The provided continue parameter is too old to display a consistent list result."),
        "{body}"
    );
    assert!(
        body.get("details").is_none(),
        "NewResourceExpired has no details: {body}"
    );
    let fresh = body["metadata"]["continue"]
        .as_str()
        .expect("a token to continue inconsistently")
        .to_string();
    // That token lists the rest as of now.
    let rest = pods
        .list(&ListParams::default().limit(10).continue_token(&fresh))
        .await
        .expect("continuing with the fresh token");
    let names: Vec<String> = rest.items.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["p1", "p2", "p3"]);
    assert_ne!(rest.metadata.resource_version, first.metadata.resource_version);
}

#[tokio::test]
async fn responses_are_marked_uncacheable() {
    let c = start("cache-control").await;
    let client = client(&c).await;
    for path in [
        "/api/v1/namespaces/default/pods",
        "/api/v1/namespaces/default/pods/missing",
        "/version",
        "/healthz",
        "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1",
    ] {
        let (_, headers, _) = raw(&client, "GET", path, None, "").await;
        assert_eq!(
            headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()),
            Some("no-cache, private"),
            "{path}"
        );
    }
    let wrong = c.kubeconfig().replace(c.token(), "not-the-token");
    let anonymous = crate::common::client_for_context(&wrong, c.name()).await;
    let (code, headers, _) = raw(&anonymous, "GET", "/api/v1/namespaces/default/pods", None, "").await;
    assert_eq!(code, 401);
    assert_eq!(
        headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()),
        Some("no-cache, private")
    );
}

#[tokio::test]
async fn label_selector_errors_are_labels_parse_errors() {
    let c = start("selector-errors").await;
    let pods = default_pods(&c).await;
    let key = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
               alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
               '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let value = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and \
                 must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', \
                 regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    let subdomain = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
                     and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
                     validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    let req = "unable to parse requirement";
    let cases = [
        // A bad key is caught while parsing, with the parser's (nil) path.
        (
            "-bad=1",
            format!(r#"{req}: <nil>: Invalid value: "-bad": name part {key}"#),
        ),
        (
            "Bad.Prefix/x",
            format!(r#"{req}: <nil>: Invalid value: "Bad.Prefix/x": prefix part {subdomain}"#),
        ),
        (
            "a/b/c",
            format!(
                r#"{req}: <nil>: Invalid value: "a/b/c": a qualified name {key} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"#
            ),
        ),
        // Values are checked by NewRequirement: sorted, indexed, keyed.
        (
            "app=web_",
            format!(r#"{req}: values[0][app]: Invalid value: "web_": {value}"#),
        ),
        (
            "app in (z_,a)",
            format!(r#"{req}: values[1][app]: Invalid value: "z_": {value}"#),
        ),
        (
            "n>x",
            format!(r#"{req}: values[0]: Invalid value: "x": for 'Gt', 'Lt' operators, the value must be an integer"#),
        ),
        ("app in (", format!("{req}: found '', expected: ',', ')' or identifier")),
        ("app in (a", format!("{req}: found '', expected: ',' or ')'")),
        (
            "a b",
            format!("{req}: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ),
        ("app=web!", "found '!', expected: ',' or 'end of string'".to_string()),
        ("app=web,", "found '', expected: identifier after ','".to_string()),
        (
            ",app",
            "found ',', expected: !, identifier, or 'end of string'".to_string(),
        ),
    ];
    for (selector, want) in cases {
        let e = fails(pods.list(&ListParams::default().labels(selector))).await;
        assert_eq!(summary(&e), (400, "BadRequest", want.as_str()), "{selector}");
        assert!(e.details.is_none(), "{selector}: NewBadRequest has no details");
    }
    // `()` is the set holding the empty value, not an error.
    let mut p = pod("unlabelled");
    p.metadata.labels = Some([("app".to_string(), String::new())].into());
    pods.create(&PostParams::default(), &p).await.unwrap();
    let empty = pods.list(&ListParams::default().labels("app in ()")).await.unwrap();
    assert_eq!(empty.items.len(), 1);
}

#[tokio::test]
async fn create_checks_run_in_the_handler_chain_order() {
    let c = start("create-order").await;
    let client = client(&c).await;
    let mut bad = pod("Bad_Name");
    bad.spec.as_mut().unwrap().containers.clear();

    // NamespaceLifecycle admission (mutating) runs before the strategy's validation.
    let ghost: Api<Pod> = Api::namespaced(client.clone(), "ghost");
    let e = fails(ghost.create(&PostParams::default(), &bad)).await;
    assert_eq!((e.code, e.message.as_str()), (404, r#"namespaces "ghost" not found"#));

    let (_, team) = terminating_namespace(&client, "team").await;
    let terminating = "unable to create new content in namespace team because it is being terminated";
    let e = fails(team.create(&PostParams::default(), &bad)).await;
    assert_eq!(
        (e.code, e.message),
        (403, format!(r#"pods "Bad_Name" is forbidden: {terminating}"#))
    );
    // Admission runs before the name is generated: it names the prefix.
    let mut generated = pod("");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let e = fails(team.create(&PostParams::default(), &generated)).await;
    assert_eq!(e.message, format!(r#"pods "gen-" is forbidden: {terminating}"#));
    // No name at all: "Unknown"; details name the group and plural resource.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "team");
    let e = fails(leases.create(&PostParams::default(), &Default::default())).await;
    assert_eq!(
        e.message,
        format!(r#"leases.coordination.k8s.io "Unknown" is forbidden: {terminating}"#)
    );
    let d = e.details.expect("details");
    assert_eq!(
        (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
        ("Unknown", "coordination.k8s.io", "leases")
    );
    assert_eq!(
        (d.causes[0].reason.as_str(), d.causes[0].field.as_str()),
        ("NamespaceTerminating", "metadata.namespace")
    );

    // The strategy's validation (name and spec together) runs before the store finds a
    // name taken.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("taken")).await.unwrap();
    let mut empty = pod("taken");
    empty.spec.as_mut().unwrap().containers.clear();
    let e = fails(pods.create(&PostParams::default(), &empty)).await;
    assert_eq!(
        (e.code, e.message.as_str()),
        (422, r#"Pod "taken" is invalid: spec.containers: Required value"#)
    );
    let e = fails(pods.create(&PostParams::default(), &bad)).await;
    assert_eq!(e.code, 422);
    let causes: Vec<&str> = e
        .details
        .as_ref()
        .unwrap()
        .causes
        .iter()
        .map(|c| c.field.as_str())
        .collect();
    assert_eq!(causes, ["metadata.name", "spec.containers"], "{}", e.message);

    // A name taken by an object being deleted says so.
    let going = held(pod_on_node("going", "node-1"));
    pods.create(&PostParams::default(), &going).await.unwrap();
    marked(&pods, "going").await;
    let e = fails(pods.create(&PostParams::default(), &going)).await;
    assert_eq!(
        (e.code, e.message.as_str()),
        (409, r#"object is being deleted: pods "going" already exists"#)
    );
}

/// A merge patch refused as `422 Invalid`: its message. The metadata error is a cause twice,
/// as `BeforeUpdate` collects it from the common checks and again from the strategy's
/// `ValidateObjectMetaUpdate` (the message aggregates it once).
async fn refused_twice(api: &Api<Pod>, name: &str, patch: serde_json::Value) -> String {
    let e = fails(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))).await;
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{patch}");
    let causes = e.details.expect("details").causes;
    assert_eq!(causes.len(), 2, "{patch}: {causes:?}");
    assert_eq!(causes[0], causes[1]);
    e.message
}

#[tokio::test]
async fn immutable_metadata_is_reset_or_refused_as_before_update_does() {
    let c = start("immutable-meta").await;
    let pods = default_pods(&c).await;
    let created = pods.create(&PostParams::default(), &pod("p")).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();

    // creationTimestamp: silently the stored one (nothing else changed: no write).
    let mut cur = created.clone();
    cur.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2001-01-01T00:00:00Z".parse().unwrap(),
    ));
    let same = pods.replace("p", &PostParams::default(), &cur).await.unwrap();
    assert_eq!(same.metadata.creation_timestamp, created.metadata.creation_timestamp);
    assert_eq!(same.metadata.resource_version, created.metadata.resource_version);

    // A PUT's uid is a storage precondition: 409 from etcd's precondition check.
    let other = "00000000-0000-0000-0000-000000000001";
    let mut cur = created.clone();
    cur.metadata.uid = Some(other.into());
    let e = fails(pods.replace("p", &PostParams::default(), &cur)).await;
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on pods "p": StorageError: invalid object, Code: 4, Key: /registry/pods/default/p, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {other}, UID in object meta: {uid}"#
        )
    );

    // A patch has no precondition: ValidateObjectMetaUpdate refuses it.
    assert_eq!(
        refused_twice(&pods, "p", json!({"metadata": {"uid": other}})).await,
        format!(r#"Pod "p" is invalid: metadata.uid: Invalid value: "{other}": field is immutable"#)
    );
    assert_eq!(
        refused_twice(
            &pods,
            "p",
            json!({"metadata": {"deletionTimestamp": "2030-01-02T03:04:05Z"}})
        )
        .await,
        r#"Pod "p" is invalid: metadata.deletionTimestamp: Invalid value: 2030-01-02 03:04:05 +0000 UTC: field is immutable"#
    );
    assert_eq!(
        refused_twice(&pods, "p", json!({"metadata": {"deletionGracePeriodSeconds": 5}})).await,
        r#"Pod "p" is invalid: metadata.deletionGracePeriodSeconds: Invalid value: 5: field is immutable"#
    );

    // Being deleted: the deletion timestamp and a dropped grace period are silently the
    // stored ones; another grace period is refused.
    pods.create(&PostParams::default(), &held(pod_on_node("held", "node-1")))
        .await
        .unwrap();
    let deleting = marked(&pods, "held").await;
    let mut cur = deleting.clone();
    cur.metadata.deletion_grace_period_seconds = None;
    cur.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2030-01-01T00:00:00Z".parse().unwrap(),
    ));
    let kept = pods.replace("held", &PostParams::default(), &cur).await.unwrap();
    assert_eq!(
        (
            kept.metadata.deletion_timestamp,
            kept.metadata.deletion_grace_period_seconds
        ),
        (deleting.metadata.deletion_timestamp.clone(), Some(30))
    );
    assert_eq!(kept.metadata.resource_version, deleting.metadata.resource_version);
    assert_eq!(
        refused_twice(&pods, "held", json!({"metadata": {"deletionGracePeriodSeconds": 5}})).await,
        r#"Pod "held" is invalid: metadata.deletionGracePeriodSeconds: Invalid value: 5: field is immutable"#
    );
}

#[tokio::test]
async fn delete_collection_answers_the_items_as_listed() {
    let c = start("deletecollection").await;
    let pods = default_pods(&c).await;
    pods.create(&PostParams::default(), &pod("a")).await.unwrap();
    pods.create(&PostParams::default(), &pod_on_node("b", "node-1"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("c")).await.unwrap();
    let before = pods.list(&ListParams::default()).await.unwrap();

    // A failing delete fails the request, before anything is deleted.
    let wrong = preconditions(Some("wrong"), None);
    let e = fails(pods.delete_collection(&wrong, &ListParams::default())).await;
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.starts_with(r#"Operation cannot be fulfilled on Pod "a""#),
        "{}",
        e.message
    );
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 3);

    // With a limit (kube-rs does not send one): that page only, with its continue token.
    let (code, _, page) = raw(
        &client(&c).await,
        "DELETE",
        "/api/v1/namespaces/default/pods?limit=1",
        None,
        "",
    )
    .await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["kind"], "PodList");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["items"][0]["metadata"]["name"], "a");
    assert!(page["metadata"]["continue"].is_string(), "{page}");
    assert_eq!(page["metadata"]["remainingItemCount"], 2, "{page}");

    // The list as it was read: its resourceVersion, the items before their deletion.
    let listed = pods.list(&ListParams::default()).await.unwrap();
    let gone = pods
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap()
        .left()
        .expect("the deleted list");
    assert_eq!(gone.metadata.resource_version, listed.metadata.resource_version);
    assert_eq!(gone.items, listed.items);
    assert_eq!(gone.items, before.items[1..]);
    assert!(gone.items.iter().all(|p| p.metadata.deletion_timestamp.is_none()));
    let left: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["b"], "the scheduled pod is deleted gracefully");
}
