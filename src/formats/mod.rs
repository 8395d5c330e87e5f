//! Text formats shared by config validation, the importer and the sources: Java date patterns and
//! zones ([`datefmt`]) and Cloud Elements URL templates ([`template`]).
//!
//! A leaf: nothing here imports another module of the crate (`tests/module_graph.rs` keeps the
//! module graph free of cycles), so anything may use it.

pub mod datefmt;
pub mod template;
