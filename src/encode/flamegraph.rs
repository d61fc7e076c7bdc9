//! SVG flamegraphs, drawn by inferno from the folded stacks.
//!
//! The title, subtitle and tooltips say which event the graph shows and in what unit: on-CPU
//! samples (the default), µs off the CPU, or µs of wall-clock time (on + off the CPU). The
//! synthetic off-CPU leaf frames of [`super::folded`] are drawn in blue (FlameGraph's colors
//! for off-CPU time), blocked and runnable in two shades, so that in a wall-clock graph the
//! waits stand out from the hot (red/orange) on-CPU frames.

use std::io::Write;

use anyhow::{Context as _, Result};
use inferno::flamegraph::{
    self, Palette,
    color::{Color, MultiPalette, PaletteMap},
};

use super::{
    Encoder, Ending,
    folded::{Fold, off_cpu_frame},
};
use crate::{
    capture::{Event, Meta, Selection, Window, format::OffCpuReason},
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
    /// A flamegraph of `event`'s samples.
    pub fn new(meta: &Meta, event: Event, out: &'o mut W) -> Self {
        Self {
            fold: Fold::new(event, meta.sample_period_ns()),
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
        let meta = &this.meta;
        let event = this.fold.event();
        let on_cpu = this.fold.on_cpu_samples();
        let blocked = this.fold.off_cpu_ns(OffCpuReason::Blocked);
        let runnable = this.fold.off_cpu_ns(OffCpuReason::Runnable);
        let lines = this.fold.lines();
        let mut options = flamegraph::Options::default();
        // The capture's own words (host, kernel) may be hostile: escaped like names.
        let host = printable(&meta.hostname);
        let kernel = printable(&meta.kernel_release);
        let seconds = |ns: u64| ns as f64 / 1e9;
        match event {
            Event::OnCpu => {
                let samples: u64 = lines.iter().map(|(_, count)| count).sum();
                options.title = format!(
                    "amprof · {host} · {:.1} s · {} Hz",
                    this.seconds, meta.frequency_hz
                );
                options.subtitle = Some(format!(
                    "{samples} samples on {} CPUs · kernel {kernel} · {label}",
                    meta.cpus,
                ));
                options.count_name = count_name(event).into();
            }
            Event::OffCpu => {
                options.title = format!("amprof · off-CPU time · {host} · {:.1} s", this.seconds);
                options.subtitle = Some(format!(
                    "{:.3} s off the CPU: {:.3} s blocked, {:.3} s runnable (waiting for a CPU) · kernel {kernel} · {label}",
                    seconds(blocked + runnable),
                    seconds(blocked),
                    seconds(runnable),
                ));
                options.count_name = count_name(event).into();
            }
            Event::Wall => {
                options.title = format!(
                    "amprof · wall-clock time (on + off CPU) · {host} · {:.1} s",
                    this.seconds
                );
                options.subtitle = Some(format!(
                    "{:.3} s on the CPU ({on_cpu} samples at {} Hz), {:.3} s off it ({:.3} s blocked, {:.3} s runnable) · kernel {kernel} · {label}",
                    seconds(on_cpu.saturating_mul(meta.sample_period_ns())),
                    meta.frequency_hz,
                    seconds(blocked + runnable),
                    seconds(blocked),
                    seconds(runnable),
                ));
                options.count_name = count_name(event).into();
            }
        }
        // The java palette colors `_[k]` kernel frames apart from user ones.
        options.colors = Palette::Multi(MultiPalette::Java);
        options.deterministic = true;
        let mut off_cpu_colors = PaletteMap::default();
        if event.includes_off_cpu() {
            for (reason, color) in [
                (OffCpuReason::Blocked, Color::new(80, 120, 230)),
                (OffCpuReason::Runnable, Color::new(140, 170, 250)),
            ] {
                off_cpu_colors.insert(off_cpu_frame(reason), color);
            }
            options.palette_map = Some(&mut off_cpu_colors);
        }
        let text: Vec<String> = lines.iter().map(|(l, c)| format!("{l} {c}")).collect();
        draw(&mut options, &text, this.out)?;
        Ok(Vec::new())
    }
}

/// What a frame's width counts in a flamegraph of `event` (folded weights: see
/// [`super::folded`]).
pub fn count_name(event: Event) -> &'static str {
    match event {
        Event::OnCpu => "samples",
        Event::OffCpu => "µs off-CPU",
        Event::Wall => "µs wall",
    }
}

/// Draws folded `lines` (sorted; one or two weight columns, the second a differential) with
/// `options`.
pub fn draw(
    options: &mut flamegraph::Options<'_>,
    lines: &[String],
    out: impl Write,
) -> Result<()> {
    if lines.is_empty() {
        // inferno refuses input without weight (a line of weight 0 too); an empty profile is
        // still a valid answer: one frame that says so.
        options.notes = "no samples".into();
        let subtitle = options.subtitle.take();
        options.subtitle = Some(match subtitle {
            Some(subtitle) => format!("{subtitle} · no samples selected"),
            None => "no samples selected".into(),
        });
        return flamegraph::from_lines(options, ["[no samples] 1"], out)
            .context("cannot draw the flamegraph");
    }
    flamegraph::from_lines(options, lines.iter().map(String::as_str), out)
        .context("cannot draw the flamegraph")
}
