//! The adapter conformance battery: one set of checks every adapter must pass, whether it
//! is built in (HAProxy, DNS, RPC registries) or served out of process over the plugin
//! protocol. Each adapter crate runs it against its real backend from its tests, and
//! `sluice adapter conformance --endpoint …` runs it against a team's own plugin.
//!
//! The battery checks the guarantees of the `sluice_adapter::Adapter` contract:
//! 1. `deregister` of a never-registered target succeeds and observes as `Drained`.
//! 2. `register` is idempotent and the target observes `Serving`.
//! 3. `deregister` is idempotent and the target observes `Drained` in the end.
//! 4. `observe` has no side effects (repeated observations agree).
//! 5. restore after drain works.
//! 6. a call cancelled mid-flight (its future dropped) can be retried to completion.
//! 7. backend down: calls fail *within their deadline* with a retryable error; `health`
//!    fails; after the backend is back, `health` succeeds again.
//! 8. slow backend: calls return within a bounded time with a retryable error instead of
//!    hanging.
//!
//! A subject that cannot simulate a condition (e.g. make HAProxy slow) says so, and the
//! check is reported as not applicable — never as passed.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod proxy;

use sluice_adapter::{Adapter, Target, TrafficState};

/// The adapter under test plus control over its backend.
#[async_trait::async_trait]
pub trait Subject: Send + Sync {
    fn adapter(&self) -> Arc<dyn Adapter>;
    /// A target that is registered and serving in the backend right now.
    async fn serving_target(&self) -> Target;
    /// A target the backend has never known.
    async fn unknown_target(&self) -> Target;
    /// Makes the backend unreachable. `false`: this subject cannot.
    async fn backend_down(&self) -> bool;
    async fn backend_up(&self);
    /// Makes every backend call take at least `delay` (zero: back to normal). `false`: this
    /// subject cannot.
    async fn backend_slow(&self, delay: Duration) -> bool;
}

/// The part of a subject that is about the adapter: most subjects reach their backend over
/// TCP and get "down" and "slow" from a [`proxy::FaultyProxy`] through [`ThroughProxy`].
#[async_trait::async_trait]
pub trait Targets: Send + Sync {
    fn adapter(&self) -> Arc<dyn Adapter>;
    /// A target that is registered and serving in the backend right now.
    async fn serving_target(&self) -> Target;
    /// A target the backend has never known.
    async fn unknown_target(&self) -> Target;
}

/// A subject whose backend sits behind a [`proxy::FaultyProxy`].
pub struct ThroughProxy<T> {
    pub targets: T,
    pub proxy: proxy::FaultyProxy,
}

#[async_trait::async_trait]
impl<T: Targets> Subject for ThroughProxy<T> {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.targets.adapter()
    }
    async fn serving_target(&self) -> Target {
        self.targets.serving_target().await
    }
    async fn unknown_target(&self) -> Target {
        self.targets.unknown_target().await
    }
    async fn backend_down(&self) -> bool {
        self.proxy.set_up(false).await;
        true
    }
    async fn backend_up(&self) {
        self.proxy.set_up(true).await;
    }
    async fn backend_slow(&self, delay: Duration) -> bool {
        self.proxy.set_delay(delay);
        true
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// How long a single adapter call may take before the battery calls it hung.
    pub call_deadline: Duration,
    /// How long a state may take to be reached (drains, health checks, settle windows).
    pub settle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            call_deadline: Duration::from_secs(5),
            settle: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    NotApplicable(String),
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| !matches!(c.outcome, Outcome::Failed(_)))
    }

    pub fn failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            match &c.outcome {
                Outcome::Passed => writeln!(f, "PASS  {}", c.name)?,
                Outcome::Failed(why) => writeln!(f, "FAIL  {}: {why}", c.name)?,
                Outcome::NotApplicable(why) => writeln!(f, "N/A   {}: {why}", c.name)?,
            }
        }
        let (p, fl) = (
            self.checks.iter().filter(|c| c.outcome == Outcome::Passed).count(),
            self.checks
                .iter()
                .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
                .count(),
        );
        write!(f, "conformance: {p} passed, {fl} failed")
    }
}

