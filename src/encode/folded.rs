//! Folded stacks: `process;root;...;leaf count`, one line per distinct stack, the input of
//! inferno and Brendan Gregg's FlameGraph. Kernel frames carry the `_[k]` suffix of
//! stackcollapse-perf, which flamegraph palettes color apart.

use std::io::Write;

use anyhow::Result;
use rustc_hash::FxHashMap;

use super::{Encoder, Ending, frames};
use crate::{
    capture::{
        Selection,
        format::{Stack, Window},
    },
    text::printable,
};

/// Appends the folded form of `stack` (without its count) to `line`.
pub fn stack_line(window: &Window, stack: &Stack, line: &mut String) {
    use std::fmt::Write as _;
    let process = window.processes.get(stack.process as usize);
    push_frame(line, process.map_or("[unknown]", |p| p.name.as_str()), "");
    let kernel = stack.kernel_frames as usize;
    let (kernel_frames, user_frames) = stack.locations.split_at(kernel.min(stack.locations.len()));
    let mut names: Vec<String> = Vec::new();
    for (ids, suffix) in [(user_frames, ""), (kernel_frames, "_[k]")] {
        for &id in ids.iter().rev() {
            let Some(location) = window.locations.get(id as usize) else {
                continue;
            };
            names.clear();
            frames::for_each_frame(window, location, |frame| {
                let mut name = String::new();
                let _ = write!(name, "{frame}");
                names.push(name);
            });
            // Innermost first in the location; root first in the line.
            for name in names.iter().rev() {
                line.push(';');
                push_frame(line, name, suffix);
            }
        }
    }
}

/// Appends `name` so that it stays one frame on one line: the frame separator `;` becomes `:`,
/// and control, bidi and invisible characters become visible escapes ([`printable`]), so that
/// the line is safe on a terminal and inside a flamegraph's XML.
fn push_frame(line: &mut String, name: &str, suffix: &str) {
    let name = printable(name);
    if name.contains(';') {
        line.extend(name.chars().map(|c| if c == ';' { ':' } else { c }));
    } else {
        line.push_str(&name);
    }
    line.push_str(suffix);
}

/// The selected stacks of the windows added, merged by folded line.
#[derive(Default)]
pub struct Fold {
    counts: FxHashMap<String, u64>,
    line: String,
}

impl Fold {
    /// Adds the stacks of `window` that `selection` keeps.
    pub fn add(&mut self, window: &Window, selection: &Selection) {
        for (stack, kept) in window.stacks.iter().zip(selection.kept_stacks(window)) {
            if !kept {
                continue;
            }
            self.line.clear();
            stack_line(window, stack, &mut self.line);
            match self.counts.get_mut(self.line.as_str()) {
                Some(count) => *count += stack.count,
                None => {
                    self.counts.insert(self.line.clone(), stack.count);
                }
            }
        }
    }

    /// The lines with their counts, sorted by line.
    pub fn lines(self) -> Vec<(String, u64)> {
        let mut lines: Vec<(String, u64)> = self.counts.into_iter().collect();
        lines.sort_unstable();
        lines
    }
}

/// `report --format folded`.
pub struct Folded<'o, W: Write> {
    fold: Fold,
    out: &'o mut W,
}

impl<'o, W: Write> Folded<'o, W> {
    pub fn new(out: &'o mut W) -> Self {
        Self {
            fold: Fold::default(),
            out,
        }
    }
}

impl<W: Write> Encoder for Folded<'_, W> {
    fn add(&mut self, window: &Window, selection: &Selection) -> Result<()> {
        self.fold.add(window, selection);
        Ok(())
    }

    fn finish(self: Box<Self>, _: &Ending<'_>) -> Result<Vec<String>> {
        for (line, count) in self.fold.lines() {
            writeln!(self.out, "{line} {count}")?;
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::testing::WindowBuilder;

    #[test]
    fn frames_stay_one_frame_on_one_line() {
        let mut line = String::new();
        push_frame(&mut line, "a;b\nc\r\x1b[2J\u{202e}", "_[k]");
        assert_eq!(line, r"a:b\x0ac\x0d\x1b[2J\u{202e}_[k]");
        line.clear();
        push_frame(&mut line, "std::vec::Vec<T>::push", "");
        assert_eq!(line, "std::vec::Vec<T>::push");
    }

    #[test]
    fn stacks_fold_root_first_and_merge_across_windows() {
        let window = |index| {
            let mut w = WindowBuilder::new(index);
            let p = w.process(1, "app");
            let k = w.kernel_module();
            let (main, hot, sys) = (w.function("main"), w.function("hot"), w.function("sys"));
            let (lm, lh) = (w.location(0x10, &[main]), w.location(0x20, &[hot]));
            let lk = w.kernel_location(k, 0xffff_0000, &[sys]);
            let s = w.stack(p, &[lk, lh, lm], 1);
            w.sample(1, 1, 0, s);
            w.build()
        };
        let mut fold = Fold::default();
        fold.add(&window(0), &Selection::default());
        fold.add(&window(1), &Selection::default());
        assert_eq!(fold.lines(), [("app;main;hot;sys_[k]".to_string(), 2)]);
    }
}
