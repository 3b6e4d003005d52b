use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=sluice/adapter/v1/adapter.proto");
    println!("cargo:rerun-if-changed=sluice/v1/sluice.proto");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("sluice_v1_descriptor.bin"))
        .compile_protos(&["sluice/adapter/v1/adapter.proto", "sluice/v1/sluice.proto"], &["."])
        .expect("compiling protos (needs protoc: apt-get install protobuf-compiler)");
}
