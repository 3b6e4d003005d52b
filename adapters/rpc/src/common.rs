//! Pieces the three registry adapters share: secrets read from files or the environment,
//! second-valued config fields, name checks for target parameters, the settle clock, and
//! evidence formatting.
//!
//! **Settle clock.** A registry entry that was just taken out may come back (the service's
//! own heartbeat re-registers it) and consumers apply a change only after a notification or
//! a poll. So an adapter reports `Drained` only after the drained state has held, unchanged,
//! for the configured settle window. `SettleClocks` keeps, per target, a *signature* of
//! the drained state (e.g. the override node's creation zxid) and when it was first seen;
//! a new signature restarts the clock. Clocks live in memory: after a gateway restart a
//! clock starts at the first call that sees the state, so a drain can only be confirmed
//! later than configured, never earlier.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_adapter::{AdapterError, Observation, Target, TrafficState};

/// Default settle window: long enough for registry notifications to reach consumers and
/// for a heartbeating service (typically 1–5 s intervals) to show that it re-registers.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(3);

/// Default bound on one call to a registry.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a secret comes from. Secrets are never written inline in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose content (trailing newline trimmed) is the secret, e.g. a mounted
    /// Kubernetes Secret.
    File(PathBuf),
    /// An environment variable of the gateway process.
    Env(String),
}

impl SecretSource {
    /// Builds the source from a `...File` / `...Env` pair of config fields; both set is
    /// an error.
    pub fn from_fields(field: &str, file: Option<PathBuf>, env: Option<String>) -> Result<Option<Self>, String> {
        match (file, env) {
            (Some(_), Some(_)) => Err(format!("set only one of `{field}File` and `{field}Env`")),
            (Some(path), None) => Ok(Some(SecretSource::File(path))),
            (None, Some(var)) => Ok(Some(SecretSource::Env(var))),
            (None, None) => Ok(None),
        }
    }

    /// Reads the secret now (files may be rotated, so callers read it at each login).
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
            SecretSource::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} (a secret) is not set"))
            }
        }
    }
}

/// Converts an optional `...Seconds` config value (`default` when absent).
pub(crate) fn seconds(field: &str, value: Option<f64>, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(v) => {
            Duration::try_from_secs_f64(v).map_err(|_| format!("`{field}` must be a non-negative number of seconds"))
        }
    }
}

/// Like [`seconds`], but zero is refused (timeouts).
pub(crate) fn positive_seconds(field: &str, value: Option<f64>, default: Duration) -> Result<Duration, String> {
    let d = seconds(field, value, default)?;
    if d.is_zero() {
        return Err(format!("`{field}` must be greater than 0"));
    }
    Ok(d)
}

/// Checks a registry name taken from a target parameter or the config: service names,
/// Dubbo interfaces, groups, namespaces. Names end up in keys, paths, JSON values and URLs,
/// so only `[A-Za-z0-9._:@-]` (and `/` where `slash` allows it) are accepted.
pub(crate) fn validate_name(what: &str, name: &str, slash: bool) -> Result<(), AdapterError> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@') || (slash && b == b'/')
        });
    if ok {
        Ok(())
    } else {
        Err(AdapterError::permanent(format!(
            "invalid {what} '{name}': only letters, digits, '.', '_', '-', ':', '@'{} are allowed",
            if slash { " and '/'" } else { "" }
        )))
    }
}

/// The target's required parameter `key`, checked with [`validate_name`] and against an
/// allow-list (empty: anything).
pub(crate) fn required_param<'t>(
    target: &'t Target,
    key: &str,
    adapter: &str,
    allowed: &[String],
) -> Result<&'t str, AdapterError> {
    let value = target.param(key).ok_or_else(|| {
        AdapterError::permanent(format!(
            "rpc target for pod {} has no `{key}` parameter (adapter '{adapter}')",
            target.pod
        ))
    })?;
    validate_name(key, value, true)?;
    if !allowed.is_empty() && !allowed.iter().any(|a| a == value) {
        return Err(AdapterError::permanent(format!(
            "{key} '{value}' is not in the allow-list of rpc adapter '{adapter}'"
        )));
    }
    Ok(value)
}

