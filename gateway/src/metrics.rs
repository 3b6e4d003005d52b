//! Prometheus metrics (`/metrics`, text format, `prometheus-client`). Counters and
//! histograms are updated where things happen; gauges that describe the engine's state
//! (pods out of traffic, blocked drains, transitions in flight, leadership, frozen
//! clusters) are computed from that state when scraped, so they cannot drift.
//!
//! Names follow Prometheus conventions (`_seconds`, `_total`); label values are bounded
//! (kinds, outcomes, adapter instances, bindings, clusters — never pod names or reasons).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// `drain` or `restore`.
    pub kind: String,
    /// `verified`, `released` (deadline, `onDeadline: Release`), `forced` (sessions cut).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub adapter: String,
    /// `register`, `deregister`, `observe`.
    pub op: String,
    /// `ok`, `retryable`, `permanent`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub adapter: String,
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `Block` or `Release`.
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BindingLabels {
    /// The budget's key: `namespace/name` (shared across clusters).
    pub binding: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// `drain` or `restore`.
    pub transition: String,
    /// The adapter instance.
    pub adapter: String,
    /// The traffic kind (`slb`, `dns`, `rpc`, ...).
    pub kind: String,
}

/// The exemplar of a target's drain or restore: the operation's trace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitLabels {
    /// `budget`, `settle`, `ttl` or `evidence`.
    pub wait: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `delete`, `eviction` or `other`.
    pub operation: String,
    /// `allowed` or `refused`.
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A bounded category (see `planner::blocked_category`).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

pub struct Metrics {
    registry: Registry,
    pub transitions: Family<TransitionLabels, Counter>,
    pub drain_duration: Family<OutcomeLabels, Histogram>,
    pub restore_duration: Family<OutcomeLabels, Histogram>,
    pub target_duration: Family<TargetLabels, HistogramWithExemplars<TraceLabels>>,
    pub waits: Family<WaitLabels, Histogram>,
    pub watch_events: Family<ClusterLabels, Counter>,
    pub admission: Family<AdmissionLabels, Histogram>,
    pub watch_last_event: Family<ClusterLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub adapter_calls: Family<CallLabels, Counter>,
    pub adapter_duration: Family<OpLabels, Histogram>,
    pub deadline_hits: Family<PolicyLabels, Counter>,
    pub budget_waits: Counter,
    pub relists: Family<ClusterLabels, Counter>,
    // Computed at scrape time.
    pub in_flight: Family<KindLabels, Gauge>,
    pub blocked: Family<ReasonLabels, Gauge>,
    pub out_of_traffic: Family<BindingLabels, Gauge>,
    pub leader: Gauge,
    pub frozen: Family<ClusterLabels, Gauge>,
}

fn seconds_buckets() -> Histogram {
    // 5 ms … ~5.8 h: a HAProxy drain, a DNS TTL, a stuck drain.
    Histogram::new(exponential_buckets(0.005, 2.0, 22))
}

