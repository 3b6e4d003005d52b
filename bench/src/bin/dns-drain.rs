//! DNS drain benchmark against a real BIND 9 on loopback (started by the
//! `sluice-adapter-dns` test harness), excluding the TTL wait.
//!
//! ```text
//! cargo run --release -p sluice-bench --bin dns-drain -- [--runs N] [--pods N] [--json]
//! ```
//!
//! Figures, one line each:
//! 1. floor: median of N raw round trips "TSIG-signed UPDATE deleting one address (what
//!    `nsupdate` sends) + one direct query confirming it is absent", with the same
//!    hickory-proto messages and sockets the adapter uses — the physical limit;
//! 2. adapter: median of N `deregister` + `observe` until no authoritative server answers
//!    the address (the TTL clock has started), and its ratio to the floor (PASS ≤ 3×);
//! 3. 500 pods of one zone (50 names × 10 pods, each name keeping one more address)
//!    deregistered concurrently and verified absent on every authoritative server —
//!    primary and a secondary fed by NOTIFY/IXFR — total time (PASS < 1 s).
//!
//! Between timed runs the address is put back (untimed), so every run deletes a record
//! that is really there.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hickory_proto::op::{Message, OpCode, Query, UpdateMessage};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use sluice_adapter::{Adapter, Observation, Target, TrafficState};
use sluice_adapter_dns::evidence::{authoritative, rrset_addrs};
use sluice_adapter_dns::names::{parse_fqdn, rdata};
use sluice_adapter_dns::testing::bind::{Bind, Notify, Zone};
use sluice_adapter_dns::testing::target;
use sluice_adapter_dns::{Rfc2136Adapter, Rfc2136Config, SecretSource, Wire};

const RATIO_LIMIT: f64 = 3.0;
const BULK_LIMIT: Duration = Duration::from_secs(1);

struct Args {
    runs: usize,
    pods: usize,
    json: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        runs: 200,
        pods: 500,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut v = || it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = v()?.parse()?,
            "--pods" => a.pods = v()?.parse()?,
            "--json" => a.json = true,
            other => anyhow::bail!("unknown flag {other} (usage: dns-drain [--runs N] [--pods N] [--json])"),
        }
    }
    anyhow::ensure!(
        a.runs > 0 && a.pods > 0 && a.pods.is_multiple_of(10),
        "--runs > 0, --pods a multiple of 10"
    );
    Ok(a)
}

fn config(bind: &Bind, zone: &str, servers: &[SocketAddr]) -> Rfc2136Config {
    Rfc2136Config {
        name: "bench".into(),
        primary: bind.primary.addr,
        zones: vec![parse_fqdn(zone).expect("zone")],
        servers: Some(servers.to_vec()),
        resolver: None,
        ns_port: 53,
        tsig_secret: SecretSource::File(bind.key_file("sluice")),
        tsig_key_name: None,
        tsig_algorithm: "hmac-sha256".into(),
        ttl: 60,
        timeout: Duration::from_secs(2),
        batch_window: Duration::ZERO,
    }
}

/// One UPDATE for `zone` adding (`add`) or deleting one address of `name`.
fn update(zone: &Name, name: &Name, ip: IpAddr, add: bool) -> Message {
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Update;
    msg.metadata.recursion_desired = false;
    msg.add_zone(Query::query(zone.clone(), RecordType::SOA));
    let mut r = Record::from_rdata(name.clone(), if add { 60 } else { 0 }, rdata(ip));
    if !add {
        r.dns_class = DNSClass::NONE;
    }
    msg.add_update(r);
    msg
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() * 9 / 10]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Whether the observation shows the address gone from every authoritative server.
fn gone_everywhere(o: &Observation) -> bool {
    o.state == TrafficState::Drained || (o.state == TrafficState::Draining && o.remaining.is_some())
}

