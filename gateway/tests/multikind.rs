//! One pod, three kinds of traffic, one decision: a binding that registers the pod in real
//! HAProxy (slb), a real BIND zone through RFC 2136 (dns) and a real etcd registry (rpc).
//! Restore adds the three finalizers only once each kind is verified serving; a drain
//! removes each only once its own evidence says the traffic is gone.

use std::collections::BTreeMap;
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

/// The TTL of the pod's DNS record: far longer than the etcd settle window (0.3 s), so
/// the DNS finalizer must outlast the others.
const DNS_TTL: u64 = 3;

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
    let bind = Bind::start(vec![Zone::new("example.test", DNS_TTL as u32, &["www IN A 10.9.9.9"])]).await;
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
        "- kind: rfc2136\n  name: corp-dns\n  primary: {}\n  zones: [example.test]\n  servers: [{}]\n  tsigKeyFile: {}\n  ttl: {DNS_TTL}\n\
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
        vec![
            "sluice.dev/dns",
            "sluice.dev/ledger",
            "sluice.dev/rpc",
            "sluice.dev/slb"
        ]
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

    // Drain: each finalizer goes only with its own evidence. Every finalizer change is
    // recorded, with when the primary stopped answering the pod's address.
    let drain = json!({"metadata": {"annotations": {"sluice.dev/desired": "drained"}}});
    stage
        .pods
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&drain))
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut gone_at: BTreeMap<String, Duration> = BTreeMap::new();
    let mut dns_left_primary = None;
    within("every finalizer to go", async {
        loop {
            let p = stage.get(0).await.unwrap();
            let now = finalizers(&p);
            for kind in ["slb", "rpc", "dns", "ledger"] {
                let f = format!("sluice.dev/{kind}");
                if !now.contains(&f) && !gone_at.contains_key(kind) {
                    gone_at.insert(kind.to_string(), start.elapsed());
                    if kind == "slb" || kind == "rpc" {
                        assert!(
                            now.contains(&"sluice.dev/dns".to_string()),
                            "{kind} goes on its own evidence, while DNS still waits out its TTL: {now:?}"
                        );
                    }
                }
            }
            if dns_left_primary.is_none() && !dig(primary, "www.example.test", "A").contains(&ip) {
                dns_left_primary = Some(start.elapsed());
            }
            if gone_at.len() == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let left = dns_left_primary.expect("the primary stopped answering the address");
    let dns_gone = gone_at["dns"];
    assert!(
        dns_gone + Duration::from_millis(300) >= left + Duration::from_secs(DNS_TTL),
        "sluice.dev/dns went {dns_gone:?} after the drain began, but the primary only stopped answering at {left:?}: \
         caches may hold the record for its {DNS_TTL} s TTL"
    );
    assert!(gone_at["slb"] < dns_gone && gone_at["rpc"] < dns_gone, "{gone_at:?}");
    assert!(
        gone_at["ledger"] >= dns_gone,
        "the guard goes with the last entry: {gone_at:?}"
    );
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
