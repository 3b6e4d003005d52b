//! Dynamic mode (add / drain / delete), endpoints and error classification against a real
//! HAProxy 2.6.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_slb::testing::*;
use sluice_adapter_slb::{dynamic_server_name, Endpoint, HaproxyAdapter, HaproxyConfig, Mode};

const DYN1: Ipv4Addr = Ipv4Addr::new(127, 0, 83, 21);
const DYN2: Ipv4Addr = Ipv4Addr::new(127, 0, 83, 22);

fn dynamic_adapter(h: &Haproxy) -> HaproxyAdapter {
    let mut config = HaproxyConfig::new("lb-dyn", h.unix_endpoint());
    config.mode = Mode::Dynamic {
        check: true,
        check_options: "inter 100 rise 1 fall 1".split(' ').map(String::from).collect(),
    };
    HaproxyAdapter::new(config).expect("config")
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamic_mode_adds_drains_and_deletes() {
    let (port, mut pods) = start_pods(&[("d1", DYN1)], &[DYN2]).await;
    let pod = pods.remove(0);
    let h = Haproxy::start(&[], port).await;
    let a = dynamic_adapter(&h);
    let t = target(DYN1, port, "dyn");
    let name = dynamic_server_name(DYN1.into(), port);

    let obs = a.observe(&t).await.expect("observe before register");
    assert_eq!(
        (obs.state, obs.evidence.contains("server absent")),
        (TrafficState::Drained, true),
        "{obs:?}"
    );

    a.register(&t).await.expect("register (add server)");
    assert!(h.cmd("show servers state dyn").await.contains(&name));
    wait_state(&a, &t, TrafficState::Serving, "dynamic server UP").await;
    a.register(&t).await.expect("register again");
    assert_eq!(get_once(h.frontend_dyn, "/", None).await.body, "d1");

    // A second pod not listening yet stays Registered (DOWN) until it does.
    let t2 = target(DYN2, port, "dyn");
    a.register(&t2).await.expect("register pod 2");
    let until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < until {
        assert_eq!(a.observe(&t2).await.expect("observe").state, TrafficState::Registered);
        let r = get_once(h.frontend_dyn, "/", None).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "d1"),
            "routed to a pod that does not listen"
        );
    }
    let _pod2 = Pod::start("d2", DYN2, port).await;
    wait_state(&a, &t2, TrafficState::Serving, "pod 2 UP after its check").await;

    // Drain pod 1 with a request in flight.
    let fe = h.frontend_dyn;
    let before = pod.hits();
    let held = tokio::spawn(async move {
        let mut c = Client::connect(fe).await;
        loop {
            // round robin: retry until a held request lands on d1
            let r = c.get("/hold/400", None).await.expect("request");
            if r.body == "d1" {
                return r;
            }
        }
    });
    tokio::time::timeout(WAIT, async {
        while pod.hits() == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("a held request on d1");
    h.wait_scur("dyn", &name, 1).await;
    a.deregister(&t).await.expect("deregister");
    assert_eq!(a.observe(&t).await.expect("observe").state, TrafficState::Draining);
    let obs = drive_drain(&a, &t, "dynamic server drained and deleted").await;
    assert!(obs.evidence.contains("server deleted"), "{}", obs.evidence);
    let resp = tokio::time::timeout(WAIT, held).await.expect("held").expect("join");
    assert_eq!(resp.status, 200);
    assert!(
        !h.cmd("show servers state dyn").await.contains(&name),
        "server still present"
    );

    a.deregister(&t).await.expect("deregister after delete");
    assert!(a.observe(&t).await.expect("observe").evidence.contains("server absent"));
    for _ in 0..5 {
        assert_eq!(get_once(h.frontend_dyn, "/", None).await.body, "d2");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_disabled_in_the_config_is_put_in_service() {
    let (port, _pods) = start_pods(&[("s1", IP1), ("s2", IP2)], &[IP3]).await;
    let h = Haproxy::start_with_options(&three_servers()[..2], port, &[("s2", "disabled")]).await;
    assert_eq!(h.status("web", "s2").await, "MAINT");
    // Measured on HAProxy 2.6: the runtime API's `state ready` lifts maintenance set by
    // `disabled` in haproxy.cfg, so register treats it like any maintenance.
    let a = HaproxyAdapter::new(HaproxyConfig::new("lb", h.unix_endpoint())).expect("config");
    let t = target(IP2, port, "web");
    a.register(&t).await.expect("a disabled server registers");
    wait_state(&a, &t, TrafficState::Serving, "s2 serving after its health check").await;
    assert_eq!(h.status("web", "s2").await, "UP");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_backend_and_address_are_permanent() {
    let (port, _pods) = start_pods(&[("s1", IP1), ("s2", IP2)], &[IP3]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let a = HaproxyAdapter::new(HaproxyConfig::new("lb", h.unix_endpoint())).expect("config");

    let t = target(IP1, port, "nope");
    let errs = [
        a.register(&t).await.unwrap_err(),
        a.deregister(&t).await.unwrap_err(),
        a.observe(&t).await.unwrap_err(),
    ];
    for e in errs {
        assert!(!e.is_retryable(), "{e}");
        assert!(e.message.contains("backend 'nope' not found"), "{e}");
    }

    let e = a
        .register(&target("127.0.0.99".parse().unwrap(), port, "web"))
        .await
        .unwrap_err();
    assert!(
        !e.is_retryable() && e.message.contains("no server with address 127.0.0.99"),
        "{e}"
    );

    let e = a
        .observe(&target(IP1, port, "web;shutdown sessions server web/s2"))
        .await
        .unwrap_err();
    assert!(
        !e.is_retryable() && e.message.contains("invalid HAProxy backend name"),
        "{e}"
    );

    let mut config = HaproxyConfig::new("lb", h.unix_endpoint());
    config.allowed_backends = vec!["dyn".into()];
    let limited = HaproxyAdapter::new(config).expect("config");
    let e = limited.deregister(&target(IP1, port, "web")).await.unwrap_err();
    assert!(!e.is_retryable() && e.message.contains("allowedBackends"), "{e}");
    assert_eq!(h.status("web", "s1").await, "UP");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_or_silent_endpoints_are_retryable() {
    let dir = std::env::temp_dir().join(format!("sluice-slb-missing-{}", std::process::id()));
    let missing = dir.join("admin.sock");
    let a = HaproxyAdapter::new(HaproxyConfig::new("lb", Endpoint::Unix(missing.clone()))).expect("config");
    let e = a.health().await.unwrap_err();
    assert!(
        e.is_retryable() && e.message.contains(&missing.display().to_string()),
        "{e}"
    );
    let e = a.observe(&target(IP1, 80, "web")).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");

    let refused = format!("tcp:127.0.0.1:{}", free_port(&[]));
    let a = HaproxyAdapter::new(HaproxyConfig::new("lb", refused.parse().unwrap())).expect("config");
    let e = a.deregister(&target(IP1, 80, "web")).await.unwrap_err();
    assert!(e.is_retryable() && e.message.contains(&refused), "{e}");

    // Accepts but never answers: the per-call timeout turns it into a retryable error.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut config = HaproxyConfig::new("lb", Endpoint::Tcp(addr));
    config.timeout = Duration::from_millis(200);
    let a = HaproxyAdapter::new(config).expect("config");
    let started = Instant::now();
    let e = tokio::time::timeout(WAIT, a.health())
        .await
        .expect("health returns")
        .unwrap_err();
    assert!(e.is_retryable() && e.message.contains("did not answer"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn low_level_or_inaccessible_sockets_are_permanent() {
    let (port, _pods) = start_pods(&[("s1", IP1)], &[]).await;
    let h = Haproxy::start(&three_servers()[..1], port).await;
    let t = target(IP1, port, "web");

    // `level user` socket: reading works, `set server` is refused with "Permission denied".
    let a = HaproxyAdapter::new(HaproxyConfig::new("lb", h.user_endpoint())).expect("config");
    wait_state(&a, &t, TrafficState::Serving, "observe works at level user").await;
    let e = a.deregister(&t).await.unwrap_err();
    assert!(!e.is_retryable() && e.message.contains("Permission denied"), "{e}");
    let e = a.health().await.unwrap_err();
    assert!(!e.is_retryable() && e.message.contains("level 'user'"), "{e}");
    assert_eq!(h.status("web", "s1").await, "UP");

    // EACCES on the unix socket. Root bypasses file modes, so the adapter is run by this
    // test binary again as an unprivileged user (nobody, through setpriv, when the suite
    // runs as root): the probe below connects and reports what it got.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&h.admin_sock, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    let dir = h.admin_sock.parent().expect("socket directory");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod 755 its directory");
    let exe = std::env::current_exe().expect("this test binary");
    let mut cmd = if running_as_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe);
        c
    } else {
        std::process::Command::new(&exe)
    };
    cmd.args([
        "--exact",
        "unprivileged_probe",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("SLUICE_PROBE_SOCKET", &h.admin_sock);
    let out = tokio::time::timeout(WAIT, tokio::process::Command::from(cmd).output())
        .await
        .expect("the unprivileged probe finishes")
        .expect("the unprivileged probe starts (setpriv is in util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("probe: permanent: "),
        "probe as an unprivileged user: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("permission denied"), "{stdout}");
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// Run by `low_level_or_inaccessible_sockets_are_permanent` as an unprivileged user, against
/// the chmod-000 socket it names: the adapter's health check must fail as a permanent error.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run as an unprivileged user by low_level_or_inaccessible_sockets_are_permanent"]
async fn unprivileged_probe() {
    let path = std::env::var("SLUICE_PROBE_SOCKET").expect("SLUICE_PROBE_SOCKET names the socket");
    assert!(!running_as_root(), "the probe must not run as root");
    let a = HaproxyAdapter::new(HaproxyConfig::new("lb", Endpoint::Unix(path.into()))).expect("config");
    let e = a
        .health()
        .await
        .expect_err("a chmod 000 socket refuses an unprivileged user");
    assert!(!e.is_retryable(), "{e}");
    println!("probe: permanent: {}", e.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_and_unix_endpoints_both_work() {
    let (port, _pods) = start_pods(&[("s1", IP1), ("s2", IP2)], &[]).await;
    let h = Haproxy::start(&three_servers()[..2], port).await;
    for endpoint in [h.unix_endpoint(), h.tcp_endpoint()] {
        let a = HaproxyAdapter::new(HaproxyConfig::new("lb", endpoint.clone())).expect("config");
        a.health()
            .await
            .unwrap_or_else(|e| panic!("health via {endpoint}: {e}"));
        let t = target(IP2, port, "web");
        wait_state(&a, &t, TrafficState::Serving, "serving").await;
        a.deregister(&t).await.expect("deregister");
        drive_drain(&a, &t, "drained").await;
        a.register(&t).await.expect("register");
        wait_state(&a, &t, TrafficState::Serving, "serving again").await;
    }
}
