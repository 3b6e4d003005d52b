//! HTTP(S) front: authentication, fault injection, URL routing and the encoding of
//! responses (single objects, lists, watch streams, `Status` errors).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};

use crate::cluster::ClusterState;
use crate::ops::{self, DeleteOpts, Sub};
use crate::patch::PatchType;
use crate::read::{self, Form, ListParams, Selection, WatchParams};
use crate::resources::{self, Flavor, ResourceDef};
use crate::status::{success_status, ApiError, ApiResult};

pub type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn json_response(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("valid response")
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.to_status().to_string(),
    );
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, s.to_string().parse().expect("number"));
    }
    r
}

fn chunks_response(chunks: Vec<Bytes>) -> Response<Body> {
    let stream = futures::stream::iter(chunks.into_iter().map(|b| Ok::<_, Infallible>(Frame::data(b))));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("valid response")
}

/// Answered (as a failed service call, which makes hyper drop the connection without a
/// response) to requests that arrive on a connection while the cluster is offline.
#[derive(Debug)]
pub struct Offline;

impl std::fmt::Display for Offline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the simulated cluster is offline")
    }
}

impl std::error::Error for Offline {}

/// Entry point for every request.
pub async fn handle(state: Arc<ClusterState>, req: Request<Incoming>) -> Result<Response<Body>, Offline> {
    let mut resp = respond(state, req).await?;
    // genericapifilters.WithCacheControl wraps the whole handler chain (authentication
    // included): every answer is marked uncacheable unless it says otherwise.
    if !resp.headers().contains_key(header::CACHE_CONTROL) {
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache, private"),
        );
    }
    Ok(resp)
}

/// The authenticated user of a request (for admission reviews).
#[derive(Clone)]
struct User(String);

async fn respond(state: Arc<ClusterState>, mut req: Request<Incoming>) -> Result<Response<Body>, Offline> {
    let method = req.method();
    let write = (state.faults.recording()
        && !matches!(
            *method,
            hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
        ))
    .then(|| crate::faults::WriteRecord {
        manager: Query::parse(req.uri().query())
            .get("fieldManager")
            .unwrap_or_default()
            .to_string(),
        method: method.to_string(),
        uri: req.uri().to_string(),
        at: std::time::Instant::now(),
    });
    let is_write = !matches!(
        *method,
        hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
    );
    state.faults.count_request(is_write, write);
    tracing::debug!(%method, uri = %req.uri(), "request");
    if state.faults.is_offline() {
        return Err(Offline);
    }
    let path = req.uri().path().to_string();
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/livez") {
        return Ok(Response::new(full("ok")));
    }
    let Some(user) = state
        .user_of(req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
        .map(String::from)
    else {
        return Ok(error_response(&ApiError::unauthorized()));
    };
    req.extensions_mut().insert(User(user.clone()));
    if state.faults.recording() {
        state.faults.record_request(crate::faults::RequestRecord {
            user,
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            at: std::time::Instant::now(),
        });
    }
    let (latency, failure) = state.faults.on_request();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(f) = failure {
        return Ok(error_response(&f.to_error()));
    }
    Ok(match route(state, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    })
}

/// Decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 3 <= b.len())
            .then(|| {
                std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match (b[i], hex) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request for a resource, after the URL is taken apart.
struct Target {
    def: Arc<ResourceDef>,
    namespace: Option<String>,
    name: Option<String>,
    sub: Sub,
}

async fn route(state: Arc<ClusterState>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let segs: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get_only = |doc: Option<Value>| -> ApiResult<Response<Body>> {
        if req.method() != Method::GET {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )
            .with_empty_details());
        }
        doc.map(|d| json_response(StatusCode::OK, d.to_string()))
            .ok_or_else(ApiError::path_not_found)
    };
    let defs = state.store().defs().to_vec();
    match segs.as_slice() {
        [] => get_only(Some(
            json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]}),
        )),
        ["version"] => get_only(Some(resources::version_doc())),
        ["api"] => get_only(Some(resources::core_versions(&state.server_address))),
        ["api", "v1"] => get_only(resources::resource_list(&defs, "", "v1")),
        ["apis"] => get_only(Some(resources::group_list(&defs))),
        ["apis", g] => get_only(resources::api_group(&defs, g)),
        ["apis", g, v] => get_only(resources::resource_list(&defs, g, v)),
        ["api", "v1", rest @ ..] => {
            let target = resolve(&state, "", "v1", rest)?;
            serve(state, target, req).await
        }
        ["apis", "authentication.k8s.io", "v1", rest @ ..] if rest.last() == Some(&"tokenreviews") => {
            if req.method() != Method::POST {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )
                .with_empty_details());
            }
            let namespace = match rest {
                ["tokenreviews"] => None,
                ["namespaces", ns, "tokenreviews"] => Some(ns.to_string()),
                _ => return Err(ApiError::path_not_found()),
            };
            check_json_content_type(&req)?;
            let body = read_body(req).await?;
            let review = state.service_account_tokens.review(namespace.as_deref(), &body)?;
            Ok(json_response(StatusCode::CREATED, review.to_string()))
        }
        ["apis", g, v, rest @ ..] => {
            let target = resolve(&state, g, v, rest)?;
            serve(state, target, req).await
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn resolve(state: &ClusterState, group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let store = state.store();
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if store.find_def(group, version, plural).is_some_and(|d| d.namespaced) =>
        {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(*sub)),
        _ => return Err(ApiError::path_not_found()),
    };
    let def = store
        .find_def(group, version, plural)
        .ok_or_else(ApiError::path_not_found)?;
    if def.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::path_not_found());
    }
    let sub = match sub {
        None => Sub::Main,
        Some("status") if def.status_subresource => Sub::Status,
        Some("eviction") if def.flavor == Flavor::Pod => Sub::Eviction,
        Some(_) => return Err(ApiError::path_not_found()),
    };
    Ok(Target {
        def,
        namespace,
        name,
        sub,
    })
}

async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

/// `NegotiateInputSerializer`: no Content-Type means the first serializer's (JSON); anything
/// but JSON is refused, naming what is accepted (kube-sim decodes no YAML or protobuf).
fn check_json_content_type(req: &Request<Incoming>) -> ApiResult<()> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
        "application/json" | "" => Ok(()),
        _ => Err(ApiError::unsupported_media_type(&["application/json"])),
    }
}

/// PatchResource's first check, before the object is looked up: the Content-Type (up to a
/// `;`) must be one of the resource's patch types — custom resources have no strategic merge
/// patch. Server-side apply is recognised and refused as not implemented.
fn check_patch_content_type(def: &ResourceDef, req: &Request<Incoming>) -> ApiResult<PatchType> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = match ct.find(';') {
        Some(i) if i > 0 => &ct[..i],
        _ => ct,
    };
    let accepted = crate::patch::accepted_types(def.flavor != Flavor::Custom);
    if !accepted.contains(&ct) {
        return Err(ApiError::unsupported_media_type(accepted));
    }
    match PatchType::from_content_type(ct) {
        Some(PatchType::Apply) => Err(crate::patch::apply_not_implemented()),
        Some(kind) => Ok(kind),
        None => Err(ApiError::unsupported_media_type(accepted)),
    }
}

fn decode_object(body: &[u8]) -> ApiResult<Value> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body of the request is not a JSON object"));
    }
    Ok(v)
}

/// Content negotiation on `Accept`: whole objects, `PartialObjectMetadata`, or 406 for
/// what the simulator does not encode (Table, protobuf-only, YAML-only).
fn negotiate(req: &Request<Incoming>) -> ApiResult<Form> {
    let Some(accept) = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Form::Full);
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let as_ = parts.find_map(|p| p.strip_prefix("as="));
        if !matches!(media, "application/json" | "*/*" | "application/*") {
            continue;
        }
        match as_ {
            None => return Ok(Form::Full),
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") => return Ok(Form::Metadata),
            Some(_) => continue,
        }
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        "only the following media types are accepted: application/json, \
         application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1 (kube-sim encodes no Table, YAML or protobuf)",
    ))
}

fn object_response(
    state: &ClusterState,
    def: &ResourceDef,
    obj: &crate::object::Obj,
    code: StatusCode,
) -> Response<Body> {
    object_response_as(state, def, obj, code, Form::Full)
}

fn object_response_as(
    state: &ClusterState,
    def: &ResourceDef,
    obj: &crate::object::Obj,
    code: StatusCode,
    form: Form,
) -> Response<Body> {
    let sdef = state
        .store()
        .storage_def(&def.storage_key())
        .expect("storage definition");
    let mut r = chunks_response(read::object_bytes(def, &sdef, obj, form));
    *r.status_mut() = code;
    r
}

