//! Validating admission webhooks (`admissionregistration.k8s.io/v1`
//! `ValidatingWebhookConfiguration`), called as kube-apiserver calls them — for what the
//! gateway needs: `DELETE pods` and `CREATE pods/eviction`.
//!
//! - Matching (`rules`, `namespaceSelector`, `objectSelector`): a rule names operations,
//!   groups, versions and resources (`pods`, `pods/eviction`, `pods/*`, `*`, `*/*`); the
//!   namespace selector is matched against the namespace's labels (every namespace carries
//!   `kubernetes.io/metadata.name`); the object selector against the labels of `object` or
//!   `oldObject` — for an eviction that is the `Eviction`, whose labels are not the pod's
//!   (kubernetes#110169).
//! - The call: `POST` of an `admission.k8s.io/v1` `AdmissionReview` to `clientConfig.url`
//!   over HTTPS, the server verified against `caBundle`, within `timeoutSeconds` (default 10).
//!   Configurations are called in name order, their webhooks in order; the first denial ends
//!   the request.
//! - A denial becomes the `Status` the webhook returned, as `webhookerrors.ToStatusErr`
//!   shapes it (`admission webhook "NAME" denied the request: MESSAGE`, code at least 400);
//!   a failed call (unreachable, timeout, bad answer) is `500 InternalError failed calling
//!   webhook` under `failurePolicy: Fail` (the default) and ignored under `Ignore`.
//! - Validation on create/update: `sideEffects` (`None` or `NoneOnDryRun`),
//!   `admissionReviewVersions` including `v1`, exactly one of `url` / `service` with an
//!   `https` URL, `timeoutSeconds` within 1–30, a fully qualified webhook name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::cluster::ClusterState;
use crate::resources::ResourceDef;
use crate::status::{ApiError, ApiResult, FieldError};

/// The request being admitted.
pub struct Request<'a> {
    /// `DELETE` or `CREATE`.
    pub operation: &'a str,
    /// `""` or `eviction`.
    pub sub_resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The kind of `object` / `oldObject`: (group, version, kind).
    pub kind: (&'a str, &'a str, &'a str),
    pub object: Option<Value>,
    pub old_object: Option<Value>,
    /// `DeleteOptions` or `CreateOptions`, as `meta.k8s.io/v1` objects.
    pub options: Value,
    pub user: &'a str,
}

