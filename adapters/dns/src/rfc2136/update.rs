//! One batch of changes for one zone, as RFC 2136 UPDATE messages: read each RRset on the
//! primary, plan ([`crate::plan`]), send one TSIG-signed UPDATE (more only when a batch
//! exceeds [`MAX_MESSAGE_BYTES`]), then tell each caller its outcome.
//!
//! Each message carries, per RRset:
//! - prerequisites (only when `guard` is set): the RRset exactly as read, TTL 0
//!   ("RRset exists, value dependent", RFC 2136 §2.4.2). If anyone changed it meanwhile,
//!   the server answers NXRRSET, nothing is applied, and the batch is read and planned
//!   again (up to [`ATTEMPTS`] times). This is what makes "never remove the last address"
//!   hold against other writers;
//! - deletes: CLASS NONE, TTL 0, the pod's address (§2.5.4: removes that one RR only);
//! - adds: CLASS IN with the RRset's current TTL (so other records' TTL never changes), or
//!   the target's / instance's TTL for an empty name (§2.5.1: duplicates are ignored).

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use futures::stream::{self, StreamExt};
use hickory_proto::op::{Message, OpCode, Query, UpdateMessage};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use sluice_adapter::{AdapterError, Result};
use tracing::{debug, info};

use super::Shared;
use crate::error::DnsError;
use crate::evidence::{authoritative, rrset_addrs};
use crate::names::rdata;
use crate::plan::{group, plan_rrset, Change, Step};

/// How many times a batch is read and planned again after a failed prerequisite.
pub const ATTEMPTS: usize = 5;

/// Largest UPDATE sent in one message (TCP frames hold 65,535 bytes; TSIG needs room).
pub const MAX_MESSAGE_BYTES: usize = 60_000;

/// Parallel reads of RRsets on the primary while planning a batch.
const READ_CONCURRENCY: usize = 64;

/// An RRset as the primary serves it.
#[derive(Debug, Clone, Default)]
struct Current {
    addrs: Vec<IpAddr>,
    ttl: Option<u32>,
}

/// One RRset's share of a message.
struct Part {
    name: Name,
    rtype: RecordType,
    current: Current,
    guard: bool,
    adds: Vec<(IpAddr, u32)>,
    removes: Vec<IpAddr>,
    /// `(change index, step)` for every change of this RRset.
    steps: Vec<(usize, Step)>,
    final_len: usize,
}

impl Part {
    fn records(&self) -> usize {
        (if self.guard { self.current.addrs.len() } else { 0 }) + self.adds.len() + self.removes.len()
    }
}

