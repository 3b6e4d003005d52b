//! `sluice-adapter-rpc`: Sluice adapters (kind `rpc`) for the service registries RPC
//! consumers find providers through. A pod is drained from RPC traffic when the registry no
//! longer offers it **and stays that way** for a settle window — services re-register
//! themselves (heartbeats, session reconnects), and consumers only follow a registry
//! change after a notification or a poll.
//!
//! - [`etcd`] — [`EtcdAdapter`]: etcd v3 with the gRPC-go naming, go-micro and Kratos
//!   layouts, or a custom key/value template. Drain deletes the instance key (or writes the
//!   custom disabled form); a watch catches the service putting it back.
//! - [`zookeeper`] — [`ZookeeperDubboAdapter`]: Dubbo providers in ZooKeeper. Drain writes
//!   Dubbo's own override configurator (`disabled=true` for the provider's `ip:port`).
//! - [`nacos`] — [`NacosAdapter`]: Nacos 2.x through the Open API v2 (`enabled=false` or
//!   weight 0). Tested against a contract test double only, not a real Nacos server.
//! - [`common`] — secrets from files / env, the settle clock, shared checks.
//! - `testing` (cargo feature `testing`) — real etcd and ZooKeeper servers as child
//!   processes, for tests and benchmarks.
//!
//! Every adapter is built from a serde config (`deny_unknown_fields`, camelCase, secrets
//! only through `...File` / `...Env` fields) with a fallible `new(config)` that never
//! touches the network. See the crate README for the drain/restore sequences, the evidence
//! and what was tested against real servers.
//!
//! ```no_run
//! use sluice_adapter::{Adapter, Target, TrafficState};
//! use sluice_adapter_rpc::EtcdAdapter;
//!
//! # async fn demo(target: Target) -> Result<(), Box<dyn std::error::Error>> {
//! // `target.params` carries `service: greeter`; the pod's ip:port completes the key.
//! let config = serde_yaml::from_str(
//!     "name: registry\nendpoints: [http://127.0.0.1:2379]\npreset: grpc-go\nsettleSeconds: 3\n",
//! )?;
//! let registry = EtcdAdapter::new(config)?;
//! registry.deregister(&target).await?; // delete greeter/<ip:port>
//! while registry.observe(&target).await?.state != TrafficState::Drained {
//!     tokio::time::sleep(std::time::Duration::from_millis(50)).await; // the engine polls, with a deadline
//! }
//! # Ok(())
//! # }
//! ```

pub mod common;
pub mod etcd;
pub mod nacos;
#[cfg(feature = "testing")]
pub mod testing;
pub mod zookeeper;

pub use etcd::{EtcdAdapter, EtcdConfig, Preset};
pub use nacos::{DrainBy, NacosAdapter, NacosConfig};
pub use zookeeper::{ZookeeperDubboAdapter, ZookeeperDubboConfig};