async fn serve(state: Arc<ClusterState>, t: Target, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let method = req.method().clone();
    if method == Method::DELETE && t.name.is_none() && t.def.flavor == Flavor::Namespace {
        // The namespace REST has no DeleteCollection: no route, go-restful's 405.
        return Err(
            ApiError::method_not_allowed("the server does not allow this method on the requested resource")
                .with_empty_details(),
        );
    }
    if method == Method::POST && t.name.is_none() && t.def.flavor == Flavor::Custom {
        ops::check_crd_not_terminating(&state.store(), &t.def)?;
    }
    if t.sub == Sub::Eviction && method != Method::POST {
        return Err(
            ApiError::method_not_allowed("the server does not allow this method on the requested resource")
                .with_empty_details(),
        );
    }
    let q = Query::parse(req.uri().query());
    if q.get("dryRun").is_some() {
        return Err(ApiError::method_not_allowed(
            "dry-run requests are not implemented by kube-sim",
        ));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let patch_type = match (&method, &t.name) {
        (&Method::PATCH, Some(_)) => Some(check_patch_content_type(&t.def, &req)?),
        _ => None,
    };
    let form = negotiate(&req)?;
    match (method, &t.name) {
        (Method::GET, Some(name)) => {
            let obj = ops::get(&state.store(), &t.def, &ns, name)?;
            Ok(object_response_as(&state, &t.def, &obj, StatusCode::OK, form))
        }
        (Method::GET, None) => {
            let sel = Selection::parse(
                &t.def,
                t.namespace.clone(),
                q.get("labelSelector"),
                q.get("fieldSelector"),
            )?;
            if q.flag("watch") {
                let p = WatchParams {
                    form,
                    resource_version: q.get("resourceVersion").map(String::from),
                    allow_bookmarks: q.flag("allowWatchBookmarks"),
                    timeout: q
                        .get("timeoutSeconds")
                        .and_then(|s| s.parse().ok())
                        .filter(|s| *s > 0)
                        .map(std::time::Duration::from_secs),
                    send_initial_events: q.flag("sendInitialEvents"),
                };
                validate_list_options(&q, true)?;
                let frames = read::watch(state.clone(), t.def.clone(), sel, p);
                let stream = futures::stream::unfold(frames, |mut f| async move { f.next().await.map(|b| (b, f)) })
                    .flat_map(|frames| {
                        futures::stream::iter(frames.into_iter().map(|b| Ok::<_, Infallible>(Frame::data(b))))
                    });
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::TRANSFER_ENCODING, "chunked")
                    .body(BodyExt::boxed(StreamBody::new(stream)))
                    .expect("valid response"));
            }
            validate_list_options(&q, false)?;
            let result = read::list(&state, &t.def, &sel, &list_params(&q)).await?;
            Ok(list_response(&state, &t.def, result, form))
        }
        (Method::POST, None) => {
            if t.namespace.is_none() && t.def.namespaced {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                )
                .with_empty_details());
            }
            check_json_content_type(&req)?;
            let def = t.def.clone();
            let body = decode_object(&read_body(req).await?)?;
            check_type_meta(&def, &body)?;
            let obj = ops::create(&mut state.store(), &def, &ns, body)?;
            Ok(object_response(&state, &def, &obj, StatusCode::CREATED))
        }
        (Method::PUT, Some(name)) => {
            check_json_content_type(&req)?;
            let (def, name) = (t.def.clone(), name.clone());
            let body = decode_object(&read_body(req).await?)?;
            check_type_meta(&def, &body)?;
            let existed = ops::get(&state.store(), &def, &ns, &name).is_ok();
            let obj = ops::update(&mut state.store(), &def, &ns, &name, t.sub, body)?;
            let code = if existed { StatusCode::OK } else { StatusCode::CREATED };
            Ok(object_response(&state, &def, &obj, code))
        }
        (Method::PATCH, Some(name)) => {
            let kind = patch_type.expect("checked above");
            let (def, name) = (t.def.clone(), name.clone());
            let body = read_body(req).await?;
            let obj = ops::patch(&mut state.store(), &def, &ns, &name, t.sub, kind, &body)?;
            Ok(object_response(&state, &def, &obj, StatusCode::OK))
        }
        (Method::POST, Some(name)) if t.sub == Sub::Eviction => {
            check_json_content_type(&req)?;
            let (def, name) = (t.def.clone(), name.clone());
            let user = user_of(&req);
            let body = decode_object(&read_body(req).await?)?;
            evict(&state, &def, &ns, &name, body, &user).await
        }
        (Method::DELETE, Some(name)) if t.sub == Sub::Main => {
            let (def, name) = (t.def.clone(), name.clone());
            let user = user_of(&req);
            let body = read_body(req).await?;
            let opts = delete_opts(&q, &body)?;
            let warnings = admit_delete(&state, &def, &ns, &name, &body, &user).await?;
            let d = ops::delete(&mut state.store(), &def, &ns, &name, &opts)?;
            Ok(with_warnings(delete_response(&state, &def, &d), &warnings))
        }
        (Method::DELETE, None) => {
            let def = t.def.clone();
            let user = user_of(&req);
            let sel = Selection::parse(
                &def,
                t.namespace.clone(),
                q.get("labelSelector"),
                q.get("fieldSelector"),
            )?;
            validate_list_options(&q, false)?;
            let body = read_body(req).await?;
            let opts = delete_opts(&q, &body)?;
            // Store.DeleteCollection: the list as read (one page when a limit is given), whose
            // items are deleted one by one; the first failure other than NotFound fails the
            // request. The answer is that list, its items as they were before the deletion.
            let listed = read::list(&state, &def, &sel, &list_params(&q)).await?;
            for obj in &listed.items {
                admit_delete(&state, &def, &obj.namespace, &obj.name, &body, &user).await?;
                match ops::delete(&mut state.store(), &def, &obj.namespace, &obj.name, &opts) {
                    Err(e) if e.code != 404 => return Err(e),
                    _ => {}
                }
            }
            Ok(list_response(&state, &def, listed, Form::Full))
        }
        _ => Err(
            ApiError::method_not_allowed("the server does not allow this method on the requested resource")
                .with_empty_details(),
        ),
    }
}

