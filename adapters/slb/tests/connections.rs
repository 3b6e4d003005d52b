//! The runtime API client keeps a few connections open in prompt mode and reuses them:
//! however many calls run at once, HAProxy sees at most the configured number of
//! connections (a connection per call overflowed its accept backlog with thousands of
//! pods); a pooled connection that HAProxy closed is replaced without failing the call;
//! and a call abandoned mid-answer never leaves its answer to the next one.

use std::sync::Arc;
use std::time::Duration;

use sluice_adapter_slb::testing::*;
use sluice_adapter_slb::RuntimeClient;

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_calls_at_once_use_at_most_the_pool() {
    let (port, _pods) = start_pods(&[], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let client = Arc::new(RuntimeClient::with_connections(
        h.unix_endpoint(),
        Duration::from_secs(10),
        4,
    ));
    let answers = futures::future::join_all((0..1000).map(|i| {
        let client = client.clone();
        async move {
            if i % 2 == 0 {
                client.show_servers_state("web").await.map(|s| s.len())
            } else {
                client.show_stat_servers("web").await.map(|s| s.len())
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
    assert!(
        client.opened() <= 4,
        "{} connections opened for a pool of 4",
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
    let client = RuntimeClient::with_connections(h.unix_endpoint(), Duration::from_secs(2), 1);
    assert_eq!(client.cli_level().await.expect("first call"), "admin");
    assert_eq!(client.opened(), 1);
    // HAProxy closes the pooled connection (as its `stats timeout`, a reload or a restart
    // of the socket would): every CLI session is shut down from another connection.
    let other = RuntimeClient::with_connections(h.unix_endpoint(), Duration::from_secs(2), 1);
    let sessions = other.raw("show sess").await.expect("show sess");
    let cli: Vec<String> = sessions
        .lines()
        .filter(|l| l.contains("fe=GLOBAL"))
        .filter_map(|l| l.split(':').next())
        .map(|id| format!("shutdown session {id}"))
        .collect();
    assert!(cli.len() >= 2, "the pooled and this connection: {sessions}");
    let _ = other.raw(&cli.join("; ")).await;
    // The pooled connection is closed now: the call goes on a fresh one, and succeeds.
    assert_eq!(
        client
            .cli_level()
            .await
            .expect("call after HAProxy closed the connection"),
        "admin"
    );
    assert_eq!(client.opened(), 2);
    // And the fresh one is reused while it is open.
    assert_eq!(client.show_servers_state("web").await.expect("state").len(), 3);
    assert_eq!(client.opened(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_abandoned_mid_answer_never_answers_the_next_one() {
    let (port, _pods) = start_pods(&[], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let client = RuntimeClient::with_connections(h.unix_endpoint(), Duration::from_secs(2), 1);
    for round in 0..50u64 {
        // Dropped at some point of its exchange (before, during or after the answer).
        let cut = Duration::from_micros(round * 20);
        let _ = tokio::time::timeout(cut, client.show_stat()).await;
        // The next call on the same pool gets its own answer.
        let level = client.cli_level().await.expect("cli level");
        assert_eq!(
            level, "admin",
            "round {round}: the answer of another command: {level:?}"
        );
        let state = client.show_servers_state("web").await.expect("servers state");
        assert_eq!(state.len(), 3, "round {round}");
    }
}
