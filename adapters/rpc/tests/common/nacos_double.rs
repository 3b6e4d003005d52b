//! A contract test double of the Nacos 2.x Open API — only the endpoints the adapter uses,
//! with the request parameters, response envelopes and shapes of the published API docs
//! (nacos.io, "Open API Guide", v2), plus the 2.x server behaviours the docs leave out but
//! the server code shows:
//!
//! - `GET /nacos/v2/ns/instance` (detail) answers without an `enabled` field;
//! - `GET /nacos/v2/ns/instance/list` leaves disabled instances out, and its `ip`/`port`
//!   parameters name a subscriber, not a filter (they are recorded, never used to filter);
//! - `PUT /nacos/v2/ns/instance` rebuilds weight (default 1.0), `enabled` (default true) and
//!   metadata (default empty) from the form;
//! - unknown instance → HTTP 404 `{"code":20004,...,"data":"no matched ip found!"}`,
//!   unknown service on `GET /nacos/v2/ns/service` → 404 code 21008;
//! - with auth on, `POST /nacos/v1/auth/login` answers `{"accessToken","tokenTtl",
//!   "globalAdmin"}` or HTTP 403 `unknown user!`; other calls without a valid
//!   `accessToken` get HTTP 403.
//!
//! It is not Nacos: nothing here was checked against a real server.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};

/// One registered instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub ip: String,
    pub port: u16,
    pub cluster: String,
    pub weight: f64,
    pub enabled: bool,
    pub healthy: bool,
    pub ephemeral: bool,
    pub metadata: Map<String, Value>,
}

/// One request the double received.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub params: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    /// `namespace|group@@service` → instances.
    services: BTreeMap<String, Vec<Instance>>,
    user: Option<(String, String)>,
    tokens: HashSet<String>,
    logins: u32,
    fail_next: u32,
    requests: Vec<Req>,
}

/// The running double; the server task stops when this is dropped.
pub struct NacosDouble {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NacosDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn service_key(namespace: &str, group: &str, service: &str) -> String {
    format!("{namespace}|{group}@@{service}")
}

impl NacosDouble {
    /// Starts the double on 127.0.0.1 (a free port).
    pub async fn start() -> NacosDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the double");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in this set: aborting the server drops them all, so
            // pooled keep-alive connections die with it, as with a real server going away.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        NacosDouble { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn server_addr(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Registers an instance (as a Nacos client would), enabled and healthy.
    pub fn register(&self, service: &str, ip: &str, port: u16, weight: f64, metadata: Value) {
        let instance = Instance {
            ip: ip.into(),
            port,
            cluster: "DEFAULT".into(),
            weight,
            enabled: true,
            healthy: true,
            ephemeral: true,
            metadata: metadata.as_object().cloned().unwrap_or_default(),
        };
        self.with(|s| {
            s.services
                .entry(service_key("public", "DEFAULT_GROUP", service))
                .or_default()
                .push(instance)
        });
    }

    /// The instance at `ip:port` of a service in public / DEFAULT_GROUP.
    pub fn instance(&self, service: &str, ip: &str, port: u16) -> Option<Instance> {
        self.with(|s| {
            s.services
                .get(&service_key("public", "DEFAULT_GROUP", service))?
                .iter()
                .find(|i| i.ip == ip && i.port == port)
                .cloned()
        })
    }

