//! The etcd evidence rules as pure functions: what `observe` reports for a read of the
//! pod's entry plus the settle watch's state. No I/O, unit-tested by table.
//!
//! | read | draining? | watch | result |
//! |---|---|---|---|
//! | enabled entry present | yes | – | `Draining`: re-added by lease L at revision N |
//! | enabled entry present | no | – | `Serving` (expected value) / `Registered` (other value) |
//! | absent or disabled | – | no settle window | `Drained` |
//! | absent or disabled | – | not open yet | `Draining` |
//! | absent or disabled | – | absent for < settle | `Draining`, `remaining` = the rest |
//! | absent or disabled | – | absent for ≥ settle | `Drained` |

use std::time::Duration;

use sluice_adapter::{Observation, TrafficState};

use crate::common::settled_observation;
use crate::etcd::client::Kv;
use crate::etcd::watch::WatchState;

/// `lease 694d8c1b2a3e4f56` (hex, as etcdctl prints it) or "a writer without a lease".
pub(crate) fn writer(lease: i64) -> String {
    if lease == 0 {
        "a writer without a lease".into()
    } else {
        format!("lease {lease:x}")
    }
}

/// The entry came back while a drain was asked: the service re-registers itself.
pub(crate) fn readded(kv: &Kv) -> Observation {
    Observation::new(
        TrafficState::Draining,
        format!(
            "key {} re-added by {} at revision {}; the service re-registers itself — stop its heartbeat or use the \
             disabled form (the settle clock restarts once it is gone)",
            kv.key,
            writer(kv.lease),
            kv.mod_revision
        ),
    )
}

/// The entry is present and no drain was asked.
pub(crate) fn present(kv: &Kv, expected: bool) -> Observation {
    let lease = if kv.lease == 0 {
        String::new()
    } else {
        format!(", lease {:x}", kv.lease)
    };
    if expected {
        return Observation::new(
            TrafficState::Serving,
            format!(
                "key {} present at revision {} with the expected value{lease}",
                kv.key, kv.mod_revision
            ),
        );
    }
    let shown: String = String::from_utf8_lossy(&kv.value).chars().take(120).collect();
    Observation::new(
        TrafficState::Registered,
        format!(
            "key {} present at revision {}{lease}, but its value is not the expected one: {shown}",
            kv.key, kv.mod_revision
        ),
    )
}

/// The entry is absent (or in its disabled form) at `revision`; `watch` is the settle
/// watch's state, `None` when no settle window is configured.
pub(crate) fn absent(
    place: &str,
    disabled: bool,
    revision: i64,
    watch: Option<&WatchState>,
    settle: Duration,
) -> Observation {
    let what = if disabled { "holds the disabled value" } else { "absent" };
    let Some(state) = watch.filter(|_| !settle.is_zero()) else {
        return Observation::new(
            TrafficState::Drained,
            format!("{place} {what} at revision {revision}; no settle window configured"),
        );
    };
    let mut evidence = format!(
        "{place} {what} at revision {revision} (since revision {})",
        state.absent_revision
    );
    if let Some(readd) = &state.last_readd {
        evidence.push_str(&format!(
            "; it was re-added at revision {} by {} and went again",
            readd.revision,
            writer(readd.lease)
        ));
    }
    let held = state.absent_since.elapsed();
    if !state.established {
        let mut obs = Observation::new(
            TrafficState::Draining,
            format!("{evidence}; waiting for the etcd watch to open"),
        );
        obs.remaining = Some(settle.saturating_sub(held));
        return obs;
    }
    settled_observation(held, settle, &evidence)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::*;
    use crate::etcd::watch::ReAdd;

    fn kv(lease: i64) -> Kv {
        Kv {
            key: "/k".into(),
            value: b"v".to_vec(),
            lease,
            create_revision: 5,
            mod_revision: 7,
        }
    }

    fn watch(established: bool, absent_for: Duration, readd: bool) -> WatchState {
        WatchState {
            established,
            present: BTreeMap::new(),
            absent_since: Instant::now() - absent_for,
            absent_revision: 9,
            last_readd: readd.then(|| ReAdd {
                key: "/k".into(),
                revision: 8,
                lease: 0x2a,
            }),
            broken: None,
        }
    }

    #[test]
    fn table() {
        let settle = Duration::from_millis(300);
        let o = readded(&kv(0x694d));
        assert_eq!(o.state, TrafficState::Draining);
        assert!(o
            .evidence
            .starts_with("key /k re-added by lease 694d at revision 7; the service re-registers itself"));
        assert!(readded(&kv(0)).evidence.contains("a writer without a lease"));
        assert_eq!(present(&kv(0), true).state, TrafficState::Serving);
        let o = present(&kv(0x10), false);
        assert!(
            o.state == TrafficState::Registered && o.evidence.contains(", lease 10, but"),
            "{o:?}"
        );

        let o = absent("key /k", false, 12, None, settle);
        assert_eq!(o.state, TrafficState::Drained, "no watch: no settle window");
        let o = absent(
            "key /k",
            false,
            12,
            Some(&watch(true, Duration::ZERO, false)),
            Duration::ZERO,
        );
        assert_eq!(o.state, TrafficState::Drained);
        let o = absent(
            "key /k",
            false,
            12,
            Some(&watch(false, Duration::from_secs(9), false)),
            settle,
        );
        assert!(o.state == TrafficState::Draining && o.evidence.contains("waiting for the etcd watch"));
        let o = absent(
            "key /k",
            true,
            12,
            Some(&watch(true, Duration::from_millis(100), true)),
            settle,
        );
        assert_eq!(o.state, TrafficState::Draining);
        assert!(o.remaining.is_some_and(|r| r <= Duration::from_millis(200)));
        assert!(o
            .evidence
            .starts_with("key /k holds the disabled value at revision 12 (since revision 9)"));
        assert!(o.evidence.contains("re-added at revision 8 by lease 2a and went again"));
        let o = absent(
            "key /k",
            false,
            12,
            Some(&watch(true, Duration::from_millis(400), false)),
            settle,
        );
        assert!(o.state == TrafficState::Drained && o.remaining.is_none(), "{o:?}");
    }
}
