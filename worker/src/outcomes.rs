//! The outcomes of recent named invocations, for exactly-once delivery.
//!
//! An invoke request may carry an invocation id. The first request with an id runs the
//! plugin and its outcome (success or the plugin's failure) is kept here; a later request
//! with the same id gets that outcome back instead of a second run, and one arriving
//! while the first still runs waits for it. So an operator that lost its answer (it
//! crashed, the connection broke) can simply send the same request again.
//!
//! Bounded: at most [`MAX_REMEMBERED_OUTCOMES`] finished outcomes, each for at most
//! [`OUTCOME_TTL`]. Only outcomes of invocations that ran are kept: a request refused
//! before the plugin started (busy, node lock timeout) leaves no trace, so repeating it
//! runs it. The store is in memory: a worker that restarts forgets, which the operator
//! sees as a new Pod and treats as "outcome unknown".

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::runtime::RuntimeError;
use hostplug_api::protocol::{InvocationState, InvokeOutcome};

/// Finished outcomes kept: 1024. An outcome is a few KiB (diff and logs are capped by
/// the host), so the store stays within a few MiB; an operator asks again for an
/// outcome within seconds of losing it (a new leader takes over within one lease), by
/// which time far fewer than 1024 other invocations have finished on one worker.
pub const MAX_REMEMBERED_OUTCOMES: usize = 1024;

/// How long a finished outcome is kept: 1 h, far beyond a leader hand-over (15 s lease)
/// plus an operator Pod rescheduling, yet short enough that a long-lived warm worker
/// does not hold outcomes nobody will ask for.
pub const OUTCOME_TTL: Duration = Duration::from_secs(3600);

/// Longest invocation id accepted: 512 bytes (a uid, a generation and a node name of up
/// to 253 characters fit).
pub const MAX_INVOCATION_ID_BYTES: usize = 512;

/// A finished invocation's outcome.
pub type Outcome = Result<InvokeOutcome, RuntimeError>;

type Shared = Option<Arc<Outcome>>;

enum Slot {
    /// Running; the sender publishes the outcome (or `None` when the run never started).
    Running(watch::Receiver<Shared>),
    Done(Arc<Outcome>),
}

/// What a request with an id should do.
pub enum Begin {
    /// Run it; hand the outcome to the ticket.
    Run(Ticket),
    /// Another request runs it now: wait for its outcome.
    Wait(watch::Receiver<Shared>),
    /// It ran: here is the outcome.
    Done(Arc<Outcome>),
}

/// The right and duty to run one named invocation. Dropped without
/// [`finish`](Ticket::finish) (the run never started), the id is forgotten and waiters
/// learn that it did not run.
pub struct Ticket {
    store: OutcomeStore,
    id: String,
    tx: Option<watch::Sender<Shared>>,
}

impl std::fmt::Debug for Begin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Run(t) => f.debug_tuple("Run").field(t).finish(),
            Self::Wait(_) => f.write_str("Wait"),
            Self::Done(_) => f.write_str("Done"),
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// Records the outcome of the run and hands it to the waiters.
    pub fn finish(mut self, outcome: Outcome) -> Arc<Outcome> {
        let outcome = Arc::new(outcome);
        self.store.finish(&self.id, outcome.clone());
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(outcome.clone()));
        }
        outcome
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.store.forget(&self.id);
            let _ = tx.send(None);
        }
    }
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Finished ids, oldest first (with their finish time, to expire them).
    finished: VecDeque<(String, Instant)>,
}

/// The store; cheap to clone, shared by all requests.
#[derive(Clone, Default)]
pub struct OutcomeStore {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for OutcomeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeStore").finish_non_exhaustive()
    }
}

