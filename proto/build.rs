fn main() {
    println!("cargo:rerun-if-changed=sluice/adapter/v1/adapter.proto");
    tonic_prost_build::configure()
        .compile_protos(&["sluice/adapter/v1/adapter.proto"], &["."])
        .expect("compiling protos (needs protoc: apt-get install protobuf-compiler)");
}