fn call_buckets() -> Histogram {
    // 0.1 ms … ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "transitions",
            "Drains and restores finished, by kind and outcome",
            transitions.clone(),
        );
        let drain_duration =
            Family::<OutcomeLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "drain_duration",
            "From the drain's start (budget slot held) to its end, verified or released",
            Unit::Seconds,
            drain_duration.clone(),
        );
        let restore_duration =
            Family::<OutcomeLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "restore_duration",
            "From registering to every target verified serving (the gate True)",
            Unit::Seconds,
            restore_duration.clone(),
        );
        let target_duration = Family::<TargetLabels, HistogramWithExemplars<TraceLabels>>::new_with_constructor(
            (|| HistogramWithExemplars::new(exponential_buckets(0.005, 2.0, 22))) as fn() -> _,
        );
        registry.register_with_unit(
            "target_duration",
            "From a drain's start to each target seen drained (or a restore's start to each target seen \
             serving), by adapter instance and kind; exemplars carry the operation's trace id",
            Unit::Seconds,
            target_duration.clone(),
        );
        let waits = Family::<WaitLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "evidence_wait_duration",
            "How long drains and restores waited, by what for: budget (a disruption-budget slot), \
             settle (a settle window), ttl (a DNS or registry TTL), evidence (sessions to end, a health check)",
            Unit::Seconds,
            waits.clone(),
        );
        let adapter_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "adapter_calls",
            "Adapter calls by adapter instance, operation and result",
            adapter_calls.clone(),
        );
        let adapter_duration = Family::<OpLabels, Histogram>::new_with_constructor(call_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "adapter_call_duration",
            "Adapter call latency by adapter instance and operation",
            Unit::Seconds,
            adapter_duration.clone(),
        );
        let deadline_hits = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "drain_deadlines",
            "Drains that passed their deadline, by onDeadline policy",
            deadline_hits.clone(),
        );
        let budget_waits = Counter::default();
        registry.register(
            "budget_waits",
            "Drains that had to wait for a disruption-budget slot",
            budget_waits.clone(),
        );
        let relists = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "watch_relists",
            "Complete pod lists per cluster (the first sync and every recovery)",
            relists.clone(),
        );
        let admission =
            Family::<AdmissionLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "admission_duration",
            "Admission webhook answers (pod deletes and evictions) by operation and verdict, with how long each \
             was held",
            Unit::Seconds,
            admission.clone(),
        );
        let watch_events = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "watch_events",
            "Pod watch events received per cluster (adds, updates, deletes, completed lists)",
            watch_events.clone(),
        );
        let watch_last_event = Family::<ClusterLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "watch_last_event_timestamp_seconds",
            "When the last pod watch event of a cluster arrived, Unix time: \
             time() minus this is the watch's lag",
            watch_last_event.clone(),
        );
        let in_flight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "transitions_in_flight",
            "Drains and restores under way (recorded on the pods)",
            in_flight.clone(),
        );
        let blocked = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "blocked_pods",
            "Pods whose drain or restore is blocked and needs a person (see their sluice.dev/status), by \
             reason: deadline, adapter-missing, invalid-binding, no-target, ledger-unreadable, adapter-error",
            blocked.clone(),
        );
        let out_of_traffic = Family::<BindingLabels, Gauge>::default();
        registry.register(
            "pods_out_of_traffic",
            "Pods holding a disruption-budget slot (out of traffic), per budget",
            out_of_traffic.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica may write (leader or sole writer), else 0",
            leader.clone(),
        );
        let frozen = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cluster_frozen",
            "1 while a cluster's pod watch is failing (its pods are frozen)",
            frozen.clone(),
        );
        Metrics {
            registry,
            transitions,
            drain_duration,
            restore_duration,
            target_duration,
            waits,
            watch_events,
            admission,
            watch_last_event,
            adapter_calls,
            adapter_duration,
            deadline_hits,
            budget_waits,
            relists,
            in_flight,
            blocked,
            out_of_traffic,
            leader,
            frozen,
        }
    }
}

impl Metrics {
    /// A drain or restore ended.
    pub fn transition(&self, kind: &str, outcome: &str, took: Duration) {
        self.transitions
            .get_or_create(&TransitionLabels {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
        let family = if kind == "drain" {
            &self.drain_duration
        } else {
            &self.restore_duration
        };
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// A target of a drain or restore first seen done, `took` after the operation began.
    pub fn target_done(&self, transition: &str, adapter: &str, kind: &str, took: Duration, trace_id: &str) {
        self.target_duration
            .get_or_create(&TargetLabels {
                transition: transition.into(),
                adapter: adapter.into(),
                kind: kind.into(),
            })
            .observe(
                took.as_secs_f64(),
                Some(TraceLabels {
                    trace_id: trace_id.into(),
                }),
                None,
            );
    }

    /// A wait (budget, settle, ttl, evidence) ended after `took`.
    pub fn wait(&self, wait: &str, took: Duration) {
        self.waits
            .get_or_create(&WaitLabels { wait: wait.into() })
            .observe(took.as_secs_f64());
    }

    /// The admission webhook answered.
    pub fn admission(&self, operation: &str, verdict: &str, took: Duration) {
        self.admission
            .get_or_create(&AdmissionLabels {
                operation: operation.into(),
                verdict: verdict.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// A pod watch event of `cluster` arrived.
    pub fn watch_event(&self, cluster: &str) {
        let labels = ClusterLabels {
            cluster: cluster.into(),
        };
        self.watch_events.get_or_create(&labels).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.watch_last_event.get_or_create(&labels).set(now.as_secs_f64());
    }

    /// One adapter call.
    pub fn call(&self, adapter: &str, op: &str, result: &str, took: Duration) {
        self.adapter_calls
            .get_or_create(&CallLabels {
                adapter: adapter.into(),
                op: op.into(),
                result: result.into(),
            })
            .inc();
        self.adapter_duration
            .get_or_create(&OpLabels {
                adapter: adapter.into(),
                op: op.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition (after the scrape-time gauges were set).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
