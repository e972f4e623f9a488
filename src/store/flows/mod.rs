//! The flows table: one row per connection conntrack reported.

pub mod read;
