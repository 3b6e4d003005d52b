//! [`Rfc2136Adapter`]: the `dns` adapter for servers that take TSIG-signed dynamic updates
//! (RFC 2136 + RFC 8945) — BIND 9, Knot, PowerDNS with `dnsupdate=yes`.
//!
//! **Drain** (`deregister`): the pod's address is removed from its RRset in one UPDATE
//! (coalesced with other changes for the zone, see [`crate::batch`]), after reading the
//! RRset on the primary: never the last address unless the target says `allowEmpty`.
//! `observe` then asks every authoritative server directly until none answers the
//! address, and waits out the TTL rules of [`crate::assess`]; `remaining` carries the
//! time left.
//!
//! **Restore** (`register`): the address is added (RRset add, other records untouched);
//! `observe` reports `Serving` once every authoritative server answers it.

mod update;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType, TSigner};
use sluice_adapter::{Adapter, AdapterError, Capabilities, Observation, Result, Target};

use crate::batch::{Batcher, Executor};
use crate::config::Rfc2136Config;
use crate::discovery::{Authorities, ServerSource};
use crate::evidence::{authoritative, observe_record};
use crate::names::RecordSpec;
use crate::plan::Change;
use crate::secret::TsigKey;
use crate::wire::Wire;

pub use update::{ATTEMPTS, MAX_MESSAGE_BYTES};

/// What the batch task shares with the adapter.
pub(crate) struct Shared {
    config: Rfc2136Config,
    signer: TSigner,
    wire: Wire,
    clock: crate::clock::DrainClock,
    updates_sent: AtomicU64,
}

/// The RFC 2136 (`dns`) adapter.
pub struct Rfc2136Adapter {
    shared: Arc<Shared>,
    authorities: Authorities,
    batcher: Batcher<Name, Change, Result<()>>,
}

impl std::fmt::Debug for Rfc2136Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136Adapter")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Rfc2136Adapter {
    /// An adapter for one configured primary. Loads the TSIG key now; fails (permanently)
    /// when the key can't be read or parsed.
    pub fn new(config: Rfc2136Config) -> Result<Self> {
        let fail = |e: String| AdapterError::permanent(format!("dns adapter '{}': {e}", config.name));
        let key = TsigKey::load(
            &config.tsig_secret,
            config.tsig_key_name.as_deref(),
            &config.tsig_algorithm,
        )
        .map_err(fail)?;
        Self::with_key(config, &key)
    }

    /// An adapter with an already loaded key (tests, embedding).
    pub fn with_key(config: Rfc2136Config, key: &TsigKey) -> Result<Self> {
        let fail = |e: String| AdapterError::permanent(format!("dns adapter '{}': {e}", config.name));
        let signer = key.signer().map_err(fail)?;
        let source = match &config.servers {
            Some(list) => ServerSource::Configured(list.clone()),
            None => ServerSource::Discover {
                resolver: config.resolver,
                port: config.ns_port,
            },
        };
        let authorities = Authorities::new(config.primary, source);
        let shared = Arc::new(Shared {
            wire: Wire::new(config.timeout),
            signer,
            clock: crate::clock::DrainClock::new(),
            updates_sent: AtomicU64::new(0),
            config,
        });
        let for_batches = shared.clone();
        let executor: Executor<Name, Change, Result<()>> = Arc::new(move |zone: Name, changes: Vec<Change>| {
            let shared = for_batches.clone();
            Box::pin(async move { update::execute(&shared, &zone, &changes).await })
        });
        Ok(Rfc2136Adapter {
            batcher: Batcher::new(shared.config.batch_window, executor),
            authorities,
            shared,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Rfc2136Config {
        &self.shared.config
    }

    /// How many UPDATE messages carrying changes this adapter has sent (for tests and
    /// metrics: batching shows as far fewer messages than changes).
    pub fn updates_sent(&self) -> u64 {
        self.shared.updates_sent.load(Ordering::Relaxed)
    }

    /// The servers a drain in `zone` is verified on (the primary first).
    pub async fn authoritative_servers(&self, zone: &Name) -> Result<Vec<std::net::SocketAddr>> {
        Ok(self.authorities.servers(&self.shared.wire, zone).await?.to_vec())
    }

    fn spec(&self, target: &Target) -> Result<RecordSpec> {
        RecordSpec::from_target(target, &self.shared.config.zones)
    }

    async fn submit(&self, change: Change) -> Result<()> {
        let zone = change.spec().zone.clone();
        self.batcher
            .submit(zone, change)
            .await
            .map_err(|e| AdapterError::retryable(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl Adapter for Rfc2136Adapter {
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
        let spec = self.spec(target)?;
        self.submit(Change::Add(spec)).await
    }

    async fn deregister(&self, target: &Target) -> Result<()> {
        let spec = self.spec(target)?;
        self.submit(Change::Remove(spec)).await
    }

    async fn observe(&self, target: &Target) -> Result<Observation> {
        let spec = self.spec(target)?;
        observe_record(
            &self.shared.wire,
            &self.authorities,
            &self.shared.clock,
            self.shared.config.ttl,
            &spec,
        )
        .await
    }

    async fn health(&self) -> Result<()> {
        let shared = &self.shared;
        for zone in &shared.config.zones {
            let soa = shared.wire.query(shared.config.primary, zone, RecordType::SOA).await?;
            authoritative(soa, shared.config.primary, zone)?;
            let noop = update::noop_update(zone);
            shared
                .wire
                .update(shared.config.primary, noop, &shared.signer, zone)
                .await?;
            self.authorities.servers(&shared.wire, zone).await?;
        }
        Ok(())
    }
}
