//! `/metrics` scraped by a real Prometheus (Debian's `prometheus`, started here on
//! 127.0.0.1) during a rollout through real HAProxy: a PromQL query through Prometheus's
//! HTTP API counts exactly the drains that happened.

use std::time::Duration;

use sluice::demo::Stage;

mod support;
use support::*;

const T: Duration = Duration::from_secs(60);

/// A Prometheus server scraping one target every 200 ms; killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    async fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = sluice_adapter::testing::temp_dir("prometheus");
        let addr = free_addr();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\nscrape_configs:\n  - job_name: sluice\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            // Exemplars (the trace ids on the target histogram) are kept and queryable.
            .arg("--enable-feature=exemplar-storage")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus ({e}): scripts/test.sh installs Debian's `prometheus`")
            });
        let p = Prometheus { child, addr, dir };
        until("Prometheus to be ready", || async {
            let r = health_get(p.addr, "/-/ready").await?;
            r.starts_with("HTTP/1.1 200").then_some(())
        })
        .await;
        p
    }

    /// The value of an instant PromQL query returning one sample.
    async fn query(&self, promql: &str) -> Option<f64> {
        let v = self.api(&format!("/api/v1/query?query={}", encode(promql))).await?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// The trace ids of the exemplars Prometheus stored for a series selector.
    async fn exemplar_trace_ids(&self, selector: &str) -> Option<Vec<String>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let v = self
            .api(&format!(
                "/api/v1/query_exemplars?query={}&start={}&end={}",
                encode(selector),
                now - 600,
                now + 60
            ))
            .await?;
        let mut ids = Vec::new();
        for series in v["data"].as_array()? {
            for e in series["exemplars"].as_array()? {
                ids.push(e["labels"]["trace_id"].as_str()?.to_string());
            }
        }
        Some(ids)
    }

    async fn api(&self, path: &str) -> Option<serde_json::Value> {
        let r = health_get(self.addr, path).await?;
        let body = r.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counts_every_drain_of_a_rollout() {
    let stage = Stage::new(3, true).await.expect("stage");
    // `/metrics` on a listener of its own.
    let health = free_addr();
    let text = stage.gateway_config_text(health);
    let with_metrics = text.replace(
        &format!("  health: {health}\n"),
        &format!("  health: {health}\n  metrics: 127.0.0.1:0\n"),
    );
    assert_ne!(text, with_metrics);
    let gw = stage.start_gateway_with(&with_metrics).await.expect("gateway");
    let metrics = gw.metrics_addr.expect("listen.metrics bound");
    for i in 0..3 {
        stage.wait_ready(i, T).await.unwrap();
    }
    let on_health = health_get(gw.health_addr, "/metrics").await.unwrap();
    assert!(on_health.starts_with("HTTP/1.1 404"), "{on_health}");
    let on_metrics = health_get(metrics, "/healthz").await.unwrap();
    assert!(on_metrics.starts_with("HTTP/1.1 404"), "{on_metrics}");
    let prometheus = Prometheus::start(metrics).await;
    until("Prometheus to scrape the gateway", || async {
        (prometheus.query("up{job=\"sluice\"}").await? == 1.0).then_some(())
    })
    .await;
    // A rollout of the three pods, one after the other, while Prometheus scrapes; the
    // first pod holds a request for a second, so its drain waits for evidence.
    let held = hold_in_web(&stage, 3, 1000).await;
    let mut traces = Vec::new();
    for i in 0..3 {
        stage.set_kruise_state(i, "PreparingUpdate").await.unwrap();
        stage.wait_drained(i, T).await.unwrap();
        traces.push(
            status_of(&stage.get(i).await.unwrap())["traceId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        stage.set_kruise_state(i, "Updated").await.unwrap();
        wait_gate(&stage.pods, &Stage::name(i), "True").await;
    }
    for h in held {
        within("a held request", h).await.unwrap().expect("answered");
    }
    let drains = until("Prometheus to see three verified drains", || async {
        let n = prometheus
            .query("sum(sluice_drain_duration_seconds_count{outcome=\"verified\"})")
            .await?;
        (n >= 3.0).then_some(n)
    })
    .await;
    assert_eq!(drains, 3.0, "exactly the drains that happened");
    let transitions = prometheus
        .query("sum(sluice_transitions_total{kind=\"drain\",outcome=\"verified\"})")
        .await
        .unwrap();
    assert_eq!(transitions, 3.0);
    let restores = until("the restores after the updates", || async {
        let n = prometheus
            .query("sum(sluice_transitions_total{kind=\"restore\",outcome=\"verified\"})")
            .await?;
        (n >= 3.0).then_some(n)
    })
    .await;
    assert!(restores >= 3.0, "{restores}");
    let calls = prometheus
        .query("sum(sluice_adapter_calls_total{adapter=\"haproxy\",op=\"deregister\",result=\"ok\"})")
        .await
        .unwrap();
    assert!(calls >= 3.0, "every drain deregistered: {calls}");
    // Per adapter target: each drain's time to HAProxy's evidence, with the drain's trace
    // id as the exemplar.
    let targets = prometheus
        .query("sum(sluice_target_duration_seconds_count{transition=\"drain\",adapter=\"haproxy\",kind=\"slb\"})")
        .await
        .unwrap();
    assert_eq!(targets, 3.0, "one per drained target");
    let ids = until("Prometheus to store the exemplars", || async {
        let ids = prometheus
            .exemplar_trace_ids("sluice_target_duration_seconds_bucket{transition=\"drain\"}")
            .await?;
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    assert!(
        ids.iter().all(|id| traces.contains(id)),
        "exemplars name the drains' traces: {ids:?} vs {traces:?}"
    );
    // The held requests made a drain wait for the evidence (sessions to end).
    let waited = until("the evidence wait", || async {
        let n = prometheus
            .query("sum(sluice_evidence_wait_duration_seconds_sum{wait=\"evidence\"})")
            .await?;
        (n > 0.0).then_some(n)
    })
    .await;
    assert!((0.5..30.0).contains(&waited), "about the held second: {waited}");
    let events = prometheus
        .query("sum(sluice_watch_events_total{cluster=\"demo\"})")
        .await
        .unwrap();
    assert!(events >= 9.0, "the rollout's pod updates were watched: {events}");
    let lag = prometheus
        .query("time() - sluice_watch_last_event_timestamp_seconds{cluster=\"demo\"}")
        .await
        .unwrap();
    assert!((-5.0..120.0).contains(&lag), "{lag}");
    let leader = prometheus.query("sluice_leader").await.unwrap();
    assert_eq!(leader, 1.0, "a sole writer may write");
    until("every pod back in traffic, as scraped", || async {
        let out = prometheus.query("sum(sluice_pods_out_of_traffic) or vector(0)").await?;
        (out == 0.0).then_some(())
    })
    .await;
}
