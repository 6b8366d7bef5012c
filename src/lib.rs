//! parla: a self-hosted two-way SMS gateway.
//!
//! # Layout
//!
//! ```text
//! src/main.rs          thin CLI (clap): serve, send, status, check-config, store compact,
//!                      decode pdu|receipt|smpp, modem probe, sim modem|smsc, hash-password
//! src/lib.rs           this page
//! src/config.rs        typed settings: built-in defaults < TOML file < PARLA_* environment
//! src/message.rs       domain types: message, status, kind, history, inbound message
//! src/codec/           pure translation of bytes and text (no I/O, no clock, no panics)
//!   gsm7.rs            GSM 03.38 alphabet and extension table, septet packing, UCS-2, segmenting
//!   at.rs              streaming AT response parser (nom): finals, prompt, echo, info, URCs
//!   tpdu.rs            SMS-SUBMIT / DELIVER / STATUS-REPORT encode and decode (TS 23.040)
//!   receipt.rs         SMPP delivery receipt text, receipt states, message-id matching forms
//! src/store/           fjall behind typed functions: durable queue, indexes, group commit,
//!                      the opt-out (suppression) list
//!   engine.rs          the only file that names fjall: one tree per key prefix byte, snapshot
//!                      reads, atomic batches, journal sync, memtable bounds
//!   floors.rs          where scans of the due index start (past the LSM's tombstones)
//!   migrate.rs         one-time import of a store written with sled (parla's engine until 2026-11)
//!   keys.rs            the key layout of the one key space
//!   known.rs           which numbers have a conversation or opt-out record (skips reads)
//!   record.rs          versioned compact encoding of stored values
//!   writer.rs          writer + syncer threads: staged groups, pipelined group commit, fdatasync
//!   outbox.rs          durable per-target outbox: receipts and replies owed to SMPP accounts,
//!                      webhook events, callbacks (a target per callback host and port)
//!   conversations.rs   a thread per customer and shop number: summary record, activity index,
//!                      threads, mark read
//! src/channel.rs       the Channel abstraction: send jobs in, events out; channel status
//! src/modem/           GSM modem channel
//!   session.rs         the AT session as a state machine without I/O (init, send, read, health)
//!   driver.rs          the task owning the serial port (tokio-serial): recovery, pacing, probe
//! src/route.rs         routes: destination prefixes -> ordered channel steps; queue lanes, failover,
//!                      lanes of messages pinned to a channel; reply rules: customers' messages ->
//!                      integrator accounts
//! src/dispatch.rs      due messages -> channels that are up, within each channel's claim budget
//!                      (claimed, outcome not yet on disk); retry policy with backoff and jitter
//! src/conversation.rs  the correlator: channel events -> message state (acks, receipts, replies)
//! src/optout.rs        opt-outs: STOP / STOPALL / START / HELP keyword matching, the suppression
//!                      list's entry and what a keyword does to it (pure; the store applies it)
//! src/schedule.rs      quiet hours: the daily window when marketing messages wait (pure)
//! src/sim/             the simulated channel used by the embedded demo and the tests
//!   modem/             a simulated GSM modem (`parla sim modem`) with real devices' quirks:
//!                      core.rs the modem as a state machine, pty.rs the task on a pty
//!   smsc/              a simulated SMPP 3.4 SMSC on TCP (`parla sim smsc`): ids, receipts, MO,
//!                      faults; core.rs the SMSC as a state machine, server.rs the TCP tasks
//! src/smpp/            SMPP 3.4
//!   frame.rs           framing on rusmpp that survives malformed PDUs; PDU builders; JSON view
//!   content.rs         what SMS PDUs carry: text by data_coding, UDH/SAR/payload parts, receipts vs replies
//!   time.rs            SMPP absolute and relative times (schedule_delivery_time, validity_period)
//!   session.rs         the ESME (client) session as a state machine without I/O
//!   server_session.rs  the SMSC side of one integrator connection as a state machine without I/O
//!   outbound.rs        a queued message as submit_sm per the link's settings (TON/NPI, coding, parts)
//!   link.rs            a carrier link as a Channel: the task per TCP connection, reconnect, throttle
//!   auth.rs            integrator accounts of the SMPP server: password hashes, bind decisions, guessing guard
//!   intake.rs          an integrator's submit_sm / data_sm as a message (or part), query_sm / cancel_sm answers
//!   deliveries.rs      receipts and replies from an account's outbox as deliver_sm
//!   server.rs          the SMPP server: listener, task per connection, outbox pump per account
//! src/http/            axum API: handlers, auth, JSON errors; server.rs the hyper loop
//! src/webhook/         events POSTed to integrators' endpoints and to messages' callback URLs:
//!                      signed, retried, dead-lettered; one delivery core of per-target lanes
//!   event.rs           which endpoints want which events, event bodies, Standard Webhooks signatures
//!   callback.rs        callback URL and allowed-host checks (SSRF), a queue per host, public-only DNS
//! src/metrics.rs       Prometheus metrics: the registry, what the writer and links count, what a
//!                      scrape reads (channel states, modem signal, outbox depths)
//! src/daemon.rs        wiring of the running daemon and its graceful shutdown
//! src/reload.rs        configuration reload (SIGHUP): channels kept, restarted, added, removed;
//!                      the store's rules, webhook endpoints and API tokens replaced
//! src/watchdog.rs      systemd watchdog tied to progress: heartbeats of the main loops, the
//!                      pure stale-or-ping decision, the task that pings WATCHDOG=1
//! src/phone.rs         E.164 normalization and sender-id validation
//! ```
//!
//! Data flows one way: intake (HTTP, SMPP server) only writes to the store; the dispatcher only
//! reads due work and hands it to a channel; channels only report events; the correlator is the
//! one place that turns events into message state; what integrators are owed (receipts,
//! replies, webhook events, callbacks) is written to the store's outbox with the change that
//! causes it, and its consumer (the SMPP server, the webhook and callback tasks) only reads and
//! deletes it.

#![warn(missing_docs)]

pub mod channel;
pub mod codec;
pub mod config;
pub mod conversation;
pub mod daemon;
pub mod dispatch;
pub mod http;
pub mod message;
pub mod metrics;
pub mod modem;
pub mod optout;
pub mod phone;
pub mod reload;
pub mod route;
pub mod schedule;
pub mod sim;
pub mod smpp;
pub mod store;
pub mod watchdog;
pub mod webhook;
