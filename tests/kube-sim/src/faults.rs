//! Fault injection, driven by tests: failing requests, latency, a lagging watch cache,
//! dropped watches, forced `410 Gone`, and taking the whole cluster offline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::status::ApiError;

/// One authenticated request as the cluster received it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub user: String,
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub at: std::time::Instant,
}

/// One write request as the cluster received it (served or not).
#[derive(Debug, Clone)]
pub struct WriteRecord {
    /// The `fieldManager` query parameter ("" when none).
    pub manager: String,
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub at: std::time::Instant,
}

/// A failure answered instead of the next request(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `500 InternalError`.
    InternalError,
    /// `429 TooManyRequests` with `Retry-After`.
    TooManyRequests { retry_after_seconds: u64 },
    /// `503 ServiceUnavailable` with `Retry-After`.
    ServiceUnavailable { retry_after_seconds: u64 },
}

impl Failure {
    pub fn to_error(self) -> ApiError {
        match self {
            Failure::InternalError => ApiError::internal("Internal error occurred: injected fault"),
            Failure::TooManyRequests { retry_after_seconds } => {
                let mut e = ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.");
                e.retry_after = Some(retry_after_seconds);
                e
            }
            Failure::ServiceUnavailable { retry_after_seconds } => {
                let mut e = ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                );
                e.retry_after = Some(retry_after_seconds);
                e
            }
        }
    }
}

/// The fault switches of one simulated cluster. All methods take effect at once.
#[derive(Debug)]
pub struct Faults {
    failures: Mutex<VecDeque<Failure>>,
    latency_ms: AtomicU64,
    watch_lag_us: AtomicU64,
    expire_next_watches: AtomicU32,
    drop_watches: watch::Sender<u64>,
    online: watch::Sender<bool>,
    requests: AtomicU64,
    writes: AtomicU64,
    write_log: Mutex<Vec<WriteRecord>>,
    request_log: Mutex<Vec<RequestRecord>>,
    recording: AtomicBool,
    offline_flag: AtomicBool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            failures: Mutex::new(VecDeque::new()),
            latency_ms: AtomicU64::new(0),
            watch_lag_us: AtomicU64::new(0),
            expire_next_watches: AtomicU32::new(0),
            drop_watches: watch::channel(0).0,
            online: watch::channel(true).0,
            requests: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            write_log: Mutex::new(Vec::new()),
            request_log: Mutex::new(Vec::new()),
            recording: AtomicBool::new(false),
            offline_flag: AtomicBool::new(false),
        }
    }
}

impl Faults {
    /// Answers the next `n` requests with `failure`.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        let mut q = self.failures.lock().expect("faults lock");
        q.extend(std::iter::repeat_n(failure, n));
    }

    /// Delays every request by `latency` before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Makes every watch stream lag `lag` behind the store, as a lagging watch cache does:
    /// each event (ADDED, MODIFIED, DELETED, BOOKMARK and ERROR) is delivered `lag` after it
    /// was emitted — a write's events `lag` after the write, the initial ADDED events, the
    /// bookmarks and an `ERROR` `lag` after the watch produced them — in order. Writes and
    /// GET / LIST answers are not delayed (a GET right after a PATCH sees it), nor is the
    /// kubelet-lite, which reacts to the store itself. Each stream waits on its own, so no
    /// other request is held up. The lag applies to events emitted after the call: setting
    /// it back to zero ends it for those (events already waiting keep their instant, and
    /// later ones are never delivered before them). A watch that ends (`timeoutSeconds`,
    /// [`Faults::drop_watches`]) ends at once: events not yet due are lost with it, as
    /// events still in a lagging cache are, and the client re-watches from what it saw.
    pub fn set_watch_lag(&self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.watch_lag_us.store(us, Ordering::SeqCst);
    }

    /// The current watch lag (zero unless [`Faults::set_watch_lag`] set one).
    pub fn watch_lag(&self) -> Duration {
        Duration::from_micros(self.watch_lag_us.load(Ordering::SeqCst))
    }

    /// Ends every open watch stream (clients see the stream close and re-watch).
    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|n| *n += 1);
    }

    /// The next watch request gets `410 Expired` whatever its resourceVersion.
    pub fn expire_next_watch(&self) {
        self.expire_next_watches.fetch_add(1, Ordering::SeqCst);
    }

    /// Offline: the listener is closed (connections are refused) and every open connection
    /// is cut. Online again: the same address is served again.
    pub fn set_offline(&self, offline: bool) {
        self.offline_flag.store(offline, Ordering::SeqCst);
        self.online.send_replace(!offline);
    }

    pub fn is_offline(&self) -> bool {
        self.offline_flag.load(Ordering::SeqCst)
    }

    /// Every HTTP request the cluster has received, for tests that bound API traffic: served
    /// or failed, injected failures, `401`s, health probes, requests cut because the cluster
    /// is offline, and each watch request (counted once, when it is made — the events it
    /// streams are not requests). Requests a closed listener never accepted are not counted.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The requests counted by [`Faults::request_count`] that would change something (any
    /// method but GET, HEAD and OPTIONS), whether they were served or not: a test proves a
    /// client wrote nothing — not even tried — while the cluster was unreachable.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    pub(crate) fn online_signal(&self) -> watch::Receiver<bool> {
        self.online.subscribe()
    }

    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        let mut rx = self.drop_watches.subscribe();
        rx.mark_unchanged();
        rx
    }

    pub(crate) fn take_expire_next_watch(&self) -> bool {
        self.expire_next_watches
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Called first thing for every request the server receives.
    pub(crate) fn count_request(&self, is_write: bool, record: Option<WriteRecord>) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if is_write {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(w) = record {
            self.write_log.lock().expect("faults lock").push(w);
        }
    }

    /// Starts (or stops) keeping [`Faults::write_log`] and [`Faults::request_log`]: off by
    /// default, so a long run's memory does not grow with its requests.
    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::SeqCst);
    }

    pub(crate) fn recording(&self) -> bool {
        self.recording.load(Ordering::SeqCst)
    }

    pub(crate) fn record_request(&self, r: RequestRecord) {
        self.request_log.lock().expect("faults lock").push(r);
    }

    /// Every write request received while recording, in order: who wrote (its
    /// `fieldManager`), what and when — so a test can prove that only one replica wrote at
    /// a time.
    pub fn write_log(&self) -> Vec<WriteRecord> {
        self.write_log.lock().expect("faults lock").clone()
    }

    /// Every authenticated request received while recording, with the user its token
    /// names: what a client really asks of the API (its RBAC needs).
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.request_log.lock().expect("faults lock").clone()
    }

    /// Called once per authenticated API request: the latency to apply and the failure to
    /// answer with, if any.
    pub(crate) fn on_request(&self) -> (Duration, Option<Failure>) {
        let latency = Duration::from_millis(self.latency_ms.load(Ordering::SeqCst));
        let failure = self.failures.lock().expect("faults lock").pop_front();
        (latency, failure)
    }
}
