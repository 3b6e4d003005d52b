//! DNS and PowerDNS API errors: every way a call can fail, as a typed [`DnsError`] that
//! converts into a [`sluice_adapter::AdapterError`] saying whether retrying can help.
//!
//! The RCODEs are the ones BIND 9.18 really returns (checked with `nsupdate` and in the
//! tests):
//!
//! | what happened | BIND 9.18 answer | class |
//! |---|---|---|
//! | wrong TSIG secret | `NOTAUTH` + TSIG error `BADSIG` (unsigned) | permanent |
//! | TSIG key unknown to the server | `NOTAUTH` + TSIG error `BADKEY` | permanent |
//! | clocks too far apart | `NOTAUTH` + TSIG error `BADTIME` | permanent |
//! | key not in the zone's `allow-update` | `REFUSED` | permanent |
//! | UPDATE for a zone the server does not serve | `NOTAUTH` | permanent |
//! | query for a zone the server does not serve | `REFUSED` (or a non-authoritative answer) | permanent |
//! | zone not loaded yet (a secondary before its first transfer) | `SERVFAIL` | retryable |
//! | nothing listens (ICMP port unreachable), no answer within the timeout | (I/O) | retryable |
//! | an UPDATE prerequisite failed (someone changed the RRset meanwhile) | `NXRRSET` / `YXRRSET` | retried inside the adapter |

use std::net::SocketAddr;
use std::time::Duration;

use sluice_adapter::AdapterError;

/// A DNS exchange or PowerDNS API call failed.
///
/// `server` is the `ip:port` that was asked, `zone` the zone the call was about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// Nothing listens, the connection broke, or the socket failed.
    #[error("DNS server {server} is unreachable: {reason}")]
    Unreachable { server: SocketAddr, reason: String },
    /// No answer within the per-query timeout.
    #[error("DNS server {server} did not answer {what} within {timeout:?}")]
    Timeout {
        server: SocketAddr,
        what: String,
        timeout: Duration,
    },
    /// The server does not recognise the signature: the secret differs from the server's.
    #[error(
        "DNS server {server} rejected the TSIG signature of key '{key}' (BADSIG): the secret does not match the \
         server's copy of the key"
    )]
    BadSig { server: SocketAddr, key: String },
    /// The server does not know the key name or algorithm.
    #[error("DNS server {server} does not know TSIG key '{key}' (BADKEY): check the key name and algorithm")]
    BadKey { server: SocketAddr, key: String },
    /// The signature's time is outside the server's fudge window.
    #[error("DNS server {server} rejected TSIG key '{key}' with BADTIME: the clocks differ by more than the fudge")]
    BadTime { server: SocketAddr, key: String },
    /// The answer's own TSIG signature did not verify.
    #[error("the answer from {server} failed TSIG verification: {reason}")]
    BadResponseSignature { server: SocketAddr, reason: String },
    /// The key is valid but not allowed to update the zone.
    #[error("update refused by {server} for zone {zone}: check allow-update / update-policy for the key")]
    UpdateRefused { server: SocketAddr, zone: String },
    /// The server is not authoritative for the zone (it does not serve it).
    #[error("zone {zone} is not served by {server} ({rcode}): check the zone name and the server")]
    ZoneNotServed {
        server: String,
        zone: String,
        rcode: String,
    },
    /// The server answered SERVFAIL (e.g. a secondary that has not loaded the zone yet).
    #[error("DNS server {server} answered SERVFAIL for {what} (zone not loaded yet, or a server-side failure)")]
    ServFail { server: SocketAddr, what: String },
    /// An UPDATE prerequisite failed: the RRset changed between our read and our update.
    #[error("the RRset {what} changed on {server} while Sluice updated it ({rcode})")]
    PrerequisiteFailed {
        server: SocketAddr,
        what: String,
        rcode: String,
    },
    /// Any other RCODE, or an answer that could not be decoded.
    #[error("DNS server {server} answered {what} with {detail}")]
    Unexpected {
        server: SocketAddr,
        what: String,
        detail: String,
    },
    /// A PowerDNS API call failed at the transport level (connect, reset, timeout).
    #[error("PowerDNS API at {url} is unreachable: {reason}")]
    ApiUnreachable { url: String, reason: String },
    /// The PowerDNS API refused the API key.
    #[error("PowerDNS API at {url} rejected the API key ({status}): check `apiKeyFile` / `apiKeyEnv`")]
    ApiKeyRejected { url: String, status: u16 },
    /// The PowerDNS API answered with an error status.
    #[error("PowerDNS API {method} {url} answered {status}: {body}")]
    ApiStatus {
        method: String,
        url: String,
        status: u16,
        body: String,
    },
}

