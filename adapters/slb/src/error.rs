//! Runtime API errors: HAProxy's free-text answers mapped to a typed [`RuntimeError`],
//! each converting into a [`sluice_adapter::AdapterError`] that says whether retrying can
//! help. The texts are the ones HAProxy 2.6.12 really prints (captured on this machine):
//!
//! | what happened | HAProxy 2.6 text | class |
//! |---|---|---|
//! | socket missing / connection refused / reset / timeout | (io error) | retryable |
//! | `EACCES` opening the unix socket | (io error) | permanent |
//! | socket `level` too low for the command | `Permission denied` | permanent |
//! | command unknown to this HAProxy | `Unknown command, but maybe one of the following ones is a better match:` | permanent |
//! | unknown backend | `No such backend.` (set/add/del server), `Can't find backend.` (show servers), `No such proxy.` (show stat) | permanent |
//! | unknown server | `No such server.` | permanent |
//! | `add server` of an existing name | `Already exists a server with the same name in backend.` | permanent |
//! | `del server` too early | `Only servers in maintenance mode can be deleted.`, `Server still has connections attached to it, cannot remove it.` | retryable |
//! | anything else a write command prints (e.g. `unknown keyword 'x'.`) | (the text) | permanent |
//!
//! Successful write commands print nothing, except `add server` (`New server registered.`)
//! and `del server` (`Server deleted.`).

use std::time::Duration;

use sluice_adapter::AdapterError;

/// A runtime API call failed.
///
/// Common fields: `endpoint` is the socket (`unix:/path`, `tcp:ip:port`), `command` the
/// command line sent, `backend` / `server` what it was about (`?` when not known),
/// `message` / `reason` HAProxy's text or the I/O error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The socket is missing, refused the connection or broke mid-call.
    #[error("HAProxy runtime API at {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// No complete answer within the per-call timeout.
    #[error("HAProxy runtime API at {endpoint} did not answer `{command}` within {timeout:?}")]
    Timeout {
        endpoint: String,
        command: String,
        timeout: Duration,
    },
    /// `EACCES` opening the unix socket.
    #[error(
        "permission denied opening the HAProxy runtime API socket {endpoint}: the gateway's user may not \
         access it (check the socket's owner and `mode`)"
    )]
    AccessDenied { endpoint: String },
    /// HAProxy answered `Permission denied`: the socket's `level` is below what the command needs.
    #[error(
        "HAProxy at {endpoint} refused `{command}`: Permission denied (the stats socket level is too low; \
         Sluice needs `level admin`)"
    )]
    LevelTooLow { endpoint: String, command: String },
    /// HAProxy does not know the command.
    #[error("HAProxy at {endpoint} does not know the command `{command}` (Sluice needs HAProxy 2.6 or later)")]
    UnknownCommand { endpoint: String, command: String },
    /// The backend does not exist.
    #[error("backend '{backend}' not found in HAProxy at {endpoint}")]
    NoSuchBackend { endpoint: String, backend: String },
    /// The server does not exist in the backend.
    #[error("server '{backend}/{server}' not found in HAProxy at {endpoint}")]
    NoSuchServer {
        endpoint: String,
        backend: String,
        server: String,
    },
    /// `add server` of a name that already exists.
    #[error("server '{backend}/{server}' already exists in HAProxy at {endpoint}")]
    AlreadyExists {
        endpoint: String,
        backend: String,
        server: String,
    },
    /// `del server` refused for now (not in maintenance, or connections still attached).
    #[error("HAProxy at {endpoint} cannot delete server '{backend}/{server}' yet: {message}")]
    ServerBusy {
        endpoint: String,
        backend: String,
        server: String,
        message: String,
    },
    /// Any other refusal HAProxy printed.
    #[error("HAProxy at {endpoint} refused `{command}`: {message}")]
    Rejected {
        endpoint: String,
        command: String,
        message: String,
    },
    /// A backend or server name HAProxy would not accept (and that could inject commands).
    #[error("invalid HAProxy {what} name '{name}': only letters, digits, '.', ':', '_' and '-' are allowed")]
    InvalidName { what: &'static str, name: String },
    /// The answer could not be parsed.
    #[error("cannot parse HAProxy's answer to `{command}` from {endpoint}: {reason}")]
    Malformed {
        endpoint: String,
        command: String,
        reason: String,
    },
}

impl RuntimeError {
    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RuntimeError::Unreachable { .. } | RuntimeError::Timeout { .. } | RuntimeError::ServerBusy { .. }
        )
    }
}

impl From<RuntimeError> for AdapterError {
    fn from(e: RuntimeError) -> Self {
        if e.is_retryable() {
            AdapterError::retryable(e.to_string())
        } else {
            AdapterError::permanent(e.to_string())
        }
    }
}

/// Checks a backend or server name the way HAProxy does (`[A-Za-z0-9._:-]+`). Names are
/// pasted into command lines, so this also keeps `;`, spaces and newlines out.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// One call, to name it in errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub endpoint: &'a str,
    pub command: &'a str,
    pub backend: Option<&'a str>,
    pub server: Option<&'a str>,
}

/// Texts a successful write command may print.
const SUCCESS_TEXTS: &[&str] = &["New server registered.", "Server deleted."];

