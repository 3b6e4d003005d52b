//! RPC registry drain benchmark: how close the etcd and ZooKeeper/Dubbo adapters' "deregister
//! + verify" comes to the loopback floor of the registry itself.
//!
//! Starts a real etcd and a real ZooKeeper on 127.0.0.1 (the `testing` harness of
//! `sluice-adapter-rpc`), then for each registry measures, over `--rounds` rounds (default
//! 200, after 20 warm-up rounds):
//!
//! - **floor**: one raw delete + one read confirming it, with the same client library the
//!   adapter uses (`etcd-client`: `delete` + `get`; `zookeeper-client`: `delete` + `exists`);
//! - **adapter**: `deregister` + `observe` polled until `Drained`, with `settleSeconds: 0`
//!   (settle windows are waiting time by design, not work, so they are excluded).
//!
//! Setup between rounds (putting the key / provider back) is not timed. Prints medians and
//! p90s, and the ratio adapter/floor per registry with PASS at ≤ 3×. Exits non-zero on FAIL.
//!
//! `cargo run --release -p sluice-bench --bin rpc-drain [-- --rounds N] [--json]`

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_adapter::{Adapter, PodRef, Target, TrafficState};
use sluice_adapter_rpc::etcd::{EtcdAdapter, EtcdConfig, Preset};
use sluice_adapter_rpc::testing::{EtcdServer, ZooKeeperServer};
use sluice_adapter_rpc::zookeeper::dubbo::{url_encode, Paths};
use sluice_adapter_rpc::zookeeper::{ZookeeperDubboAdapter, ZookeeperDubboConfig};
use zookeeper_client as zk;

const WARMUP: usize = 20;
const LIMIT: f64 = 3.0;
const IFACE: &str = "org.demo.Greeter";

fn target(param: (&str, &str)) -> Target {
    Target {
        pod: PodRef {
            cluster: "bench".into(),
            namespace: "default".into(),
            name: "pod-a".into(),
            uid: "a".into(),
        },
        ip: IpAddr::V4(Ipv4Addr::new(127, 0, 84, 11)),
        port: 20880,
        params: [(param.0.to_string(), param.1.to_string())].into(),
    }
}

/// Median and p90 in milliseconds.
fn stats(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[samples.len() / 2]),
        ms(samples[(samples.len() * 9 / 10).min(samples.len() - 1)]),
    )
}

/// Runs the floor round and the adapter round alternately, `WARMUP + rounds` times each,
/// and keeps the timed part of the last `rounds` of each. Alternating gives both the same
/// conditions (JIT warm-up of the JVM, other load on the machine).
async fn measure<F, FFut, A, AFut>(
    rounds: usize,
    mut floor: F,
    mut adapter: A,
) -> Result<(Vec<Duration>, Vec<Duration>)>
where
    F: FnMut() -> FFut,
    FFut: std::future::Future<Output = Result<Duration>>,
    A: FnMut() -> AFut,
    AFut: std::future::Future<Output = Result<Duration>>,
{
    let limit = Duration::from_secs(10);
    let (mut floors, mut timed) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..WARMUP + rounds {
        let f = tokio::time::timeout(limit, floor())
            .await
            .context("a floor round took over 10 s")??;
        let a = tokio::time::timeout(limit, adapter())
            .await
            .context("an adapter round took over 10 s")??;
        if i >= WARMUP {
            floors.push(f);
            timed.push(a);
        }
    }
    Ok((floors, timed))
}

/// Polls `observe` until `Drained`; returns the number of polls.
async fn until_drained(adapter: &dyn Adapter, t: &Target) -> Result<u32> {
    let mut polls = 0;
    loop {
        polls += 1;
        let obs = adapter.observe(t).await?;
        if obs.state == TrafficState::Drained {
            return Ok(polls);
        }
        if polls > 10_000 {
            bail!("never Drained: {obs:?}");
        }
    }
}

async fn etcd_bench(rounds: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let etcd = EtcdServer::start().await.map_err(anyhow::Error::msg)?;
    let mut client = etcd.client().await;
    let key = "services/greeter/127.0.84.11:20880";
    let floor_key = "services/floor/127.0.84.12:20880";
    let value = r#"{"Op":0,"Addr":"127.0.84.11:20880","Metadata":null}"#;

    let mut config = EtcdConfig::new("bench", vec![etcd.endpoint()], Preset::GrpcGo);
    config.prefix = Some("services/".into());
    config.settle_seconds = Some(0.0);
    let adapter = EtcdAdapter::new(config)?;
    let t = target(("service", "greeter"));
    let polls = Cell::new(0);
    let (floor, timed) = measure(
        rounds,
        || {
            let mut c = client.clone();
            async move {
                c.put(floor_key, value, None).await?;
                let start = Instant::now();
                c.delete(floor_key, None).await?;
                let gone = c.get(floor_key, None).await?.kvs().is_empty();
                let d = start.elapsed();
                anyhow::ensure!(gone, "key still present after delete");
                Ok(d)
            }
        },
        || {
            let (adapter, t, polls) = (&adapter, &t, &polls);
            let mut c = client.clone();
            async move {
                c.put(key, value, None).await?;
                let start = Instant::now();
                adapter.deregister(t).await?;
                polls.set(polls.get() + until_drained(adapter, t).await?);
                Ok(start.elapsed())
            }
        },
    )
    .await?;
    say(format!(
        "etcd: {:.2} observe calls per round",
        f64::from(polls.get()) / (WARMUP + rounds) as f64
    ));
    client.delete(key, None).await?;
    Ok((floor, timed))
}