fn user_of(req: &Request<Incoming>) -> String {
    req.extensions().get::<User>().map(|u| u.0.clone()).unwrap_or_default()
}

/// `DeleteOptions` as an admission review's `options`.
fn delete_options_object(body: &[u8]) -> Value {
    let mut v: Value = serde_json::from_slice(body).unwrap_or_else(|_| json!({}));
    if !v.is_object() {
        v = json!({});
    }
    v["kind"] = json!("DeleteOptions");
    v["apiVersion"] = json!("meta.k8s.io/v1");
    v
}

/// Validating admission of a pod's deletion (other resources have no webhooks here).
async fn admit_delete(
    state: &Arc<ClusterState>,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    body: &[u8],
    user: &str,
) -> ApiResult<Vec<String>> {
    if def.flavor != Flavor::Pod {
        return Ok(Vec::new());
    }
    let old = {
        let store = state.store();
        let obj = ops::get(&store, def, ns, name)?;
        let sdef = store.storage_def(&def.storage_key()).expect("storage definition");
        ops::present(def, &sdef, &obj)
    };
    crate::admission::admit(
        state,
        crate::admission::Request {
            operation: "DELETE",
            sub_resource: "",
            namespace: ns,
            name,
            kind: ("", "v1", "Pod"),
            object: None,
            old_object: Some(old),
            options: delete_options_object(body),
            user,
        },
    )
    .await
}

/// `POST pods/NAME/eviction` (policy/v1 `Eviction`): the eviction is admitted (`CREATE
/// pods/eviction`, the `Eviction` as the object), then checked against the pod's
/// PodDisruptionBudget (`check_disruption_budget`), then the pod is deleted with the
/// eviction's `deleteOptions`; `201` and a Success Status.
async fn evict(
    state: &Arc<ClusterState>,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    mut body: Value,
    user: &str,
) -> ApiResult<Response<Body>> {
    // The type meta defaults to the endpoint's (policy/v1 Eviction) when absent.
    let api_version = body["apiVersion"].as_str().unwrap_or("policy/v1").to_string();
    let kind = body["kind"].as_str().unwrap_or("Eviction").to_string();
    if kind != "Eviction" || !matches!(api_version.as_str(), "policy/v1" | "policy/v1beta1") {
        return Err(ApiError::bad_request(format!(
            "no kind \"{kind}\" is registered for version \"{api_version}\""
        )));
    }
    body["apiVersion"] = json!(api_version);
    body["kind"] = json!(kind);
    if body["metadata"]["name"].as_str() != Some(name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    // The pod must exist (404 otherwise), before admission.
    ops::get(&state.store(), def, ns, name)?;
    if body["metadata"]["namespace"].is_null() {
        body["metadata"]["namespace"] = json!(ns);
    }
    let delete_options = body.get("deleteOptions").cloned().unwrap_or_else(|| json!({}));
    let warnings = crate::admission::admit(
        state,
        crate::admission::Request {
            operation: "CREATE",
            sub_resource: "eviction",
            namespace: ns,
            name,
            kind: ("policy", "v1", "Eviction"),
            object: Some(body),
            old_object: None,
            options: json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
            user,
        },
    )
    .await?;
    let opts = delete_opts(&Query(Vec::new()), delete_options.to_string().as_bytes())?;
    check_disruption_budget(state, def, ns, name)?;
    ops::delete(&mut state.store(), def, ns, name, &opts)?;
    Ok(with_warnings(
        json_response(
            StatusCode::CREATED,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}).to_string(),
        ),
        &warnings,
    ))
}