    /// Every service's instances as the double holds them, one per line (for "nothing
    /// changed" comparisons; the request log is not part of it).
    pub fn instances_snapshot(&self) -> String {
        self.with(|s| {
            s.services
                .iter()
                .flat_map(|(service, list)| list.iter().map(move |i| format!("{service} {i:?}")))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Changes an instance outside the adapter (an operator in the console).
    pub fn edit(&self, service: &str, ip: &str, port: u16, f: impl FnOnce(&mut Instance)) {
        self.with(|s| {
            let list = s
                .services
                .get_mut(&service_key("public", "DEFAULT_GROUP", service))
                .unwrap();
            f(list.iter_mut().find(|i| i.ip == ip && i.port == port).unwrap())
        });
    }

    /// Turns authentication on with one user.
    pub fn enable_auth(&self, user: &str, password: &str) {
        self.with(|s| s.user = Some((user.into(), password.into())));
    }

    /// Invalidates every token handed out (as a token expiry would).
    pub fn expire_tokens(&self) {
        self.with(|s| s.tokens.clear());
    }

    /// Number of successful logins.
    pub fn logins(&self) -> u32 {
        self.with(|s| s.logins)
    }

    /// Answers the next `n` requests with HTTP 503.
    pub fn fail_next(&self, n: u32) {
        self.with(|s| s.fail_next = n);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Req> {
        self.with(|s| s.requests.clone())
    }
}

fn decode(s: &str) -> String {
    let (bytes, mut out, mut i) = (s.as_bytes(), Vec::new(), 0);
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(s: &str, into: &mut BTreeMap<String, String>) {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.insert(decode(k), decode(v));
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json;charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn ok(data: Value) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, json!({"code": 0, "message": "success", "data": data}))
}

fn error(status: StatusCode, code: i64, message: &str, data: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"code": code, "message": message, "data": data}))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn host_json(grouped: &str, i: &Instance) -> Value {
    json!({
        "ip": i.ip, "port": i.port, "weight": i.weight, "healthy": i.healthy, "enabled": i.enabled,
        "ephemeral": i.ephemeral, "clusterName": i.cluster, "serviceName": grouped, "metadata": i.metadata,
        "instanceHeartBeatTimeOut": 15000, "ipDeleteTimeout": 30000, "instanceHeartBeatInterval": 5000
    })
}

async fn handle(state: &Mutex<State>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let mut params = BTreeMap::new();
    parse_form(req.uri().query().unwrap_or(""), &mut params);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    parse_form(&String::from_utf8_lossy(&body), &mut params);
    let mut s = state.lock().unwrap();
    s.requests.push(Req {
        method: method.clone(),
        path: path.clone(),
        params: params.clone(),
    });
    if s.fail_next > 0 {
        s.fail_next -= 1;
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is DOWN now, please try again later!",
        );
    }
    let p = |k: &str| params.get(k).cloned().unwrap_or_default();
    if path == "/nacos/v1/auth/login" && method == "POST" {
        return match &s.user {
            Some((u, pw)) if *u == p("username") && *pw == p("password") => {
                s.logins += 1;
                let token = format!("token-{}", s.logins);
                s.tokens.insert(token.clone());
                reply(
                    StatusCode::OK,
                    json!({"accessToken": token, "tokenTtl": 18000, "globalAdmin": true}),
                )
            }
            _ => text(StatusCode::FORBIDDEN, "unknown user!"),
        };
    }
    if s.user.is_some() {
        match params.get("accessToken") {
            None => return text(StatusCode::FORBIDDEN, "user not found!"),
            Some(t) if !s.tokens.contains(t) => return text(StatusCode::FORBIDDEN, "token invalid!"),
            Some(_) => {}
        }
    }
    let namespace = params.get("namespaceId").cloned().unwrap_or_else(|| "public".into());
    let group = params
        .get("groupName")
        .filter(|g| !g.is_empty())
        .cloned()
        .unwrap_or_else(|| "DEFAULT_GROUP".into());
    let service = p("serviceName");
    let grouped = format!("{group}@@{service}");
    let key = service_key(&namespace, &group, &service);
    let cluster = params.get("clusterName").cloned().unwrap_or_else(|| "DEFAULT".into());
    let find = |list: &[Instance]| {
        let port: u16 = p("port").parse().unwrap_or(0);
        list.iter()
            .position(|i| i.ip == p("ip") && i.port == port && i.cluster == cluster)
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/nacos/v2/ns/operator/metrics") => ok(json!("UP")),
        ("GET", "/nacos/v2/ns/service") => match s.services.get(&key) {
            Some(_) => ok(json!({
                "namespace": namespace, "groupName": group, "serviceName": service, "clusterMap": {},
                "metadata": {}, "protectThreshold": 0, "selector": {"type": "none", "contextType": "NONE"},
                "ephemeral": true
            })),
            None => error(
                StatusCode::NOT_FOUND,
                21008,
                "service not exist",
                &format!("service not found, namespace: {namespace}, service: {grouped}"),
            ),
        },
        ("GET", "/nacos/v2/ns/instance") => {
            let Some(list) = s.services.get(&key) else {
                let msg = format!("no ips found for cluster {cluster} in service {grouped}");
                return error(StatusCode::NOT_FOUND, 20004, "resource not found", &msg);
            };
            match find(list) {
                Some(at) => {
                    let i = &list[at];
                    ok(json!({
                        "serviceName": grouped, "ip": i.ip, "port": i.port, "clusterName": i.cluster,
                        "weight": i.weight, "healthy": i.healthy, "instanceId": null, "metadata": i.metadata
                    }))
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    20004,
                    "resource not found",
                    "no matched ip found!",
                ),
            }
        }
        ("GET", "/nacos/v2/ns/instance/list") => {
            let clusters: Vec<String> = params
                .get("clusterName")
                .map(|c| c.split(',').map(String::from).collect())
                .unwrap_or_default();
            let healthy_only = p("healthyOnly") == "true";
            let hosts: Vec<Value> = s
                .services
                .get(&key)
                .map(|list| {
                    list.iter()
                        .filter(|i| i.enabled && (!healthy_only || i.healthy))
                        .filter(|i| clusters.is_empty() || clusters.contains(&i.cluster))
                        .map(|i| host_json(&grouped, i))
                        .collect()
                })
                .unwrap_or_default();
            ok(json!({
                "name": grouped, "groupName": group, "clusters": params.get("clusterName").cloned().unwrap_or_default(),
                "cacheMillis": 10000, "hosts": hosts, "lastRefTime": 1_662_554_390_814u64, "checksum": "",
                "allIPs": false, "reachProtectionThreshold": false, "valid": true
            }))
        }
        ("PUT", "/nacos/v2/ns/instance") => {
            if service.is_empty() || p("ip").is_empty() || p("port").is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    10000,
                    "parameter missing",
                    "Required parameter missing",
                );
            }
            let weight: f64 = params.get("weight").map_or(Ok(1.0), |w| w.parse()).unwrap_or(-1.0);
            if !(0.0..=10_000.0).contains(&weight) {
                return error(
                    StatusCode::BAD_REQUEST,
                    21001,
                    "weight error",
                    "The weights range from 0.0 to 10000.0",
                );
            }
            let metadata: Map<String, Value> = match params.get("metadata") {
                Some(m) => match serde_json::from_str(m) {
                    Ok(Value::Object(map)) => map,
                    _ => return error(StatusCode::BAD_REQUEST, 21002, "instance metadata error", m),
                },
                None => Map::new(),
            };
            let enabled = params.get("enabled").is_none_or(|e| e == "true");
            let Some(list) = s.services.get_mut(&key) else {
                return error(StatusCode::NOT_FOUND, 20004, "resource not found", "instance not exist");
            };
            let Some(at) = find(list) else {
                return error(StatusCode::NOT_FOUND, 20004, "resource not found", "instance not exist");
            };
            let i = &mut list[at];
            (i.weight, i.enabled, i.metadata) = (weight, enabled, metadata);
            ok(json!("ok"))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            20004,
            "resource not found",
            &format!("no handler for {method} {path}"),
        ),
    }
}
