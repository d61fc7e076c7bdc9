//! Whether an ELF file holds a CPython interpreter, which version, and where the symbols a
//! Python frame walk starts from lie (docs/design/python-frames.md, section 1): `_PyRuntime`
//! (the runtime state: interpreters, their threads) and `_PyEval_EvalFrameDefault` (the
//! native frames that Python frames replace). Shared builds keep them in `libpython3.X.so`,
//! static ones (Debian's) in the executable; stripped builds still export them in `.dynsym`
//! for extension modules, so the dynamic symbols are enough.
//!
//! The version is `Py_Version` (3.11 on: `PY_VERSION_HEX` as data) or else the file's name
//! (`libpython3.X.so…`, `python3.X`). The file is a profiled process's choice: parsed by
//! `object` with every offset checked, and a file that does not parse is no interpreter.

use std::ops::Range;

use object::{Object as _, ObjectSymbol as _};

use crate::record::elf::{self, LoadSegment};

/// A CPython interpreter found in an ELF file. Addresses are the file's virtual addresses (a
/// process's are these plus the load bias of the file's mapping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    /// `(major, minor)`, or `None` when neither `Py_Version` nor the file's name tells it: the
    /// recording then says "frames not decoded", never guesses a layout.
    pub version: Option<(u8, u8)>,
    /// Where `_PyRuntime` lies.
    pub runtime: u64,
    /// Where `_PyEval_EvalFrameDefault`'s code lies (its `.cold` part is not in `.dynsym`).
    pub eval: Range<u64>,
}

/// The interpreter in the ELF file `data` named `file_name`, if it has one.
pub fn interpreter(data: &[u8], file_name: &str) -> Option<Interpreter> {
    let file = object::File::parse(data).ok()?;
    if file.format() != object::BinaryFormat::Elf {
        return None;
    }
    let (mut runtime, mut eval, mut py_version) = (None, None, None);
    for symbol in file.dynamic_symbols() {
        let Ok(name) = symbol.name_bytes() else {
            continue;
        };
        let (address, size) = (symbol.address(), symbol.size());
        match name {
            b"_PyRuntime" if address != 0 => runtime = Some(address),
            b"_PyEval_EvalFrameDefault" if address != 0 && size != 0 => {
                eval = Some(address..address.checked_add(size)?);
            }
            b"Py_Version" if size >= 4 => py_version = Some(address),
            _ => {}
        }
    }
    let segments = elf::load_segments(&file);
    let version = py_version
        .and_then(|address| read_u32(data, &segments, address))
        .map(|hex| ((hex >> 24) as u8, (hex >> 16) as u8))
        .or_else(|| version_from_name(file_name));
    Some(Interpreter {
        version,
        runtime: runtime?,
        eval: eval?,
    })
}

/// `3.X` from `libpython3.X.so…`, `libpython3.Xd.so…` or `python3.X`.
pub fn version_from_name(file_name: &str) -> Option<(u8, u8)> {
    let rest = file_name
        .strip_prefix("libpython")
        .or_else(|| file_name.strip_prefix("python"))?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The little-endian u32 at the file's virtual `address`, if a loaded segment holds it in the
/// file (not in its zero-filled tail).
fn read_u32(data: &[u8], segments: &[LoadSegment], address: u64) -> Option<u32> {
    let segment = segments
        .iter()
        .find(|s| (s.vaddr..s.vaddr.saturating_add(s.file_size)).contains(&address))?;
    let offset = segment.file_offset.checked_add(address - segment.vaddr)?;
    let offset = usize::try_from(offset).ok()?;
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(version_from_name("libpython3.11.so.1.0"), Some((3, 11)));
        assert_eq!(version_from_name("libpython3.9d.so"), Some((3, 9)));
        assert_eq!(version_from_name("python3.8"), Some((3, 8)));
        assert_eq!(version_from_name("python3"), None);
        assert_eq!(version_from_name("libpython.so"), None);
        assert_eq!(version_from_name("python3.x"), None);
    }

    #[test]
    fn what_is_no_elf_file_is_no_interpreter() {
        assert_eq!(interpreter(b"", "python3.11"), None);
        assert_eq!(
            interpreter(&[0x7f, b'E', b'L', b'F', 2, 1, 1], "python3.11"),
            None
        );
        assert_eq!(interpreter(&[0xff; 4096], "libpython3.12.so"), None);
    }

    #[test]
    fn a_version_outside_the_file_is_not_read() {
        let segments = [LoadSegment {
            file_offset: 0,
            file_size: 8,
            vaddr: 0x1000,
            executable: false,
        }];
        let data = [1, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(read_u32(&data, &segments, 0x1004), Some(2));
        assert_eq!(
            read_u32(&data, &segments, 0x1006),
            None,
            "runs past the file"
        );
        assert_eq!(read_u32(&data, &segments, 0x1008), None, "not in the file");
        assert_eq!(read_u32(&data, &segments, 0x10), None);
    }
}
