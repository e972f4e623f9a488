//! The one interface between the writer's loop and the table families' in-memory
//! state (live flows, id caches, minute sets, detection memory): each family keeps its
//! state consistent with what is committed through these three calls.

use rusqlite::Connection;

/// In-memory state a table family keeps beside its rows. The loop calls every family
/// the same way around each transaction, so rollback handling is the same for all.
pub trait Table {
    /// A transaction begins: remember what a rollback must restore.
    fn begin(&mut self) {}

    /// The transaction rolled back: make the state match what is committed again.
    fn rolled_back(&mut self, _conn: &Connection) -> rusqlite::Result<()> {
        Ok(())
    }

    /// The transaction committed at `now` (unix ms).
    fn committed(&mut self, _now: i64) {}
}
