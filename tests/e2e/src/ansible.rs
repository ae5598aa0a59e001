//! Ansible, the tool a user would otherwise pick, for the benches that print hostplug's
//! figures beside it: `ansible-playbook` from ansible-core in a venv under
//! `~/.cache/hostplug/ansible-venv`, made from PyPI on first use.
//!
//! Only the benches use it; no test asserts anything about Ansible.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// `ansible-playbook` from the venv, made on first use (`python3 -m venv`, then `pip
/// install ansible-core`).
pub fn ansible_playbook() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME not set")?;
    let venv = Path::new(&home).join(".cache/hostplug/ansible-venv");
    let bin = venv.join("bin/ansible-playbook");
    if !bin.is_file() {
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?
            .success()
            && std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "ansible-core"])
                .status()?
                .success();
        if !ok {
            bail!("installing ansible-core into {} failed", venv.display());
        }
    }
    Ok(bin)
}

/// The venv's own Python (`ansible_python_interpreter` for local hosts).
pub fn python_of(playbook: &Path) -> PathBuf {
    playbook
        .parent()
        .map(|p| p.join("python3"))
        .unwrap_or_else(|| PathBuf::from("python3"))
}
