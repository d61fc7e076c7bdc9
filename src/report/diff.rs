//! `amprof report --diff BASE`: did a change help? Two captures (or two parts of one), read as
//! `report` reads one, compared.
//!
//! `-i` is the new capture ("after"), `--diff` the base ("before"); each side has its own
//! selection (`--window`, `--pid`, `--comm` for the new, `--base-*` for the base), and one
//! event for both. Both are read the way [`super::report`] reads a capture (validated first,
//! then one window in memory at a time), base first, through the same code as the one-capture
//! formats: [`Fold`] for the folded stacks, the summary's [`Tally`] for the functions' weights.
//! What is here is only the combination:
//!
//! - `folded`: `stack base new` per line, sorted by stack, made by inferno's own differential
//!   (`inferno::differential`, what `inferno-diff-folded -n` and FlameGraph's `difffolded.pl -n`
//!   write), the input of a differential flamegraph. The new column is the new capture's weights
//!   as `--format folded` gives them (samples, or µs for `--event off-cpu|wall`); the base column
//!   is **normalised**: the base's weights scaled to the new's total (each rounded to the
//!   nearest integer: see [`differential_lines`]), so that recordings of different lengths or
//!   rates compare and `inferno-flamegraph` draws what `--format flamegraph` draws. For raw counts of both, diff the two
//!   `--format folded` outputs with `inferno-diff-folded` without `-n`. When a side is empty
//!   there is nothing to scale to: both columns are then raw.
//! - `flamegraph`: inferno's differential flamegraph of those lines: the frames and widths of
//!   the new profile, a frame red where its self weight grew against the normalised base and
//!   blue where it shrank (the deeper the colour, the larger the change); the tooltips give the
//!   change as a share of the new's total. Like every differential flamegraph of the new
//!   profile, a stack gone from the new profile has no width: the summary lists it.
//! - `summary`: per function, its share of each side's weight (self and total, as the summary
//!   counts them), and the change in percentage points, largest change first: [`DiffSummary`].

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use inferno::{differential, flamegraph};
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{
    Format, ReportOptions, each_selected_window, open_capture,
    summary::{FunctionWeights, Tally, module_label, ratio},
};
use crate::{
    capture::{Completeness, Event, Meta, Selection},
    encode::{flamegraph::count_name, flamegraph::draw, folded::Fold},
    error::usage,
    output::Output,
    text::printable,
};

/// The base side of `report --diff`: the capture to compare with, and which of its windows and
/// processes. The event is the new side's (`Selection::event` here is not read).
#[derive(Clone, Debug)]
pub struct Base {
    pub input: PathBuf,
    pub selection: Selection,
    /// The pids came from the new side's `--pid` (no `--base-pid`): a base without those
    /// processes is then an error that says so, not an empty side (pids rarely survive from
    /// one recording to the next; they do when one long-running process is recorded twice).
    pub pids_from_new_side: bool,
}

/// `report --diff`: compares `base` with `options.input` in `options.format`; returns the notes
/// for the user.
pub fn report(options: &ReportOptions, base: &Base) -> Result<Vec<String>> {
    if !matches!(
        options.format,
        Format::Summary | Format::Flamegraph | Format::Folded
    ) {
        return Err(usage(format!(
            "--diff compares captures as a summary, a flamegraph or folded stacks, not --format {}",
            options.format.name()
        )));
    }
    let event = options.selection.event;
    let base_selection = Selection {
        event,
        ..base.selection.clone()
    };
    let pids_from_new_side = base.pids_from_new_side;
    let base = Side::read(
        &base.input,
        &base_selection,
        "the base capture",
        options.format,
    )?;
    if base.samples == 0 && pids_from_new_side && !base_selection.pids.is_empty() {
        let pids: Vec<String> = base_selection.pids.iter().map(u32::to_string).collect();
        return Err(usage(format!(
            "the base capture {} has no samples of pid {} (--pid selects in both captures): give --base-pid, or select by --comm",
            base.path.display(),
            pids.join(",")
        )));
    }
    let new = Side::read(
        &options.input,
        &options.selection,
        "the capture",
        options.format,
    )?;
    let mut notes: Vec<String> = [(&base, "base"), (&new, "new")]
        .into_iter()
        .filter_map(|(side, which)| {
            let note = side.completeness.note()?;
            Some(format!("{which} capture {}: {note}", side.path.display()))
        })
        .collect();
    let mut output = Output::open(options.output.as_deref(), options.format.default_output())?;
    notes.extend(match options.format {
        Format::Summary => {
            let summary = DiffSummary::new(event, base, new, options.top);
            if options.json {
                crate::text::write_json(&mut output, &summary)?;
                writeln!(output)?;
            } else {
                summary.write_text(&mut output)?;
            }
            summary.notes()
        }
        _ => {
            let folded = FoldedDiff::new(base, new)?;
            if options.format == Format::Flamegraph {
                folded.write_flamegraph(event, &mut output)?;
            } else {
                for line in &folded.lines {
                    writeln!(output, "{line}")?;
                }
            }
            folded.notes()
        }
    });
    output.finish()?;
    Ok(notes)
}