async fn until_gone(a: &Rfc2136Adapter, t: &Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if gone_everywhere(&a.observe(t).await?) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{} never left every server", t.ip);
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    let mut solo = Zone::new("bench.test", 60, &["floor IN A 10.9.0.1", "floor IN A 10.9.0.2"]);
    solo.records
        .extend(["drain IN A 10.9.1.1".to_string(), "drain IN A 10.9.1.2".to_string()]);
    solo.secondary = None;
    let mut records = Vec::new();
    for n in 0..args.pods / 10 {
        for i in 1..=11 {
            records.push(format!("svc{n} IN A 10.{}.{}.{i}", 100 + n / 250, n % 250));
        }
    }
    let mut bulk = Zone::new("bulk.test", 60, &[]);
    bulk.records = records;
    bulk.secondary = Some(Notify::Immediate);
    let bind = Bind::start(vec![solo, bulk]).await;
    let primary = bind.primary.addr;
    let wire = Wire::new(Duration::from_secs(2));
    let signer = bind.key("sluice").signer().map_err(anyhow::Error::msg)?;
    let zone = parse_fqdn("bench.test").map_err(anyhow::Error::msg)?;

    // 1. The floor.
    let name = parse_fqdn("floor.bench.test").map_err(anyhow::Error::msg)?;
    let ip: IpAddr = "10.9.0.1".parse()?;
    let mut floor = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let start = Instant::now();
        wire.update(primary, update(&zone, &name, ip, false), &signer, &zone)
            .await?;
        let answer = authoritative(wire.query(primary, &name, RecordType::A).await?, primary, &zone)?;
        let elapsed = start.elapsed();
        anyhow::ensure!(
            rrset_addrs(&answer, &name, RecordType::A).iter().all(|(a, _)| *a != ip),
            "still present"
        );
        floor.push(elapsed);
        wire.update(primary, update(&zone, &name, ip, true), &signer, &zone)
            .await?;
    }
    let floor_median = median(floor.clone());
    say(format!(
        "dns-drain floor: UPDATE delete + 1 direct query on BIND primary (loopback, n={}): median {:.3} ms, p90 {:.3} ms",
        args.runs,
        ms(floor_median),
        ms(p90(floor))
    ));

    // 2. The adapter: deregister + observe until no authoritative server answers.
    let a = Rfc2136Adapter::new(config(&bind, "bench.test", &[primary]))?;
    let t = target("10.9.1.1".parse()?, &[("name", "drain.bench.test")]);
    let mut runs = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let start = Instant::now();
        a.deregister(&t).await?;
        until_gone(&a, &t).await?;
        runs.push(start.elapsed());
        a.register(&t).await?;
        anyhow::ensure!(
            a.observe(&t).await?.state == TrafficState::Serving,
            "restore not serving"
        );
    }
    let adapter_median = median(runs.clone());
    let ratio = adapter_median.as_secs_f64() / floor_median.as_secs_f64();
    let mut missed = Vec::new();
    if ratio > RATIO_LIMIT {
        missed.push(format!("one drain took {ratio:.2}x the floor (limit {RATIO_LIMIT}x)"));
    }
    say(format!(
        "dns-drain adapter: deregister + observe until no authoritative server answers (excl. TTL, n={}): median \
         {:.3} ms, p90 {:.3} ms = {ratio:.2}x floor: {} (limit {RATIO_LIMIT}x)",
        args.runs,
        ms(adapter_median),
        ms(p90(runs)),
        if ratio <= RATIO_LIMIT { "PASS" } else { "FAIL" }
    ));

    // 3. Many pods of one zone at once, verified on the primary and the secondary.
    let secondary = bind.secondary_addr();
    let a = Rfc2136Adapter::new(config(&bind, "bulk.test", &[primary, secondary]))?;
    let pods: Vec<Target> = (0..args.pods / 10)
        .flat_map(|n| (1..=10).map(move |i| (n, i)))
        .map(|(n, i)| {
            let ip = format!("10.{}.{}.{i}", 100 + n / 250, n % 250).parse().expect("ip");
            target(ip, &[("name", &format!("svc{n}.bulk.test"))])
        })
        .collect();
    let serial = sluice_adapter_dns::testing::dig_serial(primary, "bulk.test");
    let start = Instant::now();
    for r in join_all(pods.iter().map(|t| a.deregister(t))).await {
        r?;
    }
    let sent = start.elapsed();
    for r in join_all(pods.iter().map(|t| until_gone(&a, t))).await {
        r?;
    }
    let total = start.elapsed();
    let serial_after = sluice_adapter_dns::testing::dig_serial(primary, "bulk.test");
    say(format!(
        "dns-drain bulk: {} pods in one zone deregistered together + verified absent on 2 authoritative servers \
         (primary + NOTIFY/IXFR secondary, excl. TTL): {:.3} s ({} UPDATE messages, serial {serial} -> \
         {serial_after}, UPDATEs acknowledged after {:.1} ms): {} (limit {:.0} s)",
        pods.len(),
        total.as_secs_f64(),
        a.updates_sent(),
        ms(sent),
        if total < BULK_LIMIT { "PASS" } else { "FAIL" },
        BULK_LIMIT.as_secs_f64()
    ));
    if total >= BULK_LIMIT {
        missed.push(format!(
            "the bulk drain took {:.3} s (limit {:.0} s)",
            total.as_secs_f64(),
            BULK_LIMIT.as_secs_f64()
        ));
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "dns-drain", "runs": args.runs, "floor_median_ms": ms(floor_median),
            "adapter_median_ms": ms(adapter_median), "ratio": ratio, "bulk_pods": pods.len(),
            "bulk_s": total.as_secs_f64(), "bulk_updates": a.updates_sent(), "pass": missed.is_empty()
        })
    );
    if !missed.is_empty() {
        anyhow::bail!("missed targets: {}", missed.join("; "));
    }
    Ok(())
}
