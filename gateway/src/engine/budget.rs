//! Disruption budgets: how many pods of a binding may be *out of traffic* at once, counted
//! across clusters (bindings with the same namespace/name share one budget).
//!
//! A pod takes a slot when its drain starts and holds it until it serves again (its gate
//! True) or is gone — not just while the drain runs — so `maxUnavailable: 1` never leaves
//! two pods of a binding out of traffic at once. The gate is the durable record: a
//! restarted gateway gives a slot back to every bound pod whose gate is False
//! ([`Budgets::retake`]) before any new drain may take one.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use dashmap::DashMap;

use crate::model::PodKey;

/// The holders of every budget.
#[derive(Debug, Default)]
pub struct Budgets {
    holders: DashMap<String, BTreeSet<PodKey>>,
    /// Check-and-take across several budgets is one atomic step.
    take: Mutex<()>,
    /// Pods waiting for a slot of each budget, oldest first: a slot given back wakes the
    /// oldest (ten thousand drains waiting for slots do not each look again every second).
    waiters: Mutex<HashMap<String, Waiters>>,
}

#[derive(Debug, Default)]
struct Waiters {
    queue: VecDeque<PodKey>,
    queued: HashSet<PodKey>,
}

/// One budget a pod's drain needs a slot of: its key and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub key: String,
    pub max: usize,
}

impl Budgets {
    /// Whether the pod holds a slot of every budget in `needs`.
    pub fn holds(&self, pod: &PodKey, needs: &[Need]) -> bool {
        needs
            .iter()
            .all(|n| self.holders.get(&n.key).is_some_and(|h| h.contains(pod)))
    }

    /// Whether a slot of every budget in `needs` is free for the pod.
    pub fn free(&self, pod: &PodKey, needs: &[Need]) -> bool {
        needs.iter().all(|n| {
            self.holders
                .get(&n.key)
                .is_none_or(|h| h.contains(pod) || h.len() < n.max)
        })
    }

    /// Takes a slot of every budget in `needs`, all or none. `force`: take them even when
    /// full (a pod losing its containers drains whatever the budget says; it still counts).
    pub fn try_take(&self, pod: &PodKey, needs: &[Need], force: bool) -> bool {
        let _one_at_a_time = self.take.lock().unwrap_or_else(|e| e.into_inner());
        if !force && !self.free(pod, needs) {
            return false;
        }
        for n in needs {
            self.holders.entry(n.key.clone()).or_default().insert(pod.clone());
        }
        true
    }

