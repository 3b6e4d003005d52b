//! `sluice drain | restore | get | list | watch | release`: the command line on the gRPC API.
//!
//! Exit codes (also in `sluice --help`): 0 done; 1 failed otherwise; 2 the wait ended before
//! every pod reached the goal; 3 the wait ended with a pod blocked; 4 denied (not
//! authenticated or not allowed); 5 a precondition failed (stale UID or etag, or the pod's
//! state does not allow it); 6 not found; 64 invalid request or command line; 69 the
//! gateway is unavailable or rate limited (try again).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_proto::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const EXIT_TIMEOUT: u8 = 2;
pub const EXIT_BLOCKED: u8 = 3;
pub const EXIT_DENIED: u8 = 4;
pub const EXIT_PRECONDITION: u8 = 5;
pub const EXIT_NOT_FOUND: u8 = 6;
pub const EXIT_INVALID: u8 = 64;
pub const EXIT_UNAVAILABLE: u8 = 69;

/// How to reach the API and who to be.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The API's address: https://host:port (TLS) or http://127.0.0.1:port (a loopback
    /// gateway with `api.insecure`).
    #[arg(long, env = "SLUICE_API", default_value = "https://127.0.0.1:7443", global = true)]
    pub api: String,
    /// The CA that signed the gateway's certificate (PEM); required with https://.
    #[arg(long, env = "SLUICE_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) to authenticate with, and its key (`--key`).
    #[arg(long, env = "SLUICE_CERT", value_name = "FILE", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    #[arg(long, env = "SLUICE_KEY", value_name = "FILE", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// A file holding a bearer token (a static token, or a ServiceAccount token when the
    /// gateway reviews them); the token itself may come in SLUICE_TOKEN.
    #[arg(long, env = "SLUICE_TOKEN_FILE", value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The name the gateway's certificate must carry, when it is not the address's host.
    #[arg(long, value_name = "NAME", global = true)]
    pub server_name: Option<String>,
    /// How the answer is printed.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

/// Which pods: one by name, or a selector in a namespace.
#[derive(Debug, Clone, clap::Args)]
pub struct PodsArg {
    /// The pod: NAME or NAMESPACE/NAME.
    #[arg(
        value_name = "POD",
        required_unless_present_any = ["selector", "endpoint"],
        conflicts_with_all = ["selector", "endpoint"]
    )]
    pub pod: Option<String>,
    /// A label selector instead of a pod (e.g. app=web,tier in (a,b)).
    #[arg(short = 'l', long = "selector", conflicts_with = "endpoint")]
    pub selector: Option<String>,
    /// An address outside Kubernetes instead of a pod, IP:PORT (its record lives in
    /// --namespace).
    #[arg(long, value_name = "IP:PORT")]
    pub endpoint: Option<String>,
    /// With --endpoint: where the address is registered, ADAPTER:key=value,… (repeat for
    /// more; a restore may leave it out).
    #[arg(long = "target", value_name = "ADAPTER:PARAMS", requires = "endpoint")]
    pub targets: Vec<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The cluster (may be left out when the gateway watches one).
    #[arg(long, default_value = "")]
    pub cluster: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Mutation {
    /// Why (kept in the audit line and on the pod). Required.
    #[arg(long)]
    pub reason: String,
    /// An idempotency key: repeating the request with it answers the first answer.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Run every check and print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only if the pod still has this UID.
    #[arg(long)]
    pub uid: Option<String>,
    /// Only if the pod is still at this version (the `etag` `sluice get` prints).
    #[arg(long)]
    pub etag: Option<String>,
}

