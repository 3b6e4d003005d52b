//! The gateway's pod writes against the API simulator: each touches only Sluice's own
//! entries and only the pod (UID) it was meant for, never a successor that took its name.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_sim::{Cluster, ClusterConfig};
use serde_json::json;
use sluice::k8s::PodWriter;

async fn create(pods: &Api<Pod>, finalizers: &[&str]) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-0", "finalizers": finalizers},
        "spec": {"containers": [{"name": "app", "image": "app"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create web-0")
        .metadata
        .uid
        .expect("uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_land_only_on_the_pod_they_were_meant_for() {
    let cluster = Cluster::start(ClusterConfig::new("kubeio")).await.expect("cluster");
    let dir = sluice_adapter::testing::temp_dir("gateway-kubeio");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig()).unwrap();
    let client = sluice::gateway::client_for(&sluice::config::ClusterConfig {
        name: "kubeio".into(),
        kubeconfig: Some(kubeconfig),
        context: None,
        in_cluster: false,
    })
    .await
    .expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let writer = PodWriter::new(
        client,
        "test",
        std::sync::Arc::new(sluice::authority::Authority::new(sluice::authority::Role::Sole, false)),
    );

    // The first web-0 goes away; a second one takes its name.
    let old = create(&pods, &["sluice.dev/slb"]).await;
    pods.delete("web-0", &DeleteParams::default()).await.unwrap();
    pods.patch(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let new = create(&pods, &["example.com/keep", "sluice.dev/slb"]).await;
    assert_ne!(old, new);

    // Writes for the first one are refused, saying why, and change nothing.
    for (what, r) in [
        (
            "remove_finalizer",
            writer.remove_finalizer("default", "web-0", &old, "slb").await,
        ),
        (
            "set_gate",
            writer.set_gate("default", "web-0", &old, false, "Draining", "x").await,
        ),
        (
            "set_status_annotation",
            writer.set_status_annotation("default", "web-0", &old, "{}").await,
        ),
        ("mark_prestop", writer.mark_prestop("default", "web-0", &old, 0).await),
    ] {
        let e = r.expect_err(what);
        assert!(
            e.to_string().contains(&format!("is no longer the pod with UID {old}")),
            "{what}: {e}"
        );
    }
    let p = pods.get("web-0").await.unwrap();
    assert_eq!(
        p.metadata.finalizers.as_deref(),
        Some(&["example.com/keep".to_string(), "sluice.dev/slb".to_string()][..])
    );
    assert!(p.metadata.annotations.unwrap_or_default().is_empty());
    assert!(p
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .all(|c| c.type_ != "sluice.dev/traffic-ready"));

    // For the pod itself they work, and leave the other controller's finalizer alone.
    writer
        .set_status_annotation("default", "web-0", &new, "{\"state\":\"draining\"}")
        .await
        .unwrap();
    writer.mark_prestop("default", "web-0", &new, 0).await.unwrap();
    writer
        .set_gate("default", "web-0", &new, false, "Draining", "x")
        .await
        .unwrap();
    writer.remove_finalizer("default", "web-0", &new, "slb").await.unwrap();
    let p = pods.get("web-0").await.unwrap();
    assert_eq!(
        p.metadata.finalizers.as_deref(),
        Some(&["example.com/keep".to_string()][..])
    );
    let annotations = p.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("sluice.dev/status").map(String::as_str),
        Some("{\"state\":\"draining\"}")
    );
    assert!(annotations.contains_key("sluice.dev/prestop"));
    let _ = std::fs::remove_dir_all(dir);
}
