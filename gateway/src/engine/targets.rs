//! A pod's targets: the union of what its valid bindings select now (*desired*) and what
//! its ledger records (*recorded*), each with the adapter instance that acts on it — or
//! none, when the instance it was recorded through is no longer configured.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_adapter::{Adapter, PodRef, Target};

use crate::model::{Binding, LedgerEntry, PodView, TargetId};

/// One target of a pod.
#[derive(Debug, Clone)]
pub struct PodTarget {
    pub id: TargetId,
    pub kind: String,
    /// The instance that acts on it; `None` when it is not in the configuration.
    pub adapter: Option<Arc<dyn Adapter>>,
    pub target: Target,
    /// A valid binding selects it now.
    pub desired: bool,
    /// The ledger records it.
    pub recorded: bool,
    /// Its (recording) binding exists but is invalid: a restore keeps it as it is.
    pub held: bool,
    /// The binding that asked for it (the first, when several do).
    pub binding: String,
    /// How long it must stay drained before its ledger entry goes.
    pub settle: Duration,
}

impl PodTarget {
    /// The ledger entry recording it.
    pub fn entry(&self) -> LedgerEntry {
        LedgerEntry {
            adapter: self.id.adapter.clone(),
            kind: self.kind.clone(),
            params: self.id.params.clone(),
            ip: self.id.ip,
            port: self.id.port,
            binding: self.binding.clone(),
            settle_seconds: self.settle.as_secs(),
        }
    }

    /// `kind/adapter/k=v,... ip:port` — the key of the status annotation's target map.
    pub fn status_key(&self) -> String {
        let params: Vec<String> = self.id.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{}/{}/{} {}",
            self.kind,
            self.id.adapter,
            params.join(","),
            self.target.addr()
        )
    }
}

/// Assembles the union. `invalid` names the bindings of the pod's namespace that exist
/// but are invalid (their recorded targets are held).
pub fn assemble(
    pod: &PodView,
    bindings: &[Binding],
    ledger: &[LedgerEntry],
    invalid: &[String],
    adapters: &BTreeMap<String, Arc<dyn Adapter>>,
) -> Vec<PodTarget> {
    let pod_ref = PodRef {
        cluster: pod.cluster.clone(),
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    };
    let widest_settle = bindings.iter().map(|b| b.settle_seconds).max().unwrap_or(0);
    let mut out: Vec<PodTarget> = Vec::new();
    if let Some(ip) = pod.ip {
        for b in bindings {
            for t in &b.targets {
                let id = TargetId {
                    adapter: t.adapter.name().to_string(),
                    params: t.params.clone(),
                    ip,
                    port: b.port,
                };
                if let Some(known) = out.iter_mut().find(|o| o.id == id) {
                    // Two bindings ask for the same target: the wider settle window wins.
                    known.settle = known.settle.max(Duration::from_secs(b.settle_seconds));
                    continue;
                }
                out.push(PodTarget {
                    kind: t.kind.clone(),
                    adapter: Some(t.adapter.clone()),
                    target: Target {
                        pod: pod_ref.clone(),
                        ip,
                        port: b.port,
                        params: t.params.clone(),
                    },
                    desired: true,
                    recorded: false,
                    held: false,
                    binding: b.name.clone(),
                    settle: Duration::from_secs(b.settle_seconds),
                    id,
                });
            }
        }
    }
    for e in ledger {
        let id = e.id();
        if let Some(known) = out.iter_mut().find(|o| o.id == id) {
            known.recorded = true;
            known.settle = known.settle.max(Duration::from_secs(e.settle_seconds));
            continue;
        }
        // What it was recorded with, or what the binding says now if it still exists, or
        // (a binding deleted before entries carried their settle) the widest there is.
        let settle = bindings
            .iter()
            .find(|b| b.name == e.binding)
            .map(|b| b.settle_seconds)
            .unwrap_or(widest_settle)
            .max(e.settle_seconds);
        out.push(PodTarget {
            kind: e.kind.clone(),
            adapter: adapters.get(&e.adapter).cloned(),
            target: Target {
                pod: pod_ref.clone(),
                ip: e.ip,
                port: e.port,
                params: e.params.clone(),
            },
            desired: false,
            recorded: true,
            held: invalid.contains(&e.binding),
            binding: e.binding.clone(),
            settle: Duration::from_secs(settle),
            id,
        });
    }
    out
}