/// The API commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ApiCommand {
    /// Drain a pod (or the pods a selector matches): take its address out of every traffic
    /// component its bindings name, and wait for the evidence with --wait.
    Drain {
        #[command(flatten)]
        pods: PodsArg,
        #[command(flatten)]
        m: Mutation,
        /// Show progress per adapter until drained (or --timeout).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds (at most 3600).
        #[arg(long, default_value_t = 300)]
        timeout: u32,
    },
    /// Withdraw a drain: the pod goes back into traffic once verified serving.
    Restore {
        #[command(flatten)]
        pods: PodsArg,
        #[command(flatten)]
        m: Mutation,
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout: u32,
    },
    /// One pod's traffic state.
    Get {
        /// NAME or NAMESPACE/NAME.
        pod: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value = "")]
        cluster: String,
    },
    /// The bound pods, with their traffic state.
    List {
        /// Empty: every namespace you may read.
        #[arg(short = 'n', long, default_value = "")]
        namespace: String,
        #[arg(short = 'l', long = "selector", default_value = "")]
        selector: String,
        #[arg(long, default_value = "")]
        cluster: String,
    },
    /// Follow the traffic state of a pod or of a selector's pods (Ctrl-C to stop).
    Watch {
        #[command(flatten)]
        pods: PodsArg,
    },
    /// Remove a traffic kind's finalizer from a draining pod WITHOUT verified drain (the
    /// rollout goes on; requests may be lost). Always a Warning Event.
    Release {
        /// NAME or NAMESPACE/NAME.
        pod: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value = "")]
        cluster: String,
        /// The traffic kind (slb, dns, rpc, ...); every kind when unset.
        #[arg(long, default_value = "")]
        kind: String,
        #[command(flatten)]
        m: Mutation,
    },
}

/// A failure and its exit code.
pub struct Failure(pub u8, pub String);

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        use tonic::Code;
        let code = match s.code() {
            Code::Unauthenticated | Code::PermissionDenied => EXIT_DENIED,
            Code::Aborted | Code::FailedPrecondition => EXIT_PRECONDITION,
            Code::NotFound => EXIT_NOT_FOUND,
            Code::InvalidArgument | Code::OutOfRange | Code::Unimplemented => EXIT_INVALID,
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => EXIT_UNAVAILABLE,
            _ => 1,
        };
        Failure(code, format!("{:?}: {}", s.code(), s.message()))
    }
}

fn split_pod(pod: &str, namespace: &str) -> (String, String) {
    match pod.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (namespace.to_string(), pod.to_string()),
    }
}

/// Connects, with TLS unless the address is http://.
/// `--api` is https://, or http:// to a loopback address only (plaintext carries the token
/// in the clear). Checked before anything is sent.
pub fn check_api(api: &str) -> Result<(), String> {
    if api.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = api.strip_prefix("http://") else {
        return Err(format!("--api {api:?} must start with https:// or http://"));
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "--api {api:?}: plaintext only to a loopback address; use https:// with --ca"
        ))
    }
}

async fn connect(c: &Connection) -> Result<(Channel, Option<String>), Failure> {
    let invalid = |m: String| Failure(EXIT_INVALID, m);
    check_api(&c.api).map_err(invalid)?;
    let mut endpoint = Channel::from_shared(c.api.clone()).map_err(|e| invalid(format!("--api {:?}: {e}", c.api)))?;
    if c.api.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match &c.ca {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| invalid(format!("--ca {}: {e}", ca.display())))?;
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            None => {
                return Err(invalid(
                    "--ca (or SLUICE_CA) is required with https://: the CA that signed the gateway's certificate"
                        .into(),
                ))
            }
        };
        if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
            let cert_pem = std::fs::read(cert).map_err(|e| invalid(format!("--cert {}: {e}", cert.display())))?;
            let key_pem = std::fs::read(key).map_err(|e| invalid(format!("--key {}: {e}", key.display())))?;
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
        if let Some(name) = &c.server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| invalid(format!("TLS: {e}")))?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| Failure(EXIT_UNAVAILABLE, format!("cannot reach the API at {}: {e}", c.api)))?;
    let token = match (&c.token_file, std::env::var("SLUICE_TOKEN").ok()) {
        (Some(f), _) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| invalid(format!("--token-file {}: {e}", f.display())))?
                .trim()
                .to_string(),
        ),
        (None, Some(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    Ok((channel, token))
}

/// A request with the bearer token and the caller's trace (TRACEPARENT in the environment).
fn request<T>(m: T, token: &Option<String>) -> Result<tonic::Request<T>, Failure> {
    let mut r = tonic::Request::new(m);
    if let Some(t) = token {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| Failure(EXIT_INVALID, "the token holds characters a header cannot carry".into()))?;
        r.metadata_mut().insert("authorization", v);
    }
    if let Ok(tp) = std::env::var("TRACEPARENT") {
        if let Ok(v) = tp.parse() {
            r.metadata_mut().insert("traceparent", v);
        }
    }
    Ok(r)
}

