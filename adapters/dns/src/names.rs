//! From a [`Target`] to the one DNS record it stands for: [`RecordSpec`] (zone, owner
//! name, A/AAAA, the pod's address, restore TTL, whether emptying the name is allowed).
//!
//! Target parameters (from the TrafficBinding; they only *select* within the zones the
//! adapter instance was configured with):
//!
//! | param | meaning |
//! |---|---|
//! | `name` | required: the owner name, e.g. `api.example.com` (a trailing `.` is optional) |
//! | `zone` | optional: the zone; must be one of the instance's `zones`. Default: the longest configured zone that contains `name` |
//! | `ttl` | optional: TTL (seconds) when the address is added to an empty name; default the instance's `ttl` |
//! | `allowEmpty` | `"true"`: removing the name's last address is allowed (default: refused) |
//! | `type` | optional: `A` or `AAAA`; must match the pod's IP family (inferred from it otherwise) |

use std::fmt;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, RecordType};
use sluice_adapter::{AdapterError, Target};

use crate::error::bad_param;

/// The DNS record a target stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordSpec {
    /// The zone (apex), lower-case, fully qualified.
    pub zone: Name,
    /// The owner name, lower-case, fully qualified.
    pub name: Name,
    /// `A` or `AAAA`.
    pub rtype: RecordType,
    /// The pod's address: the record's data.
    pub ip: IpAddr,
    /// TTL from the target's `ttl` parameter, if any.
    pub ttl: Option<u32>,
    /// The target's `allowEmpty` parameter.
    pub allow_empty: bool,
}

impl fmt::Display for RecordSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.name, self.rtype, self.ip)
    }
}

/// Identifies one address in one RRset (the key of per-target memory).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    /// Owner name.
    pub name: Name,
    /// `A` or `AAAA`.
    pub rtype: RecordType,
    /// The pod's address.
    pub ip: IpAddr,
}

impl RecordSpec {
    /// Reads and checks a target's parameters against the instance's `zones`.
    pub fn from_target(target: &Target, zones: &[Name]) -> Result<RecordSpec, AdapterError> {
        let pod = &target.pod;
        let raw = target
            .param("name")
            .ok_or_else(|| bad_param(pod, "the `name` parameter (the DNS name to drain) is missing"))?;
        let name = parse_fqdn(raw).map_err(|e| bad_param(pod, format!("`name` {raw:?}: {e}")))?;
        let zone = match target.param("zone") {
            Some(z) => {
                let zone = parse_fqdn(z).map_err(|e| bad_param(pod, format!("`zone` {z:?}: {e}")))?;
                if !zones.contains(&zone) {
                    return Err(bad_param(
                        pod,
                        format!("zone {zone} is not one of this adapter's zones ({})", list(zones)),
                    ));
                }
                if !zone.zone_of(&name) {
                    return Err(bad_param(pod, format!("name {name} is not inside zone {zone}")));
                }
                zone
            }
            None => zones
                .iter()
                .filter(|z| z.zone_of(&name))
                .max_by_key(|z| z.num_labels())
                .cloned()
                .ok_or_else(|| {
                    bad_param(
                        pod,
                        format!("name {name} is in none of this adapter's zones ({})", list(zones)),
                    )
                })?,
        };
        let inferred = match target.ip {
            IpAddr::V4(_) => RecordType::A,
            IpAddr::V6(_) => RecordType::AAAA,
        };
        let rtype = match target.param("type").map(|t| t.trim().to_ascii_uppercase()) {
            None => inferred,
            Some(t) if t == inferred.to_string() => inferred,
            Some(t) if t == "A" || t == "AAAA" => {
                return Err(bad_param(
                    pod,
                    format!("`type: {t}` does not match the pod's address {}", target.ip),
                ))
            }
            Some(t) => {
                return Err(bad_param(
                    pod,
                    format!("`type: {t}` is not supported (A or AAAA, inferred from the pod's IP)"),
                ))
            }
        };
        let ttl = match target.param("ttl") {
            None => None,
            Some(t) => Some(parse_ttl(t).map_err(|e| bad_param(pod, format!("`ttl` {t:?}: {e}")))?),
        };
        let allow_empty = match target.param("allowEmpty").map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(bad_param(
                    pod,
                    format!("`allowEmpty` must be \"true\" or \"false\", not {other:?}"),
                ))
            }
        };
        Ok(RecordSpec {
            zone,
            name,
            rtype,
            ip: target.ip,
            ttl,
            allow_empty,
        })
    }

    /// The key of this address in per-target memory.
    pub fn key(&self) -> RecordKey {
        RecordKey {
            name: self.name.clone(),
            rtype: self.rtype,
            ip: self.ip,
        }
    }

    /// The record data (`A` or `AAAA`).
    pub fn rdata(&self) -> RData {
        rdata(self.ip)
    }
}

