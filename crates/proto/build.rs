//! Generates the gRPC code for the driver protocol from `proto/provider.proto`.
//! `protox` parses the file in pure Rust, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/provider.proto");
    let descriptors = protox::compile(["proto/provider.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // These carry tokens and secret file contents: their `Debug` is
        // written by hand, redacting them (src/lib.rs).
        .skip_debug([".v1alpha1.MountRequest", ".v1alpha1.MountResponse", ".v1alpha1.File"])
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