/// Runs one batch; one result per change, in order.
pub(super) async fn execute(shared: &Shared, zone: &Name, changes: &[Change]) -> Vec<Result<()>> {
    let mut results: Vec<Option<Result<()>>> = vec![None; changes.len()];
    for _ in 0..ATTEMPTS {
        let pending: Vec<usize> = (0..changes.len()).filter(|i| results[*i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        let subset: Vec<Change> = pending.iter().map(|i| changes[*i].clone()).collect();
        let groups = group(&subset);
        let keys: Vec<(Name, RecordType)> = groups.iter().map(|(k, _)| k.clone()).collect();
        let reads: Vec<Result<Current, DnsError>> = stream::iter(keys)
            .map(|(name, rtype)| async move { read(shared, zone, &name, rtype).await })
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut parts = Vec::new();
        for (((name, rtype), idx), read) in groups.into_iter().zip(reads) {
            let current = match read {
                Ok(c) => c,
                Err(e) => {
                    let e = AdapterError::from(e);
                    for i in idx {
                        results[pending[i]] = Some(Err(e.clone()));
                    }
                    continue;
                }
            };
            let refs: Vec<&Change> = idx.iter().map(|i| &subset[*i]).collect();
            let plan = plan_rrset(&current.addrs, &refs);
            let ttl_for_add = |c: &Change| current.ttl.or(c.spec().ttl).unwrap_or(shared.config.ttl);
            let mut part = Part {
                name,
                rtype,
                guard: plan.guard,
                adds: Vec::new(),
                removes: Vec::new(),
                steps: Vec::new(),
                final_len: plan.final_len,
                current: current.clone(),
            };
            for (k, step) in plan.steps.into_iter().enumerate() {
                let c = refs[k];
                if step == Step::Apply {
                    match c {
                        Change::Add(s) => part.adds.push((s.ip, ttl_for_add(c))),
                        Change::Remove(s) => part.removes.push(s.ip),
                    }
                }
                part.steps.push((pending[idx[k]], step));
            }
            parts.push(part);
        }
        for chunk in chunks(parts) {
            let sends = chunk.iter().any(|p| !p.adds.is_empty() || !p.removes.is_empty());
            let outcome = if sends {
                send(shared, zone, &chunk).await
            } else {
                Ok(())
            };
            match outcome {
                Err(DnsError::PrerequisiteFailed { .. }) => {
                    debug!(zone = %zone, "an RRset changed under the batch; reading it again");
                }
                Err(e) => {
                    let e = AdapterError::from(e);
                    for p in &chunk {
                        settle(shared, p, changes, Some(&e), &mut results);
                    }
                }
                Ok(()) => {
                    for p in &chunk {
                        settle(shared, p, changes, None, &mut results);
                    }
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(AdapterError::retryable(format!(
                    "RRsets in zone {zone} kept changing while Sluice updated them ({ATTEMPTS} attempts)"
                )))
            })
        })
        .collect()
}

/// Gives every change of a part whose message went out (`failed`: or failed) its result.
fn settle(
    shared: &Shared,
    p: &Part,
    changes: &[Change],
    failed: Option<&AdapterError>,
    results: &mut [Option<Result<()>>],
) {
    for (i, step) in &p.steps {
        results[*i] = Some(
            shared
                .clock
                .settle(&changes[*i], step.clone(), failed, p.current.ttl, p.final_len),
        );
    }
}

/// Splits parts into messages of at most [`MAX_MESSAGE_BYTES`] (estimated).
fn chunks(parts: Vec<Part>) -> Vec<Vec<Part>> {
    let mut out: Vec<Vec<Part>> = vec![Vec::new()];
    let mut size = 0;
    for p in parts {
        // owner name (uncompressed, worst case) + type/class/ttl/rdlength + IPv6 rdata
        let bytes = p.records() * (p.name.len() + 2 + 10 + 16);
        if size + bytes > MAX_MESSAGE_BYTES && !out.last().is_some_and(Vec::is_empty) {
            out.push(Vec::new());
            size = 0;
        }
        size += bytes;
        out.last_mut().expect("one chunk at least").push(p);
    }
    out
}

/// Reads one RRset on the primary.
async fn read(shared: &Shared, zone: &Name, name: &Name, rtype: RecordType) -> Result<Current, DnsError> {
    let primary = shared.config.primary;
    let answer = shared.wire.query(primary, name, rtype).await?;
    let answer = authoritative(answer, primary, zone)?;
    let addrs = rrset_addrs(&answer, name, rtype);
    Ok(Current {
        ttl: addrs.iter().map(|(_, t)| *t).min(),
        addrs: addrs.into_iter().map(|(ip, _)| ip).collect(),
    })
}

/// Builds, signs and sends one UPDATE.
async fn send(shared: &Shared, zone: &Name, parts: &[Part]) -> Result<(), DnsError> {
    let msg = build(zone, parts);
    let (adds, removes): (usize, usize) = parts
        .iter()
        .fold((0, 0), |(a, r), p| (a + p.adds.len(), r + p.removes.len()));
    shared.updates_sent.fetch_add(1, Ordering::Relaxed);
    shared
        .wire
        .update(shared.config.primary, msg, &shared.signer, zone)
        .await?;
    info!(zone = %zone, rrsets = parts.len(), adds, removes, primary = %shared.config.primary, "UPDATE applied");
    Ok(())
}

/// The UPDATE message for `parts` (unsigned).
fn build(zone: &Name, parts: &[Part]) -> Message {
    let mut msg = empty_update(zone);
    for p in parts.iter().filter(|p| !p.adds.is_empty() || !p.removes.is_empty()) {
        if p.guard {
            for ip in &p.current.addrs {
                msg.add_pre_requisite(Record::from_rdata(p.name.clone(), 0, rdata(*ip)));
            }
        }
        for (ip, ttl) in &p.adds {
            msg.add_update(Record::from_rdata(p.name.clone(), *ttl, rdata(*ip)));
        }
        for ip in &p.removes {
            let mut r = Record::from_rdata(p.name.clone(), 0, rdata(*ip));
            r.dns_class = DNSClass::NONE;
            msg.add_update(r);
        }
        debug_assert!(p.rtype == RecordType::A || p.rtype == RecordType::AAAA);
    }
    msg
}

/// An UPDATE for `zone` with no prerequisites and no changes.
pub(super) fn empty_update(zone: &Name) -> Message {
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Update;
    msg.metadata.recursion_desired = false;
    let mut q = Query::query(zone.clone(), RecordType::SOA);
    q.set_query_class(DNSClass::IN);
    msg.add_zone(q);
    msg
}

/// A signed UPDATE that changes nothing: its only prerequisite ("the zone apex is in use",
/// RFC 2136 §2.4.4) always holds. The server still checks the key and `allow-update`, so
/// it proves the adapter may update the zone without touching it.
pub(super) fn noop_update(zone: &Name) -> Message {
    let mut msg = empty_update(zone);
    let mut apex = Record::update0(zone.clone(), 0, RecordType::ANY);
    apex.dns_class = DNSClass::ANY;
    msg.add_pre_requisite(apex);
    msg
}
