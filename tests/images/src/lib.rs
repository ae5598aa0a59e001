//! hostplug's three images — operator, console, worker — built with Podman from the
//! Dockerfiles users build (`deploy/operator/Dockerfile`, `deploy/web/Dockerfile`,
//! `worker/Dockerfile`) and from the binaries cargo already built, for the tests that run
//! them: compiling the workspace a second time inside a container does not fit CI's time.
//!
//! Each Dockerfile has two ways to fill its runtime stage: `source` (the default: compile
//! in the build) and `prebuilt` (take the files from `prebuilt/` in the build context).
//! [`ImageStore::build`] lays out a context with the binaries and built-in plugins, builds
//! with `--build-arg BINARIES=prebuilt`, and saves the image as a docker archive, the
//! format `ctr -n k8s.io images import` and `podman load` take. The runtime stage — base
//! image, paths, user, entrypoint — is the Dockerfile's own, the same for both paths.
//!
//! The base image (`gcr.io/distroless/cc-debian12:nonroot`) cannot be pulled here: `make
//! setup` makes it as a root filesystem tar (`tests/images/distroless-base.sh`), and this
//! crate imports it under that name.
//!
//! The systemd test node's image ([`SYSTEMD_NODE_IMAGE`], used by
//! `hostplug_testenv::systemd`) is made the same way: `tests/images/systemd-node.sh`
//! (mmdebstrap, Debian bookworm with systemd and dbus) writes a root filesystem tar keyed
//! by the script's hash, and [`ImageStore::systemd_node`] imports it — running the script
//! first when `make setup` has not. Both imports are one function ([`ImageStore`]'s
//! `import_rootfs`), labelled with the tar's key so a changed recipe is imported again.
//!
//! Everything is cached by content under `${HOSTPLUG_CACHE:-~/.cache/hostplug}/images`:
//! an image's key is the sha256 of its Dockerfile, the base tar's recipe and every file
//! put into the context, so an unchanged build costs a few hashes. Podman runs with its
//! own storage, run state, configuration and temporary files there (the machine's own
//! Podman state is never used); builds and containers get no network (`--network none`),
//! so nothing here touches the machine's iptables. Builds take a lock: one at a time.
//!
//! This crate must never pull or push an image, or talk to anything but its own Podman.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The operator image, as `deploy/operator/deployment.yaml` names it.
pub const OPERATOR_IMAGE: &str = "ghcr.io/hostplug/operator:dev";
/// The console image, as `deploy/web/deployment.yaml` names it.
pub const WEB_IMAGE: &str = "ghcr.io/hostplug/web:dev";
/// The worker image: the operator's default `HOSTPLUG_WORKER_IMAGE`, and what
/// `deploy/operator/deployment.yaml` sets it to.
pub const WORKER_IMAGE: &str = "ghcr.io/hostplug/worker:dev";
/// The base image of all three, as the Dockerfiles name it.
pub const BASE_IMAGE: &str = "gcr.io/distroless/cc-debian12:nonroot";
/// The unprivileged user of the base image (distroless `nonroot`), which all three
/// images run as.
pub const NONROOT_UID: u32 = 65532;

/// The script `make setup` runs to make the base image's root filesystem, relative to
/// the repository root. Its sha256 names the tar it makes.
pub const BASE_SCRIPT: &str = "tests/images/distroless-base.sh";

/// The systemd test node's image: Debian bookworm (minbase) with systemd as PID 1, the
/// D-Bus system bus and hostplug's test service (see [`SYSTEMD_NODE_SCRIPT`]). `localhost/`
/// because it comes from no registry.
pub const SYSTEMD_NODE_IMAGE: &str = "localhost/hostplug/systemd-node:bookworm";

/// The script that makes the systemd test node's root filesystem, relative to the
/// repository root. Its sha256 names the tar it makes.
pub const SYSTEMD_NODE_SCRIPT: &str = "tests/images/systemd-node.sh";

