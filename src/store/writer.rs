//! The one writer (DESIGN §1). IMPLEMENTATION IN PROGRESS — the public handle types below
//! are the stable interface other modules use.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use tokio::sync::oneshot;

use crate::event::{Command, CommandReply, Event};

/// What the writer publishes on its `tokio::sync::watch` after every commit, so pages
/// and the SSE stream know whether anything they show changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tick {
    /// Increments with every commit.
    pub seq: u64,
    /// Commit time, unix ms.
    pub at_ms: i64,
    /// Flow rows inserted / updated / ended in this commit.
    pub flows_new: u64,
    pub flows_updated: u64,
    pub flows_ended: u64,
    /// Devices or remote hosts were created or renamed in this commit.
    pub devices_changed: bool,
    pub remote_hosts_changed: bool,
    /// Live flows after this commit.
    pub active_flows: u64,
}

/// Cheap clonable sender to the writer. Collectors use [`WriterHandle::try_send`] and
/// coalesce when it fails; the web uses [`WriterHandle::command`].
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Event>,
    /// Messages sent but not yet taken by the writer (std's channel has no `len`).
    depth: Arc<AtomicUsize>,
}

impl WriterHandle {
    pub(crate) fn new(tx: SyncSender<Event>, depth: Arc<AtomicUsize>) -> WriterHandle {
        WriterHandle { tx, depth }
    }

    /// Never blocks. On `Err` the event comes back: the channel is full (keep it and
    /// coalesce) or the writer is gone (shutting down).
    pub fn try_send(&self, event: Event) -> Result<(), Event> {
        match self.tx.try_send(event) {
            Ok(()) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(e)) | Err(TrySendError::Disconnected(e)) => Err(e),
        }
    }

    /// Messages waiting for the writer.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Runs a user command through the writer and waits for its commit.
    pub async fn command(&self, command: Command) -> Result<CommandReply, String> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let tx = self.tx.clone();
        let depth = self.depth.clone();
        // A full channel means the writer is busy for a moment; wait for room on a
        // blocking thread rather than failing the user's click.
        tokio::task::spawn_blocking(move || {
            tx.send(Event::Command(command, reply_tx))
                .map(|()| {
                    depth.fetch_add(1, Ordering::Relaxed);
                })
                .map_err(|_| "netmon is shutting down".to_owned())
        })
        .await
        .map_err(|e| e.to_string())??;
        reply_rx.await.map_err(|_| "the writer stopped before answering".to_owned())?
    }
}
