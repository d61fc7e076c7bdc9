//! How frames are named, the same way in every output format.

use std::fmt;

use crate::capture::format::{Location, Module, ModuleKind, Window};

/// One source-level frame of a location, ready to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameName<'w> {
    /// A symbolized function.
    Function(&'w str),
    /// No symbol, but a known module: printed `module+0xoffset` (file offset, or the kernel
    /// address for the kernel).
    InModule { module: &'w str, offset: u64 },
    /// No symbol and no module: the raw address.
    Address(u64),
}

impl fmt::Display for FrameName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Function(name) => f.write_str(name),
            Self::InModule { module, offset } => write!(f, "{module}+{offset:#x}"),
            Self::Address(address) => write!(f, "{address:#x}"),
        }
    }
}

/// The module a location is in, if known.
pub fn location_module<'w>(window: &'w Window, location: &Location) -> Option<&'w Module> {
    if location.kernel_module != 0 {
        return window.modules.get(location.kernel_module as usize - 1);
    }
    let mapping = window
        .mappings
        .get((location.mapping as usize).checked_sub(1)?)?;
    window.modules.get(mapping.module as usize)
}

/// The file offset of a user location (what `perf`, pprof and symbolizers key on), or the
/// address itself for kernel and unmapped locations.
pub fn location_offset(window: &Window, location: &Location) -> u64 {
    match (location.mapping as usize)
        .checked_sub(1)
        .and_then(|m| window.mappings.get(m))
    {
        Some(mapping) => location
            .address
            .wrapping_sub(mapping.start)
            .wrapping_add(mapping.file_offset),
        None => location.address,
    }
}

/// Last path component: what a frame shows of its module.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Calls `each` with the frames of `location`, innermost (most inlined) first.
pub fn for_each_frame<'w>(
    window: &'w Window,
    location: &'w Location,
    mut each: impl FnMut(FrameName<'w>),
) {
    if location.lines.is_empty() {
        each(unknown_frame(window, location));
        return;
    }
    for line in &location.lines {
        match window.functions.get(line.function as usize) {
            Some(function) => each(FrameName::Function(&function.name)),
            None => each(unknown_frame(window, location)),
        }
    }
}

fn unknown_frame<'w>(window: &'w Window, location: &Location) -> FrameName<'w> {
    match location_module(window, location) {
        Some(module) if module.kind != ModuleKind::Kernel as i32 => FrameName::InModule {
            module: basename(&module.path),
            offset: location_offset(window, location),
        },
        Some(module) => FrameName::InModule {
            module: &module.path,
            offset: location.address,
        },
        None => FrameName::Address(location.address),
    }
}

/// The name of the innermost frame of `location`.
pub fn leaf_frame<'w>(window: &'w Window, location: &'w Location) -> FrameName<'w> {
    let mut first = None;
    for_each_frame(window, location, |frame| {
        first.get_or_insert(frame);
    });
    first.unwrap_or(FrameName::Address(location.address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::format::{Function, Line, Mapping};

    fn window() -> Window {
        Window {
            modules: vec![
                Module {
                    path: "/usr/lib/libfoo.so".into(),
                    build_id: vec![],
                    kind: ModuleKind::File as i32,
                },
                Module {
                    path: "[kernel.kallsyms]".into(),
                    build_id: vec![],
                    kind: ModuleKind::Kernel as i32,
                },
            ],
            mappings: vec![Mapping {
                process: 0,
                start: 0x7000_0000,
                end: 0x7010_0000,
                file_offset: 0x1000,
                module: 0,
            }],
            functions: vec![Function {
                name: "hot".into(),
                file: String::new(),
            }],
            ..Window::default()
        }
    }

    #[test]
    fn names_symbolized_and_unknown_frames() {
        let w = window();
        let named = Location {
            address: 0x7000_0010,
            mapping: 1,
            kernel_module: 0,
            lines: vec![Line {
                function: 0,
                line: 3,
            }],
        };
        assert_eq!(leaf_frame(&w, &named).to_string(), "hot");
        let unknown = Location {
            lines: vec![],
            ..named.clone()
        };
        assert_eq!(leaf_frame(&w, &unknown).to_string(), "libfoo.so+0x1010");
        let kernel = Location {
            address: 0xffff_ffff_8100_0000,
            mapping: 0,
            kernel_module: 2,
            lines: vec![],
        };
        assert_eq!(
            leaf_frame(&w, &kernel).to_string(),
            "[kernel.kallsyms]+0xffffffff81000000"
        );
        let nowhere = Location {
            address: 0x1234,
            mapping: 0,
            kernel_module: 0,
            lines: vec![],
        };
        assert_eq!(leaf_frame(&w, &nowhere).to_string(), "0x1234");
    }
}