/// Label on an image imported from a root filesystem tar: the tar's key, so a changed
/// recipe is imported again.
const BASE_LABEL: &str = "dev.hostplug.images.base";
/// Label on each built image: its content key, so a stale image under the same name is
/// never taken for the current one.
const KEY_LABEL: &str = "dev.hostplug.images.key";
/// Part of every image key; change it when the way images are built changes in a way the
/// inputs do not show.
const RECIPE: &str = "hostplug-images 1\n";
/// Docker archives kept per image: the newest 2. Each is as large as the binaries
/// (~100 MB for a debug build); the previous one stays for a test run that started
/// before the newest was made and still imports it.
const ARCHIVES_KEPT: usize = 2;
/// Lines of a failed Podman command's output quoted in the error.
const LOG_TAIL_LINES: usize = 30;

/// What the base image's configuration says, as distroless's `nonroot` tag does: the
/// user, its home as working directory, the usual PATH and where the CA bundle is.
const BASE_CHANGES: [&str; 4] = [
    "USER=65532",
    "WORKDIR=/home/nonroot",
    "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
];

/// What can go wrong while building or saving an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `make setup` has not made the base image's root filesystem.
    #[error(
        "the base image's root filesystem {} is missing — run `make setup` \
         (it runs {BASE_SCRIPT})",
        path.display()
    )]
    BaseMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A binary or plugin that goes into an image is not there.
    #[error("{}: {reason}", path.display())]
    Input {
        /// The missing or unreadable file.
        path: PathBuf,
        /// What is wrong and how to get it.
        reason: String,
    },
    /// A Dockerfile does not say what this crate relies on.
    #[error("{}: {reason}", path.display())]
    Dockerfile {
        /// The Dockerfile.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A Podman command failed.
    #[error("{what} failed ({status}); last lines of {}:\n{tail}", log.display())]
    Podman {
        /// The command, in words.
        what: String,
        /// How it ended.
        status: String,
        /// Its full output.
        log: PathBuf,
        /// The last lines of that output.
        tail: String,
    },
    /// A root filesystem recipe (`tests/images/*.sh`) failed.
    #[error("{script} failed ({status}); last lines of {}:\n{tail}", log.display())]
    Recipe {
        /// The script, relative to the repository root.
        script: String,
        /// How it ended.
        status: String,
        /// Its full output.
        log: PathBuf,
        /// The last lines of that output.
        tail: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// One of hostplug's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Image {
    /// The operator and the built-in plugins.
    Operator,
    /// The web console.
    Web,
    /// The worker that runs plugins on a node.
    Worker,
}

impl Image {
    /// All three.
    pub const ALL: [Image; 3] = [Image::Operator, Image::Web, Image::Worker];

    /// The image's name and tag.
    pub const fn name(self) -> &'static str {
        match self {
            Image::Operator => OPERATOR_IMAGE,
            Image::Web => WEB_IMAGE,
            Image::Worker => WORKER_IMAGE,
        }
    }

    /// Its Dockerfile, relative to the repository root.
    pub const fn dockerfile(self) -> &'static str {
        match self {
            Image::Operator => "deploy/operator/Dockerfile",
            Image::Web => "deploy/web/Dockerfile",
            Image::Worker => "worker/Dockerfile",
        }
    }

    /// The binary it runs (its entrypoint, in `/usr/local/bin`).
    pub const fn binary(self) -> &'static str {
        match self {
            Image::Operator => "hostplug-operator",
            Image::Web => "hostplug-web",
            Image::Worker => "hostplug-worker",
        }
    }

    /// A short name for files.
    const fn short(self) -> &'static str {
        match self {
            Image::Operator => "operator",
            Image::Web => "web",
            Image::Worker => "worker",
        }
    }
}

/// Where the files that go into the images come from.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The directory holding `hostplug-operator`, `hostplug-web` and `hostplug-worker`
    /// (a cargo profile directory, e.g. `target/debug`).
    pub bin_dir: PathBuf,
    /// The directory holding the built plugins (`<name>.wasm` and
    /// `<name>.capabilities.json`, what `make plugins` writes to `target/plugins`).
    pub plugin_dir: PathBuf,
}

