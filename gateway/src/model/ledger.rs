//! The registration ledger: where Sluice registered a pod's address, recorded on the pod
//! itself (annotation [`LEDGER_ANNOTATION`]) *before* the `register` call, and cleared per
//! target only after that target is verified drained.
//!
//! A drain goes through the union of the ledger and the targets the pod's bindings select
//! now, so editing or deleting a binding, a gateway restart or a config change can never
//! turn "I cannot find where it is registered" into "drained". The guard finalizer
//! [`LEDGER_FINALIZER`] keeps the pod object from disappearing while the ledger holds
//! anything; the per-kind finalizers keep their OpenKruise meaning (registered *and*
//! verified).
//!
//! The annotation is a JSON array of [`LedgerEntry`], sorted, one per target. Unknown
//! fields are ignored (a newer gateway may add some; an older one rolled back still reads
//! what it needs). An annotation that cannot be parsed is never treated as empty: the
//! engine blocks the pod's drain and says why.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The ledger annotation.
pub const LEDGER_ANNOTATION: &str = "sluice.dev/registrations";
/// The guard finalizer: present while the ledger records anything.
pub const LEDGER_FINALIZER: &str = "sluice.dev/ledger";
/// The traffic kind no adapter may use: its finalizer name is the ledger guard's.
pub const RESERVED_KIND: &str = "ledger";

/// One target Sluice registered (or is registering) the pod's address in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// The adapter instance (gateway configuration) it was registered through.
    pub adapter: String,
    /// Its traffic kind (`slb`, `dns`, `rpc`, custom): names the per-kind finalizer.
    pub kind: String,
    /// The binding target's parameters (backend, DNS name, registry service).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub ip: IpAddr,
    pub port: u16,
    /// The TrafficBinding (same namespace) that asked for it.
    #[serde(default)]
    pub binding: String,
    /// The binding's `settleSeconds` when it was recorded: a drain of this target still
    /// settles that long after the binding is edited or deleted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub settle_seconds: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What identifies a target: the same adapter instance, parameters and address are the
/// same registration, whichever binding asked for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId {
    pub adapter: String,
    pub params: BTreeMap<String, String>,
    pub ip: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for TargetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let addr = match self.ip {
            IpAddr::V4(ip) => format!("{ip}:{}", self.port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.port),
        };
        write!(f, "{}[{}] {addr}", self.adapter, params.join(","))
    }
}

impl LedgerEntry {
    pub fn id(&self) -> TargetId {
        TargetId {
            adapter: self.adapter.clone(),
            params: self.params.clone(),
            ip: self.ip,
            port: self.port,
        }
    }
}

/// The annotation could not be read: where the pod's traffic is registered is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "annotation {LEDGER_ANNOTATION} cannot be read ({problem}): Sluice does not know where this pod's \
     traffic is registered, so no finalizer of its is removed; restore the annotation (or take the pod's \
     address out of its backends by hand, then delete the annotation)"
)]
pub struct LedgerError {
    pub problem: String,
}

/// Parses the annotation (`None`: no ledger, an empty one).
pub fn parse(raw: Option<&str>) -> Result<Vec<LedgerEntry>, LedgerError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let mut entries: Vec<LedgerEntry> =
        serde_json::from_str(raw).map_err(|e| LedgerError { problem: e.to_string() })?;
    entries.sort();
    entries.dedup_by_key(|e| e.id());
    Ok(entries)
}

/// The annotation's value for these entries (sorted, one per target).
pub fn render(entries: &[LedgerEntry]) -> String {
    let mut sorted = entries.to_vec();
    sorted.sort();
    sorted.dedup_by_key(|e| e.id());
    serde_json::to_string(&sorted).expect("ledger entries serialize")
}

/// `ledger` with `record` added (unless already there) and `forget` removed.
pub fn apply(ledger: &[LedgerEntry], record: &[LedgerEntry], forget: &[TargetId]) -> Vec<LedgerEntry> {
    let mut out: Vec<LedgerEntry> = ledger.iter().filter(|e| !forget.contains(&e.id())).cloned().collect();
    for r in record {
        if !out.iter().any(|e| e.id() == r.id()) {
            out.push(r.clone());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(backend: &str, ip: &str) -> LedgerEntry {
        LedgerEntry {
            settle_seconds: 0,
            adapter: "lb".into(),
            kind: "slb".into(),
            params: [("backend".to_string(), backend.to_string())].into(),
            ip: ip.parse().unwrap(),
            port: 80,
            binding: "web".into(),
        }
    }

    #[test]
    fn round_trips_sorted_and_without_duplicates() {
        let a = entry("web", "10.0.0.1");
        let b = entry("api", "10.0.0.1");
        let text = render(&[a.clone(), b.clone(), a.clone()]);
        assert_eq!(parse(Some(&text)).unwrap(), vec![b, a]);
        assert!(text.contains(r#""params":{"backend":"api"}"#), "{text}");
    }

    #[test]
    fn absent_is_empty_but_unreadable_is_an_error_that_says_what_to_do() {
        assert_eq!(parse(None).unwrap(), vec![]);
        for bad in ["", "{}", "[{\"adapter\":1}]", "not json"] {
            let e = parse(Some(bad)).expect_err(bad);
            assert!(e.to_string().contains("no finalizer of its is removed"), "{e}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let v = r#"[{"adapter":"lb","kind":"slb","params":{"backend":"web"},"ip":"10.0.0.1","port":80,"binding":"web","future":true}]"#;
        assert_eq!(parse(Some(v)).unwrap(), vec![entry("web", "10.0.0.1")]);
    }

    #[test]
    fn apply_records_once_and_forgets_by_id() {
        let a = entry("web", "10.0.0.1");
        let b = entry("web2", "10.0.0.1");
        let mut other_binding = a.clone();
        other_binding.binding = "other".into();
        let l = apply(std::slice::from_ref(&a), &[other_binding, b.clone()], &[]);
        assert_eq!(l, vec![a.clone(), b.clone()], "the same target is recorded once");
        assert_eq!(apply(&l, &[], &[a.id()]), vec![b]);
    }
}