/// `EvictionREST.Create`'s budget check (after admission), for the status a test wrote on
/// the pod's PodDisruptionBudget: a pod terminating or not running goes without a check;
/// more than one budget is `500`; a Ready pod needs `disruptionsAllowed > 0` (which it then
/// takes, as the API server records it), an unready one `currentHealthy >= desiredHealthy`
/// under the default `unhealthyPodEvictionPolicy: IfHealthyBudget`; otherwise `429`.
fn check_disruption_budget(state: &ClusterState, def: &ResourceDef, ns: &str, name: &str) -> ApiResult<()> {
    let mut store = state.store();
    let pod = {
        let obj = ops::get(&store, def, ns, name)?;
        let sdef = store.storage_def(&def.storage_key()).expect("storage definition");
        ops::present(def, &sdef, &obj)
    };
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if pod["metadata"]["deletionTimestamp"].is_string() || matches!(phase, "Pending" | "Succeeded" | "Failed" | "") {
        return Ok(());
    }
    let Some(pdb_def) = store.find_def("policy", "v1", "poddisruptionbudgets") else {
        return Ok(());
    };
    let psdef = store.storage_def(&pdb_def.storage_key()).expect("storage definition");
    let labels = crate::admission::labels_of(Some(&pod));
    let budgets: Vec<Value> = store
        .table(&pdb_def.storage_key())
        .values()
        .filter(|o| o.namespace == ns)
        .map(|o| o.value(&psdef))
        .filter(|b| b["spec"]["selector"].is_object() && crate::admission::selects(&b["spec"]["selector"], &labels))
        .collect();
    let budget = match budgets.as_slice() {
        [] => return Ok(()),
        [b] => b.clone(),
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ))
        }
    };
    let status = &budget["status"];
    let (allowed, healthy, desired) = (
        status["disruptionsAllowed"].as_i64().unwrap_or(0),
        status["currentHealthy"].as_i64().unwrap_or(0),
        status["desiredHealthy"].as_i64().unwrap_or(0),
    );
    let ready = pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    let policy = budget["spec"]["unhealthyPodEvictionPolicy"]
        .as_str()
        .unwrap_or("IfHealthyBudget");
    let refuse = || {
        let bname = budget["metadata"]["name"].as_str().unwrap_or_default();
        let mut e = ApiError::new(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        )
        .with_details(json!({"causes": [{"reason": "DisruptionBudget",
            "message": format!("The disruption budget {bname} needs {desired} healthy pods and has {healthy} currently")}]}));
        e.retry_after = None;
        Err(e)
    };
    if !ready {
        return if policy == "AlwaysAllow" || healthy >= desired {
            Ok(())
        } else {
            refuse()
        };
    }
    if allowed <= 0 {
        return refuse();
    }
    let bname = budget["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let patch = json!({"status": {"disruptionsAllowed": allowed - 1}});
    ops::patch(
        &mut store,
        &pdb_def,
        ns,
        &bname,
        Sub::Status,
        PatchType::Merge,
        patch.to_string().as_bytes(),
    )?;
    Ok(())
}

/// Admission warnings as `Warning` headers, as the API server returns them.
fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        if let Some(v) = crate::admission::warning_header(w) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

/// A body whose `kind`/`apiVersion` name another type is rejected as the apiserver's
/// decoder rejects it.
fn check_type_meta(def: &ResourceDef, body: &Value) -> ApiResult<()> {
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or(&def.kind);
    let api_version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| def.api_version());
    if kind != def.kind || api_version != def.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            def.api_version()
        )));
    }
    Ok(())
}