fn target(p: &PodsArg, m: Option<&Mutation>) -> Result<pb::Target, Failure> {
    use pb::target::Target as T;
    if let Some(ep) = &p.endpoint {
        let addr: std::net::SocketAddr = ep.parse().map_err(|_| {
            Failure(
                EXIT_INVALID,
                format!("--endpoint {ep:?}: expected IP:PORT (e.g. 10.0.0.5:8080)"),
            )
        })?;
        let mut targets = Vec::new();
        for t in &p.targets {
            let (adapter, params) = t.split_once(':').unwrap_or((t.as_str(), ""));
            let mut map = serde_json::Map::new();
            for kv in params.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    Failure(
                        EXIT_INVALID,
                        format!("--target {t:?}: parameters are key=value, e.g. haproxy:backend=web"),
                    )
                })?;
                map.insert(k.to_string(), Value::String(v.to_string()));
            }
            targets.push(pb::AdapterTarget {
                adapter: adapter.to_string(),
                params_json: Value::Object(map).to_string(),
            });
        }
        return Ok(pb::Target {
            target: Some(T::Endpoint(pb::Endpoint {
                cluster: p.cluster.clone(),
                namespace: p.namespace.clone(),
                address: addr.ip().to_string(),
                port: u32::from(addr.port()),
                targets,
            })),
        });
    }
    Ok(pb::Target {
        target: Some(match (&p.pod, &p.selector) {
            (Some(pod), _) => {
                let (namespace, name) = split_pod(pod, &p.namespace);
                T::Pod(pb::PodRef {
                    cluster: p.cluster.clone(),
                    namespace,
                    name,
                    uid: m.and_then(|m| m.uid.clone()).unwrap_or_default(),
                    etag: m.and_then(|m| m.etag.clone()).unwrap_or_default(),
                })
            }
            (None, sel) => T::Selector(pb::Selector {
                cluster: p.cluster.clone(),
                namespace: p.namespace.clone(),
                label_selector: sel.clone().unwrap_or_default(),
            }),
        }),
    })
}

/// A pod's traffic state as JSON (also what `-o yaml` prints).
pub fn pod_json(t: &pb::PodTraffic) -> Value {
    json!({
        "cluster": t.cluster, "namespace": t.namespace, "name": t.name, "uid": t.uid, "ip": t.ip,
        "state": t.state, "lastTransition": t.last_transition, "traceId": t.trace_id,
        "targets": t.targets.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "blocked": t.blocked, "problems": t.problems, "gate": t.gate, "finalizers": t.finalizers,
        "drainSignals": t.drain_signals, "requestedBy": t.requested_by, "requestReason": t.request_reason,
        "etag": t.etag,
    })
}

fn operation_json(o: &pb::Operation) -> Value {
    json!({
        "requestId": o.request_id, "validateOnly": o.validate_only, "plan": o.plan,
        "pods": o.pods.iter().map(pod_json).collect::<Vec<_>>(), "traceId": o.trace_id, "replayed": o.replayed,
    })
}

fn emit(out: Output, v: &Value) {
    match out {
        Output::Json => println!("{v}"),
        Output::Yaml => print!("---\n{}", serde_yaml::to_string(v).unwrap_or_default()),
        Output::Text => println!("{v:#}"),
    }
}