impl OutcomeStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way
        // that matters (each operation is one insert or remove), so a poisoned lock is
        // still used.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a request with invocation id `id`.
    pub fn begin(&self, id: &str) -> Begin {
        let mut inner = self.lock();
        expire(&mut inner, Instant::now());
        match inner.slots.get(id) {
            Some(Slot::Running(rx)) => Begin::Wait(rx.clone()),
            Some(Slot::Done(outcome)) => Begin::Done(outcome.clone()),
            None => {
                let (tx, rx) = watch::channel(None);
                inner.slots.insert(id.to_owned(), Slot::Running(rx));
                Begin::Run(Ticket {
                    store: self.clone(),
                    id: id.to_owned(),
                    tx: Some(tx),
                })
            }
        }
    }

    /// Where the invocation `id` is, if this worker knows it.
    pub fn state(&self, id: &str) -> Option<InvocationState> {
        let mut inner = self.lock();
        expire(&mut inner, Instant::now());
        inner.slots.get(id).map(|s| match s {
            Slot::Running(_) => InvocationState::Running,
            Slot::Done(_) => InvocationState::Done,
        })
    }

    fn finish(&self, id: &str, outcome: Arc<Outcome>) {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.slots.insert(id.to_owned(), Slot::Done(outcome));
        inner.finished.push_back((id.to_owned(), now));
        while inner.finished.len() > MAX_REMEMBERED_OUTCOMES {
            if let Some((old, _)) = inner.finished.pop_front() {
                inner.slots.remove(&old);
            }
        }
    }

    fn forget(&self, id: &str) {
        let mut inner = self.lock();
        if matches!(inner.slots.get(id), Some(Slot::Running(_))) {
            inner.slots.remove(id);
        }
    }
}

fn expire(inner: &mut Inner, now: Instant) {
    while let Some((id, at)) = inner.finished.front() {
        if now.duration_since(*at) < OUTCOME_TTL {
            break;
        }
        let id = id.clone();
        inner.finished.pop_front();
        inner.slots.remove(&id);
    }
}

/// Waits for the outcome another request is producing; `None` when that request ended
/// before the plugin ran.
pub async fn wait(mut rx: watch::Receiver<Shared>) -> Option<Arc<Outcome>> {
    let seen = rx.wait_for(Option::is_some).await.map(|v| v.clone());
    match seen {
        Ok(v) => v,
        Err(_) => rx.borrow().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostplug_api::ErrorKind;

    fn ok() -> Outcome {
        Ok(InvokeOutcome {
            changed: true,
            output: serde_json::json!({}),
            diff: None,
            logs: vec![],
            duration_ms: 1,
            on_change: Vec::new(),
            revert: None,
            reboot_required: None,
        })
    }

    #[tokio::test]
    async fn a_repeated_id_gets_the_stored_outcome() {
        let store = OutcomeStore::default();
        let Begin::Run(t) = store.begin("a") else {
            panic!("first request must run")
        };
        let Begin::Wait(rx) = store.begin("a") else {
            panic!("a concurrent repeat must wait")
        };
        assert_eq!(store.state("a"), Some(InvocationState::Running));
        t.finish(ok());
        let waited = wait(rx).await.expect("an outcome");
        assert!(waited.as_ref().as_ref().is_ok_and(|r| r.changed));
        assert!(matches!(store.begin("a"), Begin::Done(_)));
        assert_eq!(store.state("a"), Some(InvocationState::Done));
        assert_eq!(store.state("b"), None);
    }

    #[tokio::test]
    async fn a_run_that_never_started_is_forgotten() {
        let store = OutcomeStore::default();
        let Begin::Run(t) = store.begin("a") else {
            panic!("first request must run")
        };
        let Begin::Wait(rx) = store.begin("a") else {
            panic!("must wait")
        };
        drop(t);
        assert!(wait(rx).await.is_none());
        assert!(matches!(store.begin("a"), Begin::Run(_)));
    }

    #[test]
    fn failures_are_kept_and_the_store_is_bounded() {
        let store = OutcomeStore::default();
        for i in 0..=MAX_REMEMBERED_OUTCOMES {
            let Begin::Run(t) = store.begin(&i.to_string()) else {
                panic!("must run")
            };
            t.finish(Err(RuntimeError::new(ErrorKind::Failed, "no")));
        }
        assert_eq!(store.state("0"), None, "the oldest outcome makes room");
        match store.begin("1") {
            Begin::Done(o) => assert!(o.as_ref().as_ref().is_err()),
            _ => panic!("a failure is an outcome too"),
        }
    }
}
