//! `GET /tasks/{name}/live`: a running task's page followed live, as server-sent events.
//!
//! Each event `detail` carries the re-rendered live part of the task's page
//! (`task_detail.html`: progress bar, per-node phases, results), sent when the task
//! changes; the event `end` says the current generation has ended, and the stream
//! closes. The page's script swaps the fragment in (no JS build step: `EventSource`
//! is in every browser), and falls back to polling the page when the stream cannot be
//! opened. Changes are noticed through one API-server watch per open stream
//! ([`Cluster::wait_for_task_change`](crate::cluster::Cluster::wait_for_task_change)),
//! never by polling the API server, and the number of streams is bounded.
//!
//! The stream shows exactly what the page shows to the same user: the same session
//! check and the same hiding of outputs and diffs for viewers.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template as _;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::Semaphore;

use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::templates::TaskDetailFragment;

use super::tasks::{NodePageQuery, task_page};

/// Open live streams the console serves at once. Each holds a watch on the API server
/// for as long as a browser tab shows a running task; 64 covers a team watching
/// rollouts, and past it a page falls back to polling instead of piling watches on the
/// API server.
pub const MAX_LIVE_STREAMS: usize = 64;
/// The longest one watch waits before the fragment is rendered again anyway: a change
/// that lands between a render and the start of the next watch is shown at most this
/// late, and the "age" on the page stays roughly current.
const MAX_CHANGE_WAIT: Duration = Duration::from_secs(5);
/// How long one stream may stay open: a rollout runs for at most an hour per node
/// (`MAX_TIMEOUT_SECONDS`); after this the browser's `EventSource` reconnects by itself.
const MAX_STREAM_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Keep-alive comment interval: below the idle timeouts of common proxies (60 s).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

static STREAMS: Semaphore = Semaphore::const_new(MAX_LIVE_STREAMS);

/// `GET /tasks/{name}/live` (with the page's `?phase=&page=`: the same nodes as the page).
pub async fn task_live(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
    Query(query): Query<NodePageQuery>,
) -> AppResult<Response> {
    // Fails early (404, 403) like the page itself, before the stream starts.
    let first = task_page(&state, &user, &name, &query).await?;
    // Past the bound: 429, and the page's script polls instead.
    let Ok(permit) = STREAMS.try_acquire() else {
        return Err(AppError::RateLimited { retry_after: 30 });
    };
    let stream = events(state, user, name, query, first, permit);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Where a stream is: following the task, owing the `end` event, or done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Following,
    Ending,
    Done,
}

fn events(
    state: AppState,
    user: AuthUser,
    name: String,
    query: NodePageQuery,
    first: crate::templates::TaskPage,
    permit: tokio::sync::SemaphorePermit<'static>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let deadline = tokio::time::Instant::now() + MAX_STREAM_LIFETIME;
    futures::stream::unfold(
        (Some(first), String::new(), Stage::Following, permit),
        move |(mut page, last, stage, permit)| {
            let state = state.clone();
            let user = user.clone();
            let name = name.clone();
            let query = query.clone();
            async move {
                match stage {
                    Stage::Done => return None,
                    Stage::Ending => {
                        let end = Event::default().event("end").data("ended");
                        return Some((Ok(end), (None, last, Stage::Done, permit)));
                    }
                    Stage::Following => {}
                }
                loop {
                    if tokio::time::Instant::now() > deadline {
                        // The browser's EventSource reconnects and gets a fresh stream.
                        return None;
                    }
                    let current = match page.take() {
                        Some(p) => p,
                        None => {
                            // An error (the API server away for a moment) ends the
                            // stream; the browser reconnects, or falls back to polling.
                            if state
                                .cluster
                                .wait_for_task_change(MAX_CHANGE_WAIT)
                                .await
                                .is_err()
                            {
                                return None;
                            }
                            task_page(&state, &user, &name, &query).await.ok()?
                        }
                    };
                    let finished = current.finished;
                    let html = TaskDetailFragment(current).render().ok()?;
                    if finished || html != last {
                        let next = if finished {
                            Stage::Ending
                        } else {
                            Stage::Following
                        };
                        let event = Event::default().event("detail").data(html.clone());
                        return Some((Ok(event), (None, html, next, permit)));
                    }
                }
            }
        },
    )
}