/// One line for a pod: `ns/name  state  gate  kind/adapter/params=state ...  (blocked: ...)`.
pub fn pod_line(t: &pb::PodTraffic) -> String {
    let mut targets: Vec<String> = t.targets.iter().map(|(k, v)| format!("{k}={v}")).collect();
    targets.sort();
    let mut line = format!(
        "{}/{}/{}  {}  gate={}",
        t.cluster,
        t.namespace,
        t.name,
        if t.state.is_empty() { "-" } else { &t.state },
        if t.gate.is_empty() { "-" } else { &t.gate }
    );
    if !targets.is_empty() {
        line.push_str("  ");
        line.push_str(&targets.join(" "));
    }
    if !t.blocked.is_empty() {
        line.push_str(&format!("  blocked: {}", t.blocked.join("; ")));
    }
    if !t.problems.is_empty() {
        line.push_str(&format!("  problems: {}", t.problems.join("; ")));
    }
    line
}

/// Runs an API command; answers the exit code.
pub async fn run(conn: Connection, cmd: ApiCommand) -> u8 {
    match run_inner(&conn, cmd).await {
        Ok(code) => code,
        Err(Failure(code, message)) => {
            eprintln!("sluice: {message}");
            code
        }
    }
}

/// A Drain or Restore request (same fields) from the command line.
macro_rules! mutation_request {
    ($message:ident, $pods:expr, $m:expr, $wait:expr, $timeout:expr) => {
        pb::$message {
            target: Some(target(&$pods, Some(&$m))?),
            reason: $m.reason.clone(),
            request_id: $m.request_id.clone().unwrap_or_default(),
            validate_only: $m.dry_run,
            wait: $wait,
            wait_seconds: if $wait { $timeout } else { 0 },
        }
    };
}