/// One side of the comparison, read.
struct Side {
    path: PathBuf,
    meta: Meta,
    /// The selected stacks, folded (flamegraph and folded formats).
    fold: Fold,
    /// The summary's counts (summary format).
    tally: Tally,
    /// Indices of the windows selected.
    windows: Vec<u64>,
    /// Their summed lengths.
    seconds: f64,
    /// Samples selected (of the event).
    samples: u64,
    completeness: Completeness,
}

impl Side {
    /// Reads the windows of the capture at `path` that `selection` keeps, into what `format`
    /// needs; `what` names the capture in errors.
    fn read(path: &Path, selection: &Selection, what: &str, format: Format) -> Result<Self> {
        let mut reader = open_capture(path, selection.event, what, &mut |_| {})?;
        let meta = reader.meta().clone();
        let mut side = Side {
            path: path.to_path_buf(),
            fold: Fold::new(selection.event, meta.sample_period_ns()),
            tally: Tally::default(),
            meta,
            windows: Vec::new(),
            seconds: 0.0,
            samples: 0,
            completeness: Completeness::NotFinalized,
        };
        each_selected_window(&mut reader, selection, what, |window| {
            if format == Format::Summary {
                side.tally.add(&side.meta, window, selection);
            } else {
                side.fold.add(window, selection);
            }
            side.samples = window
                .stacks
                .iter()
                .filter(|stack| selection.includes_stack(window, stack))
                .fold(side.samples, |total, stack| {
                    total.saturating_add(selection.event.samples_of(stack))
                });
            side.windows.push(window.index);
            side.seconds += window.end_ns.saturating_sub(window.start_ns) as f64 / 1e9;
            Ok(())
        })?;
        side.completeness = reader.completeness().unwrap_or(Completeness::NotFinalized);
        Ok(side)
    }
}

/// `window 2`, `windows 0..3`, `4 windows in 0..9` or `no windows`.
fn windows_label(windows: &[u64]) -> String {
    match (windows.first(), windows.last()) {
        (Some(first), Some(last)) if first == last => format!("window {first}"),
        (Some(first), Some(last)) if last.saturating_sub(*first) + 1 == windows.len() as u64 => {
            format!("windows {first}..{last}")
        }
        (Some(first), Some(last)) => format!("{} windows in {first}..{last}", windows.len()),
        _ => "no windows".into(),
    }
}

/// The note for an empty side, if any.
fn empty_note(which: &str, path: &Path, total: u64) -> Option<String> {
    (total == 0).then(|| {
        format!(
            "note: the {which} capture {} has no samples selected: its shares are 0",
            path.display()
        )
    })
}

/// Both sides' folded stacks as `stack base new` lines (see the module documentation).
struct FoldedDiff {
    base: Side,
    new: Side,
    /// Sorted by stack.
    lines: Vec<String>,
    /// Each side's total weight, before any scaling.
    base_total: u64,
    new_total: u64,
    normalized: bool,
}

impl FoldedDiff {
    fn new(mut base: Side, mut new: Side) -> Result<Self> {
        let take = |side: &mut Side| std::mem::take(&mut side.fold).lines();
        let (base_lines, new_lines) = (take(&mut base), take(&mut new));
        // Off-CPU weights are a capture's nanoseconds: any u64.
        let total = |lines: &[(String, u64)]| {
            lines
                .iter()
                .fold(0u64, |total, (_, w)| total.saturating_add(*w))
        };
        let (base_total, new_total) = (total(&base_lines), total(&new_lines));
        // Scaling to an empty side would zero the other.
        let normalized = base_total > 0 && new_total > 0;
        let lines = differential_lines(&base_lines, &new_lines, normalized)?;
        Ok(Self {
            base,
            new,
            lines,
            base_total,
            new_total,
            normalized,
        })
    }