/// `A`/`AAAA` record data for an address.
pub fn rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// The address in `A`/`AAAA` record data.
pub fn addr_of(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// A DNS name, made fully qualified and lower-case.
pub fn parse_fqdn(raw: &str) -> Result<Name, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "." {
        return Err("empty name".into());
    }
    let mut name = Name::from_ascii(raw).map_err(|e| format!("not a valid DNS name: {e}"))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// A TTL in seconds (RFC 2181: 0 ..= 2^31 - 1).
pub fn parse_ttl(raw: &str) -> Result<u32, String> {
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|t| *t <= i32::MAX as u32)
        .ok_or_else(|| "must be a whole number of seconds between 0 and 2147483647".into())
}

fn list(zones: &[Name]) -> String {
    zones.iter().map(Name::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_adapter::PodRef;

    use super::*;

    fn target(ip: &str, params: &[(&str, &str)]) -> Target {
        Target {
            pod: PodRef {
                cluster: "c".into(),
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            ip: ip.parse().unwrap(),
            port: 80,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn zones() -> Vec<Name> {
        ["example.test", "svc.example.test", "other.test"]
            .iter()
            .map(|z| parse_fqdn(z).unwrap())
            .collect()
    }

    #[test]
    fn longest_zone_wins_and_type_is_inferred() {
        let s = RecordSpec::from_target(&target("10.0.0.1", &[("name", "API.svc.example.test")]), &zones()).unwrap();
        assert_eq!(s.zone.to_string(), "svc.example.test.");
        assert_eq!(s.to_string(), "api.svc.example.test. A 10.0.0.1");
        assert!(!s.allow_empty && s.ttl.is_none());
        let s = RecordSpec::from_target(
            &target(
                "fd00::1",
                &[
                    ("name", "api.svc.example.test."),
                    ("zone", "example.test"),
                    ("ttl", "5"),
                    ("allowEmpty", "true"),
                ],
            ),
            &zones(),
        )
        .unwrap();
        assert_eq!(
            (s.zone.to_string().as_str(), s.rtype, s.ttl, s.allow_empty),
            ("example.test.", RecordType::AAAA, Some(5), true)
        );
    }

    #[test]
    fn rejects_what_the_instance_does_not_manage() {
        for (ip, params, needle) in [
            ("10.0.0.1", vec![], "`name` parameter"),
            (
                "10.0.0.1",
                vec![("name", "www.elsewhere.test")],
                "in none of this adapter's zones",
            ),
            (
                "10.0.0.1",
                vec![("name", "www.example.test"), ("zone", "elsewhere.test")],
                "not one of this adapter's zones",
            ),
            (
                "10.0.0.1",
                vec![("name", "www.example.test"), ("zone", "other.test")],
                "not inside zone other.test.",
            ),
            (
                "10.0.0.1",
                vec![("name", "www.example.test"), ("type", "AAAA")],
                "does not match",
            ),
            (
                "10.0.0.1",
                vec![("name", "www.example.test"), ("type", "SRV")],
                "not supported",
            ),
            (
                "10.0.0.1",
                vec![("name", "www.example.test"), ("ttl", "-1")],
                "whole number",
            ),
            (
                "10.0.0.1",
                vec![("name", "www.example.test"), ("allowEmpty", "yes")],
                "allowEmpty",
            ),
            ("10.0.0.1", vec![("name", "bad name!.example.test")], "`name`"),
        ] {
            let e = RecordSpec::from_target(&target(ip, &params), &zones()).unwrap_err();
            assert!(!e.is_retryable() && e.message.contains(needle), "{params:?}: {e}");
        }
    }
}
