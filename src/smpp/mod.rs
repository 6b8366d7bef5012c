//! SMPP 3.4: carrier links (the gateway as ESME client) and, later, the integrator-facing
//! server. Framing on rusmpp that survives malformed PDUs ([`frame`]), what the SMS PDUs carry
//! ([`content`]), the client session as a state machine ([`session`]), a message as submit_sm
//! ([`outbound`]) and the link as a channel driving it all over TCP ([`link`]).

pub mod content;
pub mod frame;
pub mod link;
pub mod outbound;
pub mod session;

pub use link::SmppChannel;