    fn notes(&self) -> Vec<String> {
        empty_note("base", &self.base.path, self.base_total)
            .into_iter()
            .chain(empty_note("new", &self.new.path, self.new_total))
            .collect()
    }

    /// inferno's differential flamegraph of the lines.
    fn write_flamegraph(&self, event: Event, out: &mut impl Write) -> Result<()> {
        let unit = count_name(event);
        let what = match event {
            Event::OnCpu => "on-CPU samples",
            Event::OffCpu => "off-CPU time",
            Event::Wall => "wall-clock time (on + off CPU)",
        };
        let side = |side: &Side, total: u64| {
            format!(
                "{}: {total} {unit}, {}, {:.1} s",
                printable(&side.path.display().to_string()),
                windows_label(&side.windows),
                side.seconds
            )
        };
        let mut options = flamegraph::Options::default();
        options.title = format!("amprof diff · {what} · red: grew, blue: shrank");
        options.subtitle = Some(format!(
            "base {} → new {} · widths: new{}",
            side(&self.base, self.base_total),
            side(&self.new, self.new_total),
            if self.normalized {
                " · base scaled to the new's total"
            } else {
                ""
            }
        ));
        options.count_name = unit.into();
        // Colours are the differential's; the hash only picks among equal ones.
        options.deterministic = true;
        // Widths are the new's: with no new samples there is nothing to draw (inferno would
        // refuse lines whose every width is 0).
        let lines: &[String] = if self.new_total == 0 {
            &[]
        } else {
            &self.lines
        };
        draw(&mut options, lines, out)
    }
}

/// Folded lines of two profiles as sorted `stack before after` lines, by inferno's own
/// differential; `normalize`: the base's weights scaled to the new's total, each rounded to the
/// nearest integer.
///
/// The scaling is done here rather than by inferno's `normalize`, which rounds every scaled
/// weight down: that takes up to one sample off every base line, so that in a profile of many
/// small stacks everything unchanged would draw as "grew".
pub fn differential_lines(
    base: &[(String, u64)],
    new: &[(String, u64)],
    normalize: bool,
) -> Result<Vec<String>> {
    let total = |lines: &[(String, u64)]| lines.iter().map(|&(_, w)| u128::from(w)).sum::<u128>();
    let (base_total, new_total) = (total(base), total(new));
    let scale = |weight: u64| -> u128 {
        if normalize && base_total > 0 {
            (u128::from(weight) * new_total * 2 + base_total) / (base_total * 2)
        } else {
            u128::from(weight)
        }
    };
    let text = |lines: &[(String, u64)], scale: &dyn Fn(u64) -> u128| {
        let mut text = Vec::new();
        for (line, weight) in lines {
            // Writing to a Vec cannot fail.
            let _ = writeln!(text, "{line} {}", scale(*weight));
        }
        text
    };
    let mut out = Vec::new();
    let options = differential::Options {
        normalize: false,
        // Addresses are the capture's own; the two captures name an unsymbolized frame alike
        // when it is the same code (file offsets), so they are kept.
        strip_hex: false,
    };
    differential::from_readers(
        options,
        text(base, &scale).as_slice(),
        text(new, &|w| u128::from(w)).as_slice(),
        &mut out,
    )
    .context("cannot compare the folded stacks")?;
    let out = String::from_utf8(out).context("inferno's differential wrote invalid UTF-8")?;
    // inferno writes in hash order; flamegraphs need lines sorted by stack.
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    let stack = |line: &str| -> usize { line.rsplitn(3, ' ').nth(2).map_or(line.len(), str::len) };
    lines.sort_unstable_by(|a, b| a[..stack(a)].cmp(&b[..stack(b)]));
    Ok(lines)
}

/// `report --diff --format summary`, and its `--json`: each side, and the functions whose share
/// changed most. Field names are stable.
#[derive(Debug, Serialize)]
pub struct DiffSummary {
    /// `on-cpu`, `off-cpu` or `wall`.
    pub event: String,
    /// The same, for the text.
    #[serde(skip)]
    kind: Event,
    /// What weights count: `samples` (`on-cpu`) or `ns` (`off-cpu`, `wall`; an on-CPU sample
    /// stands for one sampling period of its capture).
    pub unit: String,
    /// The base capture (`--diff`): before.
    pub base: SideSummary,
    /// The new capture (`-i`): after.
    pub new: SideSummary,
    /// Functions by the change of their self share (the innermost frame; for off-CPU time, the
    /// innermost user frame, as the summary counts it), largest change (either way) first,
    /// `--top` of them.
    pub self_changes: Vec<ShareChange>,
    /// Functions by the change of their total share (anywhere in the stack: self + children).
    pub total_changes: Vec<ShareChange>,
}