type CheckResult = Result<(), String>;

async fn bounded<T>(opts: &Options, what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(opts.call_deadline, f)
        .await
        .map_err(|_| format!("{what} did not return within {:?}", opts.call_deadline))
}

async fn ok(
    opts: &Options,
    what: &str,
    f: impl std::future::Future<Output = sluice_adapter::Result<()>>,
) -> CheckResult {
    bounded(opts, what, f).await?.map_err(|e| format!("{what} failed: {e}"))
}

/// Registers `t` and waits until it serves: what a subject's `serving_target` does to hand
/// the battery a target in a known state.
pub async fn make_serving(adapter: &dyn Adapter, t: &Target, o: &Options) -> Result<(), String> {
    ok(o, "register", adapter.register(t)).await?;
    reach(adapter, t, TrafficState::Serving, o).await
}

/// Polls `observe` until it reports `want`.
async fn reach(adapter: &dyn Adapter, t: &Target, want: TrafficState, opts: &Options) -> CheckResult {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < opts.settle {
        match bounded(opts, "observe", adapter.observe(t)).await? {
            Ok(o) if o.state == want => return Ok(()),
            Ok(o) => last = format!("{:?} ({})", o.state, o.evidence),
            // A permanent error will not heal by waiting.
            Err(e) if !e.is_retryable() => return Err(format!("observe failed permanently: {e}")),
            Err(e) => last = format!("error: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "{} never observed {want:?} within {:?}; last: {last}",
        t.addr(),
        opts.settle
    ))
}

async fn check_unknown(s: &dyn Subject, o: &Options) -> CheckResult {
    let a = s.adapter();
    let t = s.unknown_target().await;
    ok(o, "deregister(never registered)", a.deregister(&t)).await?;
    reach(a.as_ref(), &t, TrafficState::Drained, o).await
}

async fn check_register_idempotent(s: &dyn Subject, o: &Options) -> CheckResult {
    let a = s.adapter();
    let t = s.serving_target().await;
    ok(o, "register", a.register(&t)).await?;
    ok(o, "register again", a.register(&t)).await?;
    reach(a.as_ref(), &t, TrafficState::Serving, o).await
}

async fn check_deregister_idempotent(s: &dyn Subject, o: &Options) -> CheckResult {
    let a = s.adapter();
    let t = s.serving_target().await;
    reach(a.as_ref(), &t, TrafficState::Serving, o).await?;
    ok(o, "deregister", a.deregister(&t)).await?;
    ok(o, "deregister again", a.deregister(&t)).await?;
    reach(a.as_ref(), &t, TrafficState::Drained, o).await?;
    ok(o, "deregister after drained", a.deregister(&t)).await?;
    reach(a.as_ref(), &t, TrafficState::Drained, o).await
}

async fn check_observe_pure(s: &dyn Subject, o: &Options) -> CheckResult {
    let a = s.adapter();
    let t = s.serving_target().await;
    reach(a.as_ref(), &t, TrafficState::Serving, o).await?;
    for i in 0..3 {
        let obs = bounded(o, "observe", a.observe(&t))
            .await?
            .map_err(|e| format!("observe: {e}"))?;
        if obs.state != TrafficState::Serving {
            return Err(format!(
                "observation {i} of a serving target changed to {:?} ({})",
                obs.state, obs.evidence
            ));
        }
    }
    Ok(())
}

async fn check_restore(s: &dyn Subject, o: &Options) -> CheckResult {
    let a = s.adapter();
    let t = s.serving_target().await;
    ok(o, "deregister", a.deregister(&t)).await?;
    reach(a.as_ref(), &t, TrafficState::Drained, o).await?;
    ok(o, "register", a.register(&t)).await?;
    reach(a.as_ref(), &t, TrafficState::Serving, o).await
}

async fn check_cancellation(s: &dyn Subject, o: &Options) -> CheckResult {
    let a = s.adapter();
    let t = s.serving_target().await;
    reach(a.as_ref(), &t, TrafficState::Serving, o).await?;
    // Cancel at several points of the call: before its first await completes, and later.
    for cut in [Duration::ZERO, Duration::from_micros(200), Duration::from_millis(2)] {
        let _ = tokio::time::timeout(cut, a.deregister(&t)).await;
    }
    ok(o, "deregister retried after cancellation", a.deregister(&t)).await?;
    reach(a.as_ref(), &t, TrafficState::Drained, o).await?;
    for cut in [Duration::ZERO, Duration::from_micros(200), Duration::from_millis(2)] {
        let _ = tokio::time::timeout(cut, a.register(&t)).await;
    }
    ok(o, "register retried after cancellation", a.register(&t)).await?;
    reach(a.as_ref(), &t, TrafficState::Serving, o).await
}

async fn expect_retryable(
    o: &Options,
    what: &str,
    f: impl std::future::Future<Output = sluice_adapter::Result<()>>,
) -> CheckResult {
    match bounded(o, what, f).await? {
        Ok(()) => Err(format!("{what} succeeded with the backend unavailable")),
        Err(e) if e.is_retryable() => Ok(()),
        Err(e) => Err(format!("{what} failed as permanent, should be retryable: {e}")),
    }
}

async fn check_backend_down(s: &dyn Subject, o: &Options) -> Outcome {
    let a = s.adapter();
    let t = s.serving_target().await;
    if !s.backend_down().await {
        return Outcome::NotApplicable("the subject cannot take its backend down".into());
    }
    let result = async {
        expect_retryable(o, "health", a.health()).await?;
        expect_retryable(o, "observe", async { a.observe(&t).await.map(|_| ()) }).await?;
        expect_retryable(o, "deregister", a.deregister(&t)).await?;
        Ok::<(), String>(())
    }
    .await;
    s.backend_up().await;
    if let Err(e) = result {
        return Outcome::Failed(e);
    }
    let start = Instant::now();
    while start.elapsed() < o.settle {
        if matches!(bounded(o, "health", a.health()).await, Ok(Ok(()))) {
            return Outcome::Passed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Outcome::Failed("health did not recover after the backend came back".into())
}

async fn check_slow_backend(s: &dyn Subject, o: &Options) -> Outcome {
    let a = s.adapter();
    let t = s.serving_target().await;
    if !s.backend_slow(o.call_deadline * 2).await {
        return Outcome::NotApplicable("the subject cannot slow its backend down".into());
    }
    let r = expect_retryable(o, "observe on a slow backend", async {
        a.observe(&t).await.map(|_| ())
    })
    .await;
    s.backend_slow(Duration::ZERO).await;
    match r {
        Ok(()) => Outcome::Passed,
        Err(e) => Outcome::Failed(e),
    }
}

fn outcome(r: CheckResult) -> Outcome {
    match r {
        Ok(()) => Outcome::Passed,
        Err(e) => Outcome::Failed(e),
    }
}

/// Runs every check in order and reports each.
pub async fn run(s: &dyn Subject, o: &Options) -> Report {
    let mut checks = Vec::new();
    checks.push(Check {
        name: "deregister tolerates never-registered",
        outcome: outcome(check_unknown(s, o).await),
    });
    checks.push(Check {
        name: "register is idempotent",
        outcome: outcome(check_register_idempotent(s, o).await),
    });
    checks.push(Check {
        name: "deregister is idempotent",
        outcome: outcome(check_deregister_idempotent(s, o).await),
    });
    checks.push(Check {
        name: "observe has no side effects",
        outcome: outcome(check_observe_pure(s, o).await),
    });
    checks.push(Check {
        name: "restore after drain",
        outcome: outcome(check_restore(s, o).await),
    });
    checks.push(Check {
        name: "cancelled calls can be retried",
        outcome: outcome(check_cancellation(s, o).await),
    });
    checks.push(Check {
        name: "backend down fails fast and retryable",
        outcome: check_backend_down(s, o).await,
    });
    checks.push(Check {
        name: "slow backend is bounded by deadlines",
        outcome: check_slow_backend(s, o).await,
    });
    Report { checks }
}
