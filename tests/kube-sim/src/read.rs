//! Reads: list (selectors, `limit`/`continue` pagination over consistent snapshots,
//! `resourceVersion` semantics) and watch (replay from a resourceVersion, filtered
//! ADDED/MODIFIED/DELETED, bookmarks, timeouts, `410 Expired`, the injected watch lag).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::cluster::ClusterState;
use crate::events;
use crate::object::{storage_key, Obj};
use crate::ops::present;
use crate::resources::{Flavor, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::store::{Event, EventType, Table};

/// What a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    pub fn parse(
        def: &ResourceDef,
        namespace: Option<String>,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> ApiResult<Self> {
        let labels = LabelSelector::parse(labels.unwrap_or(""))?;
        let supported = def.selectable_fields();
        let generic = !matches!(
            def.flavor,
            Flavor::Pod | Flavor::Namespace | Flavor::CoreEvent | Flavor::EventsV1
        );
        let fields = match fields {
            Some(f) if def.flavor == Flavor::EventsV1 => {
                // Parse against the v1 labels, then filter on the storage's labels.
                FieldSelector::parse(f, &supported, false)?;
                let core: Vec<String> = f
                    .split(',')
                    .map(|part| {
                        let (k, rest) = part.split_at(part.find(['=', '!']).unwrap_or(part.len()));
                        format!("{}{rest}", events::v1_field_to_core(k.trim()))
                    })
                    .collect();
                let core_fields = crate::resources::builtins()
                    .into_iter()
                    .find(|d| d.flavor == Flavor::CoreEvent)
                    .expect("core events are built in")
                    .selectable_fields()
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>();
                let refs: Vec<&str> = core_fields.iter().map(String::as_str).collect();
                FieldSelector::parse(&core.join(","), &refs, false)?
            }
            Some(f) => FieldSelector::parse(f, &supported, generic)?,
            None => FieldSelector::default(),
        };
        Ok(Selection {
            namespace,
            labels,
            fields,
        })
    }

    pub fn matches(&self, sdef: &ResourceDef, obj: &Obj) -> bool {
        if let Some(ns) = &self.namespace {
            if obj.namespace != *ns {
                return false;
            }
        }
        self.labels.matches(&obj.labels) && self.fields.matches(|f| obj.field(sdef, f))
    }

    fn unfiltered(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

pub struct ListResult {
    pub resource_version: u64,
    pub items: Vec<Arc<Obj>>,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

const CONTINUE_TOO_OLD: &str = "The provided continue parameter is too old to display a consistent list result. \
You can start a new list without the continue parameter, or use the continue token in this response to retrieve the \
remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were \
created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// A continue token as the etcd3 store writes it: unpadded URL-safe base64 of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`, the list's resourceVersion (`-1`:
/// "as of whenever it is used", the token an expired one is answered with) and the key to
/// start after, relative to the list's prefix (`name` in a namespace, `ns/name` across).
fn encode_continue(rv: i64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start}\u{0}")});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    let bad = |why: &str| ApiError::bad_request(format!("invalid continue token: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| bad(&e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| bad(&e.to_string()))?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let rv = v["rv"].as_i64().filter(|rv| *rv != 0).ok_or_else(|| {
        bad("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    })?;
    let start = v["start"]
        .as_str()
        .ok_or_else(|| bad("continue key is not valid: missing start"))?;
    Ok((rv, start.to_string()))
}

/// Waits (up to 3 s, like the watch cache) for the store to reach `rv`.
async fn wait_for_rv(state: &ClusterState, rv: u64) -> ApiResult<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let current = state.store().rv();
        if current >= rv {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let mut e = ApiError::new(
                504,
                "Timeout",
                format!("Timeout: Too large resource version: {rv}, current: {current}"),
            );
            e = e.with_details(
                json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]}),
            );
            e.retry_after = Some(1);
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn list(state: &ClusterState, def: &ResourceDef, sel: &Selection, p: &ListParams) -> ApiResult<ListResult> {
    let key = def.storage_key();
    let rv_param = p.resource_version.as_deref().unwrap_or("");
    if p.continue_token.is_some() && !rv_param.is_empty() && rv_param != "0" {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    if p.continue_token.is_none() && !rv_param.is_empty() && rv_param != "0" {
        let rv: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?;
        wait_for_rv(state, rv).await?;
    }
    let (table, list_rv, start) = {
        let mut store = state.store();
        if let Some(token) = &p.continue_token {
            let (rv, start) = decode_continue(token)?;
            if rv < 0 {
                // Continue "inconsistently": the rest of the list as of now.
                let current = store.rv();
                let table = store.table(&key);
                if p.limit.is_some() {
                    store.save_snapshot(current, key.clone(), table.clone());
                }
                (table, current, Some(start))
            } else {
                match store.snapshot(rv as u64, &key) {
                    Some(t) => (t, rv as u64, Some(start)),
                    None => {
                        // NewResourceExpired (no details), with a token that continues
                        // from the same key at the latest version.
                        let mut e = ApiError::expired(CONTINUE_TOO_OLD);
                        e.list_continue = Some(encode_continue(-1, start.trim_end_matches('\u{0}')));
                        return Err(e);
                    }
                }
            }
        } else {
            let current = store.rv();
            if p.resource_version_match.as_deref() == Some("Exact") && rv_param != current.to_string() {
                return Err(ApiError::expired(
                    "The resourceVersion for the provided list is too old.",
                ));
            }
            let table = store.table(&key);
            if p.limit.is_some() && rv_param != "0" {
                store.save_snapshot(current, key.clone(), table.clone());
            }
            (table, current, None)
        }
    };
    let sdef = state.store().storage_def(&key).expect("storage definition");
    // resourceVersion=0 is served from the cache, which ignores `limit`.
    let limit = if rv_param == "0" && p.continue_token.is_none() {
        None
    } else {
        p.limit.filter(|l| *l > 0)
    };
    Ok(collect(&table, &sdef, sel, start, limit, list_rv))
}

fn collect(
    table: &Table,
    sdef: &ResourceDef,
    sel: &Selection,
    start: Option<String>,
    limit: Option<usize>,
    list_rv: u64,
) -> ListResult {
    let prefix = sel
        .namespace
        .as_ref()
        .filter(|_| sdef.namespaced)
        .map(|ns| format!("{ns}/"));
    // A continue token's start key is relative to the prefix.
    let from = match (&start, &prefix) {
        (Some(s), Some(p)) => format!("{p}{s}"),
        (Some(s), None) => s.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => String::new(),
    };
    let mut items = Vec::new();
    let mut iter = table
        .range(from..)
        .take_while(|(k, _)| prefix.as_ref().is_none_or(|p| k.starts_with(p)));
    let mut last_key = None;
    for (k, obj) in iter.by_ref() {
        if prefix.as_ref().is_some_and(|p| !k.starts_with(p)) {
            break;
        }
        if !sel.matches(sdef, obj) {
            continue;
        }
        items.push(obj.clone());
        if limit.is_some_and(|l| items.len() >= l) {
            last_key = Some(k.clone());
            break;
        }
    }
    let mut continue_token = None;
    let mut remaining = None;
    if let Some(last) = last_key {
        // As the etcd3 store does: more *keys* after the page means a continue token, even
        // when none of them matches the selectors (the next page is then empty); the count
        // of what remains only for an unfiltered list.
        let rest = iter.count();
        if rest > 0 {
            let relative = prefix
                .as_ref()
                .and_then(|p| last.strip_prefix(p.as_str()))
                .unwrap_or(&last);
            continue_token = Some(encode_continue(list_rv as i64, relative));
            if sel.unfiltered() {
                remaining = Some(rest as u64);
            }
        }
    }
    ListResult {
        resource_version: list_rv,
        items,
        continue_token,
        remaining,
    }
}

/// How objects are encoded: whole, or as `meta.k8s.io/v1` `PartialObjectMetadata` (what
/// clients ask for with `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Form {
    #[default]
    Full,
    Metadata,
}

#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    pub form: Form,
    pub resource_version: Option<String>,
    pub allow_bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: bool,
}

/// The bytes of one object as `def` presents it.
pub fn object_bytes(def: &ResourceDef, sdef: &ResourceDef, obj: &Obj, form: Form) -> Vec<Bytes> {
    if form == Form::Metadata {
        let v: serde_json::Value = serde_json::from_slice(&obj.json).unwrap_or_default();
        let doc = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v["metadata"]});
        return vec![Bytes::from(doc.to_string())];
    }
    if def.flavor == Flavor::EventsV1 || def.version != sdef.version {
        return vec![Bytes::from(present(def, sdef, obj).to_string())];
    }
    vec![def.type_prefix.clone(), obj.json.slice(1..)]
}

