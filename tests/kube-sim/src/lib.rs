//! kube-sim: a Kubernetes API server simulator that kube-rs and kubectl talk to over real
//! HTTP(S), exactly as they would to a cluster.
//!
//! It serves `core/v1` pods, namespaces and events, `events.k8s.io/v1` events,
//! `coordination.k8s.io/v1` leases and `apiextensions.k8s.io/v1` CRDs (whose resources are
//! then served from generic JSON storage), with kube-apiserver's semantics for
//! resourceVersions, selectors, pagination, watches, patches, the status subresource,
//! finalizers and graceful deletion. See the crate's README for what is and is not
//! implemented.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kube_sim::{Cluster, ClusterConfig};
//! let cluster = Cluster::start(ClusterConfig::new("east")).await?;
//! std::fs::write("/tmp/kubeconfig", cluster.kubeconfig())?; // for kube-rs or kubectl
//! cluster.faults().drop_watches();
//! # Ok(()) }
//! ```
//!
//! Layout: `server` (HTTP, auth, routing) → `read` (list, watch) and `ops` (writes) →
//! `store` (tables, history, snapshots) holding `object`s; `pods`, `crd`, `events` and
//! `patch` hold per-resource rules; `zero` the shape Go gives the built-in types on the way
//! out; `kubelet` and the reaper in `cluster` are the controllers a real cluster would run.

pub mod admission;
pub mod cluster;
pub mod crd;
pub mod events;
pub mod faults;
pub mod kubelet;
pub mod object;
pub mod ops;
pub mod patch;
pub mod pods;
pub mod read;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;
pub mod tokenreview;
pub mod zero;

pub use cluster::{kubeconfig, Cluster, ClusterConfig, ObjectApi};
pub use faults::{Failure, Faults, RequestRecord, WriteRecord};
pub use kubelet::{Kubelet, KubeletConfig, POD_IP_ANNOTATION};
pub use ops::DeleteOpts;
pub use patch::PatchType;
pub use status::ApiError;
