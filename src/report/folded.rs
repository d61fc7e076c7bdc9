//! Folded stacks: `process;root;...;leaf count`, one line per distinct stack, the input of
//! inferno and Brendan Gregg's FlameGraph. Kernel frames carry the `_[k]` suffix of
//! stackcollapse-perf, which flamegraph palettes color apart.

use std::io::Write;

use anyhow::Result;
use rustc_hash::FxHashMap;

use super::{Selection, frames};
use crate::{
    capture::format::{Stack, Window},
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

/// Appends `name` so that it stays one frame on one line: `;` (the frame separator) becomes
/// `:`, and control and invisible characters become visible escapes ([`printable`]), as in the
/// summary. Names come from the profiled processes, which choose them.
fn push_frame(line: &mut String, name: &str, suffix: &str) {
    let name = printable(name);
    if name.contains(';') {
        line.extend(name.chars().map(|c| if c == ';' { ':' } else { c }));
    } else {
        line.push_str(&name);
    }
    line.push_str(suffix);
}

/// Folded lines of the selected stacks of `windows`, merged, sorted by stack.
pub fn fold(windows: &[Window], selection: &Selection) -> Vec<(String, u64)> {
    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
    let mut line = String::new();
    for window in windows {
        for stack in &window.stacks {
            if stack.count == 0 || !selection.includes_stack(window, stack) {
                continue;
            }
            line.clear();
            stack_line(window, stack, &mut line);
            match counts.get_mut(line.as_str()) {
                Some(count) => *count += stack.count,
                None => {
                    counts.insert(line.clone(), stack.count);
                }
            }
        }
    }
    let mut lines: Vec<(String, u64)> = counts.into_iter().collect();
    lines.sort_unstable();
    lines
}

pub fn write(windows: &[Window], selection: &Selection, out: &mut impl Write) -> Result<()> {
    for (line, count) in fold(windows, selection) {
        writeln!(out, "{line} {count}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stay_one_frame_on_one_line() {
        let mut line = String::new();
        push_frame(&mut line, "a;b\nc\r\x1b[2J\u{202e}", "_[k]");
        assert_eq!(line, r"a:b\x0ac\x0d\x1b[2J\u{202e}_[k]");
        line.clear();
        push_frame(&mut line, "std::vec::Vec<T>::push", "");
        assert_eq!(line, "std::vec::Vec<T>::push");
    }
}
