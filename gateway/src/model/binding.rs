//! TrafficBindings checked against the gateway's adapter instances: a [`Binding`] when
//! valid; otherwise the reason, reported on the binding's status and as an Event — never
//! a crash, never coerced into something the user did not write.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_adapter::Adapter;

use super::ledger::RESERVED_KIND;
use super::pod::PodView;
use crate::binding::{OnDeadline, TrafficBinding};

/// Longest drain deadline a binding may ask for (a day): anything longer is a typo, and
/// a release held that long is an outage of its own.
pub const MAX_DEADLINE_SECONDS: i64 = 86_400;
/// Longest settle time.
pub const MAX_SETTLE_SECONDS: i64 = 3_600;

/// Identifies a binding: cluster, namespace, name.
pub type BindingKey = (String, String, String);

/// A TrafficBinding resolved against the gateway's adapters.
#[derive(Debug, Clone)]
pub struct Binding {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub selector: Selector,
    pub port: u16,
    pub targets: Vec<ResolvedTarget>,
    pub deadline_seconds: u64,
    pub on_deadline: OnDeadline,
    pub settle_seconds: u64,
    pub max_unavailable: Budget,
}

/// A binding that exists but cannot be used. Its pods keep their registrations as they
/// are (a typo never drains anything); a restore through it cannot be verified, so it
/// holds the gate of the pods it selects (when its selector can be read).
#[derive(Debug, Clone)]
pub struct InvalidBinding {
    pub selector: Option<Selector>,
    pub reason: String,
}

/// A binding as the engine knows it.
#[derive(Debug, Clone)]
pub enum BindingState {
    Valid(Binding),
    Invalid(InvalidBinding),
}

impl BindingState {
    pub fn valid(&self) -> Option<&Binding> {
        match self {
            BindingState::Valid(b) => Some(b),
            BindingState::Invalid(_) => None,
        }
    }
}

/// `disruptionBudget.maxUnavailable`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Count(usize),
    /// 1 to 100.
    Percent(u32),
}

impl Binding {
    /// Bindings of the same namespace/name in several clusters share one budget.
    pub fn budget_key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn matches(&self, pod: &PodView) -> bool {
        pod.cluster == self.cluster && pod.namespace == self.namespace && self.selector.matches(&pod.labels)
    }

    /// The budget as a number of pods (at least 1). `matched` counts the pods the budget
    /// spans; it is only called for a percentage (counting scans every pod).
    pub fn max_unavailable(&self, matched: impl FnOnce() -> usize) -> usize {
        match self.max_unavailable {
            Budget::Count(n) => n,
            Budget::Percent(p) => (matched() * p as usize / 100).max(1),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResolvedTarget {
    pub adapter: Arc<dyn Adapter>,
    pub kind: String,
    pub params: BTreeMap<String, String>,
}

/// A compiled `LabelSelector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<(String, SelOp)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SelOp {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// Compiles a selector; the error says what is wrong, for the binding's status.
    pub fn compile(s: &LabelSelector) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for (k, v) in s.match_labels.clone().unwrap_or_default() {
            reqs.push((k, SelOp::In(vec![v])));
        }
        for (i, e) in s.match_expressions.clone().unwrap_or_default().into_iter().enumerate() {
            let values = e.values.unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "selector.matchExpressions[{i}]: operator {} needs values",
                        e.operator
                    ))
                }
                "In" => SelOp::In(values),
                "NotIn" => SelOp::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "selector.matchExpressions[{i}]: operator {} takes no values",
                        e.operator
                    ))
                }
                "Exists" => SelOp::Exists,
                "DoesNotExist" => SelOp::DoesNotExist,
                other => {
                    return Err(format!(
                        "selector.matchExpressions[{i}]: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                    ))
                }
            };
            reqs.push((e.key, op));
        }
        if reqs.is_empty() {
            return Err("selector: an empty selector would match every pod in the namespace; name labels".into());
        }
        Ok(Selector { reqs })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|(k, op)| {
            let v = labels.get(k);
            match op {
                SelOp::In(vs) => v.is_some_and(|v| vs.contains(v)),
                SelOp::NotIn(vs) => v.is_none_or(|v| !vs.contains(v)),
                SelOp::Exists => v.is_some(),
                SelOp::DoesNotExist => v.is_none(),
            }
        })
    }
}

/// Reads `maxUnavailable` (or its former name `maxDraining`): a count of at least 1, or a
/// whole percentage from 1% to 100%.
fn budget(b: &crate::binding::DisruptionBudget) -> Result<Budget, String> {
    let (field, value) = match (&b.max_unavailable, &b.max_draining) {
        (Some(a), Some(d)) if a != d => {
            return Err(format!(
                "disruptionBudget: maxUnavailable ({}) and its former name maxDraining ({}) disagree; set only maxUnavailable",
                show(a),
                show(d)
            ))
        }
        (Some(a), _) => ("maxUnavailable", a),
        (None, Some(d)) => ("maxDraining", d),
        (None, None) => return Ok(Budget::Count(1)),
    };
    match value {
        IntOrString::Int(n) if *n >= 1 => Ok(Budget::Count(*n as usize)),
        IntOrString::Int(n) => Err(format!(
            "disruptionBudget.{field}: {n} would never let a pod drain; use at least 1 (or a percentage such as \"25%\")"
        )),
        IntOrString::String(s) => {
            let pct = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
                .and_then(|d| d.parse::<u32>().ok());
            match pct {
                Some(p) if (1..=100).contains(&p) => Ok(Budget::Percent(p)),
                _ => Err(format!(
                    "disruptionBudget.{field}: {s:?} is not a count or a whole percentage from 1% to 100% (e.g. 1 or \"25%\")"
                )),
            }
        }
    }
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => format!("{s:?}"),
    }
}

