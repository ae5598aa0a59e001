//! Prints the hostplug CRDs as YAML, or writes them into a directory (`crdgen DIR`).
//! `deploy/crds/` is generated with `cargo run -p hostplug-api --bin crdgen -- deploy/crds`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let docs = match hostplug_api::crd::crd_yaml() {
        Ok(docs) => docs,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::env::args().nth(1) {
        None => {
            for yaml in docs.values() {
                println!("---\n{yaml}");
            }
        }
        Some(dir) => {
            for (file, yaml) in &docs {
                let path = std::path::Path::new(&dir).join(file);
                if let Err(e) = std::fs::write(&path, yaml) {
                    eprintln!("crdgen: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
