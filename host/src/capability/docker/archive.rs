//! `save-archive` and `load-archive`: `docker save` into and `docker load` from the
//! node's image archive directory, streamed by the host between the daemon and a tar
//! file, so the plugin never holds the bytes or names a path.
//!
//! A file name is a plain name ending in `.tar` ([`check_archive_name`]), opened without
//! following a link, in the one directory the worker mounted. It must never write
//! outside that directory, write in a dry run, or exceed [`MAX_ARCHIVE_BYTES`].

use std::io::{BufReader, ErrorKind as IoKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use super::client::DockerClient;
use super::http::{self, Sink};
use super::policy::validate_path;
use crate::capability::CapabilityError;

/// Largest image archive `save-archive` writes and `load-archive` sends: 8 GiB. Node
/// images run to a few GiB; the bound keeps a plugin from filling the node's disk with
/// one call. The call's deadline bounds it too.
pub const MAX_ARCHIVE_BYTES: u64 = 8 << 30;

/// Longest archive file name: 128 bytes.
const MAX_ARCHIVE_NAME_BYTES: usize = 128;

/// Longest image reference `save-archive` takes: 512 bytes (a reference with a digest is
/// under 300).
const MAX_SAVE_IMAGE_BYTES: usize = 512;

/// Most of an error answer read to quote the daemon's message: 64 KiB.
const MAX_ERROR_BODY_BYTES: u64 = 64 << 10;

/// What `save-archive` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArchiveInfo {
    pub bytes: u64,
    pub sha256: String,
    pub replaced: bool,
}

/// An archive file name: a plain name (letters, digits, `.`, `_`, `-`; not starting
/// with `.`) ending in `.tar`, so it can only ever name a file directly in the archive
/// directory. Anything else is [`CapabilityError::Invalid`].
pub(crate) fn check_archive_name(file: &str) -> Result<(), CapabilityError> {
    let ok = file.len() <= MAX_ARCHIVE_NAME_BYTES
        && file.len() > ".tar".len()
        && file.ends_with(".tar")
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CapabilityError::invalid(format!(
            "archive file {:?}: a plain file name of letters, digits, '.', '_' and '-', \
             not starting with '.', ending in .tar, at most {MAX_ARCHIVE_NAME_BYTES} bytes",
            file.chars().take(60).collect::<String>()
        )))
    }
}

/// Percent-encodes one path segment (an image reference holds `/` and `:`).
fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Opens an existing file without following a symbolic link at its last component.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// A file being written, hashed as it goes.
struct FileSink {
    file: std::fs::File,
    hasher: sha2::Sha256,
    taken: u64,
}

impl Sink for FileSink {
    fn taken(&self) -> u64 {
        self.taken
    }
    fn put(&mut self, bytes: &[u8]) -> Result<(), CapabilityError> {
        use sha2::Digest as _;
        self.file
            .write_all(bytes)
            .map_err(|e| CapabilityError::failed(format!("writing the archive: {e}")))?;
        self.hasher.update(bytes);
        self.taken += bytes.len() as u64;
        Ok(())
    }
}

