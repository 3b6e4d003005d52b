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
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let r = health_get(self.addr, &format!("/api/v1/query?query={encoded}")).await?;
        let body = r.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counts_every_drain_of_a_rollout() {
    let stage = Stage::new(3, true).await.expect("stage");
    let gw = stage.start_gateway().await.expect("gateway");
    for i in 0..3 {
        stage.wait_ready(i, T).await.unwrap();
    }
    let prometheus = Prometheus::start(gw.health_addr).await;
    until("Prometheus to scrape the gateway", || async {
        (prometheus.query("up{job=\"sluice\"}").await? == 1.0).then_some(())
    })
    .await;
    // A rollout of the three pods, one after the other, while Prometheus scrapes.
    for i in 0..3 {
        stage.set_kruise_state(i, "PreparingUpdate").await.unwrap();
        stage.wait_drained(i, T).await.unwrap();
        stage.set_kruise_state(i, "Updated").await.unwrap();
        wait_gate(&stage.pods, &Stage::name(i), "True").await;
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
    let leader = prometheus.query("sluice_leader").await.unwrap();
    assert_eq!(leader, 1.0, "a sole writer may write");
    until("every pod back in traffic, as scraped", || async {
        let out = prometheus.query("sum(sluice_pods_out_of_traffic) or vector(0)").await?;
        (out == 0.0).then_some(())
    })
    .await;
}
