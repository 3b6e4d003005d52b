//! Sluice's gRPC definitions. `adapter::v1` is the out-of-process adapter protocol
//! (`sluice/adapter/v1/adapter.proto`): any language can serve it, and the gateway's remote
//! adapter calls it like a built-in adapter.

#![allow(clippy::all)]

pub mod adapter {
    pub mod v1 {
        tonic::include_proto!("sluice.adapter.v1");
    }
}
