//! [`PowerDnsAdapter`]: the `dns` adapter for PowerDNS Authoritative through its HTTP API.
//!
//! **Drain** (`deregister`): the pod's record is marked `"disabled": true` — kept in the
//! zone, no longer served, so the drain is reversible. The zone is read first (the full
//! zone: see [`api`] for why), and the RRset is written back with `changetype: REPLACE`
//! carrying *every* record exactly as read, with only this one's `disabled` flag changed.
//! The last served address is refused unless the target says `allowEmpty`.
//!
//! **Restore** (`register`): the record is enabled again (or added, if it is not there).
//!
//! Evidence follows the same rules as RFC 2136 ([`crate::assess`]): PowerDNS's own DNS
//! listener (`dns`) plays the primary, plus any configured `servers` (secondaries). With
//! `servers` set, every PATCH is followed by `PUT .../notify` so the secondaries transfer
//! the change at once; the zone must then be of kind primary with `SOA-EDIT-API` set, or
//! its serial never moves and the secondaries never see the drain (observe then stays
//! `Draining`, naming them).
//!
//! PowerDNS has no compare-and-swap for a PATCH, so the read-modify-write is only safe
//! against *this adapter instance's* other changes — which the per-zone batcher
//! serialises. Other writers to the same RRset (people, other tools) can race it; run one
//! Sluice writer per zone.

pub mod api;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};
use sluice_adapter::{Adapter, AdapterError, Capabilities, Observation, Result, Target};
use tracing::{info, warn};

use self::api::{PdnsApi, PdnsRecord, Rrset};
use crate::batch::{Batcher, Executor};
use crate::clock::DrainClock;
use crate::config::PowerDnsConfig;
use crate::discovery::{Authorities, ServerSource};
use crate::evidence::{authoritative, observe_record};
use crate::names::{parse_fqdn, RecordSpec};
use crate::plan::{group, plan_rrset, Change, Step};
use crate::secret::load_api_key;
use crate::wire::Wire;

struct Shared {
    config: PowerDnsConfig,
    api: PdnsApi,
    clock: DrainClock,
    patches_sent: AtomicU64,
}

/// The PowerDNS (`dns`) adapter.
pub struct PowerDnsAdapter {
    shared: Arc<Shared>,
    wire: Wire,
    authorities: Authorities,
    batcher: Batcher<Name, Change, Result<()>>,
}