/// Checks a read-only command's answer: known error texts on its first line are errors.
pub(crate) fn check_query(answer: &str, call: Call<'_>) -> Result<(), RuntimeError> {
    if answer.trim().is_empty() {
        return Err(RuntimeError::Unreachable {
            endpoint: call.endpoint.to_string(),
            reason: format!("connection closed without an answer to `{}`", call.command),
        });
    }
    match answer
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .and_then(|l| known_error(l, call))
    {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Checks a write command's answer (possibly several `;`-separated commands): every
/// non-empty line but the known success texts is an error.
pub(crate) fn check_command(answer: &str, call: Call<'_>) -> Result<(), RuntimeError> {
    match answer
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !SUCCESS_TEXTS.contains(l))
    {
        None => Ok(()),
        Some(text) => Err(known_error(text, call).unwrap_or_else(|| RuntimeError::Rejected {
            endpoint: call.endpoint.to_string(),
            command: call.command.to_string(),
            message: text.to_string(),
        })),
    }
}

fn known_error(text: &str, call: Call<'_>) -> Option<RuntimeError> {
    let endpoint = call.endpoint.to_string();
    let backend = call.backend.unwrap_or("?").to_string();
    let server = call.server.unwrap_or("?").to_string();
    let command = call.command.to_string();
    Some(match text {
        t if t.starts_with("Unknown command") => RuntimeError::UnknownCommand { endpoint, command },
        "Permission denied" => RuntimeError::LevelTooLow { endpoint, command },
        "No such backend." | "Can't find backend." | "No such proxy." => {
            RuntimeError::NoSuchBackend { endpoint, backend }
        }
        "No such server." => RuntimeError::NoSuchServer {
            endpoint,
            backend,
            server,
        },
        t if t.starts_with("Already exists a server") => RuntimeError::AlreadyExists {
            endpoint,
            backend,
            server,
        },
        t if t.starts_with("Only servers in maintenance mode") || t.contains("still has connections") => {
            RuntimeError::ServerBusy {
                endpoint,
                backend,
                server,
                message: text.to_string(),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: Call<'static> = Call {
        endpoint: "unix:/x.sock",
        command: "set server web/s1 state drain",
        backend: Some("web"),
        server: Some("s1"),
    };

    fn query(answer: &str) -> Result<(), RuntimeError> {
        check_query(answer, CALL)
    }

    fn command(answer: &str) -> Result<(), RuntimeError> {
        check_command(answer, CALL)
    }

    #[test]
    fn real_haproxy_2_6_answers() {
        assert!(command("\n").is_ok());
        assert!(command("\n\n\n").is_ok(), "three `;`-separated successes");
        assert!(command("New server registered.\n").is_ok());
        assert!(command("Server deleted.\n").is_ok());
        for text in ["No such backend.\n\n", "Can't find backend.\n\n", "No such proxy.\n\n"] {
            let e = query(text).unwrap_err();
            assert_eq!(e.to_string(), "backend 'web' not found in HAProxy at unix:/x.sock");
        }
        assert!(matches!(
            command("No such server.\n\n"),
            Err(RuntimeError::NoSuchServer { .. })
        ));
        assert!(matches!(
            command("Permission denied\n\n"),
            Err(RuntimeError::LevelTooLow { .. })
        ));
        let unknown = "Unknown command, but maybe one of the following ones is a better match:\n  help\n";
        assert!(matches!(query(unknown), Err(RuntimeError::UnknownCommand { .. })));
        let exists = "Already exists a server with the same name in backend.\n";
        assert!(matches!(command(exists), Err(RuntimeError::AlreadyExists { .. })));
        for busy in [
            "Only servers in maintenance mode can be deleted.\n",
            "Server still has connections attached to it, cannot remove it.\n",
        ] {
            let e = command(busy).unwrap_err();
            assert!(e.is_retryable() && matches!(e, RuntimeError::ServerBusy { .. }), "{e}");
        }
        let e = command("unknown keyword 'bogus'.\n").unwrap_err();
        assert!(
            !e.is_retryable() && e.to_string().contains("unknown keyword 'bogus'"),
            "{e}"
        );
        assert!(
            query("").unwrap_err().is_retryable(),
            "an empty answer to a show command"
        );
        assert!(query("1\n# be_id be_name\n\n").is_ok());
    }

    #[test]
    fn classes() {
        let retryable = |x: RuntimeError| AdapterError::from(x).is_retryable();
        assert!(retryable(RuntimeError::Unreachable {
            endpoint: "x".into(),
            reason: "refused".into()
        }));
        assert!(!retryable(RuntimeError::AccessDenied { endpoint: "x".into() }));
        assert!(!retryable(RuntimeError::NoSuchBackend {
            endpoint: "x".into(),
            backend: "b".into()
        }));
        assert!(!retryable(RuntimeError::LevelTooLow {
            endpoint: "x".into(),
            command: "c".into()
        }));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("backend", "be_web-1.x:y").is_ok());
        for bad in ["", "a b", "a;shutdown sessions", "a/b", "a\nb"] {
            assert!(validate_name("backend", bad).is_err(), "{bad:?}");
        }
    }
}
