//! User commands from the web, applied by the writer in the transaction of the tick
//! that takes them: each goes to the table family it changes.

use rusqlite::{Transaction, params};

use crate::detect::score::Detector;
use crate::event::Tick;
use crate::event::{Command, CommandReply, MAX_NOTES_CHARS};

/// Applies one command; `tick` is marked with what it changed.
pub fn apply_command(
    tx: &Transaction,
    command: Command,
    tick: &mut Tick,
    detect: Option<&mut Detector>,
    now: i64,
) -> Result<CommandReply, String> {
    match command {
        Command::RenameDevice { device_id, name } => {
            let name = name.trim();
            if name.chars().count() > 64 {
                return Err("a device name has at most 64 characters".into());
            }
            let name = (!name.is_empty()).then_some(name);
            let n = tx
                .prepare_cached("UPDATE devices SET name = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![device_id, name]))
                .map_err(|e| format!("database error: {e}"))?;
            if n == 0 {
                return Err(format!("no device with id {device_id}"));
            }
            tick.devices_changed = true;
            Ok(CommandReply::Done)
        }
        Command::SetDeviceNotes { device_id, notes } => {
            let notes = notes.trim();
            if notes.chars().count() > MAX_NOTES_CHARS {
                return Err(format!(
                    "device notes have at most {MAX_NOTES_CHARS} characters"
                ));
            }
            let notes = (!notes.is_empty()).then_some(notes);
            let n = tx
                .prepare_cached("UPDATE devices SET notes = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![device_id, notes]))
                .map_err(|e| format!("database error: {e}"))?;
            if n == 0 {
                return Err(format!("no device with id {device_id}"));
            }
            tick.devices_changed = true;
            Ok(CommandReply::Done)
        }
        Command::CreateSearch { .. }
        | Command::RenameSearch { .. }
        | Command::PinSearch { .. }
        | Command::DeleteSearch { .. } => crate::store::saved::apply_command(tx, command, now),
        // Incidents and rules (`store::detect`); rules also when detection is off, so
        // they are in place when it is turned on.
        other => crate::store::detect::apply_command(tx, other, detect, now),
    }
}