async fn zookeeper_bench(rounds: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let server = ZooKeeperServer::start().await.map_err(anyhow::Error::msg)?;
    let client = server.client(Duration::from_secs(10)).await;
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let paths = Paths::new("dubbo", IFACE, "127.0.84.11:20880");
    client.mkdir(&paths.providers, &persistent).await?;
    client.mkdir(&paths.configurators, &persistent).await?;

    // The provider registers itself (ephemeral node of its own session).
    let provider = server.client(Duration::from_secs(10)).await;
    let url = format!("dubbo://127.0.84.11:20880/{IFACE}?interface={IFACE}&side=provider");
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    provider
        .create(&format!("{}/{}", paths.providers, url_encode(&url)), b"", &ephemeral)
        .await?;

    let mut config = ZookeeperDubboConfig::new("bench", server.connect_string());
    config.settle_seconds = Some(0.0);
    let adapter = ZookeeperDubboAdapter::new(config)?;
    let t = target(("interface", IFACE));
    let node = format!("{}/floor-probe", paths.configurators);
    let polls = Cell::new(0);
    let (floor, timed) = measure(
        rounds,
        || {
            let (client, node, persistent) = (&client, &node, &persistent);
            async move {
                client.create(node, b"", persistent).await?;
                let start = Instant::now();
                client.delete(node, None).await?;
                let gone = client.check_stat(node).await?.is_none();
                let d = start.elapsed();
                anyhow::ensure!(gone, "node still present after delete");
                Ok(d)
            }
        },
        || {
            let (adapter, t, polls) = (&adapter, &t, &polls);
            async move {
                adapter.register(t).await?; // removes the override (untimed setup)
                let start = Instant::now();
                adapter.deregister(t).await?;
                polls.set(polls.get() + until_drained(adapter, t).await?);
                Ok(start.elapsed())
            }
        },
    )
    .await?;
    say(format!(
        "zookeeper: {:.2} observe calls per round",
        f64::from(polls.get()) / (WARMUP + rounds) as f64
    ));
    Ok((floor, timed))
}

/// `--json`: the JSON object only.
static JSON_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A human line (not with `--json`).
fn say(line: String) {
    if !JSON_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
        println!("{line}");
    }
}

/// Prints a registry's figures; answers whether it met the target, and its JSON figures.
fn report(name: &str, mut floor: Vec<Duration>, mut timed: Vec<Duration>) -> (bool, serde_json::Value) {
    let (f50, f90) = stats(&mut floor);
    let (a50, a90) = stats(&mut timed);
    let ratio = a50 / f50;
    let pass = ratio <= LIMIT;
    let figures = serde_json::json!({"floor_median_ms": f50, "adapter_median_ms": a50, "ratio": ratio, "pass": pass});
    say(format!(
        "{name:<10} floor (delete + confirm) median {f50:.3} ms p90 {f90:.3} ms | adapter (deregister + observe \
         until Drained) median {a50:.3} ms p90 {a90:.3} ms | ratio {ratio:.2}x (limit {LIMIT}x) {}",
        if pass { "PASS" } else { "FAIL" }
    ));
    (pass, figures)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut rounds = 200;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().context("--rounds needs a number")?.parse()?,
            "--json" => JSON_ONLY.store(true, std::sync::atomic::Ordering::Relaxed),
            other => bail!("unknown argument {other} (usage: rpc-drain [--rounds N] [--json])"),
        }
    }
    anyhow::ensure!(rounds >= 10, "--rounds must be at least 10");
    say(format!(
        "rpc-drain: {rounds} rounds per measurement after {WARMUP} warm-up rounds, settle windows excluded"
    ));
    let (etcd_floor, etcd_adapter) = etcd_bench(rounds).await?;
    let (zk_floor, zk_adapter) = zookeeper_bench(rounds).await?;
    let (etcd_ok, etcd) = report("etcd", etcd_floor, etcd_adapter);
    let (zk_ok, zookeeper) = report("zookeeper", zk_floor, zk_adapter);
    println!(
        "{}",
        serde_json::json!({"bench": "rpc-drain", "rounds": rounds, "etcd": etcd, "zookeeper": zookeeper,
                           "pass": etcd_ok && zk_ok})
    );
    if !(etcd_ok && zk_ok) {
        bail!("an adapter is slower than {LIMIT}x its registry's loopback floor");
    }
    Ok(())
}
