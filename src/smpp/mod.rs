//! SMPP 3.4 (carrier links and the integrator-facing server). So far: the framing layer on
//! rusmpp that survives malformed PDUs ([`frame`]) and the client session as a state machine
//! ([`session`]); the task driving it over TCP, links as channels and the server come next.

pub mod frame;
pub mod session;
