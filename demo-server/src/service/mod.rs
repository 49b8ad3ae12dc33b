//! The gRPC services this server implements: `Demo` (the calls a client balances) and `Control`
//! (the artificial load knob), over state they share.

mod control;
mod demo;
mod load;

pub use load::Load;

pub(crate) use control::ControlService;
pub(crate) use demo::DemoService;
pub(crate) use load::ServerState;
