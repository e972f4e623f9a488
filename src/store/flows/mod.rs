//! `flows`: one row per connection lifetime, the table every page starts from.
//!
//! [`write`] is the writer's side (inserts, counter updates, the live flows it keeps in
//! memory); [`read`] is every query pages make of it.

pub mod read;
pub mod write;
