//! Progress for people: indicatif spinners drawn on stderr, and hidden when stderr is not a
//! terminal or the output is for programs (`-o json|yaml`), so pipes and scripts see only data.

use std::{io::IsTerminal as _, time::Duration};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::OutputFormat;

/// Tick period of the spinner.
const TICK: Duration = Duration::from_millis(100);

/// Whether progress is drawn for this output format on this stderr.
pub fn visible(fmt: OutputFormat) -> bool {
    !fmt.is_machine() && std::io::stderr().is_terminal()
}

/// A spinner showing `message`; call `finish_and_clear()` before printing results.
pub fn spinner(message: impl Into<String>, fmt: OutputFormat) -> ProgressBar {
    if !visible(fmt) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.set_message(message.into());
    bar.enable_steady_tick(TICK);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_output_never_gets_a_spinner() {
        for fmt in [OutputFormat::Json, OutputFormat::Yaml] {
            assert!(!visible(fmt));
            assert!(spinner("x", fmt).is_hidden());
        }
    }
}