impl DnsError {
    /// Whether retrying later can help (the component was unreachable, busy or mid-change).
    pub fn is_retryable(&self) -> bool {
        match self {
            DnsError::Unreachable { .. }
            | DnsError::Timeout { .. }
            | DnsError::ServFail { .. }
            | DnsError::PrerequisiteFailed { .. }
            | DnsError::ApiUnreachable { .. } => true,
            // 5xx: PowerDNS or its backend had a problem; 4xx: a person must act.
            DnsError::ApiStatus { status, .. } => *status >= 500,
            DnsError::BadSig { .. }
            | DnsError::BadKey { .. }
            | DnsError::BadTime { .. }
            | DnsError::BadResponseSignature { .. }
            | DnsError::UpdateRefused { .. }
            | DnsError::ApiKeyRejected { .. }
            | DnsError::ZoneNotServed { .. }
            | DnsError::Unexpected { .. } => false,
        }
    }
}

impl From<DnsError> for AdapterError {
    fn from(e: DnsError) -> Self {
        if e.is_retryable() {
            AdapterError::retryable(e.to_string())
        } else {
            AdapterError::permanent(e.to_string())
        }
    }
}

/// The RFC mnemonic of an RCODE (`REFUSED`, `NOTAUTH`, ...), as dig and nsupdate print it.
pub fn rcode_name(rc: hickory_proto::op::ResponseCode) -> String {
    use hickory_proto::op::ResponseCode as R;
    match rc {
        R::NoError => "NOERROR".into(),
        R::FormErr => "FORMERR".into(),
        R::ServFail => "SERVFAIL".into(),
        R::NXDomain => "NXDOMAIN".into(),
        R::NotImp => "NOTIMP".into(),
        R::Refused => "REFUSED".into(),
        R::YXDomain => "YXDOMAIN".into(),
        R::YXRRSet => "YXRRSET".into(),
        R::NXRRSet => "NXRRSET".into(),
        R::NotAuth => "NOTAUTH".into(),
        R::NotZone => "NOTZONE".into(),
        other => format!("RCODE {}", u16::from(other)),
    }
}

/// A permanent error about a target's parameters.
pub(crate) fn bad_param(pod: &impl std::fmt::Display, message: impl std::fmt::Display) -> AdapterError {
    AdapterError::permanent(format!("dns target for pod {pod}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> SocketAddr {
        "127.0.0.1:5301".parse().unwrap()
    }

    #[test]
    fn classes() {
        let retryable = |e: DnsError| AdapterError::from(e).is_retryable();
        assert!(retryable(DnsError::Unreachable {
            server: server(),
            reason: "connection refused".into()
        }));
        assert!(retryable(DnsError::ServFail {
            server: server(),
            what: "x".into()
        }));
        assert!(!retryable(DnsError::BadSig {
            server: server(),
            key: "k".into()
        }));
        assert!(!retryable(DnsError::UpdateRefused {
            server: server(),
            zone: "z.".into()
        }));
        let api = |status| DnsError::ApiStatus {
            method: "PATCH".into(),
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(retryable(api(503)) && !retryable(api(422)) && !retryable(api(401)));
    }

    #[test]
    fn messages_name_what_to_fix() {
        let e = DnsError::UpdateRefused {
            server: server(),
            zone: "example.test.".into(),
        };
        assert_eq!(
            e.to_string(),
            "update refused by 127.0.0.1:5301 for zone example.test.: check allow-update / update-policy for the key"
        );
        let e = DnsError::BadSig {
            server: server(),
            key: "sluice".into(),
        };
        assert!(e.to_string().contains("key 'sluice' (BADSIG)"), "{e}");
    }
}
