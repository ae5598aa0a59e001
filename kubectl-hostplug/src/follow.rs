//! `run --wait`: follows one HostTask by a watch until its current generation ends,
//! with a live progress bar on a terminal (nodes done of total, what is in flight) and,
//! off a terminal, one line per node phase change, so CI logs show the rollout too.
//! Progress goes to stderr; stdout stays for the result.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use futures::StreamExt as _;
use hostplug_api::crd::{HostTask, NodePhase};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;

use crate::Error;
use crate::terminal::plain;

/// Watch errors in a row after which `--wait` gives up (with the last error): the watch
/// retries with backoff, so five failures span several seconds — past a blip of the API
/// server, short of hiding a lasting problem such as missing RBAC.
const MAX_WATCH_ERRORS: u32 = 5;

/// How often the bar redraws its spinner and elapsed time while no event arrives.
const TICK: Duration = Duration::from_millis(120);

/// Whether a task's current generation has ended.
pub fn finished(t: &HostTask) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.observed_generation == t.metadata.generation && s.state.is_finished())
}

/// Watches task `name` until its current generation ends or `timeout` passes; returns
/// the ended task. `quiet` hides the progress (for `-o json|yaml` the bar still draws
/// on a terminal's stderr, but no phase lines are printed).
pub async fn until_finished(
    api: &Api<HostTask>,
    name: &str,
    timeout: Duration,
    quiet: bool,
) -> Result<HostTask, Error> {
    let on_terminal = std::io::stderr().is_terminal();
    let bar = if on_terminal {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let style = ProgressStyle::with_template(
        "{spinner} {prefix} [{bar:30.cyan/blue}] {pos}/{len} nodes {percent:>3}%  {msg}  ({elapsed})",
    )
    .map_err(|e| Error::Internal(format!("progress template: {e}")))?
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(name.to_owned());
    bar.enable_steady_tick(TICK);

    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut errors = 0;
    let mut phases: BTreeMap<String, NodePhase> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let result = loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let task = match next {
            Err(_) => {
                break Err(Error::WaitTimeout {
                    name: name.to_owned(),
                    seconds: timeout.as_secs(),
                });
            }
            Ok(None) => break Err(Error::Internal("the watch ended".to_owned())),
            Ok(Some(Err(e))) => {
                errors += 1;
                if errors >= MAX_WATCH_ERRORS {
                    break Err(Error::Watch {
                        name: name.to_owned(),
                        source: e,
                    });
                }
                note(
                    &bar,
                    quiet,
                    &plain(&format!("watch of {name} failed, retrying: {e}")),
                );
                continue;
            }
            Ok(Some(Ok(t))) => {
                errors = 0;
                t
            }
        };
        // Status of an earlier generation (an edited task): not this run's progress yet.
        let status = task.status.clone().unwrap_or_default();
        if status.observed_generation == task.metadata.generation {
            bar.set_length(u64::try_from(status.nodes_total).unwrap_or(0));
            bar.set_position(u64::try_from(status.nodes_done).unwrap_or(0));
            bar.set_message(in_flight(&status.nodes));
            for n in &status.nodes {
                if phases.insert(n.node.clone(), n.phase) != Some(n.phase) && !on_terminal && !quiet
                {
                    eprintln!("{}: {} {:?}", plain(name), plain(&n.node), n.phase);
                }
            }
        }
        if finished(&task) {
            break Ok(task);
        }
    };
    bar.finish_and_clear();
    result
}

/// `2 running, 1 starting`: what is moving right now.
fn in_flight(nodes: &[hostplug_api::crd::NodeResult]) -> String {
    let count = |p: NodePhase| nodes.iter().filter(|n| n.phase == p).count();
    let mut parts = Vec::new();
    for (p, word) in [
        (NodePhase::Starting, "starting"),
        (NodePhase::Running, "running"),
        (NodePhase::Failed, "failed"),
    ] {
        let n = count(p);
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    parts.join(", ")
}

fn note(bar: &ProgressBar, quiet: bool, text: &str) {
    if quiet {
        return;
    }
    if bar.is_hidden() {
        eprintln!("{text}");
    } else {
        bar.println(text);
    }
}