/// One side of a [`DiffSummary`].
#[derive(Debug, Serialize)]
pub struct SideSummary {
    /// The capture file, as given.
    pub path: String,
    pub hostname: String,
    /// Indices of the windows selected.
    pub windows: Vec<u64>,
    /// Seconds the selected windows last, summed.
    pub seconds: f64,
    /// Samples of the event selected (on-CPU, off-CPU, or both for `wall`).
    pub samples: u64,
    /// Their whole weight, in `unit`: what shares are of.
    pub weight: u64,
}

/// One function's share of each side, and the change.
#[derive(Debug, PartialEq, Serialize)]
pub struct ShareChange {
    pub function: String,
    /// The module's file name, as in the summary (empty if unknown).
    pub module: String,
    /// Weight in the base, in `unit`.
    pub base_weight: u64,
    pub new_weight: u64,
    /// Share of the base's weight, in %.
    pub base_percent: f64,
    /// Share of the new's weight, in %.
    pub new_percent: f64,
    /// `new_percent - base_percent`, in percentage points: positive grew, negative shrank.
    pub change: f64,
}

impl DiffSummary {
    fn new(event: Event, mut base: Side, mut new: Side, top: usize) -> Self {
        let weights = |side: &mut Side| {
            side.tally
                .take_function_weights(event, side.meta.sample_period_ns())
        };
        let (base_weights, new_weights) = (weights(&mut base), weights(&mut new));
        let side = |side: &Side, weights: &FunctionWeights| SideSummary {
            path: side.path.display().to_string(),
            hostname: side.meta.hostname.clone(),
            windows: side.windows.clone(),
            seconds: side.seconds,
            samples: weights.samples,
            weight: weights.total,
        };
        DiffSummary {
            event: event.name().into(),
            kind: event,
            unit: if event == Event::OnCpu {
                "samples"
            } else {
                "ns"
            }
            .into(),
            base: side(&base, &base_weights),
            new: side(&new, &new_weights),
            self_changes: share_changes(
                &base_weights.self_weights,
                base_weights.total,
                &new_weights.self_weights,
                new_weights.total,
                top,
            ),
            total_changes: share_changes(
                &base_weights.total_weights,
                base_weights.total,
                &new_weights.total_weights,
                new_weights.total,
                top,
            ),
        }
    }

    fn notes(&self) -> Vec<String> {
        empty_note("base", Path::new(&self.base.path), self.base.weight)
            .into_iter()
            .chain(empty_note(
                "new",
                Path::new(&self.new.path),
                self.new.weight,
            ))
            .collect()
    }

    /// The comparison for a terminal: names escaped with [`printable`].
    pub fn write_text(&self, out: &mut impl Write) -> Result<()> {
        let side = |s: &SideSummary| {
            let windows = windows_label(&s.windows);
            let weight = if self.kind != Event::OnCpu {
                format!(", {:.3} s", s.weight as f64 / 1e9)
            } else {
                String::new()
            };
            format!(
                "{} · {} samples{weight} · {windows}, {:.1} s · host {}",
                printable(&s.path),
                s.samples,
                s.seconds,
                printable(&s.hostname)
            )
        };
        writeln!(out, "base  {}", side(&self.base))?;
        writeln!(out, "new   {}", side(&self.new))?;
        let of = match self.kind {
            Event::OffCpu => "each side's time off the CPU",
            Event::Wall => "each side's wall-clock time (on + off CPU)",
            Event::OnCpu => "each side's samples",
        };
        writeln!(
            out,
            "shares of {of}; change: new − base, in percentage points"
        )?;
        for (title, list) in [
            (
                "functions whose self share changed most",
                &self.self_changes,
            ),
            (
                "functions whose total share (self + children) changed most",
                &self.total_changes,
            ),
        ] {
            writeln!(out)?;
            writeln!(out, "{title}")?;
            writeln!(out, "{:>7} {:>7} {:>8}  function", "base", "new", "change")?;
            for f in list {
                writeln!(
                    out,
                    "{:>6.1}% {:>6.1}% {:>+8.1}  {}{}",
                    f.base_percent,
                    f.new_percent,
                    f.change,
                    printable(&f.function),
                    module_label(&f.module)
                )?;
            }
        }
        Ok(())
    }
}

