//! One pod, three kinds of traffic, one decision: a binding that registers the pod in real
//! HAProxy (slb), a real BIND zone through RFC 2136 (dns) and a real etcd registry (rpc).
//! Restore adds the three finalizers only once each kind is verified serving; a drain
//! removes each only once its own evidence says the traffic is gone.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sluice::binding::TrafficBinding;
use sluice::config::Config;
use sluice::demo::Stage;
use sluice_adapter_dns::testing::bind::{Bind, Zone};
use sluice_adapter_dns::testing::dig;
use sluice_adapter_rpc::testing::EtcdServer;

mod support;
use support::*;

fn finalizers(p: &Pod) -> Vec<String> {
    let mut f = p.metadata.finalizers.clone().unwrap_or_default();
    f.sort();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_drains_and_restores_across_slb_dns_and_rpc() {
    let stage = Stage::new(1, true).await.expect("stage");
    let ip = stage.ips[0].to_string();
    // Another address stays in the name, so the drain never empties it.
    let bind = Bind::start(vec![Zone::new("example.test", 1, &["www IN A 10.9.9.9"])]).await;
    let etcd = tokio::time::timeout(T, EtcdServer::start())
        .await
        .expect("etcd starts")
        .unwrap_or_else(|e| panic!("{e}"));

    // Replace the demo's HAProxy-only binding with one spanning three kinds.
    let bindings: Api<TrafficBinding> = Api::namespaced(stage.client.clone(), "default");
    bindings.delete("web", &DeleteParams::default()).await.unwrap();
    let binding: TrafficBinding = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "TrafficBinding",
        "metadata": {"name": "web-all"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "port": stage.port,
                 "targets": [
                    {"adapter": "haproxy", "params": {"backend": "web"}},
                    {"adapter": "corp-dns", "params": {"name": "www.example.test"}},
                    {"adapter": "registry", "params": {"service": "greeter"}}],
                 "drainPolicy": {"deadlineSeconds": 60}}
    }))
    .unwrap();
    bindings.create(&PostParams::default(), &binding).await.unwrap();

    let mut servers = vec![bind.primary.addr.to_string()];
    if let Some(s) = &bind.secondary {
        servers.push(s.addr.to_string());
    }
    let more = format!(
        "- kind: rfc2136\n  name: corp-dns\n  primary: {}\n  zones: [example.test]\n  servers: [{}]\n  tsigKeyFile: {}\n  ttl: 1\n\
         - kind: etcd\n  name: registry\n  endpoints: [{}]\n  preset: grpc-go\n  prefix: services/\n  settleSeconds: 0.3\n",
        bind.primary.addr,
        servers.join(", "),
        bind.key_file("sluice").display(),
        etcd.endpoint(),
    );
    let text = stage.gateway_config_text_with(free_addr(), &more);
    let gw = sluice::gateway::Gateway::start(Config::parse(&text, "multikind").expect("config"))
        .await
        .expect("gateway");
    tokio::time::timeout(T, gw.wait_ready()).await.expect("ready");

    // Restore: every kind verified, then its finalizer, then the gate.
    stage.wait_ready(0, T).await.expect("pod Ready through all three kinds");
    let p = stage.get(0).await.unwrap();
    assert_eq!(
        finalizers(&p),
        vec!["sluice.dev/dns", "sluice.dev/rpc", "sluice.dev/slb"]
    );
    let primary = bind.primary.addr;
    assert!(dig(primary, "www.example.test", "A").contains(&ip), "registered in DNS");
    let mut etcd_client = etcd.client().await;
    let key = format!("services/greeter/{ip}:{}", stage.port);
    assert_eq!(
        etcd_client.get(key.as_str(), None).await.unwrap().kvs().len(),
        1,
        "registered in etcd"
    );

    // Drain: each finalizer goes only with its own evidence.
    let drain = json!({"metadata": {"annotations": {"sluice.dev/desired": "drained"}}});
    stage
        .pods
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&drain))
        .await
        .unwrap();
    stage.wait_drained(0, T).await.expect("drained everywhere");
    assert!(
        !dig(primary, "www.example.test", "A").contains(&ip),
        "gone from the primary"
    );
    assert_eq!(
        dig(primary, "www.example.test", "A"),
        vec!["10.9.9.9".to_string()],
        "the other address is untouched"
    );
    assert!(
        etcd_client.get(key.as_str(), None).await.unwrap().kvs().is_empty(),
        "gone from etcd"
    );
    let status = wait_status(&stage.pods, "web-1", "drained").await;
    let targets = status["targets"].as_object().expect("per-target states");
    assert_eq!(targets.len(), 3, "{status}");
    assert!(
        targets
            .values()
            .all(|v| v.as_str().is_some_and(|s| s.starts_with("Drained"))),
        "{status}"
    );
    drop(gw);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