    /// Records that the pod is out of traffic already (its gate is False): it holds a slot
    /// whatever the count.
    pub fn retake(&self, pod: &PodKey, keys: impl IntoIterator<Item = String>) {
        let _one_at_a_time = self.take.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            self.holders.entry(k).or_default().insert(pod.clone());
        }
    }

    /// The pod serves again, or is gone: its slots go back. Answers the budgets it held a
    /// slot of.
    pub fn release(&self, pod: &PodKey) -> Vec<String> {
        let mut freed = Vec::new();
        for mut h in self.holders.iter_mut() {
            if h.remove(pod) {
                freed.push(h.key().clone());
            }
        }
        freed
    }

    /// The pod waits for a slot of each of these budgets (once in each queue).
    pub fn wait(&self, pod: &PodKey, keys: impl IntoIterator<Item = String>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            let w = waiters.entry(k).or_default();
            if w.queued.insert(pod.clone()) {
                w.queue.push_back(pod.clone());
            }
        }
    }

    /// The oldest pod waiting for a slot of `key`, out of its queue.
    pub fn next_waiter(&self, key: &str) -> Option<PodKey> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let w = waiters.get_mut(key)?;
        let pod = w.queue.pop_front()?;
        w.queued.remove(&pod);
        if w.queue.is_empty() {
            waiters.remove(key);
        }
        Some(pod)
    }

    /// Drops holders that are not (any more) known pods: a safety net against a slot
    /// outliving its pod. Answers the budgets it freed a slot of.
    pub fn prune(&self, known: impl Fn(&PodKey) -> bool) -> Vec<String> {
        let mut freed = Vec::new();
        for mut h in self.holders.iter_mut() {
            let before = h.len();
            h.retain(|k| known(k));
            if h.len() < before {
                freed.push(h.key().clone());
            }
        }
        freed
    }

    /// Every budget with its holders' count.
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.holders.iter().map(|h| (h.key().clone(), h.len())).collect()
    }

    /// Whether the pod holds a slot of `key`.
    pub fn holds_key(&self, key: &str, pod: &PodKey) -> bool {
        self.holders.get(key).is_some_and(|h| h.contains(pod))
    }

    /// Pods holding a slot of `key`.
    pub fn count(&self, key: &str) -> usize {
        self.holders.get(key).map(|h| h.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(n: &str) -> PodKey {
        PodKey {
            cluster: "c".into(),
            uid: n.into(),
        }
    }

    fn need(key: &str, max: usize) -> Need {
        Need { key: key.into(), max }
    }

    #[test]
    fn slots_are_taken_all_or_none_and_held_until_released() {
        let b = Budgets::default();
        let web = [need("ns/web", 1)];
        assert!(b.try_take(&pod("a"), &web, false));
        assert!(b.holds(&pod("a"), &web));
        assert!(!b.try_take(&pod("b"), &web, false), "full");
        // A pod in two bindings needs both: none is taken when one is full.
        let both = [need("ns/api", 1), need("ns/web", 1)];
        assert!(!b.try_take(&pod("b"), &both, false));
        assert_eq!(b.count("ns/api"), 0, "all or none");
        // A dying pod takes one anyway (it still counts).
        assert!(b.try_take(&pod("b"), &web, true));
        assert_eq!(b.count("ns/web"), 2);
        b.release(&pod("a"));
        b.release(&pod("b"));
        assert!(b.try_take(&pod("c"), &both, false));
    }

    #[test]
    fn waiters_queue_once_each_oldest_first_and_a_release_names_what_it_freed() {
        let b = Budgets::default();
        let web = [need("ns/web", 1)];
        assert!(b.try_take(&pod("a"), &web, false));
        for p in ["b", "c", "b"] {
            b.wait(&pod(p), ["ns/web".to_string()]);
        }
        assert_eq!(b.release(&pod("a")), vec!["ns/web".to_string()]);
        assert_eq!(b.release(&pod("a")), Vec::<String>::new(), "nothing held any more");
        assert_eq!(b.next_waiter("ns/web"), Some(pod("b")));
        assert_eq!(b.next_waiter("ns/web"), Some(pod("c")), "b was queued once");
        assert_eq!(b.next_waiter("ns/web"), None);
        b.wait(&pod("b"), ["ns/web".to_string()]);
        assert_eq!(
            b.next_waiter("ns/web"),
            Some(pod("b")),
            "queued again after it was woken"
        );
        // A slot outliving its pod, dropped by the safety net, is named too.
        assert!(b.try_take(&pod("gone"), &web, false));
        assert_eq!(b.prune(|k| *k != pod("gone")), vec!["ns/web".to_string()]);
        assert_eq!(b.prune(|_| true), Vec::<String>::new());
    }

    #[test]
    fn a_pod_out_of_traffic_is_counted_after_a_restart() {
        let b = Budgets::default();
        b.retake(&pod("out"), ["ns/web".to_string()]);
        assert!(!b.free(&pod("new"), &[need("ns/web", 1)]));
        assert!(b.free(&pod("out"), &[need("ns/web", 1)]), "its own slot");
    }

    #[test]
    fn concurrent_takes_never_exceed_the_budget() {
        let b = std::sync::Arc::new(Budgets::default());
        let taken: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let b = b.clone();
                    s.spawn(move || b.try_take(&pod(&i.to_string()), &[need("ns/web", 3)], false))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(taken.iter().filter(|t| **t).count(), 3);
    }
}