/// Defaults and validation of a configuration on create and update.
pub fn prepare(v: &mut Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(hooks) = v.get_mut("webhooks").and_then(Value::as_array_mut) else {
        return errors;
    };
    let mut seen = std::collections::HashSet::new();
    for (i, w) in hooks.iter_mut().enumerate() {
        let at = |f: &str| format!("webhooks[{i}].{f}");
        let name = w["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() {
            errors.push((at("name"), "Required value", String::new()));
        } else if name.split('.').count() < 3 {
            errors.push((
                at("name"),
                "Invalid value",
                format!("{name:?}: should be a domain with at least three segments separated by dots"),
            ));
        } else if !seen.insert(name.clone()) {
            errors.push((at("name"), "Duplicate value", format!("{name:?}")));
        }
        match w["sideEffects"].as_str() {
            Some("None" | "NoneOnDryRun") => {}
            None => errors.push((
                at("sideEffects"),
                "Required value",
                "must specify one of None, NoneOnDryRun".into(),
            )),
            Some(other) => errors.push((
                at("sideEffects"),
                "Unsupported value",
                format!("{other:?}: supported values: \"None\", \"NoneOnDryRun\""),
            )),
        }
        let versions: Vec<&str> = w["admissionReviewVersions"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if versions.is_empty() {
            errors.push((
                at("admissionReviewVersions"),
                "Required value",
                "must specify one of v1, v1beta1".into(),
            ));
        } else if !versions.iter().any(|v| *v == "v1" || *v == "v1beta1") {
            errors.push((
                at("admissionReviewVersions"),
                "Invalid value",
                format!("{versions:?}: must include at least one of v1, v1beta1"),
            ));
        }
        let cc = &w["clientConfig"];
        match (cc.get("url").and_then(Value::as_str), cc.get("service")) {
            (Some(_), Some(_)) => errors.push((
                at("clientConfig"),
                "Required value",
                "exactly one of url or service is required".into(),
            )),
            (None, None) => errors.push((
                at("clientConfig"),
                "Required value",
                "exactly one of url or service is required".into(),
            )),
            (Some(url), None) if !url.starts_with("https://") => errors.push((
                at("clientConfig.url"),
                "Unsupported value",
                format!("{url:?}: supported values: \"https\""),
            )),
            _ => {}
        }
        if let Some(t) = w.get("timeoutSeconds").and_then(Value::as_i64) {
            if !(1..=30).contains(&t) {
                errors.push((
                    at("timeoutSeconds"),
                    "Invalid value",
                    format!("{t}: the timeout value must be between 1 and 30 seconds"),
                ));
            }
        }
        // SetDefaults_ValidatingWebhook.
        let obj = w.as_object_mut().expect("webhook is an object");
        obj.entry("failurePolicy").or_insert(json!("Fail"));
        obj.entry("matchPolicy").or_insert(json!("Equivalent"));
        obj.entry("namespaceSelector").or_insert(json!({}));
        obj.entry("objectSelector").or_insert(json!({}));
        obj.entry("timeoutSeconds").or_insert(json!(10));
        if let Some(rules) = obj.get_mut("rules").and_then(Value::as_array_mut) {
            for r in rules {
                if let Some(r) = r.as_object_mut() {
                    r.entry("scope").or_insert(json!("*"));
                }
            }
        }
    }
    errors
}

/// `metav1.LabelSelector` (matchLabels, matchExpressions) against a label set.
pub(crate) fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(m) = selector["matchLabels"].as_object() {
        if !m.iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str()) {
            return false;
        }
    }
    let exprs = selector["matchExpressions"].as_array().cloned().unwrap_or_default();
    exprs.iter().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let v = labels.get(key).map(String::as_str);
        match e["operator"].as_str() {
            Some("In") => v.is_some_and(|v| values.contains(&v)),
            Some("NotIn") => v.is_none_or(|v| !values.contains(&v)),
            Some("Exists") => v.is_some(),
            Some("DoesNotExist") => v.is_none(),
            _ => false,
        }
    })
}

pub(crate) fn labels_of(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(|v| v["metadata"]["labels"].as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn rule_matches(rule: &Value, r: &Request) -> bool {
    let has = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|a| a.iter().filter_map(Value::as_str).any(|x| x == "*" || x == want))
    };
    let resource_ok = rule["resources"].as_array().is_some_and(|a| {
        a.iter().filter_map(Value::as_str).any(|x| match (x, r.sub_resource) {
            ("*/*", _) => true,
            ("*", "") | ("pods", "") => true,
            ("pods/*", s) => !s.is_empty(),
            (x, s) if !s.is_empty() => x == format!("pods/{s}") || x == format!("*/{s}"),
            _ => false,
        })
    });
    let scope_ok = matches!(rule["scope"].as_str(), None | Some("*" | "Namespaced"));
    has("operations", r.operation) && has("apiGroups", "") && has("apiVersions", "v1") && resource_ok && scope_ok
}

