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

pub const USAGE: &str = "sluice adapter conformance --endpoint URL --kind KIND [--param KEY=VALUE]... \
[--ip IP] [--port PORT] [--timeout-ms N] [--settle-seconds N]";

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

/// Parses the arguments and runs the battery; `Err` is a usage error.
pub async fn run(args: &[String]) -> Result<Report, String> {
    let mut endpoint = None;
    let mut kind = None;
    let mut params = Vec::new();
    let mut ip: std::net::IpAddr = "192.0.2.10".parse().expect("literal");
    let mut port = 8080u16;
    let mut timeout_ms = 2000u64;
    let mut settle = 15u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = |flag: &str| it.next().cloned().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "--endpoint" => endpoint = Some(v("--endpoint")?),
            "--kind" => kind = Some(v("--kind")?),
            "--param" => params.push(v("--param")?),
            "--ip" => ip = v("--ip")?.parse().map_err(|e| format!("--ip: {e}"))?,
            "--port" => port = v("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
            "--timeout-ms" => timeout_ms = v("--timeout-ms")?.parse().map_err(|e| format!("--timeout-ms: {e}"))?,
            "--settle-seconds" => {
                settle = v("--settle-seconds")?
                    .parse()
                    .map_err(|e| format!("--settle-seconds: {e}"))?
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    let endpoint = endpoint.ok_or("--endpoint is required")?;
    let kind = kind.ok_or("--kind is required (the traffic kind the plugin serves)")?;
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
