//! The adapter conformance battery: one set of checks every adapter must pass, whether it
//! is built in (HAProxy, DNS, RPC registries) or served out of process over the plugin
//! protocol. Each adapter crate runs it against its real backend from its tests, and
//! `sluice adapter conformance --endpoint …` runs it against a team's own plugin.
//!
//! The battery checks the guarantees of the `sluice_adapter::Adapter` contract:
//! 1. `deregister` of a never-registered target succeeds and observes as `Drained`.
//! 2. `register` is idempotent and the target observes `Serving`.
//! 3. `deregister` is idempotent and the target observes `Drained` in the end, driven as
//!    the engine drives a drain (`deregister` again whenever an observation says
//!    `advance`, see `sluice_adapter::testing::try_drive_drain`); once `Drained`, another
//!    `deregister` keeps it `Drained` with `observe` alone.
//! 4. `observe` has no side effects: the backend's [`Subject::snapshot`] is the same before
//!    and after several observations of a serving target, and of a target right after
//!    `deregister` (for HAProxy: a server idle in DRAIN, the case where an `observe` that
//!    advanced the drain itself would set MAINT); and the `deregister` in between must
//!    change it (a snapshot that cannot see the target cannot show side effects either).
//!    The observations of the serving target all say `Serving`, those of the deregistered
//!    one never move back towards serving, and `advance` only comes with `Draining`. A
//!    subject without a snapshot gets only these observation comparisons.
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
    /// What the backend holds right now for the targets this subject hands out, read
    /// *around* the adapter (e.g. HAProxy's `show servers state <backend>` without its
    /// ticking columns, a zone transfer, the keys under a registry prefix), for the check
    /// that `observe` changes nothing. Equal texts mean an unchanged backend; taking a
    /// serving target out with `deregister` must change it. `None`: this subject cannot
    /// read its backend; the check then only compares observations.
    async fn snapshot(&self) -> Option<String> {
        None
    }
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
    /// See [`Subject::snapshot`].
    async fn snapshot(&self) -> Option<String> {
        None
    }
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
    async fn snapshot(&self) -> Option<String> {
        self.targets.snapshot().await
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

/// Drives a drain until `Drained` as the engine does (`deregister` again on `advance`,
/// on a target seen serving or registered, and after a retryable observe error), within
/// `settle`.
async fn drain(adapter: &dyn Adapter, t: &Target, opts: &Options) -> CheckResult {
    sluice_adapter::testing::try_drive_drain(adapter, t, opts.settle, "drain")
        .await
        .map(drop)
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
    drain(a.as_ref(), &t, o).await?;
    ok(o, "deregister after drained", a.deregister(&t)).await?;
    reach(a.as_ref(), &t, TrafficState::Drained, o).await
}

/// How far from drained a state is; observing alone must never make it grow.
fn distance(state: TrafficState) -> u8 {
    match state {
        TrafficState::Drained => 0,
        TrafficState::Draining => 1,
        TrafficState::Registered | TrafficState::Serving => 2,
    }
}

/// Observes `t` five times, 20 ms apart, and checks the backend snapshot did not change.
/// Returns the observations and the snapshot.
async fn observe_unchanged(
    s: &dyn Subject,
    t: &Target,
    o: &Options,
    what: &str,
) -> Result<(Vec<sluice_adapter::Observation>, Option<String>), String> {
    let a = s.adapter();
    let before = s.snapshot().await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let obs = bounded(o, "observe", a.observe(t))
            .await?
            .map_err(|e| format!("observe ({what}): {e}"))?;
        seen.push(obs);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(before) = &before {
        let after = s
            .snapshot()
            .await
            .ok_or_else(|| format!("the subject's snapshot went away while observing ({what})"))?;
        if &after != before {
            return Err(format!(
                "observing {} ({what}) changed the backend:\n--- before\n{before}\n--- after\n{after}\n\
                 --- observations: {seen:?}",
                t.addr()
            ));
        }
    }
    Ok((seen, before))
}

async fn check_observe_pure(s: &dyn Subject, o: &Options) -> CheckResult {
    let a = s.adapter();
    let t = s.serving_target().await;
    reach(a.as_ref(), &t, TrafficState::Serving, o).await?;
    let (seen, serving) = observe_unchanged(s, &t, o, "serving").await?;
    for (i, obs) in seen.into_iter().enumerate() {
        if obs.state != TrafficState::Serving {
            return Err(format!(
                "observation {i} of a serving target changed to {:?} ({})",
                obs.state, obs.evidence
            ));
        }
    }
    // Right after deregister: nothing holds the target's traffic in this battery, so a
    // drain that completes in steps has its next step due (HAProxy: idle in DRAIN).
    ok(o, "deregister", a.deregister(&t)).await?;
    let (seen, deregistered) = observe_unchanged(s, &t, o, "deregistered").await?;
    if let (Some(serving), Some(deregistered)) = (&serving, &deregistered) {
        if serving == deregistered {
            return Err(format!(
                "the subject's snapshot did not change when deregister took {} out, so it cannot show what \
                 observe changes either:\n{serving}",
                t.addr()
            ));
        }
    }
    let mut closest = u8::MAX;
    for (i, obs) in seen.iter().enumerate() {
        if distance(obs.state) > closest {
            return Err(format!(
                "observation {i} of a deregistered target moved back to {:?} ({}) after {:?}",
                obs.state, obs.evidence, seen
            ));
        }
        closest = closest.min(distance(obs.state));
        if obs.advance && obs.state != TrafficState::Draining {
            return Err(format!(
                "observation {i} says advance in state {:?} ({}); advance is only for Draining",
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
    drain(a.as_ref(), &t, o).await?;
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
    drain(a.as_ref(), &t, o).await?;
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
