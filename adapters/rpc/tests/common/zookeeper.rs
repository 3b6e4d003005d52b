//! ZooKeeper helpers: the adapter under test and what a Dubbo provider does in ZooKeeper.

use sluice_adapter_rpc::testing::ZooKeeperServer;
use sluice_adapter_rpc::zookeeper::dubbo::{url_encode, Paths};
use sluice_adapter_rpc::zookeeper::{ZookeeperDubboAdapter, ZookeeperDubboConfig};
use zookeeper_client as zk;

use super::WAIT;

pub const IFACE: &str = "org.demo.Greeter";

pub fn adapter(zk: &ZooKeeperServer) -> ZookeeperDubboAdapter {
    let yaml = format!(
        "name: dubbo\nconnect: {}\nsettleSeconds: 0.3\ntimeoutSeconds: 2\nsessionTimeoutSeconds: 4\n",
        zk.connect_string()
    );
    let config: ZookeeperDubboConfig = serde_yaml::from_str(&yaml).expect("config");
    ZookeeperDubboAdapter::new(config).expect("adapter")
}

pub fn provider_url(ip: &str) -> String {
    format!(
        "dubbo://{ip}:20880/{IFACE}?anyhost=true&application=demo-provider&dubbo=2.0.2&interface={IFACE}\
         &methods=sayHello&pid=4242&side=provider&timestamp=1700000000000"
    )
}

pub fn paths(ip: &str) -> Paths {
    Paths::new("dubbo", IFACE, &format!("{ip}:20880"))
}

pub fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// What a Dubbo provider does at start (and after every new session): its ephemeral node.
pub async fn provide(client: &zk::Client, ip: &str) {
    let p = paths(ip);
    tokio::time::timeout(WAIT, client.mkdir(&p.providers, &persistent()))
        .await
        .expect("mkdir providers")
        .expect("mkdir providers");
    let node = format!("{}/{}", p.providers, url_encode(&provider_url(ip)));
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    tokio::time::timeout(WAIT, client.create(&node, b"", &ephemeral))
        .await
        .expect("create provider node")
        .expect("create provider node");
}
