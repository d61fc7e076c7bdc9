//! How perf will place kernel addresses: the `[kernel.kallsyms]_text` map, written only when
//! the running kernel lays out code as the recording one did (see the [module
//! documentation](super#the-kernel-map)).

use std::path::Path;

use rustc_hash::FxHashSet;

use super::abi::known_build_id;
use crate::capture::format::{ModuleKind, Window};

/// The running kernel's symbols, to check whether its `_text` is the capture's.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// How perf will place kernel addresses (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The capture has kernel frames.
    pub has_frames: bool,
    /// The capture's kernel build-id, when it has kernel frames and knows it.
    pub build_id: Vec<u8>,
    /// `_text` and `_etext` for the `[kernel.kallsyms]_text` map, or why there is no map.
    pub map: Result<(u64, u64), String>,
}

impl Kernel {
    /// The plan for a capture whose first window with kernel frames is `window` (`None`: it has
    /// none).
    pub fn check(window: Option<&Window>, kallsyms: &Path) -> Self {
        let build_id = window
            .and_then(|w| {
                w.modules
                    .iter()
                    .find(|m| m.kind == ModuleKind::Kernel as i32)
            })
            .map(|m| known_build_id(m).to_vec())
            .unwrap_or_default();
        Self {
            has_frames: window.is_some(),
            build_id,
            map: kernel_text(window, kallsyms),
        }
    }
}

/// `_text` and `_etext` of the running kernel, if its layout is the one the capture's kernel
/// addresses were taken in: the leaf kernel frames of `window` must name the same functions in
/// `kallsyms` as they do in the capture (`None`: no kernel frames to misplace). Otherwise, why
/// not.
fn kernel_text(window: Option<&Window>, kallsyms: &Path) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string(kallsyms).map_err(|e| {
        format!(
            "cannot read {} ({e}) to place kernel addresses",
            kallsyms.display()
        )
    })?;
    let mut symbols: Vec<(u64, &str)> = Vec::new();
    let (mut start, mut end) = (None, None);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(address), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(address) = u64::from_str_radix(address, 16) else {
            continue;
        };
        match name {
            "_text" => start = Some(address),
            "_etext" => end = Some(address),
            _ => {}
        }
        if matches!(kind, "t" | "T" | "w" | "W") {
            symbols.push((address, name));
        }
    }
    let start = match start {
        Some(0) => {
            return Err(
                "kernel addresses are hidden from this user (kptr_restrict): convert as root"
                    .into(),
            );
        }
        Some(start) => start,
        None => return Err(format!("{} has no _text symbol", kallsyms.display())),
    };
    let end = end.filter(|&e| e > start).unwrap_or(u64::MAX);
    let Some(window) = window else {
        return Ok((start, end));
    };
    symbols.sort_unstable();
    let (mut same, mut different) = (0usize, 0usize);
    let mut checked = FxHashSet::default();
    for stack in window.stacks.iter().filter(|s| s.kernel_frames > 0) {
        let Some(location) = stack
            .locations
            .first()
            .and_then(|&l| window.locations.get(l as usize))
        else {
            continue;
        };
        // The outermost line of a kernel location is its kallsyms symbol.
        let Some(function) = location
            .lines
            .last()
            .and_then(|line| window.functions.get(line.function as usize))
        else {
            continue;
        };
        if !checked.insert(location.address) {
            continue;
        }
        let i = symbols.partition_point(|&(a, _)| a <= location.address);
        match i.checked_sub(1).map(|i| symbols[i].1) {
            Some(name) if name == function.name => same += 1,
            _ => different += 1,
        }
    }
    // A few names may differ (a module or BPF program loaded since); a different layout
    // differs everywhere.
    if same == 0 || different * 10 > same {
        return Err(format!(
            "the capture's kernel addresses do not match this machine's running kernel ({same} of {} checked frames agree): convert on the recording machine, before it reboots",
            same + different
        ));
    }
    Ok((start, end))
}
