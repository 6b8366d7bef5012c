//! The GSM modem channel: an AT session per modem ([`session`], a state machine without I/O)
//! driven by a task that owns the serial port ([`driver`]).

pub mod driver;
pub mod session;

use crate::channel::{Channel, ChannelContext, ChannelTask};
use crate::config::ModemSettings;

/// Messages a modem channel holds: the one it sends and those queued behind it.
const MODEM_WINDOW: usize = 3;

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

    /// A modem sends one message at a time; a few more wait in its queue so the next is always
    /// claimed while the current one goes out (a claim costs a disk sync). Few, because a
    /// message waiting here cannot go out on another modem, and goes back to the queue (with
    /// a retry delay) if this one fails.
    fn window(&self) -> usize {
        MODEM_WINDOW
    }

    fn run(self: Box<Self>, ctx: ChannelContext) -> ChannelTask {
        Box::pin(async move { driver::run(self.settings, ctx).await.map_err(Into::into) })
    }
}
