//! The runtime API client keeps a few connections open in prompt mode for writes and
//! reuses them: however many calls run at once, HAProxy sees at most the configured number
//! of connections (a connection per call overflowed its accept backlog with thousands of
//! pods); a pooled connection that HAProxy closed is replaced without failing the call; a
//! call abandoned mid-answer never leaves its answer to the next one; and after a reload,
//! reads — the evidence — come from the new HAProxy process at once, writes within
//! `MAX_AGE`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_adapter_slb::testing::*;
use sluice_adapter_slb::{Endpoint, RuntimeClient};

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_calls_at_once_use_at_most_the_pool() {
    let (port, _pods) = start_pods(&[], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let client = Arc::new(RuntimeClient::with_connections(
        h.unix_endpoint(),
        Duration::from_secs(10),
        4,
    ));
    // Reads, and writes that change nothing (the weight the servers already have).
    let answers = futures::future::join_all((0..1000).map(|i| {
        let client = client.clone();
        async move {
            match i % 3 {
                0 => client.show_servers_state("web").await.map(|s| s.len()),
                1 => client.show_stat_servers("web").await.map(|s| s.len()),
                _ => client
                    .raw("set server web/s1 weight 1; set server web/s2 weight 1; set server web/s3 weight 1")
                    .await
                    .map(|a| a.matches('\n').count()),
            }
        }
    }))
    .await;
    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 1000 failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|n| *n == 3)), "{answers:?}");
    assert_eq!(client.sent(), 1000);
    // Writes keep at most 3 open (the fourth is for reads, one at a time).
    assert!(
        (1..=3).contains(&client.opened()),
        "{} pooled connections opened for a pool of 4",
        client.opened()
    );

    // Several commands on one line: one answer each, in order, as outside prompt mode.
    let out = client
        .raw("show cli level; set server web/nope state ready; show cli level")
        .await
        .expect("raw");
    assert_eq!(out, "admin\n\nNo such server.\n\nadmin\n\n", "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_haproxy_closed_is_replaced_without_failing_the_call() {
    let (port, _pods) = start_pods(&[], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let client = RuntimeClient::with_connections(h.unix_endpoint(), Duration::from_secs(2), 2);
    assert_eq!(client.raw("show cli level").await.expect("first call"), "admin\n\n");
    assert_eq!(client.opened(), 1);
    // HAProxy closes the pooled connection (as its `stats timeout`, a reload or a restart
    // of the socket would): every CLI session is shut down from another connection.
    let sessions = client.raw("show sess").await.expect("show sess");
    let cli: Vec<String> = sessions
        .lines()
        .filter(|l| l.contains("fe=GLOBAL"))
        .filter_map(|l| l.split(':').next())
        .map(|id| format!("shutdown session {id}"))
        .collect();
    assert!(!cli.is_empty(), "the pooled connection's session: {sessions}");
    let other = RuntimeClient::with_connections(h.unix_endpoint(), Duration::from_secs(2), 2);
    let _ = other.raw(&cli.join("; ")).await;
    // The pooled connection is closed now: the call goes on a fresh one, and succeeds.
    let level = client
        .raw("show cli level")
        .await
        .expect("call after HAProxy closed the connection");
    assert_eq!(level, "admin\n\n");
    assert_eq!(client.opened(), 2);
    // And the fresh one is reused while it is open.
    client.raw("set server web/s1 weight 1").await.expect("write");
    assert_eq!(client.opened(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_abandoned_mid_answer_never_answers_the_next_one() {
    let (port, _pods) = start_pods(&[], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let client = RuntimeClient::with_connections(h.unix_endpoint(), Duration::from_secs(2), 2);
    for round in 0..50u64 {
        // A long answer on the pooled connection, dropped at some point of its exchange
        // (before, during or after the answer).
        let cut = Duration::from_micros(round * 20);
        let _ = tokio::time::timeout(cut, client.raw("show stat")).await;
        // The next call on the same pool gets its own answer.
        let level = client.raw("show cli level").await.expect("cli level");
        assert_eq!(
            level, "admin\n\n",
            "round {round}: the answer of another command: {level:?}"
        );
        let state = client.raw("show servers state web").await.expect("servers state");
        assert!(state.starts_with("1\n# be_id"), "round {round}: {state:?}");
    }
}

/// HAProxy in master-worker mode, stopped (with its workers) when dropped.
struct MasterWorker {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for MasterWorker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pid(info: &[(String, String)]) -> String {
    info.iter()
        .find(|(k, _)| k == "Pid")
        .map(|(_, v)| v.clone())
        .expect("show info has a Pid")
}

async fn weight(client: &RuntimeClient) -> String {
    let servers = client.show_servers_state("web").await.expect("servers state");
    servers[0].row.get("srv_uweight").expect("srv_uweight").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_reload_reads_come_from_the_new_process_and_writes_follow() {
    // A reload starts a new worker; the old one keeps serving the connections it has (its
    // frontends closed, so its servers show no sessions). A pooled connection is such a
    // connection: evidence read on it could verify a drain the new process never saw.
    let dir = sluice_adapter::testing::temp_dir("slb-reload");
    let sock = dir.join("admin.sock");
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  stats socket {} mode 600 level admin\n\ndefaults\n  mode http\n  timeout connect 1s\n  \
             timeout client 5s\n  timeout server 5s\n\nbackend web\n  server s1 127.0.0.1:9 weight 1\n",
            sock.display()
        ),
    )
    .expect("write haproxy.cfg");
    let log = std::fs::File::create(dir.join("haproxy.log")).expect("log");
    let child = std::process::Command::new("haproxy")
        .args(["-W", "-db", "-f"])
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("the `haproxy` binary (a real HAProxy 2.6+) runs");
    let master = MasterWorker { child, dir };
    let client = RuntimeClient::with_connections(Endpoint::Unix(sock), Duration::from_secs(2), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let old = loop {
        if let Ok(info) = client.show_info().await {
            break pid(&info);
        }
        assert!(Instant::now() < deadline, "HAProxy's runtime API never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A write on the pooled connection, to the first worker.
    client.raw("set server web/s1 weight 50").await.expect("write");
    assert_eq!(weight(&client).await, "50");

    let reload = || {
        let sent = std::process::Command::new("kill")
            .arg("-USR2")
            .arg(master.child.id().to_string())
            .status()
            .expect("kill -USR2");
        assert!(sent.success());
        Instant::now()
    };
    let mut signalled = reload();
    // A deadline of its own: a new worker parses its config and starts under a loaded CI.
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        let now = pid(&client.show_info().await.expect("show info"));
        if now != old {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the reload never started a new worker; HAProxy's log:\n{}",
            std::fs::read_to_string(master.dir.join("haproxy.log")).unwrap_or_default()
        );
        if signalled.elapsed() > Duration::from_secs(5) {
            // A master still starting up can miss the signal (twice, in full test runs on
            // a loaded machine, never alone): ask again. A reload it did take would have
            // shown within these seconds.
            signalled = reload();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Evidence comes from the new worker at once: its s1 has the configured weight.
    assert_eq!(
        weight(&client).await,
        "1",
        "a read reached the old worker ({old}), not {new}"
    );
    // A pooled connection is not reused past MAX_AGE: a write then reaches the new worker.
    tokio::time::sleep(sluice_adapter_slb::runtime::MAX_AGE + Duration::from_millis(200)).await;
    client.raw("set server web/s1 weight 30").await.expect("write");
    assert_eq!(weight(&client).await, "30", "the write went to the old worker ({old})");
    assert_eq!(client.opened(), 2);
    drop(client);
}
