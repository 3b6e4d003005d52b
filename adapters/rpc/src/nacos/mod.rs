//! The Nacos 2.x registry adapter ([`NacosAdapter`]), through the Open API v2 over plain
//! HTTP. **Not yet tested against a real Nacos server**: none can be installed on the
//! project's machines; the tests drive a contract test double built from the published
//! API docs (see the crate README).
//!
//! - [`config`] — [`NacosConfig`] and [`DrainBy`].
//! - [`client`] — the hyper-based Open API client, login and error classes.
//! - `instance` — the instance calls (detail, list, update) and how answers are read.
//! - [`adapter`] — [`NacosAdapter`], the [`sluice_adapter::Adapter`] implementation.

pub mod adapter;
pub mod client;
pub mod config;
pub(crate) mod instance;

pub use adapter::{NacosAdapter, WEIGHT_KEY};
pub use config::{DrainBy, NacosConfig};
