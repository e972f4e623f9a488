//! `flows`: one row per connection lifetime, the table every page starts from.
//!
//! [`write`] is the writer's side (inserts, counter updates, the live flows it keeps in
//! memory).

pub mod write;
