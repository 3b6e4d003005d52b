//! A small Nacos Open API client over hyper (plain HTTP/1.1): form-encoded requests, the
//! `{"code":0,"message":"success","data":...}` envelope of Nacos 2.x, and the optional
//! login (`POST /nacos/v1/auth/login` → `accessToken`, appended to every request as the
//! docs say).
//!
//! | what happened | class |
//! |---|---|
//! | connection refused / reset, no answer within the timeout, HTTP 5xx | retryable |
//! | HTTP 401/403 (after one fresh login when logging in), login refused | permanent: credentials |
//! | any other error code | returned to the adapter as a `Reply` to judge |
//!
//! The token is cached until 90 % of its `tokenTtl`; the password is read again at each
//! login, so a rotated password file takes effect without a restart.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sluice_adapter::AdapterError;
use tokio::sync::Mutex;

use crate::common::human;
use crate::nacos::config::{Auth, NacosSettings};

/// A decoded Nacos answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    /// The envelope's `code` (`0`: success; `-1` when the body was not an envelope).
    pub code: i64,
    pub message: String,
    pub data: Value,
}

impl Reply {
    /// Nacos' own words for an error: `message: data`.
    pub fn text(&self) -> String {
        match &self.data {
            Value::String(s) if self.message.is_empty() => s.clone(),
            Value::String(s) => format!("{}: {s}", self.message),
            Value::Null => self.message.clone(),
            other => format!("{}: {other}", self.message),
        }
    }

    /// The resource (instance) does not exist: HTTP 404, code 20004 or 21003.
    pub fn not_found(&self) -> bool {
        self.status == 404 || matches!(self.code, 20004 | 21003)
    }

    /// The service does not exist: code 21008, or a not-found that says so.
    pub fn service_missing(&self) -> bool {
        self.code == 21008 || (self.not_found() && self.text().contains("service not found"))
    }
}

/// A cached access token.
#[derive(Debug, Clone)]
struct Token {
    value: String,
    refresh_at: Option<Instant>,
}

/// The HTTP client of one adapter instance.
pub(crate) struct NacosClient {
    settings: NacosSettings,
    http: Client<HttpConnector, Full<Bytes>>,
    token: Mutex<Option<Token>>,
}

impl std::fmt::Debug for NacosClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NacosClient")
            .field("server", &self.settings.authority)
            .finish()
    }
}