/// Resolves a TrafficBinding, or says why it is invalid.
pub fn resolve(
    cluster: &str,
    tb: &TrafficBinding,
    adapters: &BTreeMap<String, Arc<dyn Adapter>>,
    default_deadline: u64,
) -> Result<Binding, String> {
    let spec = &tb.spec;
    let selector = Selector::compile(&spec.selector)?;
    if !(1..=65535).contains(&spec.port) {
        return Err(format!("port: {} is not a port number (1-65535)", spec.port));
    }
    if spec.targets.is_empty() {
        return Err("targets: at least one target is required".into());
    }
    let mut targets = Vec::new();
    for (i, t) in spec.targets.iter().enumerate() {
        let Some(adapter) = adapters.get(&t.adapter) else {
            let known: Vec<&str> = adapters.keys().map(String::as_str).collect();
            return Err(format!(
                "targets[{i}].adapter: no adapter instance {:?} in the gateway configuration (known: {})",
                t.adapter,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        let caps = adapter.capabilities();
        if caps.kind == RESERVED_KIND {
            return Err(format!(
                "targets[{i}].adapter: {:?} reports traffic kind {RESERVED_KIND:?}, which names Sluice's ledger guard finalizer",
                t.adapter
            ));
        }
        for p in &caps.required_params {
            if !t.params.contains_key(p) {
                return Err(format!(
                    "targets[{i}].params.{p}: required by {} adapter {:?}",
                    caps.kind, t.adapter
                ));
            }
        }
        targets.push(ResolvedTarget {
            adapter: adapter.clone(),
            kind: caps.kind,
            params: t.params.clone(),
        });
    }
    let max_unavailable = budget(&spec.disruption_budget)?;
    let deadline = match spec.drain_policy.deadline_seconds {
        None => default_deadline,
        Some(d) if (1..=MAX_DEADLINE_SECONDS).contains(&d) => d as u64,
        Some(d) => {
            return Err(format!(
                "drainPolicy.deadlineSeconds: {d} is out of range (1 to {MAX_DEADLINE_SECONDS}); leave it unset for the gateway's default"
            ))
        }
    };
    let settle = spec.drain_policy.settle_seconds;
    if !(0..=MAX_SETTLE_SECONDS).contains(&settle) {
        return Err(format!(
            "drainPolicy.settleSeconds: {settle} is out of range (0 to {MAX_SETTLE_SECONDS})"
        ));
    }
    Ok(Binding {
        cluster: cluster.to_string(),
        namespace: tb.metadata.namespace.clone().unwrap_or_default(),
        name: tb.metadata.name.clone().unwrap_or_default(),
        selector,
        port: spec.port as u16,
        targets,
        deadline_seconds: deadline,
        on_deadline: spec.drain_policy.on_deadline,
        settle_seconds: settle as u64,
        max_unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::DisruptionBudget;

    fn with_budget(max: Budget) -> Binding {
        Binding {
            cluster: "c".into(),
            namespace: "n".into(),
            name: "b".into(),
            selector: Selector::compile(&LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            })
            .unwrap(),
            port: 80,
            targets: vec![],
            deadline_seconds: 60,
            on_deadline: OnDeadline::Block,
            settle_seconds: 0,
            max_unavailable: max,
        }
    }

    #[test]
    fn budget_counts_pods_only_for_percentages() {
        let count = with_budget(Budget::Count(2)).max_unavailable(|| panic!("a count needs no pod scan"));
        assert_eq!(count, 2);
        assert_eq!(with_budget(Budget::Percent(25)).max_unavailable(|| 10), 2);
        assert_eq!(
            with_budget(Budget::Percent(25)).max_unavailable(|| 2),
            1,
            "at least one"
        );
        assert_eq!(with_budget(Budget::Percent(100)).max_unavailable(|| 7), 7);
    }

    #[test]
    fn budgets_are_read_not_coerced() {
        let b = |a: Option<IntOrString>, d: Option<IntOrString>| {
            budget(&DisruptionBudget {
                max_unavailable: a,
                max_draining: d,
            })
        };
        let s = |v: &str| Some(IntOrString::String(v.into()));
        let n = |v: i32| Some(IntOrString::Int(v));
        assert_eq!(b(None, None), Ok(Budget::Count(1)), "default");
        assert_eq!(b(n(3), None), Ok(Budget::Count(3)));
        assert_eq!(b(None, n(2)), Ok(Budget::Count(2)), "the former name is still read");
        assert_eq!(b(n(2), n(2)), Ok(Budget::Count(2)));
        assert_eq!(b(s("25%"), None), Ok(Budget::Percent(25)));
        assert_eq!(b(s("100%"), None), Ok(Budget::Percent(100)));
        for (bad, words) in [
            (b(n(0), None), "would never let a pod drain"),
            (b(n(-1), None), "would never let a pod drain"),
            (b(s("inf%"), None), "whole percentage"),
            (b(s("150%"), None), "whole percentage"),
            (b(s("0%"), None), "whole percentage"),
            (b(s("2.5%"), None), "whole percentage"),
            (b(s("%"), None), "whole percentage"),
            (b(s("3"), None), "whole percentage"),
            (b(n(1), n(2)), "disagree"),
        ] {
            let e = bad.expect_err(words);
            assert!(e.contains(words), "{e}");
            assert!(e.starts_with("disruptionBudget"), "names the field: {e}");
        }
    }
}
