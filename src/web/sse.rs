//! `/events`: one Server-Sent Events stream per open tab (DESIGN §1 principle 5).
//!
//! Each stream forwards the writer's [`Tick`](crate::event::Tick) after every
//! commit, as an event named `tick` whose data is the tick as JSON. Nothing is sent
//! between commits except keep-alive comments (which let both ends notice a dead
//! connection). A tab that reads slowly gets the latest tick, never a backlog: the
//! `watch` channel keeps only the newest value.
//!
//! The stream ends when the server shuts down (so graceful shutdown does not wait on
//! it forever), when the writer stops, or when the tab goes away.
//!
//! A tab that never reads holds little and not for ever: one permit of
//! [`super::MAX_EVENT_STREAMS`], a task, a one-slot channel, and at most hyper's write
//! buffer (hyper stops pulling events while the socket does not take them). Once its
//! socket buffers are full nothing moves, and the connection's idle timeout closes it
//! ([`super::conn`]).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use super::{AppState, WebError};

/// Between commits, a comment line this often keeps proxies and NAT from dropping the
/// idle connection — and keeps it under the server's idle timeout
/// ([`super::conn::IDLE_TIMEOUT`]), which closes only connections where nothing moves.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let permit = state
        .shared
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| WebError::Unavailable("too many live-update streams open".into()))?;
    let mut ticks = state.shared.ticks.clone();
    let mut shutdown = state.shared.shutdown.subscribe();
    // Only commits after this point are news to the tab: it just loaded the page.
    ticks.borrow_and_update();
    // Capacity 1: the forwarding task waits for the client to take each event, and
    // meanwhile the watch coalesces newer ticks.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            tokio::select! {
                changed = ticks.changed() => {
                    if changed.is_err() {
                        break; // the writer is gone
                    }
                    let tick = ticks.borrow_and_update().clone();
                    let event = match Event::default().event("tick").json_data(&tick) {
                        Ok(event) => event,
                        Err(e) => {
                            log::warn!("web: cannot encode tick: {e}");
                            continue;
                        }
                    };
                    tokio::select! {
                        sent = tx.send(Ok(event)) => if sent.is_err() {
                            break; // the tab went away
                        },
                        () = stopped(&mut shutdown) => break,
                    }
                }
                () = stopped(&mut shutdown) => break,
                _ = tx.closed() => break,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// Resolves once shutdown has begun (or the flag's owner is gone). Drops the watch guard
/// before returning: it must not be held across an await in a `Send` task.
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
