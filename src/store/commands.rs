//! User commands from the web, applied by the writer in the transaction of the tick
//! that takes them: each goes to the table family it changes.

use rusqlite::{Transaction, params};

use crate::detect::score::Detector;
use crate::event::{Command, CommandError, CommandReply, CommandResult, MAX_NOTES_CHARS, Tick};

/// Longest device name accepted (characters).
const MAX_DEVICE_NAME_CHARS: usize = 64;

/// Applies one command; `tick` is marked with what it changed.
pub fn apply_command(
    tx: &Transaction,
    command: Command,
    tick: &mut Tick,
    detect: Option<&mut Detector>,
    now: i64,
) -> CommandResult {
    match command {
        Command::RenameDevice { device_id, name } => {
            let name = name.trim();
            if name.chars().count() > MAX_DEVICE_NAME_CHARS {
                return Err(CommandError::Invalid(format!(
                    "a device name has at most {MAX_DEVICE_NAME_CHARS} characters"
                )));
            }
            set_device_column(tx, "name", device_id, name)?;
            tick.devices_changed = true;
            Ok(CommandReply::Done)
        }
        Command::SetDeviceNotes { device_id, notes } => {
            let notes = notes.trim();
            if notes.chars().count() > MAX_NOTES_CHARS {
                return Err(CommandError::Invalid(format!(
                    "device notes have at most {MAX_NOTES_CHARS} characters"
                )));
            }
            set_device_column(tx, "notes", device_id, notes)?;
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

/// Sets the owner's `name` or `notes` of a device; empty text clears it.
fn set_device_column(
    tx: &Transaction,
    column: &'static str,
    device_id: i64,
    text: &str,
) -> Result<(), CommandError> {
    let value = (!text.is_empty()).then_some(text);
    let n = tx
        .prepare_cached(&format!("UPDATE devices SET {column} = ?2 WHERE id = ?1"))?
        .execute(params![device_id, value])?;
    if n == 0 {
        return Err(CommandError::NotFound {
            what: "device",
            id: device_id,
        });
    }
    Ok(())
}
