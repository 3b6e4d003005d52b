//! The shared adapter conformance battery against real etcd and ZooKeeper (and the Nacos
//! contract double), each reached through a forwarder the battery can take down or slow.

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
/// registered instance) before the adapter is asked to make it serve.
#[async_trait::async_trait]
trait Prepare: Send + Sync {
    async fn prepare(&self, t: &Target);
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
}

struct Nothing;

#[async_trait::async_trait]
impl Prepare for Nothing {
    async fn prepare(&self, _: &Target) {}
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
            prep: Nothing,
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
