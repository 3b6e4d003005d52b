//! The evidence rules as a pure function: every server's answer + the drain memory + now
//! → the [`Observation`] and the new start of the TTL clock.
//!
//! | primary (first view) | other servers | state |
//! |---|---|---|
//! | present | all present | `Serving` |
//! | present | some absent | `Registered` (restore not on every server yet) |
//! | absent | some present | `Draining` (a lagging secondary still answers; clock reset) |
//! | absent | all absent, wait not over | `Draining`, `remaining` = wait − time since gone |
//! | absent | all absent, wait over | `Drained` |
//!
//! The wait: the removed record's TTL (remembered from before the removal; without memory
//! the configured TTL, or the remaining RRset's TTL if longer), and — when the RRset is
//! empty (our removal emptied it, or the primary now answers NODATA/NXDOMAIN) — at least
//! the zone's negative-caching TTL, min(SOA TTL, SOA minimum). Both clocks start when no
//! authoritative server answers the address any more, so the wait is the larger of the two.

use std::time::{Duration, Instant};

use sluice_adapter::{Observation, TrafficState};

use crate::clock::DrainMemory;
use crate::evidence::{describe_all, ServerView};

/// The outcome of one assessment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What to report.
    pub observation: Observation,
    /// The TTL clock to store for the target: `Some` when the address is gone from every
    /// server (kept from memory, or now), `None` to reset it.
    pub gone_since: Option<Instant>,
}

