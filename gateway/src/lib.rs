//! Sluice: a traffic-drain gateway for lossless releases on Kubernetes.
//!
//! Before a pod is updated, deleted or moved, every traffic component that can send it work
//! takes its IP out, and Sluice proves the traffic is gone before it lets the release go
//! on; afterwards it puts the IP back, proves it serves, and only then lets the pod count as
//! Ready. See `ARCHITECTURE.md` at the repository root for the contract and the layout:
//!
//! - [`config`]: the gateway's own YAML configuration.
//! - [`binding`]: the `TrafficBinding` CRD.
//! - [`model`]: the engine's view of pods, resolved bindings, the registration ledger and
//!   the status summary; contract names. No client.
//! - [`planner`]: the pure decision function.
//! - [`engine`]: shared state and the executor (per-pod workers, budgets, drift repair,
//!   orphan sweep).
//! - [`k8s`]: per-cluster watches and guarded writes to pods, Events.
//! - [`api`]: the gRPC drain/restore API (`sluice.v1`), its authentication, authorization
//!   and audit.
//! - [`gateway`]: wiring and the health endpoint.
//! - [`demo`]: the lossless-rollout demo on an embedded simulated cluster.

pub mod admission;
pub mod api;
pub mod authority;
pub mod binding;
pub mod client;
pub mod config;
pub mod conformance_cmd;
pub mod demo;
pub mod endpoint;
pub mod engine;
pub mod gateway;
pub mod k8s;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod planner;
pub mod prestop;
pub mod telemetry;
pub mod tenancy;
