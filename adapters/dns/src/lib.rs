//! `sluice-adapter-dns`: the Sluice `dns` adapters. A pod whose IP is published in DNS is
//! not drained when its record is deleted: it is drained when no authoritative server
//! answers it any more *and* every cache that could hold it has expired.
//!
//! - [`Rfc2136Adapter`]: RFC 2136 dynamic UPDATE signed with TSIG (hmac-sha256/384/512),
//!   for BIND 9, Knot and anything else that takes them.
//! - [`PowerDnsAdapter`]: the PowerDNS HTTP API; a drain disables the record (reversible).
//!
//! Modules:
//! - [`config`]: [`Rfc2136Config`], [`PowerDnsConfig`] (from the gateway config).
//! - [`secret`]: TSIG key files / env secrets, PowerDNS API keys.
//! - [`names`]: target parameters → [`RecordSpec`].
//! - [`wire`]: one query / one signed UPDATE over UDP (TCP fallback).
//! - [`plan`]: a batch of changes against the zone's RRsets (the last-address rule).
//! - [`batch`]: per-zone coalescing of changes into one message.
//! - [`discovery`]: the zone's authoritative servers (configured or from NS).
//! - [`evidence`]: every server's answer, asked directly.
//! - [`assess`]: the evidence + TTL rules as a pure function; [`clock`]: drain memory.
//! - [`rfc2136`], [`pdns`]: the two adapters.
//!
//! ```no_run
//! use sluice_adapter::{Adapter, Target, TrafficState};
//! use sluice_adapter_dns::{Rfc2136Adapter, Rfc2136Config};
//!
//! # async fn demo(target: Target) -> Result<(), Box<dyn std::error::Error>> {
//! // `target.params` carries `name: api.example.com`; the pod's IP is the record.
//! let config: Rfc2136Config = serde_yaml::from_str(
//!     "name: corp-dns\nprimary: 10.0.0.2:53\nzones: [example.com]\ntsigKeyFile: /etc/sluice/ddns.key\n",
//! )?;
//! let dns = Rfc2136Adapter::new(config)?;
//! dns.deregister(&target).await?; // UPDATE: delete this address only
//! loop {
//!     let obs = dns.observe(&target).await?; // every authoritative server, then the TTL
//!     if obs.state == TrafficState::Drained {
//!         break;
//!     }
//!     tokio::time::sleep(obs.remaining.unwrap_or(std::time::Duration::from_millis(50))).await;
//! }
//! # Ok(())
//! # }
//! ```

pub mod assess;
pub mod batch;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod error;
pub mod evidence;
pub mod names;
pub mod pdns;
pub mod plan;
pub mod rfc2136;
pub mod secret;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use config::{PowerDnsConfig, Rfc2136Config, DEFAULT_TTL};
pub use error::DnsError;
pub use names::RecordSpec;
pub use pdns::PowerDnsAdapter;
pub use rfc2136::Rfc2136Adapter;
pub use secret::{SecretSource, TsigKey};
pub use wire::Wire;