async fn run_inner(conn: &Connection, cmd: ApiCommand) -> Result<u8, Failure> {
    let (channel, token) = connect(conn).await?;
    let mut api = pb::sluice_client::SluiceClient::new(channel);
    let out = conn.output;
    match cmd {
        ApiCommand::Drain { pods, m, wait, timeout } => {
            let r = mutation_request!(DrainRequest, pods, m, wait, timeout);
            let stream = api.drain(request(r, &token)?).await?.into_inner();
            follow(out, stream, "drained").await
        }
        ApiCommand::Restore { pods, m, wait, timeout } => {
            let r = mutation_request!(RestoreRequest, pods, m, wait, timeout);
            let stream = api.restore(request(r, &token)?).await?.into_inner();
            follow(out, stream, "serving").await
        }
        ApiCommand::Get {
            pod,
            namespace,
            cluster,
        } => {
            let (namespace, name) = split_pod(&pod, &namespace);
            let t = api
                .get(request(
                    pb::GetRequest {
                        pod: Some(pb::PodRef {
                            cluster,
                            namespace,
                            name,
                            ..Default::default()
                        }),
                    },
                    &token,
                )?)
                .await?
                .into_inner();
            match out {
                Output::Text => println!("{}", pod_line(&t)),
                _ => emit(out, &pod_json(&t)),
            }
            Ok(0)
        }
        ApiCommand::List {
            namespace,
            selector,
            cluster,
        } => {
            let mut page_token = String::new();
            let mut all = Vec::new();
            loop {
                let r = api
                    .list(request(
                        pb::ListRequest {
                            cluster: cluster.clone(),
                            namespace: namespace.clone(),
                            label_selector: selector.clone(),
                            page_size: 0,
                            page_token: page_token.clone(),
                        },
                        &token,
                    )?)
                    .await?
                    .into_inner();
                all.extend(r.pods);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            match out {
                Output::Text => {
                    for t in &all {
                        println!("{}", pod_line(t));
                    }
                }
                _ => emit(out, &json!({"pods": all.iter().map(pod_json).collect::<Vec<_>>()})),
            }
            Ok(0)
        }
        ApiCommand::Watch { pods } => {
            let mut stream = api
                .watch(request(
                    pb::WatchRequest {
                        target: Some(target(&pods, None)?),
                    },
                    &token,
                )?)
                .await?
                .into_inner();
            while let Some(ev) = stream.message().await? {
                let kind = pb::watch_event::Type::try_from(ev.r#type)
                    .map(|t| t.as_str_name())
                    .unwrap_or("UNKNOWN");
                match (out, ev.pod) {
                    (Output::Text, Some(p)) => println!("{kind:<8} {}", pod_line(&p)),
                    (Output::Text, None) => println!("{kind}"),
                    (_, p) => emit(out, &json!({"type": kind, "pod": p.as_ref().map(pod_json)})),
                }
                let _ = std::io::stdout().flush();
            }
            Ok(0)
        }
        ApiCommand::Release {
            pod,
            namespace,
            cluster,
            kind,
            m,
        } => {
            let (namespace, name) = split_pod(&pod, &namespace);
            let op = api
                .release(request(
                    pb::ReleaseRequest {
                        pod: Some(pb::PodRef {
                            cluster,
                            namespace,
                            name,
                            uid: m.uid.unwrap_or_default(),
                            etag: m.etag.unwrap_or_default(),
                        }),
                        kind,
                        reason: m.reason,
                        request_id: m.request_id.unwrap_or_default(),
                        validate_only: m.dry_run,
                    },
                    &token,
                )?)
                .await?
                .into_inner();
            print_operation(out, &op);
            Ok(0)
        }
    }
}

fn print_operation(out: Output, op: &pb::Operation) {
    match out {
        Output::Text => {
            if op.replayed {
                println!("(a repeat of request {}: the first answer)", op.request_id);
            }
            for line in &op.plan {
                println!("{}{line}", if op.validate_only { "would: " } else { "" });
            }
        }
        _ => emit(out, &operation_json(op)),
    }
}

/// Prints the answer and the progress of a Drain or Restore; the exit code says how the
/// wait ended.
async fn follow(out: Output, mut stream: tonic::Streaming<pb::Progress>, goal: &str) -> Result<u8, Failure> {
    let live = out == Output::Text && std::io::stdout().is_terminal();
    let mut pods: std::collections::BTreeMap<String, pb::PodTraffic> = Default::default();
    let mut drawn = 0usize;
    let mut code = 0;
    while let Some(p) = stream.message().await? {
        if let Some(op) = &p.operation {
            print_operation(out, op);
        }
        for t in &p.pods {
            pods.insert(format!("{}/{}/{}", t.cluster, t.namespace, t.name), t.clone());
        }
        match out {
            Output::Text if live => {
                // A live table: the pods' lines drawn again in place.
                let mut stdout = std::io::stdout().lock();
                if drawn > 0 {
                    let _ = write!(stdout, "\x1b[{drawn}A");
                }
                for t in pods.values() {
                    let _ = writeln!(stdout, "\x1b[2K{}", pod_line(t));
                }
                drawn = pods.len();
                let _ = stdout.flush();
            }
            Output::Text => {
                for t in &p.pods {
                    println!("{}", pod_line(t));
                }
            }
            _ => emit(
                out,
                &json!({"pods": p.pods.iter().map(pod_json).collect::<Vec<_>>(), "done": p.done, "timedOut": p.timed_out}),
            ),
        }
        if p.done {
            if out == Output::Text {
                println!("done: every pod is {goal}");
            }
            code = 0;
        }
        if p.timed_out {
            let blocked = pods.values().any(|t| t.state == "blocked" || !t.blocked.is_empty());
            code = if blocked { EXIT_BLOCKED } else { EXIT_TIMEOUT };
            eprintln!(
                "sluice: the wait ended before every pod was {goal}{}",
                if blocked {
                    " (blocked: see each pod's reasons)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_goes_only_to_loopback() {
        for ok in [
            "https://sluice.sluice.svc:7443",
            "http://127.0.0.1:7443",
            "http://localhost:1",
            "http://[::1]:7443",
        ] {
            assert!(check_api(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:7443",
            "http://sluice.example.com",
            "ftp://x",
            "http://[2001:db8::1]:1",
        ] {
            assert!(check_api(bad).is_err(), "{bad}");
        }
    }
}