/// Per-target settle clocks, keyed by a target key; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct SettleClocks {
    clocks: Mutex<HashMap<String, (String, Instant)>>,
}

impl SettleClocks {
    /// How long the drained state with `signature` has held for `key`; a new signature
    /// (or none before) starts the clock now.
    pub fn held_for(&self, key: &str, signature: &str) -> Duration {
        let mut clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        let entry = clocks
            .entry(key.to_string())
            .or_insert_with(|| (signature.to_string(), Instant::now()));
        if entry.0 != signature {
            *entry = (signature.to_string(), Instant::now());
        }
        entry.1.elapsed()
    }

    /// Forgets `key` (the target left the drained state).
    pub fn reset(&self, key: &str) {
        self.clocks.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// A duration for evidence: `850 ms`, `3.0 s`.
pub(crate) fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Settle evidence suffix and what remains of the window.
pub(crate) fn settle_status(held: Duration, settle: Duration) -> (bool, String, Option<Duration>) {
    if held >= settle {
        (
            true,
            format!("stable for {} (settle window {})", human(held), human(settle)),
            None,
        )
    } else {
        let left = settle - held;
        (
            false,
            format!("settling: stable for {} of {}", human(held), human(settle)),
            Some(left),
        )
    }
}

/// The observation of a drained state that has held for `held`: `Drained` once the settle
/// window is over, else `Draining` with the time left; `evidence` is followed by the
/// settle text.
pub(crate) fn settled_observation(held: Duration, settle: Duration, evidence: &str) -> Observation {
    let (done, text, remaining) = settle_status(held, settle);
    let state = if done {
        TrafficState::Drained
    } else {
        TrafficState::Draining
    };
    let mut obs = Observation::new(state, format!("{evidence}; {text}"));
    obs.remaining = remaining;
    obs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_one_source() {
        assert!(SecretSource::from_fields("password", Some("/x".into()), Some("X".into())).is_err());
        assert_eq!(SecretSource::from_fields("password", None, None), Ok(None));
        let dir = std::env::temp_dir().join(format!("sluice-rpc-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let src = SecretSource::from_fields("password", Some(dir.clone()), None)
            .unwrap()
            .unwrap();
        assert_eq!(src.read().unwrap(), "s3cret");
        std::fs::remove_file(&dir).unwrap();
        assert!(src.read().unwrap_err().contains("cannot read secret file"));
        let missing = SecretSource::Env("SLUICE_RPC_TEST_SURELY_UNSET".into());
        assert!(missing.read().unwrap_err().contains("is not set"));
    }

    #[test]
    fn names() {
        assert!(validate_name("service", "com.example.Greeter", false).is_ok());
        assert!(validate_name("service", "DEFAULT_GROUP@@svc", false).is_ok());
        assert!(validate_name("service", "a/b", false).is_err());
        assert!(validate_name("service", "a/b", true).is_ok());
        for bad in ["", "a b", "a\"b", "a{b}", "a\nb", "a?b=c"] {
            assert!(validate_name("service", bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn settle_clock_restarts_on_a_new_signature() {
        let clocks = SettleClocks::default();
        let first = clocks.held_for("t", "a");
        std::thread::sleep(Duration::from_millis(20));
        assert!(clocks.held_for("t", "a") >= first + Duration::from_millis(20));
        assert!(clocks.held_for("t", "b") < Duration::from_millis(10));
        clocks.reset("t");
        assert!(clocks.held_for("t", "b") < Duration::from_millis(10));
        let (done, text, left) = settle_status(Duration::from_millis(100), Duration::from_millis(300));
        assert!(!done && text.contains("100 ms of 300 ms") && left == Some(Duration::from_millis(200)));
        assert!(settle_status(Duration::from_secs(4), Duration::from_secs(3)).0);
    }
}
