//! sequin
