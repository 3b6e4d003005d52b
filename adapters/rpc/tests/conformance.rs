//! The shared adapter conformance battery against real etcd and ZooKeeper (and the Nacos
//! contract double), each reached through a forwarder the battery can take down or slow.
//! The backend snapshot is read around the adapter: etcd's keys,
//! ZooKeeper's nodes under the interface path, the double's instance table.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::nacos_double::NacosDouble;
use common::*;
use serde_json::json;
use sluice_adapter::{Adapter, Target};
use sluice_adapter_rpc::etcd::{EtcdAdapter, EtcdConfig};
use sluice_adapter_rpc::nacos::{NacosAdapter, NacosConfig};
use sluice_adapter_rpc::zookeeper::{ZookeeperDubboAdapter, ZookeeperDubboConfig};
use sluice_conformance::proxy::FaultyProxy;
use sluice_conformance::{Options, Outcome, Targets, ThroughProxy};

/// Prepares a target so that the backend's own side is in place (a provider node, a
/// registered instance) before the adapter is asked to make it serve, and reads the
/// backend around the adapter for [`sluice_conformance::Subject::snapshot`].
#[async_trait::async_trait]
trait Prepare: Send + Sync {
    async fn prepare(&self, t: &Target);
    async fn snapshot(&self) -> String;
}

struct Rpc<P> {
    adapter: Arc<dyn Adapter>,
    params: Vec<(&'static str, &'static str)>,
    prep: P,
    next: AtomicUsize,
}

#[async_trait::async_trait]
impl<P: Prepare> Targets for Rpc<P> {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }
    async fn serving_target(&self) -> Target {
        let t = target(
            [IP1, IP2, IP3][self.next.fetch_add(1, Ordering::SeqCst) % 3],
            &self.params,
        );
        self.prep.prepare(&t).await;
        sluice_conformance::make_serving(self.adapter.as_ref(), &t, &Options::default())
            .await
            .expect("a serving target");
        t
    }
    async fn unknown_target(&self) -> Target {
        target(std::net::Ipv4Addr::new(127, 0, 84, 99), &self.params)
    }
    async fn snapshot(&self) -> Option<String> {
        Some(self.prep.snapshot().await)
    }
}

/// etcd needs nothing prepared; its snapshot is every key of this test's own etcd (the
/// `grpc-go` preset puts `greeter/<ip:port>` at the root) with its value, lease and
/// revisions (a rewrite of the same value still moves `mod_revision`).
struct EtcdKeys(tokio::sync::Mutex<etcd_client::Client>);

