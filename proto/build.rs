//! Compiles `proto/marquee/*.proto` with protox (pure Rust: no system `protoc`).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "marquee/common.proto",
        "marquee/user.proto",
        "marquee/cinema.proto",
        "marquee/payment.proto",
        "marquee/booking.proto",
        "marquee/notification.proto",
        "marquee/events.proto",
        "marquee/ticket.proto",
    ];
    println!("cargo:rerun-if-changed=proto");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files)?;
    let fds = compiler.file_descriptor_set();

    // tonic-reflection needs the encoded set; compile_fds ignores file_descriptor_set_path.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("marquee_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