/// The webhooks of every configuration, in the order they are called.
fn webhooks(state: &ClusterState) -> Vec<Value> {
    let store = state.store();
    let Some(def) = store.find_def("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations") else {
        return Vec::new();
    };
    let sdef = store.storage_def(&def.storage_key()).expect("storage definition");
    let table = store.table(&def.storage_key());
    let mut configs: Vec<Value> = table.values().map(|o| o.value(&sdef)).collect();
    configs.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
    configs
        .into_iter()
        .flat_map(|c| c["webhooks"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn namespace_labels(state: &ClusterState, ns: &str) -> BTreeMap<String, String> {
    let store = state.store();
    let mut labels = BTreeMap::new();
    if let Some(def) = store.find_def("", "v1", "namespaces") {
        if let Some(o) = store.get(&def.storage_key(), ns) {
            labels = o.labels.clone();
        }
    }
    labels.insert("kubernetes.io/metadata.name".into(), ns.into());
    labels
}

/// Runs every matching webhook; `Err` is the answer to the request, `Ok` the warnings the
/// webhooks returned (sent back as `Warning: 299` headers).
pub async fn admit(state: &Arc<ClusterState>, r: Request<'_>) -> ApiResult<Vec<String>> {
    let hooks = webhooks(state);
    let mut warnings = Vec::new();
    if hooks.is_empty() {
        return Ok(warnings);
    }
    let ns_labels = namespace_labels(state, r.namespace);
    let matching: Vec<Value> = hooks
        .into_iter()
        .filter(|w| {
            let rules = w["rules"].as_array().cloned().unwrap_or_default();
            let object_selector = &w["objectSelector"];
            rules.iter().any(|rule| rule_matches(rule, &r))
                && selects(&w["namespaceSelector"], &ns_labels)
                && (selects(object_selector, &labels_of(r.object.as_ref()))
                    || selects(object_selector, &labels_of(r.old_object.as_ref())))
        })
        .collect();
    // Validating webhooks are called in parallel (as the API server's dispatcher does);
    // the answers are then taken in order.
    let calls = matching.iter().map(|w| {
        let timeout = Duration::from_secs(w["timeoutSeconds"].as_u64().unwrap_or(10));
        let url = w["clientConfig"]["url"].as_str().unwrap_or_default().to_string();
        let ca = w["clientConfig"]["caBundle"].as_str().unwrap_or_default().to_string();
        let uid = uuid::Uuid::new_v4().to_string();
        let review = review(&r, &uid);
        let client = state.webhook_client.clone();
        async move {
            match tokio::time::timeout(timeout, call(&url, &ca, client.as_ref(), &review)).await {
                Ok(Ok(v)) => check_answer(v, &uid),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("Post {url:?}: context deadline exceeded")),
            }
        }
    });
    let answers = futures::future::join_all(calls).await;
    for (w, answer) in matching.iter().zip(answers) {
        let name = w["name"].as_str().unwrap_or_default().to_string();
        if let Ok(response) = &answer {
            warnings.extend(
                response["warnings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(String::from),
            );
        }
        match answer {
            Ok(response) if response["allowed"].as_bool() == Some(true) => {}
            Ok(response) => return Err(denied(&name, &response["status"])),
            Err(e) if w["failurePolicy"].as_str() == Some("Ignore") => {
                tracing::warn!(webhook = %name, error = %e, "failed calling webhook, failing open");
            }
            Err(e) => {
                return Err(ApiError::internal(format!(
                    "Internal error occurred: failed calling webhook \"{name}\": failed to call webhook: {e}"
                )))
            }
        }
    }
    Ok(warnings)
}

/// A `Warning` header value for an admission warning (RFC 7234 §5.5, code 299).
pub fn warning_header(text: &str) -> Option<http::HeaderValue> {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")).ok()
}

fn review(r: &Request, uid: &str) -> Value {
    let (group, version, kind) = r.kind;
    let resource = json!({"group": "", "version": "v1", "resource": "pods"});
    let kind = json!({"group": group, "version": version, "kind": kind});
    let mut req = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": r.name,
        "namespace": r.namespace,
        "operation": r.operation,
        "userInfo": {"username": r.user, "groups": ["system:authenticated"]},
        "object": r.object,
        "oldObject": r.old_object,
        "dryRun": false,
        "options": r.options,
    });
    if !r.sub_resource.is_empty() {
        req["subResource"] = json!(r.sub_resource);
        req["requestSubResource"] = json!(r.sub_resource);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
}

/// The `response` of a webhook's answer, checked as the apiserver checks it.
fn check_answer(v: Value, uid: &str) -> Result<Value, String> {
    if v["apiVersion"].as_str() != Some("admission.k8s.io/v1") || v["kind"].as_str() != Some("AdmissionReview") {
        return Err(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}",
            v["apiVersion"].as_str().unwrap_or_default(),
            v["kind"].as_str().unwrap_or_default()
        ));
    }
    let response = v.get("response").cloned().ok_or("webhook response was absent")?;
    let got = response["uid"].as_str().unwrap_or_default();
    if got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    Ok(response)
}