impl Binaries {
    /// The binaries of the cargo profile the running test executable belongs to
    /// (`target/<profile>/deps/<test>` → `target/<profile>`), and the plugins of
    /// `HOSTPLUG_PLUGIN_DIR` or `target/plugins`.
    pub fn of_this_build() -> Result<Self> {
        let exe = std::env::current_exe().map_err(io_err("locating the test executable"))?;
        let bin_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| Error::Input {
                path: exe.clone(),
                reason: "the test executable is not in a cargo target directory".into(),
            })?
            .to_path_buf();
        let plugin_dir = std::env::var_os("HOSTPLUG_PLUGIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/plugins"));
        Ok(Self {
            bin_dir,
            plugin_dir,
        })
    }
}

/// The repository root (this crate lives in `tests/images`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An image built (or found in the cache) and saved.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Which image.
    pub image: Image,
    /// Its name and tag, also the name in the archive.
    pub name: &'static str,
    /// The docker archive (`podman save --format docker-archive`).
    pub archive: PathBuf,
    /// The content key: sha256 over the Dockerfile, the base recipe and the context.
    pub key: String,
    /// Whether it came from the cache (nothing was built).
    pub cached: bool,
    /// How long getting it took.
    pub took: Duration,
}

/// An image imported from a root filesystem tar that a recipe script made.
#[derive(Debug, Clone)]
pub struct RootfsImage {
    /// Its name and tag in the store.
    pub name: &'static str,
    /// The root filesystem tar (kept in the cache; a test may read files from it).
    pub tar: PathBuf,
    /// The tar's key: the first 16 hex digits of the recipe script's sha256.
    pub key: String,
    /// Whether the tar was made now (the recipe ran) rather than found in the cache.
    pub made: bool,
    /// Whether the tar was imported now rather than found in the store.
    pub imported: bool,
    /// How long getting it took.
    pub took: Duration,
}

/// Podman with its own storage under the cache directory, and the images built there.
#[derive(Debug, Clone)]
pub struct ImageStore {
    /// `<cache>/images`.
    dir: PathBuf,
    repo: PathBuf,
}

impl ImageStore {
    /// The store under `${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/images`, for the
    /// Dockerfiles of this repository; creates its directories and Podman configuration.
    pub fn open() -> Result<Self> {
        let cache = match std::env::var_os("HOSTPLUG_CACHE") {
            Some(c) => PathBuf::from(c),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/hostplug"),
        };
        Self::open_in(cache.join("images"), repo_root())
    }

