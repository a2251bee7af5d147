//! Progress: bars on stderr, shown only when stderr is a terminal and not `--quiet`, laid
//! out for the terminal's width (the message part is cut to fit, never wrapped); and the live
//! status of a command ([`live`]) that the dashboard shows.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Whether progress is shown: stderr is a terminal and the user did not ask for quiet.
pub fn shown(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// The terminal's width in columns (80 when it does not say).
pub fn width() -> usize {
    match console::Term::stderr().size_checked() {
        Some((_, cols)) if cols > 0 => cols as usize,
        _ => 80,
    }
}

/// The bar's template for a terminal `cols` wide: the fixed part fits, and `{wide_msg}`
/// takes what is left (indicatif cuts it to the width at every draw).
fn template(what: &str, cols: usize) -> String {
    if cols >= 100 {
        format!("{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} ({{elapsed}}, eta {{eta}}) {{wide_msg}}")
    } else if cols >= 60 {
        format!("{what} [{{bar:16}}] {{pos}}/{{len}} eta {{eta}} {{wide_msg}}")
    } else {
        format!("{what} {{pos}}/{{len}} {{wide_msg}}")
    }
}

/// A progress bar for `total` units of `what`, or a hidden one when not on a terminal.
pub fn bar(total: u64, what: &str, quiet: bool) -> ProgressBar {
    if !shown(quiet) {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(&template(what, width()))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb
}

pub mod live;

pub use live::{LayerSpec, LiveRun, LiveStatus, RunState, StatusReport, TaskRecord};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_at_every_width() {
        for cols in [20, 59, 60, 99, 100, 300] {
            assert!(ProgressStyle::with_template(&template("computing chunks", cols)).is_ok());
        }
    }
}
