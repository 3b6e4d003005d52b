//! Evidence: what each authoritative server answers, asked directly.
//!
//! For one [`RecordSpec`] every server gets two queries, one after the other: the owner
//! name with the record's type (is the pod's address in the answer?), then the zone's SOA
//! (the serial the server holds — at least the one the answer came from — and the
//! negative-caching TTL = min(SOA TTL, SOA minimum), RFC 2308). Servers are asked in
//! parallel.
//! A server must answer authoritatively (AA bit, NOERROR or NXDOMAIN); anything else is an
//! error, because a drain can never be verified while one authoritative server can't be
//! asked.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use futures::future::try_join_all;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use sluice_adapter::{AdapterError, Observation, Result};

use crate::assess::assess;
use crate::clock::DrainClock;
use crate::discovery::Authorities;
use crate::error::{rcode_name, DnsError};
use crate::names::{addr_of, RecordSpec};
use crate::wire::Wire;

/// One server's answer about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    /// The server asked.
    pub server: SocketAddr,
    /// Whether the pod's address is in the server's answer.
    pub present: bool,
    /// TTL of the RRset the server returned (`None`: the RRset is empty there).
    pub rrset_ttl: Option<u32>,
    /// How many addresses the RRset holds there.
    pub rrset_len: usize,
    /// The zone serial the server holds.
    pub serial: u32,
    /// Negative-caching TTL of the zone: min(SOA TTL, SOA minimum).
    pub negative_ttl: u32,
}

impl ServerView {
    /// `127.0.0.1:5301=present(serial 7)` / `...=absent(serial 8)`.
    pub fn describe(&self) -> String {
        format!(
            "{}={}(serial {})",
            self.server,
            if self.present { "present" } else { "absent" },
            self.serial
        )
    }
}

/// The views of every server, space-separated, in the order given.
pub fn describe_all(views: &[ServerView]) -> String {
    let mut out = String::new();
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{}", v.describe());
    }
    out
}

/// Asks one server about `spec` (the record, then the SOA).
pub async fn look(wire: &Wire, server: SocketAddr, spec: &RecordSpec) -> Result<ServerView, DnsError> {
    // The SOA is asked *after* the answer, so the serial shown is at least the one the
    // answer came from (a transfer landing in between can only raise it).
    let rrset = authoritative(wire.query(server, &spec.name, spec.rtype).await?, server, &spec.zone)?;
    let soa = authoritative(
        wire.query(server, &spec.zone, RecordType::SOA).await?,
        server,
        &spec.zone,
    )?;
    let addrs = rrset_addrs(&rrset, &spec.name, spec.rtype);
    let (serial, negative_ttl) = soa_of(&soa, &spec.zone).ok_or_else(|| DnsError::Unexpected {
        server,
        what: format!("{} SOA", spec.zone),
        detail: "an answer without the zone's SOA record".into(),
    })?;
    Ok(ServerView {
        server,
        present: addrs.iter().any(|(ip, _)| *ip == spec.ip),
        rrset_ttl: addrs.iter().map(|(_, ttl)| *ttl).min(),
        rrset_len: addrs.len(),
        serial,
        negative_ttl,
    })
}

/// Asks every server (in parallel); fails if any one can't be asked.
pub async fn look_all(wire: &Wire, servers: &[SocketAddr], spec: &RecordSpec) -> Result<Vec<ServerView>, DnsError> {
    try_join_all(servers.iter().map(|s| look(wire, *s, spec))).await
}

/// The addresses (with their TTLs) of `name`/`rtype` in an answer; CNAMEs and records of
/// other names are ignored.
pub fn rrset_addrs(msg: &Message, name: &Name, rtype: RecordType) -> Vec<(IpAddr, u32)> {
    msg.answers
        .iter()
        .filter(|r| r.record_type() == rtype && &r.name == name)
        .filter_map(|r| addr_of(&r.data).map(|ip| (ip, r.ttl)))
        .collect()
}

/// `(serial, negative TTL)` from an SOA answer (answer or authority section).
pub fn soa_of(msg: &Message, zone: &Name) -> Option<(u32, u32)> {
    msg.answers
        .iter()
        .chain(msg.authorities.iter())
        .find_map(|r| match &r.data {
            RData::SOA(soa) if &r.name == zone => Some((soa.serial, r.ttl.min(soa.minimum))),
            _ => None,
        })
}

