//! CRUD, errors, optimistic concurrency, selectors, pagination, patches, the status
//! subresource and deletion — each through kube-rs against the simulator.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{client, pod, pod_on_node, raw, start, status};

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

    let e = status(pods.create(&PostParams::default(), &pod("p1")).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, r#"pods "p1" already exists"#);

    let e = status(pods.get("nope").await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", r#"pods "nope" not found"#)
    );
    assert_eq!(e.details.as_ref().map(|d| d.kind.as_str()), Some("pods"));

    let missing_ns: Api<Pod> = Api::namespaced(client(&c).await, "ghost");
    let e = status(missing_ns.create(&PostParams::default(), &pod("p")).await.unwrap_err());
    assert_eq!((e.code, e.message.as_str()), (404, r#"namespaces "ghost" not found"#));

    let mut bad = pod("Bad_Name");
    bad.metadata.name = Some("Bad_Name".into());
    let e = status(pods.create(&PostParams::default(), &bad).await.unwrap_err());
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
    let e = status(pods.replace("p1", &PostParams::default(), &cur).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        r#"Operation cannot be fulfilled on pods "p1": the object has been modified; please apply your changes to the latest version and try again"#
    );
    let stale = json!({"metadata": {"resourceVersion": rv1.to_string(), "labels": {"x": "y"}}});
    let e = status(
        pods.patch("p1", &PatchParams::default(), &Patch::Merge(&stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);

    // Spec is immutable but for the image.
    let mut img = pods.get("p1").await.unwrap();
    img.spec.as_mut().unwrap().containers[0].image = Some("registry.local/app:2.0".into());
    pods.replace("p1", &PostParams::default(), &img)
        .await
        .expect("image update is allowed");
    img = pods.get("p1").await.unwrap();
    img.spec.as_mut().unwrap().containers[0].name = "renamed".into();
    let e = status(pods.replace("p1", &PostParams::default(), &img).await.unwrap_err());
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

    let e = status(
        pods.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: spec.bogus")
    );
    let e = status(pods.list(&ListParams::default().labels("app in (")).await.unwrap_err());
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

    let e = status(
        pods.list(&ListParams::default().continue_token("not-a-token"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
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
    let e = status(pods.patch("p", &pp, &Patch::Json::<()>(ok)).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "the server rejected our request due to an error in our request"
    );

    // Strategic merge: finalizers are a set, not replaced.
    let smp = json!({"metadata": {"finalizers": ["sluice.dev/dns"]}});
    let p2 = pods.patch("p", &pp, &Patch::Strategic(&smp)).await.expect("strategic");
    assert_eq!(
        p2.metadata.finalizers,
        Some(vec!["sluice.dev/slb".to_string(), "sluice.dev/dns".to_string()])
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
    let e = status(
        pods.patch("p", &PatchParams::apply("test"), &Patch::Apply(&json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 415);
    assert!(e.message.contains("not implemented by kube-sim"), "{}", e.message);
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
    let e = status(
        pods.replace_status("p", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
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
    let e = status(
        pods.patch("held", &PatchParams::default(), &Patch::Merge(&add))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        r#"Pod "held" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"sluice.dev/dns"}"#
    );

    // Force (grace 0) with the finalizer still there: stays.
    pods.delete(
        "held",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
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
    pods.delete(
        "graceful",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("graceful").await.unwrap().is_none());

    // Preconditions.
    pods.create(&PostParams::default(), &pod("pre")).await.unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let e = status(pods.delete("pre", &dp).await.unwrap_err());
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
    let client = client(&c).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    let mut held = pod("held");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    pods.create(&PostParams::default(), &held).await.unwrap();
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    let ns = nss.get("team").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let e = status(pods.create(&PostParams::default(), &pod("late")).await.unwrap_err());
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
    let e = status(
        client
            .request::<serde_json::Value>(req("GET", "/apis/apps/v1/namespaces/default/deployments"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    let e = status(
        client
            .request::<serde_json::Value>(req("POST", "/api/v1/namespaces/default/pods/p"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 405);
    let e = status(
        client
            .request::<serde_json::Value>(req("GET", "/api/v1/namespaces/default/pods/p/exec"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    let mut wrong_ct = http::Request::builder()
        .method("POST")
        .uri("/api/v1/namespaces/default/pods")
        .header("content-type", "application/yaml")
        .body(b"metadata: {name: x}".to_vec())
        .unwrap();
    wrong_ct.headers_mut();
    let e = status(client.request::<serde_json::Value>(wrong_ct).await.unwrap_err());
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
    let e = status(client.request::<serde_json::Value>(table).await.unwrap_err());
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
    let e = status(
        nss.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
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
    let with = |uid: Option<&str>, rv: Option<&str>| DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: uid.map(String::from),
            resource_version: rv.map(String::from),
        }),
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = pods.create(&PostParams::default(), &pod("pre")).await.unwrap();
    let (uid, rv) = (p.metadata.uid.unwrap(), p.metadata.resource_version.unwrap());
    let e = status(pods.delete("pre", &with(Some("wrong"), None)).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on Pod "pre": the UID in the precondition (wrong) does not match the UID in record ({uid}). The object might have been deleted and then recreated"#
        )
    );
    let d = e.details.unwrap();
    assert_eq!((d.name.as_str(), d.group.as_str(), d.kind.as_str()), ("pre", "", "Pod"));
    let e = status(pods.delete("pre", &with(None, Some("1"))).await.unwrap_err());
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on Pod "pre": the ResourceVersion in the precondition (1) does not match the ResourceVersion in record ({rv}). The object might have been modified"#
        )
    );
    pods.delete("pre", &with(Some(&uid), Some(&rv)))
        .await
        .expect("matching preconditions");

    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "default");
    let l = leases
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap(),
        )
        .await
        .unwrap();
    let e = status(leases.delete("l", &with(Some("wrong"), None)).await.unwrap_err());
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
    let ns = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
        )
        .await
        .unwrap();
    let e = status(nss.delete("team", &with(Some("wrong"), None)).await.unwrap_err());
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
    let e = status(
        leases
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "Bad_Name"}})).unwrap(),
            )
            .await
            .unwrap_err(),
    );
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
    let e = status(pods.create(&PostParams::default(), &empty).await.unwrap_err());
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
    let e = status(crds.create(&PostParams::default(), &bad_scope).await.unwrap_err());
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
    let e = status(
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "Bad_Name"}})).unwrap(),
        )
        .await
        .unwrap_err(),
    );
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