/// The bytes of one list item: built-in lists do not type their items (custom resource and
/// `PartialObjectMetadata` lists do).
pub fn list_item_bytes(def: &ResourceDef, sdef: &ResourceDef, obj: &Obj, form: Form) -> Vec<Bytes> {
    if def.list_items_typed() || form == Form::Metadata {
        return object_bytes(def, sdef, obj, form);
    }
    if def.flavor == Flavor::EventsV1 {
        let mut v = present(def, sdef, obj);
        if let Some(m) = v.as_object_mut() {
            m.shift_remove("kind");
            m.shift_remove("apiVersion");
        }
        return vec![Bytes::from(v.to_string())];
    }
    vec![obj.json.clone()]
}

fn frame(kind: &str, def: &ResourceDef, sdef: &ResourceDef, obj: &Obj, form: Form) -> Vec<Bytes> {
    let mut out = vec![Bytes::from(format!(r#"{{"type":"{kind}","object":"#))];
    out.extend(object_bytes(def, sdef, obj, form));
    out.push(Bytes::from_static(b"}\n"));
    out
}

fn status_frame(e: &ApiError) -> Vec<Bytes> {
    vec![Bytes::from(format!(
        "{}\n",
        json!({"type": "ERROR", "object": e.to_status()})
    ))]
}

fn bookmark_frame(def: &ResourceDef, rv: u64, initial_end: bool) -> Vec<Bytes> {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    // An empty object of the type, as Go writes one.
    let mut object = json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta});
    crate::zero::normalize(def.flavor, &mut object);
    vec![Bytes::from(format!(
        "{}\n",
        json!({"type": "BOOKMARK", "object": object})
    ))]
}

/// Maps a committed change to what this watcher sees, as cacheWatcher does: an object that
/// enters the selection is ADDED; one that leaves it is DELETED, carrying the previous
/// object at the change's resourceVersion. (A deletion's own object already is the last
/// stored one at the deletion's version.)
fn filtered(ev: &Event, sdef: &ResourceDef, sel: &Selection) -> Option<(&'static str, Arc<Obj>)> {
    let now = ev.kind != EventType::Deleted && sel.matches(sdef, &ev.obj);
    let before = match &ev.prev {
        Some(p) => sel.matches(sdef, p),
        None => ev.kind == EventType::Deleted && sel.matches(sdef, &ev.obj),
    };
    match (ev.kind, before, now) {
        (_, false, true) => Some(("ADDED", ev.obj.clone())),
        (_, true, true) => Some(("MODIFIED", ev.obj.clone())),
        (EventType::Deleted, true, false) => Some(("DELETED", ev.obj.clone())),
        (_, true, false) => {
            let prev = ev.prev.as_ref().expect("a previous object matched");
            Some((
                "DELETED",
                at_version(sdef, prev, ev.rv).unwrap_or_else(|| ev.obj.clone()),
            ))
        }
        (_, false, false) => None,
    }
}

/// `obj` with its resourceVersion replaced.
fn at_version(sdef: &ResourceDef, obj: &Obj, rv: u64) -> Option<Arc<Obj>> {
    let mut v: serde_json::Value = serde_json::from_slice(&obj.json).ok()?;
    v.get_mut("metadata")?
        .as_object_mut()?
        .insert("resourceVersion".into(), json!(rv.to_string()));
    Obj::from_value(sdef, v).ok().map(Arc::new)
}

/// What a watch task hands its stream.
enum Feed {
    /// One event's frames and the instant they are due (emitted + the watch lag).
    Frames(Instant, Vec<Bytes>),
    /// The watch ended (timeout, dropped watches, a slow watcher closed) at this instant:
    /// frames due later are lost with it.
    Cut(Instant),
}

/// The frames of one watch, each delivered at its due instant and in order
/// ([`crate::Faults::set_watch_lag`]); without a lag, as soon as they are produced. Waiting
/// here holds up nothing but this stream.
pub struct WatchFrames {
    rx: mpsc::Receiver<Feed>,
    pending: VecDeque<(Instant, Vec<Bytes>)>,
    cut: Option<Instant>,
    closed: bool,
}

impl WatchFrames {
    /// The next event's frames, once due; `None` when the watch is over.
    pub async fn next(&mut self) -> Option<Vec<Bytes>> {
        loop {
            if let Some(at) = self.cut {
                // What was due by the end still goes out, in order; the rest is lost.
                return match self.pending.pop_front() {
                    Some((due, frames)) if due <= at => Some(frames),
                    _ => None,
                };
            }
            let front_due = self.pending.front().map(|(due, _)| *due);
            if front_due.is_some_and(|due| due <= Instant::now()) {
                return self.pending.pop_front().map(|(_, frames)| frames);
            }
            if self.closed {
                // The task handed over everything (an ERROR last): each at its instant.
                let (due, frames) = self.pending.pop_front()?;
                tokio::time::sleep_until(due).await;
                return Some(frames);
            }
            // Keep reading while the front waits, so that the end is seen when it comes.
            let next = match front_due {
                Some(due) => tokio::select! {
                    _ = tokio::time::sleep_until(due) => continue,
                    next = self.rx.recv() => next,
                },
                None => self.rx.recv().await,
            };
            match next {
                Some(Feed::Frames(due, frames)) => self.pending.push_back((due, frames)),
                Some(Feed::Cut(at)) => self.cut = Some(at),
                None => self.closed = true,
            }
        }
    }
}

/// Starts a watch; its frames come out of the returned [`WatchFrames`].
pub fn watch(state: Arc<ClusterState>, def: Arc<ResourceDef>, sel: Selection, p: WatchParams) -> WatchFrames {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        match run_watch(&state, &def, &sel, &p, &tx).await {
            Ok(()) => {
                let _ = tx.send(Feed::Cut(Instant::now())).await;
            }
            Err(frames) => {
                let due = Instant::now() + state.faults.watch_lag();
                let _ = tx.send(Feed::Frames(due, frames)).await;
            }
        }
    });
    WatchFrames {
        rx,
        pending: VecDeque::new(),
        cut: None,
        closed: false,
    }
}

