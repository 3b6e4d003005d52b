//! The example plugin written in Python (grpcio, from PyPI) passes the same conformance
//! battery through the remote adapter: the protocol is language-neutral.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sluice_adapter::{Adapter, PodRef, Target};
use sluice_adapter_remote::{RemoteAdapter, RemoteConfig};
use sluice_conformance::proxy::FaultyProxy;
use sluice_conformance::{Options, Outcome, Targets, ThroughProxy};

struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_plugin(port: u16) -> Plugin {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/python-plugin/plugin.py");
    let python = sluice_adapter::testing::python_with_grpc();
    let child = Command::new(python)
        .arg(script)
        .args(["--port", &port.to_string(), "--drain-ms", "150", "--ready-ms", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python plugin");
    Plugin(child)
}

struct PySubject {
    _plugin: Plugin,
    adapter: Arc<dyn Adapter>,
    n: std::sync::atomic::AtomicU8,
}

fn target(last: u8) -> Target {
    Target {
        pod: PodRef {
            cluster: "c".into(),
            namespace: "ns".into(),
            name: format!("p{last}"),
            uid: format!("u{last}"),
        },
        ip: std::net::IpAddr::from([10, 0, 0, last]),
        port: 8080,
        params: [("service".to_string(), "payments".to_string())].into(),
    }
}

#[async_trait::async_trait]
impl Targets for PySubject {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }
    async fn serving_target(&self) -> Target {
        let t = target(self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 3 + 1);
        sluice_conformance::make_serving(self.adapter.as_ref(), &t, &Options::default())
            .await
            .expect("the Python registry lists the instance");
        t
    }
    async fn unknown_target(&self) -> Target {
        target(200)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_plugin_passes_the_conformance_battery() {
    let port = sluice_adapter::testing::free_port();
    let plugin = start_plugin(port);
    tokio::time::timeout(Duration::from_secs(30), async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the Python plugin listens");
    let proxy = FaultyProxy::start(([127, 0, 0, 1], port).into()).await.unwrap();
    let adapter: Arc<dyn Adapter> = Arc::new(
        RemoteAdapter::new(RemoteConfig {
            name: "inhouse".into(),
            endpoint: format!("http://{}", proxy.addr()),
            adapter_kind: "rpc".into(),
            required_params: vec!["service".into()],
            timeout_ms: 1000,
            tls: None,
        })
        .unwrap(),
    );
    // A plugin that does not implement List (generated before it existed) is not swept.
    let scope = [("service".to_string(), "payments".to_string())].into();
    assert_eq!(adapter.list(&scope).await.expect("UNIMPLEMENTED is not an error"), None);
    // A malformed target is the caller's error: permanent, with the plugin's message.
    let mut bad = target(1);
    bad.params.clear();
    let e = adapter.register(&bad).await.unwrap_err();
    assert!(
        !e.is_retryable() && e.message.contains("target.params.service is required"),
        "{e}"
    );

    let s = PySubject {
        _plugin: plugin,
        adapter,
        n: Default::default(),
    };
    let s = ThroughProxy { targets: s, proxy };
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