/// Checks that an answer is authoritative data for `zone`: NOERROR or NXDOMAIN with AA.
pub fn authoritative(msg: Message, server: SocketAddr, zone: &Name) -> Result<Message, DnsError> {
    let what = msg
        .queries
        .first()
        .map(|q| format!("{} {}", q.name(), q.query_type()))
        .unwrap_or_default();
    match msg.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain if msg.metadata.authoritative => Ok(msg),
        ResponseCode::NoError | ResponseCode::NXDomain => Err(DnsError::ZoneNotServed {
            server: server.to_string(),
            zone: zone.to_string(),
            rcode: "a non-authoritative answer".into(),
        }),
        rc @ (ResponseCode::Refused | ResponseCode::NotAuth) => Err(DnsError::ZoneNotServed {
            server: server.to_string(),
            zone: zone.to_string(),
            rcode: rcode_name(rc),
        }),
        ResponseCode::ServFail => Err(DnsError::ServFail { server, what }),
        rc => Err(DnsError::Unexpected {
            server,
            what,
            detail: rcode_name(rc),
        }),
    }
}

/// `observe` for one record, shared by both adapters: asks every authoritative server,
/// assesses the answers with the drain memory, and keeps the TTL clock. Any server that
/// can't be asked makes it an error (retryable when the server may come back).
pub async fn observe_record(
    wire: &Wire,
    authorities: &Authorities,
    clock: &DrainClock,
    default_ttl: u32,
    spec: &RecordSpec,
) -> Result<Observation> {
    let servers = authorities.servers(wire, &spec.zone).await?;
    let views = look_all(wire, &servers, spec).await.map_err(|e| {
        let retryable = e.is_retryable();
        let message = format!(
            "cannot verify {spec} on every authoritative server of {} (a drain can't be verified while one \
             authoritative server can't be asked): {e}",
            spec.zone
        );
        if retryable {
            AdapterError::retryable(message)
        } else {
            AdapterError::permanent(message)
        }
    })?;
    let key = spec.key();
    // Without memory of the removed record, the larger of the binding's and the instance's TTL.
    let default_ttl = spec.ttl.unwrap_or(0).max(default_ttl);
    let verdict = assess(
        &spec.to_string(),
        &views,
        clock.get(&key).as_ref(),
        default_ttl,
        Instant::now(),
    );
    clock.set_gone_since(&key, verdict.gone_since);
    Ok(verdict.observation)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Record;

    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn answer(rcode: ResponseCode, aa: bool) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m.metadata.authoritative = aa;
        m.add_query(Query::query(n("www.example.test."), RecordType::A));
        m
    }

    #[test]
    fn reads_addresses_and_soa() {
        let mut m = answer(ResponseCode::NoError, true);
        m.add_answer(Record::from_rdata(
            n("www.example.test."),
            30,
            RData::A(A([10, 0, 0, 1].into())),
        ));
        m.add_answer(Record::from_rdata(
            n("other.example.test."),
            30,
            RData::A(A([10, 0, 0, 2].into())),
        ));
        let soa = SOA::new(n("ns1.example.test."), n("admin.example.test."), 7, 60, 10, 600, 5);
        m.add_authority(Record::from_rdata(n("example.test."), 3, RData::SOA(soa)));
        let addrs = rrset_addrs(&m, &n("www.example.test."), RecordType::A);
        assert_eq!(addrs, vec![("10.0.0.1".parse().unwrap(), 30)]);
        assert_eq!(
            soa_of(&m, &n("example.test.")),
            Some((7, 3)),
            "negative TTL = min(SOA TTL, minimum)"
        );
    }

    #[test]
    fn only_authoritative_answers_count() {
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let zone = n("example.test.");
        assert!(authoritative(answer(ResponseCode::NXDomain, true), server, &zone).is_ok());
        for (rc, aa, retryable, needle) in [
            (ResponseCode::NoError, false, false, "non-authoritative"),
            (
                ResponseCode::Refused,
                true,
                false,
                "not served by 127.0.0.1:53 (REFUSED)",
            ),
            (ResponseCode::ServFail, true, true, "SERVFAIL"),
        ] {
            let e = authoritative(answer(rc, aa), server, &zone).unwrap_err();
            assert_eq!(e.is_retryable(), retryable, "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}
