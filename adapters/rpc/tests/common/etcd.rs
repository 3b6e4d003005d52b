//! etcd helpers: the adapter under test and raw `etcd-client` reads and writes (what a
//! service's own registry client would do).

use etcd_client::{Client, GetOptions, PutOptions};
use sluice_adapter_rpc::etcd::{EtcdAdapter, EtcdConfig};
use sluice_adapter_rpc::testing::EtcdServer;

use super::{call, WAIT};

/// An etcd adapter on `etcd` with a 300 ms settle window, a 1 s call timeout and `extra`
/// config lines.
pub fn adapter(etcd: &EtcdServer, extra: &str) -> EtcdAdapter {
    let yaml = format!(
        "name: registry\nendpoints: [{}]\nsettleSeconds: 0.3\ntimeoutSeconds: 2\n{extra}",
        etcd.endpoint()
    );
    let config: EtcdConfig = serde_yaml::from_str(&yaml).expect("config");
    EtcdAdapter::new(config).expect("adapter")
}

/// Puts `key` (under `lease` unless 0); returns the revision.
pub async fn put(c: &mut Client, key: &str, value: &str, lease: i64) -> i64 {
    let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
    let resp = call("put", async { Ok(c.put(key, value, options).await.expect("put")) }).await;
    resp.unwrap().header().expect("header").revision()
}

/// (value, lease, mod_revision) of `key`.
pub async fn get(c: &mut Client, key: &str) -> Option<(String, i64, i64)> {
    let resp = tokio::time::timeout(WAIT, c.get(key, None))
        .await
        .expect("get")
        .expect("get");
    resp.kvs()
        .first()
        .map(|kv| (kv.value_str().unwrap().to_string(), kv.lease(), kv.mod_revision()))
}

/// The keys under `prefix`.
pub async fn keys(c: &mut Client, prefix: &str) -> Vec<String> {
    let resp = tokio::time::timeout(WAIT, c.get(prefix, Some(GetOptions::new().with_prefix())))
        .await
        .expect("get prefix")
        .expect("get prefix");
    resp.kvs().iter().map(|kv| kv.key_str().unwrap().to_string()).collect()
}

/// A gRPC-go naming entry for 127.0.84.11:20880 of service `greeter` (prefix `services/`).
pub const GRPC_KEY: &str = "services/greeter/127.0.84.11:20880";
pub const GRPC_VALUE: &str = r#"{"Op":0,"Addr":"127.0.84.11:20880","Metadata":{"zone":"a"}}"#;