/// `application/x-www-form-urlencoded` (`[A-Za-z0-9-._~]` kept, space → `+`).
pub(crate) fn form_encode(params: &[(&str, String)]) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl NacosClient {
    pub fn new(settings: NacosSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.timeout));
        NacosClient {
            http: Client::builder(TokioExecutor::new()).build(connector),
            settings,
            token: Mutex::new(None),
        }
    }

    /// `Nacos at http://host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("Nacos at http://{}", self.settings.authority)
    }

    /// Sends one request; `params` go into the query (GET) or the form body (PUT/POST).
    async fn send(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
        token: Option<&str>,
    ) -> Result<Reply, AdapterError> {
        let mut query = Vec::new();
        let body = if method == Method::GET {
            query.extend(params.iter().cloned());
            String::new()
        } else {
            form_encode(params)
        };
        if let Some(token) = token {
            query.push(("accessToken", token.to_string()));
        }
        let mut uri = format!("http://{}{}{path}", self.settings.authority, self.settings.context_path);
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(&form_encode(&query));
        }
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::USER_AGENT, "sluice-adapter-rpc")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AdapterError::permanent(format!("{}: cannot build request {path}: {e}", self.describe())))?;
        let exchange = async {
            let response = self.http.request(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(self.settings.timeout, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(AdapterError::retryable(format!(
                    "{} is unreachable ({method} {path}): {}",
                    self.describe(),
                    error_chain(e.as_ref())
                )))
            }
            Err(_) => {
                return Err(AdapterError::retryable(format!(
                    "{} did not answer {method} {path} within {}",
                    self.describe(),
                    human(self.settings.timeout)
                )))
            }
        };
        Ok(decode(status, &bytes))
    }

    /// Calls the Open API with authentication; HTTP 5xx is retryable, 401/403 permanent.
    pub async fn call(&self, method: Method, path: &str, params: &[(&str, String)]) -> Result<Reply, AdapterError> {
        let mut fresh_login = false;
        loop {
            let token = self.token(fresh_login).await?;
            let reply = self.send(method.clone(), path, params, token.as_deref()).await?;
            if reply.status == 401 || reply.status == 403 {
                if matches!(self.settings.auth, Auth::Login { .. }) && !fresh_login {
                    fresh_login = true; // the token may have expired: log in once more
                    continue;
                }
                let hint = match self.settings.auth {
                    Auth::None => {
                        "Nacos requires authentication: configure `username` + `passwordFile`/`passwordEnv` \
                                   or an access token"
                    }
                    Auth::Login { .. } => "the user lacks permission on this namespace/service",
                    Auth::Token(_) => "the access token is invalid, expired or lacks permission",
                };
                return Err(AdapterError::permanent(format!(
                    "{} refused {method} {path} (HTTP {}: {}); {hint}",
                    self.describe(),
                    reply.status,
                    reply.text()
                )));
            }
            if reply.status >= 500 {
                return Err(AdapterError::retryable(format!(
                    "{} failed {method} {path} (HTTP {}: {})",
                    self.describe(),
                    reply.status,
                    reply.text()
                )));
            }
            return Ok(reply);
        }
    }

    /// The access token to send, logging in when needed (or when `renew`).
    async fn token(&self, renew: bool) -> Result<Option<String>, AdapterError> {
        let (user, password) = match &self.settings.auth {
            Auth::None => return Ok(None),
            Auth::Token(source) => {
                return source
                    .read()
                    .map(Some)
                    .map_err(|e| AdapterError::permanent(format!("{}: {e}", self.describe())))
            }
            Auth::Login { user, password } => (user, password),
        };
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if !renew && t.refresh_at.is_none_or(|at| Instant::now() < at) {
                return Ok(Some(t.value.clone()));
            }
        }
        let password = password
            .read()
            .map_err(|e| AdapterError::permanent(format!("{}: {e}", self.describe())))?;
        let params = [("username", user.clone()), ("password", password)];
        let reply = self.send(Method::POST, "/v1/auth/login", &params, None).await?;
        if reply.status >= 500 {
            return Err(AdapterError::retryable(format!(
                "{} failed the login (HTTP {}: {})",
                self.describe(),
                reply.status,
                reply.text()
            )));
        }
        let token = reply.data["accessToken"].as_str().map(str::to_string);
        let Some(value) = token.filter(|_| reply.status == 200) else {
            return Err(AdapterError::permanent(format!(
                "{} rejected the login of user '{user}' (HTTP {}: {}): check `username` and the password source",
                self.describe(),
                reply.status,
                reply.text()
            )));
        };
        let refresh_at = reply.data["tokenTtl"]
            .as_u64()
            .map(|ttl| Instant::now() + Duration::from_secs(ttl).mul_f64(0.9));
        *cached = Some(Token {
            value: value.clone(),
            refresh_at,
        });
        Ok(Some(value))
    }
}

/// Decodes a body: the 2.x envelope, the bare login answer, or plain text.
fn decode(status: StatusCode, bytes: &[u8]) -> Reply {
    let status = status.as_u16();
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) if map.contains_key("code") && map.contains_key("data") => Reply {
            status,
            code: map.get("code").and_then(Value::as_i64).unwrap_or(-1),
            message: map
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            data: map.get("data").cloned().unwrap_or(Value::Null),
        },
        Ok(other) => Reply {
            status,
            code: if status == 200 { 0 } else { -1 },
            message: String::new(),
            data: other,
        },
        Err(_) => Reply {
            status,
            code: -1,
            message: String::new(),
            data: Value::String(String::from_utf8_lossy(bytes).trim().chars().take(300).collect()),
        },
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_forms() {
        let p = [("metadata", r#"{"a":"b c"}"#.to_string()), ("ip", "10.0.0.7".into())];
        assert_eq!(form_encode(&p), "metadata=%7B%22a%22%3A%22b+c%22%7D&ip=10.0.0.7");
    }

    #[test]
    fn decodes_envelopes_and_errors() {
        let ok = decode(StatusCode::OK, br#"{"code":0,"message":"success","data":true}"#);
        assert_eq!((ok.code, ok.data.clone()), (0, Value::Bool(true)));
        let missing = decode(
            StatusCode::NOT_FOUND,
            br#"{"code":20004,"message":"resource not found","data":"no matched ip found!"}"#,
        );
        assert!(missing.not_found() && !missing.service_missing());
        assert_eq!(missing.text(), "resource not found: no matched ip found!");
        let svc = decode(
            StatusCode::BAD_REQUEST,
            br#"{"code":21008,"message":"service not exist","data":"service not found, namespace: public"}"#,
        );
        assert!(svc.service_missing());
        let login = decode(
            StatusCode::OK,
            br#"{"accessToken":"t","tokenTtl":18000,"globalAdmin":true}"#,
        );
        assert_eq!((login.code, login.data["accessToken"].as_str()), (0, Some("t")));
        let text = decode(StatusCode::FORBIDDEN, b"unknown user!");
        assert_eq!((text.code, text.text()), (-1, "unknown user!".to_string()));
    }
}
