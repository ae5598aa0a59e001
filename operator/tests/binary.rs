//! The `hostplug-operator` binary starts and documents its flags. (Also makes `cargo test
//! --workspace` build the binary, which the end-to-end tests run as a process.)

#[test]
fn help_lists_the_flags() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hostplug-operator"))
        .arg("--help")
        .output()?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    for flag in [
        "--namespace",
        "--worker-image",
        "--plugin-dir",
        "--lease-seconds",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
    Ok(())
}
