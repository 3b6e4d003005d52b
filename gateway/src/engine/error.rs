//! The executor's errors, typed so the worker can tell a failure worth retrying soon
//! (a backend or the API server briefly unavailable) from one a person must fix (an
//! unknown backend, a permission, a pod that is gone), as controller-rs's `error_policy`
//! and pingora's retry flag do.

use std::time::Duration;

use sluice_adapter::AdapterError;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The adapter answered with an error; it says whether a retry helps.
    #[error("adapter {adapter}: {source}")]
    Adapter {
        adapter: String,
        #[source]
        source: AdapterError,
    },
    /// The adapter did not answer within the call timeout.
    #[error("adapter {adapter}: no answer within {after:?}")]
    Timeout { adapter: String, after: Duration },
    /// A write to the pod failed (or was refused: an unreadable ledger is never
    /// overwritten).
    #[error("writing the pod: {0}")]
    Write(#[from] crate::k8s::WriteError),
}

impl StepError {
    /// Whether retrying soon can help. Permanent failures become a blocked reason (an
    /// Event once) and are retried slowly.
    pub fn is_retryable(&self) -> bool {
        match self {
            StepError::Adapter { source, .. } => source.is_retryable(),
            StepError::Timeout { .. } => true,
            StepError::Write(e) => e.is_retryable(),
        }
    }
}

/// Runs one adapter call with the call timeout, typing its failure.
pub async fn bounded<T>(
    adapter: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = sluice_adapter::Result<T>>,
) -> Result<T, StepError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(StepError::Adapter {
            adapter: adapter.to_string(),
            source,
        }),
        Err(_) => Err(StepError::Timeout {
            adapter: adapter.to_string(),
            after: timeout,
        }),
    }
}

/// The `result` label of an adapter call: `ok`, `retryable` or `permanent`.
pub fn outcome<T>(r: &Result<T, StepError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) if e.is_retryable() => "retryable",
        Err(_) => "permanent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_follows_the_cause() {
        let adapter = |e: AdapterError| StepError::Adapter {
            adapter: "lb".into(),
            source: e,
        };
        assert!(adapter(AdapterError::retryable("socket refused")).is_retryable());
        assert!(!adapter(AdapterError::permanent("no such backend")).is_retryable());
        assert!(StepError::Timeout {
            adapter: "lb".into(),
            after: Duration::from_secs(1)
        }
        .is_retryable());
        let api = |code: u16| {
            StepError::Write(crate::k8s::WriteError::Kube(kube::Error::Api(Box::new(
                kube::core::Status::failure("x", "y").with_code(code),
            ))))
        };
        assert!(api(409).is_retryable());
        assert!(api(503).is_retryable());
        assert!(!api(403).is_retryable(), "a permission must be fixed");
        assert!(!api(404).is_retryable(), "the pod is gone");
    }
}
