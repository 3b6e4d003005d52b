//! The etcd v3 registry adapter ([`EtcdAdapter`]): gRPC-go naming, go-micro, Kratos and
//! custom key/value layouts.
//!
//! - [`config`] — [`EtcdConfig`] and the [`Preset`]s.
//! - [`layout`] — where a pod's entry lives and what its value says (pure).
//! - [`client`] — the etcd calls, with errors mapped to retryable / permanent.
//! - `evidence` — the evidence rules as pure functions.
//! - `watch` — the settle watch that catches the service re-registering itself.
//! - [`adapter`] — [`EtcdAdapter`], the [`sluice_adapter::Adapter`] implementation.

pub mod adapter;
pub mod client;
pub mod config;
pub(crate) mod evidence;
pub mod layout;
pub(crate) mod watch;

pub use adapter::EtcdAdapter;
pub use config::{EtcdConfig, Preset};
pub use layout::Locate;
