//! The `sluice` command line: config errors are one line naming the field, exit 64, before
//! anything is bound; `sluice crd` prints a CRD the simulator accepts.

use std::process::Command;

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("sluice runs")
}

#[test]
fn invalid_config_is_one_line_and_exit_64() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("clusters:\n- name: a\n", "clusters[0].kubeconfig: required unless inCluster is true"),
        ("clusters:\n- name: a\n  kubeconfig: /k\nadapters:\n- kind: haproxy\n  name: lb\n  endpoint: unix:/x\n  bogus: 1\n", "adapters[0]"),
        ("clusters:\n- name: a\n  kubeconfig: /k\nlisten:\n  health: 999.1.1.1:1\n", "listen.health"),
        ("clusters: [\n", "line 2"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        for args in [
            vec!["check-config", path.to_str().unwrap()],
            vec!["run", "--config", path.to_str().unwrap()],
        ] {
            let out = sluice(&args);
            assert_eq!(out.status.code(), Some(64), "{args:?} on {text:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 1, "one line: {err}");
            assert!(lines[0].contains(want), "{:?} should name {want:?}", lines[0]);
            assert!(
                lines[0].contains(path.to_str().unwrap()),
                "names the file: {}",
                lines[0]
            );
        }
    }
    let out = sluice(&["check-config", "/nonexistent/sluice.yaml"]);
    assert_eq!(out.status.code(), Some(64));
    let out = sluice(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn crd_prints_the_traffic_binding_definition() {
    let out = sluice(&["crd"]);
    assert!(out.status.success());
    let crd: serde_json::Value = serde_yaml::from_slice(&out.stdout).expect("YAML");
    assert_eq!(crd["metadata"]["name"], "trafficbindings.sluice.dev");
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
    assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
}
