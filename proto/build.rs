//! Compiles `proto/weir/v1/weir.proto` with protox (a protobuf compiler in Rust, so building
//! needs no `protoc` on the machine) and generates the tonic client and server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/weir/v1/weir.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        // Bytes that are not the expected message are the sender's error (INVALID_ARGUMENT),
        // not the server's (prost's codec says INTERNAL).
        .codec_path("crate::codec::WeirCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