impl std::fmt::Debug for PowerDnsAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerDnsAdapter")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl PowerDnsAdapter {
    /// An adapter for one PowerDNS server. Loads the API key now; fails (permanently) when
    /// it can't be read.
    pub fn new(config: PowerDnsConfig) -> Result<Self> {
        let key = load_api_key(&config.api_key)
            .map_err(|e| AdapterError::permanent(format!("dns adapter '{}': {e}", config.name)))?;
        let api = PdnsApi::new(&config.api_url, &config.server_id, key, config.timeout);
        let authorities = Authorities::new(config.dns, ServerSource::Configured(config.servers.clone()));
        let shared = Arc::new(Shared {
            api,
            clock: DrainClock::new(),
            patches_sent: AtomicU64::new(0),
            config,
        });
        let for_batches = shared.clone();
        let executor: Executor<Name, Change, Result<()>> = Arc::new(move |zone: Name, changes: Vec<Change>| {
            let shared = for_batches.clone();
            Box::pin(async move { execute(&shared, &zone, &changes).await })
        });
        Ok(PowerDnsAdapter {
            wire: Wire::new(shared.config.timeout),
            batcher: Batcher::new(shared.config.batch_window, executor),
            authorities,
            shared,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PowerDnsConfig {
        &self.shared.config
    }

    /// How many PATCH requests carrying changes this adapter has sent.
    pub fn patches_sent(&self) -> u64 {
        self.shared.patches_sent.load(Ordering::Relaxed)
    }

    async fn submit(&self, target: &Target, change: impl FnOnce(RecordSpec) -> Change) -> Result<()> {
        let spec = RecordSpec::from_target(target, &self.shared.config.zones)?;
        let zone = spec.zone.clone();
        self.batcher
            .submit(zone, change(spec))
            .await
            .map_err(|e| AdapterError::retryable(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl Adapter for PowerDnsAdapter {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: "dns".into(),
            required_params: vec!["name".into()],
            shared_reads: false,
        }
    }

    async fn register(&self, target: &Target) -> Result<()> {
        self.submit(target, Change::Add).await
    }

    async fn deregister(&self, target: &Target) -> Result<()> {
        self.submit(target, Change::Remove).await
    }

    async fn observe(&self, target: &Target) -> Result<Observation> {
        let spec = RecordSpec::from_target(target, &self.shared.config.zones)?;
        observe_record(
            &self.wire,
            &self.authorities,
            &self.shared.clock,
            self.shared.config.ttl,
            &spec,
        )
        .await
    }

    async fn health(&self) -> Result<()> {
        let shared = &self.shared;
        shared.api.server().await?;
        for zone in &shared.config.zones {
            if !shared.api.has_zone(&zone.to_string()).await? {
                return Err(AdapterError::permanent(format!(
                    "zone {zone} is not served by PowerDNS at {}",
                    shared.config.api_url
                )));
            }
            for server in self.authorities.servers(&self.wire, zone).await?.iter() {
                let soa = self.wire.query(*server, zone, RecordType::SOA).await?;
                authoritative(soa, *server, zone)?;
            }
        }
        Ok(())
    }
}

/// Runs one batch: one zone GET, one PATCH for every changed RRset.
async fn execute(shared: &Shared, zone: &Name, changes: &[Change]) -> Vec<Result<()>> {
    let zone_s = zone.to_string();
    let view = match shared.api.zone(&zone_s).await {
        Ok(v) => v,
        Err(e) => return vec![Err(e.into()); changes.len()],
    };
    let mut patches = Vec::new();
    // (change index, step, rrset ttl, final_len)
    let mut outcomes: Vec<(usize, Step, Option<u32>, usize)> = Vec::new();
    for ((name, rtype), idx) in group(changes) {
        let rrset = view
            .rrsets
            .iter()
            .find(|r| r.rtype == rtype.to_string() && parse_fqdn(&r.name).is_ok_and(|n| n == name));
        let mut records: Vec<PdnsRecord> = rrset.map(|r| r.records.clone()).unwrap_or_default();
        let served: Vec<IpAddr> = records
            .iter()
            .filter(|r| !r.disabled)
            .filter_map(|r| r.content.parse().ok())
            .collect();
        let refs: Vec<&Change> = idx.iter().map(|i| &changes[*i]).collect();
        let plan = plan_rrset(&served, &refs);
        let mut new_ttl = rrset.map(|r| r.ttl);
        let mut changed = false;
        for (k, step) in plan.steps.iter().enumerate() {
            if *step != Step::Apply {
                continue;
            }
            changed = true;
            match refs[k] {
                Change::Remove(s) => {
                    set_disabled(&mut records, s.ip, true);
                }
                Change::Add(s) => {
                    new_ttl = new_ttl.or(s.ttl);
                    if !set_disabled(&mut records, s.ip, false) {
                        records.push(PdnsRecord {
                            content: s.ip.to_string(),
                            disabled: false,
                        });
                    }
                }
            }
        }
        if changed {
            patches.push(rrset_replace(
                &name,
                rtype,
                new_ttl.unwrap_or(shared.config.ttl),
                records,
            ));
        }
        for (k, step) in plan.steps.into_iter().enumerate() {
            outcomes.push((idx[k], step, rrset.map(|r| r.ttl), plan.final_len));
        }
    }
    let mut failed = None;
    if !patches.is_empty() {
        let n = patches.len();
        shared.patches_sent.fetch_add(1, Ordering::Relaxed);
        match shared.api.patch(&zone_s, patches).await {
            Ok(()) => {
                info!(zone = %zone, rrsets = n, changes = changes.len(), "PowerDNS RRsets replaced");
                if !shared.config.servers.is_empty() {
                    // Secondaries learn of the change at PowerDNS's next primary check
                    // (seconds) unless told now; the drain waits for them either way.
                    if let Err(e) = shared.api.notify(&zone_s).await {
                        warn!(zone = %zone, error = %e, "asking PowerDNS to NOTIFY the secondaries failed");
                    }
                }
            }
            Err(e) => failed = Some(AdapterError::from(e)),
        }
    }
    let mut results: Vec<Result<()>> = vec![Ok(()); changes.len()];
    for (i, step, ttl, final_len) in outcomes {
        results[i] = shared.clock.settle(&changes[i], step, failed.as_ref(), ttl, final_len);
    }
    results
}

/// Sets `disabled` on the records holding `ip`; whether any does.
fn set_disabled(records: &mut [PdnsRecord], ip: IpAddr, disabled: bool) -> bool {
    let mut found = false;
    for r in records
        .iter_mut()
        .filter(|r| r.content.parse::<IpAddr>().is_ok_and(|a| a == ip))
    {
        r.disabled = disabled;
        found = true;
    }
    found
}

fn rrset_replace(name: &Name, rtype: RecordType, ttl: u32, records: Vec<PdnsRecord>) -> serde_json::Value {
    let rrset = Rrset {
        name: name.to_string(),
        rtype: rtype.to_string(),
        ttl,
        records,
    };
    let mut v = serde_json::to_value(rrset).expect("an RRset serializes");
    v["changetype"] = "REPLACE".into();
    v
}
