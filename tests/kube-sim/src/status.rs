//! `metav1.Status` errors, shaped exactly as kube-apiserver shapes them.
//!
//! Every failure the simulator answers with is an [`ApiError`]; the HTTP layer turns it into
//! a JSON `Status` body with the same `code`, `reason`, `message` and `details` a real
//! kube-apiserver would send, so clients (kube-rs's `Error::Api`, kubectl) behave as they do
//! against a cluster.

use serde_json::{json, Map, Value};

/// One API error: the HTTP code, the `Status.reason`, the message and optional details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<Value>>,
    /// Seconds for a `Retry-After` header (429 / 503 / 504).
    pub retry_after: Option<u64>,
    /// `metadata.continue` of the Status (an expired continue token's replacement).
    pub list_continue: Option<String>,
}

/// One `field.Error`: the field path, the error type (`Invalid value`, `Required value`, …)
/// and the rest of its body (the quoted bad value and the detail, already formatted; empty
/// when the type stands alone, as `field.Required(path, "")` renders).
pub type FieldError = (String, &'static str, String);

/// `field.Error.ErrorBody()`: the type, then `: <rest>` only when there is a rest.
fn error_body(cause_type: &str, rest: &str) -> String {
    if rest.is_empty() {
        cause_type.to_string()
    } else {
        format!("{cause_type}: {rest}")
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
            list_continue: None,
        }
    }

    pub fn with_empty_details(self) -> Self {
        self.with_details(json!({}))
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// `404 NotFound`: `pods "p1" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let qualified = qualified_resource(group, plural);
        ApiError::new(404, "NotFound", format!("{qualified} \"{name}\" not found"))
            .with_details(details(group, plural, name))
    }

    /// `409 AlreadyExists`: `pods "p1" already exists`.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let qualified = qualified_resource(group, plural);
        ApiError::new(409, "AlreadyExists", format!("{qualified} \"{name}\" already exists"))
            .with_details(details(group, plural, name))
    }

    /// `409 Conflict` for a stale `resourceVersion`.
    pub fn conflict_modified(group: &str, plural: &str, name: &str) -> Self {
        Self::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `409 Conflict`: `Operation cannot be fulfilled on pods "p1": <why>`.
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let qualified = qualified_resource(group, plural);
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
        )
        .with_details(details(group, plural, name))
    }

    /// `422 Invalid` with one field cause, as `errors.NewInvalid` builds it:
    /// `Lease.coordination.k8s.io "l1" is invalid: metadata.name: Invalid value: ...`.
    /// `kind` is the bare kind; the message qualifies it with the group.
    pub fn invalid(group: &str, kind: &str, name: &str, field: &str, cause_type: &'static str, detail: &str) -> Self {
        Self::invalid_fields(
            group,
            kind,
            name,
            &[(field.to_string(), cause_type, detail.to_string())],
        )
    }

    /// `422 Invalid` for a `field.ErrorList`: one cause per error, the message aggregating the
    /// distinct errors (`[a, b]` when there are several), as `ErrorList.ToAggregate` does.
    pub fn invalid_fields(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let mut parts: Vec<String> = Vec::new();
        for (field, cause_type, rest) in errors {
            let part = format!("{field}: {}", error_body(cause_type, rest));
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        let aggregate = match parts.as_slice() {
            [one] => one.clone(),
            _ => format!("[{}]", parts.join(", ")),
        };
        let message = format!("{} \"{name}\" is invalid: {aggregate}", qualified_resource(group, kind));
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        if !group.is_empty() {
            d.insert("group".into(), json!(group));
        }
        d.insert("kind".into(), json!(kind));
        let causes: Vec<Value> = errors
            .iter()
            .map(|(field, cause_type, rest)| {
                json!({ "reason": cause_reason(cause_type), "message": error_body(cause_type, rest), "field": field })
            })
            .collect();
        d.insert("causes".into(), json!(causes));
        ApiError::new(422, "Invalid", message).with_details(Value::Object(d))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// `415`, as `negotiation.NewUnsupportedMediaTypeError` answers (no details).
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// `404` for a path the simulator does not serve (the real server's answer to an unknown
    /// resource is also a bare 404 `NotFound`).
    pub fn path_not_found() -> Self {
        ApiError::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", message)
    }

    /// `410 Expired` (too old resource version / continue token).
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }

    /// The Status object as JSON.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": match &self.list_continue {
                Some(c) => json!({ "continue": c }),
                None => json!({}),
            },
            "status": "Failure",
            "message": self.message,
        });
        // `reason` is omitempty: errors that are no API status (StatusReasonUnknown) have none.
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if let Some(d) = &self.details {
            let mut d = (**d).clone();
            if let (Some(retry), Some(obj)) = (self.retry_after, d.as_object_mut()) {
                obj.insert("retryAfterSeconds".into(), json!(retry));
            }
            s["details"] = d;
        } else if let Some(retry) = self.retry_after {
            s["details"] = json!({ "retryAfterSeconds": retry });
        }
        s["code"] = json!(self.code);
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The `causes[].reason` of a `field.Error` type (`Invalid value` → `FieldValueInvalid`).
pub fn cause_reason(cause_type: &str) -> &'static str {
    match cause_type {
        "Required value" => "FieldValueRequired",
        "Forbidden" => "FieldValueForbidden",
        "Unsupported value" => "FieldValueNotSupported",
        "Duplicate value" => "FieldValueDuplicate",
        "Too long" => "FieldValueTooLong",
        "Not found" => "FieldValueNotFound",
        _ => "FieldValueInvalid",
    }
}

/// `pods` for the core group, `leases.coordination.k8s.io` otherwise (`GroupResource` and
/// `GroupKind` render alike: `Lease.coordination.k8s.io`).
pub fn qualified_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn details(group: &str, plural: &str, name: &str) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), json!(name));
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    d.insert("kind".into(), json!(plural));
    Value::Object(d)
}

/// A `Status` with `status: Success`, as returned by some deletes.
pub fn success_status(group: &str, plural: &str, name: &str, uid: &str) -> Value {
    let mut d = details(group, plural, name);
    d["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_renders_field_errors_as_new_invalid_does() {
        let e = ApiError::invalid_fields(
            "coordination.k8s.io",
            "Lease",
            "l",
            &[
                ("spec.a".into(), "Required value", String::new()),
                ("spec.a".into(), "Required value", String::new()),
                ("spec.b".into(), "Invalid value", "3: must be even".into()),
            ],
        );
        assert_eq!(
            e.message,
            r#"Lease.coordination.k8s.io "l" is invalid: [spec.a: Required value, spec.b: Invalid value: 3: must be even]"#,
            "ToAggregate drops repeated messages"
        );
        let d = e.details.expect("details");
        assert_eq!(
            (&d["kind"], &d["group"]),
            (&json!("Lease"), &json!("coordination.k8s.io"))
        );
        assert_eq!(d["causes"].as_array().map(Vec::len), Some(3), "every error is a cause");
        assert_eq!(
            d["causes"][0],
            json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.a"})
        );
        let core = ApiError::invalid("", "Pod", "p", "spec.containers", "Required value", "");
        assert_eq!(core.message, r#"Pod "p" is invalid: spec.containers: Required value"#);
        assert!(core.details.expect("details").get("group").is_none());
    }

    #[test]
    fn expired_status_carries_the_continue_token() {
        let mut e = ApiError::expired("too old");
        e.list_continue = Some("tok".into());
        let s = e.to_status();
        assert_eq!(s["metadata"], json!({"continue": "tok"}));
        assert!(s.get("details").is_none());
    }
}
