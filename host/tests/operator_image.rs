//! The operator image ships only the real built-in plugins, each with its capabilities.
//!
//! `deploy/operator/Dockerfile` has two ways to fill the image: `source` compiles in the
//! build, `prebuilt` takes the files cargo built (what tests/images builds and checks,
//! including the image's plugin directory). The `source` path needs the Rust image,
//! which cannot be pulled on this machine, so this test reads it: the `plugins` stage
//! names its built-ins in one `BUILTIN_PLUGINS` argument, builds exactly those packages
//! (never the workspace, which holds the test plugins and the examples), copies exactly
//! those `.wasm` files and their `capabilities.json`, the `source` stage takes its plugin
//! directory and the runtime stage takes nothing else. Then it runs the stage's copy loop
//! with a shell over a stand-in target directory holding every plugin the workspace
//! builds, and checks what lands in the image's plugin directory.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dockerfile() -> String {
    std::fs::read_to_string(repo().join("deploy/operator/Dockerfile")).expect("Dockerfile")
}

/// The `plugins` stage: from its `FROM … AS plugins` to the next `FROM`.
fn plugins_stage(text: &str) -> &str {
    let start = text.find(" AS plugins").expect("a `plugins` stage");
    let rest = &text[start..];
    let end = rest[1..].find("\nFROM ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

fn builtins(stage: &str) -> Vec<String> {
    let line = stage
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG BUILTIN_PLUGINS="))
        .expect("ARG BUILTIN_PLUGINS=\"…\" in the plugins stage");
    line.trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn only_the_real_plugins_are_built_in() {
    let text = dockerfile();
    let stage = plugins_stage(&text);
    let names = builtins(stage);
    assert_eq!(
        names,
        [
            "etc-file",
            "docker-image",
            "containerd-image",
            "systemd-unit"
        ]
    );
    for n in &names {
        let dir = repo().join("plugins").join(n);
        assert!(
            dir.join("Cargo.toml").is_file(),
            "plugins/{n} is not a plugin"
        );
        let caps: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("capabilities.json"))
                .unwrap_or_else(|e| panic!("plugins/{n}/capabilities.json: {e}")),
        )
        .unwrap_or_else(|e| panic!("plugins/{n}/capabilities.json: {e}"));
        assert!(
            caps["etc"].is_string() && caps["docker"].is_boolean(),
            "{n}: {caps}"
        );
    }
    assert!(
        !stage.contains("--workspace"),
        "the plugins stage must build the built-ins only, not the workspace with its test plugins"
    );
    assert!(
        !stage.contains("rm -f"),
        "no removing of files by name: list what ships instead"
    );
    // The `source` stage takes the plugin directory from this stage, nothing else, and
    // the runtime stage takes it from `source` (or `prebuilt`) as /out/plugins.
    let copies: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("COPY --from=plugins"))
        .collect();
    assert_eq!(copies, ["COPY --from=plugins /out/plugins/ /out/plugins/"]);
    let runtime = &text[text.rfind("\nFROM ").expect("a runtime stage")..];
    let copies: Vec<&str> = runtime
        .lines()
        .filter(|l| l.contains("/usr/lib/hostplug/plugins/") && l.starts_with("COPY"))
        .collect();
    assert_eq!(
        copies,
        ["COPY --from=binaries /out/plugins/ /usr/lib/hostplug/plugins/"]
    );
}

/// Runs the stage's copy loop (everything after `mkdir -p /out/plugins`) with `sh`, with
/// its paths moved into a scratch directory, over a release directory holding every
/// plugin of the workspace.
#[test]
fn the_copy_loop_ships_the_built_ins_and_their_capabilities_only() {
    let text = dockerfile();
    let stage = plugins_stage(&text);
    let run = stage
        .split("\nRUN ")
        .find(|r| r.contains("/out/plugins"))
        .expect("the RUN that fills /out/plugins");
    let script: String = run.replace("\\\n", " ");
    let copy = script
        .split("mkdir -p /out/plugins")
        .nth(1)
        .expect("the copy loop")
        .trim_start()
        .trim_start_matches("&&")
        .to_owned();

    let tmp = tempfile::tempdir().expect("tempdir");
    let release = tmp.path().join("release");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&release).expect("mkdir");
    std::fs::create_dir_all(&out).expect("mkdir");
    let mut workspace = Vec::new();
    for group in ["", "testing", "examples"] {
        for entry in std::fs::read_dir(repo().join("plugins").join(group)).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.join("Cargo.toml").is_file() && path.file_name().is_some_and(|n| n != "sdk") {
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                std::fs::write(
                    release.join(format!("{}.wasm", name.replace('-', "_"))),
                    &name,
                )
                .expect("write");
                workspace.push(name);
            }
        }
    }
    assert!(
        workspace.iter().any(|n| n.starts_with("test-")),
        "{workspace:?}"
    );
    let copy = copy
        .replace(
            "/tmp/plugins/wasm32-wasip2/release",
            &release.display().to_string(),
        )
        .replace("/out/plugins", &out.display().to_string());
    let status = Command::new("sh")
        .arg("-ec")
        .arg(&copy)
        .env("BUILTIN_PLUGINS", builtins(stage).join(" "))
        .current_dir(repo().join("plugins"))
        .status()
        .expect("sh");
    assert!(status.success(), "the copy loop failed: {copy}");
    let mut shipped: Vec<String> = std::fs::read_dir(&out)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    assert_eq!(
        shipped,
        [
            "containerd-image.capabilities.json",
            "containerd-image.wasm",
            "docker-image.capabilities.json",
            "docker-image.wasm",
            "etc-file.capabilities.json",
            "etc-file.wasm",
            "systemd-unit.capabilities.json",
            "systemd-unit.wasm",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(out.join("etc-file.wasm")).expect("read"),
        "etc-file"
    );
    assert!(Path::new(&out).join("etc-file.capabilities.json").is_file());
}
