//! pollbus