/// The sha256 of the regular file at `path` (not following a link), if there is one.
fn file_sha256(path: &Path) -> Option<(u64, String)> {
    use sha2::Digest as _;
    let mut f = open_no_follow(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut hasher = sha2::Sha256::new();
    let n = std::io::copy(&mut f, &mut hasher).ok()?;
    Some((n, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

impl DockerClient {
    fn archive_dir(&self, what: &str) -> Result<&Path, CapabilityError> {
        if self.read_only {
            return Err(CapabilityError::denied(format!(
                "{what} is not allowed in a read-only call (a dry run, or a method that \
                 does not declare itself mutating): it changes the node"
            )));
        }
        self.archives.as_deref().ok_or_else(|| {
            CapabilityError::denied(
                "this worker has no image archive directory (it comes with the docker \
                 capability when the node's /var/lib/hostplug/image-archives is mounted)",
            )
        })
    }

    /// Connects and sends a request head (and nothing of a body yet).
    fn send_head(
        &self,
        method: &str,
        path: &str,
        extra: &str,
        deadline: Instant,
    ) -> Result<UnixStream, CapabilityError> {
        validate_path(path)?;
        let head = format!(
            "{method} /{}{path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: hostplug\r\nConnection: close\r\n{extra}\r\n",
            self.policy.api_version
        );
        let mut stream = http::connect(&self.socket, deadline)?;
        http::send(&mut stream, head.as_bytes(), deadline)?;
        Ok(stream)
    }

    /// `GET /images/{image}/get` streamed into `file` in the archive directory: written
    /// to a temporary file, hashed, then renamed over `file` unless `file` already held
    /// exactly these bytes (then nothing changes and `replaced` is false).
    pub(crate) fn save_archive(
        &self,
        image: &str,
        file: &str,
        deadline: Instant,
    ) -> Result<ArchiveInfo, CapabilityError> {
        use sha2::Digest as _;
        let dir = self.archive_dir("save-archive")?.to_path_buf();
        check_archive_name(file)?;
        if image.is_empty() || image.len() > MAX_SAVE_IMAGE_BYTES {
            return Err(CapabilityError::invalid(format!(
                "image must be 1 to {MAX_SAVE_IMAGE_BYTES} bytes"
            )));
        }
        let deadline = deadline.min(Instant::now() + self.policy.timeout);
        let path = format!("/images/{}/get", encode_segment(image));
        let stream = self.send_head("GET", &path, "Accept: application/x-tar\r\n", deadline)?;
        let mut reader = BufReader::new(stream);
        let head = http::read_head(&mut reader, deadline)?;
        if head.status != 200 {
            let mut body = Vec::new();
            http::read_body(
                &mut reader,
                "GET",
                &head,
                deadline,
                MAX_ERROR_BODY_BYTES,
                &mut body,
            )?;
            let message = format!(
                "docker: HTTP {}: {}",
                head.status,
                http::daemon_message(&body)
            );
            return Err(if head.status == 404 {
                CapabilityError::NotFound(message)
            } else {
                CapabilityError::Failed(message)
            });
        }
        let tmp = dir.join(format!(
            ".{file}.{}.tmp",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let created = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| CapabilityError::failed(format!("creating {}: {e}", tmp.display())))?
        };
        let mut sink = FileSink {
            file: created,
            hasher: sha2::Sha256::new(),
            taken: 0,
        };
        let written = http::read_body(
            &mut reader,
            "GET",
            &head,
            deadline,
            MAX_ARCHIVE_BYTES,
            &mut sink,
        )
        .and_then(|()| {
            sink.file
                .sync_all()
                .map_err(|e| CapabilityError::failed(format!("writing the archive: {e}")))
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let sha256 = format!("sha256:{}", hex::encode(sink.hasher.finalize()));
        let bytes = sink.taken;
        let target = dir.join(file);
        if file_sha256(&target).is_some_and(|(n, h)| n == bytes && h == sha256) {
            let _ = std::fs::remove_file(&tmp);
            return Ok(ArchiveInfo {
                bytes,
                sha256,
                replaced: false,
            });
        }
        std::fs::rename(&tmp, &target).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CapabilityError::failed(format!("saving {}: {e}", target.display()))
        })?;
        Ok(ArchiveInfo {
            bytes,
            sha256,
            replaced: true,
        })
    }

    /// Sends `file` of the archive directory to `POST /images/load?quiet=1`; returns the
    /// daemon's answer (JSON lines such as `{"stream":"Loaded image: …"}`).
    pub(crate) fn load_archive(
        &self,
        file: &str,
        deadline: Instant,
    ) -> Result<String, CapabilityError> {
        let dir = self.archive_dir("load-archive")?;
        check_archive_name(file)?;
        let path = dir.join(file);
        let mut f = open_no_follow(&path).map_err(|e| {
            if e.kind() == IoKind::NotFound {
                CapabilityError::not_found(format!(
                    "no archive {file} in the image archive directory"
                ))
            } else {
                CapabilityError::failed(format!("opening {}: {e}", path.display()))
            }
        })?;
        let meta = f
            .metadata()
            .map_err(|e| CapabilityError::failed(format!("reading {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(CapabilityError::invalid(format!(
                "{file} is not a regular file"
            )));
        }
        if meta.len() > MAX_ARCHIVE_BYTES {
            return Err(CapabilityError::denied(format!(
                "{file} has {} bytes, more than the limit of {MAX_ARCHIVE_BYTES}",
                meta.len()
            )));
        }
        let deadline = deadline.min(Instant::now() + self.policy.timeout);
        let mut stream = self.send_head(
            "POST",
            "/images/load?quiet=1",
            &format!(
                "Accept: application/json\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n",
                meta.len()
            ),
            deadline,
        )?;
        let mut left = meta.len();
        let mut buf = vec![0u8; 64 << 10];
        while left > 0 {
            let n = f
                .read(&mut buf)
                .map_err(|e| CapabilityError::failed(format!("reading {}: {e}", path.display())))?;
            if n == 0 {
                return Err(CapabilityError::failed(format!(
                    "{file} shrank while it was being sent"
                )));
            }
            let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            http::send(&mut stream, &buf[..n], deadline)?;
            left -= n as u64;
        }
        stream.flush().map_err(|e| http::io_error(&e))?;
        let mut reader = BufReader::new(stream);
        let r = http::read_response(
            &mut reader,
            "POST",
            deadline,
            self.policy.max_response_bytes,
        )?;
        if r.status != 200 {
            return Err(CapabilityError::failed(format!(
                "docker: HTTP {}: {}",
                r.status,
                http::daemon_message(&r.body)
            )));
        }
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_plain_tar_file_names() {
        for good in ["node-images.tar", "a.tar", "k8s_1.33-pause.tar"] {
            assert_eq!(check_archive_name(good), Ok(()), "{good}");
        }
        for bad in [
            ".tar",
            ".hidden.tar",
            "x.tgz",
            "../x.tar",
            "dir/x.tar",
            "x y.tar",
            &format!("{}.tar", "a".repeat(MAX_ARCHIVE_NAME_BYTES)),
        ] {
            assert!(
                matches!(check_archive_name(bad), Err(CapabilityError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn image_references_are_encoded_as_one_segment() {
        assert_eq!(
            encode_segment("registry:5000/app:1.0"),
            "registry%3A5000%2Fapp%3A1.0"
        );
    }
}
