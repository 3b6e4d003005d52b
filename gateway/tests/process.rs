//! The real `sluice` process: killed with SIGKILL in the middle of a drain and started
//! again, it completes the drain with nothing lost; and `kubectl` against the simulator
//! shows the pod contract exactly as the design says.

use std::process::Command;
use std::time::Duration;

use sluice::demo::Stage;

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_drain_then_restart_completes_the_drain() {
    let mut stage = Stage::new(2, true).await.expect("stage");
    let health = free_addr();
    let config = stage.dir.join("sluice.yaml");
    std::fs::write(&config, stage.gateway_config_text(health)).unwrap();
    let gw = spawn_gateway(&config, health).await;
    stage.wait_ready(0, T).await.expect("restored by the process");
    stage.wait_ready(1, T).await.expect("restored by the process");

    let held = hold_in_web(&stage, 4, 2000).await;
    stage.set_kruise_state(0, "PreparingDelete").await.unwrap();
    wait_gate(&stage.pods, "web-1", "False").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(gw); // SIGKILL
    let p = stage.pods.get("web-1").await.unwrap();
    assert!(
        p.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"sluice.dev/slb".to_string()),
        "killed before the drain was verified"
    );

    let _gw = spawn_gateway(&config, health).await;
    // The pod's server stops the moment the finalizer goes, as the workload controller
    // would stop it: a request the pod still held then would fail.
    within("the restarted process to remove the finalizer", async {
        loop {
            let p = stage.pods.get("web-1").await.unwrap();
            if !p
                .metadata
                .finalizers
                .unwrap_or_default()
                .iter()
                .any(|f| f.starts_with("sluice.dev/"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    stage.backends[0].take();
    for h in held {
        assert_eq!(
            within("a held request", h)
                .await
                .unwrap()
                .expect("in-flight request completes"),
            200,
            "nothing lost: the finalizer went only after the pod's last request"
        );
    }
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = sluice_adapter::testing::output_within(
        Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_the_pod_contract() {
    let stage = Stage::new(2, true).await.expect("stage");
    let _gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    let yaml = kubectl(&stage.kubeconfig, &["get", "pod", "web-1", "-o", "yaml"]);
    let v: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(
        v["metadata"]["finalizers"],
        serde_json::json!(["sluice.dev/ledger", "sluice.dev/slb"])
    );
    assert!(
        v["metadata"]["annotations"]["sluice.dev/registrations"]
            .as_str()
            .is_some_and(|l| l.contains("\"backend\":\"web\"")),
        "kubectl shows the ledger"
    );
    let conds = v["status"]["conditions"].as_array().unwrap();
    let find = |t: &str| {
        conds
            .iter()
            .find(|c| c["type"] == t)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(find("sluice.dev/traffic-ready").as_deref(), Some("True"));
    assert_eq!(find("Ready").as_deref(), Some("True"));
    let status: serde_json::Value =
        serde_json::from_str(v["metadata"]["annotations"]["sluice.dev/status"].as_str().unwrap()).unwrap();
    assert_eq!(status["state"], "serving");

    stage.set_kruise_state(0, "PreparingDelete").await.unwrap();
    stage.wait_drained(0, T).await.unwrap();
    let describe = within("the drain events", async {
        loop {
            let d = kubectl(&stage.kubeconfig, &["describe", "pod", "web-1"]);
            if d.contains("TrafficDrained") {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for needle in [
        "sluice.dev/traffic-ready",
        "DrainStarted",
        "TrafficDrained",
        "TrafficRestored",
    ] {
        assert!(
            describe.contains(needle),
            "kubectl describe pod shows {needle}:\n{describe}"
        );
    }
    let yaml = kubectl(&stage.kubeconfig, &["get", "pod", "web-1", "-o", "yaml"]);
    let v: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    assert!(
        v["metadata"]["finalizers"].is_null(),
        "finalizer removed after verified drain: {yaml}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_text_or_json_lines_never_escape_codes() {
    let stage = Stage::new(1, true).await.expect("stage");
    for format in ["text", "json"] {
        let health = free_addr();
        let config = stage.dir.join(format!("{format}.yaml"));
        std::fs::write(&config, stage.gateway_config_text(health)).unwrap();
        let log = stage.dir.join(format!("{format}.log"));
        let gw = spawn_gateway_args(&config, health, Some(&log), &["--log-format", format]).await;
        stage.wait_ready(0, T).await.unwrap();
        gw.signal("TERM");
        let text = until("the log to end with the shutdown", || async {
            let t = std::fs::read_to_string(&log).ok()?;
            t.contains("Stopped.").then_some(t)
        })
        .await;
        assert!(!text.contains('\x1b'), "{format}: no escape codes in a file: {text}");
        assert!(text.contains("Sluice gateway started."), "{text}");
        if format == "json" {
            for line in text.lines().filter(|l| !l.is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
            }
        }
    }
}
