//! Prints the hostplug CRDs as YAML, or writes them into directories (`crdgen DIR…`).
//! `deploy/crds/` and the Helm chart's copy are generated with
//! `cargo run -p hostplug-api --bin crdgen -- deploy/crds deploy/helm/hostplug/crds`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let docs = match hostplug_api::crd::crd_yaml() {
        Ok(docs) => docs,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        for yaml in docs.values() {
            println!("---\n{yaml}");
        }
    }
    for dir in &dirs {
        for (file, yaml) in &docs {
            let path = std::path::Path::new(dir).join(file);
            if let Err(e) = std::fs::write(&path, yaml) {
                eprintln!("crdgen: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