async fn run_watch(
    state: &ClusterState,
    def: &ResourceDef,
    sel: &Selection,
    p: &WatchParams,
    tx: &mpsc::Sender<Feed>,
) -> Result<(), Vec<Bytes>> {
    let key = def.storage_key();
    let rv_param = p.resource_version.as_deref().unwrap_or("");
    let requested: Option<u64> = match rv_param {
        "" | "0" => None,
        s => Some(
            s.parse()
                .map_err(|_| status_frame(&ApiError::bad_request(format!("invalid resource version: {s}"))))?,
        ),
    };
    let mut drop_rx = state.faults.drop_signal();
    let force_expired = state.faults.take_expire_next_watch();
    let (initial, backlog, mut rx, start_rv, sdef) = {
        let store = state.store();
        let sdef = store.storage_def(&key).expect("storage definition");
        let current = store.rv();
        let from = requested.unwrap_or(current);
        if force_expired || requested.is_some_and(|r| r < store.history_floor()) {
            let e = ApiError::expired(format!("too old resource version: {from} ({})", store.history_floor()));
            return Err(status_frame(&e));
        }
        let initial: Vec<Arc<Obj>> = if requested.is_none() || p.send_initial_events {
            let prefix = sel
                .namespace
                .clone()
                .filter(|_| def.namespaced)
                .map(|ns| storage_key(&ns, ""));
            store
                .table(&key)
                .values()
                .filter(|o| prefix.as_ref().is_none_or(|p| o.key.starts_with(p.as_str())))
                .filter(|o| sel.matches(&sdef, o))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let (backlog, rx) = store
            .subscribe_from(if requested.is_none() || p.send_initial_events {
                current
            } else {
                from
            })
            .expect("history covers the current version");
        (
            initial,
            backlog,
            rx,
            if p.send_initial_events { current } else { from },
            sdef,
        )
    };
    // Each frame is due at its emission instant (a write's commit for the events it
    // caused, now for what the watch makes up itself) plus the lag in force.
    let send = |frames: Vec<Bytes>, emitted: Instant| async move {
        let due = emitted + state.faults.watch_lag();
        tx.send(Feed::Frames(due, frames)).await.is_ok()
    };
    let started = Instant::now();
    for obj in &initial {
        if !send(frame("ADDED", def, &sdef, obj, p.form), started).await {
            return Ok(());
        }
    }
    let mut last_rv = start_rv;
    if p.send_initial_events && p.allow_bookmarks && !send(bookmark_frame(def, last_rv, true), started).await {
        return Ok(());
    }
    for ev in backlog.iter().filter(|e| e.storage == key) {
        last_rv = ev.rv;
        if let Some((kind, obj)) = filtered(ev, &sdef, sel) {
            if !send(frame(kind, def, &sdef, &obj, p.form), Instant::from_std(ev.at)).await {
                return Ok(());
            }
        }
    }
    let timeout = p
        .timeout
        .unwrap_or_else(|| Duration::from_secs(1800 + rand::random::<u64>() % 1800));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut bookmarks = tokio::time::interval(state.bookmark_interval);
    bookmarks.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(()),
            _ = drop_rx.changed() => return Ok(()),
            _ = bookmarks.tick(), if p.allow_bookmarks => {
                if !send(bookmark_frame(def, last_rv, false), Instant::now()).await {
                    return Ok(());
                }
            }
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= last_rv {
                        continue;
                    }
                    last_rv = ev.rv;
                    if ev.storage != key {
                        continue;
                    }
                    if let Some((kind, obj)) = filtered(&ev, &sdef, sel) {
                        if !send(frame(kind, def, &sdef, &obj, p.form), Instant::from_std(ev.at)).await {
                            return Ok(());
                        }
                    }
                }
                // A watcher that falls this far behind is closed, as the watch cache closes
                // slow watchers; the client re-watches from its last resourceVersion.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tx.closed() => return Ok(()),
        }
    }
}
