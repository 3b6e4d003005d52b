//! Out-of-process adapters.
//!
//! - [`RemoteAdapter`]: the gateway side. Implements the same `Adapter` contract as the
//!   built-in adapters by calling a plugin over the `sluice.adapter.v1` gRPC protocol
//!   (`proto/sluice/adapter/v1/adapter.proto`), so the engine cannot tell them apart.
//! - [`serve`]: the plugin side, for teams writing their adapter in Rust: implement
//!   `sluice_adapter::Adapter` for your in-house registry and serve it in a few lines:
//!
//! ```no_run
//! # async fn run(my_adapter: std::sync::Arc<dyn sluice_adapter::Adapter>) -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! sluice_adapter_remote::serve(my_adapter, listener).await?;
//! # Ok(()) }
//! ```
//!
//! Any other language serves the same protocol (see `examples/python-plugin/`).

mod client;
mod convert;
mod server;

pub use client::{parse_params, RemoteAdapter, RemoteConfig, TlsConfig};
pub use server::{serve, serve_tls, PluginService};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "v1";
