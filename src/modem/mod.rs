//! The GSM modem channel: an AT session per modem ([`session`], a state machine without I/O)
//! driven by a task that owns the serial port ([`driver`]).

pub mod driver;
pub mod session;

use crate::channel::{Channel, ChannelContext, ChannelTask};
use crate::config::ModemSettings;

/// A GSM modem as a [`Channel`].
pub struct ModemChannel {
    settings: ModemSettings,
}

impl ModemChannel {
    /// A channel for the modem these settings describe.
    pub fn new(settings: ModemSettings) -> Self {
        ModemChannel { settings }
    }
}

impl Channel for ModemChannel {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> &'static str {
        "modem"
    }

    /// One message at a time: a modem sends serially, and a message waiting in a modem's queue
    /// could go out on another modem instead.
    fn window(&self) -> usize {
        1
    }

    fn run(self: Box<Self>, ctx: ChannelContext) -> ChannelTask {
        Box::pin(async move { driver::run(self.settings, ctx).await.map_err(Into::into) })
    }
}
