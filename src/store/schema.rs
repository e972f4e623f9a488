//! Schema (placeholder).
