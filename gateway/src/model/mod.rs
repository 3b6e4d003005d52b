//! The engine's model of the cluster, free of any client: pods as the engine sees them
//! ([`pod`]), bindings resolved against the adapters ([`binding`]), the registration ledger
//! ([`ledger`]) and the status summary ([`status`]). The names written on pods are part of
//! the product's contract (see ARCHITECTURE.md).

pub mod binding;
pub mod ledger;
pub mod pod;
pub mod status;

pub use binding::{resolve, Binding, BindingKey, BindingState, Budget, InvalidBinding, ResolvedTarget, Selector};
pub use ledger::{LedgerEntry, TargetId, LEDGER_ANNOTATION, LEDGER_FINALIZER};
pub use pod::{
    drain_request, finalizer, finalizer_kind, prestop_mark, Labels, PodKey, PodView, DESIRED_ANNOTATION,
    DESIRED_BY_ANNOTATION, DOMAIN, DRAIN_REQUEST_ANNOTATION, GATE, KRUISE_STATE, PRESTOP_ANNOTATION,
};
pub use status::{State, StatusSummary, STATUS_ANNOTATION};
