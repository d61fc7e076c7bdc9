//! What `record` and `push` show while they run: the one place that draws progress bars and
//! prints their messages (the library reports through [`record::Observer`] and
//! [`push::Observer`], and never prints). On a terminal, a bar; on a pipe or with `--quiet`
//! or `--json`, no bar, so scripts read only the final lines.

use std::{io::IsTerminal as _, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

use crate::{push, record};

/// How chatty a command may be.
#[derive(Clone, Copy, Debug)]
pub struct Show {
    /// `--quiet`: no bar, and only the messages a script must see (warnings).
    pub quiet: bool,
    /// `--json`: no bar (stdout is the JSON; stderr stays for messages).
    pub json: bool,
}

impl Show {
    fn bar_wanted(self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }
}

/// A message on stderr, above the bar when one is drawn.
fn say(bar: Option<&ProgressBar>, message: &str) {
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("amprof: {message}")),
        None => eprintln!("amprof: {message}"),
    }
}

/// `record`'s display: a bar filling over `--duration`, or a spinner until Ctrl-C.
pub struct RecordProgress {
    show: Show,
    bar: Option<ProgressBar>,
}

impl RecordProgress {
    pub fn new(show: Show) -> Self {
        Self { show, bar: None }
    }
}

impl record::Observer for RecordProgress {
    fn warning(&mut self, message: &str) {
        // Warnings are for scripts too: --quiet keeps them.
        say(self.bar.as_ref(), &format!("warning: {message}"));
    }

    fn started(&mut self, duration: Option<Duration>) {
        if !self.show.bar_wanted() {
            return;
        }
        let bar = match duration {
            Some(d) => ProgressBar::new(d.as_millis() as u64).with_style(
                ProgressStyle::with_template(
                    "{spinner} recording {elapsed_precise} [{bar:30}] {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(
                    "{spinner} recording {elapsed_precise} (Ctrl-C stops) {msg}",
                )
                .expect("valid template"),
            ),
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    fn progress(&mut self, progress: &record::Progress) {
        if let Some(bar) = &self.bar {
            bar.set_position(bar.elapsed().as_millis() as u64);
            bar.set_message(format!(
                "{} samples · {} windows · {} lost · {} processes",
                progress.samples, progress.windows, progress.lost, progress.processes
            ));
        }
    }

    fn finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `push`'s display: a spinner counting the windows pushed.
pub struct PushProgress {
    show: Show,
    bar: Option<ProgressBar>,
}

impl PushProgress {
    pub fn new(show: Show) -> Self {
        Self { show, bar: None }
    }
}

impl push::Observer for PushProgress {
    fn started(&mut self) {
        if !self.show.bar_wanted() {
            return;
        }
        let bar = ProgressBar::no_length().with_style(
            ProgressStyle::with_template("{spinner} pushing: {pos} windows {elapsed_precise}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    fn notice(&mut self, message: &str) {
        if !self.show.quiet {
            say(self.bar.as_ref(), message);
        }
    }

    fn windows_done(&mut self, windows: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(windows);
        }
    }

    fn finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