#[async_trait::async_trait]
impl Prepare for EtcdKeys {
    async fn prepare(&self, _: &Target) {}
    async fn snapshot(&self) -> String {
        let mut client = self.0.lock().await;
        let resp = tokio::time::timeout(
            WAIT,
            client.get("", Some(etcd_client::GetOptions::new().with_all_keys())),
        )
        .await
        .expect("etcd get within the deadline")
        .expect("etcd get (snapshot)");
        resp.kvs()
            .iter()
            .map(|kv| {
                format!(
                    "{} = {} lease={} create_revision={} mod_revision={} version={}",
                    kv.key_str().unwrap_or("?"),
                    kv.value_str().unwrap_or("?"),
                    kv.lease(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn run<P: Prepare>(targets: Rpc<P>, proxy: FaultyProxy) {
    let s = ThroughProxy { targets, proxy };
    let opts = Options {
        call_deadline: Duration::from_secs(5),
        settle: Duration::from_secs(10),
    };
    let report = sluice_conformance::run(&s, &opts).await;
    println!("{report}");
    assert!(report.checks.iter().all(|c| c.outcome == Outcome::Passed), "{report}");
}

fn host_port(endpoint: &str) -> std::net::SocketAddr {
    endpoint.trim_start_matches("http://").parse().expect("host:port")
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_adapter_passes_the_conformance_battery() {
    let server = etcd().await;
    let proxy = FaultyProxy::start(host_port(&server.endpoint())).await.expect("proxy");
    let keys = EtcdKeys(tokio::sync::Mutex::new(server.client().await));
    let yaml = format!(
        "name: registry\nendpoints: [http://{}]\npreset: grpc-go\nsettleSeconds: 0.3\ntimeoutSeconds: 2\n",
        proxy.addr()
    );
    let config: EtcdConfig = serde_yaml::from_str(&yaml).expect("config");
    let adapter: Arc<dyn Adapter> = Arc::new(EtcdAdapter::new(config).expect("adapter"));
    run(
        Rpc {
            adapter,
            params: vec![("service", "greeter")],
            prep: keys,
            next: AtomicUsize::new(0),
        },
        proxy,
    )
    .await;
    drop(server);
}

struct Provider(zookeeper_client::Client);

#[async_trait::async_trait]
impl Prepare for Provider {
    async fn prepare(&self, t: &Target) {
        let ip = t.ip.to_string();
        let node = format!(
            "{}/{}",
            common::zookeeper::paths(&ip).providers,
            sluice_adapter_rpc::zookeeper::dubbo::url_encode(&common::zookeeper::provider_url(&ip))
        );
        if matches!(self.0.check_stat(&node).await, Ok(Some(_))) {
            return;
        }
        common::zookeeper::provide(&self.0, &ip).await;
    }

    /// Every node under the interface path (providers, configurators), with its data and
    /// stat (zxids, versions, child versions), depth first.
    async fn snapshot(&self) -> String {
        let root = common::zookeeper::paths("127.0.0.1").interface;
        let mut out = Vec::new();
        let mut todo = vec![root];
        while let Some(path) = todo.pop() {
            let (data, stat) = tokio::time::timeout(WAIT, self.0.get_data(&path))
                .await
                .expect("ZooKeeper get_data within the deadline")
                .unwrap_or_else(|e| panic!("ZooKeeper get_data {path} (snapshot): {e}"));
            out.push(format!("{path} {:?} {stat:?}", String::from_utf8_lossy(&data)));
            let mut children = tokio::time::timeout(WAIT, self.0.list_children(&path))
                .await
                .expect("ZooKeeper list_children within the deadline")
                .unwrap_or_else(|e| panic!("ZooKeeper list_children {path} (snapshot): {e}"));
            children.sort();
            todo.extend(children.into_iter().rev().map(|c| format!("{path}/{c}")));
        }
        out.join("\n")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn zookeeper_dubbo_adapter_passes_the_conformance_battery() {
    let server = zookeeper().await;
    let provider = Provider(server.client(Duration::from_secs(10)).await);
    let addr: std::net::SocketAddr = server.connect_string().parse().expect("host:port");
    let proxy = FaultyProxy::start(addr).await.expect("proxy");
    let yaml = format!(
        "name: dubbo\nconnect: {}\nsettleSeconds: 0.3\ntimeoutSeconds: 2\nsessionTimeoutSeconds: 4\n",
        proxy.addr()
    );
    let config: ZookeeperDubboConfig = serde_yaml::from_str(&yaml).expect("config");
    let adapter: Arc<dyn Adapter> = Arc::new(ZookeeperDubboAdapter::new(config).expect("adapter"));
    run(
        Rpc {
            adapter,
            params: vec![("interface", common::zookeeper::IFACE)],
            prep: provider,
            next: AtomicUsize::new(0),
        },
        proxy,
    )
    .await;
}

struct Registered(Arc<NacosDouble>);

#[async_trait::async_trait]
impl Prepare for Registered {
    async fn prepare(&self, t: &Target) {
        if self.0.instance("greeter", &t.ip.to_string(), t.port).is_none() {
            self.0.register("greeter", &t.ip.to_string(), t.port, 1.0, json!({}));
        }
    }
    async fn snapshot(&self) -> String {
        self.0.instances_snapshot()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nacos_adapter_passes_the_conformance_battery_against_the_double() {
    let double = Arc::new(NacosDouble::start().await);
    let addr = host_port(&double.server_addr());
    let proxy = FaultyProxy::start(addr).await.expect("proxy");
    let yaml = format!(
        "name: nacos\nserverAddr: http://{}\nsettleSeconds: 0.3\ntimeoutSeconds: 2\n",
        proxy.addr()
    );
    let config: NacosConfig = serde_yaml::from_str(&yaml).expect("config");
    let adapter: Arc<dyn Adapter> = Arc::new(NacosAdapter::new(config).expect("adapter"));
    run(
        Rpc {
            adapter,
            params: vec![("service", "greeter")],
            prep: Registered(double),
            next: AtomicUsize::new(0),
        },
        proxy,
    )
    .await;
}