/// Assesses `views` (the primary first) of the record `what` (`www.example.test. A 10.0.0.1`).
pub fn assess(
    what: &str,
    views: &[ServerView],
    memory: Option<&DrainMemory>,
    default_ttl: u32,
    now: Instant,
) -> Verdict {
    let answers = describe_all(views);
    let evidence = |tail: String| format!("{what}: {answers}; {tail}");
    let Some(primary) = views.first() else {
        return Verdict {
            observation: Observation::new(TrafficState::Draining, evidence("no authoritative server known".into())),
            gone_since: None,
        };
    };
    let missing: Vec<String> = views
        .iter()
        .filter(|v| !v.present)
        .map(|v| v.server.to_string())
        .collect();
    let holding: Vec<String> = views
        .iter()
        .filter(|v| v.present)
        .map(|v| v.server.to_string())
        .collect();
    if primary.present {
        let observation = if missing.is_empty() {
            Observation::new(
                TrafficState::Serving,
                evidence("answered by every authoritative server".into()),
            )
        } else {
            Observation::new(
                TrafficState::Registered,
                evidence(format!("not yet on {}", missing.join(", "))),
            )
        };
        return Verdict {
            observation,
            gone_since: None,
        };
    }
    if !holding.is_empty() {
        return Verdict {
            observation: Observation::new(
                TrafficState::Draining,
                evidence(format!(
                    "removed on the primary, still answered by {}",
                    holding.join(", ")
                )),
            ),
            gone_since: None,
        };
    }
    let since = memory.and_then(|m| m.gone_since).unwrap_or(now);
    let (ttl, ttl_note) = match memory.and_then(|m| m.removed_ttl) {
        Some(ttl) => (ttl, format!("ttl {ttl}s")),
        None => {
            let ttl = default_ttl.max(primary.rrset_ttl.unwrap_or(0));
            (
                ttl,
                format!(
                    "ttl {ttl}s assumed (the removed record's TTL is not known here, e.g. after a gateway restart)"
                ),
            )
        }
    };
    let empty = memory.is_some_and(|m| m.emptied) || primary.rrset_len == 0;
    let (wait, wait_note) = if empty {
        let neg = primary.negative_ttl;
        (
            ttl.max(neg),
            format!("{ttl_note}, negative ttl {neg}s (no address of this type left)"),
        )
    } else {
        (ttl, ttl_note)
    };
    let wait = Duration::from_secs(u64::from(wait));
    let gone_for = now.saturating_duration_since(since);
    let observation = if gone_for >= wait {
        Observation::new(
            TrafficState::Drained,
            evidence(format!(
                "gone from every authoritative server for {:.3}s >= {wait_note}: caches expired",
                gone_for.as_secs_f64()
            )),
        )
    } else {
        let remaining = wait - gone_for;
        Observation::new(
            TrafficState::Draining,
            evidence(format!(
                "gone from every authoritative server for {:.3}s; caches may still hold it ({wait_note}): {:.3}s left",
                gone_for.as_secs_f64(),
                remaining.as_secs_f64()
            )),
        )
        .with_remaining(Some(remaining))
    };
    Verdict {
        observation,
        gone_since: Some(since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(port: u16, present: bool, rrset_len: usize) -> ServerView {
        ServerView {
            server: ([127, 0, 0, 1], port).into(),
            present,
            rrset_ttl: (rrset_len > 0).then_some(5),
            rrset_len,
            serial: 7,
            negative_ttl: 9,
        }
    }

    fn memory(ttl: Option<u32>, emptied: bool, gone_since: Option<Instant>) -> DrainMemory {
        DrainMemory {
            removed_ttl: ttl,
            emptied,
            gone_since,
            touched: Instant::now(),
        }
    }

    #[test]
    fn table() {
        let now = Instant::now();
        let ago = |s: u64| now - Duration::from_secs(s);
        use TrafficState::*;
        type Case = (
            &'static str,
            Vec<ServerView>,
            Option<DrainMemory>,
            TrafficState,
            Option<u64>,
            &'static str,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("serving everywhere", vec![view(1, true, 2), view(2, true, 2)], None, Serving, None, "answered by every"),
            ("restore lags on a secondary", vec![view(1, true, 2), view(2, false, 1)], None, Registered, None, "not yet on 127.0.0.1:2"),
            ("drain lags on a secondary", vec![view(1, false, 1), view(2, true, 2)], Some(memory(Some(30), false, Some(ago(100)))), Draining, None, "still answered by 127.0.0.1:2"),
            ("gone now: the clock starts", vec![view(1, false, 1), view(2, false, 1)], Some(memory(Some(30), false, None)), Draining, Some(30), "30.000s left"),
            ("gone 10s of 30", vec![view(1, false, 1)], Some(memory(Some(30), false, Some(ago(10)))), Draining, Some(20), "ttl 30s"),
            ("gone for the ttl", vec![view(1, false, 1)], Some(memory(Some(30), false, Some(ago(30)))), Drained, None, "caches expired"),
            ("emptied: negative ttl longer", vec![view(1, false, 0)], Some(memory(Some(3), true, Some(ago(5)))), Draining, Some(4), "negative ttl 9s"),
            ("emptied: negative ttl over", vec![view(1, false, 0)], Some(memory(Some(3), true, Some(ago(9)))), Drained, None, "negative ttl 9s"),
            ("no memory: configured ttl", vec![view(1, false, 1)], None, Draining, Some(60), "ttl 60s assumed"),
            ("no memory, empty name", vec![view(1, false, 0)], None, Draining, Some(60), "negative ttl 9s"),
        ];
        for (name, views, mem, state, remaining, needle) in cases {
            let v = assess("www.example.test. A 10.0.0.1", &views, mem.as_ref(), 60, now);
            assert_eq!(v.observation.state, state, "{name}: {:?}", v.observation);
            assert_eq!(v.observation.remaining, remaining.map(Duration::from_secs), "{name}");
            assert!(
                v.observation.evidence.contains(needle),
                "{name}: {}",
                v.observation.evidence
            );
            assert!(
                v.observation
                    .evidence
                    .starts_with("www.example.test. A 10.0.0.1: 127.0.0.1:1="),
                "{name}"
            );
        }
    }

    #[test]
    fn the_clock_starts_once_and_resets_when_a_server_answers_again() {
        let now = Instant::now();
        let gone = assess("r", &[view(1, false, 1)], Some(&memory(Some(5), false, None)), 60, now);
        assert_eq!(gone.gone_since, Some(now));
        let earlier = now - Duration::from_secs(2);
        let kept = assess(
            "r",
            &[view(1, false, 1)],
            Some(&memory(Some(5), false, Some(earlier))),
            60,
            now,
        );
        assert_eq!(kept.gone_since, Some(earlier));
        let back = assess(
            "r",
            &[view(1, false, 1), view(2, true, 1)],
            Some(&memory(Some(5), false, Some(earlier))),
            60,
            now,
        );
        assert_eq!(back.gone_since, None);
    }
}
