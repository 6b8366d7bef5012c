//! SMPP 3.4: carrier links (the gateway as ESME client) and the integrator-facing server
//! (being built: its accounts are in [`auth`], one connection's protocol in
//! [`server_session`]). Framing on rusmpp that survives malformed PDUs ([`frame`]), what the
//! SMS PDUs carry ([`content`]), the client session as a state machine ([`session`]), a
//! message as submit_sm ([`outbound`]) and the link as a channel driving it all over TCP
//! ([`link`]).

pub mod auth;
pub mod content;
pub mod frame;
pub mod link;
pub mod outbound;
pub mod server_session;
pub mod session;

pub use link::SmppChannel;
