//! Child processes that cannot outlive the test environment.
//!
//! Each child gets its own process group (so a stop signal reaches everything it started)
//! and writes stdout and stderr to a log file. Three layers make sure none is left behind:
//! [`ManagedProcess`] stops its group on drop; explicit shutdown does the same with a grace
//! period; and every child is started through `setpriv --pdeathsig KILL` from one
//! long-lived spawner thread, so the kernel kills it when the test process itself dies —
//! even by SIGKILL or an aborting panic, when no destructor runs.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{Error, Result};

/// How long a stopped process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How many lines of a log an error message shows.
const LOG_TAIL_LINES: usize = 40;

/// Where setpriv (util-linux) is looked for.
const SETPRIV: &str = "/usr/bin/setpriv";

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from the spawner thread, which lives as long as the process: the
/// parent-death signal fires when the *thread* that forked a child ends, so children must
/// not be forked from test threads or runtime workers that come and go.
fn spawn_from_long_lived_thread(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<std::io::Result<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("hostplug-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // The requester may have gone; then the child is dropped and reaped by
                    // nobody, which only leaves a zombie until this process ends.
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| tx)
    });
    let tx = match spawner {
        Ok(tx) => tx,
        Err(e) => return Err(std::io::Error::new(e.kind(), e.to_string())),
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.send((command, reply_tx))
        .map_err(|_| std::io::Error::other("the spawner thread has ended"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread did not answer"))?
}

/// A child process in its own process group, logging to a file, stopped on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
    /// Set once the group got its final SIGKILL: afterwards the id may belong to another
    /// process, so it is never signalled again.
    finished: bool,
}

impl ManagedProcess {
    /// Starts `program` with `args`, its output appended to `log`, in a new process group,
    /// with the parent-death signal set so it dies with the test process.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log: &Path,
    ) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut command = if Path::new(SETPRIV).is_file() {
            let mut c = Command::new(SETPRIV);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = spawn_from_long_lived_thread(command)
            .map_err(|e| Error::io(format!("starting {name} ({})", program.display()), e))?;
        Ok(ManagedProcess {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            exited: None,
            finished: false,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The process id (also the process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Ok while the process runs; [`Error::ProcessExited`] with its log's tail once it ended.
    pub fn check_running(&mut self) -> Result<()> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        match self.exited {
            None => Ok(()),
            Some(status) => Err(Error::ProcessExited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log),
            }),
        }
    }

    /// Sends `signal` to the whole process group (nothing if it already ended).
    fn signal_group(&mut self, signal: Signal) {
        if self.finished || self.reaped() {
            return;
        }
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return;
        };
        // ESRCH (group already gone) is fine.
        let _ = killpg(Pid::from_raw(pid), signal);
    }

    /// Whether the process has ended and been reaped.
    fn reaped(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_some()
    }

    /// Asks the process group to stop (SIGTERM); see [`Self::finish_stop`].
    pub fn request_stop(&mut self) {
        self.signal_group(Signal::SIGTERM);
    }

    /// Whether the process has ended.
    pub fn has_ended(&mut self) -> bool {
        self.reaped()
    }

    /// Kills the process group (SIGKILL) and reaps the process.
    pub fn kill(&mut self) {
        if self.finished {
            return;
        }
        // Signal first: signal_group does nothing once `finished` is set.
        self.signal_group(Signal::SIGKILL);
        self.finished = true;
        if self.exited.is_none() {
            self.exited = self.child.wait().ok();
        }
        // Members of the group that outlived their leader.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Stops the process: SIGTERM to its group, up to `grace` to end, then SIGKILL.
    /// Blocks the calling thread; async code uses [`stop_all`].
    pub fn stop_blocking(&mut self, grace: Duration) {
        self.request_stop();
        let deadline = Instant::now() + grace;
        while !self.reaped() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop_blocking(STOP_GRACE);
    }
}

/// Stops `processes` in order, each with SIGTERM, `grace`, then SIGKILL, without blocking
/// the async runtime.
pub async fn stop_all(processes: &mut [ManagedProcess], grace: Duration) {
    for p in processes.iter_mut() {
        p.request_stop();
        let deadline = tokio::time::Instant::now() + grace;
        while !p.has_ended() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.kill();
    }
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let Ok(file) = File::open(path) else {
        return format!("(cannot read {})", path.display());
    };
    let mut lines = VecDeque::with_capacity(LOG_TAIL_LINES);
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
    Vec::from(lines).join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_process_and_its_group_are_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("sh.log");
        // The shell starts a grandchild in the same group; both must end.
        let p = ManagedProcess::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c".into(), "sleep 300 & echo started; wait".into()],
            &[],
            &log,
        )
        .expect("spawn");
        let pgid = p.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !log_tail(&log).contains("started") && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        drop(p);
        // The orphaned grandchild is reaped by init shortly after it died.
        let pid = Pid::from_raw(i32::try_from(pgid).expect("pid fits"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while killpg(pid, None).is_ok() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            killpg(pid, None).is_err(),
            "process group {pgid} still has members"
        );
    }

    #[test]
    fn an_exited_process_reports_its_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("false.log");
        let mut p = ManagedProcess::spawn(
            "failing",
            Path::new("/bin/sh"),
            &["-c".into(), "echo something broke; exit 3".into()],
            &[],
            &log,
        )
        .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.check_running().is_ok() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let err = p
            .check_running()
            .expect_err("the process has exited")
            .to_string();
        assert!(err.contains("something broke"), "{err}");
        assert!(err.contains("failing"), "{err}");
    }
}