    /// A store in `dir` for the Dockerfiles of the repository at `repo`.
    pub fn open_in(dir: PathBuf, repo: PathBuf) -> Result<Self> {
        let store = Self { dir, repo };
        let p = store.podman_dir();
        for sub in ["storage", "run", "tmp"] {
            fs::create_dir_all(p.join(sub))
                .map_err(io_err(format!("creating {}", p.join(sub).display())))?;
        }
        for sub in ["archives", "context", "logs"] {
            let d = store.dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        store.write_podman_config()?;
        Ok(store)
    }

    fn podman_dir(&self) -> PathBuf {
        self.dir.join("podman")
    }

    /// Podman's configuration, all in the store (see tests/images/README.md for why each
    /// setting). Rewritten at every open: cheap, and a changed path is picked up.
    fn write_podman_config(&self) -> Result<()> {
        let p = self.podman_dir();
        let d = p.display();
        let containers = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{d}/tmp/events.log\"\n\
             image_copy_tmp_dir = \"{d}/tmp\"\n\
             lock_type = \"file\"\n\
             runtime = \"runc\"\n\
             tmp_dir = \"{d}/tmp\"\n"
        );
        let storage = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n"
        );
        // No search registries: a short name never resolves to a public registry, and
        // builds run with --pull=never anyway.
        let registries = "unqualified-search-registries = []\n";
        for (name, text) in [
            ("containers.conf", containers.as_str()),
            ("storage.conf", storage.as_str()),
            ("registries.conf", registries),
        ] {
            write_if_changed(&p.join(name), text)?;
        }
        Ok(())
    }

    /// A `podman` command on this store's storage and configuration.
    pub fn podman(&self) -> Command {
        let p = self.podman_dir();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", p.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", p.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", p.join("registries.conf"))
            .env("TMPDIR", p.join("tmp"))
            .arg("--root")
            .arg(p.join("storage"))
            .arg("--runroot")
            .arg(p.join("run"))
            .arg("--tmpdir")
            .arg(p.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        cmd
    }

    /// Runs `podman ARGS`, its output into `logs/<log>.log`; fails with the log's tail.
    fn podman_logged(&self, what: &str, log: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        let log = self.dir.join("logs").join(format!("{log}.log"));
        let out = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("log file"))?;
        let status = self
            .podman()
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(io_err(
                "starting podman (is it installed? `make setup` installs it)",
            ))?;
        if status.success() {
            return Ok(());
        }
        Err(Error::Podman {
            what: what.to_owned(),
            status: status.to_string(),
            tail: tail(&log),
            log,
        })
    }

    /// A label of a local image, `None` when the image or the label is not there.
    fn label(&self, image: &str, label: &str) -> Option<String> {
        let out = self
            .podman()
            .args(["image", "inspect", "--format"])
            .arg(format!("{{{{index .Labels \"{label}\"}}}}"))
            .arg(image)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !value.is_empty() && value != "<no value>").then_some(value)
    }

    /// The base image in this store, imported from the tar `make setup` made unless the
    /// same one is there already. Returns the tar's key.
    fn ensure_base(&self) -> Result<String> {
        let key = self.script_key(BASE_SCRIPT)?;
        let tar = self
            .dir
            .join("base")
            .join(format!("distroless-cc-debian12-{key}.tar"));
        if self.label(BASE_IMAGE, BASE_LABEL).as_deref() != Some(key.as_str()) {
            if !tar.is_file() {
                return Err(Error::BaseMissing { path: tar });
            }
            self.import_rootfs(&tar, BASE_IMAGE, &key, &BASE_CHANGES, "base")?;
        }
        Ok(key)
    }

    /// The first 16 hex digits of the sha256 of a recipe script (relative to the
    /// repository root): the key in its tar's name.
    fn script_key(&self, script: &str) -> Result<String> {
        Ok(sha256_file(&self.repo.join(script))?[..16].to_owned())
    }

    /// `podman import` of a root filesystem tar under `name`, with `changes` to its
    /// configuration and the tar's `key` as [`BASE_LABEL`].
    fn import_rootfs(
        &self,
        tar: &Path,
        name: &str,
        key: &str,
        changes: &[&str],
        log: &str,
    ) -> Result<()> {
        let mut args: Vec<std::ffi::OsString> = vec!["import".into()];
        for change in changes
            .iter()
            .map(|c| (*c).to_owned())
            .chain([format!("LABEL={BASE_LABEL}={key}")])
        {
            args.push("--change".into());
            args.push(change.into());
        }
        args.push(tar.as_os_str().to_owned());
        args.push(name.into());
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        self.podman_logged(&format!("podman import of {name}"), log, &refs)
    }

    /// The systemd test node's image ([`SYSTEMD_NODE_IMAGE`]) in this store: its root
    /// filesystem tar is made by [`SYSTEMD_NODE_SCRIPT`] when the cache has none with the
    /// script's key (mmdebstrap downloads Debian's packages: about 1.5–4 minutes), and
    /// imported when the store's image carries another key. Builds take the store's
    /// build lock, so parallel tests make it once.
    pub fn systemd_node(&self) -> Result<RootfsImage> {
        let started = Instant::now();
        let lock_path = self.dir.join("build.lock");
        let lock = File::create(&lock_path)
            .map_err(io_err(format!("creating {}", lock_path.display())))?;
        lock.lock()
            .map_err(io_err(format!("locking {}", lock_path.display())))?;
        let key = self.script_key(SYSTEMD_NODE_SCRIPT)?;
        let tar = self
            .dir
            .join("base")
            .join(format!("systemd-node-bookworm-{key}.tar"));
        let made = !tar.is_file();
        if made {
            self.make_rootfs(SYSTEMD_NODE_SCRIPT, "systemd-node-rootfs")?;
            if !tar.is_file() {
                return Err(Error::Input {
                    path: tar,
                    reason: format!("{SYSTEMD_NODE_SCRIPT} ended without making it"),
                });
            }
        }
        let imported = self.label(SYSTEMD_NODE_IMAGE, BASE_LABEL).as_deref() != Some(&*key);
        if imported {
            self.import_rootfs(&tar, SYSTEMD_NODE_IMAGE, &key, &[], "systemd-node")?;
        }
        drop(lock);
        Ok(RootfsImage {
            name: SYSTEMD_NODE_IMAGE,
            tar,
            key,
            made,
            imported,
            took: started.elapsed(),
        })
    }

    /// Runs a root filesystem recipe (`script`, relative to the repository root) with
    /// this store's cache directory, its output into `logs/<log>.log`.
    fn make_rootfs(&self, script: &str, log: &str) -> Result<()> {
        let log = self.dir.join("logs").join(format!("{log}.log"));
        let out = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("log file"))?;
        let cache = self.dir.parent().unwrap_or(&self.dir);
        let status = Command::new("bash")
            .arg(self.repo.join(script))
            .env("HOSTPLUG_CACHE", cache)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(io_err(format!("running {script}")))?;
        if status.success() {
            return Ok(());
        }
        Err(Error::Recipe {
            script: script.to_owned(),
            status: status.to_string(),
            tail: tail(&log),
            log,
        })
    }

    /// Builds `image` from `binaries` (or finds it in the cache), leaves it in this
    /// store under its name and saves it as a docker archive.
    pub fn build(&self, image: Image, binaries: &Binaries) -> Result<BuiltImage> {
        let started = Instant::now();
        let lock_path = self.dir.join("build.lock");
        let lock = File::create(&lock_path)
            .map_err(io_err(format!("creating {}", lock_path.display())))?;
        lock.lock()
            .map_err(io_err(format!("locking {}", lock_path.display())))?;

        let dockerfile = self.repo.join(image.dockerfile());
        let dockerfile_text = fs::read_to_string(&dockerfile)
            .map_err(io_err(format!("reading {}", dockerfile.display())))?;
        let inputs = context_inputs(image, binaries, &dockerfile, &dockerfile_text)?;
        let base_key = self.ensure_base()?;

        let mut hasher = Sha256::new();
        hasher.update(RECIPE);
        hasher.update(format!("base {base_key}\n"));
        hasher.update(format!("dockerfile {}\n", dockerfile_text.len()));
        hasher.update(&dockerfile_text);
        for input in &inputs {
            let content = match &input.source {
                Some(path) => sha256_file(path)?,
                None => "directory".to_owned(),
            };
            hasher.update(format!("{} {content}\n", input.context_path));
        }
        let key = hex::encode(hasher.finalize());
        let archive =
            self.dir
                .join("archives")
                .join(format!("{}-{}.tar", image.short(), &key[..16]));

        let cached = archive.is_file();
        if cached {
            // The archive is the cache; the store's copy is restored from it when the
            // store lost it (or holds another build under the name).
            if self.label(image.name(), KEY_LABEL).as_deref() != Some(key.as_str()) {
                self.podman_logged(
                    &format!("podman load of {}", archive.display()),
                    &format!("{}-load", image.short()),
                    &["load".as_ref(), "-i".as_ref(), archive.as_os_str()],
                )?;
            }
        } else {
            self.build_uncached(image, &dockerfile, &inputs, &key, &archive)?;
        }
        drop(lock);
        Ok(BuiltImage {
            image,
            name: image.name(),
            archive,
            key,
            cached,
            took: started.elapsed(),
        })
    }

    fn build_uncached(
        &self,
        image: Image,
        dockerfile: &Path,
        inputs: &[ContextInput],
        key: &str,
        archive: &Path,
    ) -> Result<()> {
        let context = tempfile::Builder::new()
            .prefix(image.short())
            .tempdir_in(self.dir.join("context"))
            .map_err(io_err("creating a build context"))?;
        for input in inputs {
            let dest = context.path().join(&input.context_path);
            match &input.source {
                Some(src) => {
                    if let Some(parent) = dest.parent() {
                        fs::create_dir_all(parent)
                            .map_err(io_err(format!("creating {}", parent.display())))?;
                    }
                    // A hard link costs nothing; another file system gets a copy.
                    if fs::hard_link(src, &dest).is_err() {
                        fs::copy(src, &dest).map_err(io_err(format!(
                            "copying {} into the build context",
                            src.display()
                        )))?;
                    }
                }
                None => fs::create_dir_all(&dest)
                    .map_err(io_err(format!("creating {}", dest.display())))?,
            }
        }
        let label = format!("{KEY_LABEL}={key}");
        self.podman_logged(
            &format!("podman build of {}", image.name()),
            &format!("{}-build", image.short()),
            &[
                "build".as_ref(),
                "--pull=never".as_ref(),
                "--network=none".as_ref(),
                "--build-arg".as_ref(),
                "BINARIES=prebuilt".as_ref(),
                "--label".as_ref(),
                label.as_ref(),
                "--file".as_ref(),
                dockerfile.as_os_str(),
                "--tag".as_ref(),
                image.name().as_ref(),
                context.path().as_os_str(),
            ],
        )?;
        drop(context);

        let partial = archive.with_extension("tar.partial");
        let _ = fs::remove_file(&partial);
        self.podman_logged(
            &format!("podman save of {}", image.name()),
            &format!("{}-save", image.short()),
            &[
                "save".as_ref(),
                "--format".as_ref(),
                "docker-archive".as_ref(),
                "--output".as_ref(),
                partial.as_os_str(),
                image.name().as_ref(),
            ],
        )?;
        fs::rename(&partial, archive).map_err(io_err(format!(
            "moving the archive to {}",
            archive.display()
        )))?;

        // The build's intermediate images (the `prebuilt` stage) and earlier builds under
        // the same name are dangling now; the lock is held, so no build is using them.
        self.podman_logged(
            "podman image prune",
            "prune",
            &["image".as_ref(), "prune".as_ref(), "--force".as_ref()],
        )?;
        self.remove_old_archives(image, archive)
    }

    /// Keeps the newest [`ARCHIVES_KEPT`] archives of `image` (the one just written
    /// among them).
    fn remove_old_archives(&self, image: Image, newest: &Path) -> Result<()> {
        let dir = self.dir.join("archives");
        let prefix = format!("{}-", image.short());
        let mut others: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&dir)
            .map_err(io_err(format!("listing {}", dir.display())))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p != newest
                    && p.extension().is_some_and(|x| x == "tar")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix))
            })
            .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
            .collect();
        others.sort();
        let remove = others.len().saturating_sub(ARCHIVES_KEPT - 1);
        for (_, path) in others.into_iter().take(remove) {
            let _ = fs::remove_file(path);
        }
        Ok(())
    }

    /// Builds all three images.
    pub fn build_all(&self, binaries: &Binaries) -> Result<Vec<BuiltImage>> {
        Image::ALL
            .iter()
            .map(|image| self.build(*image, binaries))
            .collect()
    }
}

