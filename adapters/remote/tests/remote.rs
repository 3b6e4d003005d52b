//! The remote adapter against a plugin served with this crate's `serve`, wrapping the real
//! HAProxy adapter: the same conformance battery passes through the protocol, with the
//! plugin taken down or slowed by a forwarder between gateway and plugin.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_adapter::{Adapter, Target};
use sluice_adapter_remote::{serve, RemoteAdapter, RemoteConfig};
use sluice_adapter_slb::testing::*;
use sluice_adapter_slb::{HaproxyAdapter, HaproxyConfig};
use sluice_conformance::proxy::FaultyProxy;
use sluice_conformance::{Options, Outcome, Targets, ThroughProxy};

struct RemoteSubject {
    haproxy: Haproxy,
    _pods: Vec<Pod>,
    _plugin: tokio::task::JoinHandle<()>,
    adapter: Arc<dyn Adapter>,
    port: u16,
    next: AtomicUsize,
}

#[async_trait::async_trait]
impl Targets for RemoteSubject {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }
    async fn serving_target(&self) -> Target {
        let ips = [IP1, IP2, IP3];
        let t = target(ips[self.next.fetch_add(1, Ordering::SeqCst) % 3], self.port, "web");
        sluice_conformance::make_serving(self.adapter.as_ref(), &t, &Options::default())
            .await
            .expect("a serving target");
        t
    }
    async fn unknown_target(&self) -> Target {
        target(std::net::Ipv4Addr::new(127, 0, 83, 98), self.port, "web")
    }
    async fn snapshot(&self) -> Option<String> {
        Some(self.haproxy.servers_state_snapshot("web").await)
    }
}

