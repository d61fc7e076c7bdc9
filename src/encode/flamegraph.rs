//! SVG flamegraphs, drawn by inferno from the folded stacks.
//!
//! The title, subtitle and tooltips say which event the graph shows and in what unit, as the
//! event and its kinds' descriptors name them: on-CPU samples (the default), µs off the CPU, or
//! µs of wall-clock time (on + off the CPU). The synthetic leaf frames of [`super::folded`] are
//! drawn in their label values' colours (off-CPU: blue, FlameGraph's colours for off-CPU time,
//! blocked and runnable in two shades), so that in a wall-clock graph the waits stand out from
//! the hot (red/orange) on-CPU frames.

use std::{borrow::Cow, io::Write};

use anyhow::{Context as _, Result};
use inferno::flamegraph::{
    self, Palette,
    color::{Color, MultiPalette, PaletteMap},
};

use super::{
    Encoder, Ending,
    folded::{Fold, Unit},
};
use crate::{
    capture::{Event, Meta, Selection, Window},
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
        let mut options = flamegraph::Options::default();
        // The capture's own words (host, kernel) may be hostile: escaped like names.
        let host = printable(&meta.hostname);
        let kernel = printable(&meta.kernel_release);
        options.title = match this.fold.unit() {
            Unit::Samples => format!(
                "amprof · {host} · {:.1} s · {} Hz",
                this.seconds, meta.frequency_hz
            ),
            Unit::Weight { .. } => format!(
                "amprof · {} · {host} · {:.1} s",
                event.title(),
                this.seconds
            ),
        };
        options.subtitle = Some(format!(
            "{} · kernel {kernel} · {label}",
            totals_phrase(&this.fold, meta)
        ));
        options.count_name = count_name(event).into_owned();
        // The java palette colors `_[k]` kernel frames apart from user ones.
        options.colors = Palette::Multi(MultiPalette::Java);
        options.deterministic = true;
        let mut leaf_colors = PaletteMap::default();
        let mut leaves = false;
        for kind in event.kinds().iter() {
            for value in kind.descriptor().label_values {
                let [r, g, b] = value.color;
                leaf_colors.insert(value.leaf_frame, Color::new(r, g, b));
                leaves = true;
            }
        }
        if leaves {
            options.palette_map = Some(&mut leaf_colors);
        }
        let lines = this.fold.lines();
        let text: Vec<String> = lines.iter().map(|(l, c)| format!("{l} {c}")).collect();
        draw(&mut options, &text, this.out)?;
        Ok(Vec::new())
    }
}

/// What the fold's samples add up to, kind by kind, for the subtitle: `200 samples on 4 CPUs`
/// (a periodic kind alone), `1.500 s off the CPU: 1.000 s blocked, 0.500 s runnable (waiting
/// for a CPU)`, `2.000 s on the CPU (200 samples at 100 Hz), 1.500 s off it (…)`.
fn totals_phrase(fold: &Fold, meta: &Meta) -> String {
    let kinds = fold.event().kinds();
    let alone = kinds.len() == 1;
    let mut phrases = Vec::new();
    for (index, kind) in kinds.iter().enumerate() {
        let descriptor = kind.descriptor();
        let total = fold.total(kind);
        let amount = |weight| amount(descriptor.weight_unit, weight);
        let place = descriptor.place[usize::from(index > 0)];
        let phrase = if descriptor.periodic && alone {
            format!("{} samples on {} CPUs", total.samples, meta.cpus)
        } else if descriptor.periodic {
            format!(
                "{} {place} ({} samples at {} Hz)",
                amount(total.weight),
                total.samples,
                meta.frequency_hz
            )
        } else {
            let values: Vec<String> = descriptor
                .label_values
                .iter()
                .enumerate()
                .map(|(i, value)| {
                    let weight = amount(fold.label_total(kind, i).weight);
                    match value.gloss {
                        Some(gloss) if alone => format!("{weight} {} ({gloss})", value.name),
                        _ => format!("{weight} {}", value.name),
                    }
                })
                .collect();
            let values = values.join(", ");
            match (values.is_empty(), alone) {
                (true, _) => format!("{} {place}", amount(total.weight)),
                (false, true) => format!("{} {place}: {values}", amount(total.weight)),
                (false, false) => format!("{} {place} ({values})", amount(total.weight)),
            }
        };
        phrases.push(phrase);
    }
    phrases.join(", ")
}

/// `weight` of `unit` (a kind's weight unit) for a sentence: seconds, to the ms, for
/// nanoseconds.
fn amount(unit: &str, weight: u64) -> String {
    match unit {
        "nanoseconds" => format!("{:.3} s", weight as f64 / 1e9),
        unit => format!("{weight} {unit}"),
    }
}

/// What a frame's width counts in a flamegraph of `event` (folded weights: see
/// [`super::folded`]): `samples`, or the unit qualified by the event (`µs off-CPU`).
pub fn count_name(event: Event) -> Cow<'static, str> {
    match Unit::of(event) {
        Unit::Samples => Unit::Samples.name().into(),
        unit => format!("{} {}", unit.name(), event.short_name()).into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_names_say_the_unit_and_the_event() {
        assert_eq!(
            [Event::OnCpu, Event::OffCpu, Event::Wall].map(count_name),
            ["samples", "µs off-CPU", "µs wall"]
        );
    }
}
