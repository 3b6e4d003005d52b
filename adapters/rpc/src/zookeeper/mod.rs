//! The ZooKeeper registry adapter for Dubbo's layout ([`ZookeeperDubboAdapter`]).
//!
//! - [`config`] — [`ZookeeperDubboConfig`].
//! - [`dubbo`] — Dubbo's URL encoding, URL parsing and the override configurator (pure).
//! - [`client`] — the adapter's own ZooKeeper session, errors mapped to retryable / permanent.
//! - [`adapter`] — [`ZookeeperDubboAdapter`], the [`sluice_adapter::Adapter`] implementation.

pub mod adapter;
pub mod client;
pub mod config;
pub mod dubbo;

pub use adapter::ZookeeperDubboAdapter;
pub use config::ZookeeperDubboConfig;
