//! Generates the gRPC server and client of `proto/accounts.proto`. protox
//! parses the proto in Rust, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/accounts.proto");
    let descriptors = protox::compile(["proto/accounts.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(descriptors)?;
    Ok(())
}
