//! The GSM modem channel: an AT session per modem ([`session`]) driven by a task that owns the
//! serial port ([`driver`]).

pub mod session;
