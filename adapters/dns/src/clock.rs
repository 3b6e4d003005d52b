//! Per-target drain memory, in process: the TTL of a removed record (read from the
//! primary just before removal), whether the removal emptied the RRset, and when every
//! authoritative server first answered without the address (the start of the TTL clock).
//!
//! Nothing here is needed for correctness after a restart: with no memory, observe
//! assumes the configured TTL (or the remaining RRset's TTL, if longer) and starts the
//! clock at the first observation that shows the address gone everywhere, so a restart
//! can only make the wait longer, never shorter. Entries are dropped on `register` and
//! pruned an hour after they were last touched.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_adapter::AdapterError;

use crate::names::RecordKey;
use crate::plan::{Change, Step};

/// How long an untouched entry is kept (a drained pod is usually deleted long before).
const KEEP: Duration = Duration::from_secs(3600);

/// What the adapter remembers about one removed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainMemory {
    /// TTL of the RRset the address was removed from (`None`: not known, e.g. the address
    /// was already gone when `deregister` ran).
    pub removed_ttl: Option<u32>,
    /// Whether the removal left the RRset empty.
    pub emptied: bool,
    /// When every authoritative server first answered without the address.
    pub gone_since: Option<Instant>,
    /// Last write (for pruning).
    pub touched: Instant,
}

/// The memory of every target this adapter drained.
#[derive(Debug, Default)]
pub struct DrainClock {
    entries: Mutex<HashMap<RecordKey, DrainMemory>>,
    last_prune: Mutex<Option<Instant>>,
}

impl DrainClock {
    /// An empty clock.
    pub fn new() -> DrainClock {
        DrainClock::default()
    }

    /// Records a removal (or a `deregister` that found the address already gone). An
    /// existing entry keeps its clock; a known TTL only ever grows.
    pub fn note_removal(&self, key: RecordKey, removed_ttl: Option<u32>, emptied: bool) {
        let now = Instant::now();
        self.prune(now);
        let mut entries = self.lock();
        let e = entries.entry(key).or_insert(DrainMemory {
            removed_ttl: None,
            emptied: false,
            gone_since: None,
            touched: now,
        });
        e.removed_ttl = match (e.removed_ttl, removed_ttl) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        e.emptied |= emptied;
        e.touched = now;
    }

    /// The memory of one target.
    pub fn get(&self, key: &RecordKey) -> Option<DrainMemory> {
        self.lock().get(key).copied()
    }

    /// Starts (`Some`) or resets (`None`) the TTL clock of a target.
    pub fn set_gone_since(&self, key: &RecordKey, since: Option<Instant>) {
        let now = Instant::now();
        let mut entries = self.lock();
        match (entries.get_mut(key), since) {
            (Some(e), _) => {
                e.gone_since = since;
                e.touched = now;
            }
            (None, Some(since)) => {
                entries.insert(
                    key.clone(),
                    DrainMemory {
                        removed_ttl: None,
                        emptied: false,
                        gone_since: Some(since),
                        touched: now,
                    },
                );
            }
            (None, None) => {}
        }
    }

    /// Forgets a target (it was registered again).
    pub fn forget(&self, key: &RecordKey) {
        self.lock().remove(key);
    }

    /// A caller's result for one planned change once its batch went out (`failed`: the
    /// send's error), recording what the change means for the drain memory: an applied
    /// removal remembers the RRset's TTL (`rrset_ttl`, read just before) and whether it
    /// left the RRset empty (`final_len == 0`); an add forgets the target.
    pub fn settle(
        &self,
        change: &Change,
        step: Step,
        failed: Option<&AdapterError>,
        rrset_ttl: Option<u32>,
        final_len: usize,
    ) -> Result<(), AdapterError> {
        match (step, failed) {
            (Step::Refuse(why), _) => Err(AdapterError::permanent(why)),
            (Step::Apply, Some(e)) => Err(e.clone()),
            (step, _) => {
                match (change, step) {
                    (Change::Add(s), _) => self.forget(&s.key()),
                    (Change::Remove(s), Step::Apply) => self.note_removal(s.key(), rrset_ttl, final_len == 0),
                    (Change::Remove(_), _) => {}
                }
                Ok(())
            }
        }
    }

    /// How many targets are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn prune(&self, now: Instant) {
        let mut last = self.last_prune.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(60)) {
            return;
        }
        *last = Some(now);
        self.lock().retain(|_, e| now.duration_since(e.touched) < KEEP);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RecordKey, DrainMemory>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    fn key(ip: &str) -> RecordKey {
        RecordKey {
            name: Name::from_ascii("www.example.test.").unwrap(),
            rtype: RecordType::A,
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn keeps_the_clock_and_the_longest_ttl() {
        let c = DrainClock::new();
        c.note_removal(key("10.0.0.1"), Some(30), false);
        let t = Instant::now();
        c.set_gone_since(&key("10.0.0.1"), Some(t));
        c.note_removal(key("10.0.0.1"), None, true);
        c.note_removal(key("10.0.0.1"), Some(10), false);
        let m = c.get(&key("10.0.0.1")).unwrap();
        assert_eq!((m.removed_ttl, m.emptied, m.gone_since), (Some(30), true, Some(t)));
        c.set_gone_since(&key("10.0.0.2"), None);
        assert!(
            c.get(&key("10.0.0.2")).is_none(),
            "resetting an unknown clock creates nothing"
        );
        c.forget(&key("10.0.0.1"));
        assert!(c.is_empty());
    }
}
