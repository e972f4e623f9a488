//! ctnetlink collector (placeholder).
