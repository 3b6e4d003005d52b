//! Everything that talks to Kubernetes: the per-cluster watches ([`watch`]) and the
//! guarded writes to pods ([`writer`]).

pub mod watch;
pub mod writer;

pub use writer::{pod_reference, MetaEdit, PodWriter, WriteError, Written};
