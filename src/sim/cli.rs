//! What the simulators' command lines share: control lines in, one JSON object per line out.

use serde_json::{Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// What a control line asks for.
pub(crate) enum CliOutcome {
    /// Print this answer.
    Print(Value),
    /// Nothing to print (the simulator's own event tells).
    Nothing,
    /// Stop.
    Quit,
}

/// The answer to a control line that cannot be carried out.
pub(crate) fn cli_error(message: impl Into<String>) -> CliOutcome {
    CliOutcome::Print(json!({"event": "error", "message": message.into()}))
}

/// Prints one JSON line and flushes it.
pub(crate) async fn print_json<W: AsyncWrite + Unpin>(
    out: &mut W,
    value: &Value,
) -> std::io::Result<()> {
    let mut line = value.to_string();
    line.push('\n');
    out.write_all(line.as_bytes()).await?;
    out.flush().await
}
