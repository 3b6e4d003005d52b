//! `sluice adapter conformance`: runs the shared conformance battery against a team's own
//! plugin, through the same remote adapter the gateway uses.
//!
//! The command cannot take a team's backend down or slow it, so those checks report N/A;
//! the team's own test suite should run the battery with a subject that can (see
//! `tests/conformance`).

use std::sync::Arc;
use std::time::Duration;

use sluice_adapter::{Adapter, PodRef, Target, TrafficState};
use sluice_adapter_remote::{parse_params, RemoteAdapter, RemoteConfig};
use sluice_conformance::{Options, Report, Subject};

/// `sluice adapter conformance`: runs the adapter conformance battery against a plugin.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The plugin's gRPC endpoint, e.g. http://127.0.0.1:50051.
    #[arg(long, value_name = "URL")]
    pub endpoint: String,
    /// The traffic kind the plugin serves (slb, dns, rpc, or your own).
    #[arg(long)]
    pub kind: String,
    /// A target parameter, as in a TrafficBinding's `params` (repeat for more).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// The first test address (the battery uses it and the next two).
    #[arg(long, default_value = "192.0.2.10")]
    pub ip: std::net::IpAddr,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Per call to the plugin.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,
    /// How long a change may take to show in the plugin's observations.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub settle_seconds: u64,
}

struct PluginSubject {
    adapter: Arc<dyn Adapter>,
    params: std::collections::BTreeMap<String, String>,
    ip: std::net::IpAddr,
    port: u16,
    settle: Duration,
    next: std::sync::atomic::AtomicU8,
}

impl PluginSubject {
    fn target(&self, last: u8) -> Target {
        let ip = match self.ip {
            std::net::IpAddr::V4(v4) => {
                let o = v4.octets();
                std::net::IpAddr::from([o[0], o[1], o[2], o[3].wrapping_add(last)])
            }
            v6 => v6,
        };
        Target {
            pod: PodRef {
                cluster: "conformance".into(),
                namespace: "conformance".into(),
                name: format!("conformance-{last}"),
                uid: format!("conformance-{last}"),
            },
            ip,
            port: self.port,
            params: self.params.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Subject for PluginSubject {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }
    async fn serving_target(&self) -> Target {
        let t = self.target(self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 3);
        if self.adapter.register(&t).await.is_err_and(|e| !e.is_retryable()) {
            return t;
        }
        let deadline = std::time::Instant::now() + self.settle;
        while std::time::Instant::now() < deadline {
            if matches!(self.adapter.observe(&t).await, Ok(o) if o.state == TrafficState::Serving) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t
    }
    async fn unknown_target(&self) -> Target {
        self.target(200)
    }
    async fn backend_down(&self) -> bool {
        false
    }
    async fn backend_up(&self) {}
    async fn backend_slow(&self, _: Duration) -> bool {
        false
    }
}

/// Runs the battery; `Err` is a usage error (a malformed parameter, a bad endpoint).
pub async fn run(args: Args) -> Result<Report, String> {
    let Args {
        endpoint,
        kind,
        params,
        ip,
        port,
        timeout_ms,
        settle_seconds: settle,
    } = args;
    let params = parse_params(&params).map_err(|e| format!("--param {e}"))?;
    let adapter = RemoteAdapter::new(RemoteConfig {
        name: "plugin-under-test".into(),
        endpoint,
        adapter_kind: kind,
        required_params: Vec::new(),
        timeout_ms,
        tls: None,
    })
    .map_err(|e| e.to_string())?;
    let settle = Duration::from_secs(settle);
    let subject = PluginSubject {
        adapter: Arc::new(adapter),
        params,
        ip,
        port,
        settle,
        next: Default::default(),
    };
    let opts = Options {
        call_deadline: Duration::from_millis(timeout_ms * 2),
        settle,
    };
    Ok(sluice_conformance::run(&subject, &opts).await)
}