/// `webhookerrors.ToStatusErr`.
fn denied(webhook: &str, status: &Value) -> ApiError {
    let by = format!("admission webhook {webhook:?} denied the request");
    let code = status["code"].as_u64().unwrap_or(0).max(400) as u16;
    let message = match (status["message"].as_str(), status["reason"].as_str()) {
        (Some(m), _) if !m.is_empty() => format!("{by}: {m}"),
        (_, Some(r)) if !r.is_empty() => format!("{by}: {r}"),
        _ => format!("{by} without explanation"),
    };
    let reason: &'static str = match status["reason"].as_str().unwrap_or_default() {
        "Unauthorized" => "Unauthorized",
        "Forbidden" => "Forbidden",
        "NotFound" => "NotFound",
        "AlreadyExists" => "AlreadyExists",
        "Conflict" => "Conflict",
        "Gone" => "Gone",
        "Invalid" => "Invalid",
        "ServerTimeout" => "ServerTimeout",
        "Timeout" => "Timeout",
        "TooManyRequests" => "TooManyRequests",
        "BadRequest" => "BadRequest",
        "MethodNotAllowed" => "MethodNotAllowed",
        "NotAcceptable" => "NotAcceptable",
        "RequestEntityTooLarge" => "RequestEntityTooLarge",
        "UnsupportedMediaType" => "UnsupportedMediaType",
        "InternalError" => "InternalError",
        "Expired" => "Expired",
        "ServiceUnavailable" => "ServiceUnavailable",
        "" => "",
        // Passed through as the webhook sent it (a test's own reasons: leaked, bounded).
        other => Box::leak(other.to_string().into_boxed_str()),
    };
    let mut e = ApiError::new(code, reason, message);
    if let Some(d) = status.get("details").filter(|d| d.is_object()) {
        e = e.with_details(d.clone());
    }
    e
}

/// One HTTPS POST of `body` to `url`, the server verified against the PEM bundle `ca_b64`.
async fn call(url: &str, ca_b64: &str, client: Option<&ClientCert>, body: &Value) -> Result<Value, String> {
    let fail = |e: &dyn std::fmt::Display| format!("Post {url:?}: {e}");
    let uri: http::Uri = url.parse().map_err(|e| fail(&e))?;
    let host = uri.host().ok_or_else(|| fail(&"no host"))?.to_string();
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(443);
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|e| fail(&format!("caBundle is not base64: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).map_err(|e| fail(&format!("caBundle: {e}")))?;
    }
    if roots.is_empty() {
        return Err(fail(
            &"tls: failed to verify certificate: x509: certificate signed by unknown authority",
        ));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(c.certs.clone(), c.key.clone_key())
            .map_err(|e| fail(&e))?,
        None => builder.with_no_client_auth(),
    };
    let server_name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| fail(&e))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(&format!("dial tcp {host}:{port}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| fail(&format!("tls: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let req = http::Request::post(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|e| fail(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
    let status = resp.status();
    use http_body_util::BodyExt;
    let bytes = resp.into_body().collect().await.map_err(|e| fail(&e))?.to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the server responded with the status code {} but did not return more information",
            status.as_u16()
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| fail(&format!("decoding the response: {e}")))
}

/// The client certificate the API server presents to webhooks (what an
/// AdmissionConfiguration kubeconfig gives it).
#[derive(Debug)]
pub struct ClientCert {
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Clone for ClientCert {
    fn clone(&self) -> Self {
        ClientCert {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientCert {
    /// From PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<ClientCert> {
        use rustls::pki_types::pem::PemObject;
        Ok(ClientCert {
            certs: rustls_pemfile_certs(cert_pem.as_bytes()),
            key: rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?,
        })
    }
}

/// The certificates of a PEM bundle.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// The resource definition served for webhook configurations.
pub fn def() -> Arc<ResourceDef> {
    ResourceDef::new(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        "ValidatingWebhookConfiguration",
        false,
        false,
        &[],
        crate::resources::Flavor::Webhook,
        &[],
        None,
    )
}
