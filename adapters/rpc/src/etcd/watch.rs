//! The settle watch: while a target drains, an etcd watch on its key (or its service's
//! prefix) from the revision right after the drain's delete tells the adapter whether the
//! entry came back — even if it came back *and went again* between two polls.
//!
//! A watch started from revision `D + 1` sees every later write, including history written
//! before the watch stream was even open, so there is no gap between the delete and the
//! watch. The watch runs as a task owned by the adapter's per-target memory and is aborted
//! with it (on restore, or when the adapter is dropped).
//!
//! [`WatchState`] is what `observe` reads: whether the pod's entry is present (by the
//! watch's account), since when it has been absent, and the last re-add (revision, lease,
//! key) for the evidence. `observe` also reconciles it with its own linearizable read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use etcd_client::EventType;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::etcd::client::{EtcdConn, Kv};

/// How a value written under the watched key(s) relates to the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The pod's entry, enabled: consumers would send it work.
    Enabled,
    /// The pod's entry in its disabled form.
    Disabled,
    /// Another instance's entry (prefix watches).
    Other,
}

/// A write that put the pod's entry (back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReAdd {
    pub key: String,
    pub revision: i64,
    pub lease: i64,
}

/// What the settle watch has seen.
#[derive(Debug, Clone)]
pub(crate) struct WatchState {
    /// The watch stream is open (etcd confirmed `created`).
    pub established: bool,
    /// Keys holding the pod's enabled entry right now, by the watch's account.
    pub present: BTreeMap<String, ReAdd>,
    /// When the entry was last seen to go away (start of the settle clock).
    pub absent_since: Instant,
    /// The revision at which it went away.
    pub absent_revision: i64,
    /// The last write that re-added the entry during this drain.
    pub last_readd: Option<ReAdd>,
    /// Set when the watch broke (compaction, stream error); the adapter then restarts it.
    pub broken: Option<String>,
}

impl WatchState {
    /// Records that the entry is present (seen by a read), so a later delete event restarts
    /// the clock.
    pub fn saw_present(&mut self, kv: &Kv) {
        let readd = ReAdd {
            key: kv.key.clone(),
            revision: kv.mod_revision,
            lease: kv.lease,
        };
        self.present.insert(kv.key.clone(), readd.clone());
        self.last_readd = Some(readd);
    }

    /// Records that a read at `revision` found the entry absent; if the watch still
    /// believed it present, the clock restarts now (conservative).
    pub fn saw_absent(&mut self, revision: i64) {
        if !self.present.is_empty() {
            self.present.clear();
            self.absent_since = Instant::now();
            self.absent_revision = revision;
        }
    }

    fn apply(&mut self, kind: EventType, kv: &Kv, class: Class) {
        match (kind, class) {
            (EventType::Put, Class::Enabled) => self.saw_present(kv),
            (EventType::Put, Class::Disabled) | (EventType::Delete, _) => {
                if self.present.remove(&kv.key).is_some() && self.present.is_empty() {
                    self.absent_since = Instant::now();
                    self.absent_revision = kv.mod_revision;
                }
            }
            (EventType::Put, Class::Other) => {}
        }
    }
}

/// A running settle watch; aborted on drop.
#[derive(Debug)]
pub(crate) struct SettleWatch {
    pub state: Arc<Mutex<WatchState>>,
    task: JoinHandle<()>,
}

impl Drop for SettleWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SettleWatch {
    /// Starts watching `key` (a prefix when `prefix`) from `from_revision`, with the entry
    /// absent since now (revision `from_revision - 1`).
    pub fn start(
        conn: Arc<EtcdConn>,
        key: String,
        prefix: bool,
        from_revision: i64,
        classify: impl Fn(&[u8]) -> Class + Send + 'static,
    ) -> SettleWatch {
        let state = Arc::new(Mutex::new(WatchState {
            established: false,
            present: BTreeMap::new(),
            absent_since: Instant::now(),
            absent_revision: from_revision - 1,
            last_readd: None,
            broken: None,
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let reason = run(&conn, &key, prefix, from_revision, &shared, classify).await;
            debug!(%key, %reason, "settle watch ended");
            lock(&shared).broken = Some(reason);
        });
        SettleWatch { state, task }
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> WatchState {
        lock(&self.state).clone()
    }
}

pub(crate) fn lock(state: &Mutex<WatchState>) -> std::sync::MutexGuard<'_, WatchState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the watch until it breaks; returns why.
async fn run(
    conn: &EtcdConn,
    key: &str,
    prefix: bool,
    from: i64,
    state: &Mutex<WatchState>,
    classify: impl Fn(&[u8]) -> Class,
) -> String {
    let mut stream = match conn.watch(key, prefix, from).await {
        Ok(s) => s,
        Err(e) => return e.message,
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return "watch stream closed by etcd".into(),
            Err(e) => return conn.error(&format!("watch {key}"), e).message,
        };
        if resp.canceled() {
            let why = if resp.compact_revision() > 0 {
                format!("history compacted up to revision {}", resp.compact_revision())
            } else {
                format!("watch canceled: {}", resp.cancel_reason())
            };
            warn!(%key, %why, "settle watch canceled; the adapter restarts it and the settle clock");
            return why;
        }
        let mut s = lock(state);
        if resp.created() {
            s.established = true;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let kv = Kv::from(kv);
            let class = match event.event_type() {
                EventType::Put => classify(&kv.value),
                EventType::Delete => Class::Other,
            };
            s.apply(event.event_type(), &kv, class);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn kv(key: &str, rev: i64, lease: i64) -> Kv {
        Kv {
            key: key.into(),
            value: Vec::new(),
            lease,
            create_revision: rev,
            mod_revision: rev,
        }
    }

    #[test]
    fn a_readd_and_a_second_delete_restart_the_clock() {
        let t0 = Instant::now();
        let mut s = WatchState {
            established: true,
            present: BTreeMap::new(),
            absent_since: t0,
            absent_revision: 10,
            last_readd: None,
            broken: None,
        };
        std::thread::sleep(Duration::from_millis(5));
        s.apply(EventType::Put, &kv("/a", 11, 7), Class::Other);
        assert_eq!(s.absent_since, t0, "another instance's put changes nothing");
        s.apply(EventType::Put, &kv("/k", 12, 7), Class::Enabled);
        assert_eq!(s.present.len(), 1);
        assert_eq!(s.last_readd.as_ref().map(|r| (r.revision, r.lease)), Some((12, 7)));
        s.apply(EventType::Delete, &kv("/k", 13, 0), Class::Other);
        assert!(s.present.is_empty() && s.absent_since > t0 && s.absent_revision == 13);
        let t1 = s.absent_since;
        s.apply(EventType::Delete, &kv("/unrelated", 14, 0), Class::Other);
        assert_eq!((s.absent_since, s.absent_revision), (t1, 13));
        s.apply(EventType::Put, &kv("/k", 15, 0), Class::Enabled);
        s.apply(EventType::Put, &kv("/k", 16, 0), Class::Disabled);
        assert!(s.present.is_empty() && s.absent_revision == 16);
        s.saw_present(&kv("/k", 17, 0));
        s.saw_absent(18);
        assert!(s.present.is_empty() && s.absent_revision == 18);
    }
}