/// The `top` functions whose share of the weight changed most from `base` to `new` (of their
/// totals), either way; ties by name.
fn share_changes(
    base: &FxHashMap<(String, String), u64>,
    base_total: u64,
    new: &FxHashMap<(String, String), u64>,
    new_total: u64,
    top: usize,
) -> Vec<ShareChange> {
    let mut changes: Vec<ShareChange> = base
        .keys()
        .chain(new.keys().filter(|key| !base.contains_key(*key)))
        .map(|key| {
            let base_weight = base.get(key).copied().unwrap_or(0);
            let new_weight = new.get(key).copied().unwrap_or(0);
            let base_percent = 100.0 * ratio(base_weight, base_total);
            let new_percent = 100.0 * ratio(new_weight, new_total);
            ShareChange {
                function: key.0.clone(),
                module: key.1.clone(),
                base_weight,
                new_weight,
                base_percent,
                new_percent,
                change: new_percent - base_percent,
            }
        })
        .collect();
    changes.sort_unstable_by(|a, b| {
        b.change
            .abs()
            .total_cmp(&a.change.abs())
            .then_with(|| (&a.function, &a.module).cmp(&(&b.function, &b.module)))
    });
    changes.truncate(top);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(lines: &[(&str, u64)]) -> Vec<(String, u64)> {
        lines.iter().map(|&(l, w)| (l.to_string(), w)).collect()
    }

    #[test]
    fn the_base_is_scaled_to_the_new_total_rounding_to_nearest() {
        // Base 30:10 of 40, new 20:60 of 80: the base doubles. `app;main` (a frame with a space
        // in it sorts by stack, not by line) is only in the new; `app;gone` only in the base.
        let base = lines(&[
            ("app;main;hot_a", 30),
            ("app;main;hot_b", 9),
            ("app;gone", 1),
        ]);
        let new = lines(&[
            ("app;main;hot_a", 20),
            ("app;main;hot_b", 59),
            ("app;main x", 1),
        ]);
        assert_eq!(
            differential_lines(&base, &new, true).unwrap(),
            [
                "app;gone 2 0",
                "app;main x 0 1",
                "app;main;hot_a 60 20",
                "app;main;hot_b 18 59",
            ]
        );
        assert_eq!(
            differential_lines(&base, &new, false).unwrap()[2],
            "app;main;hot_a 30 20"
        );
        // 1 of 3 scaled to 2: 0.67 rounds to 1 (inferno's own normalize says 0).
        let base = lines(&[("a", 1), ("b", 2)]);
        let new = lines(&[("a", 1), ("b", 1)]);
        assert_eq!(
            differential_lines(&base, &new, true).unwrap(),
            ["a 1 1", "b 1 1"]
        );
        assert!(differential_lines(&[], &[], true).unwrap().is_empty());
    }

    fn weights(list: &[(&str, u64)]) -> FxHashMap<(String, String), u64> {
        list.iter()
            .map(|&(f, w)| ((f.to_string(), "app".to_string()), w))
            .collect()
    }

    #[test]
    fn share_changes_rank_the_largest_either_way_first() {
        let base = weights(&[("hot_a", 75), ("hot_b", 25), ("gone", 0)]);
        let new = weights(&[("hot_a", 50), ("hot_b", 20), ("new", 30)]);
        let changes = share_changes(&base, 100, &new, 100, 10);
        let summary: Vec<(&str, f64, f64, f64)> = changes
            .iter()
            .map(|c| (c.function.as_str(), c.base_percent, c.new_percent, c.change))
            .collect();
        assert_eq!(
            summary,
            [
                ("new", 0.0, 30.0, 30.0),
                ("hot_a", 75.0, 50.0, -25.0),
                ("hot_b", 25.0, 20.0, -5.0),
                ("gone", 0.0, 0.0, 0.0),
            ]
        );
        assert_eq!(share_changes(&base, 100, &new, 100, 1).len(), 1);
        // An empty side: shares of 0, not a division by zero.
        let empty = share_changes(&base, 100, &FxHashMap::default(), 0, 10);
        assert_eq!(empty[0].function, "hot_a");
        assert_eq!((empty[0].new_percent, empty[0].change), (0.0, -75.0));
    }

    #[test]
    fn window_labels() {
        assert_eq!(windows_label(&[]), "no windows");
        assert_eq!(windows_label(&[2]), "window 2");
        assert_eq!(windows_label(&[0, 1, 2]), "windows 0..2");
        assert_eq!(windows_label(&[0, 5]), "2 windows in 0..5");
    }
}
