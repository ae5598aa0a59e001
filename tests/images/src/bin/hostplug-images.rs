//! `make images`: hostplug's three images (operator, console, worker) built with Podman
//! from their Dockerfiles and the binaries cargo already built, as the tests build them
//! ([`hostplug_images::ImageStore`]), written as image archives into one directory for
//! loading into a cluster (`kind load image-archive`, `ctr -n k8s.io images import`,
//! `k3s ctr images import`, `docker load`, `podman load`).
//!
//! It never pulls or pushes an image: the archives are files, loading them is the user's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hostplug_images::{Binaries, ImageStore};

/// Builds the operator, console and worker images and writes them as archives.
#[derive(Debug, Parser)]
#[command(name = "hostplug-images", version)]
struct Args {
    /// Directory of the built binaries (hostplug-operator, hostplug-web,
    /// hostplug-worker): a cargo profile directory such as target/debug.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Directory of the built plugins (`make plugins` writes target/plugins).
    #[arg(long)]
    plugin_dir: PathBuf,
    /// Where the archives go (`operator.tar`, `web.tar`, `worker.tar`).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = || -> Result<(), hostplug_images::Error> {
        let store = ImageStore::open()?;
        let binaries = Binaries {
            bin_dir: args.bin_dir.clone(),
            plugin_dir: args.plugin_dir.clone(),
        };
        for exported in store.export_all(&binaries, &args.out)? {
            println!(
                "{}  {}  ({} MB, {}, {:.1?})",
                exported.path.display(),
                exported.name,
                exported.bytes / 1_000_000,
                if exported.cached { "cached" } else { "built" },
                exported.took
            );
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostplug-images: {e}");
            ExitCode::FAILURE
        }
    }
}
