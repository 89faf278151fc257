//! Output: plain lines for people, one JSON document for programs, progress only on a terminal.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) struct Output {
    json: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    /// A line for people; silent in JSON mode.
    pub(crate) fn line(&self, text: impl AsRef<str>) {
        if !self.json {
            write_stdout(text.as_ref());
        }
    }

    /// The one JSON document of a command; silent in text mode.
    pub(crate) fn document(&self, value: &serde_json::Value) {
        if self.json {
            write_stdout(&format!("{value:#}"));
        }
    }

    /// A progress bar over `len` steps, drawn only when stderr is a terminal and not in JSON mode.
    pub(crate) fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len).with_message(what.to_owned());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// Reports an error: exit code 2 for a [`UsageError`], 1 for anything else.
    pub(crate) fn fatal(&self, error: &anyhow::Error) -> ExitCode {
        if self.json {
            write_stdout(&format!(
                "{:#}",
                serde_json::json!({"status": "error", "error": format!("{error:#}")})
            ));
        } else {
            let _ = writeln!(std::io::stderr().lock(), "error: {error:#}");
        }
        ExitCode::from(if error.downcast_ref::<UsageError>().is_some() {
            2
        } else {
            1
        })
    }
}

/// An invalid argument: the command was called wrongly, nothing was checked.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Writes a line to stdout. A reader that went away (a closed pipe) is not an error worth a
/// panic: the output is simply no longer wanted.
fn write_stdout(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
