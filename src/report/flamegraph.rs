//! SVG flamegraphs, drawn by inferno from the folded stacks.

use std::io::Write;

use anyhow::{Context as _, Result};
use inferno::flamegraph::{self, Palette, color::MultiPalette};

use super::{Loaded, Selection, folded};
use crate::text::printable;

pub fn write(loaded: &Loaded, selection: &Selection, out: &mut impl Write) -> Result<()> {
    let lines = folded::fold(&loaded.windows, selection);
    let samples: u64 = lines.iter().map(|(_, count)| count).sum();
    let meta = loaded.reader.meta();
    let seconds: f64 = loaded
        .windows
        .iter()
        .map(|w| (w.end_ns - w.start_ns) as f64 / 1e9)
        .sum();
    let mut options = flamegraph::Options::default();
    // The host's name and kernel come from the capture, which may come from anywhere: escaped
    // like frame names (folded lines are), so that the SVG stays valid XML.
    options.title = format!(
        "amprof · {} · {seconds:.1} s · {} Hz",
        printable(&meta.hostname),
        meta.frequency_hz
    );
    options.subtitle = Some(format!(
        "{samples} samples on {} CPUs · kernel {} · {}",
        meta.cpus,
        printable(&meta.kernel_release),
        windows_label(loaded)
    ));
    options.count_name = "samples".into();
    // The java palette colors `_[k]` kernel frames apart from user ones.
    options.colors = Palette::Multi(MultiPalette::Java);
    options.deterministic = true;
    if lines.is_empty() {
        // inferno refuses empty input; an empty profile is still a valid answer.
        options.notes = "no samples".into();
        return flamegraph::from_lines(&mut options, ["[no samples] 0"], out)
            .context("cannot draw the flamegraph");
    }
    let text: Vec<String> = lines.iter().map(|(l, c)| format!("{l} {c}")).collect();
    flamegraph::from_lines(&mut options, text.iter().map(String::as_str), out)
        .context("cannot draw the flamegraph")
}

fn windows_label(loaded: &Loaded) -> String {
    match (loaded.windows.first(), loaded.windows.last()) {
        (Some(first), Some(last)) if first.index == last.index => format!("window {}", first.index),
        (Some(first), Some(last)) => format!("windows {}..{}", first.index, last.index),
        _ => "no windows".into(),
    }
}
