//! `authentication.k8s.io/v1` TokenReview, as kube-apiserver answers it for ServiceAccount
//! tokens: `POST /apis/authentication.k8s.io/v1/tokenreviews` → `201 Created`, the review
//! echoed with its `status` filled in.
//!
//! Tokens are issued by the simulator ([`crate::Cluster::issue_service_account_token`],
//! what the TokenRequest API gives a pod). A review of an issued token whose audiences meet
//! the asked ones answers `authenticated: true` with the ServiceAccount's user name, UID and
//! groups; anything else answers `user: {}` and an `error` (never a failed request), as the
//! API server does. An empty token is a 400, and so is a review sent to a namespace.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::status::{ApiError, ApiResult};

/// The API server's own audience, used when a review names none (`--api-audiences`
/// defaults to the service account issuer).
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// One issued token.
#[derive(Debug, Clone)]
struct Issued {
    namespace: String,
    service_account: String,
    uid: String,
    audiences: Vec<String>,
}

/// Tokens issued so far.
#[derive(Debug, Default)]
pub struct ServiceAccountTokens(Mutex<HashMap<String, Issued>>);

impl ServiceAccountTokens {
    /// Issues a token for `namespace/service_account`, valid for `audiences` (none: the
    /// API server's default audience).
    pub fn issue(&self, namespace: &str, service_account: &str, audiences: &[&str]) -> String {
        let token = format!("sa-{}", uuid::Uuid::new_v4().simple());
        let audiences = if audiences.is_empty() {
            vec![DEFAULT_AUDIENCE.to_string()]
        } else {
            audiences.iter().map(|a| a.to_string()).collect()
        };
        let issued = Issued {
            namespace: namespace.into(),
            service_account: service_account.into(),
            uid: uuid::Uuid::new_v4().to_string(),
            audiences,
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), issued);
        token
    }

    /// Revokes a token (the ServiceAccount or the pod bound to it was deleted).
    pub fn revoke(&self, token: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(token);
    }

    /// Answers a TokenReview body: the review with its status.
    pub fn review(&self, namespace: Option<&str>, body: &[u8]) -> ApiResult<Value> {
        if namespace.is_some() {
            return Err(ApiError::bad_request("namespace is not allowed on this type"));
        }
        let mut review: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body of the request was in an unknown format: {e}")))?;
        if review["kind"] != "TokenReview" || review["apiVersion"] != "authentication.k8s.io/v1" {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version (authentication.k8s.io/v1)",
                review["apiVersion"].as_str().unwrap_or("")
            )));
        }
        let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
        if token.is_empty() {
            return Err(ApiError::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let wanted: Vec<String> = review["spec"]["audiences"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        let asked = if wanted.is_empty() {
            vec![DEFAULT_AUDIENCE.to_string()]
        } else {
            wanted.clone()
        };
        let issued = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&token).cloned();
        let status = match issued {
            None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
            Some(i) => {
                let meet: Vec<&String> = i.audiences.iter().filter(|a| asked.contains(a)).collect();
                if meet.is_empty() {
                    json!({"user": {}, "error": format!(
                        "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                        i.audiences, asked
                    )})
                } else {
                    let mut status = json!({
                        "authenticated": true,
                        "user": {
                            "username": format!("system:serviceaccount:{}:{}", i.namespace, i.service_account),
                            "uid": i.uid,
                            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", i.namespace), "system:authenticated"],
                        },
                    });
                    // The audiences are echoed only when the review asked for some.
                    if !wanted.is_empty() {
                        status["audiences"] = json!(meet);
                    }
                    status
                }
            }
        };
        review["metadata"] = json!({"creationTimestamp": null});
        review["status"] = status;
        Ok(review)
    }
}
