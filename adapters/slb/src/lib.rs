//! `sluice-adapter-slb`: the Sluice adapter for HAProxy load balancers (2.6 and later),
//! driven through the runtime API (`stats socket ... level admin`).
//!
//! - [`runtime`]: a direct tokio client for the runtime API.
//! - [`error`]: HAProxy's error texts mapped to retryable / permanent errors.
//! - [`parse`]: parsers for `show stat`, `show servers state` and `show servers conn`.
//! - [`config`]: [`HaproxyConfig`], deserialized from the gateway config.
//! - [`assess`]: the evidence rules as a pure function.
//! - [`adapter`]: [`HaproxyAdapter`], the [`sluice_adapter::Adapter`] implementation.
//!
//! Drain: `deregister` sets `state drain` → `observe` (read-only) waits for `scur == 0 &&
//! used_cur == 0` and then says `advance` → `deregister` again sets `state maint` and
//! verifies again → `observe` reports `Drained`. Restore: `state drain; health down; state
//! ready` → wait for the health check to mark it UP → `Serving`. See the crate README for
//! the reasoning and what was tested against a real HAProxy 2.6.
//!
//! ```no_run
//! use sluice_adapter::{Adapter, Target, TrafficState};
//! use sluice_adapter_slb::{HaproxyAdapter, HaproxyConfig};
//!
//! # async fn demo(target: Target) -> Result<(), Box<dyn std::error::Error>> {
//! // `target.params` carries `backend: web`; the pod's ip:port selects the server.
//! let config: HaproxyConfig = serde_yaml::from_str(
//!     "name: edge\nendpoint: unix:/run/haproxy/admin.sock\nescalateAfterSeconds: 30\n",
//! )?;
//! let lb = HaproxyAdapter::new(config)?;
//! lb.deregister(&target).await?; // set server web/<srv> state drain
//! loop {
//!     // The engine polls, with a deadline.
//!     let obs = lb.observe(&target).await?; // never writes to HAProxy
//!     if obs.state == TrafficState::Drained {
//!         break;
//!     }
//!     if obs.advance {
//!         lb.deregister(&target).await?; // idle in DRAIN → MAINT, or the escalation is due
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! }
//! # Ok(())
//! # }
//! ```

pub mod adapter;
pub mod assess;
pub mod config;
pub mod error;
pub mod parse;
pub mod runtime;
/// Test support: a real HAProxy and loopback pods (feature `testing`, for this crate's
/// tests and other crates' conformance runs).
#[cfg(feature = "testing")]
pub mod testing;

pub use adapter::HaproxyAdapter;
pub use config::{dynamic_server_name, HaproxyConfig, Mode};
pub use error::RuntimeError;
pub use runtime::{AdminCommand, Endpoint, Health, RuntimeClient, DEFAULT_TIMEOUT};