/// An image archive written for loading into a cluster ([`ImageStore::export_all`]).
#[derive(Debug, Clone)]
pub struct ExportedImage {
    /// The image's name and tag inside the archive (what the cluster's Pods name).
    pub name: &'static str,
    /// The archive: `<out>/<operator|web|worker>.tar`.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Whether the image came from the cache (nothing was built).
    pub cached: bool,
    /// How long building (or finding) and writing it took.
    pub took: Duration,
}

impl ImageStore {
    /// Builds all three images (or finds them in the cache) and writes each as
    /// `<out>/<short name>.tar` — the cached docker archive, hard-linked when `out` is on
    /// the same file system, else copied. A docker archive (what `docker save` writes):
    /// it names the image in its `manifest.json` (`RepoTags`), which every loader reads,
    /// and it is what the real-node tests import with `ctr images import`.
    pub fn export_all(&self, binaries: &Binaries, out: &Path) -> Result<Vec<ExportedImage>> {
        fs::create_dir_all(out).map_err(io_err(format!("creating {}", out.display())))?;
        let mut exported = Vec::new();
        for built in self.build_all(binaries)? {
            let started = Instant::now();
            let path = out.join(format!("{}.tar", built.image.short()));
            let partial = path.with_extension("tar.partial");
            let _ = fs::remove_file(&partial);
            if fs::hard_link(&built.archive, &partial).is_err() {
                fs::copy(&built.archive, &partial).map_err(io_err(format!(
                    "copying {} to {}",
                    built.archive.display(),
                    partial.display()
                )))?;
            }
            fs::rename(&partial, &path)
                .map_err(io_err(format!("moving the archive to {}", path.display())))?;
            let bytes = fs::metadata(&path)
                .map_err(io_err(format!("reading {}", path.display())))?
                .len();
            exported.push(ExportedImage {
                name: built.name,
                path,
                bytes,
                cached: built.cached,
                took: built.took + started.elapsed(),
            });
        }
        Ok(exported)
    }
}

