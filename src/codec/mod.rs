//! Pure translation of bytes and text: no tokio, no clock, no I/O, and no panic on any input.

pub mod at;
pub mod gsm7;
pub mod receipt;
pub mod tpdu;
