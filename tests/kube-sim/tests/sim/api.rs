//! CRUD, errors, optimistic concurrency, selectors, pagination, patches, the status
//! subresource and deletion — each through kube-rs against the simulator.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{client, pod, pod_on_node, start, status};

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

    // /status writes only status: conditions merge by type, labels are ignored.
    let s1 = json!({"status": {"conditions": [{"type": "sluice.dev/traffic-ready", "status": "False"}]}});
    pods.patch_status("p", &pp, &Patch::Strategic(&s1)).await.unwrap();
    let s2 = json!({"metadata": {"labels": {"l": "2"}},
                    "status": {"conditions": [{"type": "Other", "status": "True"}]}});
    let p = pods.patch_status("p", &pp, &Patch::Strategic(&s2)).await.unwrap();
    let types: Vec<String> = p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, vec!["sluice.dev/traffic-ready", "Other"]);
    assert_eq!(p.metadata.labels.unwrap().get("l").map(String::as_str), Some("1"));

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
        e.message.contains("Precondition failed: UID in precondition: wrong"),
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
