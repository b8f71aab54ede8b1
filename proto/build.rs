//! Compiles `clearml/agent/v1/*.proto` with protox (a pure-Rust protobuf compiler), so building the
//! workspace needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["clearml/agent/v1/agent.proto"];
    println!("cargo:rerun-if-changed=clearml");
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