fn list_params(q: &Query) -> ListParams {
    ListParams {
        limit: q.get("limit").and_then(|s| s.parse().ok()),
        continue_token: q.get("continue").filter(|s| !s.is_empty()).map(String::from),
        resource_version: q.get("resourceVersion").map(String::from),
        resource_version_match: q.get("resourceVersionMatch").map(String::from),
    }
}

fn delete_opts(q: &Query, body: &[u8]) -> ApiResult<DeleteOpts> {
    let mut opts = DeleteOpts {
        grace_period_seconds: q.get("gracePeriodSeconds").and_then(|s| s.parse().ok()),
        ..Default::default()
    };
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            opts.grace_period_seconds = Some(g);
        }
        opts.precondition_uid = v["preconditions"]["uid"].as_str().map(String::from);
        opts.precondition_rv = v["preconditions"]["resourceVersion"].as_str().map(String::from);
    }
    Ok(opts)
}

/// `ValidateListOptions` (list) and `validateWatchOptions` (watch), as the list handler
/// runs them before anything is read: `422 Invalid` on `ListOptions.meta.k8s.io`.
fn validate_list_options(q: &Query, watch: bool) -> ApiResult<()> {
    let rv = q.get("resourceVersion").unwrap_or("");
    let rvm = q.get("resourceVersionMatch").unwrap_or("");
    let cont = q.get("continue").unwrap_or("");
    let send_initial_events = q.get("sendInitialEvents").is_some();
    let forbidden = |field: &str, why: &str| (field.to_string(), "Forbidden", why.to_string());
    let mut errors = Vec::new();
    if watch {
        if send_initial_events && rvm != "NotOlderThan" {
            errors.push(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !rvm.is_empty() {
            if !send_initial_events {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if rvm != "NotOlderThan" {
                errors.push((
                    "resourceVersionMatch".to_string(),
                    "Unsupported value",
                    format!("{rvm:?}: supported values: \"NotOlderThan\""),
                ));
            }
            if !cont.is_empty() {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
    } else {
        if !rvm.is_empty() {
            if rv.is_empty() {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if !cont.is_empty() {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if rvm != "Exact" && rvm != "NotOlderThan" {
                errors.push((
                    "resourceVersionMatch".to_string(),
                    "Unsupported value",
                    format!("{rvm:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""),
                ));
            }
            if rvm == "Exact" && rv == "0" {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if send_initial_events {
            errors.push(forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_fields("meta.k8s.io", "ListOptions", "", &errors))
    }
}

fn delete_response(state: &ClusterState, def: &ResourceDef, d: &ops::Deleted) -> Response<Body> {
    // Only stores with ReturnDeletedObject (pods, namespaces) answer the deleted object; the
    // others answer a Success Status naming it (finalizeDelete). An object still held
    // (finalizers, grace period) is answered as updated, by every store.
    let returns_object = matches!(def.flavor, Flavor::Pod | Flavor::Namespace);
    if d.gone && !returns_object {
        let s = success_status(&def.group, &def.plural, &d.obj.name, &d.obj.uid);
        return json_response(StatusCode::OK, s.to_string());
    }
    object_response(state, def, &d.obj, StatusCode::OK)
}

fn list_response(state: &ClusterState, def: &ResourceDef, r: read::ListResult, form: Form) -> Response<Body> {
    let sdef = state
        .store()
        .storage_def(&def.storage_key())
        .expect("storage definition");
    let mut meta = json!({"resourceVersion": r.resource_version.to_string()});
    if let Some(c) = &r.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = r.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    let (kind, api_version) = match form {
        Form::Full => (format!("{}List", def.kind), def.api_version()),
        Form::Metadata => ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1".to_string()),
    };
    let head = format!(r#"{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{meta},"items":["#);
    let mut chunks = Vec::with_capacity(r.items.len() * 3 + 2);
    chunks.push(Bytes::from(head));
    for (i, obj) in r.items.iter().enumerate() {
        if i > 0 {
            chunks.push(Bytes::from_static(b","));
        }
        chunks.extend(read::list_item_bytes(def, &sdef, obj, form));
    }
    chunks.push(Bytes::from_static(b"]}"));
    // Coalesce into a few large frames: one frame per object would cost a syscall each.
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(1 << 20);
    for c in chunks {
        buf.extend_from_slice(&c);
        if buf.len() >= 1 << 20 {
            out.push(Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(1 << 20))));
        }
    }
    out.push(Bytes::from(buf));
    chunks_response(out)
}