/// A file (or an empty directory, `source: None`) of a build context.
#[derive(Debug)]
struct ContextInput {
    context_path: String,
    source: Option<PathBuf>,
}

/// What goes into `prebuilt/` for `image`, as its Dockerfile's `prebuilt` stage says.
fn context_inputs(
    image: Image,
    binaries: &Binaries,
    dockerfile: &Path,
    dockerfile_text: &str,
) -> Result<Vec<ContextInput>> {
    let binary = binaries.bin_dir.join(image.binary());
    if !binary.is_file() {
        return Err(Error::Input {
            path: binary,
            reason: "not built; run `cargo build --workspace --bins`".into(),
        });
    }
    let mut inputs = vec![ContextInput {
        context_path: format!("prebuilt/{}", image.binary()),
        source: Some(binary),
    }];
    match image {
        Image::Operator => {
            for name in builtin_plugins(dockerfile, dockerfile_text)? {
                for file in [format!("{name}.wasm"), format!("{name}.capabilities.json")] {
                    let path = binaries.plugin_dir.join(&file);
                    if !path.is_file() {
                        return Err(Error::Input {
                            path,
                            reason: "not built; run `make plugins`".into(),
                        });
                    }
                    inputs.push(ContextInput {
                        context_path: format!("prebuilt/plugins/{file}"),
                        source: Some(path),
                    });
                }
            }
        }
        Image::Web => inputs.push(ContextInput {
            context_path: "prebuilt/data".into(),
            source: None,
        }),
        Image::Worker => {}
    }
    Ok(inputs)
}

/// The built-in plugins the operator image ships: the `BUILTIN_PLUGINS` argument of its
/// Dockerfile, the one list both build paths follow.
pub fn builtin_plugins(dockerfile: &Path, text: &str) -> Result<Vec<String>> {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG BUILTIN_PLUGINS="))
        .ok_or_else(|| Error::Dockerfile {
            path: dockerfile.to_path_buf(),
            reason: "no `ARG BUILTIN_PLUGINS=\"…\"` line".into(),
        })?;
    Ok(line
        .trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// The sha256 of a file, in hex.
fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::Input {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let partial = path.with_extension("partial");
    fs::write(&partial, text).map_err(io_err(format!("writing {}", partial.display())))?;
    fs::rename(&partial, path).map_err(io_err(format!("writing {}", path.display())))
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_dockerfile_names_its_builtins() {
        let path = repo_root().join(Image::Operator.dockerfile());
        let text = fs::read_to_string(&path).expect("Dockerfile");
        assert_eq!(
            builtin_plugins(&path, &text).expect("BUILTIN_PLUGINS"),
            [
                "etc-file",
                "docker-image",
                "containerd-image",
                "systemd-unit"
            ]
        );
        assert!(builtin_plugins(&path, "FROM scratch\n").is_err());
    }
}
