//! The `sluice` command line: config errors are one line naming the field, exit 64, before
//! anything is bound; `sluice crd` prints a CRD the simulator accepts.

use std::process::Command;

fn sluice(args: &[&str]) -> std::process::Output {
    sluice_adapter::testing::output_within(
        Command::new(env!("CARGO_BIN_EXE_sluice")).args(args),
        std::time::Duration::from_secs(120),
    )
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
fn crd_prints_the_traffic_binding_and_endpoint_drain_definitions() {
    use serde::Deserialize;
    let out = sluice(&["crd"]);
    assert!(out.status.success());
    let crds: Vec<serde_json::Value> = serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| serde_json::Value::deserialize(d).expect("YAML"))
        .collect();
    let names: Vec<&str> = crds.iter().map(|c| c["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["trafficbindings.sluice.dev", "endpointdrains.sluice.dev"]);
    for crd in &crds {
        assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
        assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
    }
}

#[test]
fn adapter_conformance_command_runs_the_battery_against_a_plugin() {
    let python = sluice_adapter::testing::python_with_grpc();
    let port = sluice_adapter::testing::free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python-plugin/plugin.py");
    let mut plugin = Command::new(python)
        .arg(script)
        .args(["--port", &port.to_string(), "--drain-ms", "100", "--ready-ms", "50"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("plugin starts");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "plugin listens");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = sluice(&[
        "adapter",
        "conformance",
        "--endpoint",
        &endpoint,
        "--kind",
        "rpc",
        "--param",
        "service=payments",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("conformance: 6 passed, 0 failed"), "{text}");
    assert!(
        text.contains("N/A   backend down"),
        "checks the command cannot run are N/A, not passed: {text}"
    );

    // The wrong kind fails, with the reason.
    let out = sluice(&[
        "adapter",
        "conformance",
        "--endpoint",
        &endpoint,
        "--kind",
        "dns",
        "--param",
        "service=x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("declares adapterKind \"dns\""));
    let _ = plugin.kill();
    let _ = plugin.wait();

    let out = sluice(&["adapter", "conformance", "--kind", "rpc"]);
    assert_eq!(out.status.code(), Some(64), "missing --endpoint is a usage error");
}

#[test]
fn every_command_has_help_and_bad_arguments_exit_64_naming_the_flag() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check-config", "--help"],
        vec!["crd", "--help"],
        vec!["adapter", "conformance", "--help"],
        vec!["demo", "--help"],
        vec!["drain", "--help"],
        vec!["restore", "--help"],
        vec!["get", "--help"],
        vec!["list", "--help"],
        vec!["watch", "--help"],
        vec!["release", "--help"],
    ] {
        let out = sluice(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: sluice"), "{args:?}: {text}");
    }
    // What the help offers, the parser takes.
    let demo = String::from_utf8_lossy(&sluice(&["demo", "--help"]).stdout).to_string();
    for flag in ["--pods", "--clients", "--no-sluice", "--quiet"] {
        assert!(demo.contains(flag), "{demo}");
    }
    let run = String::from_utf8_lossy(&sluice(&["run", "--help"]).stdout).to_string();
    assert!(run.contains("--log-format") && run.contains("json"), "{run}");
    for (args, names) in [
        (vec!["demo", "--seconds-between", "3"], "--seconds-between"),
        (vec!["demo", "--pods", "1"], "--pods"),
        (vec!["run"], "--config"),
        (vec!["run", "--config", "x", "--log-format", "xml"], "--log-format"),
        (vec!["adapter", "conformance", "--kind", "slb"], "--endpoint"),
        (vec!["drain", "web-1"], "--reason"),
        (vec!["drain", "--reason", "x"], "<POD>"),
        (vec!["drain", "web-1", "-l", "app=web", "--reason", "x"], "--selector"),
        (
            vec!["restore", "--target", "lb:backend=web", "--reason", "x"],
            "--endpoint",
        ),
        (vec!["list", "-o", "xml"], "--output"),
    ] {
        let out = sluice(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{args:?}: {err}");
    }
}
