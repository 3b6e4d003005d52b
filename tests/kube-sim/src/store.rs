//! The storage of one simulated cluster: one cluster-wide `resourceVersion` counter, a table
//! per resource, the event history watches replay from, and snapshots for paginated lists.
//!
//! Everything here runs under the cluster's single lock; the API semantics on top of it
//! (create/update/patch/delete) live in `ops`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imbl::OrdMap;
use tokio::sync::broadcast;

use crate::object::Obj;
use crate::resources::{builtins, Flavor, ResourceDef, StorageKey};

/// A table: storage key (`ns/name`) → current object.
pub type Table = OrdMap<String, Arc<Obj>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change. `prev` is the version it replaced, so that filtered watches can
/// turn a change into ADDED/DELETED when an object enters or leaves the selection.
#[derive(Debug)]
pub struct Event {
    pub storage: StorageKey,
    pub rv: u64,
    pub kind: EventType,
    pub obj: Arc<Obj>,
    pub prev: Option<Arc<Obj>>,
    /// When it was committed: the instant a lagging watch delays it from.
    pub at: Instant,
}

/// Live events after a replayed backlog.
pub type Subscription = broadcast::Receiver<Arc<Event>>;

/// How long a paginated list's snapshot stays usable (etcd's default compaction interval).
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(300);
/// Snapshots kept at once; older ones expire early (their continue tokens answer 410).
const MAX_SNAPSHOTS: usize = 64;

pub struct Store {
    rv: u64,
    defs: Vec<Arc<ResourceDef>>,
    tables: HashMap<StorageKey, Table>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Every event with `rv > history_floor` is still in `history`.
    history_floor: u64,
    snapshots: VecDeque<(u64, StorageKey, Instant, Table)>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Store {
    pub fn new(history_cap: usize) -> Store {
        let (tx, _) = broadcast::channel(65_536);
        Store {
            rv: 1,
            defs: builtins(),
            tables: HashMap::new(),
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            history_floor: 1,
            snapshots: VecDeque::new(),
            tx,
        }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn history_floor(&self) -> u64 {
        self.history_floor
    }

    pub fn defs(&self) -> &[Arc<ResourceDef>] {
        &self.defs
    }

    pub fn find_def(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
            .cloned()
    }

    /// The definition whose format the table stores (core events for both event APIs).
    pub fn storage_def(&self, key: &StorageKey) -> Option<Arc<ResourceDef>> {
        self.defs
            .iter()
            .find(|d| d.flavor != Flavor::EventsV1 && &d.storage_key() == key)
            .cloned()
    }

    /// Replaces every definition of `(group, plural)` with `defs` (CRD (re)registration).
    pub fn set_custom_defs(&mut self, group: &str, plural: &str, defs: Vec<Arc<ResourceDef>>) {
        self.defs
            .retain(|d| !(d.flavor == Flavor::Custom && d.group == group && d.plural == plural));
        self.defs.extend(defs);
    }

    pub fn table(&self, key: &StorageKey) -> Table {
        self.tables.get(key).cloned().unwrap_or_default()
    }

    pub fn get(&self, key: &StorageKey, obj_key: &str) -> Option<Arc<Obj>> {
        self.tables.get(key).and_then(|t| t.get(obj_key)).cloned()
    }

    /// The next resourceVersion; the caller commits exactly one event with it.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores (or removes, for `Deleted`) an object and publishes the event.
    pub fn commit(&mut self, storage: StorageKey, kind: EventType, obj: Arc<Obj>, prev: Option<Arc<Obj>>) {
        let table = self.tables.entry(storage.clone()).or_default();
        match kind {
            EventType::Deleted => {
                table.remove(&obj.key);
            }
            _ => {
                table.insert(obj.key.clone(), obj.clone());
            }
        }
        let event = Arc::new(Event {
            storage,
            rv: obj.rv,
            kind,
            obj,
            prev,
            at: Instant::now(),
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.history_floor = old.rv;
            }
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// Subscribes to future events and returns the retained events after `rv`, atomically
    /// (the caller holds the lock). `None` when events after `rv` were already dropped.
    pub fn subscribe_from(&self, rv: u64) -> Option<(Vec<Arc<Event>>, Subscription)> {
        if rv < self.history_floor {
            return None;
        }
        let rx = self.tx.subscribe();
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some((self.history.range(start..).cloned().collect(), rx))
    }

    pub fn save_snapshot(&mut self, rv: u64, key: StorageKey, table: Table) {
        self.expire_snapshots();
        if self.snapshots.iter().any(|(r, k, _, _)| *r == rv && *k == key) {
            return;
        }
        self.snapshots.push_back((rv, key, Instant::now(), table));
        while self.snapshots.len() > MAX_SNAPSHOTS {
            self.snapshots.pop_front();
        }
    }

    pub fn snapshot(&mut self, rv: u64, key: &StorageKey) -> Option<Table> {
        self.expire_snapshots();
        self.snapshots
            .iter()
            .find(|(r, k, _, _)| *r == rv && k == key)
            .map(|(_, _, _, t)| t.clone())
    }

    fn expire_snapshots(&mut self) {
        while self
            .snapshots
            .front()
            .is_some_and(|(_, _, at, _)| at.elapsed() > SNAPSHOT_TTL)
        {
            self.snapshots.pop_front();
        }
    }

    /// Every namespaced object in `namespace`, across tables (namespace termination).
    pub fn objects_in_namespace(&self, namespace: &str) -> Vec<(StorageKey, Arc<Obj>)> {
        let prefix = format!("{namespace}/");
        let mut out = Vec::new();
        for (key, table) in &self.tables {
            for (k, obj) in table.range(prefix.clone()..) {
                if !k.starts_with(&prefix) {
                    break;
                }
                out.push((key.clone(), obj.clone()));
            }
        }
        out
    }
}
