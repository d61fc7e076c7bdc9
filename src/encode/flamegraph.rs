//! SVG flamegraphs, drawn by inferno from the folded stacks.

use std::io::Write;

use anyhow::{Context as _, Result};
use inferno::flamegraph::{self, Palette, color::MultiPalette};

use super::{Encoder, Ending, folded::Fold};
use crate::{
    capture::{Meta, Selection, Window},
    text::printable,
};

/// `report --format flamegraph`.
pub struct Flamegraph<'o, W: Write> {
    fold: Fold,
    meta: Meta,
    /// First and last window added.
    windows: Option<(u64, u64)>,
    seconds: f64,
    out: &'o mut W,
}

impl<'o, W: Write> Flamegraph<'o, W> {
    pub fn new(meta: &Meta, out: &'o mut W) -> Self {
        Self {
            fold: Fold::default(),
            meta: meta.clone(),
            windows: None,
            seconds: 0.0,
            out,
        }
    }

    fn windows_label(&self) -> String {
        match self.windows {
            Some((first, last)) if first == last => format!("window {first}"),
            Some((first, last)) => format!("windows {first}..{last}"),
            None => "no windows".into(),
        }
    }
}

impl<W: Write> Encoder for Flamegraph<'_, W> {
    fn add(&mut self, window: &Window, selection: &Selection) -> Result<()> {
        self.fold.add(window, selection);
        self.windows = Some(match self.windows {
            None => (window.index, window.index),
            Some((first, _)) => (first, window.index),
        });
        self.seconds += window.end_ns.saturating_sub(window.start_ns) as f64 / 1e9;
        Ok(())
    }

    fn finish(self: Box<Self>, _: &Ending<'_>) -> Result<Vec<String>> {
        let label = self.windows_label();
        let this = *self;
        let lines = this.fold.lines();
        let samples: u64 = lines.iter().map(|(_, count)| count).sum();
        let meta = &this.meta;
        let mut options = flamegraph::Options::default();
        // The capture's own words (host, kernel) may be hostile: escaped like names.
        options.title = format!(
            "amprof · {} · {:.1} s · {} Hz",
            printable(&meta.hostname),
            this.seconds,
            meta.frequency_hz
        );
        options.subtitle = Some(format!(
            "{samples} samples on {} CPUs · kernel {} · {label}",
            meta.cpus,
            printable(&meta.kernel_release),
        ));
        options.count_name = "samples".into();
        // The java palette colors `_[k]` kernel frames apart from user ones.
        options.colors = Palette::Multi(MultiPalette::Java);
        options.deterministic = true;
        if lines.is_empty() {
            // inferno refuses empty input; an empty profile is still a valid answer.
            options.notes = "no samples".into();
            flamegraph::from_lines(&mut options, ["[no samples] 0"], this.out)
                .context("cannot draw the flamegraph")?;
            return Ok(Vec::new());
        }
        let text: Vec<String> = lines.iter().map(|(l, c)| format!("{l} {c}")).collect();
        flamegraph::from_lines(&mut options, text.iter().map(String::as_str), this.out)
            .context("cannot draw the flamegraph")?;
        Ok(Vec::new())
    }
}
