//! parla: a self-hosted two-way SMS gateway.
//!
//! # Layout
//!
//! ```text
//! src/main.rs          thin CLI (clap): serve, send, status, check-config, store compact
//! src/lib.rs           this page
//! src/config.rs        typed settings: built-in defaults < TOML file < PARLA_* environment
//! src/message.rs       domain types: message, status, kind, history, inbound message
//! src/codec/           pure translation of bytes and text (no I/O, no clock, no panics)
//!   gsm7.rs            GSM 03.38 alphabet and extension table, septet packing, UCS-2, segmenting
//! src/store/           sled behind typed functions: durable queue, indexes, group commit
//!   keys.rs            the key layout of the one tree
//!   record.rs          versioned compact encoding of stored values
//!   writer.rs          writer + syncer threads: staged groups, pipelined group commit, fdatasync
//! src/channel.rs       the Channel abstraction: send jobs in, events out
//! src/dispatch.rs      due messages -> channel; retry policy with backoff and jitter; expiry
//! src/conversation.rs  the correlator: channel events -> message state (acks, receipts, replies)
//! src/sim/             the simulated channel used by the embedded demo and the tests
//! src/http/            axum API: handlers, auth, JSON errors
//! src/daemon.rs        wiring of the running daemon and its graceful shutdown
//! src/phone.rs         E.164 normalization and sender-id validation
//! ```
//!
//! Data flows one way: intake (HTTP) only writes to the store; the dispatcher only reads due work
//! and hands it to a channel; channels only report events; the correlator is the one place that
//! turns events into message state.

#![warn(missing_docs)]

pub mod channel;
pub mod codec;
pub mod config;
pub mod conversation;
pub mod daemon;
pub mod dispatch;
pub mod http;
pub mod message;
pub mod modem;
pub mod phone;
pub mod sim;
pub mod store;
