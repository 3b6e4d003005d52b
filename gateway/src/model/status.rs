//! The `sluice.dev/status` annotation: a small summary of where the pod's traffic stands,
//! so `kubectl get pod -o yaml` (and a restarted gateway) can read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The status summary annotation.
pub const STATUS_ANNOTATION: &str = "sluice.dev/status";

/// Where the pod's operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// A drain was asked; it takes its disruption-budget slot now.
    StartingDrain,
    /// A drain waits for a disruption-budget slot.
    WaitingForBudget,
    /// Deregistered everywhere, or on the way; waiting for the evidence.
    Draining,
    /// A drain cannot go on without a person (see `blocked`).
    Blocked,
    /// Every target verified drained; no finalizer of Sluice's is left.
    Drained,
    /// The drain passed its deadline under `onDeadline: Release`: finalizers removed
    /// *without* verified drain.
    Released,
    /// Registering and verifying (or moving to edited targets, make-before-break).
    Restoring,
    /// Every target registered and verified serving.
    Serving,
    /// Nothing to do yet (containers not ready, no IP) or a signal Sluice refuses (see
    /// `problems`).
    Holding,
    /// The pod carries the readiness gate but no TrafficBinding selects it: nothing will
    /// set the gate.
    Unbound,
}

impl State {
    /// A drain or restore that has started and is not finished: it goes on while paused.
    pub fn under_way(self) -> bool {
        matches!(
            self,
            State::StartingDrain | State::Draining | State::Blocked | State::Restoring
        )
    }

    /// The states of a drain.
    pub fn is_drain(self) -> bool {
        matches!(
            self,
            State::StartingDrain
                | State::WaitingForBudget
                | State::Draining
                | State::Blocked
                | State::Drained
                | State::Released
        )
    }

    /// The states of a restore.
    pub fn is_restore(self) -> bool {
        matches!(self, State::Restoring | State::Serving)
    }

    /// The drain is over (verified, or released at its deadline).
    pub fn is_drain_done(self) -> bool {
        matches!(self, State::Drained | State::Released)
    }
}

/// The annotation's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSummary {
    pub state: State,
    /// When `state` last changed (RFC 3339, seconds).
    pub last_transition: String,
    /// The operation's trace id (the `trace_id` field of its span): a restarted gateway
    /// continues the same operation under the same id.
    pub trace_id: String,
    /// The span of the worker that started the operation (16 hex, when traces are
    /// exported): a drain continued after a restart or a failover links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// Per target (`kind/adapter/params`): its state, without volatile counters.
    #[serde(default)]
    pub targets: BTreeMap<String, String>,
    /// When the drain started: its deadline survives restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_started_at: Option<String>,
    /// Why the operation cannot go on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    /// What is wrong with the pod's signals or setup (no readiness gate, an unknown
    /// `sluice.dev/desired` value, no binding, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl StatusSummary {
    /// Parses the annotation; `None` when absent or unreadable (it is rewritten).
    pub fn parse(raw: Option<&str>) -> Option<StatusSummary> {
        serde_json::from_str(raw?).ok()
    }

    pub fn render(&self) -> String {
        serde_json::to_string(self).expect("status serializes")
    }

    /// When the drain started, when recorded and readable.
    pub fn drain_started(&self) -> Option<jiff::Timestamp> {
        self.drain_started_at.as_deref()?.parse().ok()
    }
}

/// Now, as the annotations write times (RFC 3339, whole seconds, UTC).
pub fn now_text() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A time as the annotations write it.
pub fn time_text(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_are_the_documented_ones() {
        let words: Vec<String> = [
            State::StartingDrain,
            State::WaitingForBudget,
            State::Draining,
            State::Blocked,
            State::Drained,
            State::Released,
            State::Restoring,
            State::Serving,
            State::Holding,
            State::Unbound,
        ]
        .iter()
        .map(|s| serde_json::to_value(s).unwrap().as_str().unwrap().to_string())
        .collect();
        assert_eq!(
            words,
            [
                "starting-drain",
                "waiting-for-budget",
                "draining",
                "blocked",
                "drained",
                "released",
                "restoring",
                "serving",
                "holding",
                "unbound"
            ]
        );
    }

    #[test]
    fn round_trips_and_tolerates_garbage() {
        let s = StatusSummary {
            state: State::Draining,
            last_transition: now_text(),
            trace_id: "ab".repeat(16),
            span_id: None,
            targets: [("slb/lb/backend=web".to_string(), "Draining".to_string())].into(),
            drain_started_at: Some(now_text()),
            blocked: vec![],
            problems: vec![],
        };
        assert_eq!(StatusSummary::parse(Some(&s.render())), Some(s.clone()));
        assert!(s.drain_started().is_some());
        assert_eq!(StatusSummary::parse(Some("{\"state\":\"exploded\"}")), None);
        assert_eq!(StatusSummary::parse(Some("nope")), None);
        assert_eq!(StatusSummary::parse(None), None);
    }
}