async fn start() -> ThroughProxy<RemoteSubject> {
    let (port, pods) = start_pods(&[("s1", IP1), ("s2", IP2), ("s3", IP3)], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let inner: Arc<dyn Adapter> =
        Arc::new(HaproxyAdapter::new(HaproxyConfig::new("lb", h.unix_endpoint())).expect("valid config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind plugin");
    let plugin_addr = listener.local_addr().unwrap();
    let plugin = tokio::spawn(async move {
        serve(inner, listener).await.expect("plugin serves");
    });
    let proxy = FaultyProxy::start(plugin_addr).await.expect("proxy");
    let cfg = RemoteConfig {
        name: "remote-lb".into(),
        endpoint: format!("http://{}", proxy.addr()),
        adapter_kind: "slb".into(),
        required_params: vec!["backend".into()],
        timeout_ms: 1000,
        tls: None,
    };
    let adapter: Arc<dyn Adapter> = Arc::new(RemoteAdapter::new(cfg).expect("remote adapter"));
    let targets = RemoteSubject {
        haproxy: h,
        _pods: pods,
        _plugin: plugin,
        adapter,
        port,
        next: AtomicUsize::new(0),
    };
    ThroughProxy { targets, proxy }
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_adapter_passes_the_conformance_battery() {
    let s = start().await;
    let report = sluice_conformance::run(
        &s,
        &Options {
            call_deadline: Duration::from_secs(3),
            settle: Duration::from_secs(10),
        },
    )
    .await;
    println!("{report}");
    assert!(report.checks.iter().all(|c| c.outcome == Outcome::Passed), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kind_mismatch_and_errors_are_permanent_with_clear_messages() {
    let s = start().await;
    let cfg = RemoteConfig {
        name: "wrong".into(),
        endpoint: format!("http://{}", s.proxy.addr()),
        adapter_kind: "dns".into(),
        required_params: vec![],
        timeout_ms: 1000,
        tls: None,
    };
    let wrong = RemoteAdapter::new(cfg).unwrap();
    let e = wrong.health().await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(
        e.message
            .contains("serves kind \"slb\" but the gateway configuration declares adapterKind \"dns\""),
        "{e}"
    );

    // A permanent adapter error crosses the protocol as permanent, message intact.
    let t = target(IP1, s.targets.port, "no-such-backend");
    let e = s.targets.adapter.deregister(&t).await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(e.message.contains("no-such-backend"), "{e}");

    let e = RemoteAdapter::new(RemoteConfig {
        name: "bad".into(),
        endpoint: "not a url".into(),
        adapter_kind: "slb".into(),
        required_params: vec![],
        timeout_ms: 1000,
        tls: None,
    })
    .unwrap_err();
    assert!(e.message.contains("is not a URL"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_is_optional_and_verified() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (port, pods) = start_pods(&[("s1", IP1)], &[]).await;
    let h = Haproxy::start(&three_servers()[..1], port).await;
    let inner: Arc<dyn Adapter> =
        Arc::new(HaproxyAdapter::new(HaproxyConfig::new("lb", h.unix_endpoint())).expect("valid config"));
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["plugin.test".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::NoCa;
    let cert = params.self_signed(&key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let _plugin = tokio::spawn(async move {
        sluice_adapter_remote::serve_tls(inner, listener, cert_pem.as_bytes(), key_pem.as_bytes())
            .await
            .unwrap();
    });
    let dir = std::env::temp_dir().join(format!("sluice-remote-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let cfg = |domain: &str| RemoteConfig {
        name: "tls".into(),
        endpoint: format!("https://{addr}"),
        adapter_kind: "slb".into(),
        required_params: vec![],
        timeout_ms: 2000,
        tls: Some(sluice_adapter_remote::TlsConfig {
            ca_file: ca.clone(),
            domain: Some(domain.into()),
        }),
    };
    let ok = RemoteAdapter::new(cfg("plugin.test")).unwrap();
    ok.health().await.expect("TLS with the right CA and name works");
    let t = target(IP1, port, "web");
    let obs = ok.observe(&t).await.expect("observe over TLS");
    assert!(matches!(
        obs.state,
        sluice_adapter::TrafficState::Serving | sluice_adapter::TrafficState::Registered
    ));
    let wrong = RemoteAdapter::new(cfg("someone-else.test")).unwrap();
    let e = wrong.health().await.unwrap_err();
    assert!(e.is_retryable(), "a TLS failure is a transport failure: {e}");
    drop(pods);
}

/// Serves `inner` as a plugin and connects a remote adapter to it (no proxy in between).
async fn plugin_for(inner: Arc<dyn Adapter>) -> (RemoteAdapter, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind plugin");
    let addr = listener.local_addr().unwrap();
    let plugin = tokio::spawn(async move {
        serve(inner, listener).await.expect("plugin serves");
    });
    let remote = RemoteAdapter::new(RemoteConfig {
        name: "remote".into(),
        endpoint: format!("http://{addr}"),
        adapter_kind: "slb".into(),
        required_params: vec!["backend".into()],
        timeout_ms: 2000,
        tls: None,
    })
    .expect("remote adapter");
    (remote, plugin)
}

#[tokio::test(flavor = "multi_thread")]
async fn list_crosses_the_protocol_for_the_orphan_sweep() {
    const DYN: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 83, 31);
    let (port, _pods) = start_pods(&[("d1", DYN)], &[]).await;
    let h = Haproxy::start(&[], port).await;
    let mut config = HaproxyConfig::new("lb-dyn", h.unix_endpoint());
    config.mode = sluice_adapter_slb::Mode::Dynamic {
        check: true,
        check_options: "inter 100 rise 1 fall 1".split(' ').map(String::from).collect(),
    };
    let inner: Arc<dyn Adapter> = Arc::new(HaproxyAdapter::new(config).expect("config"));
    let (remote, _plugin) = plugin_for(inner.clone()).await;
    let scope: std::collections::BTreeMap<String, String> = [("backend".to_string(), "dyn".to_string())].into();
    assert_eq!(remote.list(&scope).await.expect("list").expect("supported"), vec![]);
    inner.register(&target(DYN, port, "dyn")).await.expect("register");
    let direct = inner.list(&scope).await.unwrap().unwrap();
    let through = remote.list(&scope).await.unwrap().unwrap();
    assert_eq!(through, direct, "the plugin lists what the adapter lists");
    assert_eq!((through[0].ip, through[0].port), (std::net::IpAddr::from(DYN), port));

    // An adapter that cannot list (static servers are haproxy.cfg's) says so: not swept.
    let static_inner: Arc<dyn Adapter> =
        Arc::new(HaproxyAdapter::new(HaproxyConfig::new("lb", h.unix_endpoint())).expect("config"));
    let (remote_static, _plugin2) = plugin_for(static_inner).await;
    assert_eq!(remote_static.list(&scope).await.expect("list"), None);
}
