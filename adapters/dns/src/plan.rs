//! Planning one batch of changes against what the zone holds now — a pure function shared
//! by both adapters.
//!
//! Per RRset (owner name + type):
//! - an add of an address already served is skipped; otherwise it is applied;
//! - a remove of an address not served is skipped (idempotent; never-registered pods);
//! - a remove that would leave the RRset empty is **refused** unless the target allows it
//!   (`allowEmpty: "true"`): blackholing a name is a decision, not an accident. Removes
//!   without `allowEmpty` are planned first, so the outcome does not depend on arrival
//!   order within a batch;
//! - `guard` says the RRset must still be exactly what was read when the change lands
//!   (an RFC 2136 value-dependent prerequisite), because a refusal was decided on it.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::rr::{Name, RecordType};

use crate::names::RecordSpec;

/// One change a caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Put the address in (`register`).
    Add(RecordSpec),
    /// Take the address out (`deregister`).
    Remove(RecordSpec),
}

impl Change {
    /// The record the change is about.
    pub fn spec(&self) -> &RecordSpec {
        match self {
            Change::Add(s) | Change::Remove(s) => s,
        }
    }
}

/// What to do with one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: the zone already is as asked.
    Skip,
    /// Send it.
    Apply,
    /// Refused, with the reason for the caller.
    Refuse(String),
}

/// The plan for one RRset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrsetPlan {
    /// One step per change, in the order given.
    pub steps: Vec<Step>,
    /// How many addresses the RRset holds once the plan is applied.
    pub final_len: usize,
    /// Whether the plan relies on the RRset being exactly as read (see the module doc).
    pub guard: bool,
}

/// Groups changes by RRset: `(name, type) → indexes`, in order of first appearance.
pub fn group(changes: &[Change]) -> Vec<((Name, RecordType), Vec<usize>)> {
    let mut order: Vec<(Name, RecordType)> = Vec::new();
    let mut by: HashMap<(Name, RecordType), Vec<usize>> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        let k = (c.spec().name.clone(), c.spec().rtype);
        by.entry(k.clone())
            .or_insert_with(|| {
                order.push(k);
                Vec::new()
            })
            .push(i);
    }
    order
        .into_iter()
        .map(|k| {
            let v = by.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect()
}

/// Plans `changes` (all of one RRset) against the addresses it serves now.
pub fn plan_rrset(current: &[IpAddr], changes: &[&Change]) -> RrsetPlan {
    let mut working: Vec<IpAddr> = current.to_vec();
    let mut steps = vec![Step::Skip; changes.len()];
    let mut guard = false;
    for (i, c) in changes.iter().enumerate() {
        if let Change::Add(s) = c {
            if !working.contains(&s.ip) {
                working.push(s.ip);
                steps[i] = Step::Apply;
            }
        }
    }
    let mut removes: Vec<(usize, &RecordSpec)> = changes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Change::Remove(s) => Some((i, s)),
            Change::Add(_) => None,
        })
        .collect();
    removes.sort_by_key(|(_, s)| s.allow_empty); // stable: non-allowEmpty removes first
    for (i, s) in removes {
        let Some(pos) = working.iter().position(|ip| *ip == s.ip) else {
            continue;
        };
        if working.len() == 1 && !s.allow_empty {
            steps[i] = Step::Refuse(format!(
                "refusing to remove {}, the last address of {} {}: blackholing a name is a decision, not an \
                 accident; set `allowEmpty: \"true\"` on the binding's DNS target to allow it",
                s.ip, s.name, s.rtype
            ));
            guard = true;
            continue;
        }
        working.remove(pos);
        steps[i] = Step::Apply;
        guard |= !s.allow_empty;
    }
    RrsetPlan {
        steps,
        final_len: working.len(),
        guard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::parse_fqdn;

    fn spec(ip: &str, allow_empty: bool) -> RecordSpec {
        RecordSpec {
            zone: parse_fqdn("example.test").unwrap(),
            name: parse_fqdn("www.example.test").unwrap(),
            rtype: RecordType::A,
            ip: ip.parse().unwrap(),
            ttl: None,
            allow_empty,
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn rm(ip: &str) -> Change {
        Change::Remove(spec(ip, false))
    }

    fn rm_empty_ok(ip: &str) -> Change {
        Change::Remove(spec(ip, true))
    }

    fn add(ip: &str) -> Change {
        Change::Add(spec(ip, false))
    }

    fn kinds(p: &RrsetPlan) -> String {
        p.steps
            .iter()
            .map(|s| match s {
                Step::Skip => 's',
                Step::Apply => 'a',
                Step::Refuse(_) => 'R',
            })
            .collect()
    }

    #[test]
    fn table() {
        type Case = (&'static str, Vec<&'static str>, Vec<Change>, &'static str, usize, bool);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("remove one of two", vec!["10.0.0.1", "10.0.0.2"], vec![rm("10.0.0.1")], "a", 1, true),
            ("remove absent", vec!["10.0.0.2"], vec![rm("10.0.0.1")], "s", 1, false),
            ("remove from empty", vec![], vec![rm("10.0.0.1")], "s", 0, false),
            ("last address refused", vec!["10.0.0.1"], vec![rm("10.0.0.1")], "R", 1, true),
            ("last address allowed", vec!["10.0.0.1"], vec![rm_empty_ok("10.0.0.1")], "a", 0, false),
            ("two of two: second refused", vec!["10.0.0.1", "10.0.0.2"], vec![rm("10.0.0.1"), rm("10.0.0.2")], "aR", 1, true),
            ("allowEmpty goes last, whatever the order", vec!["10.0.0.1", "10.0.0.2"], vec![rm_empty_ok("10.0.0.1"), rm("10.0.0.2")], "aa", 0, true),
            ("add new", vec!["10.0.0.2"], vec![add("10.0.0.1")], "a", 2, false),
            ("add present", vec!["10.0.0.1"], vec![add("10.0.0.1")], "s", 1, false),
            ("add twice in a batch", vec![], vec![add("10.0.0.1"), add("10.0.0.1")], "as", 1, false),
            ("an add keeps a remove from emptying", vec!["10.0.0.1"], vec![rm("10.0.0.1"), add("10.0.0.3")], "aa", 1, true),
        ];
        for (name, current, changes, expect, final_len, guard) in cases {
            let refs: Vec<&Change> = changes.iter().collect();
            let p = plan_rrset(&ips(&current), &refs);
            assert_eq!(
                (kinds(&p).as_str(), p.final_len, p.guard),
                (expect, final_len, guard),
                "{name}"
            );
        }
    }

    #[test]
    fn refusal_says_how_to_allow() {
        let c = rm("10.0.0.1");
        let p = plan_rrset(&ips(&["10.0.0.1"]), &[&c]);
        let Step::Refuse(why) = &p.steps[0] else { panic!() };
        assert!(
            why.contains("last address of www.example.test. A") && why.contains("allowEmpty"),
            "{why}"
        );
    }

    #[test]
    fn groups_by_rrset_in_order() {
        let mut other = spec("10.0.0.9", false);
        other.name = parse_fqdn("api.example.test").unwrap();
        let changes = vec![rm("10.0.0.1"), Change::Add(other), add("10.0.0.2")];
        let g = group(&changes);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].1.clone(), g[1].1.clone()), (vec![0, 2], vec![1]));
    }
}
