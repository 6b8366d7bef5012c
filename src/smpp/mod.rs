//! SMPP 3.4 (carrier links and the integrator-facing server). So far: the framing layer on
//! rusmpp that survives malformed PDUs ([`frame`]); sessions and links come next.

pub mod frame;
