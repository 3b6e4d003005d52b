//! Sluice's gRPC definitions:
//! - `v1` is the drain/restore API the gateway serves (`sluice/v1/sluice.proto`);
//! - `adapter::v1` is the out-of-process adapter protocol (`sluice/adapter/v1/adapter.proto`):
//!   any language can serve it, and the gateway's remote adapter calls it like a built-in
//!   adapter.

#![allow(clippy::all)]

pub mod adapter {
    pub mod v1 {
        tonic::include_proto!("sluice.adapter.v1");
    }
}

pub mod v1 {
    tonic::include_proto!("sluice.v1");

    /// The encoded descriptors of both packages, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_v1_descriptor");
}
