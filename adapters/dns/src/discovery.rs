//! The authoritative servers of a zone, where drains are verified: the configured list,
//! or the zone's NS set (names resolved through glue, then the resolver — the primary by
//! default). The primary is always first: it is where changes land, and its answer is the
//! zone's truth. Discovered sets are cached for the NS RRset's TTL (1 s – 5 min).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, RData, RecordType};
use sluice_adapter::AdapterError;

use crate::evidence::{authoritative, rrset_addrs};
use crate::wire::Wire;

/// Where the verification set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSource {
    /// A fixed list (the primary is added in front when missing).
    Configured(Vec<SocketAddr>),
    /// The zone's NS set, asked of the primary; NS host names resolved via `resolver`
    /// (`None`: the primary, without recursion); servers reached on `port`.
    Discover { resolver: Option<SocketAddr>, port: u16 },
}

/// Discovered sets: zone → (valid until, servers).
type Cache = HashMap<Name, (Instant, Arc<Vec<SocketAddr>>)>;

/// The verification set of each zone.
#[derive(Debug)]
pub struct Authorities {
    primary: SocketAddr,
    source: ServerSource,
    cache: Mutex<Cache>,
}

impl Authorities {
    /// Servers for zones whose primary is `primary`.
    pub fn new(primary: SocketAddr, source: ServerSource) -> Authorities {
        Authorities {
            primary,
            source,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The primary.
    pub fn primary(&self) -> SocketAddr {
        self.primary
    }

    /// The servers to verify `zone` on, the primary first, without duplicates.
    pub async fn servers(&self, wire: &Wire, zone: &Name) -> Result<Arc<Vec<SocketAddr>>, AdapterError> {
        let (resolver, port) = match &self.source {
            ServerSource::Configured(list) => return Ok(Arc::new(with_primary(self.primary, list))),
            ServerSource::Discover { resolver, port } => (*resolver, *port),
        };
        if let Some((until, servers)) = self.lock().get(zone) {
            if Instant::now() < *until {
                return Ok(servers.clone());
            }
        }
        let (found, ttl) = self.discover(wire, zone, resolver, port).await?;
        let servers = Arc::new(with_primary(self.primary, &found));
        let until = Instant::now() + Duration::from_secs(u64::from(ttl.clamp(1, 300)));
        self.lock().insert(zone.clone(), (until, servers.clone()));
        Ok(servers)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn discover(
        &self,
        wire: &Wire,
        zone: &Name,
        resolver: Option<SocketAddr>,
        port: u16,
    ) -> Result<(Vec<SocketAddr>, u32), AdapterError> {
        let answer = wire.query(self.primary, zone, RecordType::NS).await?;
        let answer = authoritative(answer, self.primary, zone)?;
        let ns: Vec<(Name, u32)> = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::NS(ns) if &r.name == zone => Some((ns.0.to_lowercase(), r.ttl)),
                _ => None,
            })
            .collect();
        if ns.is_empty() {
            return Err(AdapterError::permanent(format!(
                "zone {zone} has no NS records on the primary {}: list the authoritative servers in `servers`",
                self.primary
            )));
        }
        let ttl = ns.iter().map(|(_, t)| *t).min().unwrap_or(1);
        let mut out = Vec::new();
        for (host, _) in &ns {
            // Glue first (the primary's additional section), then ask the resolver.
            let mut ips: Vec<IpAddr> = answer
                .additionals
                .iter()
                .filter(|r| &r.name == host)
                .filter_map(|r| crate::names::addr_of(&r.data))
                .collect();
            if ips.is_empty() {
                ips = self.resolve(wire, host, resolver).await?;
            }
            if ips.is_empty() {
                return Err(AdapterError::permanent(format!(
                    "NS {host} of zone {zone} has no address: cannot verify every authoritative server \
                     (fix the zone, or list the servers in `servers`)"
                )));
            }
            out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
        }
        Ok((out, ttl))
    }

    async fn resolve(
        &self,
        wire: &Wire,
        host: &Name,
        resolver: Option<SocketAddr>,
    ) -> Result<Vec<IpAddr>, AdapterError> {
        let mut ips = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let answer = match resolver {
                Some(r) => wire.query_recursive(r, host, rtype).await,
                None => wire.query(self.primary, host, rtype).await,
            }?;
            let code = answer.metadata.response_code;
            if !matches!(
                code,
                hickory_proto::op::ResponseCode::NoError | hickory_proto::op::ResponseCode::NXDomain
            ) {
                return Err(AdapterError::permanent(format!(
                    "cannot resolve NS host {host} via {} ({}): set `resolver` to a resolver that can, \
                     or list the servers in `servers`",
                    resolver.unwrap_or(self.primary),
                    crate::error::rcode_name(code)
                )));
            }
            ips.extend(rrset_addrs(&answer, host, rtype).into_iter().map(|(ip, _)| ip));
        }
        Ok(ips)
    }
}

/// `primary` followed by `list` without duplicates.
fn with_primary(primary: SocketAddr, list: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out = vec![primary];
    for s in list {
        if !out.contains(s) {
            out.push(*s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_comes_first_once() {
        let p: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let s: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(with_primary(p, &[s, p, s]), vec![p, s]);
        assert_eq!(with_primary(p, &[]), vec![p]);
    }
}
