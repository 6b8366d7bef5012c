//! SMPP 3.4: carrier links (the gateway as ESME client) and the integrator-facing server.
//! Framing on rusmpp that survives malformed PDUs ([`frame`]), what the SMS PDUs carry
//! ([`content`]), SMPP times ([`time`]). Client side: the session as a state machine
//! ([`session`]), a message as submit_sm ([`outbound`]) and the link as a channel driving it
//! all over TCP ([`link`]). Server side: accounts and bind decisions ([`auth`]), one
//! connection's protocol as a state machine ([`server_session`]), what integrators' PDUs ask
//! of the store ([`intake`]), receipts and replies as deliver_sm ([`deliveries`]), and the
//! listener, connection tasks and outbox pumps ([`server`]).

pub mod auth;
pub mod content;
pub mod deliveries;
pub mod frame;
pub mod intake;
pub mod link;
pub mod outbound;
pub mod server;
pub mod server_session;
pub mod session;
pub mod time;

pub use link::SmppChannel;
