//! Shared test helpers: targets, polling with deadlines, real servers from the crate's
//! `testing` harness (a missing binary fails the test with an install hint), and the
//! Nacos contract test double.
#![allow(dead_code)]

pub mod etcd;
pub mod nacos_double;
pub mod zookeeper;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, AdapterError, Observation, Target, TrafficState};
use sluice_adapter_rpc::testing::{EtcdServer, ZooKeeperServer};

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// The settle window the tests configure.
pub const SETTLE: Duration = Duration::from_millis(300);

// Registry entries only name addresses; nothing listens on them. A block of their own
// keeps these tests clear of other harnesses on this machine.
pub const IP1: Ipv4Addr = Ipv4Addr::new(127, 0, 84, 11);
pub const IP2: Ipv4Addr = Ipv4Addr::new(127, 0, 84, 12);
pub const IP3: Ipv4Addr = Ipv4Addr::new(127, 0, 84, 13);
pub const PORT: u16 = 20880;

/// A target at `ip:PORT` with the given parameters.
pub fn target(ip: Ipv4Addr, params: &[(&str, &str)]) -> Target {
    sluice_adapter::testing::target(ip, PORT, params)
}

/// Starts a fresh etcd; fails the test (with an install hint) when etcd is missing.
pub async fn etcd() -> EtcdServer {
    tokio::time::timeout(Duration::from_secs(60), EtcdServer::start())
        .await
        .expect("etcd to start within 60 s")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Starts a fresh ZooKeeper; fails the test (with an install hint) when it is missing.
pub async fn zookeeper() -> ZooKeeperServer {
    tokio::time::timeout(Duration::from_secs(90), ZooKeeperServer::start())
        .await
        .expect("ZooKeeper to start within 90 s")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `observe` every 5 ms until it reports `state` (polling through retryable errors);
/// returns that observation and when it was first seen.
pub async fn wait_state(adapter: &dyn Adapter, t: &Target, state: TrafficState, what: &str) -> (Observation, Instant) {
    let r = sluice_adapter::testing::wait_state(adapter, t, state, WAIT, what).await;
    (r.observation, r.at)
}

/// Observes for `for_` and asserts no observation reports `forbidden`; returns the last.
pub async fn never_state(
    adapter: &dyn Adapter,
    t: &Target,
    forbidden: TrafficState,
    for_: Duration,
    why: &str,
) -> Observation {
    let until = Instant::now() + for_;
    let mut last = None;
    while Instant::now() < until {
        let obs = tokio::time::timeout(WAIT, adapter.observe(t))
            .await
            .expect("observe to answer")
            .expect("observe");
        assert_ne!(obs.state, forbidden, "{why}: {obs:?}");
        last = Some(obs);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last.expect("at least one observation")
}

/// Runs one adapter call with a deadline.
pub async fn call<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, AdapterError>>,
) -> Result<T, AdapterError> {
    tokio::time::timeout(WAIT, fut).await.expect(what)
}

/// Asserts a call failed with a retryable error whose message contains `needle`.
pub fn assert_retryable<T: std::fmt::Debug>(r: Result<T, AdapterError>, needle: &str) {
    let e = r.expect_err("a retryable error");
    assert!(e.is_retryable(), "expected retryable, got {e:?}");
    println!("retryable: {}", e.message);
    assert!(e.message.contains(needle), "{needle:?} not in {:?}", e.message);
}

/// Asserts a call failed with a permanent error whose message contains `needle`.
pub fn assert_permanent<T: std::fmt::Debug>(r: Result<T, AdapterError>, needle: &str) {
    let e = r.expect_err("a permanent error");
    assert!(!e.is_retryable(), "expected permanent, got {e:?}");
    println!("permanent: {}", e.message);
    assert!(e.message.contains(needle), "{needle:?} not in {:?}", e.message);
}
